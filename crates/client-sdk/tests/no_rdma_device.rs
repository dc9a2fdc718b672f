//! The real RDMA transport (sideway engine) on a host without an RDMA device, against our
//! real standalone volume server: every read is served over HTTP and the client says why
//! RDMA was not used (not offered: no device). The RDMA path itself is tested in the
//! Soft-RoCE guest (`rdma_sdk.rs`).
#![cfg(feature = "rdma")]

mod common;

use client_sdk::{
    Client, Error, FallbackReason, RdmaPolicy, RdmaTransport, RdmaTransportConfig, UploadOptions,
};
use common::{LONG_BACKOFF, SHORT_BACKOFF, our_server, wait_out_backoff};
use std::sync::Arc;
use testbeds::pseudo_random;

fn no_device_here() -> bool {
    // Where a device exists (the guest), this test has nothing to show.
    std::fs::read_dir("/sys/class/infiniband").map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_device_reads_go_over_http_and_say_why() {
    if !no_device_here() {
        eprintln!("skipped: this machine has an RDMA device");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let rdma = Arc::new(RdmaTransport::new(RdmaTransportConfig::default()));
    // An hour's backoff: the reads below all fall inside it however long they take.
    let client =
        Client::builder(server.addr()).rdma_transport(rdma.clone()).backoff(LONG_BACKOFF).build().unwrap();
    let blob = pseudo_random(70_000, 11);
    let fid = client.upload(blob.clone(), &UploadOptions::named("b")).await.unwrap().fid;

    for _ in 0..3 {
        assert_eq!(client.download(&fid).await.unwrap(), blob);
    }
    let metrics = client.metrics();
    assert_eq!(metrics.reads.get("http"), Some(&3), "{metrics:?}");
    assert_eq!(metrics.reads.get("rdma-sideway"), None, "{metrics:?}");
    let counts = client.fallback_counts();
    assert_eq!(counts.get(&("rdma-sideway", FallbackReason::NotOffered)), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&("rdma-sideway", FallbackReason::Backoff)), Some(&2), "{counts:?}");
    let health = client.transport_health();
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!((health[0].transport, health[0].last_failure), ("rdma-sideway", FallbackReason::NotOffered));
    assert!(
        metrics
            .to_prometheus()
            .contains("seaweed_sdk_fallbacks_total{transport=\"rdma-sideway\",reason=\"not_offered\"} 1\n"),
        "{}",
        metrics.to_prometheus()
    );
    assert_eq!(rdma.connected_servers(), 0, "no client is kept without an engine");

    // After the backoff (a short one, waited out) it is tried again, and is still not offered.
    let retrying =
        Client::builder(server.addr()).rdma_transport(rdma.clone()).backoff(SHORT_BACKOFF).build().unwrap();
    assert_eq!(retrying.download(&fid).await.unwrap(), blob);
    wait_out_backoff(&retrying).await;
    assert_eq!(retrying.read_range(&fid, 5..10).await.unwrap(), &blob[5..10]);
    assert_eq!(retrying.fallback_counts().get(&("rdma-sideway", FallbackReason::NotOffered)), Some(&2));

    // Requiring RDMA: a clear error that names the missing device, never bytes.
    let strict = Client::builder(server.addr())
        .rdma_transport(Arc::new(RdmaTransport::new(RdmaTransportConfig::default())))
        .rdma_policy(RdmaPolicy::Require)
        .build()
        .unwrap();
    match strict.download(&fid).await {
        Err(Error::TransportUnavailable { detail, .. }) => {
            assert!(detail.contains("rdma-sideway") && detail.contains("RDMA unavailable"), "{detail}")
        }
        other => panic!("expected TransportUnavailable, got {other:?}"),
    }
}
