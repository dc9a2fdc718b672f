//! The HTTP read transport the SDK falls back to when RDMA is unavailable: whole
//! needles from any SeaweedFS volume server (ours or `weed volume`), over pooled
//! keep-alive connections, and verified before anything is returned.
//!
//! ## How a read is verified
//! The request asks for `Accept-Encoding: gzip`, so the server sends the needle's data
//! *as stored*: the gzip bytes for a compressed needle, the plain bytes otherwise. The
//! server's `ETag` is the raw CRC32-C of exactly those stored bytes (weed computes it
//! from the record), so the CRC32-C of the received body must equal the ETag. A missing
//! or malformed ETag, a short body, or a mismatch is an error: the bytes are dropped.
//! Decompression is left to the caller, after verification.
//!
//! [`HttpReader::read_needle`] returns the whole needle; [`HttpReader::open_needle`] hands
//! out the body chunk by chunk ([`NeedleBody`]) and checks the CRC32-C at its end, for
//! callers that keep only part of a large needle or spill it to disk — they must hold
//! every chunk back until the end verified.
//!
//! ## Chunk manifests
//! A volume server answers a GET of a chunk-manifest needle (flag 0x80, `weed upload
//! -maxMB`) with the chunks' concatenation, marked `X-File-Store: chunked`, under the
//! manifest's ETag: those bytes cannot be checked against it. Such a reply is dropped
//! unread and the needle asked for again with `?cm=false`, which returns the manifest
//! JSON as stored; that is verified like any needle and handed out with
//! `chunk_manifest: true`, for the caller to read the chunks (each a needle of its own).
//! One extra round trip, for manifests only.
//!
//! No `Range` requests: weed keeps one CRC32-C per needle, so a partial body could not be
//! verified. A ranged read takes the whole body through the CRC and keeps the range.

// Nothing here needs unsafe: the verbs live in rdma-transport.
#![forbid(unsafe_code)]

use bytes::{Bytes, BytesMut};
use needle::FileId;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, ETAG};
use std::time::Duration;

/// The header a volume server marks an expanded chunk manifest with (`chunked`).
const FILE_STORE: &str = "x-file-store";

/// Why an HTTP read failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpReadError {
    /// The needle does not exist, was deleted, expired, or the cookie is wrong (weed
    /// answers 404 for all of these, by design: a wrong cookie must not be detectable).
    #[error("{fid} not found on {server}")]
    NotFound { server: String, fid: String },
    /// The server answered with an error status.
    #[error("{server} answered {status} for {fid}: {message}")]
    Server { server: String, fid: String, status: u16, message: String },
    /// Connecting, sending or receiving failed, or the request timed out.
    #[error("HTTP request to {server} failed: {source}")]
    Transport { server: String, source: reqwest::Error },
    /// The response carried no usable ETag, so its bytes cannot be verified.
    #[error("{server} sent {fid} without a CRC32-C ETag (got {etag:?})")]
    MissingChecksum { server: String, fid: String, etag: Option<String> },
    /// The bytes received do not match the server's checksum: corrupt on disk or in
    /// flight. They are not returned.
    #[error(
        "{fid} from {server}: CRC32-C of the received bytes is {computed:08x}, the ETag says {expected:08x}"
    )]
    ChecksumMismatch { server: String, fid: String, expected: u32, computed: u32 },
}

/// Settings for [`HttpReader`].
#[derive(Clone, Debug)]
pub struct HttpReadConfig {
    /// Bound on a whole request, connect to last byte.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per server.
    pub max_idle_per_server: usize,
}

impl Default for HttpReadConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_idle_per_server: 32,
        }
    }
}

/// A needle's data as the server stores it, checked against its CRC32-C.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredData {
    /// The stored bytes: gzip when `compressed`.
    pub bytes: Bytes,
    pub compressed: bool,
    /// `bytes` are a chunk manifest's JSON (gzip when `compressed`), not file data.
    pub chunk_manifest: bool,
    /// The raw CRC32-C of `bytes`, which the server's ETag matched.
    pub crc: u32,
    pub content_type: Option<String>,
}

/// Reads whole needles over HTTP. Cheap to clone; clones share the connection pool.
#[derive(Clone, Debug)]
pub struct HttpReader {
    client: reqwest::Client,
}

