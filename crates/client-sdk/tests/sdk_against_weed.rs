//! The SDK against a live `weed` 4.48 cluster (master + volume server on loopback), on a
//! host without RDMA: everything works over HTTP, and the reason RDMA was not used is
//! reported.

mod common;

use client_sdk::{
    BoxFuture, Client, Error, FallbackReason, FileId, NeedleData, ReadTransport, TransportError,
    TransportErrorKind, UploadOptions,
};
use common::LONG_BACKOFF;
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
    // An hour's backoff: every read below falls inside it however long they all take.
    let client =
        Client::builder(master.addr()).rdma_transport(engine.clone()).backoff(LONG_BACKOFF).build().unwrap();

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

        // Ranged reads against a reference copy, at ranges drawn from a fixed seed.
        let reference = pseudo_random(300_000, 2);
        let stored = client.upload(reference.clone(), &UploadOptions::named("ref.bin")).await.unwrap();
        let mut runner = proptest::test_runner::TestRunner::new_with_rng(
            ProptestConfig::with_cases(24),
            proptest::test_runner::TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
        );
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

/// Copies volume `vid`'s files from `from` into `to` (created), as a move would.
fn copy_volume(from: &std::path::Path, to: &std::path::Path, vid: u32) {
    std::fs::create_dir_all(to).unwrap();
    for ext in ["dat", "idx", "vif"] {
        let name = format!("{vid}.{ext}");
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

/// Polls the master until volume `vid` is exactly at `servers` (bounded: 20 s).
async fn wait_for_locations(probe: &Client, vid: needle::VolumeId, servers: &[String]) {
    for _ in 0..200 {
        if probe.lookup(vid).await.is_ok_and(|found| found == servers) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the master never listed volume {vid} at exactly {servers:?}");
}

/// A volume that really moves under a live weed cluster: the cached location answers
/// 404 (weed with `-readMode=local`), later refuses connections; each time the client
/// asks the master again and reads from the new place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_locations_follow_a_moved_volume() {
    let root = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(root.path(), 64).unwrap_or_else(|e| panic!("{e}"));
    let a = WeedVolume::start(&root.path().join("a"), &master).unwrap_or_else(|e| panic!("{e}"));
    let client = Client::builder(master.addr()).build().unwrap();
    let probe = Client::builder(master.addr()).location_cache_ttl(std::time::Duration::ZERO).build().unwrap();
    let blob = pseudo_random(50_000, 21);
    let fid = client.upload(blob.clone(), &UploadOptions::default()).await.unwrap().fid;
    assert_eq!(client.download(&fid).await.unwrap(), blob);
    assert_eq!(client.lookup(fid.volume).await.unwrap(), [a.addr()], "cached at A");
    let deleter = Client::builder(master.addr()).build().unwrap();
    let stat = deleter.stat(&fid).await.unwrap();
    assert_eq!((stat.server, stat.stored_size), (a.addr(), blob.len() as u64), "cached at A");

    // Move to B: copy the files, start B, then delete the volume from A (which then
    // answers 404 for it).
    copy_volume(a.dir(), &root.path().join("b"), fid.volume.0);
    let b = WeedVolume::start(&root.path().join("b"), &master).unwrap_or_else(|e| panic!("{e}"));
    wait_for_locations(&probe, fid.volume, &[a.addr(), b.addr()]).await;
    let shell = format!("lock\nvolume.delete -node={} -volumeId={}\nunlock\nexit\n", a.addr(), fid.volume);
    run_weed_shell(&master.addr(), &shell);
    wait_for_locations(&probe, fid.volume, &[b.addr()]).await;
    assert_eq!(client.download(&fid).await.unwrap(), blob, "404 at the cached A, then read at B");
    assert_eq!(client.metrics().location_refreshes, 1);

    // Move to C the crude way: B's server goes away, C serves a copy.
    copy_volume(b.dir(), &root.path().join("c"), fid.volume.0);
    let c = WeedVolume::start(&root.path().join("c"), &master).unwrap_or_else(|e| panic!("{e}"));
    let b_addr = b.addr();
    b.stop();
    wait_for_locations(&probe, fid.volume, &[c.addr()]).await;
    assert_eq!(client.download(&fid).await.unwrap(), blob, "B refuses, then read at C");
    assert_eq!(client.metrics().location_refreshes, 2);
    assert_ne!(client.lookup(fid.volume).await.unwrap(), [b_addr]);

    // A delete through a client that still has A cached follows the move too.
    deleter.delete(&fid).await.unwrap();
    assert_eq!(deleter.metrics().location_refreshes, 1);
    let err = client.download(&fid).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "deleted at C: {err}");

    drop((client, probe, deleter));
    c.stop();
    a.stop();
    master.stop();
}

/// Runs `commands` through `weed shell` against `master`, bounded to 60 s.
fn run_weed_shell(master: &str, commands: &str) {
    use std::io::Write;
    let mut shell = std::process::Command::new(testbeds::weed::weed_binary().unwrap())
        .args(["shell", &format!("-master={master}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    shell.stdin.take().unwrap().write_all(commands.as_bytes()).unwrap();
    for _ in 0..600 {
        if let Some(status) = shell.try_wait().unwrap() {
            let output = shell.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr);
            assert!(status.success() && !text.contains("error"), "weed shell: {text}");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = shell.kill();
    panic!("weed shell did not finish within 60 s");
}
