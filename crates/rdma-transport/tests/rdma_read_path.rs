//! The RDMA read path end to end through the default (sideway) engine, against a real
//! `volume-server` process in the Soft-RoCE guest. The scenarios live in `common` so
//! that every engine runs the same ones.

mod common;

use std::sync::Arc;

use rdma_transport::ReadEngine;
use rdma_transport::verbs::{DeviceChoice, SidewayConfig, SidewayEngine};

fn sideway() -> Arc<dyn ReadEngine> {
    let config = SidewayConfig::new(DeviceChoice::Name(common::device_name()));
    Arc::new(SidewayEngine::open(config).expect("the sideway engine opens the device"))
}

macro_rules! rdma_tests {
    ($($scenario:ident),* $(,)?) => {$(
        #[test]
        #[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
        fn $scenario() {
            common::$scenario(sideway);
        }
    )*};
}

rdma_tests!(
    one_sided_reads_with_5_byte_offsets,
    one_sided_reads_with_4_byte_offsets,
    one_sided_reads_see_every_acknowledged_change,
    one_sided_growth_and_vacuum,
    a_large_volume_index,
    one_sided_reads_a_version_2_volume,
    one_sided_after_a_server_restart,
    one_sided_corrupted_byte_is_reported_not_returned,
    missing_deleted_and_wrong_needles_are_typed_one_sided,
    many_concurrent_readers_one_sided,
    reads_during_concurrent_writes_one_sided,
    one_sided_session_kept_alive_then_expired,
    one_sided_reads_end_with_the_token,
    one_sided_index_refused_in_staging_mode,
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
    batches_of_reads_match_single_reads,
    locations_are_located_again_before_they_expire,
    a_volume_read_grant_is_presented,
);
