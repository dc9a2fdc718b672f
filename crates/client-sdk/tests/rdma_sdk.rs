//! The SDK over real RDMA through the default (sideway) engine, in the Soft-RoCE guest
//! (`testbeds rdma-tests`). The scenarios live in `sdk_scenarios` so that every engine runs
//! the same ones.
#![cfg(feature = "rdma")]

mod common;
mod sdk_scenarios;

use client_sdk::RdmaEngine;

macro_rules! rdma_sdk_tests {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
        async fn $scenario() {
            sdk_scenarios::$scenario(RdmaEngine::Sideway).await;
        }
    )*};
}

rdma_sdk_tests!(
    uploads_read_back_over_rdma_byte_exact,
    a_corrupted_byte_fails_verification_over_rdma_and_over_http,
    a_killed_server_means_fallback_or_a_clear_error_then_rdma_resumes,
    many_concurrent_readers_on_mixed_sizes,
    a_chunked_file_reads_over_rdma_chunk_by_chunk,
    signed_reads_need_a_read_key_token_for_rdma_sessions,
);
