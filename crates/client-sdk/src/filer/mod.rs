//! Files by path through a `weed filer`: [`FilerClient`] stats and lists entries and
//! reads files (whole, a byte range, or as a stream), every chunk over the SDK's read
//! path: RDMA first when a transport is configured, HTTP as the fallback, each chunk
//! verified before any of its bytes is used.
//!
//! What a read does, in order:
//! 1. `LookupDirectoryEntry` on the filer's gRPC port (plaintext, or mutual TLS through
//!    the same [`Dialer`] the RDMA control plane uses) gives the entry: attributes, an
//!    inline `content`, or the chunk list.
//! 2. Chunk manifests overlapping the read are read and resolved (nested ones too, to a
//!    bounded depth); the data chunks become visible intervals, newest chunk winning
//!    where chunks overlap; gaps are holes, read as zeros; the size is weed's (the larger
//!    of the attributes' size and the chunks' extent).
//! 3. Each chunk the read overlaps is a needle, read through the SDK's [`Client`] (its
//!    policy, fallback, backoff and counters) with volume locations from the filer's
//!    `LookupVolume` (cached like the master's), so a client that reaches only the filer
//!    and the volume servers works. Chunks are fetched concurrently (bounded by
//!    [`FilerClientBuilder::concurrency`]) and returned in file order.
//! 4. A chunk's bytes are used only after its needle verified (CRC32-C, and over RDMA its
//!    header); then gunzipped if stored gzip, decrypted if the filer encrypted it
//!    (`-encryptVolumeData`, AES-256-GCM), and checked against the size the entry lists.
//!
//! Objects the S3 gateway stored with server-side encryption (SSE-C, SSE-KMS, SSE-S3)
//! are refused with [`Error::ServerSideEncrypted`]: the filer client does not hold
//! their keys, and returning their ciphertext as the file would be wrong bytes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client_sdk::Error> {
//! use client_sdk::FilerClient;
//!
//! // A filer's HTTP address (gRPC on port + 10000), or `host:port.grpcPort`.
//! let filer = FilerClient::builder("127.0.0.1:8888").build()?;
//! let info = filer.stat("/buckets/photos/cat.jpg").await?;
//! let head = filer.read_range("/buckets/photos/cat.jpg", 0..info.size.min(1024)).await?;
//! let mut stream = filer.read_stream("/buckets/photos/cat.jpg").await?;
//! while let Some(piece) = stream.next_chunk().await {
//!     let _verified_bytes = piece?;
//! }
//! println!("{} of {} needles over RDMA", stream.report().over_rdma(), stream.report().needles());
//! # drop(head);
//! # Ok(()) }
//! ```

mod chunks;
mod layout;
mod rpc;
mod stream;

/// The generated code of the SDK's `filer.proto` subset (weed's `filer_pb`), for calls
/// the client does not wrap: see [`FilerClient::grpc`].
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("filer_pb");
}

pub use stream::FileStream;

use crate::policy::{ReadTrace, traced};
use crate::{Client, ClientBuilder, Error, FallbackReason};
use bytes::Bytes;
use chunks::DataChunk;
use futures_util::StreamExt;
use layout::Piece;
use rdma_transport::grpc_tls::{Dialer, TlsError};
use rpc::FilerRpc;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`FilerClient`].
///
/// ```
/// use client_sdk::{FilerClient, RdmaPolicy};
/// use std::time::Duration;
///
/// let filer = FilerClient::builder("127.0.0.1:8888")
///     .rpc_timeout(Duration::from_secs(10))
///     .concurrency(8)
///     // Chunk reads: any setting of the SDK's client (RDMA transports, timeouts, ...).
///     .chunk_reads(|client| client.rdma_policy(RdmaPolicy::Prefer).request_timeout(Duration::from_secs(30)))
///     .build()?;
/// # drop(filer);
/// # Ok::<(), client_sdk::Error>(())
/// ```
#[derive(Debug)]
pub struct FilerClientBuilder {
    filer: String,
    chunk_reads: ClientBuilder,
    dialer: Dialer,
    rpc_timeout: Duration,
    concurrency: usize,
    list_page: u32,
}

