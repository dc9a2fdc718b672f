//! The RDMA-first policy against our real standalone volume server on a host without
//! RDMA: HTTP is real; the RDMA engine is a scripted stand-in ([`common::FakeRdma`])
//! that fails in each way a real one can (not offered, broken, hanging, corrupt,
//! server error), so every fallback reason, the backoff and the counters run for real.

mod common;

use client_sdk::{Client, Error, FallbackReason, RdmaPolicy, TransportErrorKind, UploadOptions};
use common::{FakeRdma, LONG_BACKOFF, SHORT_BACKOFF, Script, our_server, wait_out_backoff};
use std::sync::Arc;
use std::time::Duration;
use testbeds::pseudo_random;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdma_first_falls_back_per_request_backs_off_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let rdma = Arc::new(FakeRdma::new(Script::Fail(TransportErrorKind::NotOffered)));
    let with = |backoff, rdma_timeout| {
        Client::builder(server.addr())
            .rdma_transport(rdma.clone())
            .backoff(backoff)
            .rdma_timeout(rdma_timeout)
            .build()
            .unwrap()
    };
    // An RDMA timeout no served read comes near, for every client but the one that hangs.
    let patient = with(LONG_BACKOFF, Duration::from_secs(30));
    let blob = pseudo_random(100_000, 3);
    let fid = patient.upload(blob.clone(), &UploadOptions::named("b")).await.unwrap().fid;

    // Not offered: served over HTTP, counted, then skipped while backing off (an hour:
    // every read below falls inside it however long it takes).
    for _ in 0..3 {
        assert_eq!(patient.download(&fid).await.unwrap(), blob);
    }
    assert_eq!(rdma.attempts(), 1, "backoff keeps the transport out of the way");
    let counts = patient.fallback_counts();
    assert_eq!(counts.get(&("fake-rdma", FallbackReason::NotOffered)), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&("fake-rdma", FallbackReason::Backoff)), Some(&2), "{counts:?}");
    let health = patient.transport_health();
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!((health[0].transport, health[0].last_failure), ("fake-rdma", FallbackReason::NotOffered));
    assert_eq!(health[0].server, server.addr());

    // After the backoff (a short one, waited out) RDMA is tried again; it works now, and
    // the health entry clears.
    let client = with(SHORT_BACKOFF, Duration::from_secs(30));
    assert_eq!(client.download(&fid).await.unwrap(), blob);
    assert_eq!(rdma.attempts(), 2, "not offered: backing off");
    rdma.set(Script::Serve);
    wait_out_backoff(&client).await;
    assert_eq!(client.read_range(&fid, 10..20).await.unwrap(), &blob[10..20]);
    assert_eq!(rdma.attempts(), 3);
    assert!(client.transport_health().is_empty());
    assert_eq!(client.metrics().reads.get("fake-rdma"), Some(&1));

    // A hang is cut off by the RDMA timeout; the read still completes over HTTP.
    rdma.set(Script::Hang);
    let impatient = with(SHORT_BACKOFF, Duration::from_millis(300));
    assert_eq!(impatient.download(&fid).await.unwrap(), blob);
    assert_eq!(impatient.fallback_counts().get(&("fake-rdma", FallbackReason::Timeout)), Some(&1));
    let text = impatient.metrics().to_prometheus();
    assert!(text.contains("reason=\"timeout\"} 1\n"), "{text}");

    // A failed verification falls back without backing off: the next read tries RDMA.
    rdma.set(Script::Fail(TransportErrorKind::Corrupt));
    let before = rdma.attempts();
    for _ in 0..2 {
        assert_eq!(client.download(&fid).await.unwrap(), blob);
    }
    assert_eq!(rdma.attempts(), before + 2);
    assert_eq!(client.fallback_counts().get(&("fake-rdma", FallbackReason::VerificationFailed)), Some(&2));

    // Broken and server errors fall back too, each under its own reason.
    for (kind, reason) in [
        (TransportErrorKind::Unavailable, FallbackReason::Unavailable),
        (TransportErrorKind::Server(503), FallbackReason::ServerError),
    ] {
        wait_out_backoff(&client).await;
        rdma.set(Script::Fail(kind));
        let mut stream = client.download_stream(&fid).await.unwrap();
        let mut streamed = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            streamed.extend_from_slice(&chunk.unwrap());
        }
        assert_eq!(streamed, blob);
        assert_eq!(client.fallback_counts().get(&("fake-rdma", reason)), Some(&1), "{reason}");
    }

    // "Not found" from RDMA is authoritative: no HTTP read, no fallback counted.
    wait_out_backoff(&client).await;
    rdma.set(Script::Fail(TransportErrorKind::NotFound));
    let http_reads = client.metrics().reads.get("http").copied();
    let err = client.download(&fid).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert_eq!(client.metrics().reads.get("http").copied(), http_reads);
    drop((patient, client, impatient));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_never_falls_back_and_off_never_tries() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let rdma = Arc::new(FakeRdma::new(Script::Fail(TransportErrorKind::Unavailable)));
    let required = Client::builder(server.addr())
        .rdma_transport(rdma.clone())
        .rdma_policy(RdmaPolicy::Require)
        .build()
        .unwrap();
    let blob = pseudo_random(5000, 4);
    let fid = required.upload(blob.clone(), &UploadOptions::default()).await.unwrap().fid;

    // Unavailable: an error each time (backoff does not apply under Require), never HTTP.
    for _ in 0..2 {
        let err = required.download(&fid).await.unwrap_err();
        assert!(matches!(err, Error::TransportUnavailable { .. }), "{err}");
    }
    // The first read looked the volume up; the second found it cached, and "unavailable"
    // at a cached location is retried once at a fresh one.
    assert_eq!(rdma.attempts(), 3);
    assert_eq!(required.metrics().location_refreshes, 1);
    rdma.set(Script::Fail(TransportErrorKind::Corrupt));
    let err = required.download(&fid).await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    rdma.set(Script::Serve);
    assert_eq!(required.download(&fid).await.unwrap(), blob);
    let metrics = required.metrics();
    assert_eq!(metrics.reads.get("http"), None, "{metrics:?}");
    assert!(metrics.fallbacks.is_empty(), "{metrics:?}");

    let off = Client::builder(server.addr())
        .rdma_transport(rdma.clone())
        .rdma_policy(RdmaPolicy::Off)
        .build()
        .unwrap();
    let before = rdma.attempts();
    assert_eq!(off.download(&fid).await.unwrap(), blob);
    assert_eq!(rdma.attempts(), before);
    assert!(off.fallback_counts().is_empty());

    let err = Client::builder(server.addr()).rdma_policy(RdmaPolicy::Require).build().unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    drop((required, off));
    server.stop();
}

/// The real thing on this host: no RDMA engine at all. Everything works over HTTP and
/// the client says why RDMA was not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rdma_everything_works_over_http_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let client = Client::builder(server.addr()).build().unwrap();
    let blob = pseudo_random(70_000, 5);
    let fid = client.upload(blob.clone(), &UploadOptions::default()).await.unwrap().fid;
    assert_eq!(client.download(&fid).await.unwrap(), blob);
    assert_eq!(client.read_range(&fid, 5..6).await.unwrap(), &blob[5..6]);
    let metrics = client.metrics();
    assert_eq!(metrics.reads.get("http"), Some(&2), "{metrics:?}");
    assert_eq!(metrics.fallbacks.get(&("rdma", FallbackReason::NoRdmaTransport)), Some(&2), "{metrics:?}");
    drop(client);
    server.stop();
}
