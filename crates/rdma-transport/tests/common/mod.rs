//! The RDMA read-path scenarios, written once and run per engine: each `rdma_*` target
//! (`rdma_read_path.rs` for sideway) calls these with its engine constructor. They run a
//! real `volume-server` process (built next to the test executable) with its data on
//! tmpfs, upload over HTTP, and read over RDMA through [`RdmaClient`].
#![allow(dead_code)] // Each target uses the scenarios it runs.

mod one_sided;
#[allow(unused_imports)] // Each target runs the scenarios it names.
pub use one_sided::*;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use needle::FileId;
use rdma_transport::server::auth::JwtKey;
use rdma_transport::{ErrorKind, RdmaClient, RdmaClientConfig, RdmaError, ReadEngine};
use sha2::{Digest, Sha256};
use testbeds::ours::OurVolumeServer;
use testbeds::softroce::slowness::scaled;
use testbeds::weed::{UploadBody, upload};

/// Makes a fresh engine (one per client).
pub type EngineFactory = fn() -> Arc<dyn ReadEngine>;

/// The device the guest set up.
pub fn device_name() -> String {
    std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".to_owned())
}

/// A client configuration with the default location cache and time limits scaled to
/// the guest's speed ([`scaled`]): a Locate or a READ that is slow because the whole
/// guest is slow is not a failure.
pub fn config() -> RdmaClientConfig {
    RdmaClientConfig {
        rpc_timeout: scaled(Duration::from_secs(10)),
        read_timeout: scaled(Duration::from_secs(10)),
        ..RdmaClientConfig::default()
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A running volume server with RDMA on, its data in a tmpfs directory.
pub struct Server {
    pub process: OurVolumeServer,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on an empty data directory with `extra` flags.
    pub fn start(extra: &[&str]) -> Self {
        let dir =
            tempfile::Builder::new().prefix("rdma-test-").tempdir_in("/dev/shm").expect("a tmpfs directory");
        Self::start_in(dir, extra)
    }

    /// Starts a server on `dir` (which may hold volumes already).
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let device = device_name();
        let mut args = vec!["--rdma-device", &device];
        args.extend_from_slice(extra);
        let process = OurVolumeServer::start(&testbeds::ours::volume_server_binary(), dir.path(), &args)
            .unwrap_or_else(|e| panic!("volume-server starts: {e}"));
        Server { process, dir }
    }

    /// Stops the server gracefully and starts it again on the same data and ports.
    pub fn restart(&mut self) {
        self.process.restart().unwrap_or_else(|e| panic!("volume-server restarts: {e}"));
    }

    pub fn http(&self) -> &str {
        self.process.addr()
    }

    pub fn grpc(&self) -> String {
        self.process.grpc_addr()
    }

    pub fn client(&self, engine: EngineFactory, config: RdmaClientConfig) -> RdmaClient {
        RdmaClient::new(&self.grpc(), engine(), config).expect("an RDMA client")
    }

    /// Uploads `data` (multipart, as weed's uploader does) and returns its fid.
    pub fn upload(&self, data: &[u8]) -> FileId {
        let assignment = testbeds::weed::assign(&format!("http://{}", self.http()), "").expect("/dir/assign");
        let body = UploadBody::Multipart { filename: "blob.bin", content_type: "application/octet-stream" };
        let (status, reply) = upload(self.http(), &assignment.fid, "", data, body, &[]).expect("upload");
        assert_eq!(status, 201, "upload of {} bytes: {reply}", data.len());
        assignment.fid.parse().expect("the assigned fid parses")
    }

    pub fn delete(&self, fid: &FileId) {
        let response = ureq::delete(&format!("http://{}/{fid}", self.http())).call().expect("DELETE");
        assert_eq!(response.status(), 202);
    }

    /// One figure of `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let text =
            ureq::get(&format!("http://{}/metrics", self.http())).call().unwrap().into_string().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name}"))
            .parse()
            .unwrap()
    }

    /// The `Rdma` object of `/status`.
    pub fn rdma_status(&self) -> serde_json::Value {
        let status: serde_json::Value =
            ureq::get(&format!("http://{}/status", self.http())).call().unwrap().into_json().unwrap();
        status["Rdma"].clone()
    }
}

