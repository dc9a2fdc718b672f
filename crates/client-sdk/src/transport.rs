//! Read transports are plug-ins behind one trait: the SDK asks each, in order, for a
//! whole needle's verified stored data, and decides from the error kind whether to try
//! the next one (fallback) or to answer the caller.

use bytes::Bytes;
use fallback_http::{HttpReadError, HttpReader};
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
    /// Raw CRC32-C of `bytes` (the ETag).
    pub crc: u32,
    pub content_type: Option<String>,
}

/// What went wrong on one transport, as far as the fallback policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportErrorKind {
    /// The transport cannot be used right now (no device, connection refused, broken
    /// session, timeout): try the next transport.
    Unavailable,
    /// The server says the needle is not there: authoritative, no fallback.
    NotFound,
    /// Bytes arrived but failed verification: try the next transport.
    Corrupt,
    /// The server answered with an error status.
    Server(u16),
}

impl TransportErrorKind {
    /// A short label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            TransportErrorKind::Unavailable => "unavailable",
            TransportErrorKind::NotFound => "not_found",
            TransportErrorKind::Corrupt => "verification_failed",
            TransportErrorKind::Server(_) => "server_error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    pub kind: TransportErrorKind,
    pub message: String,
}

/// A way to fetch a whole needle from a volume server.
pub trait ReadTransport: Send + Sync + fmt::Debug {
    /// A short name for metrics and logs (`"http"`, `"rdma-sideway"`).
    fn name(&self) -> &'static str;

    /// Fetches `fid` from `server` (`host:port`) and returns its verified stored data.
    fn read_needle<'a>(
        &'a self,
        server: &'a str,
        fid: &'a FileId,
        jwt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NeedleData, TransportError>>;
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
            let stored = self.reader.read_needle(server, fid, jwt).await.map_err(|e| {
                let kind = match &e {
                    HttpReadError::NotFound { .. } => TransportErrorKind::NotFound,
                    HttpReadError::Server { status, .. } => TransportErrorKind::Server(*status),
                    HttpReadError::Transport { .. } => TransportErrorKind::Unavailable,
                    HttpReadError::MissingChecksum { .. } | HttpReadError::ChecksumMismatch { .. } => {
                        TransportErrorKind::Corrupt
                    }
                };
                TransportError { kind, message: e.to_string() }
            })?;
            Ok(NeedleData {
                bytes: stored.bytes,
                compressed: stored.compressed,
                crc: stored.crc,
                content_type: stored.content_type,
            })
        })
    }
}