impl FilerClientBuilder {
    /// Sets how chunks are read: `configure` gets the builder of the [`Client`] that
    /// reads them (volume locations always come from the filer) and returns it with its
    /// settings, e.g. an RDMA transport with
    /// [`ClientBuilder::rdma_transport`].
    pub fn chunk_reads(mut self, configure: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Self {
        self.chunk_reads = configure(self.chunk_reads);
        self
    }

    /// Dials the filer's gRPC port with `dialer` (plaintext by default): for a cluster
    /// whose gRPC runs mutual TLS.
    pub fn grpc_dialer(mut self, dialer: Dialer) -> Self {
        self.dialer = dialer;
        self
    }

    /// Dials the filer as weed's own gRPC clients do with this `security.toml`: with
    /// `[grpc.client]`'s certificate, trusting `[grpc] ca` (as
    /// `RdmaTransportConfig::with_weed_security_toml` reads it). A file without a client
    /// certificate means plaintext.
    pub fn with_weed_security_toml(self, security_toml: &Path) -> Result<Self, TlsError> {
        let dialer = match crate::weed_security::grpc_client_files(security_toml)? {
            Some(files) => Dialer::mutual_tls(&files)?,
            None => Dialer::default(),
        };
        Ok(self.grpc_dialer(dialer))
    }

    /// Bound on each gRPC call to the filer, and on its connect (default 10 s).
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// Chunks one read fetches at once (default 8).
    pub fn concurrency(mut self, chunks: usize) -> Self {
        self.concurrency = chunks;
        self
    }

    /// Entries asked of the filer per page by [`FilerClient::list`] (default 1024).
    pub fn list_page(mut self, entries: u32) -> Self {
        self.list_page = entries;
        self
    }

    pub fn build(self) -> Result<FilerClient, Error> {
        if self.concurrency == 0 || self.list_page == 0 || self.rpc_timeout.is_zero() {
            return Err(Error::Config("concurrency, list page and RPC timeout must be above zero".into()));
        }
        let rpc = FilerRpc::new(&self.filer, &self.dialer, self.rpc_timeout)?;
        let chunks = self.chunk_reads.volume_locator(Arc::new(rpc.clone())).build()?;
        Ok(FilerClient { rpc, chunks, concurrency: self.concurrency, list_page: self.list_page })
    }
}

/// A client of one `weed filer`: files by path, see the [module docs](self). Cheap to
/// clone; clones share the connection, the chunk client and its caches and counters.
#[derive(Clone, Debug)]
pub struct FilerClient {
    rpc: FilerRpc,
    chunks: Client,
    concurrency: usize,
    list_page: u32,
}

/// An entry of the filer, as [`FilerClient::stat`] and [`FilerClient::list`] give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// The full path, `/`-separated.
    pub path: String,
    pub is_directory: bool,
    /// The bytes a read returns: weed's file size (the larger of the attributes' size,
    /// the chunks' extent and the inline content).
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Unix permission and type bits.
    pub mode: u32,
    /// The MIME type the writer gave, if any.
    pub mime: Option<String>,
    /// Chunks the entry lists (a chunk manifest counts as one); zero in listings, which
    /// leave the chunk lists out.
    pub chunks: usize,
    /// The file's bytes are kept in the entry itself (weed `-saveToFilerLimit`).
    pub inline: bool,
    /// Chunks the filer encrypted (`-encryptVolumeData`), decrypted on read.
    pub encrypted: bool,
}

impl FileInfo {
    fn of(directory: &str, entry: &pb::Entry) -> Self {
        let attributes = entry.attributes.clone().unwrap_or_default();
        let path = if directory.ends_with('/') {
            format!("{directory}{}", entry.name)
        } else {
            format!("{directory}/{}", entry.name)
        };
        let chunks_end = entry.chunks.iter().map(|c| (c.offset.max(0) as u64).saturating_add(c.size)).max();
        FileInfo {
            path,
            is_directory: entry.is_directory,
            size: attributes.file_size.max(chunks_end.unwrap_or(0)).max(entry.content.len() as u64),
            mtime: attributes.mtime,
            mode: attributes.file_mode,
            mime: Some(attributes.mime).filter(|m| !m.is_empty()),
            chunks: entry.chunks.len(),
            inline: !entry.content.is_empty(),
            encrypted: entry.chunks.iter().any(|c| !c.cipher_key.is_empty()),
        }
    }

    fn root() -> Self {
        FileInfo {
            path: "/".into(),
            is_directory: true,
            size: 0,
            mtime: 0,
            mode: 0o40755,
            mime: None,
            chunks: 0,
            inline: false,
            encrypted: false,
        }
    }
}

