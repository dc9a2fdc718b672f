//! The SDK's RDMA scenarios, run by `rdma_sdk.rs` (sideway: all of them) and
//! `rdma_sdk_async_rdma.rs` (async-rdma, feature `async-rdma`: the one that shows the
//! engine wired in) in the Soft-RoCE guest: a real `volume-server` process with RDMA on
//! (rxe0), data on tmpfs, uploads through the SDK, reads through [`RdmaTransport`] with
//! the engine given. `RdmaPolicy::Require` proves
//! a read came over RDMA (it cannot fall back); `Prefer` shows the fallback doing its job.
#![allow(dead_code)] // rdma_sdk_async_rdma runs one scenario of them

use crate::common::{guest_client, guest_device, guest_rdma_config};
use client_sdk::{
    Client, Error, FallbackReason, FileId, RdmaEngine, RdmaPolicy, RdmaTransport, ReadTransport,
    UploadOptions,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testbeds::ours::OurVolumeServer;
use testbeds::pseudo_random;
use testbeds::softroce::slowness::scaled;

/// A `volume-server` with RDMA on, standalone (it answers the master API itself), its
/// data on tmpfs.
struct RdmaVolumeServer {
    process: OurVolumeServer,
    dir: tempfile::TempDir,
}

impl RdmaVolumeServer {
    fn start() -> Self {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("sdk-rdma-").tempdir_in("/dev/shm").expect("tmpfs");
        let device = guest_device();
        let mut args = vec!["--rdma-device", &device];
        args.extend_from_slice(extra);
        let process = OurVolumeServer::start(&testbeds::ours::volume_server_binary(), dir.path(), &args)
            .unwrap_or_else(|e| panic!("volume-server starts: {e}"));
        Self { process, dir }
    }

    fn addr(&self) -> String {
        self.process.addr().to_owned()
    }

    fn dat(&self, fid: &FileId) -> std::path::PathBuf {
        self.dir.path().join(format!("{}.dat", fid.volume.0))
    }
}

/// The transport's name in the client's metrics and errors.
fn rdma_name(engine: RdmaEngine) -> &'static str {
    RdmaTransport::new(guest_rdma_config(engine)).name()
}

fn client(server: &RdmaVolumeServer, engine: RdmaEngine, policy: RdmaPolicy) -> Client {
    client_with_jwt(server, engine, policy, None)
}

fn client_with_jwt(
    server: &RdmaVolumeServer,
    engine: RdmaEngine,
    policy: RdmaPolicy,
    jwt: Option<String>,
) -> Client {
    guest_client(&server.addr(), guest_rdma_config(engine), policy, jwt)
}

async fn upload(client: &Client, data: &[u8]) -> FileId {
    client.upload(data.to_vec(), &UploadOptions::named("blob.bin")).await.expect("upload").fid
}

pub async fn uploads_read_back_over_rdma_byte_exact(engine: RdmaEngine) {
    let rdma = rdma_name(engine);
    let server = RdmaVolumeServer::start();
    let client = client(&server, engine, RdmaPolicy::Require);
    let sizes = [1usize, 4096, 65_536, 65_537, 1 << 20, 3 * (1 << 20) + 7];
    let mut uploaded = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let data = pseudo_random(len, 500 + i as u64);
        uploaded.push((upload(&client, &data).await, data));
    }
    for (fid, data) in &uploaded {
        let read = client.download(fid).await.unwrap_or_else(|e| panic!("{fid} ({} bytes): {e}", data.len()));
        assert!(
            read == data[..],
            "{fid}: {} bytes read, {} expected, contents differ",
            read.len(),
            data.len()
        );
    }
    // Ranged and streamed reads take the RDMA path too (whole needle, verified, sliced).
    let (fid, data) = &uploaded[4];
    assert_eq!(client.read_range(fid, 1000..300_000).await.unwrap(), &data[1000..300_000]);
    let mut stream = client.download_stream(fid).await.unwrap();
    let mut streamed = Vec::new();
    while let Some(chunk) = stream.next_chunk().await {
        streamed.extend_from_slice(&chunk.unwrap());
    }
    assert!(streamed == *data);

    // Deleted: "not found" over RDMA is authoritative.
    client.delete(&uploaded[0].0).await.unwrap();
    assert!(matches!(client.download(&uploaded[0].0).await, Err(Error::NotFound { .. })));

    let metrics = client.metrics();
    assert!(metrics.reads.get(rdma).copied().unwrap_or(0) >= sizes.len() as u64 + 2, "{metrics:?}");
    assert_eq!(metrics.reads.get("http"), None, "Require never reads over HTTP: {metrics:?}");
}

