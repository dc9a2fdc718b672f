//! The RDMA fault campaign, in the Soft-RoCE guest (`testbeds rdma-tests`): eight SDK
//! readers (RDMA first, HTTP fallback per read) read a set of needles from our
//! `volume-server` while one fault at a time hits the RDMA path: the server is SIGKILLed
//! and started again; it is stopped (SIGSTOP) for longer than a read may take; the netdev
//! under rxe0 goes down and up; and, on a server in `volume` exposure with a pinned budget
//! of two extents, registered extents are evicted under the readers all along.
//!
//! For each fault it counts the reads attempted, right, failed with an error and wrong
//! (bytes returned that are not the needle's), the reads that outlived their limit, the
//! fallbacks by reason, and the time from recovery until the readers are served over
//! RDMA again; it prints them as one table and asserts that no read returned wrong bytes
//! or hung, that every error is one a caller can act on, and that RDMA resumes.
//!
//! The server's HTTP and gRPC listen on loopback and the readers reach it there, so a
//! fault of the RDMA device's netdev takes RDMA away and leaves HTTP: every read of that
//! phase must come back right.
//!
//! Not a phase: removing rxe0 and adding it back under a running server. rxe does not
//! let the kernel disassociate a device from the processes using it, so `rdma link
//! delete rxe0` waits until every process that opened it has closed it (tried in the
//! guest: still waiting 15 s later while an `ibv_rc_pingpong` held it, done at once when
//! that exited). The fault cannot reach a server that holds the device; it is a restart.
#![cfg(feature = "rdma")]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use client_sdk::{Backoff, Client, Error, FileId, RdmaEngine, RdmaPolicy, RdmaTransport, UploadOptions};
use common::{guest_device, guest_rdma_config};
use testbeds::ours::OurVolumeServer;
use testbeds::pseudo_random;
use testbeds::softroce::slowness::scaled;

const READERS: usize = 8;

/// The transport's name in the client's metrics.
const RDMA: &str = "rdma-sideway";

/// The campaign's RDMA limit (session, Locate and READ): short, so that a fault costs
/// seconds, and scaled to the guest's speed.
fn rdma_limit() -> Duration {
    scaled(Duration::from_secs(3))
}

/// The limit of one HTTP request (a volume lookup, a GET).
fn request_limit() -> Duration {
    scaled(Duration::from_secs(6))
}

/// Longest one read may take: RDMA, then a lookup and a GET over HTTP, with room to
/// spare. A read past it counts as hung.
fn read_bound() -> Duration {
    rdma_limit() + request_limit() * 3
}

/// How long RDMA may take to serve the readers again after a recovery.
fn resume_bound() -> Duration {
    scaled(Duration::from_secs(60))
}

fn campaign_client(server: &OurVolumeServer) -> Client {
    let rdma = client_sdk::RdmaTransportConfig {
        read_timeout: rdma_limit(),
        rpc_timeout: rdma_limit(),
        ..guest_rdma_config(RdmaEngine::Sideway)
    };
    Client::builder(server.addr())
        .rdma_transport(Arc::new(RdmaTransport::new(rdma)))
        .rdma_policy(RdmaPolicy::Prefer)
        .rdma_timeout(rdma_limit())
        .request_timeout(request_limit())
        .backoff(Backoff { initial: Duration::from_millis(200), max: Duration::from_millis(200) })
        .build()
        .expect("a client")
}

fn start_server(dir: &tempfile::TempDir, extra: &[&str]) -> OurVolumeServer {
    let device = guest_device();
    let mut args = vec!["--rdma-device", &device];
    args.extend_from_slice(extra);
    OurVolumeServer::start(&testbeds::ours::volume_server_binary(), dir.path(), &args)
        .unwrap_or_else(|e| panic!("volume-server starts: {e}"))
}

/// 24 needles: 4 KiB, 64 KiB and 1 MiB, eight of each.
async fn upload_files(client: &Client) -> Arc<Vec<(FileId, Vec<u8>)>> {
    let mut files = Vec::new();
    for i in 0..24u64 {
        let data = pseudo_random([4096, 65_536, 1 << 20][i as usize % 3], 4_000 + i);
        let fid = client.upload(data.clone(), &UploadOptions::named("fault.bin")).await.expect("upload").fid;
        files.push((fid, data));
    }
    Arc::new(files)
}