/// How the needles of one file read were served: see [`FileStream::report`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkReport {
    /// Needles read (data chunks and chunk manifests), by the transport that served
    /// them (`"http"`, `"rdma-sideway"`, ...).
    pub served_by: BTreeMap<&'static str, u64>,
    /// Each time a needle read left a transport for the next, by transport and reason.
    pub fallbacks: BTreeMap<(&'static str, FallbackReason), u64>,
    /// The data was inline in the entry: no needle was read.
    pub inline: bool,
}

impl ChunkReport {
    /// Needles read, on any transport.
    pub fn needles(&self) -> u64 {
        self.served_by.values().sum()
    }

    /// Needles served by an RDMA transport (every transport but HTTP).
    pub fn over_rdma(&self) -> u64 {
        self.served_by.iter().filter(|(transport, _)| **transport != "http").map(|(_, n)| n).sum()
    }

    fn add(&mut self, trace: ReadTrace) {
        for (transport, n) in trace.reads {
            *self.served_by.entry(transport).or_default() += n;
        }
        for (key, n) in trace.fallbacks {
            *self.fallbacks.entry(key).or_default() += n;
        }
    }
}

/// One line for people: `6 of 6 chunk needles over RDMA`, then why any were not
/// (`; not over rdma-sideway: not_offered x6`), or that the data was inline.
impl std::fmt::Display for ChunkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.inline {
            return f.write_str("inline in the entry: no chunk read");
        }
        write!(f, "{} of {} chunk needles over RDMA", self.over_rdma(), self.needles())?;
        for (i, ((transport, reason), n)) in self.fallbacks.iter().enumerate() {
            let lead = if i == 0 { "; not over " } else { ", " };
            write!(f, "{lead}{transport}: {reason} x{n}")?;
        }
        Ok(())
    }
}

/// What a read of (part of) a file needs: where its bytes are, and the pieces that
/// make the read.
struct Plan {
    info: FileInfo,
    source: Source,
    pieces: Vec<Piece>,
    /// Bytes the pieces add up to.
    len: u64,
}

/// Where a file's bytes are.
#[derive(Clone)]
enum Source {
    /// In the entry (piece chunk index 0).
    Inline(Bytes),
    /// In these data chunks (pieces index them).
    Chunks(Arc<Vec<DataChunk>>),
}

impl Source {
    /// The needle behind chunk `chunk`, which reads of it share (none: inline).
    fn needle(&self, chunk: usize) -> Option<needle::FileId> {
        match self {
            Source::Inline(_) => None,
            Source::Chunks(chunks) => Some(chunks[chunk].stored.fid),
        }
    }

    /// The plain, verified bytes of chunk `chunk`, read through `client`.
    async fn fetch(&self, client: &Client, path: &str, chunk: usize) -> Result<Bytes, Error> {
        match self {
            Source::Inline(content) => Ok(content.clone()),
            Source::Chunks(chunks) => {
                let chunk = &chunks[chunk];
                chunks::plain_bytes(client, path, &chunk.stored, Some(chunk.extent.size)).await
            }
        }
    }
}

impl FilerClient {
    /// A client of the filer at `filer`: its HTTP `host:port` (gRPC on port + 10000, as
    /// weed's tools take it) or `host:port.grpcPort`. Nothing is dialed before the first
    /// call.
    pub fn builder(filer: impl Into<String>) -> FilerClientBuilder {
        let filer = filer.into();
        FilerClientBuilder {
            chunk_reads: Client::builder(filer.clone()),
            filer,
            dialer: Dialer::default(),
            rpc_timeout: Duration::from_secs(10),
            concurrency: 8,
            list_page: 1024,
        }
    }

    /// The client that reads the chunks: its [`Client::metrics`] count every needle read
    /// and fallback, its [`Client::transport_health`] the RDMA backoffs.
    pub fn chunk_client(&self) -> &Client {
        &self.chunks
    }

    /// The generated gRPC client of the `filer.proto` subset, on this client's
    /// connection (with its TLS), for calls the SDK does not wrap. Call it within a tokio
    /// runtime (its connection runs there).
    pub fn grpc(&self) -> pb::seaweed_filer_client::SeaweedFilerClient<tonic::transport::Channel> {
        self.rpc.raw()
    }

    /// The filer's configuration (`GetFilerConfiguration`): its version, whether it
    /// encrypts chunks, its chunk size, masters.
    pub async fn configuration(&self) -> Result<pb::GetFilerConfigurationResponse, Error> {
        self.rpc.configuration().await
    }

    /// The entry at `path`; [`Error::NoSuchPath`] when there is none.
    pub async fn stat(&self, path: &str) -> Result<FileInfo, Error> {
        Ok(self.entry(path).await?.0)
    }

