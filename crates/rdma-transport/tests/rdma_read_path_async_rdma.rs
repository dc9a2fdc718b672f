//! The RDMA read-path scenarios of `rdma_read_path.rs` (in `common`) that depend on the
//! engine, through the async-rdma engine (feature `async-rdma`), against a real
//! `volume-server` process in the Soft-RoCE guest.
//!
//! An engine creates, connects and reads through queue pairs; sessions, locations,
//! verification, retries and everything on the server are `RdmaClient`'s and the
//! server's, the same code whichever engine reads, and run in `rdma_read_path.rs`. So
//! this engine runs what its own code decides: READs of every size (split over its
//! regions, across extent boundaries), many at once from many clients (its READ limit
//! and region reuse), and a new queue pair after the server restarts. Its queue pair
//! attributes, refused and abandoned READs are tested against a bare verbs peer in
//! `rdma_async_rdma_engine.rs`.

mod common;

use std::sync::Arc;

use rdma_transport::ReadEngine;
use rdma_transport::async_rdma_engine::{AsyncRdmaConfig, AsyncRdmaEngine};
use rdma_transport::verbs::DeviceChoice;

fn async_rdma() -> Arc<dyn ReadEngine> {
    let config = AsyncRdmaConfig::new(DeviceChoice::Name(common::device_name()));
    Arc::new(AsyncRdmaEngine::open(config).expect("the async-rdma engine opens the device"))
}

macro_rules! rdma_tests {
    ($($scenario:ident),* $(,)?) => {$(
        #[test]
        #[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
        fn $scenario() {
            common::$scenario(async_rdma);
        }
    )*};
}

rdma_tests!(
    uploaded_needles_of_many_sizes,
    many_concurrent_readers,
    server_restart_and_reconnect,
    one_sided_reads_with_5_byte_offsets,
    one_sided_reads_see_every_acknowledged_change,
);