/// One series of the server's `/metrics`.
fn metric(server: &OurVolumeServer, series: &str) -> u64 {
    let text = ureq::get(&format!("http://{}/metrics", server.addr()))
        .call()
        .expect("/metrics")
        .into_string()
        .expect("/metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{series} is not in /metrics")) as u64
}

fn signal(server: &OurVolumeServer, signal: &str) {
    let sent =
        std::process::Command::new("kill").arg(format!("-{signal}")).arg(server.pid().to_string()).status();
    assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {}", server.pid());
}

/// The netdev rxe0 sits on, from `rdma link show rxe0` (`... netdev eth0`).
fn rxe_netdev() -> String {
    let output =
        std::process::Command::new("rdma").args(["link", "show", &format!("{}/1", guest_device())]).output();
    let text = String::from_utf8_lossy(&output.expect("rdma link show").stdout).into_owned();
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "netdev").unwrap_or_else(|| panic!("no netdev in {text:?}"));
    words[at + 1].to_owned()
}

fn set_link(netdev: &str, state: &str) {
    let done = std::process::Command::new("ip").args(["link", "set", netdev, state]).status();
    assert!(done.is_ok_and(|s| s.success()), "ip link set {netdev} {state}");
}

/// rxe0's port 1 in sysfs.
fn rxe_port() -> String {
    format!("/sys/class/infiniband/{}/ports/1", guest_device())
}

/// The GID at the boot's index (`$SOFTROCE_GID_INDEX`), which every test of the boot
/// uses.
fn boot_gid() -> (String, String) {
    let index = std::env::var("SOFTROCE_GID_INDEX").expect("$SOFTROCE_GID_INDEX");
    let gid = std::fs::read_to_string(format!("{}/gids/{index}", rxe_port())).unwrap_or_default();
    (index, gid.trim().to_owned())
}

