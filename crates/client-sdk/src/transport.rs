//! Read transports are plug-ins behind one trait: the SDK asks each, in order, for a
//! whole needle's verified stored data, and decides from the error kind whether to try
//! the next one (fallback) or to answer the caller.

use bytes::Bytes;
use fallback_http::{HttpReadError, HttpReader, StoredData};
use needle::FileId;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A whole needle's data as stored (gzip when `compressed`), already verified by the
/// transport against the needle's CRC32-C.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeedleData {
    pub bytes: Bytes,
    pub compressed: bool,
    /// The needle is a chunk manifest (flag 0x80): `bytes` are its JSON, listing the
    /// needles that hold the file. A transport reads the needle as stored: over HTTP
    /// with `?cm=false`, over RDMA the record itself.
    pub chunk_manifest: bool,
    /// Raw CRC32-C of `bytes` (the ETag).
    pub crc: u32,
    pub content_type: Option<String>,
}

/// What went wrong on one transport; the policy decides from this alone whether the
/// read falls back (and with which [`FallbackReason`](crate::FallbackReason)) or ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportErrorKind {
    /// The transport cannot work with this server at all: this host has no device, or
    /// the server does not offer the service (e.g. gRPC `Unimplemented`). Falls back,
    /// and the transport is skipped on that server for the backoff.
    NotOffered,
    /// The transport is broken right now (connection refused, session or queue pair
    /// lost). Falls back, with backoff.
    Unavailable,
    /// The transport gave up waiting. Falls back, with backoff. (The client also bounds
    /// every RDMA attempt with its own timeout.)
    Timeout,
    /// The server says the needle is not there: authoritative, no fallback.
    NotFound,
    /// Bytes arrived but failed verification (header id, cookie, size or CRC32-C); they
    /// were dropped. Falls back, without backoff: the needle, not the transport, may be
    /// at fault.
    Corrupt,
    /// The server answered with an error status (HTTP status, or the nearest one for
    /// other protocols). Falls back, with backoff.
    Server(u16),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
}

/// A way to fetch a whole needle from a volume server: the plug-in point for RDMA.
///
/// The contract an implementation keeps:
/// - `Ok` only for bytes that were verified: header id, cookie and size match `fid`,
///   and the CRC32-C of the stored data matches the needle's. Gzip-stored data is
///   returned as stored, `compressed: true`; the client decompresses.
/// - Errors carry the [`TransportErrorKind`] that says what failed, so the client can
///   fall back for that request and back off the transport when it is at fault. A
///   transport keeping cached needle locations should drop a location whose read
///   failed verification and retry once before answering `Corrupt`.
/// - Every wait is bounded; the client also cancels an attempt after its RDMA timeout
///   (the future is dropped), so an attempt must be cancel-safe.
///
/// An adapter over an RDMA engine looks like this; the client does the rest (policy,
/// fallback, backoff, counting):
///
/// ```
/// use client_sdk::{BoxFuture, Client, FileId, NeedleData, ReadTransport, TransportError, TransportErrorKind};
/// use std::sync::Arc;
///
/// /// An engine on a host without an RDMA device.
/// #[derive(Debug)]
/// struct Rdma;
///
/// impl ReadTransport for Rdma {
///     fn name(&self) -> &'static str {
///         "rdma"
///     }
///
///     fn read_needle<'a>(
///         &'a self,
///         _server: &'a str,
///         _fid: &'a FileId,
///         _jwt: Option<&'a str>,
///     ) -> BoxFuture<'a, Result<NeedleData, TransportError>> {
///         Box::pin(async {
///             Err(TransportError { kind: TransportErrorKind::NotOffered, message: "no RDMA device".into() })
///         })
///     }
/// }
///
/// let client = Client::builder("127.0.0.1:8080").rdma_transport(Arc::new(Rdma)).build().unwrap();
/// # drop(client);
/// ```
pub trait ReadTransport: Send + Sync + fmt::Debug {
    /// A short name for metrics and logs (`"http"`, `"rdma-sideway"`).
    fn name(&self) -> &'static str;

    /// Fetches `fid` from `server` (the volume server's HTTP `host:port`, as the master
    /// lists it; an RDMA transport derives its control-plane address from it) and
    /// returns its verified stored data.
    fn read_needle<'a>(
        &'a self,
        server: &'a str,
        fid: &'a FileId,
        jwt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NeedleData, TransportError>>;

    /// Called when this client deleted `fid` at `server`: a transport that caches needle
    /// locations drops `fid`'s, so it does not read the needle's previous bytes (still
    /// intact on disk) from it. The default does nothing.
    fn forget_needle(&self, server: &str, fid: &FileId) {
        let _ = (server, fid);
    }
}

/// HTTP, from the `fallback-http` crate: works against any volume server.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    reader: HttpReader,
}

impl HttpTransport {
    pub fn new(reader: HttpReader) -> Self {
        Self { reader }
    }

    /// The reader underneath, for reads that stream instead of taking a whole needle.
    pub fn reader(&self) -> &HttpReader {
        &self.reader
    }
}

impl ReadTransport for HttpTransport {
    fn name(&self) -> &'static str {
        "http"
    }

    fn read_needle<'a>(
        &'a self,
        server: &'a str,
        fid: &'a FileId,
        jwt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NeedleData, TransportError>> {
        Box::pin(async move {
            self.reader.read_needle(server, fid, jwt).await.map(NeedleData::from).map_err(http_error)
        })
    }
}

impl From<StoredData> for NeedleData {
    fn from(stored: StoredData) -> Self {
        Self {
            bytes: stored.bytes,
            compressed: stored.compressed,
            chunk_manifest: stored.chunk_manifest,
            crc: stored.crc,
            content_type: stored.content_type,
        }
    }
}

/// The transport-neutral kind of an HTTP read failure.
pub(crate) fn http_error(e: HttpReadError) -> TransportError {
    let kind = match &e {
        HttpReadError::NotFound { .. } => TransportErrorKind::NotFound,
        HttpReadError::Server { status, .. } => TransportErrorKind::Server(*status),
        HttpReadError::Transport { source, .. } if source.is_timeout() => TransportErrorKind::Timeout,
        HttpReadError::Transport { .. } => TransportErrorKind::Unavailable,
        HttpReadError::MissingChecksum { .. } | HttpReadError::ChecksumMismatch { .. } => {
            TransportErrorKind::Corrupt
        }
    };
    TransportError { kind, message: e.to_string() }
}