    async fn entry(&self, path: &str) -> Result<(FileInfo, pb::Entry), Error> {
        let path = normalize(path);
        let Some((directory, name)) = path.rsplit_once('/').filter(|(_, name)| !name.is_empty()) else {
            return Ok((FileInfo::root(), pb::Entry { is_directory: true, ..Default::default() }));
        };
        let directory = if directory.is_empty() { "/" } else { directory };
        match self.rpc.lookup_entry(directory, name).await? {
            Some(entry) => Ok((FileInfo::of(directory, &entry), entry)),
            None => Err(Error::NoSuchPath { path }),
        }
    }

    /// Up to `limit` entries of the directory `path`, in name order, after the entry
    /// named `start_after` (from the first with `None`): one page of a listing.
    pub async fn list_page(
        &self,
        path: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FileInfo>, Error> {
        let directory = normalize(path);
        let entries = self.rpc.list(&directory, start_after.unwrap_or(""), limit).await?;
        if entries.is_empty() && start_after.is_none() {
            // Empty, missing, or a file (which weed lists as empty): say which.
            let (info, _) = self.entry(&directory).await?;
            if !info.is_directory {
                return Err(Error::WrongEntryKind { path: directory, detail: "not a directory" });
            }
        }
        Ok(entries.iter().map(|entry| FileInfo::of(&directory, entry)).collect())
    }

    /// Every entry of the directory `path`, in name order, asked of the filer a page at
    /// a time ([`FilerClientBuilder::list_page`]) as the stream is read.
    pub fn list(
        &self,
        path: &str,
    ) -> impl futures_core::Stream<Item = Result<FileInfo, Error>> + Send + 'static {
        let (client, directory) = (self.clone(), normalize(path));
        // State: the last name listed, or None before the first page; done after a short page.
        futures_util::stream::unfold(Some(None::<String>), move |state| {
            let (client, directory) = (client.clone(), directory.clone());
            async move {
                let after = state?;
                let page = client.list_page(&directory, after.as_deref(), client.list_page).await;
                let next = match &page {
                    Ok(entries) if entries.len() as u32 == client.list_page => {
                        entries.last().map(|last| Some(last.path.rsplit('/').next().unwrap_or("").to_owned()))
                    }
                    _ => None,
                };
                let items: Vec<Result<FileInfo, Error>> = match page {
                    Ok(entries) => entries.into_iter().map(Ok).collect(),
                    Err(e) => vec![Err(e)],
                };
                Some((futures_util::stream::iter(items), next))
            }
        })
        .flatten()
    }

    /// The whole file, every chunk verified. It is put together in memory: for large
    /// files, [`FilerClient::read_stream`].
    pub async fn read(&self, path: &str) -> Result<Bytes, Error> {
        let (plan, _) = traced(self.plan(path, None)).await;
        self.assemble(plan?).await
    }

    /// Bytes `range` of the file: only the chunks the range overlaps are read (whole,
    /// each verified), concurrently. A range past the end is
    /// [`Error::RangeNotSatisfiable`].
    pub async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Bytes, Error> {
        let (plan, _) = traced(self.plan(path, Some(range))).await;
        self.assemble(plan?).await
    }

    /// The file as a stream of verified pieces in file order, chunks fetched ahead
    /// concurrently ([`FilerClientBuilder::concurrency`]): memory is a few chunks,
    /// whatever the file's size. Each piece is released once its own chunk verified.
    pub async fn read_stream(&self, path: &str) -> Result<FileStream, Error> {
        let (plan, trace) = traced(self.plan(path, None)).await;
        let plan = plan?;
        let mut report =
            ChunkReport { inline: matches!(plan.source, Source::Inline(_)), ..ChunkReport::default() };
        report.add(trace);
        Ok(FileStream::new(self.chunks.clone(), plan, report, self.concurrency))
    }