/// Waits until rxe0's port is ACTIVE and `gid` is back at its index: the rest of the
/// boot's tests need both.
fn wait_for_port_and_gid((index, gid): &(String, String)) {
    let deadline = Instant::now() + resume_bound();
    loop {
        let state = std::fs::read_to_string(format!("{}/state", rxe_port())).unwrap_or_default();
        let now = boot_gid().1;
        if state.contains("ACTIVE") && now == *gid {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rxe0 not back: state {state:?}, GID {index} {now:?}, was {gid:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the readers saw in one phase.
#[derive(Debug, Default)]
struct Tally {
    attempted: u64,
    right: u64,
    wrong: u64,
    hung: u64,
    /// Errors a caller can act on, by kind.
    errors: BTreeMap<&'static str, u64>,
    /// Any other error, word for word.
    unclear: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.attempted += other.attempted;
        self.right += other.right;
        self.wrong += other.wrong;
        self.hung += other.hung;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.unclear.extend(other.unclear);
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum::<u64>() + self.unclear.len() as u64
    }
}

/// The errors a read may end with while the server or its network is away: each says
/// what could not be reached.
fn error_kind(error: &Error) -> Option<&'static str> {
    match error {
        Error::TransportUnavailable { .. } => Some("no transport reached the server"),
        Error::Master { .. } => Some("the master API did not answer"),
        Error::VolumeNotFound { .. } => Some("the volume's location unknown"),
        _ => None,
    }
}

/// Eight readers over `files`, each reading the next needle as soon as the last read
/// ended, until stopped.
struct Readers {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Readers {
    fn start(client: &Client, files: &Arc<Vec<(FileId, Vec<u8>)>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..READERS)
            .map(|reader| {
                let (client, files, stop) = (client.clone(), Arc::clone(files), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    let mut next = reader * 3;
                    while !stop.load(Ordering::Relaxed) {
                        let (fid, data) = &files[next % files.len()];
                        next += 1;
                        tally.attempted += 1;
                        match tokio::time::timeout(read_bound(), client.download(fid)).await {
                            Err(_) => tally.hung += 1,
                            Ok(Ok(read)) if read == data[..] => tally.right += 1,
                            Ok(Ok(_)) => tally.wrong += 1,
                            Ok(Err(e)) => {
                                match error_kind(&e) {
                                    Some(kind) => *tally.errors.entry(kind).or_default() += 1,
                                    None => tally.unclear.push(e.to_string()),
                                }
                                // An error comes fast when nothing listens: do not spin.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    tally
                })
            })
            .collect();
        Self { stop, tasks }
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Tally::default();
        for task in self.tasks {
            total.add(task.await.expect("a reader task"));
        }
        total
    }
}

fn over_rdma(client: &Client) -> u64 {
    client.metrics().reads.get(RDMA).copied().unwrap_or(0)
}

/// Waits until `client` has served `reads` more reads over RDMA; how long that took, or
/// `None` past `bound`.
async fn rdma_serves(client: &Client, reads: u64, bound: Duration) -> Option<Duration> {
    let (base, started) = (over_rdma(client), Instant::now());
    while over_rdma(client) < base + reads {
        if started.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(started.elapsed())
}

/// `metrics`' fallbacks by reason, over every transport.
fn by_reason(metrics: &client_sdk::ReadMetrics) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    for (&(_, reason), &n) in &metrics.fallbacks {
        *counts.entry(reason.as_str()).or_default() += n;
    }
    counts
}

/// One fault's figures.
#[derive(Debug)]
struct Figures {
    fault: &'static str,
    outage: Duration,
    tally: Tally,
    over_rdma: u64,
    fallbacks: BTreeMap<&'static str, u64>,
    /// From the end of the recovery until the readers were served over RDMA again.
    back_to_rdma: Option<Duration>,
}

/// A phase: readers reading over RDMA before the fault, then through it.
struct Phase {
    fault: &'static str,
    readers: Readers,
    before: client_sdk::ReadMetrics,
    client: Client,
    faulted: Option<Instant>,
}

impl Phase {
    /// Starts the readers and waits until they are served over RDMA.
    async fn begin(fault: &'static str, client: &Client, files: &Arc<Vec<(FileId, Vec<u8>)>>) -> Self {
        let before = client.metrics();
        let readers = Readers::start(client, files);
        rdma_serves(client, READERS as u64, resume_bound())
            .await
            .unwrap_or_else(|| panic!("{fault}: the readers are not served over RDMA before the fault"));
        Self { fault, readers, before, client: client.clone(), faulted: None }
    }

    fn fault_now(&mut self) {
        self.faulted = Some(Instant::now());
    }

    /// After the recovery: waits for RDMA to serve the readers again, stops them.
    async fn end(self) -> Figures {
        let recovered = Instant::now();
        let outage = self.faulted.map(|at| recovered - at).unwrap_or_default();
        let back_to_rdma = rdma_serves(&self.client, READERS as u64, resume_bound()).await;
        let tally = self.readers.stop().await;
        let after = self.client.metrics();
        let (now, earlier) = (by_reason(&after), by_reason(&self.before));
        let fallbacks = now
            .into_iter()
            .map(|(reason, n)| (reason, n - earlier.get(reason).copied().unwrap_or(0)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let over_rdma =
            after.reads.get(RDMA).copied().unwrap_or(0) - self.before.reads.get(RDMA).copied().unwrap_or(0);
        Figures { fault: self.fault, outage, tally, over_rdma, fallbacks, back_to_rdma }
    }
}

fn render(figures: &[Figures]) -> String {
    let mut table = format!(
        "{:<44} {:>8} {:>9} {:>6} {:>7} {:>6} {:>5} {:>9} {:>13}  fallbacks by reason; errors by kind\n",
        "fault", "outage s", "attempted", "right", "errors", "wrong", "hung", "over RDMA", "back to RDMA s"
    );
    for f in figures {
        let back =
            f.back_to_rdma.map(|d| format!("{:.2}", d.as_secs_f64())).unwrap_or_else(|| "never".into());
        table += &format!(
            "{:<44} {:>8.2} {:>9} {:>6} {:>7} {:>6} {:>5} {:>9} {:>13}  {:?}; {:?}\n",
            f.fault,
            f.outage.as_secs_f64(),
            f.tally.attempted,
            f.tally.right,
            f.tally.failed(),
            f.tally.wrong,
            f.tally.hung,
            f.over_rdma,
            back,
            f.fallbacks,
            f.tally.errors,
        );
    }
    table
}

fn check(figures: &Figures) {
    let f = figures;
    assert_eq!(f.tally.wrong, 0, "{}: reads returned wrong bytes: {f:?}", f.fault);
    assert_eq!(f.tally.hung, 0, "{}: reads outlived {:?}: {f:?}", f.fault, read_bound());
    assert!(f.tally.unclear.is_empty(), "{}: unclear errors: {:?}", f.fault, f.tally.unclear);
    assert!(f.back_to_rdma.is_some(), "{}: RDMA did not resume within {:?}: {f:?}", f.fault, resume_bound());
    assert!(f.tally.right > 0, "{}: no read was served: {f:?}", f.fault);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs an RDMA device: runs in the Soft-RoCE guest (scripts/test-all)"]
async fn eight_readers_through_kill_stop_link_loss_and_eviction_get_right_bytes_or_clear_errors() {
    let dir = tempfile::Builder::new().prefix("sdk-faults-").tempdir_in("/dev/shm").expect("tmpfs");
    let mut server = start_server(&dir, &[]);
    let client = campaign_client(&server);
    let files = upload_files(&client).await;
    let mut figures = Vec::new();

    // SIGKILL: sessions, queue pairs and registrations go with the process; reads fall
    // back to HTTP, which fails too until the server is back (a clear error).
    let mut phase = Phase::begin("server SIGKILLed, started again", &client, &files).await;
    tokio::task::block_in_place(|| server.crash());
    phase.fault_now();
    tokio::time::sleep(scaled(Duration::from_secs(1))).await;
    tokio::task::block_in_place(|| server.start_again()).unwrap_or_else(|e| panic!("restart: {e}"));
    figures.push(phase.end().await);

    // SIGSTOP past a read's limit: nothing of the server answers (gRPC, HTTP), but
    // READs of records located before still complete: rxe serves them in the kernel.
    let mut phase = Phase::begin("server SIGSTOPped past the read limit", &client, &files).await;
    signal(&server, "STOP");
    phase.fault_now();
    tokio::time::sleep(rdma_limit() + request_limit() + Duration::from_secs(1)).await;
    signal(&server, "CONT");
    figures.push(phase.end().await);

    // The netdev under rxe0 down and up: queue pairs fail, HTTP (on loopback) serves.
    let (netdev, gid) = (rxe_netdev(), boot_gid());
    let mut phase = Phase::begin("rxe0's netdev down, then up", &client, &files).await;
    tokio::task::block_in_place(|| set_link(&netdev, "down"));
    phase.fault_now();
    tokio::time::sleep(scaled(Duration::from_secs(2))).await;
    tokio::task::block_in_place(|| {
        set_link(&netdev, "up");
        wait_for_port_and_gid(&gid);
    });
    let link = phase.end().await;
    assert_eq!(link.tally.failed(), 0, "HTTP on loopback serves every read while RDMA is down: {link:?}");
    figures.push(link);
    server.stop();

    // Volume exposure with room for two 1 MiB extents while the readers read ~9 MiB
    // over several extents: regions are evicted under the readers all along.
    let evicting_dir = tempfile::Builder::new().prefix("sdk-evict-").tempdir_in("/dev/shm").expect("tmpfs");
    let evicting = start_server(
        &evicting_dir,
        &[
            "--rdma-exposure",
            "volume",
            "--rdma-extent-mb",
            "1",
            "--rdma-pinned-mb",
            "2",
            // The region cache's evictions: the one-sided index registers apart.
            "--rdma-one-sided-index",
            "off",
        ],
    );
    let evicting_client = campaign_client(&evicting);
    let evicting_files = upload_files(&evicting_client).await;
    let evictions = metric(&evicting, "volume_server_rdma_region_evictions_total");
    let mut phase =
        Phase::begin("extents evicted under the readers", &evicting_client, &evicting_files).await;
    phase.fault_now();
    tokio::time::sleep(scaled(Duration::from_secs(3))).await;
    let eviction = phase.end().await;
    let evicted = metric(&evicting, "volume_server_rdma_region_evictions_total") - evictions;
    assert!(evicted > 0, "no extent was evicted: {eviction:?}");
    assert_eq!(eviction.tally.failed(), 0, "a server that is up serves every read: {eviction:?}");
    figures.push(eviction);
    evicting.stop();

    // Straight to stderr, past libtest's capture: the guest stage shows the figures of
    // every run, not only of a failing one.
    let _ = writeln!(
        std::io::stderr(),
        "RDMA fault campaign, {READERS} readers (24 needles: 4 KiB, 64 KiB, 1 MiB):\n{}\
         extents evicted in the eviction phase: {evicted}",
        render(&figures)
    );
    figures.iter().for_each(check);
}
