//! The Rust SDK for SeaweedFS: upload, download, ranged and streaming reads, delete,
//! stat and lookup, with every byte verified before it is returned.
//!
//! ## Transports and the fallback policy
//! Reads go to a volume server through [`ReadTransport`]s: RDMA engines (given to the
//! builder with [`ClientBuilder::rdma_transport`]; `RdmaTransport`, with the default
//! `rdma` feature, is the one over `rdma-transport`) first, then HTTP ([`HttpTransport`],
//! always present). Under [`RdmaPolicy::Prefer`] (the default), a read that RDMA cannot
//! serve — not offered, unavailable, timed out ([`ClientBuilder::rdma_timeout`]), failed
//! verification, server error — is served over HTTP for that request; a transport at
//! fault is then skipped on that server for a [`Backoff`], after which one read probes it
//! (the others keep using HTTP until the probe answers) and a success restores it.
//! Every fallback is counted with its [`FallbackReason`] ([`Client::metrics`],
//! [`Client::fallback_counts`]) and logged with `tracing::debug!`, so an operator can see
//! why RDMA is not used; [`Client::transport_health`] shows which servers are backed off.
//! "Not found" is authoritative and never falls back.
//!
//! ## Clusters with gRPC mutual TLS
//! RDMA sessions are opened over the volume server's gRPC port. When the cluster runs
//! that port with mutual TLS (weed's `security.toml` `[grpc]` sections), the RDMA
//! transport needs a client certificate the servers trust:
//! `RdmaTransportConfig::with_weed_security_toml` takes `[grpc.client]`'s certificate and
//! `[grpc] ca` from the file weed's own clients use; `RdmaTransportConfig::with_grpc_tls`
//! takes the PEM files. Without one (or with a certificate of another CA) no session
//! opens and every read falls back to HTTP, counted as `unavailable`.
//!
//! ## Locations
//! Volume locations come from the master's `/dir/lookup` and are cached for
//! [`ClientBuilder::location_cache_ttl`]. A cached location is dropped and looked up
//! again, and the read retried once, when every server in it is unreachable or when it
//! answers "not found" (a volume server without the volume answers 404, so that may mean
//! the volume moved; the answer stands if the master still names the same servers).
//!
//! ## Integrity
//! A whole-needle read is verified by the transport (CRC32-C of the stored bytes, and
//! for RDMA the needle header too); gzip-stored needles are then decompressed. Nothing
//! unverified is ever returned, on any kind of read:
//! - [`Client::read_range`]: SeaweedFS keeps one CRC per needle and none per block, so a
//!   sub-range cannot be verified on its own and an HTTP `Range` reply could not be
//!   checked. A ranged read therefore reads the whole needle and returns the range only
//!   after the whole needle's CRC32-C matched. Over HTTP the needle streams through the
//!   CRC (and through gunzip when stored compressed) keeping only the requested bytes, so
//!   memory is the size of the range while bandwidth is the size of the needle; over RDMA
//!   the needle lands whole in memory anyway, and the range is sliced from it.
//! - [`Client::download_stream`]: see [`NeedleStream`]: chunks are released only after
//!   the whole needle verified; above [`ClientBuilder::stream_memory_limit`] the needle
//!   is held in an unlinked temporary file rather than in memory.
//!
//! ## Chunked files
//! A needle flagged as a chunk manifest (flag 0x80: `weed upload -maxMB`, or
//! [`Client::upload_chunked`]) holds JSON listing the needles ("chunks") that hold the
//! file. [`Client::download`], [`Client::read_range`] and [`Client::download_stream`]
//! read the manifest as stored (verified like any needle), then each chunk it lists as
//! a needle of its own — RDMA first, HTTP as the fallback, CRC32-C verified — and
//! return the file. A ranged read reads only the chunks the range touches. A stream of
//! a chunked file is put together from all its verified chunks before its first chunk
//! is released, as for one needle. [`Client::read_stored`] returns the manifest itself
//! ([`NeedleData::chunk_manifest`] set). Every chunk must have exactly the size the
//! manifest lists, else [`Error::BadManifest`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), client_sdk::Error> {
//! use client_sdk::{Client, UploadOptions};
//!
//! // A master, or our standalone volume server (`./scripts/serve`), at host:port.
//! let client = Client::builder("127.0.0.1:8080").build()?;
//! let stored = client.upload(b"hello".to_vec(), &UploadOptions::named("hello.txt")).await?;
//! assert_eq!(client.download(&stored.fid).await?, &b"hello"[..]);
//! assert_eq!(client.read_range(&stored.fid, 1..4).await?, &b"ell"[..]);
//! client.delete(&stored.fid).await?;
//! // Why reads did not use RDMA, as Prometheus text:
//! print!("{}", client.metrics().to_prometheus());
//! # Ok(()) }
//! ```

