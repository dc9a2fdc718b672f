//! The SDK against a live `weed` 4.48 cluster (master + volume server on loopback), on a
//! host without RDMA: everything works over HTTP, and the reason RDMA was not used is
//! reported.

use client_sdk::{
    BoxFuture, Client, Error, FallbackReason, FileId, NeedleData, ReadTransport, TransportError,
    TransportErrorKind, UploadOptions,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use testbeds::pseudo_random;
use testbeds::weed::{WeedMaster, WeedVolume};

/// Stands in for an RDMA engine on a host that has no RDMA device: every read is
/// "unavailable". (The real engines are tested in the Soft-RoCE guest.)
#[derive(Debug, Default)]
struct NoDeviceEngine {
    attempts: AtomicUsize,
}

impl ReadTransport for NoDeviceEngine {
    fn name(&self) -> &'static str {
        "rdma-no-device"
    }

    fn read_needle<'a>(
        &'a self,
        _server: &'a str,
        _fid: &'a FileId,
        _jwt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NeedleData, TransportError>> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        Box::pin(async {
            Err(TransportError { kind: TransportErrorKind::NotOffered, message: "no RDMA device".into() })
        })
    }
}

#[test]
fn sdk_round_trips_through_a_live_weed_over_http() {
    let root = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(root.path(), 64).unwrap_or_else(|e| panic!("{e}"));
    let volume = WeedVolume::start(&root.path().join("volume"), &master).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let engine = Arc::new(NoDeviceEngine::default());
    let client = Client::builder(master.addr()).rdma_transport(engine.clone()).build().unwrap();

    runtime.block_on(async {
        let text = "a dull boy\n".repeat(3000).into_bytes();
        let options = UploadOptions { mime: Some("text/plain".into()), ..UploadOptions::named("notes.txt") };
        let stored_text = client.upload(text.clone(), &options).await.unwrap();
        assert_eq!(
            client.download(&stored_text.fid).await.unwrap(),
            text,
            "gzip-stored text comes back plain"
        );
        assert!(client.read_stored(&stored_text.fid).await.unwrap().compressed);

        let blob = pseudo_random(2 << 20, 1);
        let stored_blob = client.upload(blob.clone(), &UploadOptions::named("blob.bin")).await.unwrap();
        assert_eq!(stored_blob.etag, needle::crc::etag(needle::crc::crc32c(&blob)));
        assert_eq!(client.download(&stored_blob.fid).await.unwrap(), blob);
        assert_eq!(client.read_range(&stored_blob.fid, 100..200).await.unwrap(), &blob[100..200]);
        let past_end = client.read_range(&stored_blob.fid, 0..(blob.len() as u64 + 1)).await.unwrap_err();
        assert!(matches!(past_end, Error::RangeNotSatisfiable { .. }), "{past_end}");

        let empty = client.upload(Vec::new(), &UploadOptions::named("empty")).await.unwrap();
        assert!(client.download(&empty.fid).await.unwrap().is_empty());

        client.delete(&stored_blob.fid).await.unwrap();
        assert!(matches!(client.download(&stored_blob.fid).await, Err(Error::NotFound { .. })));
        assert!(matches!(client.delete(&stored_blob.fid).await, Err(Error::NotFound { .. })));
        let wrong_cookie = FileId { cookie: needle::Cookie(stored_text.fid.cookie.0 ^ 1), ..stored_text.fid };
        assert!(matches!(client.download(&wrong_cookie).await, Err(Error::NotFound { .. })));

        // Ranged reads against a reference copy, at random.
        let reference = pseudo_random(300_000, 2);
        let stored = client.upload(reference.clone(), &UploadOptions::named("ref.bin")).await.unwrap();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(24));
        let strategy = (0..reference.len() as u64).prop_flat_map(|start| (Just(start), start..=300_000u64));
        let cases: Vec<(u64, u64)> =
            (0..24).map(|_| strategy.new_tree(&mut runner).expect("strategy").current()).collect();
        for (start, end) in cases {
            let got = client.read_range(&stored.fid, start..end).await.unwrap();
            assert_eq!(got, &reference[start as usize..end as usize], "range {start}..{end}");
        }
    });

    // RDMA was tried first, found unavailable, then skipped during its backoff; each
    // fallback is counted with its reason.
    let counts = client.fallback_counts();
    assert_eq!(counts.get(&("rdma-no-device", FallbackReason::NotOffered)), Some(&1), "{counts:?}");
    assert!(counts.get(&("rdma-no-device", FallbackReason::Backoff)).copied().unwrap_or(0) > 5, "{counts:?}");
    assert_eq!(engine.attempts.load(Ordering::Relaxed), 1, "backoff keeps the broken engine out of the way");

    // Close our keep-alive connections first: weed's graceful stop waits for them.
    drop(client);
    drop(runtime);
    volume.stop();
    master.stop();
}