    /// Looks the file up and works out which chunks make bytes `range` of it (all of it
    /// with `None`), chunk manifests resolved.
    async fn plan(&self, path: &str, range: Option<Range<u64>>) -> Result<Plan, Error> {
        let (info, entry) = self.entry(path).await?;
        let path = info.path.as_str();
        if info.is_directory {
            return Err(Error::WrongEntryKind { path: info.path, detail: "is a directory" });
        }
        refuse_unreadable(path, &entry)?;
        let range = range.unwrap_or(0..info.size);
        if range.start > range.end || range.end > info.size {
            return Err(Error::RangeNotSatisfiable {
                fid: info.path,
                start: range.start,
                end: range.end,
                len: info.size,
            });
        }
        let len = range.end - range.start;
        if !entry.content.is_empty() {
            // Content shorter than the size the attributes give reads as if followed by a hole.
            let content = Bytes::from(entry.content);
            let end = range.end.min(content.len() as u64).max(range.start);
            let pieces = [Piece::Chunk { chunk: 0, bytes: range.start..end }, Piece::Hole(range.end - end)];
            let pieces = pieces.into_iter().filter(|p| p.len() > 0).collect();
            return Ok(Plan { info, source: Source::Inline(content), pieces, len });
        }
        let chunks = chunks::resolve(&self.chunks, path, &entry.chunks, range.clone()).await?;
        let extents: Vec<layout::Extent> = chunks.iter().map(|c| c.extent).collect();
        let pieces = layout::pieces(&layout::visible_intervals(&extents), range);
        Ok(Plan { info, source: Source::Chunks(Arc::new(chunks)), pieces, len })
    }

    /// The bytes of a plan, in one buffer: each chunk needle is fetched once however
    /// many pieces it serves, at most `concurrency` at a time, and its pieces copied into
    /// place as it arrives (holes stay zero).
    async fn assemble(&self, plan: Plan) -> Result<Bytes, Error> {
        let mut out = Vec::new();
        out.try_reserve_exact(plan.len as usize).map_err(|e| Error::LocalIo {
            fid: plan.info.path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::OutOfMemory, e),
        })?;
        out.resize(plan.len as usize, 0);
        // Per needle: a chunk index to fetch it by, and where its pieces go (bytes of
        // the chunk, offset in `out`).
        type Places = Vec<(Range<u64>, usize)>;
        let mut wanted: HashMap<Option<needle::FileId>, (usize, Places)> = HashMap::new();
        let mut at = 0usize;
        for piece in &plan.pieces {
            if let Piece::Chunk { chunk, bytes } = piece {
                let places =
                    &mut wanted.entry(plan.source.needle(*chunk)).or_insert_with(|| (*chunk, Vec::new())).1;
                places.push((bytes.clone(), at));
            }
            at += piece.len() as usize;
        }
        let (source, path) = (&plan.source, plan.info.path.as_str());
        let mut fetches = futures_util::stream::iter(wanted.into_values())
            .map(|(chunk, places)| async move {
                Ok::<_, Error>((source.fetch(&self.chunks, path, chunk).await?, places))
            })
            .buffer_unordered(self.concurrency);
        while let Some(fetched) = fetches.next().await {
            let (data, places) = fetched?;
            for (bytes, at) in places {
                let piece = &data[bytes.start as usize..bytes.end as usize];
                out[at..at + piece.len()].copy_from_slice(piece);
            }
        }
        Ok(out.into())
    }
}

