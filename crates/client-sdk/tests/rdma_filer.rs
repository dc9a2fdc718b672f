//! Filer files over real RDMA, in the Soft-RoCE guest (`testbeds rdma-tests`): a `weed
//! master` and `weed filer` with our volume server (RDMA on rxe0, volumes on tmpfs) as
//! the cluster's only volume server, so every chunk is on it. The small set of
//! `filer_files` (inline, one chunk, three chunks, gzip text, through the HTTP API and
//! `weed filer.copy`, and a filer-written chunk manifest), then the same kinds through a
//! filer restarted with `-encryptVolumeData` on the same store, read back byte-exact
//! (whole, streamed, and ranges across chunk boundaries) with every needle over RDMA
//! and no fallback counted; then a byte flipped in a chunk on disk gives an error,
//! never bytes. The layouts themselves (overlapping chunks, holes, many ranges) are
//! the host's `filer_reads.rs`: every read here costs emulated RDMA time.
#![cfg(feature = "rdma")]

mod common;
mod filer_files;

use client_sdk::{
    DeviceChoice, Error, FallbackReason, FilerClient, RdmaEngine, RdmaPolicy, RdmaTransport,
    RdmaTransportConfig, ReadTransport,
};
use filer_files::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testbeds::ours::OurVolumeServer;
use testbeds::pseudo_random;
use testbeds::weed::WeedMaster;
use testbeds::weed_filer::WeedFiler;

/// Every time limit of this test, in one place, scaled to the guest's measured speed
/// (`testbeds::softroce::slowness`). None of them decides a pass on its own; each only
/// bounds a wait that would otherwise hang.
mod limits {
    use std::time::Duration;
    use testbeds::softroce::slowness::scaled;
    /// Until the master lists our volume server.
    pub fn register() -> Duration {
        scaled(Duration::from_secs(60))
    }
    /// One gRPC call to the filer.
    pub fn filer_rpc() -> Duration {
        scaled(Duration::from_secs(30))
    }
    /// One needle over RDMA (READ and verification), before the SDK falls back.
    pub fn rdma_read() -> Duration {
        scaled(Duration::from_secs(10))
    }
    /// The RDMA control plane's calls (OpenSession, Locate).
    pub fn rdma_rpc() -> Duration {
        scaled(Duration::from_secs(10))
    }
    /// One needle read on any transport, fallback included.
    pub fn request() -> Duration {
        scaled(Duration::from_secs(30))
    }
}

fn device() -> String {
    std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".to_owned())
}

/// Chunk reads RDMA first (sideway), HTTP as the fallback.
fn filer_client(filer: &WeedFiler, rdma: &Arc<RdmaTransport>) -> FilerClient {
    let rdma = Arc::clone(rdma);
    FilerClient::builder(filer.addr())
        .rpc_timeout(limits::filer_rpc())
        .chunk_reads(|b| {
            b.rdma_transport(rdma)
                .rdma_policy(RdmaPolicy::Prefer)
                .rdma_timeout(limits::rdma_read())
                .request_timeout(limits::request())
        })
        .build()
        .unwrap()
}