// Nothing here needs unsafe: the verbs live in rdma-transport.
#![forbid(unsafe_code)]

mod error;
#[cfg(feature = "filer")]
pub mod filer;
mod master;
mod policy;
#[cfg(feature = "rdma")]
mod rdma;
mod stream;
mod transport;
#[cfg(any(feature = "rdma", feature = "filer"))]
mod weed_security;

pub use error::Error;
#[cfg(feature = "filer")]
pub use filer::{ChunkReport, FileInfo, FileStream, FilerClient, FilerClientBuilder};
pub use master::{AssignOptions, Assignment};
pub use needle::FileId;
pub use policy::{Backoff, FallbackReason, RdmaPolicy, ReadMetrics, TransportHealth};
#[cfg(feature = "rdma")]
pub use rdma::{DeviceChoice, RdmaEngine, RdmaTransport, RdmaTransportConfig};
/// Dialing the RDMA control plane and the filer over weed-style gRPC mutual TLS
/// (`rdma-transport`'s): see `RdmaTransportConfig::with_grpc_tls` and
/// `FilerClientBuilder::grpc_dialer`.
#[cfg(any(feature = "rdma", feature = "filer"))]
pub use rdma_transport::grpc_tls;
pub use stream::NeedleStream;
pub use transport::{
    BoxFuture, HttpTransport, NeedleData, ReadTransport, TransportError, TransportErrorKind,
};

use bytes::Bytes;
use fallback_http::{HttpReadConfig, HttpReader, NeedleBody};
use master::{MasterApi, Source};
use needle::{Chunk, ChunkManifest};
use policy::PolicyState;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`Client`].
///
/// ```
/// use client_sdk::{Backoff, Client, RdmaPolicy};
/// use std::time::Duration;
///
/// let client = Client::builder("127.0.0.1:9333")          // a master
///     .request_timeout(Duration::from_secs(10))
///     .location_cache_ttl(Duration::from_secs(60))
///     .rdma_policy(RdmaPolicy::Prefer)                    // with .rdma_transport(engine)
///     .rdma_timeout(Duration::from_millis(500))
///     .backoff(Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(30) })
///     .jwt("eyJhbGciOiJIUzI1NiJ9.e30.signature")
///     .build()?;
/// # drop(client);
/// # Ok::<(), client_sdk::Error>(())
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    master: String,
    single_server: bool,
    request_timeout: Duration,
    location_cache_ttl: Duration,
    rdma: Vec<Arc<dyn ReadTransport>>,
    rdma_policy: RdmaPolicy,
    rdma_timeout: Duration,
    backoff: Backoff,
    jwt: Option<String>,
    stream_memory_limit: u64,
    locator: Option<Arc<dyn master::VolumeLocator>>,
}

impl ClientBuilder {
    /// Bound on each HTTP request (master and volume servers), connect to last byte.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a volume's locations are trusted before asking the master again
    /// (default 10 minutes; errors that suggest a move refresh them sooner).
    pub fn location_cache_ttl(mut self, ttl: Duration) -> Self {
        self.location_cache_ttl = ttl;
        self
    }

    /// Adds an RDMA read transport, tried before HTTP per the [`RdmaPolicy`]. Several
    /// are tried in the order they are added.
    pub fn rdma_transport(mut self, transport: Arc<dyn ReadTransport>) -> Self {
        self.rdma.push(transport);
        self
    }

    /// Whether reads use RDMA (default [`RdmaPolicy::Prefer`]).
    pub fn rdma_policy(mut self, policy: RdmaPolicy) -> Self {
        self.rdma_policy = policy;
        self
    }

    /// Bound on one RDMA attempt; past it the attempt is dropped and the read falls back
    /// (default 5 s).
    pub fn rdma_timeout(mut self, timeout: Duration) -> Self {
        self.rdma_timeout = timeout;
        self
    }

    /// How long a failing RDMA transport is skipped on a server before it is tried again.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A token presented on every read and delete, and when an RDMA session opens. In
    /// a cluster that signs reads or writes, HTTP reads, stats and deletes need none: on
    /// a 401 they get the file's own token from the master (`/dir/lookup?fileId=`) and
    /// try once more. RDMA sessions only ever present this one: for clusters that sign
    /// reads, give a token signed with the read key (without a `fid` claim it opens
    /// sessions for any file).
    pub fn jwt(mut self, token: impl Into<String>) -> Self {
        self.jwt = Some(token.into());
        self
    }

    /// Needles up to this many stored bytes are held in memory by [`Client::download_stream`]
    /// until verified; larger ones in an unlinked temporary file (default 16 MiB).
    pub fn stream_memory_limit(mut self, bytes: u64) -> Self {
        self.stream_memory_limit = bytes;
        self
    }