pub async fn a_corrupted_byte_fails_verification_over_rdma_and_over_http(engine: RdmaEngine) {
    let rdma = rdma_name(engine);
    let server = RdmaVolumeServer::start();
    let strict = client(&server, engine, RdmaPolicy::Require);
    let data = pseudo_random(40_000, 600);
    let fid = upload(&strict, &data).await;
    assert_eq!(strict.download(&fid).await.unwrap(), data);

    let dat = server.dat(&fid);
    let content = std::fs::read(&dat).unwrap();
    let at = content.windows(64).position(|w| w == &data[9000..9064]).expect("the data in the .dat") + 20;
    let file = std::fs::OpenOptions::new().write(true).open(&dat).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[content[at] ^ 0x40], at as u64).unwrap();

    // RDMA only: the READ sees the flipped byte (the file is registered) and the CRC
    // check refuses it.
    match strict.download(&fid).await {
        Err(Error::ChecksumMismatch { detail, .. }) => assert!(detail.contains(rdma), "{detail}"),
        other => panic!("RDMA: expected a checksum mismatch, got {other:?}"),
    }
    // HTTP only, and RDMA first with HTTP fallback: an error every time, never bytes.
    let http = client(&server, engine, RdmaPolicy::Off);
    let prefer = client(&server, engine, RdmaPolicy::Prefer);
    for (which, client) in [("http", &http), ("prefer", &prefer)] {
        match client.download(&fid).await {
            Err(Error::ChecksumMismatch { .. }) => {}
            Err(Error::Server { status, .. }) if status >= 500 => {}
            other => panic!("{which}: expected a verification failure, got {other:?}"),
        }
    }
    let counts = prefer.fallback_counts();
    assert_eq!(counts.get(&(rdma, FallbackReason::VerificationFailed)), Some(&1), "{counts:?}");
}

