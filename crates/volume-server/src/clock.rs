//! The server's one wall clock. Volumes (TTLs, AppendAtNs, modification times),
//! compaction (expired needles), security (token expiry) and the HTTP and gRPC replies
//! all read it here, so none of them depends on another for the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (TTLs, modification times, token expiry).
pub(crate) fn now_seconds() -> u64 {
    now_ns() / 1_000_000_000
}

/// Now, in Unix nanoseconds (AppendAtNs, TTL expiry); 0 on a clock before 1970.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