    /// Volume locations from `locator` instead of the master's `/dir/lookup`.
    #[cfg(feature = "filer")]
    pub(crate) fn volume_locator(mut self, locator: Arc<dyn master::VolumeLocator>) -> Self {
        self.locator = Some(locator);
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.master.is_empty() {
            return Err(Error::Config("the master address is empty".into()));
        }
        if self.rdma_policy == RdmaPolicy::Require && self.rdma.is_empty() {
            return Err(Error::Config("RdmaPolicy::Require needs an RDMA transport".into()));
        }
        if self.rdma_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config("timeouts must be above zero".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let reader =
            HttpReader::new(&HttpReadConfig { request_timeout: self.request_timeout, ..Default::default() })
                .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                master: MasterApi::new(
                    http.clone(),
                    self.master,
                    self.single_server,
                    self.location_cache_ttl,
                )
                .with_locator(self.locator),
                http,
                rdma: if self.rdma_policy == RdmaPolicy::Off { Vec::new() } else { self.rdma },
                rdma_policy: self.rdma_policy,
                rdma_timeout: self.rdma_timeout,
                http_transport: HttpTransport::new(reader),
                policy: PolicyState::new(self.backoff),
                jwt: self.jwt,
                stream_memory_limit: self.stream_memory_limit,
            }),
        })
    }
}

/// What to store with an upload.
#[derive(Clone, Debug, Default)]
pub struct UploadOptions {
    pub name: Option<String>,
    pub mime: Option<String>,
    /// Stored as `Seaweed-<key>` pairs and served back as `<key>` headers.
    pub pairs: Vec<(String, String)>,
    /// e.g. `"5d"`; also asks the master for a volume with that TTL.
    pub ttl: Option<String>,
    pub assign: AssignOptions,
}

impl UploadOptions {
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: Some(name.into()), ..Self::default() }
    }
}

/// An acknowledged upload.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub fid: FileId,
    pub server: String,
    /// Bytes sent (before any server-side compression).
    pub size: u64,
    /// The server's ETag: raw CRC32-C of the data as it stored it.
    pub etag: String,
}

/// A SeaweedFS client. Cheap to clone; clones share connections, caches and counters.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    master: MasterApi,
    http: reqwest::Client,
    rdma: Vec<Arc<dyn ReadTransport>>,
    rdma_policy: RdmaPolicy,
    rdma_timeout: Duration,
    http_transport: HttpTransport,
    policy: PolicyState,
    jwt: Option<String>,
    stream_memory_limit: u64,
}

/// An operation on one file, done at a server holding its volume.
enum Op {
    /// Reads: the whole stored needle, a plain range, a verified stream.
    Stored,
    Range(Range<u64>),
    Stream,
    /// HTTP only: a `HEAD`, a `DELETE`.
    Stat,
    Delete,
}

/// What it gave.
enum Done {
    Stored(NeedleData),
    Range(Bytes),
    Stream(Box<NeedleStream>),
    /// A range or stream read met a chunk manifest: its verified stored data.
    Manifest(NeedleData),
    Stat(FileStat),
    Deleted,
}

/// A file's metadata as a volume server reports it (a `HEAD`; no data is read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// The server that answered.
    pub server: String,
    /// Bytes as stored (gzip when `compressed`).
    pub stored_size: u64,
    pub compressed: bool,
    /// The server's ETag: raw CRC32-C of the stored bytes.
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub last_modified: Option<String>,
}

