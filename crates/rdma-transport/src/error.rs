//! Typed errors: what a caller (the SDK's fallback policy) needs to tell apart.

/// What went wrong, as far as choosing what to do next goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// RDMA cannot be used right now (no device, server without RDMA, connection or
    /// session lost, READ failed or timed out): use another transport.
    Unavailable,
    /// The server says the needle is not there (or was deleted): authoritative.
    NotFound,
    /// Bytes arrived but failed verification (header, cookie, size or CRC): never
    /// returned; another transport may still succeed.
    Corrupt,
    /// The request itself is wrong (bad fid, volume not on this server, refused token).
    Rejected,
}

/// An RDMA read-path error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RdmaError {
    /// No usable RDMA device, on this side or the server's.
    #[error("RDMA unavailable: {0}")]
    NoDevice(String),
    /// The control plane cannot be reached or failed.
    #[error("RDMA control plane: {0}")]
    ControlPlane(String),
    /// The queue pair or a READ failed (or timed out); the connection is unusable.
    #[error("RDMA transfer failed: {0}")]
    Transfer(String),
    /// The peer sent something that does not make sense.
    #[error("RDMA protocol error: {0}")]
    Protocol(String),
    #[error("needle {fid} not found")]
    NotFound { fid: String },
    #[error("needle {fid} was deleted")]
    Deleted { fid: String },
    #[error("bad file id {fid}: {message}")]
    BadFid { fid: String, message: String },
    #[error("volume of {fid} is not on this server")]
    VolumeNotHere { fid: String },
    /// The server refused the session (JWT missing, invalid or expired; too many
    /// sessions).
    #[error("RDMA session refused: {0}")]
    Refused(String),
    /// The record read failed verification (twice if its location was cached).
    #[error("needle {fid} failed verification: {reason}")]
    Corrupt { fid: String, reason: String },
}

impl RdmaError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RdmaError::NoDevice(_)
            | RdmaError::ControlPlane(_)
            | RdmaError::Transfer(_)
            | RdmaError::Protocol(_)
            | RdmaError::Refused(_) => ErrorKind::Unavailable,
            RdmaError::NotFound { .. } | RdmaError::Deleted { .. } => ErrorKind::NotFound,
            RdmaError::BadFid { .. } | RdmaError::VolumeNotHere { .. } => ErrorKind::Rejected,
            RdmaError::Corrupt { .. } => ErrorKind::Corrupt,
        }
    }
}
