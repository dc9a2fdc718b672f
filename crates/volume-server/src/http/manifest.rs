//! Chunk manifests (needle flag 0x80, written by `weed upload -maxMB`): a GET or HEAD
//! serves the file the manifest lists, a DELETE removes its chunks first (weed's
//! `tryHandleChunkedFile` and `DeleteHandler`).
//!
//! **Reading.** The chunks are read one at a time, in offset order, and each is verified
//! as a needle before a byte of it is sent: a chunk in a volume of this server straight
//! from the store (header, cookie, CRC32-C), any other over HTTP from a server holding
//! it (`fallback-http`: CRC32-C against its ETag). Locations come from the weed master's
//! HTTP `/dir/lookup` (`--mserver`; HTTP rather than gRPC `LookupVolume` because the
//! chunks themselves are fetched over HTTP, so one client does both and the master
//! proto subset stays as it is; any master answers, followers ask the leader). A
//! standalone server has no master and knows only its own volumes. In a cluster that
//! signs requests (`security.toml`), the server signs each remote chunk read or delete
//! with its own keys, as weed master would for that fid.
//!
//! The response streams: at most one chunk is held in memory, plus one being sent.
//! A chunk that cannot be read or does not verify ends the reply: before the headers
//! (the first chunk is read first, which also gives Go's type sniffing its bytes) with
//! an empty 500, later by aborting the connection, so that a client always sees a
//! short body under the `Content-Length` as an error, never as a complete file.
//!
//! **Ranges** are served as weed serves them, over the concatenation: one range as a
//! 206 with `Content-Range`, several as a `multipart/byteranges` 206 whose framing is
//! laid out first (so its length is known) and whose parts stream like the rest. Only
//! the chunks the ranges touch are read (a chunk touched by two ranges is read twice).

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::body::Body;
use axum::http::response::Builder;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use needle::{Chunk, ChunkManifest, FileId, Flags};
use tokio::sync::mpsc;

use super::mime;
use super::peers::{VolumeLocations, clients};
use super::range;
use super::reply::{content_type_for, finish, headers_only, range_not_satisfiable, with_disposition};
use super::upload::gunzip;
use super::{ApiError, AppState, query_params};
use crate::security::{Access, Security};
use volume_store::store::Store;

/// The manifest to expand for this GET/HEAD: the needle is flagged and the request does
/// not say `cm=false`. A manifest that does not parse is served as stored, as weed does.
pub(super) fn to_expand(flags: Flags, data: &[u8], request: &Request<()>) -> Option<ChunkManifest> {
    if !flags.contains(Flags::CHUNK_MANIFEST) || query_params(request).get("cm").is_some_and(|v| v == "false")
    {
        return None;
    }
    load(flags, data)
        .inspect_err(|e| tracing::warn!(error = %e, "chunk manifest unreadable: served raw"))
        .ok()
}

/// The most a gzipped manifest may inflate to: its JSON takes about 100 bytes a chunk,
/// so this is some 600,000 chunks (terabytes of file at weed's chunk sizes).
const MAX_MANIFEST_JSON: u64 = 64 << 20;

/// The manifest in a manifest needle's data (gzip when flagged compressed).
fn load(flags: Flags, data: &[u8]) -> Result<ChunkManifest, String> {
    if flags.contains(Flags::COMPRESSED) {
        let json = gunzip(data, MAX_MANIFEST_JSON).map_err(|e| format!("gunzip: {e}"))?;
        ChunkManifest::parse(&json)
    } else {
        ChunkManifest::parse(data)
    }
    .map_err(|e| e.to_string())
}