/// Reads `fid` over RDMA and returns its data (decompressed if stored gzipped).
pub async fn read_data(client: &RdmaClient, fid: &FileId) -> Result<Vec<u8>, RdmaError> {
    let record = client.read(fid).await?;
    let needle = record.needle();
    if needle.is_compressed() {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(needle.data), &mut out).expect("gunzip");
        Ok(out)
    } else {
        Ok(needle.data.to_vec())
    }
}

async fn assert_reads(client: &RdmaClient, fid: &FileId, expected: &[u8]) {
    match read_data(client, fid).await {
        Ok(data) => assert!(
            data == expected,
            "{fid}: {} bytes read, {} expected, contents differ",
            data.len(),
            expected.len()
        ),
        Err(e) => panic!("{fid} ({} bytes): {e}", expected.len()),
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Uploads needles of sizes from 0 B to 2.5 MB (around 4 KiB and 1 MiB, where pages and
/// 1 MiB extents end), the data of the i-th from seed `seed + i`.
pub fn upload_many_sizes(server: &Server, seed: u64) -> Vec<(FileId, Vec<u8>)> {
    let sizes = [1usize, 100, 4095, 4096, 4097, 65_537, 300_000, 1 << 20, (1 << 20) + 1, 2_500_000, 7, 0];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let data = testbeds::pseudo_random(len, seed + i as u64);
            (server.upload(&data), data)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// Every fixture written by the real weed 4.48 (v3 needles, named, gzipped, pairs, TTL,
/// empty, deltas, overwritten, deleted), served by our server and read over RDMA in the
/// default `record` exposure (each record registered on its own for the session).
pub fn fixture_volumes_read_byte_exact(engine: EngineFactory) {
    let fixtures = Path::new("/work/shared/fixtures/weed-4.48");
    let fixtures = if fixtures.exists() {
        fixtures.to_owned()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/weed-4.48")
    };
    let dir = tempfile::Builder::new().prefix("rdma-fixtures-").tempdir_in("/dev/shm").unwrap();
    for entry in std::fs::read_dir(&fixtures).expect("the weed 4.48 fixtures") {
        let path = entry.unwrap().path();
        if matches!(path.extension().and_then(|e| e.to_str()), Some("dat" | "idx" | "vif")) {
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("manifest.json")).unwrap()).unwrap();
    let server = Server::start_in(dir, &["--rdma-extent-mb", "1"]);
    let client = server.client(engine, config());
    runtime().block_on(async {
        let cases = manifest["cases"].as_array().unwrap();
        let overwritten: Vec<&str> = cases
            .iter()
            .filter(|c| c["kind"] == "overwritten-new")
            .filter_map(|c| c["fid"].as_str())
            .collect();
        let mut checked = 0;
        for case in cases {
            let fid: FileId = case["fid"].as_str().unwrap().parse().unwrap();
            let kind = case["kind"].as_str().unwrap();
            match kind {
                "deleted" => {
                    let error = client.read(&fid).await.unwrap_err();
                    assert!(matches!(error, RdmaError::Deleted { .. }), "{kind}: {error}");
                    assert_eq!(error.kind(), ErrorKind::NotFound);
                }
                // Same fid as overwritten-new: the live record is the new one.
                "overwritten-old" => assert!(overwritten.contains(&case["fid"].as_str().unwrap())),
                // Written with a 5-day TTL: once that has run out, it reads as not found.
                "ttl" if matches!(client.read(&fid).await, Err(RdmaError::NotFound { .. })) => {}
                _ => {
                    let data = read_data(&client, &fid).await.unwrap_or_else(|e| panic!("{kind} {fid}: {e}"));
                    assert_eq!(data.len() as u64, case["body_len"].as_u64().unwrap(), "{kind} {fid}");
                    assert_eq!(sha256_hex(&data), case["body_sha256"].as_str().unwrap(), "{kind} {fid}");
                    checked += 1;
                }
            }
        }
        assert!(checked >= 30, "only {checked} fixture needles read");
    });
    assert!(server.metric("volume_server_rdma_granted_records") >= 30);
}

/// Needles of many sizes uploaded over HTTP read back byte for byte in `volume`
/// exposure; with 1 MiB extents every record over 1 MiB straddles at least one extent
/// boundary.
pub fn uploaded_needles_of_many_sizes(engine: EngineFactory) {
    // Locate's path through the region cache (the one-sided index has its own scenarios).
    let server = Server::start(&[
        "--rdma-extent-mb",
        "1",
        "--rdma-exposure",
        "volume",
        "--rdma-one-sided-index",
        "off",
    ]);
    let uploaded = upload_many_sizes(&server, 100);
    let client = server.client(engine, config());
    runtime().block_on(async {
        for (fid, data) in &uploaded {
            assert_reads(&client, fid, data).await;
        }
        // Again: now from cached locations and registered extents.
        for (fid, data) in uploaded.iter().rev() {
            assert_reads(&client, fid, data).await;
        }
        let stats = client.stats();
        assert_eq!(stats.sessions_opened, 1);
        assert!(stats.location_hits > 0, "{stats:?}");
    });
    assert!(server.metric("volume_server_rdma_region_hits_total") > 0);
}

/// The active volume grows while being read (`volume` exposure): each new needle is
/// read right after its upload (its extent is registered again, longer), and the older
/// ones stay readable.
pub fn last_needle_of_a_growing_volume(engine: EngineFactory) {
    let server = Server::start(&[
        "--rdma-extent-mb",
        "1",
        "--max",
        "1",
        "--rdma-exposure",
        "volume",
        "--rdma-one-sided-index",
        "off",
    ]);
    let client = server.client(engine, config());
    let rt = runtime();
    let mut written = Vec::new();
    for i in 0..25u64 {
        let data = testbeds::pseudo_random(50_000 + (i as usize * 977), 1000 + i);
        let fid = server.upload(&data);
        rt.block_on(assert_reads(&client, &fid, &data));
        written.push((fid, data));
    }
    rt.block_on(async {
        for (fid, data) in &written {
            assert_reads(&client, fid, data).await;
        }
    });
    assert!(
        server.metric("volume_server_rdma_region_misses_total") > 2,
        "the last extent was registered again"
    );
}

/// Several clients (one session each) and many concurrent reads per client, more than
/// the queue depth.
pub fn many_concurrent_readers(engine: EngineFactory) {
    many_concurrent_readers_of(engine, &[]);
}

/// [`many_concurrent_readers`] in `volume` exposure, through the one-sided index.
pub fn many_concurrent_readers_one_sided(engine: EngineFactory) {
    many_concurrent_readers_of(engine, &["--rdma-exposure", "volume"]);
}

fn many_concurrent_readers_of(engine: EngineFactory, flags: &[&str]) {
    let server = Server::start(flags);
    // 24 needles: each of the 32 readers reads a quarter of them per round, 384 verified
    // reads in all, the second round partly through locations other readers cached.
    let uploaded: Arc<Vec<(FileId, Vec<u8>)>> = Arc::new(
        (0..24u64)
            .map(|i| {
                let data = testbeds::pseudo_random(1000 + (i as usize * 4099) % 200_000, 2000 + i);
                (server.upload(&data), data)
            })
            .collect(),
    );
    let rt = runtime();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..4 {
            let client = Arc::new(server.client(engine, config()));
            for t in 0..8 {
                let (client, uploaded) = (Arc::clone(&client), Arc::clone(&uploaded));
                tasks.push(tokio::spawn(async move {
                    for round in 0..2 {
                        for (i, (fid, data)) in uploaded.iter().enumerate() {
                            if (i + t + c + round) % 4 == 0 {
                                assert_reads(&client, fid, data).await;
                            }
                        }
                    }
                    client.stats()
                }));
            }
        }
        for task in tasks {
            let stats = task.await.expect("a reader task");
            assert_eq!(stats.sessions_opened, 1, "no reconnects under load: {stats:?}");
        }
    });
}

/// Reads of existing and just-written needles while another thread keeps writing.
pub fn reads_during_concurrent_writes(engine: EngineFactory) {
    reads_during_concurrent_writes_of(engine, &["--rdma-extent-mb", "1"]);
}

/// [`reads_during_concurrent_writes`] in `volume` exposure, through the one-sided index
/// (a needle just written is found in the `.idx` tail; one past the registered extents
/// is located).
pub fn reads_during_concurrent_writes_one_sided(engine: EngineFactory) {
    reads_during_concurrent_writes_of(engine, &["--rdma-extent-mb", "1", "--rdma-exposure", "volume"]);
}

fn reads_during_concurrent_writes_of(engine: EngineFactory, flags: &[&str]) {
    let server = Arc::new(Server::start(flags));
    let (sender, receiver) = std::sync::mpsc::channel::<(FileId, Vec<u8>)>();
    let writer = {
        let server = Arc::clone(&server);
        std::thread::spawn(move || {
            for i in 0..30u64 {
                let data = testbeds::pseudo_random(5_000 + (i as usize * 7919) % 90_000, 3000 + i);
                let fid = server.upload(&data);
                if sender.send((fid, data)).is_err() {
                    return;
                }
            }
        })
    };
    let client = server.client(engine, config());
    let rt = runtime();
    let mut seen: Vec<(FileId, Vec<u8>)> = Vec::new();
    while let Ok(item) = receiver.recv_timeout(scaled(Duration::from_secs(30))) {
        seen.push(item);
        rt.block_on(async {
            // The newest, and a few older ones, while the writer goes on.
            let newest = seen.last().unwrap();
            assert_reads(&client, &newest.0, &newest.1).await;
            for (fid, data) in seen.iter().step_by(7) {
                assert_reads(&client, fid, data).await;
            }
        });
    }
    writer.join().expect("the writer");
    assert_eq!(seen.len(), 30);
}

/// A pinned budget of two 1 MiB extents over ~6 MiB of needles (`volume` exposure):
/// extents are evicted and registered again, the budget holds, and every read is still
/// right.
pub fn eviction_under_a_tiny_pinned_budget(engine: EngineFactory) {
    let server = Server::start(&[
        "--rdma-extent-mb",
        "1",
        "--rdma-pinned-mb",
        "2",
        "--rdma-exposure",
        "volume",
        "--rdma-one-sided-index",
        "off",
    ]);
    let uploaded: Vec<(FileId, Vec<u8>)> = (0..20u64)
        .map(|i| {
            let data = testbeds::pseudo_random(300_000, 4000 + i);
            (server.upload(&data), data)
        })
        .collect();
    // No location cache: every read locates, so the server's LRU decides.
    let config = RdmaClientConfig { location_ttl: Duration::ZERO, ..config() };
    let client = server.client(engine, config);
    runtime().block_on(async {
        for _ in 0..2 {
            for (fid, data) in &uploaded {
                assert_reads(&client, fid, data).await;
            }
        }
    });
    assert!(server.metric("volume_server_rdma_region_evictions_total") > 0);
    assert!(server.metric("volume_server_rdma_pinned_bytes") <= 2 << 20);
    assert_eq!(client.stats().retries, 0, "sequential reads never hit an evicted region");
}

/// A session idle past the server's timeout is closed there; the client notices at its
/// next Locate and opens a new one. The idle timeout is 2 s scaled to the guest's speed
/// (whole seconds), far above the time between the read and the metrics request that
/// sees its session open; the close is waited for, not slept on.
pub fn session_expiry_and_reopen(engine: EngineFactory) {
    let idle = scaled(Duration::from_secs(2)).as_secs_f64().ceil() as u64;
    let server = Server::start(&["--rdma-idle-timeout-secs", &idle.to_string()]);
    let data = testbeds::pseudo_random(10_000, 5000);
    let fid = server.upload(&data);
    let config = RdmaClientConfig { location_ttl: Duration::ZERO, ..config() };
    let client = server.client(engine, config);
    let rt = runtime();
    rt.block_on(assert_reads(&client, &fid, &data));
    assert_eq!(server.metric("volume_server_rdma_sessions"), 1);
    // Closed within the timeout and one reaper tick (a quarter of it), with room to spare.
    let deadline = std::time::Instant::now() + Duration::from_secs(idle * 3);
    while server.metric("volume_server_rdma_sessions") != 0 {
        assert!(std::time::Instant::now() < deadline, "the idle session is still open after {}s", idle * 3);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(server.metric("volume_server_rdma_sessions_expired_total") >= 1);
    rt.block_on(assert_reads(&client, &fid, &data));
    let stats = client.stats();
    assert_eq!((stats.sessions_opened, stats.retries), (2, 1), "{stats:?}");
}

/// The server restarts (same data, same gRPC port): the client's next read reconnects.
pub fn server_restart_and_reconnect(engine: EngineFactory) {
    let mut server = Server::start(&[]);
    let data = testbeds::pseudo_random(70_000, 6000);
    let fid = server.upload(&data);
    let client = server.client(engine, config());
    let rt = runtime();
    rt.block_on(assert_reads(&client, &fid, &data));
    server.restart();
    rt.block_on(assert_reads(&client, &fid, &data));
    let stats = client.stats();
    assert_eq!(stats.sessions_opened, 2, "{stats:?}");
}

/// A byte of a needle's data flipped in the `.dat` under the live server: the READ sees
/// it (the file itself is registered) and the client reports a checksum failure, never
/// the bytes; from a cached location it retries once first.
pub fn corrupted_byte_is_reported_not_returned(engine: EngineFactory) {
    let server = Server::start(&[]);
    let data = testbeds::pseudo_random(20_000, 7000);
    let fid = server.upload(&data);
    let client = server.client(engine, config());
    let rt = runtime();
    rt.block_on(assert_reads(&client, &fid, &data));

    let dat = server.dir.path().join(format!("{}.dat", fid.volume.0));
    let content = std::fs::read(&dat).unwrap();
    let at = content.windows(64).position(|w| w == &data[5000..5064]).expect("the data in the .dat") + 10;
    let file = std::fs::OpenOptions::new().write(true).open(&dat).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[content[at] ^ 0x01], at as u64).unwrap();

    let error = rt.block_on(client.read(&fid)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
    assert!(error.to_string().contains("CRC32-C mismatch"), "{error}");
    assert_eq!(client.stats().retries, 1, "the cached location was dropped and tried again");
    // Not cached any more: a fresh client fails the same way, without a retry.
    let fresh = server.client(engine, config());
    let error = rt.block_on(fresh.read(&fid)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
    assert_eq!(fresh.stats().retries, 0);
}

/// Forced staging: located records are copied into registered buffers; reads are still
/// byte-exact, and `/status` and the client show the mode.
pub fn staging_mode(engine: EngineFactory) {
    let server = Server::start(&["--rdma-staging", "--rdma-extent-mb", "1"]);
    assert_eq!(server.rdma_status()["Mode"], "staging");
    let uploaded: Vec<(FileId, Vec<u8>)> = [10usize, 4096, 1_500_000, 123_457]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let data = testbeds::pseudo_random(len, 8000 + i as u64);
            (server.upload(&data), data)
        })
        .collect();
    let client = server.client(engine, config());
    let rt = runtime();
    rt.block_on(async {
        for (fid, data) in &uploaded {
            assert_reads(&client, fid, data).await;
        }
        assert_eq!(client.server_mode().await, Some(rdma_transport::proto::RegionMode::Staging));
    });
    assert_eq!(server.metric("volume_server_rdma_mode{mode=\"staging\"}"), 1);
    assert!(server.metric("volume_server_rdma_pinned_bytes") >= 1_500_000);
}

/// Not found, deleted, another server's volume and a wrong cookie (which the server
/// answers as not found, as its HTTP GET does), each typed.
pub fn missing_deleted_and_wrong_needles_are_typed(engine: EngineFactory) {
    missing_deleted_and_wrong_needles_are_typed_with(engine, &[]);
}

/// [`missing_deleted_and_wrong_needles_are_typed`] in `volume` exposure, through the
/// one-sided index (a wrong cookie fails the READ's verification, then Locate's check).
pub fn missing_deleted_and_wrong_needles_are_typed_one_sided(engine: EngineFactory) {
    missing_deleted_and_wrong_needles_are_typed_with(engine, &["--rdma-exposure", "volume"]);
}

fn missing_deleted_and_wrong_needles_are_typed_with(engine: EngineFactory, flags: &[&str]) {
    let server = Server::start(flags);
    let data = testbeds::pseudo_random(3000, 9000);
    let fid = server.upload(&data);
    let gone = server.upload(&data);
    server.delete(&gone);
    let client = server.client(engine, config());
    runtime().block_on(async {
        let missing = FileId { key: needle::NeedleId(fid.key.0 + 1000), ..fid };
        let e = client.read(&missing).await.unwrap_err();
        assert!(matches!(e, RdmaError::NotFound { .. }), "{e}");
        let e = client.read(&gone).await.unwrap_err();
        assert!(matches!(e, RdmaError::Deleted { .. }), "{e}");
        let elsewhere = FileId { volume: needle::VolumeId(999), ..fid };
        let e = client.read(&elsewhere).await.unwrap_err();
        assert!(matches!(e, RdmaError::VolumeNotHere { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::Rejected);
        let wrong_cookie = FileId { cookie: needle::Cookie(fid.cookie.0 ^ 1), ..fid };
        let e = client.read(&wrong_cookie).await.unwrap_err();
        assert!(matches!(e, RdmaError::NotFound { .. }), "{e}");
        // And the right one still reads.
        assert_reads(&client, &fid, &data).await;
    });
    assert_eq!(server.metric("volume_server_rdma_locate_wrong_cookie_total"), 1);
}

/// With a JWT key: no token is refused, a valid one opens a session, and a token for
/// one fid locates only that fid.
pub fn jwt_gates_sessions(engine: EngineFactory) {
    let server = Server::start(&["--rdma-jwt-key", "test-secret"]);
    let data = testbeds::pseudo_random(5000, 9100);
    let (fid, other) = (server.upload(&data), server.upload(&data));
    let key = JwtKey::new("test-secret");
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    runtime().block_on(async {
        let anonymous = server.client(engine, config());
        let e = anonymous.read(&fid).await.unwrap_err();
        assert!(matches!(e, RdmaError::Refused(_)), "{e}");
        assert_eq!(e.kind(), ErrorKind::Unavailable);

        let forged = RdmaClientConfig {
            jwt: Some(JwtKey::new("wrong").sign(&serde_json::json!({ "exp": exp }))),
            ..config()
        };
        assert!(matches!(server.client(engine, forged).read(&fid).await, Err(RdmaError::Refused(_))));

        let for_one = RdmaClientConfig {
            jwt: Some(key.sign(&serde_json::json!({ "exp": exp, "fid": fid.to_string() }))),
            ..config()
        };
        let client = server.client(engine, for_one);
        assert_reads(&client, &fid, &data).await;
        let e = client.read(&other).await.unwrap_err();
        assert!(matches!(e, RdmaError::BadFid { .. }), "{e}");
    });
}

/// A session opened by hand, as `RdmaClient` opens one: the engine's connected queue pair
/// and the largest segment of `fid`'s record.
async fn raw_session(
    server: &Server,
    engine: &dyn ReadEngine,
    fid: &FileId,
) -> (Box<dyn rdma_transport::EngineQp>, rdma_transport::proto::Segment) {
    use rdma_transport::proto::{self, rdma_control_client::RdmaControlClient};
    let mut control = RdmaControlClient::connect(format!("http://{}", server.grpc())).await.unwrap();
    let mut qp = engine.create_qp().expect("a queue pair");
    let reply = control
        .open_session(proto::OpenSessionRequest { client: Some(qp.endpoint().into()), ..Default::default() })
        .await
        .expect("OpenSession")
        .into_inner();
    let remote = rdma_transport::QpEndpoint::try_from(reply.server.as_ref().expect("a server endpoint"))
        .expect("a valid server endpoint");
    qp.connect(&remote).expect("connecting the queue pair");
    let located = control
        .locate(proto::LocateRequest { session_id: reply.session_id, fids: vec![fid.to_string()] })
        .await
        .expect("Locate")
        .into_inner();
    let segment =
        located.results.into_iter().next().and_then(|r| r.segments.into_iter().max_by_key(|s| s.len));
    (qp, segment.expect("a segment"))
}

/// An engine READ that must succeed within 10 s (scaled).
async fn bounded(read: rdma_transport::ReadFuture<'_>) -> Vec<u8> {
    let limit = scaled(Duration::from_secs(10));
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("a READ completes within {limit:?}"))
        .expect("a READ after abandoned ones")
}

/// READs dropped before their completion (a caller's timeout), more at once than the
/// engine has landing slots: every READ after them gets the right bytes within a bound,
/// so a slot comes back only once the device is done with it and none is lost. (On the
/// emulated rxe a READ often completes within its post, so how many are still in flight
/// when dropped varies; it is printed.)
pub fn abandoned_reads_leave_the_queue_pair_usable(engine: EngineFactory) {
    let server = Server::start(&[]);
    let fid = server.upload(&testbeds::pseudo_random(1 << 20, 4242));
    let rt = runtime();
    rt.block_on(async {
        let engine = engine();
        let (qp, segment) = raw_session(&server, engine.as_ref(), &fid).await;
        let len = segment.len.min(1 << 20);
        let reference = bounded(qp.read(segment.addr, segment.rkey, len)).await;
        for round in 0..3usize {
            // Each posted (polled once) and kept, then all dropped at once.
            let mut reads: Vec<_> = (0..40).map(|_| qp.read(segment.addr, segment.rkey, len)).collect();
            let mut in_flight = 0;
            for read in &mut reads {
                let first = std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await;
                match first {
                    std::task::Poll::Pending => in_flight += 1,
                    std::task::Poll::Ready(done) => assert!(done.expect("a READ") == reference),
                }
            }
            drop(reads);
            eprintln!("round {round}: {in_flight} of 40 READs dropped before their completion");
            for k in 0..4usize {
                let offset = (round * 4 + k) * 65_537 % (len as usize - 8192);
                let got = bounded(qp.read(segment.addr + offset as u64, segment.rkey, 8192)).await;
                assert!(got == reference[offset..offset + 8192], "round {round}: READ {k} differs");
            }
            let whole = bounded(qp.read(segment.addr, segment.rkey, len)).await;
            assert!(whole == reference, "round {round}: the whole segment differs");
        }
    });
}

/// Batches of READs (one doorbell each with the sideway engine) return what single
/// READs return, in order: sizes 1 to 20 (past the queue depth a batch is read one by
/// one), eight batches at once on one queue pair (slots are taken a whole batch at a
/// time, so they cannot wait on each other), and after batches dropped before their
/// completions the queue pair still reads right.
pub fn batches_of_reads_match_single_reads(engine: EngineFactory) {
    let server = Server::start(&[]);
    let fid = server.upload(&testbeds::pseudo_random(1 << 20, 4343));
    let rt = runtime();
    rt.block_on(async {
        let engine = engine();
        let (qp, segment) = raw_session(&server, engine.as_ref(), &fid).await;
        let qp: Arc<dyn rdma_transport::EngineQp> = Arc::from(qp);
        let len = segment.len.min(1 << 20);
        let reference = bounded(qp.read(segment.addr, segment.rkey, len)).await;
        let batch = |n: usize, seed: usize| -> Vec<rdma_transport::RemoteRead> {
            (0..n)
                .map(|i| {
                    let size = 1 + (seed * 31 + i * 4099) % 65_536;
                    let at = (seed * 7919 + i * 65_537) % (len as usize - size);
                    rdma_transport::RemoteRead {
                        addr: segment.addr + at as u64,
                        rkey: segment.rkey,
                        len: size as u32,
                    }
                })
                .collect()
        };
        let check = |reads: &[rdma_transport::RemoteRead], got: Vec<Vec<u8>>| {
            assert_eq!(got.len(), reads.len());
            for (read, bytes) in reads.iter().zip(got) {
                let at = (read.addr - segment.addr) as usize;
                assert!(bytes == reference[at..at + read.len as usize], "a batched READ differs");
            }
        };
        let limit = scaled(Duration::from_secs(10));
        for n in 1..=20 {
            let reads = batch(n, n);
            let got =
                tokio::time::timeout(limit, qp.read_batch(&reads)).await.expect("in time").expect("a batch");
            check(&reads, got);
        }
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let qp = Arc::clone(&qp);
                let reads = batch(3, 100 + t);
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    for _ in 0..10 {
                        all.push(
                            tokio::time::timeout(limit, qp.read_batch(&reads))
                                .await
                                .expect("in time")
                                .expect("a batch"),
                        );
                    }
                    (reads, all)
                })
            })
            .collect();
        for task in tasks {
            let (reads, all) = task.await.expect("a batch task");
            all.into_iter().for_each(|got| check(&reads, got));
        }
        for round in 0..3 {
            let reads = batch(4, 200 + round);
            let mut dropped = qp.read_batch(&reads);
            let _ = std::future::poll_fn(|cx| std::task::Poll::Ready(dropped.as_mut().poll(cx))).await;
            drop(dropped);
            let got =
                tokio::time::timeout(limit, qp.read_batch(&reads)).await.expect("in time").expect("a batch");
            check(&reads, got);
        }
    });
}