pub async fn a_killed_server_means_fallback_or_a_clear_error_then_rdma_resumes(engine: RdmaEngine) {
    let rdma = rdma_name(engine);
    let mut server = RdmaVolumeServer::start();
    let client = client(&server, engine, RdmaPolicy::Prefer);
    let mut uploaded = Vec::new();
    for i in 0..12u64 {
        let data = pseudo_random([3000, 70_000, 400_000][i as usize % 3], 700 + i);
        uploaded.push((upload(&client, &data).await, data));
    }
    let uploaded = Arc::new(uploaded);
    for (fid, data) in uploaded.iter() {
        assert_eq!(client.download(fid).await.unwrap(), data[..]);
    }
    let over_rdma = |c: &Client| c.metrics().reads.get(rdma).copied().unwrap_or(0);
    assert_eq!(over_rdma(&client), uploaded.len() as u64, "warm: every read over RDMA");

    // SIGKILL: sessions, queue pairs and registrations vanish with the process. The
    // first read while it is down has everything cached (its location, a session, the
    // needle's RDMA location), so it tries RDMA, which fails and falls back to HTTP,
    // which fails too: a clear error, never bytes. (Readers racing the kill would make
    // the same point only by chance: a read that starts a session while the server is
    // restarting waits for it and succeeds.)
    tokio::task::block_in_place(|| server.process.crash());
    match client.download(&uploaded[0].0).await {
        Err(e) => {
            let error = e.to_string();
            assert!(
                error.contains("no transport reached") || error.contains("master"),
                "an unclear error: {error}"
            );
        }
        Ok(_) => panic!("a read from a dead server returned bytes"),
    }
    let counts = client.fallback_counts();
    let fell_back: u64 =
        counts.iter().filter(|((t, r), _)| *t == rdma && *r != FallbackReason::Backoff).map(|(_, n)| n).sum();
    assert_eq!(fell_back, 1, "the dead server made the read fall back from RDMA once: {counts:?}");

    // Readers keep going while the server is down and while it starts again.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for r in 0..4usize {
        let (client, uploaded, stop) = (client.clone(), Arc::clone(&uploaded), Arc::clone(&stop));
        readers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let mut i = r;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (fid, data) = &uploaded[i % uploaded.len()];
                match client.download(fid).await {
                    Ok(read) => {
                        assert!(read == data[..], "{fid}: wrong bytes returned");
                        ok += 1;
                    }
                    Err(e) => failed.push(e.to_string()),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| server.process.start_again())
        .unwrap_or_else(|e| panic!("volume-server starts again: {e}"));
    let back = over_rdma(&client);

    // RDMA resumes: reads are served over RDMA again within a bounded time.
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    while over_rdma(&client) < back + 8 {
        assert!(Instant::now() < deadline, "RDMA did not resume: {:?}", client.metrics());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for reader in readers {
        let (o, f) = tokio::time::timeout(scaled(Duration::from_secs(30)), reader)
            .await
            .expect("every read completes within bounded time")
            .expect("a reader task");
        ok += o;
        failed.extend(f);
    }
    for error in &failed {
        // Only while the server was down: nothing reached it on any transport.
        assert!(
            error.contains("no transport reached") || error.contains("master"),
            "an unclear error: {error}"
        );
    }
    eprintln!(
        "{ok} reads verified, {} failed while the server was down; fallbacks {:?}",
        failed.len(),
        client.fallback_counts()
    );
    // And after all that, a plain RDMA-only read works again.
    let strict = self::client(&server, engine, RdmaPolicy::Require);
    assert_eq!(strict.download(&uploaded[1].0).await.unwrap(), uploaded[1].1[..]);
}

pub async fn many_concurrent_readers_on_mixed_sizes(engine: RdmaEngine) {
    let rdma = rdma_name(engine);
    let server = RdmaVolumeServer::start();
    let client = client(&server, engine, RdmaPolicy::Require);
    let sizes = [4096usize, 65_536, 1 << 20, 150_001, 333];
    let mut uploaded = Vec::new();
    for i in 0..30u64 {
        let data = pseudo_random(sizes[i as usize % sizes.len()], 800 + i);
        uploaded.push((upload(&client, &data).await, data));
    }
    let uploaded = Arc::new(uploaded);
    let mut tasks = Vec::new();
    for t in 0..16usize {
        let (client, uploaded) = (client.clone(), Arc::clone(&uploaded));
        tasks.push(tokio::spawn(async move {
            for n in 0..12usize {
                let (fid, data) = &uploaded[(t * 7 + n * 5) % uploaded.len()];
                let read = client.download(fid).await.unwrap_or_else(|e| panic!("{fid}: {e}"));
                assert!(read == data[..], "{fid}: contents differ");
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(scaled(Duration::from_secs(60)), task)
            .await
            .expect("bounded")
            .expect("a reader");
    }
    let metrics = client.metrics();
    assert_eq!(metrics.reads.get(rdma), Some(&(16 * 12)), "{metrics:?}");
    assert!(metrics.fallbacks.is_empty(), "{metrics:?}");
}

/// A chunked file (a chunk manifest and four chunks) over RDMA alone: the manifest and
/// then each chunk are read and verified as needles of their own; a flipped byte in one
/// chunk is a checksum mismatch found by the RDMA read, never bytes.
pub async fn a_chunked_file_reads_over_rdma_chunk_by_chunk(engine: RdmaEngine) {
    let rdma = rdma_name(engine);
    let server = RdmaVolumeServer::start();
    let client = client(&server, engine, RdmaPolicy::Require);
    let mib = 1usize << 20;
    let data = pseudo_random(3 * mib + 4321, 700);
    let fid = client
        .upload_chunked(data.clone(), &UploadOptions::named("big.bin"), mib as u64)
        .await
        .expect("upload_chunked")
        .fid;
    assert!(client.download(&fid).await.unwrap() == data, "the whole file, byte-exact");
    let range = client.read_range(&fid, (mib - 10) as u64..(2 * mib + 10) as u64).await.unwrap();
    assert!(range[..] == data[mib - 10..2 * mib + 10]);
    let metrics = client.metrics();
    // Manifest + 4 chunks, then manifest + 2 chunks (and an upload check or none).
    assert!(metrics.reads.get(rdma).copied().unwrap_or(0) >= 8, "{metrics:?}");
    assert_eq!(metrics.reads.get("http"), None, "Require never reads over HTTP: {metrics:?}");

    let stored = client.read_stored(&fid).await.unwrap();
    assert!(stored.chunk_manifest, "the manifest's flag is seen in the RDMA record");
    let manifest = needle::ChunkManifest::parse(&stored.bytes).unwrap();
    let third = manifest.chunks[2];
    let dat = server.dat(&third.fid);
    let content = std::fs::read(&dat).unwrap();
    let at = 2 * mib + 5000;
    let pos = content.windows(64).position(|w| w == &data[at..at + 64]).expect("the chunk in its .dat") + 20;
    let file = std::fs::OpenOptions::new().write(true).open(&dat).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[content[pos] ^ 0x40], pos as u64).unwrap();
    match client.download(&fid).await {
        Err(Error::ChecksumMismatch { fid: bad, detail }) => {
            assert_eq!(bad, third.fid.to_string(), "the corrupt chunk is named");
            assert!(detail.contains(rdma), "{detail}");
        }
        other => panic!("expected a checksum mismatch, got {:?}", other.map(|b| b.len())),
    }
    let untouched = client.read_range(&fid, 0..(2 * mib) as u64).await.unwrap();
    assert!(untouched[..] == data[..2 * mib], "chunks before it still read");
}

/// A cluster that signs reads (`security.toml` with a read key, no `--rdma-jwt-key`):
/// RDMA sessions need a token signed with the read key; without one, or with one signed
/// with another key, none opens, and `Prefer` falls back to HTTP, which gets the file's
/// read token from the master.
pub async fn signed_reads_need_a_read_key_token_for_rdma_sessions(engine: RdmaEngine) {
    use rdma_transport::server::auth::JwtKey;
    let rdma = rdma_name(engine);
    let config_dir = tempfile::Builder::new().prefix("sdk-jwt-").tempdir_in("/dev/shm").expect("tmpfs");
    let config = config_dir.path().join("security.toml");
    std::fs::write(&config, "[jwt.signing]\nkey = \"write-key\"\n[jwt.signing.read]\nkey = \"read-key\"\n")
        .unwrap();
    let server = RdmaVolumeServer::start_with(&["--security-config", config.to_str().unwrap()]);
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let session_token = |key: &str| JwtKey::new(key).sign(&serde_json::json!({ "exp": exp }));

    let signed = client_with_jwt(&server, engine, RdmaPolicy::Require, Some(session_token("read-key")));
    let data = pseudo_random(100_000, 900);
    let fid = upload(&signed, &data).await;
    assert_eq!(signed.download(&fid).await.unwrap(), data);
    assert_eq!(signed.metrics().reads.get(rdma), Some(&1), "{:?}", signed.metrics());

    for jwt in [None, Some(session_token("write-key"))] {
        let strict = client_with_jwt(&server, engine, RdmaPolicy::Require, jwt.clone());
        match strict.download(&fid).await {
            Err(Error::TransportUnavailable { .. }) => {}
            other => panic!("a session with token {jwt:?}: expected a refusal, got {other:?}"),
        }
    }
    let prefer = client_with_jwt(&server, engine, RdmaPolicy::Prefer, None);
    assert_eq!(prefer.download(&fid).await.unwrap(), data);
    assert_eq!(prefer.metrics().reads.get("http"), Some(&1), "{:?}", prefer.metrics());
}
