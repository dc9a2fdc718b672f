//! The Rust SDK for SeaweedFS: upload, download, ranged reads, delete and lookup, with
//! every byte verified before it is returned.
//!
//! Reads go through [`ReadTransport`]s in order: RDMA engines first when configured,
//! HTTP ([`HttpTransport`], always present) last. A transport that is unavailable or
//! returns bytes that fail verification makes the read fall back to the next one for
//! that request; the fallback is counted with its reason ([`Client::fallback_counts`])
//! and logged at debug level. "Not found" is authoritative and never falls back.
//!
//! ## Integrity
//! A whole-needle read is verified by the transport (CRC32-C of the stored bytes, and
//! for RDMA the needle header too); gzip-stored needles are then decompressed.
//! Ranged reads use the same verified whole-needle read and slice the plain bytes:
//! SeaweedFS keeps one CRC per needle, so a sub-range cannot be verified on its own.
//! This costs bandwidth on large needles, never correctness.
//!
//! ```no_run
//! # async fn demo() -> Result<(), client_sdk::Error> {
//! use client_sdk::{Client, UploadOptions};
//!
//! let client = Client::builder("127.0.0.1:9333").build()?;
//! let stored = client.upload(b"hello".to_vec(), &UploadOptions::named("hello.txt")).await?;
//! assert_eq!(client.download(&stored.fid).await?, &b"hello"[..]);
//! assert_eq!(client.read_range(&stored.fid, 1..4).await?, &b"ell"[..]);
//! client.delete(&stored.fid).await?;
//! # Ok(()) }
//! ```

mod error;
mod master;
mod transport;

pub use error::Error;
pub use master::{AssignOptions, Assignment};
pub use needle::FileId;
pub use transport::{
    BoxFuture, HttpTransport, NeedleData, ReadTransport, TransportError, TransportErrorKind,
};

use bytes::Bytes;
use fallback_http::{HttpReadConfig, HttpReader};
use master::MasterApi;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    master: String,
    request_timeout: Duration,
    location_cache_ttl: Duration,
    transports: Vec<Arc<dyn ReadTransport>>,
    retry_after: Duration,
    jwt: Option<String>,
}

impl ClientBuilder {
    /// Bound on each HTTP request (master and volume servers).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a volume's locations are trusted before asking the master again.
    pub fn location_cache_ttl(mut self, ttl: Duration) -> Self {
        self.location_cache_ttl = ttl;
        self
    }

    /// Adds a read transport tried before HTTP (e.g. an RDMA engine). Transports are
    /// tried in the order they are added.
    pub fn transport(mut self, transport: Arc<dyn ReadTransport>) -> Self {
        self.transports.push(transport);
        self
    }

    /// After a transport fails as unavailable, how long reads skip it before trying
    /// it again.
    pub fn retry_after(mut self, backoff: Duration) -> Self {
        self.retry_after = backoff;
        self
    }

