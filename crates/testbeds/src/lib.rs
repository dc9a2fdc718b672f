//! Reproducible environments for tests and benchmarks:
//! - [`weed`]: a real SeaweedFS (`weed` 4.48) master and volume server on loopback, for interop.
pub mod weed;