impl Client {
    /// A client of the master (or of a standalone volume server, which embeds the
    /// master API) at `host:port`.
    pub fn builder(master: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            master: master.into(),
            single_server: false,
            request_timeout: Duration::from_secs(30),
            location_cache_ttl: Duration::from_secs(600),
            rdma: Vec::new(),
            rdma_policy: RdmaPolicy::default(),
            rdma_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            jwt: None,
            stream_memory_limit: 16 << 20,
            locator: None,
        }
    }

    /// A client of one volume server at `host:port` that holds every volume it reads:
    /// no location lookups. Uploads still ask it for `/dir/assign`, which our standalone
    /// volume server answers.
    pub fn builder_for_volume_server(server: impl Into<String>) -> ClientBuilder {
        ClientBuilder { single_server: true, ..Self::builder(server) }
    }

    /// Assigns a file id through the master and writes `data` to it.
    pub async fn upload(&self, data: impl Into<Bytes>, options: &UploadOptions) -> Result<Uploaded, Error> {
        self.upload_needle(data.into(), options, false).await
    }

    /// Uploads `data` as `weed upload -maxMB` does: in chunks of at most `chunk_size`
    /// bytes, each a needle of its own, then a chunk manifest listing them (JSON,
    /// uploaded with `cm=true`), whose fid is the file's. Chunks already stored are
    /// deleted again (best effort) when a later upload fails. Reads of the returned fid
    /// give the whole file (see the crate docs).
    pub async fn upload_chunked(
        &self,
        data: impl Into<Bytes>,
        options: &UploadOptions,
        chunk_size: u64,
    ) -> Result<Uploaded, Error> {
        let data: Bytes = data.into();
        if chunk_size == 0 {
            return Err(Error::Config("chunk_size must be above zero".into()));
        }
        let name = options.name.clone().unwrap_or_default();
        let mut chunks = Vec::new();
        let mut offset = 0u64;
        for (i, piece) in data.chunks(chunk_size as usize).enumerate() {
            let chunk_options = UploadOptions {
                name: Some(format!("{name}-{}", i + 1)),
                mime: None,
                pairs: Vec::new(),
                ..options.clone()
            };
            match self.upload_needle(data.slice_ref(piece), &chunk_options, false).await {
                Ok(stored) => {
                    chunks.push(Chunk { fid: stored.fid, offset, size: stored.size });
                    offset += stored.size;
                }
                Err(e) => {
                    self.delete_chunks(&chunks).await;
                    return Err(e);
                }
            }
        }
        let manifest = ChunkManifest {
            name,
            mime: options.mime.clone().unwrap_or_else(|| "application/octet-stream".into()),
            size: data.len() as u64,
            chunks,
        };
        let json = Bytes::from(manifest.to_json());
        let manifest_options = UploadOptions { mime: Some("application/json".into()), ..options.clone() };
        match self.upload_needle(json, &manifest_options, true).await {
            Ok(stored) => Ok(Uploaded { size: data.len() as u64, ..stored }),
            Err(e) => {
                self.delete_chunks(&manifest.chunks).await;
                Err(e)
            }
        }
    }

    async fn delete_chunks(&self, chunks: &[Chunk]) {
        for chunk in chunks {
            if let Err(e) = self.delete(&chunk.fid).await {
                tracing::warn!(fid = %chunk.fid, error = %e, "left behind a chunk of a failed upload");
            }
        }
    }

    /// One needle's upload; `chunk_manifest` flags it as a manifest (`cm=true`).
    async fn upload_needle(
        &self,
        data: Bytes,
        options: &UploadOptions,
        chunk_manifest: bool,
    ) -> Result<Uploaded, Error> {
        let mut assign = options.assign.clone();
        assign.ttl = assign.ttl.or_else(|| options.ttl.clone());
        let assignment = self.inner.master.assign(&assign).await?;
        let fid = assignment.fid;
        let server = assignment.server;
        let boundary = multipart_boundary(&data);
        let filename = options.name.as_deref().unwrap_or("");
        let mime = options.mime.as_deref().unwrap_or("application/octet-stream");
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: {mime}\r\n\r\n",
            filename.replace(['"', '\r', '\n'], "_")
        )
        .into_bytes();
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

        let mut request = self
            .inner
            .http
            .post(format!("http://{server}/{fid}"))
            .header(reqwest::header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        if let Some(ttl) = &options.ttl {
            request = request.query(&[("ttl", ttl)]);
        }
        if chunk_manifest {
            request = request.query(&[("cm", "true")]);
        }
        for (key, value) in &options.pairs {
            request = request.header(format!("Seaweed-{key}"), value);
        }
        if let Some(jwt) = &assignment.jwt {
            request = request.bearer_auth(jwt);
        }
        let response = request.send().await.map_err(|e| unreachable_server(&server, &fid, e))?;
        let status = response.status();
        let reply: serde_json::Value = response.json().await.map_err(|e| Error::Server {
            server: server.clone(),
            status: status.as_u16(),
            message: format!("unreadable reply: {e}"),
        })?;
        if status.as_u16() != 201 || reply.get("error").is_some_and(|e| !e.is_null()) {
            let message = reply.get("error").and_then(|e| e.as_str()).unwrap_or("").to_owned();
            return Err(Error::Server { server, status: status.as_u16(), message });
        }
        let etag = reply.get("eTag").and_then(|e| e.as_str()).unwrap_or("").to_owned();
        let sent = needle::crc::etag(needle::crc::crc32c(&data));
        // The server may have stored gzip (weed decides from the mime type and the file
        // name's extension), and then its CRC is over the gzip bytes: read the stored
        // form back, verified, and check that it decompresses to what we sent.
        if etag != sent {
            let stored = self.read_stored(&fid).await?;
            if !stored.compressed || plain_bytes(&fid, stored)? != data {
                return Err(Error::UploadCorrupted { fid: fid.to_string(), stored: etag, sent });
            }
        }
        Ok(Uploaded { fid, server, size: data.len() as u64, etag })
    }

    /// The whole file, verified and decompressed; a chunked file put together from its
    /// verified chunks.
    pub async fn download(&self, fid: &FileId) -> Result<Bytes, Error> {
        let stored = self.read_stored(fid).await?;
        if !stored.chunk_manifest {
            return plain_bytes(fid, stored);
        }
        let manifest = manifest_of(fid, stored)?;
        // The manifest's sizes are not trusted before the chunks verify: reserve at most 64 MiB.
        let mut file = Vec::with_capacity(manifest.total_size().min(64 << 20) as usize);
        for chunk in &manifest.chunks {
            file.extend_from_slice(&self.chunk_data(fid, chunk).await?);
        }
        Ok(file.into())
    }

    /// A chunk of the chunked file `fid`: its plain data, verified, of the listed size.
    async fn chunk_data(&self, fid: &FileId, chunk: &Chunk) -> Result<Bytes, Error> {
        let stored = self.read_stored(&chunk.fid).await?;
        let bad = |detail: String| Error::BadManifest { fid: fid.to_string(), detail };
        if stored.chunk_manifest {
            return Err(bad(format!("chunk {} is itself a chunk manifest", chunk.fid)));
        }
        let data = plain_bytes(&chunk.fid, stored)?;
        if data.len() as u64 != chunk.size {
            return Err(bad(format!("chunk {} holds {} bytes, not {}", chunk.fid, data.len(), chunk.size)));
        }
        Ok(data)
    }

    /// Bytes `range` of a chunked file: only the chunks the range touches are read.
    async fn chunked_range(
        &self,
        fid: &FileId,
        stored: NeedleData,
        range: Range<u64>,
    ) -> Result<Bytes, Error> {
        let manifest = manifest_of(fid, stored)?;
        let len = manifest.total_size();
        if range.end > len {
            return Err(Error::range_not_satisfiable(fid, &range, len));
        }
        let mut out = Vec::with_capacity((range.end - range.start).min(64 << 20) as usize);
        for (chunk, part) in manifest.chunks_in(range.start, range.end) {
            let data = self.chunk_data(fid, chunk).await?;
            out.extend_from_slice(&data[part.start as usize..part.end as usize]);
        }
        Ok(out.into())
    }

    /// A chunked file as a stream, released once every chunk verified.
    async fn chunked_stream(&self, fid: &FileId, stored: NeedleData) -> Result<NeedleStream, Error> {
        let manifest = manifest_of(fid, stored)?;
        let mut assembly =
            stream::Assembly::new(fid, Some(manifest.total_size()), self.inner.stream_memory_limit).await?;
        for chunk in &manifest.chunks {
            assembly.push(&self.chunk_data(fid, chunk).await?).await?;
        }
        assembly.finish(false, (!manifest.mime.is_empty()).then_some(manifest.mime)).await
    }

    /// Bytes `range` of the file (after decompression), verified: see the crate docs for
    /// how. A range past the end is [`Error::RangeNotSatisfiable`].
    pub async fn read_range(&self, fid: &FileId, range: Range<u64>) -> Result<Bytes, Error> {
        if range.start > range.end {
            return Err(Error::range_not_satisfiable(fid, &range, 0));
        }
        match self.at_volume(fid, &Op::Range(range.clone())).await? {
            Done::Range(bytes) => Ok(bytes),
            Done::Manifest(stored) => self.chunked_range(fid, stored, range).await,
            _ => unreachable!("a range read gives a range"),
        }
    }

    /// The whole file as a stream of chunks, for large needles: see [`NeedleStream`] for
    /// what is guaranteed. Resolves once the needle has arrived and verified.
    ///
    /// ```no_run
    /// # async fn demo(client: client_sdk::Client, fid: client_sdk::FileId) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::Write;
    /// let mut out = std::fs::File::create("copy.bin")?;
    /// let mut stream = client.download_stream(&fid).await?;
    /// while let Some(chunk) = stream.next_chunk().await {
    ///     out.write_all(&chunk?)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn download_stream(&self, fid: &FileId) -> Result<NeedleStream, Error> {
        match self.at_volume(fid, &Op::Stream).await? {
            Done::Stream(stream) => Ok(*stream),
            Done::Manifest(stored) => self.chunked_stream(fid, stored).await,
            _ => unreachable!("a streaming read gives a stream"),
        }
    }

    /// The whole needle's stored data (gzip stays gzip), verified.
    pub async fn read_stored(&self, fid: &FileId) -> Result<NeedleData, Error> {
        match self.at_volume(fid, &Op::Stored).await? {
            Done::Stored(data) => Ok(data),
            _ => unreachable!("a whole read gives stored data"),
        }
    }

    async fn locate(&self, volume: needle::VolumeId) -> Result<(Vec<String>, Source), Error> {
        let located = self.inner.master.lookup(volume).await?;
        if located.1 == Source::Master {
            self.inner.policy.counted_lookup();
        }
        Ok(located)
    }

    /// `op` at the volume's servers, retried once at fresh locations when the cached
    /// ones look stale (see the crate docs).
    async fn at_volume(&self, fid: &FileId, op: &Op) -> Result<Done, Error> {
        let (servers, source) = self.locate(fid.volume).await?;
        let result = self.at_servers(&servers, fid, op).await;
        let looks_moved = matches!(result, Err(Error::TransportUnavailable { .. } | Error::NotFound { .. }));
        if !looks_moved || source != Source::Cache || !self.inner.master.forget(fid.volume).await {
            return result;
        }
        self.inner.policy.counted_refresh();
        let (fresh, _) = self.locate(fid.volume).await?;
        if fresh == servers && matches!(result, Err(Error::NotFound { .. })) {
            return result;
        }
        tracing::debug!(%fid, ?servers, ?fresh, "retrying at fresh locations");
        self.at_servers(&fresh, fid, op).await
    }

    /// `op` at the first server that answers; "not found" is final.
    async fn at_servers(&self, servers: &[String], fid: &FileId, op: &Op) -> Result<Done, Error> {
        let mut last = Error::TransportUnavailable { fid: fid.to_string(), detail: "no server".into() };
        for server in servers {
            match self.at_server(server, fid, op).await {
                Ok(done) => return Ok(done),
                Err(e @ Error::NotFound { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Reads: RDMA per the policy, then HTTP. Stat and delete: HTTP. An HTTP 401 means
    /// the cluster signs this access: the request is made once more with the file's
    /// token from the master, as weed clients do.
    async fn at_server(&self, server: &str, fid: &FileId, op: &Op) -> Result<Done, Error> {
        if let Op::Stored | Op::Range(_) | Op::Stream = op
            && let Some(result) = self.try_rdma(server, fid).await
        {
            let data = result?;
            return match op {
                Op::Range(_) | Op::Stream if data.chunk_manifest => Ok(Done::Manifest(data)),
                Op::Range(range) => slice_range(fid, plain_bytes(fid, data)?, range.clone()).map(Done::Range),
                Op::Stream => Ok(Done::Stream(Box::new(NeedleStream::in_memory(fid, data)))),
                _ => Ok(Done::Stored(data)),
            };
        }
        let result = self.over_http(server, fid, op, self.inner.jwt.as_deref()).await;
        if let Err(Error::Server { status: 401, .. }) = &result {
            let read = !matches!(op, Op::Delete);
            if let Some(token) = self.inner.master.file_token(fid, read).await? {
                return self.over_http(server, fid, op, Some(&token)).await;
            }
        }
        result
    }

    /// `op` over HTTP, presenting `jwt`.
    async fn over_http(&self, server: &str, fid: &FileId, op: &Op, jwt: Option<&str>) -> Result<Done, Error> {
        match op {
            Op::Stat => return self.stat_at(server, fid, jwt).await.map(Done::Stat),
            Op::Delete => return self.delete_at(server, fid, jwt).await.map(|()| Done::Deleted),
            Op::Stored | Op::Range(_) | Op::Stream => {}
        }
        let http = &self.inner.http_transport;
        let done = if let Op::Stored = op {
            Done::Stored(
                http.read_needle(server, fid, jwt)
                    .await
                    .map_err(|e| transport_error(server, fid, "http", e))?,
            )
        } else {
            let body = http
                .reader()
                .open_needle(server, fid, jwt)
                .await
                .map_err(|e| transport_error(server, fid, "http", transport::http_error(e)))?;
            match op {
                _ if body.chunk_manifest => Done::Manifest(whole_manifest(server, fid, body).await?),
                Op::Range(range) => Done::Range(stream::range_of(server, fid, body, range.clone()).await?),
                _ => Done::Stream(Box::new(
                    NeedleStream::receive(server, fid, body, self.inner.stream_memory_limit).await?,
                )),
            }
        };
        self.inner.policy.succeeded("http", server);
        Ok(done)
    }

    /// The RDMA attempt: `None` to go on to HTTP (the fallback already counted),
    /// `Some` with the answer otherwise.
    async fn try_rdma(&self, server: &str, fid: &FileId) -> Option<Result<NeedleData, Error>> {
        let inner = &self.inner;
        let prefer = inner.rdma_policy == RdmaPolicy::Prefer;
        match inner.rdma_policy {
            RdmaPolicy::Off => return None,
            RdmaPolicy::Prefer if inner.rdma.is_empty() => {
                inner.policy.fell_back("rdma", FallbackReason::NoRdmaTransport, server, &fid.to_string());
                return None;
            }
            _ => {}
        }
        let mut last = None;
        for transport in &inner.rdma {
            let name = transport.name();
            if prefer && !inner.policy.may_try(name, server, inner.rdma_timeout) {
                inner.policy.fell_back(name, FallbackReason::Backoff, server, &fid.to_string());
                continue;
            }
            let attempt = tokio::time::timeout(
                inner.rdma_timeout,
                transport.read_needle(server, fid, inner.jwt.as_deref()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(TransportError {
                    kind: TransportErrorKind::Timeout,
                    message: format!("no answer within {:?}", inner.rdma_timeout),
                })
            });
            match attempt {
                Ok(data) => {
                    inner.policy.succeeded(name, server);
                    return Some(Ok(data));
                }
                Err(e) => {
                    let Some(reason) = FallbackReason::of(e.kind) else {
                        return Some(Err(Error::NotFound { fid: fid.to_string() }));
                    };
                    inner.policy.failed(name, server, reason);
                    if prefer {
                        inner.policy.fell_back(name, reason, server, &fid.to_string());
                    }
                    last = Some(transport_error(server, fid, name, e));
                }
            }
        }
        if prefer {
            return None;
        }
        Some(Err(last.unwrap_or_else(|| Error::TransportUnavailable {
            fid: fid.to_string(),
            detail: "no RDMA transport".into(),
        })))
    }

    /// Reads served per transport, fallbacks per transport and reason, and location
    /// lookups, since the client was built.
    pub fn metrics(&self) -> ReadMetrics {
        self.inner.policy.metrics()
    }

    /// How many reads fell back from each transport, by reason (the `fallbacks` of
    /// [`Client::metrics`]).
    pub fn fallback_counts(&self) -> HashMap<(&'static str, FallbackReason), u64> {
        self.metrics().fallbacks.into_iter().collect()
    }

    /// The RDMA transports that failed on some server since they last worked there, and
    /// how long each is still skipped.
    pub fn transport_health(&self) -> Vec<TransportHealth> {
        self.inner.policy.health()
    }

    /// Deletes the file. A missing file is [`Error::NotFound`].
    pub async fn delete(&self, fid: &FileId) -> Result<(), Error> {
        self.at_volume(fid, &Op::Delete).await.map(|_| ())
    }

    async fn delete_at(&self, server: &str, fid: &FileId, jwt: Option<&str>) -> Result<(), Error> {
        let mut request = self.inner.http.delete(format!("http://{server}/{fid}"));
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        let response = request.send().await.map_err(|e| unreachable_server(server, fid, e))?;
        // Whatever the answer, a location an RDMA transport cached for the needle may no
        // longer hold it: it must not serve the needle's previous bytes.
        for transport in &self.inner.rdma {
            transport.forget_needle(server, fid);
        }
        match response.status().as_u16() {
            202 => Ok(()),
            404 => Err(Error::NotFound { fid: fid.to_string() }),
            status => {
                let message = response.text().await.unwrap_or_default();
                Err(Error::Server { server: server.to_owned(), status, message })
            }
        }
    }

    /// The file's metadata from a server holding it (a `HEAD`: no data read, nothing
    /// verified).
    pub async fn stat(&self, fid: &FileId) -> Result<FileStat, Error> {
        match self.at_volume(fid, &Op::Stat).await? {
            Done::Stat(stat) => Ok(stat),
            _ => unreachable!("a stat gives a stat"),
        }
    }

    async fn stat_at(&self, server: &str, fid: &FileId, jwt: Option<&str>) -> Result<FileStat, Error> {
        let mut request = self
            .inner
            .http
            .head(format!("http://{server}/{fid}"))
            .header(reqwest::header::ACCEPT_ENCODING, "gzip");
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        let response = request.send().await.map_err(|e| unreachable_server(server, fid, e))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(Error::NotFound { fid: fid.to_string() }),
            status => {
                return Err(Error::Server { server: server.to_owned(), status, message: String::new() });
            }
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(FileStat {
            server: server.to_owned(),
            stored_size: header(reqwest::header::CONTENT_LENGTH).and_then(|l| l.parse().ok()).unwrap_or(0),
            compressed: header(reqwest::header::CONTENT_ENCODING)
                .is_some_and(|e| e.eq_ignore_ascii_case("gzip")),
            etag: header(reqwest::header::ETAG).map(|e| e.trim_matches('"').to_owned()),
            content_type: header(reqwest::header::CONTENT_TYPE),
            last_modified: header(reqwest::header::LAST_MODIFIED),
        })
    }

    /// The servers (`host:port`) holding a volume.
    pub async fn lookup(&self, volume: needle::VolumeId) -> Result<Vec<String>, Error> {
        Ok(self.locate(volume).await?.0)
    }
}

/// A multipart boundary that does not occur in `data` (else the server would cut the
/// file short there).
fn multipart_boundary(data: &[u8]) -> String {
    first_boundary_not_in(data, &format!("seaweed-sdk-{:08x}", needle::crc::crc32c(data)))
}

fn first_boundary_not_in(data: &[u8], stem: &str) -> String {
    (0u32..)
        .map(|n| format!("{stem}-{n}"))
        .find(|b| !data.windows(b.len()).any(|w| w == b.as_bytes()))
        .expect("some boundary is not in the data")
}

/// The SDK error for a transport's failure on `server`.
fn transport_error(server: &str, fid: &FileId, transport: &str, e: TransportError) -> Error {
    let detail = format!("{transport} from {server}: {}", e.message);
    match e.kind {
        TransportErrorKind::NotFound => Error::NotFound { fid: fid.to_string() },
        TransportErrorKind::NotOffered | TransportErrorKind::Unavailable | TransportErrorKind::Timeout => {
            Error::TransportUnavailable { fid: fid.to_string(), detail }
        }
        TransportErrorKind::Corrupt => Error::ChecksumMismatch { fid: fid.to_string(), detail },
        TransportErrorKind::Server(status) => {
            Error::Server { server: server.to_owned(), status, message: e.message }
        }
    }
}

/// A request that never got an HTTP answer.
fn unreachable_server(server: &str, fid: &FileId, e: reqwest::Error) -> Error {
    Error::TransportUnavailable { fid: fid.to_string(), detail: format!("http to {server}: {e}") }
}

/// `range` of verified plain bytes.
fn slice_range(fid: &FileId, plain: Bytes, range: Range<u64>) -> Result<Bytes, Error> {
    let len = plain.len() as u64;
    if range.start > range.end || range.end > len {
        return Err(Error::range_not_satisfiable(fid, &range, len));
    }
    Ok(plain.slice(range.start as usize..range.end as usize))
}

/// A chunk manifest's whole body, verified (manifests are small).
async fn whole_manifest(server: &str, fid: &FileId, body: NeedleBody) -> Result<NeedleData, Error> {
    let stored = body.read_to_end().await;
    stored.map(NeedleData::from).map_err(|e| transport_error(server, fid, "http", transport::http_error(e)))
}

/// The manifest in a chunk manifest's verified stored data.
fn manifest_of(fid: &FileId, stored: NeedleData) -> Result<ChunkManifest, Error> {
    let json = plain_bytes(fid, stored)?;
    ChunkManifest::parse(&json)
        .map_err(|e| Error::BadManifest { fid: fid.to_string(), detail: e.to_string() })
}

/// Decompresses verified stored data when it is gzip.
pub(crate) fn plain_bytes(fid: &FileId, stored: NeedleData) -> Result<Bytes, Error> {
    if !stored.compressed {
        return Ok(stored.bytes);
    }
    gunzip(fid, &stored.bytes)
}

/// Decompresses verified gzip data of `fid`.
pub(crate) fn gunzip(fid: &FileId, gzip: &[u8]) -> Result<Bytes, Error> {
    use std::io::Read;
    let mut plain = Vec::with_capacity(gzip.len() * 4);
    flate2::read::MultiGzDecoder::new(gzip)
        .read_to_end(&mut plain)
        .map_err(|source| Error::Decompress { fid: fid.to_string(), source })?;
    Ok(plain.into())
}

#[cfg(test)]
mod tests {
    use super::{NeedleData, first_boundary_not_in, multipart_boundary, plain_bytes};

    #[test]
    fn the_multipart_boundary_never_occurs_in_the_data() {
        assert_eq!(first_boundary_not_in(b"hello", "b"), "b-0");
        assert_eq!(first_boundary_not_in(b"xx b-0 b-1 yy", "b"), "b-2");
        let data = b"payload";
        assert!(multipart_boundary(data).starts_with("seaweed-sdk-"));
    }

    /// Gzip of several members (a client may upload it as such) inflates whole, as Go's
    /// gzip reader (weed's) inflates it, not only its first member.
    #[test]
    fn gzip_of_several_members_inflates_whole() {
        use std::io::Write;
        let mut stored = Vec::new();
        for member in [&b"first member, "[..], b"second member"] {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(member).unwrap();
            stored.extend(encoder.finish().unwrap());
        }
        let data = NeedleData {
            bytes: stored.into(),
            compressed: true,
            chunk_manifest: false,
            crc: 0,
            content_type: None,
        };
        let plain = plain_bytes(&"3,01637037d6".parse().unwrap(), data).unwrap();
        assert_eq!(&plain[..], b"first member, second member");
    }
}