/// The GET/HEAD reply for a manifest; `builder` already carries Last-Modified, ETag and
/// pairs, `url_filename` is the file name in the URL, if any.
pub(super) async fn serve(
    state: &AppState,
    request: &Request<()>,
    mut builder: Builder,
    manifest: ChunkManifest,
    url_filename: Option<String>,
) -> Result<Response, ApiError> {
    let filename = url_filename.filter(|n| !n.is_empty()).unwrap_or_else(|| manifest.name.clone());
    let mut content_type = content_type_for(&manifest.mime, mime::extension(&filename));
    builder = builder.header("x-file-store", "chunked").header(header::ACCEPT_RANGES, "bytes");
    builder = with_disposition(builder, request, &filename);
    if *request.method() == Method::HEAD {
        return Ok(headers_only(builder, &content_type, manifest.total_size()));
    }
    let (mut builder, Plan { status, pieces, multipart_type }) =
        match plan(&manifest, request, builder, &content_type) {
            ControlFlow::Continue(planned) => planned,
            ControlFlow::Break(reply) => return Ok(reply),
        };
    let length: u64 = pieces.iter().map(Piece::len).sum();

    // The first chunk is read before the headers go out: a failure there is a clean 500,
    // and it gives Go's type sniffing its bytes.
    let mut source = ChunkSource::new(state);
    let mut pieces = pieces.into_iter();
    let mut ready = Vec::new();
    for piece in pieces.by_ref() {
        let bytes = source.bytes_of(piece).await.map_err(|e| {
            tracing::error!(error = %e, "chunked file: first chunk");
            ApiError::empty(StatusCode::INTERNAL_SERVER_ERROR)
        })?;
        ready.push(bytes);
        if ready.len() > 1 || multipart_type.is_none() {
            break;
        }
    }
    if let Some(multipart_type) = multipart_type {
        builder = builder.header(header::CONTENT_TYPE, multipart_type);
    } else {
        if content_type.is_empty()
            && let Some(first) = ready.first()
        {
            content_type = mime::sniff(first).to_owned();
        }
        if !content_type.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, &content_type);
        }
    }
    builder = builder.status(status).header(header::CONTENT_LENGTH, length);
    Ok(finish(builder, stream(source, ready, pieces)))
}

/// What a manifest's GET sends.
struct Plan {
    status: StatusCode,
    /// Text (multipart framing) and parts of chunks, in order.
    pieces: Vec<Piece>,
    /// The reply's type when it is `multipart/byteranges`.
    multipart_type: Option<String>,
}

/// The pieces for the request's `Range`, over the concatenation of the chunks (all of
/// the file without one; `builder` gains a single range's Content-Range), or `Break`
/// with the reply weed sends instead: a 416, or nothing at all for ranges it ignores.
fn plan(
    manifest: &ChunkManifest,
    request: &Request<()>,
    mut builder: Builder,
    content_type: &str,
) -> ControlFlow<Response, (Builder, Plan)> {
    let total = manifest.total_size();
    let Some(value) = request.headers().get(header::RANGE) else {
        let pieces = chunk_pieces(manifest, 0, total).collect();
        return ControlFlow::Continue((
            builder,
            Plan { status: StatusCode::OK, pieces, multipart_type: None },
        ));
    };
    let ranges = match range::parse(value.to_str().unwrap_or(""), total) {
        Ok(ranges) => ranges,
        Err(e) => return ControlFlow::Break(range_not_satisfiable(builder, e, total)),
    };
    if ranges.is_empty() || range::exceeds(&ranges, total) {
        return ControlFlow::Break(headers_only(builder, content_type, 0));
    }
    let mut pieces = Vec::new();
    let mut multipart_type = None;
    if let [one] = ranges.as_slice() {
        builder = builder.header(header::CONTENT_RANGE, one.content_range(total));
        pieces.extend(chunk_pieces(manifest, one.start, one.start + one.length));
    } else {
        // Parts carry the type as it is, even empty: weed sniffs nothing here.
        let layout = range::MultipartLayout::new(total, &ranges, content_type);
        for (head, r) in layout.heads.into_iter().zip(&ranges) {
            pieces.push(Piece::Text(Bytes::from(head)));
            pieces.extend(chunk_pieces(manifest, r.start, r.start + r.length));
        }
        pieces.push(Piece::Text(Bytes::from(layout.closing)));
        multipart_type = Some(layout.content_type);
    }
    ControlFlow::Continue((builder, Plan { status: StatusCode::PARTIAL_CONTENT, pieces, multipart_type }))
}