#[test]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
fn filer_files_read_over_rdma_chunk_by_chunk_and_a_flipped_byte_is_an_error() {
    let root = tempfile::Builder::new().prefix("filer-rdma-").tempdir_in("/dev/shm").expect("tmpfs");
    let dir = root.path();
    let master = WeedMaster::start(dir, 256).unwrap_or_else(|e| panic!("{e}"));
    let ours = OurVolumeServer::start(
        &testbeds::ours::volume_server_binary(),
        &dir.join("ours"),
        &["--mserver", &master.addr(), "--max", "20", "--rdma-device", &device()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + limits::register();
    while !master.knows_volume_server(ours.addr()) {
        assert!(Instant::now() < deadline, "the master lists our server");
        std::thread::sleep(Duration::from_millis(200));
    }
    let store = dir.join("filer");
    let scratch = dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let rdma = Arc::new(RdmaTransport::new(RdmaTransportConfig {
        engine: RdmaEngine::Sideway,
        device: DeviceChoice::Name(device()),
        read_timeout: limits::rdma_read(),
        rpc_timeout: limits::rdma_rpc(),
        ..RdmaTransportConfig::default()
    }));
    let rdma_name = rdma.name();
    let rt = common::runtime();

    let plain = WeedFiler::start(&store, &master, FILER_FLAGS).unwrap_or_else(|e| panic!("{e}"));
    let mut files = write_small_files(&plain, &scratch, "/plain", "");
    files.push(rt.block_on(write_manifested(&filer_client(&plain, &rdma), &master.addr(), "/plain", "")));
    // Read by nothing before its byte is flipped, so no cache anywhere (a located or
    // staged copy on the server) holds its intact bytes.
    let target = pseudo_random(2 * MIB + 100, 77);
    plain.put("/plain/flipped.bin", "maxMB=1", &target, "application/octet-stream").unwrap();
    plain.stop();
    // The same store under a filer that encrypts what it writes from now on.
    let flags: Vec<&str> = FILER_FLAGS.iter().copied().chain(["-encryptVolumeData"]).collect();
    let filer = WeedFiler::start(&store, &master, &flags).unwrap_or_else(|e| panic!("{e}"));
    files.extend(write_small_files(&filer, &scratch, "/secret", ""));
    let client = filer_client(&filer, &rdma);

    rt.block_on(async {
        files.push(write_manifested(&client, &master.addr(), "/secret", "").await);
        for written in &files {
            let started = Instant::now();
            if written.path.ends_with("manifested.bin") {
                // Its stream reads a needle per chunk, 10001 of them (101 distinct, each
                // listed ~100 times): too many for the emulated guest. Whole and ranges
                // read each needle once; the counters below cover them.
                check_unstreamed(&client, written, &crossings(written)).await;
                eprintln!("{} ({}): {:.1?}", written.path, written.how, started.elapsed());
                continue;
            }
            let report = check(&client, written, &crossings(written)).await;
            eprintln!("{} ({}): {:.1?}, {report:?}", written.path, written.how, started.elapsed());
            assert_eq!(report.over_rdma(), report.needles(), "{}: {report:?}", written.path);
            assert!(report.fallbacks.is_empty(), "{}: {report:?}", written.path);
            if !written.data.is_empty() && !report.inline {
                assert!(report.needles() > 0, "{}: {report:?}", written.path);
            }
        }
        let metrics = client.chunk_client().metrics();
        assert!(metrics.fallbacks.is_empty(), "no needle read fell back to HTTP: {metrics:?}");
        assert_eq!(metrics.reads.get("http"), None, "{metrics:?}");
        assert!(metrics.reads.get(rdma_name).copied().unwrap_or(0) > 100, "{metrics:?}");
    });

    // A byte flipped in the second chunk, on disk: RDMA refuses the needle, so does HTTP
    // after it; the read is an error, never bytes. The chunk before it reads.
    let at = MIB + 5000;
    let needle_bytes = &target[at..at + 64];
    let dat = std::fs::read_dir(dir.join("ours"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .find_map(|p| {
            let content = std::fs::read(&p).unwrap();
            content.windows(64).position(|w| w == needle_bytes).map(|pos| (p, pos + 20, content[pos + 20]))
        });
    let (dat, pos, byte) = dat.expect("the chunk's bytes in one of our .dat files");
    let file = std::fs::OpenOptions::new().write(true).open(&dat).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte ^ 0x40], pos as u64).unwrap();
    rt.block_on(async {
        let path = "/plain/flipped.bin";
        let refused = |result: Result<bytes::Bytes, Error>| match result {
            Err(Error::ChecksumMismatch { .. }) => {}
            Err(Error::Server { status, .. }) if status >= 500 => {}
            other => panic!("expected a verification failure, got {:?}", other.map(|b| b.len())),
        };
        refused(client.read(path).await);
        refused(client.read_range(path, MIB as u64..(MIB + 10) as u64).await);
        let mut stream = client.read_stream(path).await.unwrap();
        let mut before = Vec::new();
        let error = loop {
            match stream.next_chunk().await {
                Some(Ok(piece)) => before.extend_from_slice(&piece),
                Some(Err(e)) => break e,
                None => panic!("the stream ended without an error"),
            }
        };
        assert!(before[..] == target[..before.len()] && before.len() <= MIB, "{error}");
        let untouched = client.read_range(path, 0..MIB as u64).await.unwrap();
        assert!(untouched[..] == target[..MIB], "the chunk before it still reads");
        let counts = client.chunk_client().fallback_counts();
        assert!(
            counts.get(&(rdma_name, FallbackReason::VerificationFailed)).copied().unwrap_or(0) >= 3,
            "{counts:?}"
        );
    });
    drop((client, rt));
    filer.stop();
    ours.stop();
    master.stop();
}