/// `path` as the filer names entries: absolute, no trailing or doubled `/`.
fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Refuses entries whose bytes this client cannot give: S3 server-side encrypted
/// objects (their chunks say so, or the S3 gateway's metadata on the entry does),
/// symlinks, and data only in a remote storage.
fn refuse_unreadable(path: &str, entry: &pb::Entry) -> Result<(), Error> {
    let sse = entry.chunks.iter().find_map(chunks::sse_kind).or_else(|| {
        let has = |key: &str| entry.extended.keys().any(|k| k.eq_ignore_ascii_case(key));
        if has("X-Amz-Server-Side-Encryption-Customer-Algorithm") {
            return Some("SSE-C");
        }
        if has("x-seaweedfs-sse-kms-key") {
            return Some("SSE-KMS");
        }
        if has("x-seaweedfs-sse-s3-key") {
            return Some("SSE-S3");
        }
        let declared =
            entry.extended.iter().find(|(k, _)| k.eq_ignore_ascii_case("X-Amz-Server-Side-Encryption"));
        declared.map(|(_, value)| if value.starts_with(b"aws:kms") { "SSE-KMS" } else { "SSE-S3" })
    });
    if let Some(kind) = sse {
        return Err(Error::ServerSideEncrypted { path: path.to_owned(), kind });
    }
    let unsupported = |detail: String| Err(Error::UnsupportedEntry { path: path.to_owned(), detail });
    if let Some(target) = entry.attributes.as_ref().map(|a| &a.symlink_target).filter(|t| !t.is_empty()) {
        return unsupported(format!("a symlink to {target}: read the target"));
    }
    if let Some(remote) = &entry.remote_entry
        && entry.chunks.is_empty()
        && entry.content.is_empty()
        && remote.remote_size > 0
    {
        return unsupported(format!(
            "only in remote storage {:?}, not cached in the cluster",
            remote.storage_name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_without_empty_parts() {
        assert_eq!(normalize("a/b/"), "/a/b");
        assert_eq!(normalize("//a//b"), "/a/b");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize(""), "/");
    }

    #[test]
    fn s3_server_side_encryption_is_refused_by_chunk_and_by_entry_metadata() {
        let entry = |chunk_sse: pb::SseType, extended: &[(&str, &[u8])]| pb::Entry {
            chunks: vec![pb::FileChunk { sse_type: chunk_sse as i32, size: 1, ..Default::default() }],
            extended: extended.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect(),
            ..Default::default()
        };
        let kind = |e: &pb::Entry| match refuse_unreadable("/b/k", e) {
            Err(Error::ServerSideEncrypted { kind, .. }) => Some(kind),
            Ok(()) => None,
            Err(other) => panic!("{other}"),
        };
        assert_eq!(kind(&entry(pb::SseType::None, &[])), None);
        assert_eq!(kind(&entry(pb::SseType::SseC, &[])), Some("SSE-C"));
        assert_eq!(kind(&entry(pb::SseType::SseS3, &[])), Some("SSE-S3"));
        let none = pb::SseType::None;
        assert_eq!(
            kind(&entry(none, &[("X-Amz-Server-Side-Encryption-Customer-Algorithm", b"AES256")])),
            Some("SSE-C")
        );
        assert_eq!(kind(&entry(none, &[("x-seaweedfs-sse-kms-key", b"..")])), Some("SSE-KMS"));
        assert_eq!(kind(&entry(none, &[("X-Amz-Server-Side-Encryption", b"aws:kms")])), Some("SSE-KMS"));
        assert_eq!(kind(&entry(none, &[("X-Amz-Server-Side-Encryption", b"AES256")])), Some("SSE-S3"));
        assert_eq!(kind(&entry(none, &[("Seaweed-Color", b"blue")])), None);
    }

    #[test]
    fn symlinks_and_remote_only_entries_are_unsupported() {
        let symlink = pb::Entry {
            attributes: Some(pb::FuseAttributes { symlink_target: "/x".into(), ..Default::default() }),
            ..Default::default()
        };
        assert!(matches!(refuse_unreadable("/l", &symlink), Err(Error::UnsupportedEntry { .. })));
        let remote = pb::Entry {
            remote_entry: Some(pb::RemoteEntry { storage_name: "s3".into(), remote_size: 5 }),
            ..Default::default()
        };
        assert!(matches!(refuse_unreadable("/r", &remote), Err(Error::UnsupportedEntry { .. })));
    }

    #[test]
    fn a_report_says_how_many_needles_came_over_rdma_and_why_others_did_not() {
        let mut report = ChunkReport::default();
        assert_eq!(report.to_string(), "0 of 0 chunk needles over RDMA");
        report.served_by.insert("rdma-sideway", 4);
        report.served_by.insert("http", 2);
        report.fallbacks.insert(("rdma-sideway", FallbackReason::Timeout), 1);
        report.fallbacks.insert(("rdma-sideway", FallbackReason::VerificationFailed), 1);
        assert_eq!(
            report.to_string(),
            "4 of 6 chunk needles over RDMA; not over rdma-sideway: timeout x1, rdma-sideway: verification_failed x1"
        );
        let inline = ChunkReport { inline: true, ..ChunkReport::default() };
        assert_eq!(inline.to_string(), "inline in the entry: no chunk read");
    }

    #[test]
    fn the_size_is_the_largest_of_attributes_chunks_and_content() {
        let chunk = |offset, size| pb::FileChunk { offset, size, ..Default::default() };
        let mut entry = pb::Entry {
            name: "f".into(),
            chunks: vec![chunk(0, 10), chunk(30, 5)],
            attributes: Some(pb::FuseAttributes { file_size: 20, ..Default::default() }),
            ..Default::default()
        };
        let info = FileInfo::of("/d", &entry);
        assert_eq!((info.path.as_str(), info.size, info.chunks), ("/d/f", 35, 2));
        entry.attributes.as_mut().unwrap().file_size = 50;
        assert_eq!(FileInfo::of("/", &entry).size, 50);
        assert_eq!(FileInfo::of("/", &entry).path, "/f");
    }
}