/// The reply body: `ready` (read before the headers), then the rest of `pieces`, read
/// one at a time by a task feeding a channel; a piece that fails ends the body with an
/// error, which makes hyper cut the connection short of the Content-Length.
fn stream(
    mut source: ChunkSource,
    ready: Vec<Bytes>,
    pieces: impl Iterator<Item = Piece> + Send + 'static,
) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        for bytes in ready {
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
        for piece in pieces {
            let next = source.bytes_of(piece).await.map_err(|e| {
                tracing::error!(error = %e, "chunked file: aborting the reply");
                std::io::Error::other(e)
            });
            let failed = next.is_err();
            // A receiver gone means the client left: stop reading.
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A piece of a chunked file's reply.
enum Piece {
    /// Multipart framing.
    Text(Bytes),
    /// Bytes `range` of a chunk's data.
    Chunk(Chunk, std::ops::Range<u64>),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Text(text) => text.len() as u64,
            Piece::Chunk(_, range) => range.end - range.start,
        }
    }
}

/// The chunk parts that make up bytes `start..end` of the file.
fn chunk_pieces(manifest: &ChunkManifest, start: u64, end: u64) -> impl Iterator<Item = Piece> + '_ {
    manifest.chunks_in(start, end).map(|(chunk, part)| Piece::Chunk(*chunk, part))
}

/// DELETE of a manifest: its chunks first, local ones in the store and remote ones by an
/// HTTP DELETE at a server holding them (a chunk already gone counts as deleted, so a
/// delete that failed half-way can be retried). `Ok(Some(size))` when `fid` is a manifest
/// whose chunks are gone: the reply then reports the manifest's `size`, as weed does.
/// `Ok(None)` when it is not a manifest (or not readable: the plain delete reports why).
pub(super) async fn delete_chunks(state: &AppState, fid: &FileId) -> Result<Option<u64>, ApiError> {
    let Some(manifest) = read_manifest(&state.store, fid).await else { return Ok(None) };
    let manifest = manifest.map_err(|e| {
        ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, format!("Load chunks manifest error: {e}"))
    })?;
    let mut source = ChunkSource::new(state);
    for chunk in &manifest.chunks {
        source.delete(&chunk.fid).await.map_err(|e| {
            ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, format!("Delete chunks error: {e}"))
        })?;
    }
    Ok(Some(manifest.size))
}

/// `None` unless `fid` is a live manifest needle here with the right cookie.
async fn read_manifest(store: &Arc<Store>, fid: &FileId) -> Option<Result<ChunkManifest, String>> {
    let (store, fid) = (Arc::clone(store), *fid);
    tokio::task::spawn_blocking(move || {
        let volume = store.volume(fid.volume).ok()?;
        let location = volume.locate_readable(fid.needle_id(), false).ok()?;
        // The metadata alone first: a DELETE of an ordinary needle need not read its data.
        let meta = volume.read_meta_at(fid.needle_id(), fid.cookie, location).ok()?;
        if !meta.meta().flags.contains(Flags::CHUNK_MANIFEST) {
            return None;
        }
        let stored = volume.read_at(fid.needle_id(), fid.cookie, location).ok()?;
        let needle = stored.needle();
        Some(load(needle.flags, needle.data))
    })
    .await
    .ok()
    .flatten()
}

/// Reads and deletes chunks wherever they are.
struct ChunkSource {
    store: Arc<Store>,
    security: Security,
    locations: VolumeLocations,
}

impl ChunkSource {
    fn new(state: &AppState) -> Self {
        Self {
            store: Arc::clone(&state.store),
            security: state.security.clone(),
            locations: state.locations.clone(),
        }
    }

