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
//! standalone server has no master and knows only its own volumes.
//!
//! The response streams: at most one chunk is held in memory, plus one being sent.
//! A chunk that cannot be read or does not verify ends the reply: before the headers
//! (the first chunk is read first, which also gives Go's type sniffing its bytes) with
//! an empty 500, later by aborting the connection, so that a client always sees a
//! short body under the `Content-Length` as an error, never as a complete file.
//!
//! **Ranges.** One range is served as weed does (206 over the concatenation, reading
//! only the chunks it touches). Several ranges are answered with the whole file (200):
//! HTTP lets a server ignore `Range`, and a multipart body would have to be assembled
//! in memory.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::response::Builder;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use fallback_http::{HttpReadConfig, HttpReader};
use needle::{Chunk, ChunkManifest, FileId, Flags, Needle};
use tokio::sync::mpsc;

use super::{ApiError, AppState, query_params};
use crate::mime;
use crate::range::{self, RangeError};
use crate::store::Store;
use crate::upload::{gunzip, parse_bool};

/// The manifest to expand for this GET/HEAD: the needle is flagged and the request does
/// not say `cm=false`. A manifest that does not parse is served as stored, as weed does.
pub(super) fn to_expand(needle: &Needle<'_>, request: &Request<()>) -> Option<ChunkManifest> {
    if !needle.flags.contains(Flags::CHUNK_MANIFEST)
        || query_params(request).get("cm").is_some_and(|v| v == "false")
    {
        return None;
    }
    load(needle).inspect_err(|e| tracing::warn!(error = %e, "chunk manifest unreadable: served raw")).ok()
}

fn load(needle: &Needle<'_>) -> Result<ChunkManifest, String> {
    if needle.flags.contains(Flags::COMPRESSED) {
        let json = gunzip(needle.data).map_err(|e| format!("gunzip: {e}"))?;
        ChunkManifest::parse(&json)
    } else {
        ChunkManifest::parse(needle.data)
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
    let mut content_type =
        if !manifest.mime.is_empty() && !manifest.mime.starts_with("application/octet-stream") {
            manifest.mime.clone()
        } else {
            mime::type_by_extension(mime::extension(&filename))
        };
    builder = builder.header("x-file-store", "chunked").header(header::ACCEPT_RANGES, "bytes");
    if !filename.is_empty() {
        let dl = query_params(request).get("dl").and_then(|v| parse_bool(v)).unwrap_or(false);
        let disposition = if dl { "attachment" } else { "inline" };
        builder =
            builder.header(header::CONTENT_DISPOSITION, mime::content_disposition(disposition, &filename));
    }
    let total = manifest.total_size();
    if *request.method() == Method::HEAD {
        if !content_type.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, &content_type);
        }
        return Ok(finish(builder.header(header::CONTENT_LENGTH, total), Body::empty()));
    }

    let (status, start, end) = match request.headers().get(header::RANGE) {
        None => (StatusCode::OK, 0, total),
        Some(value) => match range::parse(value.to_str().unwrap_or(""), total) {
            Err(e) => {
                if e == RangeError::NoOverlap {
                    builder = builder.header(header::CONTENT_RANGE, format!("bytes */{total}"));
                }
                let body = e.body();
                let response = builder
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header("x-content-type-options", "nosniff")
                    .header(header::CONTENT_LENGTH, body.len());
                return Ok(finish(response, Body::from(body)));
            }
            Ok(ranges) if ranges.is_empty() || range::exceeds(&ranges, total) => {
                if !content_type.is_empty() {
                    builder = builder.header(header::CONTENT_TYPE, &content_type);
                }
                return Ok(finish(builder.header(header::CONTENT_LENGTH, 0), Body::empty()));
            }
            Ok(ranges) => match ranges.as_slice() {
                [one] => {
                    builder = builder.header(header::CONTENT_RANGE, one.content_range(total));
                    (StatusCode::PARTIAL_CONTENT, one.start, one.start + one.length)
                }
                _ => (StatusCode::OK, 0, total),
            },
        },
    };

    let mut pieces: Vec<(Chunk, std::ops::Range<u64>)> =
        manifest.chunks_in(start, end).map(|(c, r)| (*c, r)).collect::<Vec<_>>();
    pieces.reverse(); // popped from the end, in file order
    let mut source = ChunkSource::new(state);
    let first = match pieces.pop() {
        Some((chunk, part)) => Some(source.read_part(&chunk, part).await.map_err(|e| {
            tracing::error!(error = %e, "chunked file: first chunk");
            ApiError::empty(StatusCode::INTERNAL_SERVER_ERROR)
        })?),
        None => None,
    };
    if content_type.is_empty()
        && let Some(first) = &first
    {
        content_type = mime::sniff(first).to_owned();
    }
    if !content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, &content_type);
    }
    builder = builder.status(status).header(header::CONTENT_LENGTH, end - start);

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        if let Some(first) = first
            && tx.send(Ok(first)).await.is_err()
        {
            return;
        }
        while let Some((chunk, part)) = pieces.pop() {
            let next = source.read_part(&chunk, part).await.map_err(|e| {
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
    Ok(finish(builder, Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))))
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
        if !volume.is_chunk_manifest(location).ok()? {
            return None;
        }
        let stored = volume.read_at(fid.needle_id(), fid.cookie, location).ok()?;
        let needle = stored.needle();
        needle.flags.contains(Flags::CHUNK_MANIFEST).then(|| load(&needle))
    })
    .await
    .ok()
    .flatten()
}

