//! The storage engine's one error type. The volume server maps each variant to an HTTP
//! status code in one place (its `http::error`).

use std::path::{Path, PathBuf};

use needle::{FormatError, NeedleId, VolumeId};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("volume {0} not found")]
    VolumeNotFound(VolumeId),
    #[error("needle {0} not found")]
    NeedleNotFound(NeedleId),
    #[error("needle {0} already deleted")]
    AlreadyDeleted(NeedleId),
    /// The cookie a reader or deleter presented is not the stored one.
    #[error("needle {id} cookie does not match")]
    CookieMismatch { id: NeedleId },
    /// A write to an existing key with another cookie (weed's wording).
    #[error("mismatching cookie {cookie:x}")]
    WriteCookieMismatch { cookie: u32 },
    #[error("volume {0} is read only")]
    ReadOnly(VolumeId),
    #[error("volume {volume} is full: {end} + {needed} bytes exceeds the {limit}-byte limit")]
    VolumeFull { volume: VolumeId, end: u64, needed: u64, limit: u64 },
    /// A collection name that is no plain file name (it becomes part of the volume's).
    #[error(
        "invalid collection {0:?}: a collection name becomes a file name, so it cannot be . or .. nor hold /, \\ or NUL"
    )]
    BadCollection(String),
    #[error("volume {0} already exists")]
    VolumeExists(VolumeId),
    #[error("no free volume slot left (--max reached in every directory)")]
    NoFreeSlot,
    #[error("needle {id} at offset {offset}: {source}")]
    Corrupt { id: NeedleId, offset: u64, source: FormatError },
    #[error("{0}")]
    Format(#[from] FormatError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a valid .vif: {reason}", path.display())]
    BadVolumeInfo { path: PathBuf, reason: String },
    #[error(
        "{}: the volume says bytesOffset {declared} but the server runs with --offset-width {flag}; \
         start with --offset-width {declared}",
        path.display()
    )]
    OffsetWidthMismatch { path: PathBuf, declared: u32, flag: u8 },
    #[error("{}: {reason}", path.display())]
    BadVolume { path: PathBuf, reason: String },
    /// The volume's files were replaced by a compaction or deleted while this call
    /// waited; the caller may look the volume up again.
    #[error("volume {0} was compacted or deleted meanwhile; retry")]
    VolumeRetired(VolumeId),
    /// A RocksDB volume's compaction commit found the volume still in use.
    #[error("volume {0} is in use and its map cannot be reopened; retry")]
    Busy(VolumeId),
    #[error("volume {0} has no compaction to commit")]
    NotCompacted(VolumeId),
    #[error("volume {0} is not empty")]
    NotEmpty(VolumeId),
    #[error("needle map: {0}")]
    Map(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }
}