    /// A read JWT for clusters that sign reads.
    pub fn jwt(mut self, token: impl Into<String>) -> Self {
        self.jwt = Some(token.into());
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.master.is_empty() {
            return Err(Error::Config("the master address is empty".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let reader =
            HttpReader::new(&HttpReadConfig { request_timeout: self.request_timeout, ..Default::default() })
                .map_err(|e| Error::Config(e.to_string()))?;
        let mut transports: Vec<TransportSlot> =
            self.transports.into_iter().map(TransportSlot::new).collect();
        transports.push(TransportSlot::new(Arc::new(HttpTransport::new(reader))));
        Ok(Client {
            inner: Arc::new(Inner {
                master: MasterApi::new(http.clone(), self.master, self.location_cache_ttl),
                http,
                transports,
                retry_after: self.retry_after,
                jwt: self.jwt,
                fallbacks: Mutex::new(HashMap::new()),
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

/// A SeaweedFS client. Cheap to clone; clones share connections and caches.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    master: MasterApi,
    http: reqwest::Client,
    transports: Vec<TransportSlot>,
    retry_after: Duration,
    jwt: Option<String>,
    /// (transport, reason) -> how many reads fell back.
    fallbacks: Mutex<HashMap<(&'static str, &'static str), u64>>,
}

/// A transport and, after it failed as unavailable, when to try it again.
#[derive(Debug)]
struct TransportSlot {
    transport: Arc<dyn ReadTransport>,
    skip_until: Mutex<Option<Instant>>,
}

impl TransportSlot {
    fn new(transport: Arc<dyn ReadTransport>) -> Self {
        Self { transport, skip_until: Mutex::new(None) }
    }

    fn in_backoff(&self) -> bool {
        self.skip_until.lock().expect("not poisoned").is_some_and(|until| Instant::now() < until)
    }
}

impl Client {
    /// A client of the master (or standalone volume server) at `host:port`.
    pub fn builder(master: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            master: master.into(),
            request_timeout: Duration::from_secs(30),
            location_cache_ttl: Duration::from_secs(600),
            transports: Vec::new(),
            retry_after: Duration::from_secs(5),
            jwt: None,
        }
    }

    /// Assigns a file id through the master and writes `data` to it.
    pub async fn upload(&self, data: impl Into<Bytes>, options: &UploadOptions) -> Result<Uploaded, Error> {
        let data = data.into();
        let mut assign = options.assign.clone();
        assign.ttl = assign.ttl.or_else(|| options.ttl.clone());
        let assignment = self.inner.master.assign(&assign).await?;
        let fid = assignment.fid;
        let server = assignment.server;
        let boundary = "seaweed-rdma-sdk-9f6c1e";
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
        for (key, value) in &options.pairs {
            request = request.header(format!("Seaweed-{key}"), value);
        }
        if let Some(jwt) = &assignment.jwt {
            request = request.bearer_auth(jwt);
        }
        let unreachable =
            |e: reqwest::Error| Error::Server { server: server.clone(), status: 0, message: e.to_string() };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let reply: serde_json::Value = response.json().await.map_err(unreachable)?;
        if status.as_u16() != 201 || reply.get("error").is_some_and(|e| !e.is_null()) {
            let message = reply.get("error").and_then(|e| e.as_str()).unwrap_or("").to_owned();
            return Err(Error::Server { server, status: status.as_u16(), message });
        }
        let etag = reply.get("eTag").and_then(|e| e.as_str()).unwrap_or("").to_owned();
        let sent = needle::crc::etag(needle::crc::crc32c(&data));
        // The server stores gzip for compressible types, and then its CRC is over the
        // gzip bytes; otherwise it must be the CRC of exactly what we sent.
        if etag != sent && !server_may_compress(mime) {
            return Err(Error::UploadCorrupted { fid: fid.to_string(), stored: etag, sent });
        }
        Ok(Uploaded { fid, server, size: data.len() as u64, etag })
    }

    /// The whole file, verified and decompressed.
    pub async fn download(&self, fid: &FileId) -> Result<Bytes, Error> {
        let stored = self.read_stored(fid).await?;
        plain_bytes(fid, stored)
    }

    /// Bytes `range` of the file (after decompression), verified (see the crate docs).
    pub async fn read_range(&self, fid: &FileId, range: Range<u64>) -> Result<Bytes, Error> {
        let plain = self.download(fid).await?;
        let len = plain.len() as u64;
        if range.start > range.end || range.end > len {
            return Err(Error::RangeNotSatisfiable {
                fid: fid.to_string(),
                start: range.start,
                end: range.end,
                len,
            });
        }
        Ok(plain.slice(range.start as usize..range.end as usize))
    }

    /// The whole needle's stored data (gzip stays gzip), verified.
    pub async fn read_stored(&self, fid: &FileId) -> Result<NeedleData, Error> {
        match self.read_from_locations(fid).await {
            // The volume may have moved: ask the master again, once.
            Err(Error::TransportUnavailable { .. }) => {
                self.inner.master.forget(fid.volume).await;
                self.read_from_locations(fid).await
            }
            other => other,
        }
    }

    async fn read_from_locations(&self, fid: &FileId) -> Result<NeedleData, Error> {
        let servers = self.inner.master.lookup(fid.volume).await?;
        let mut last = Error::TransportUnavailable { fid: fid.to_string(), detail: "no server".into() };
        for server in &servers {
            match self.read_from_server(server, fid).await {
                Ok(data) => return Ok(data),
                Err(e @ Error::NotFound { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Tries each transport in order on one server, falling back per the policy.
    async fn read_from_server(&self, server: &str, fid: &FileId) -> Result<NeedleData, Error> {
        let mut last = Error::TransportUnavailable { fid: fid.to_string(), detail: "no transport".into() };
        let transports = &self.inner.transports;
        for (i, slot) in transports.iter().enumerate() {
            let is_last = i + 1 == transports.len();
            if slot.in_backoff() && !is_last {
                self.count_fallback(slot.transport.name(), "backoff", fid);
                continue;
            }
            match slot.transport.read_needle(server, fid, self.inner.jwt.as_deref()).await {
                Ok(data) => {
                    *slot.skip_until.lock().expect("not poisoned") = None;
                    return Ok(data);
                }
                Err(e) => {
                    let detail = format!("{} from {server}: {}", slot.transport.name(), e.message);
                    match e.kind {
                        TransportErrorKind::NotFound => return Err(Error::NotFound { fid: fid.to_string() }),
                        TransportErrorKind::Unavailable => {
                            *slot.skip_until.lock().expect("not poisoned") =
                                Some(Instant::now() + self.inner.retry_after);
                            last = Error::TransportUnavailable { fid: fid.to_string(), detail };
                        }
                        TransportErrorKind::Corrupt => {
                            last = Error::ChecksumMismatch { fid: fid.to_string(), detail };
                        }
                        TransportErrorKind::Server(status) => {
                            last = Error::Server { server: server.to_owned(), status, message: e.message };
                        }
                    }
                    if !is_last {
                        self.count_fallback(slot.transport.name(), e.kind.reason(), fid);
                    }
                }
            }
        }
        Err(last)
    }

    fn count_fallback(&self, transport: &'static str, reason: &'static str, fid: &FileId) {
        tracing::debug!(transport, reason, %fid, "read falls back to the next transport");
        *self.inner.fallbacks.lock().expect("not poisoned").entry((transport, reason)).or_default() += 1;
    }

    /// How many reads fell back from each transport, by reason.
    pub fn fallback_counts(&self) -> HashMap<(&'static str, &'static str), u64> {
        self.inner.fallbacks.lock().expect("not poisoned").clone()
    }

    /// Deletes the file. A missing file is [`Error::NotFound`].
    pub async fn delete(&self, fid: &FileId) -> Result<(), Error> {
        let servers = self.inner.master.lookup(fid.volume).await?;
        let server = &servers[0];
        let response = self
            .inner
            .http
            .delete(format!("http://{server}/{fid}"))
            .send()
            .await
            .map_err(|e| Error::Server { server: server.clone(), status: 0, message: e.to_string() })?;
        match response.status().as_u16() {
            202 => Ok(()),
            404 => Err(Error::NotFound { fid: fid.to_string() }),
            status => {
                let message = response.text().await.unwrap_or_default();
                Err(Error::Server { server: server.clone(), status, message })
            }
        }
    }

    /// The servers (`host:port`) holding a volume.
    pub async fn lookup(&self, volume: needle::VolumeId) -> Result<Vec<String>, Error> {
        self.inner.master.lookup(volume).await
    }
}

/// Whether a SeaweedFS server may gzip an upload of this type before storing it
/// (weed's `IsCompressableFileType`: text, and xml/script application types).
fn server_may_compress(mime: &str) -> bool {
    mime.starts_with("text/")
        || (mime.starts_with("application/") && (mime.ends_with("xml") || mime.ends_with("script")))
        || mime.starts_with("audio/wav")
        || mime.starts_with("audio/x-wav")
}

/// Decompresses verified stored data when it is gzip.
fn plain_bytes(fid: &FileId, stored: NeedleData) -> Result<Bytes, Error> {
    if !stored.compressed {
        return Ok(stored.bytes);
    }
    use std::io::Read;
    let mut plain = Vec::with_capacity(stored.bytes.len() * 4);
    flate2::read::GzDecoder::new(&stored.bytes[..])
        .read_to_end(&mut plain)
        .map_err(|source| Error::Decompress { fid: fid.to_string(), source })?;
    Ok(plain.into())
}
