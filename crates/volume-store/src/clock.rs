//! The server's one wall clock. Volumes (TTLs, AppendAtNs, modification times) and
//! compaction (expired needles) read it here, and so do the volume server's security
//! (token expiry) and its HTTP and gRPC replies, so none of them depends on another for
//! the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds (TTLs, modification times, token expiry).
pub fn now_seconds() -> u64 {
    now_ns() / 1_000_000_000
}

/// Now, in Unix nanoseconds (AppendAtNs, TTL expiry); 0 on a clock before 1970.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