    /// A piece's bytes; for a part of a chunk, after the whole chunk verified.
    async fn bytes_of(&mut self, piece: Piece) -> Result<Bytes, String> {
        match piece {
            Piece::Text(text) => Ok(text),
            Piece::Chunk(chunk, part) => {
                let data = self.read(&chunk).await?;
                Ok(data.slice(part.start as usize..part.end as usize))
            }
        }
    }

    /// `chunk`'s plain data, verified, and exactly as long as the manifest says.
    async fn read(&mut self, chunk: &Chunk) -> Result<Bytes, String> {
        let fid = chunk.fid;
        let (stored, compressed) = if let Ok(volume) = self.store.volume(fid.volume) {
            tokio::task::spawn_blocking(move || -> Result<(Bytes, bool), String> {
                let location = volume.locate_readable(fid.needle_id(), false).map_err(|e| e.to_string())?;
                let stored =
                    volume.read_at(fid.needle_id(), fid.cookie, location).map_err(|e| e.to_string())?;
                let needle = stored.needle();
                if needle.flags.contains(Flags::CHUNK_MANIFEST) {
                    return Err("is itself a chunk manifest".into());
                }
                let compressed = needle.flags.contains(Flags::COMPRESSED);
                let (record, range) = stored.into_record();
                Ok((Bytes::from(record).slice(range), compressed))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("chunk {fid}: {e}"))?
        } else {
            self.read_remote(&fid).await?
        };
        let data = if compressed {
            // Inflated to no more than the manifest says the chunk holds, off the async workers.
            let size = chunk.size;
            let plain = tokio::task::spawn_blocking(move || gunzip(&stored, size)).await;
            Bytes::from(plain.map_err(|e| e.to_string())?.map_err(|e| format!("chunk {fid}: gunzip: {e}"))?)
        } else {
            stored
        };
        if data.len() as u64 != chunk.size {
            return Err(format!("chunk {fid} holds {} bytes, the manifest says {}", data.len(), chunk.size));
        }
        Ok(data)
    }

    /// A chunk from the first server holding its volume that serves it verified.
    async fn read_remote(&mut self, fid: &FileId) -> Result<(Bytes, bool), String> {
        let mut last = String::new();
        let jwt = self.security.issue(Access::Read, &fid.to_string());
        for server in self.locations.lookup(fid.volume.0).await? {
            match clients().0.read_needle(&server, fid, jwt.as_deref()).await {
                Ok(stored) if stored.chunk_manifest => {
                    return Err(format!("chunk {fid} is itself a chunk manifest"));
                }
                Ok(stored) => return Ok((stored.bytes, stored.compressed)),
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("chunk {fid}: {last}"))
    }

    async fn delete(&mut self, fid: &FileId) -> Result<(), String> {
        if self.store.volume(fid.volume).is_ok() {
            let (store, fid) = (Arc::clone(&self.store), *fid);
            return tokio::task::spawn_blocking(move || {
                match store.write_to(fid.volume, |volume| volume.delete(fid.needle_id(), fid.cookie)) {
                    Ok(_) | Err(volume_store::Error::NeedleNotFound(_) | volume_store::Error::AlreadyDeleted(_)) => Ok(()),
                    Err(e) => Err(format!("chunk {fid}: {e}")),
                }
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        let mut last = String::new();
        let jwt = self.security.issue(Access::Write, &fid.to_string());
        for server in self.locations.lookup(fid.volume.0).await? {
            let mut request = clients().1.delete(format!("http://{server}/{fid}"));
            if let Some(jwt) = &jwt {
                request = request.bearer_auth(jwt);
            }
            match request.send().await {
                Ok(reply) if matches!(reply.status().as_u16(), 202 | 404) => return Ok(()),
                Ok(reply) => {
                    let status = reply.status();
                    last = format!("{server} answered {status}: {}", reply.text().await.unwrap_or_default());
                }
                Err(e) => last = format!("{server}: {e}"),
            }
        }
        Err(format!("chunk {fid}: {last}"))
    }
}
