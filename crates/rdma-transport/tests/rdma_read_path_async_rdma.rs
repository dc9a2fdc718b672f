//! The RDMA read-path scenarios of `rdma_read_path.rs` (in `common`), through the
//! async-rdma engine (feature `async-rdma`), against a real `volume-server` process in the
//! Soft-RoCE guest.

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
    fixture_volumes_read_byte_exact,
    uploaded_needles_of_many_sizes,
    last_needle_of_a_growing_volume,
    many_concurrent_readers,
    reads_during_concurrent_writes,
    eviction_under_a_tiny_pinned_budget,
    session_expiry_and_reopen,
    server_restart_and_reconnect,
    corrupted_byte_is_reported_not_returned,
    staging_mode,
    missing_deleted_and_wrong_needles_are_typed,
    jwt_gates_sessions,
    abandoned_reads_leave_the_queue_pair_usable,
    locations_are_located_again_before_they_expire,
    a_volume_read_grant_is_presented,
);
