//! The HTTP read transport the SDK falls back to: pooled connections, Range, and
//! ETag/CRC32-C checks on every byte received.
//!
//! Stub: arrives with issue #6.