/// Reads and deletes chunks wherever they are, remembering volume locations for the
/// duration of one request.
struct ChunkSource {
    store: Arc<Store>,
    masters: Vec<String>,
    locations: HashMap<u32, Vec<String>>,
}

/// The HTTP clients chunk reads, deletes and lookups share (pooled connections; every
/// request bounded by their timeouts).
fn clients() -> &'static (HttpReader, reqwest::Client) {
    static CLIENTS: OnceLock<(HttpReader, reqwest::Client)> = OnceLock::new();
    CLIENTS.get_or_init(|| {
        let config = HttpReadConfig::default();
        let reader = HttpReader::new(&config).expect("an HTTP client without TLS builds");
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .expect("an HTTP client without TLS builds");
        (reader, client)
    })
}

impl ChunkSource {
    fn new(state: &AppState) -> Self {
        Self { store: Arc::clone(&state.store), masters: state.masters.clone(), locations: HashMap::new() }
    }

    /// Bytes `part` of `chunk`'s file data, after the whole chunk verified.
    async fn read_part(&mut self, chunk: &Chunk, part: std::ops::Range<u64>) -> Result<Bytes, String> {
        let data = self.read(chunk).await?;
        Ok(data.slice(part.start as usize..part.end as usize))
    }

    /// `chunk`'s plain data, verified, and exactly as long as the manifest says.
    async fn read(&mut self, chunk: &Chunk) -> Result<Bytes, String> {
        let fid = chunk.fid;
        let (stored, compressed) = if self.store.volume(fid.volume).is_ok() {
            let store = Arc::clone(&self.store);
            tokio::task::spawn_blocking(move || -> Result<(Bytes, bool), String> {
                let volume = store.volume(fid.volume).map_err(|e| e.to_string())?;
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
            Bytes::from(gunzip(&stored).map_err(|e| format!("chunk {fid}: gunzip: {e}"))?)
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
        for server in self.lookup(fid.volume.0).await? {
            match clients().0.read_needle(&server, fid, None).await {
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
                    Ok(_) | Err(crate::Error::NeedleNotFound(_) | crate::Error::AlreadyDeleted(_)) => Ok(()),
                    Err(e) => Err(format!("chunk {fid}: {e}")),
                }
            })
            .await
            .map_err(|e| e.to_string())?;
        }
        let mut last = String::new();
        for server in self.lookup(fid.volume.0).await? {
            match clients().1.delete(format!("http://{server}/{fid}")).send().await {
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

    /// The servers (`host:port`) holding `volume`, from the masters.
    async fn lookup(&mut self, volume: u32) -> Result<Vec<String>, String> {
        if let Some(servers) = self.locations.get(&volume) {
            return Ok(servers.clone());
        }
        if self.masters.is_empty() {
            return Err(format!("volume {volume} is not on this server, and it has no master to ask"));
        }
        let mut last = String::new();
        for master in &self.masters {
            let url = format!("http://{master}/dir/lookup?volumeId={volume}");
            let reply = match clients().1.get(url).send().await {
                Ok(reply) => reply.bytes().await,
                Err(e) => Err(e),
            };
            let json: serde_json::Value = match reply {
                Ok(body) => serde_json::from_slice(&body).unwrap_or_default(),
                Err(e) => {
                    last = format!("master {master}: {e}");
                    continue;
                }
            };
            let servers: Vec<String> = json["locations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["url"].as_str().map(str::to_owned))
                .collect();
            if !servers.is_empty() {
                self.locations.insert(volume, servers.clone());
                return Ok(servers);
            }
            last = format!("master {master}: {}", json["error"].as_str().unwrap_or("no locations"));
        }
        Err(format!("looking up volume {volume}: {last}"))
    }
}

fn finish(builder: Builder, body: Body) -> Response {
    builder.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "building a reply");
        ApiError::empty(StatusCode::INTERNAL_SERVER_ERROR).into_response()
    })
}