impl HttpReader {
    pub fn new(config: &HttpReadConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.max_idle_per_server)
            .build()?;
        Ok(Self { client })
    }

    /// Fetches the whole needle `fid` from `server` (`host:port`), verified.
    /// `jwt` is sent as `Authorization: Bearer` when the cluster requires read tokens.
    pub async fn read_needle(
        &self,
        server: &str,
        fid: &FileId,
        jwt: Option<&str>,
    ) -> Result<StoredData, HttpReadError> {
        self.open_needle(server, fid, jwt).await?.read_to_end().await
    }

    /// Starts reading the whole needle `fid` from `server`: the status and the ETag are
    /// checked here, the bytes as they arrive through [`NeedleBody`], which verifies the
    /// CRC32-C when the body ends. For callers that must not hold a large needle in
    /// memory (ranged and streaming reads). A chunk manifest comes back as its JSON,
    /// with [`NeedleBody::chunk_manifest`] set (see the crate docs).
    pub async fn open_needle(
        &self,
        server: &str,
        fid: &FileId,
        jwt: Option<&str>,
    ) -> Result<NeedleBody, HttpReadError> {
        let transport = |source| HttpReadError::Transport { server: server.to_owned(), source };
        let get = |query: &str| {
            let mut request =
                self.client.get(format!("http://{server}/{fid}{query}")).header(ACCEPT_ENCODING, "gzip");
            if let Some(token) = jwt {
                request = request.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            request.send()
        };
        let mut response = get("").await.map_err(transport)?;
        let chunk_manifest = response.headers().get(FILE_STORE).is_some_and(|v| v.as_bytes() == b"chunked");
        if chunk_manifest {
            drop(response);
            response = get("?cm=false").await.map_err(transport)?;
        }
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(HttpReadError::NotFound { server: server.to_owned(), fid: fid.to_string() });
        }
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(HttpReadError::Server {
                server: server.to_owned(),
                fid: fid.to_string(),
                status: status.as_u16(),
                message: message.trim().chars().take(300).collect(),
            });
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let etag = header(ETAG);
        let compressed = header(CONTENT_ENCODING).is_some_and(|e| e.eq_ignore_ascii_case("gzip"));
        let content_type = header(CONTENT_TYPE);
        let expected =
            etag.as_deref().and_then(parse_crc_etag).ok_or_else(|| HttpReadError::MissingChecksum {
                server: server.to_owned(),
                fid: fid.to_string(),
                etag: etag.clone(),
            })?;
        Ok(NeedleBody {
            server: server.to_owned(),
            fid: fid.to_string(),
            content_length: response.content_length(),
            response,
            expected,
            crc: 0,
            compressed,
            chunk_manifest,
            content_type,
        })
    }
}

/// A needle's stored bytes as they arrive over HTTP, checked against the ETag's CRC32-C
/// when the body ends.
#[derive(Debug)]
pub struct NeedleBody {
    server: String,
    fid: String,
    response: reqwest::Response,
    /// The ETag's CRC32-C.
    expected: u32,
    /// CRC32-C of the chunks so far.
    crc: u32,
    /// Stored bytes the server announced (`Content-Length`), when it did.
    pub content_length: Option<u64>,
    /// The stored bytes are gzip.
    pub compressed: bool,
    /// The bytes are a chunk manifest's JSON, not file data.
    pub chunk_manifest: bool,
    pub content_type: Option<String>,
}

impl NeedleBody {
    /// The next chunk of stored bytes, or `None` once the whole body arrived **and** its
    /// CRC32-C matched the ETag (a mismatch is [`HttpReadError::ChecksumMismatch`]).
    ///
    /// Chunks are unverified until this returns `Ok(None)`: a caller must not hand any
    /// of them on before then.
    pub async fn next_unverified_chunk(&mut self) -> Result<Option<Bytes>, HttpReadError> {
        match self.response.chunk().await {
            Ok(Some(chunk)) => {
                self.crc = needle::crc::crc32c_append(self.crc, &chunk);
                Ok(Some(chunk))
            }
            Ok(None) if self.crc == self.expected => Ok(None),
            Ok(None) => Err(HttpReadError::ChecksumMismatch {
                server: self.server.clone(),
                fid: self.fid.clone(),
                expected: self.expected,
                computed: self.crc,
            }),
            Err(source) => Err(HttpReadError::Transport { server: self.server.clone(), source }),
        }
    }

    /// The rest of the body, held in memory and verified.
    pub async fn read_to_end(mut self) -> Result<StoredData, HttpReadError> {
        let mut bytes = BytesMut::with_capacity(self.content_length.unwrap_or(0).min(64 << 20) as usize);
        while let Some(chunk) = self.next_unverified_chunk().await? {
            bytes.extend_from_slice(&chunk);
        }
        // `next_unverified_chunk` returned `None`: the CRC32-C of everything matched.
        Ok(StoredData {
            bytes: bytes.freeze(),
            compressed: self.compressed,
            chunk_manifest: self.chunk_manifest,
            crc: self.expected,
            content_type: self.content_type,
        })
    }

    /// The CRC32-C the body must have (from the ETag).
    pub fn expected_crc(&self) -> u32 {
        self.expected
    }
}

/// weed's ETag: `"` + 8 lower-case hex digits of the raw CRC32-C + `"`.
fn parse_crc_etag(etag: &str) -> Option<u32> {
    let hex = etag.strip_prefix('"')?.strip_suffix('"')?;
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_crc_etag;

    #[test]
    fn etags_are_quoted_8_hex_digits() {
        assert_eq!(parse_crc_etag("\"9a71bb4c\""), Some(0x9a71bb4c));
        assert_eq!(parse_crc_etag("\"00000000\""), Some(0));
        for bad in ["9a71bb4c", "W/\"9a71bb4c\"", "\"9a71bb4\"", "\"9a71bb4cc\"", "\"+a71bb4c\"", "\"\""] {
            assert_eq!(parse_crc_etag(bad), None, "{bad}");
        }
    }
}
