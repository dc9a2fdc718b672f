//! The SDK's one error type: every failure a caller can act on has its own variant.

use crate::{FileId, TransportError, TransportErrorKind};

/// Why an SDK call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file id that does not parse (`"3,01637037d6"` is the form).
    #[error(transparent)]
    BadFileId(#[from] needle::FidError),
    /// The needle does not exist, was deleted or expired, or the cookie is wrong.
    #[error("{fid} not found")]
    NotFound { fid: String },
    /// The master knows no server for the volume.
    #[error("volume {volume} has no known location: {message}")]
    VolumeNotFound { volume: u32, message: String },
    /// Bytes arrived but did not verify (CRC32-C, needle header): they were dropped.
    #[error("{fid} failed verification on every transport; last: {detail}")]
    ChecksumMismatch { fid: String, detail: String },
    /// No transport could reach any server holding the volume.
    #[error("{fid}: no transport reached a server holding it; last: {detail}")]
    TransportUnavailable { fid: String, detail: String },
    /// A volume server answered with an error status.
    #[error("{server} answered {status}: {message}")]
    Server { server: String, status: u16, message: String },
    /// The master API failed or refused (e.g. no writable volume).
    #[error("master {master}: {message}")]
    Master { master: String, message: String },
    /// The verified stored bytes are gzip that does not decompress.
    #[error("{fid}: stored gzip data does not decompress: {source}")]
    Decompress { fid: String, source: std::io::Error },
    /// A ranged read asked for bytes past the end of the file (`fid` names the file: its
    /// fid, or its path for a filer read).
    #[error("{fid}: range {start}..{end} is outside the file ({len} bytes)")]
    RangeNotSatisfiable { fid: String, start: u64, end: u64, len: u64 },
    /// The upload was acknowledged with a checksum that does not match what was sent.
    #[error("{fid}: the server stored CRC32-C {stored}, the data sent has {sent}")]
    UploadCorrupted { fid: String, stored: String, sent: String },
    /// A chunk manifest (`weed upload -maxMB`) that does not describe a file: bad JSON,
    /// chunks that do not tile it, a chunk whose verified data is not the size listed.
    #[error("{fid}: chunk manifest: {detail}")]
    BadManifest { fid: String, detail: String },
    /// A streamed needle could not be held in or read back from its temporary file.
    #[error("{fid}: local temporary file: {source}")]
    LocalIo { fid: String, source: std::io::Error },
    /// The filer has no entry at the path.
    #[error("{path}: no such file or directory on the filer")]
    NoSuchPath { path: String },
    /// A file read of a directory, or a listing of a file.
    #[error("{path}: {detail}")]
    WrongEntryKind { path: String, detail: &'static str },
    /// A filer's gRPC call failed (unreachable, timed out, or an error status).
    #[error("filer {filer}: {message}")]
    Filer { filer: String, message: String },
    /// The file is stored with S3 server-side encryption, whose keys the filer client
    /// does not hold: refused rather than returned as ciphertext.
    #[error("{path}: stored with S3 server-side encryption ({kind}), which this client does not decrypt")]
    ServerSideEncrypted { path: String, kind: &'static str },
    /// An entry the filer client cannot read: a symlink, or data only in remote storage.
    #[error("{path}: {detail}")]
    UnsupportedEntry { path: String, detail: String },
    /// An entry's chunks that do not make a file: a bad fid, a chunk manifest that does
    /// not parse or nests too deep, a chunk whose verified data is not the size listed
    /// or does not decrypt with its key.
    #[error("{path}: {detail}")]
    BadFileChunks { path: String, detail: String },
    /// The builder's settings do not make a working client.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl Error {
    /// `range` does not fit a file of `len` bytes.
    pub(crate) fn range_not_satisfiable(
        fid: &needle::FileId,
        range: &std::ops::Range<u64>,
        len: u64,
    ) -> Self {
        Error::RangeNotSatisfiable { fid: fid.to_string(), start: range.start, end: range.end, len }
    }
}

/// The SDK error for a transport's failure on `server`.
pub(crate) fn transport_error(server: &str, fid: &FileId, transport: &str, e: TransportError) -> Error {
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
pub(crate) fn unreachable_server(server: &str, fid: &FileId, e: reqwest::Error) -> Error {
    Error::TransportUnavailable { fid: fid.to_string(), detail: format!("http to {server}: {e}") }
}