/// The client locates again before a location's time runs out (the server says how
/// long in each answer): reading one needle for longer than that never READs an expired
/// grant (which would fail the READ, break the queue pair and count a retry), however
/// long the client's own location cache would keep it.
pub fn locations_are_located_again_before_they_expire(engine: EngineFactory) {
    let server = Server::start(&["--rdma-location-lifetime-secs", "4"]);
    let data = testbeds::pseudo_random(4096, 9300);
    let fid = server.upload(&data);
    let config = RdmaClientConfig { location_ttl: Duration::from_secs(3600), ..config() };
    let client = server.client(engine, config);
    runtime().block_on(async {
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(7) {
            assert_reads(&client, &fid, &data).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let stats = client.stats();
    assert_eq!((stats.sessions_opened, stats.retries), (1, 0), "{stats:?}");
    assert!(stats.locate_calls >= 2, "located again within 7 s of a 4 s lifetime: {stats:?}");
}

/// A client presenting a volume-read grant gets `volume` exposure on a server that runs
/// it; one without gets `record` exposure on the same server; both read.
pub fn a_volume_read_grant_is_presented(engine: EngineFactory) {
    let server = Server::start(&["--rdma-exposure", "volume", "--rdma-jwt-key", "grant-secret"]);
    let data = testbeds::pseudo_random(20_000, 9400);
    let fid = server.upload(&data);
    let key = JwtKey::new("grant-secret");
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let jwt = Some(key.sign(&serde_json::json!({ "exp": exp })));
    let grant = Some(key.sign(&serde_json::json!({ "exp": exp, "volumes": [fid.volume.0] })));
    runtime().block_on(async {
        use rdma_transport::proto::Exposure;
        let granted =
            server.client(engine, RdmaClientConfig { jwt: jwt.clone(), volume_grant: grant, ..config() });
        assert_reads(&granted, &fid, &data).await;
        assert_eq!(granted.exposure().await, Some(Exposure::Volume));
        let plain = server.client(engine, RdmaClientConfig { jwt, ..config() });
        assert_reads(&plain, &fid, &data).await;
        assert_eq!(plain.exposure().await, Some(Exposure::Record));
    });
}
