//! Reproducible environments for tests and benchmarks:
//! - [`weed`]: a real SeaweedFS (`weed` 4.48) master and volume server on loopback, for interop.
//! - [`softroce`]: a QEMU guest with Soft-RoCE (`rdma_rxe`) where the RDMA tests and
//!   benchmarks run on real verbs.
pub mod softroce;
pub mod weed;
