//! The Rust SDK for SeaweedFS: assign, upload, download, ranged reads and deletes,
//! RDMA first with per-request HTTP fallback, every byte verified end to end.
//!
//! Stub: arrives with issue #6.
