//! The SDK over real RDMA through the async-rdma engine (feature `async-rdma`), in the
//! Soft-RoCE guest (`testbeds rdma-tests`): the SDK scenario that shows the engine is
//! wired in (`RdmaEngine::AsyncRdma` reads every size, whole, ranged and streamed).
//!
//! The SDK's policy, fallback, chunk and token handling is the same code whichever engine
//! reads, and runs in `rdma_sdk.rs` through the default engine; the engine itself runs
//! its read-path scenarios in rdma-transport (`rdma_read_path_async_rdma.rs`).

mod common;
mod sdk_scenarios;

use client_sdk::RdmaEngine;

macro_rules! rdma_sdk_tests {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
        async fn $scenario() {
            sdk_scenarios::$scenario(RdmaEngine::AsyncRdma).await;
        }
    )*};
}

rdma_sdk_tests!(uploads_read_back_over_rdma_byte_exact);
