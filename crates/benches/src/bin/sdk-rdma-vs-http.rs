//! `sdk-rdma-vs-http`: what an application sees through the SDK (`client_sdk::Client`)
//! when it downloads needles over RDMA and over HTTP from the same live `volume-server`,
//! in the Soft-RoCE guest. It prints figures and ratios and never passes or fails on them.
//!
//! For each needle size (default 4 KiB, 64 KiB, 1 MiB), and each path (RDMA:
//! `RdmaPolicy::Require`, so nothing can fall back, once per engine built in: sideway, and
//! async-rdma with the `async-rdma` feature; HTTP: `RdmaPolicy::Off`), after one warm-up
//! read of every needle:
//! - latency: one download at a time for `--seconds`, p50 and p99;
//! - throughput: `--concurrency` downloads outstanding for `--seconds`, MB/s of needle data;
//! - the server's CPU time (utime + stime of its process, from `/proc/<pid>/stat`) over
//!   both phases, per GiB of needle data served.
//!
//! Every download is verified by the SDK (header and CRC32-C on RDMA, CRC32-C on HTTP).
//!
//! usage: sdk-rdma-vs-http [--device rxe0] [--volume-server PATH] [--seconds S]
//!                         [--concurrency C] [--sizes 4096,65536,1048576]
//!                         [--location-ttl-ms MS]
//!
//! An RDMA read needs the needle's location from the server's control plane (a gRPC
//! call) unless the transport cached it within `--location-ttl-ms` (default: the SDK's,
//! 1 s); an HTTP read needs only the volume's location, cached for minutes. Reading few
//! needles often favours RDMA; 0 shows the cost when every read locates. Each engine is
//! measured both ways: hot (locations cached for `--location-ttl-ms`) and cold (path
//! `ENGINE cold`: a Locate before every READ, as a needle never read before costs).
//!
//! Last, what access control costs: the same SDK reads (sideway) against a server in the
//! default `record` exposure (each located record registered for the session on its
//! own) and one in `--rdma-exposure volume` (volume files registered in extents, every
//! session may READ them whole): hot 4 KiB p50 (locations cached), 1 MiB throughput,
//! and the server's CPU per Locate (a client that locates every read), with the ratios
//! record / volume (target: hot 4 KiB p50 <= 1.1x). Both servers run at once and the
//! figures come from rounds that alternate between them (half a `--seconds` per figure
//! and round); each ratio is the median of the rounds' ratios, printed with its range.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use benches::figures::{Figure, FigureSet, percentiles_us, quantile};
use benches::harness::{self, BoxError};
use benches::report::human;
use client_sdk::{
    Client, DeviceChoice, FileId, RdmaEngine, RdmaPolicy, RdmaTransport, RdmaTransportConfig, ReadTransport,
    UploadOptions,
};
use testbeds::ours::OurVolumeServer;

struct Options {
    device: String,
    volume_server: PathBuf,
    seconds: f64,
    concurrency: usize,
    sizes: Vec<usize>,
    /// How long the RDMA transport reuses a needle's location (`None`: its default).
    location_ttl: Option<Duration>,
}

fn options() -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Options {
        device: std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".into()),
        volume_server: exe.with_file_name("volume-server"),
        seconds: 2.0,
        concurrency: 4,
        sizes: vec![4096, 65536, 1 << 20],
        location_ttl: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: {value} is not valid");
        match flag.as_str() {
            "--device" => o.device = value.clone(),
            "--volume-server" => o.volume_server = PathBuf::from(&value),
            "--seconds" => o.seconds = value.parse().ok().filter(|s: &f64| *s > 0.0).ok_or_else(bad)?,
            "--location-ttl-ms" => {
                o.location_ttl = Some(Duration::from_millis(value.parse().map_err(|_| bad())?))
            }
            "--concurrency" => o.concurrency = value.parse().ok().filter(|c| *c > 0).ok_or_else(bad)?,
            "--sizes" => o.sizes = harness::sizes(&value).ok_or_else(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(o)
}

fn main() {
    harness::main("sdk-rdma-vs-http", options, run);
}

/// The volume server under test (testbeds' `OurVolumeServer`, killed when dropped) and
/// its data directory on tmpfs.
struct Server {
    process: OurVolumeServer,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts the volume server with `extra` flags and waits until it listens.
    fn start(o: &Options, extra: &[&str]) -> Result<Self, BoxError> {
        let dir = tempfile::Builder::new().prefix("sdk-bench-").tempdir_in("/dev/shm")?;
        let mut args = vec!["--rdma-device", o.device.as_str(), "--max", "8"];
        args.extend_from_slice(extra);
        let process = OurVolumeServer::start(&o.volume_server, dir.path(), &args)?;
        Ok(Server { process, _dir: dir })
    }

    fn addr(&self) -> &str {
        self.process.addr()
    }

    /// CPU seconds (user + system) the server process has used so far.
    fn cpu_seconds(&self) -> Result<f64, BoxError> {
        Ok(self
            .process
            .cpu_time()
            .ok_or("the server's /proc/<pid>/stat is unreadable")?
            .total()
            .as_secs_f64())
    }
}

/// One path's figures at one size.
struct Figures {
    p50: Duration,
    p99: Duration,
    mb_per_s: f64,
    cpu_s_per_gib: f64,
    /// The single reader's latency distribution, for the report.
    percentiles_us: Vec<(f64, f64)>,
}

impl Figures {
    /// As `bench-report` reads it.
    fn saved(&self, path: &str, size: usize) -> Figure {
        Figure {
            p50_us: Some(self.p50.as_secs_f64() * 1e6),
            p99_us: Some(self.p99.as_secs_f64() * 1e6),
            mb_per_s: Some(self.mb_per_s),
            cpu_s_per_gib: Some(self.cpu_s_per_gib),
            percentiles_us: self.percentiles_us.clone(),
            ..Figure::new(path, size as u64)
        }
    }
}

/// Downloads `fids` one at a time, in turn, for `phase`: each download's latency.
async fn latencies(
    client: &Client,
    fids: &[FileId],
    size: usize,
    phase: Duration,
) -> Result<Vec<Duration>, BoxError> {
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < phase {
        let fid = &fids[latencies.len() % fids.len()];
        let t = Instant::now();
        let data = client.download(fid).await?;
        latencies.push(t.elapsed());
        if data.len() != size {
            return Err(format!("{fid}: {} bytes, {size} expected", data.len()).into());
        }
    }
    Ok(latencies)
}

/// `concurrency` downloaders of `fids` for `phase`: the needle bytes downloaded and the
/// seconds it took.
async fn throughput(
    client: &Client,
    fids: &Arc<Vec<FileId>>,
    concurrency: usize,
    phase: Duration,
) -> Result<(u64, f64), BoxError> {
    let served = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (client, fids, served) = (client.clone(), Arc::clone(fids), Arc::clone(&served));
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while started.elapsed() < phase {
                let data = client.download(&fids[i % fids.len()]).await?;
                served.fetch_add(data.len() as u64, Ordering::Relaxed);
                i += 1;
            }
            Ok::<(), client_sdk::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok((served.load(Ordering::Relaxed), started.elapsed().as_secs_f64()))
}

async fn measure(
    client: &Client,
    server: &Server,
    fids: &Arc<Vec<FileId>>,
    size: usize,
    o: &Options,
) -> Result<Figures, BoxError> {
    for fid in fids.iter() {
        client.download(fid).await?;
    }
    let phase = Duration::from_secs_f64(o.seconds);
    let cpu_before = server.cpu_seconds()?;
    let mut latencies = latencies(client, fids, size, phase).await?;
    let (served, elapsed) = throughput(client, fids, o.concurrency, phase).await?;
    let cpu = server.cpu_seconds()? - cpu_before;
    let bytes = served + (latencies.len() * size) as u64;
    latencies.sort();
    Ok(Figures {
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        mb_per_s: served as f64 / 1e6 / elapsed,
        cpu_s_per_gib: cpu / (bytes as f64 / (1u64 << 30) as f64),
        percentiles_us: percentiles_us(&latencies),
    })
}

async fn run(o: &Options) -> Result<(), BoxError> {
    let server = Server::start(o, &[])?;
    let defaults = RdmaTransportConfig::default();
    let location_ttl = o.location_ttl.unwrap_or(defaults.location_ttl);
    let engines = [
        RdmaEngine::Sideway,
        #[cfg(feature = "async-rdma")]
        RdmaEngine::AsyncRdma,
    ];
    // Per engine a hot client, named as the transport names itself ("rdma-sideway",
    // ...), and unless every read locates already, a cold one ("rdma-sideway cold").
    let mut over_rdma = Vec::new();
    for engine in engines {
        let temperatures = if location_ttl.is_zero() {
            vec![(location_ttl, "")]
        } else {
            vec![(location_ttl, ""), (Duration::ZERO, " cold")]
        };
        for (location_ttl, suffix) in temperatures {
            let rdma = RdmaTransport::new(RdmaTransportConfig {
                engine,
                device: DeviceChoice::Name(o.device.clone()),
                location_ttl,
                ..defaults.clone()
            });
            let name = format!("{}{suffix}", rdma.name());
            let client = Client::builder(server.addr())
                .rdma_transport(Arc::new(rdma))
                .rdma_policy(RdmaPolicy::Require)
                .rdma_timeout(testbeds::softroce::slowness::scaled(Duration::from_secs(10)))
                .build()?;
            over_rdma.push((name, client));
        }
    }
    let over_http = Client::builder(server.addr()).rdma_policy(RdmaPolicy::Off).build()?;

    println!(
        "sdk-rdma-vs-http: SDK downloads from {} at {} (device {}), {} s per phase, {} concurrent for throughput, RDMA locations cached {:?}",
        o.volume_server.display(),
        server.addr(),
        o.device,
        o.seconds,
        o.concurrency,
        location_ttl
    );
    println!(
        "{:>9} {:>20} {:>10} {:>10} {:>10} {:>14}",
        "size", "path", "p50 us", "p99 us", "MB/s", "srv CPU s/GiB"
    );
    let mut rows = Vec::new();
    for &size in &o.sizes {
        // A few MiB of needles per size: enough distinct needles to cycle through, little
        // enough that uploading and warming them up stays short on a slow guest (the
        // measured phases are `--seconds` long whatever the guest's speed).
        let count = (4usize << 20).div_ceil(size).clamp(4, 64);
        let mut fids = Vec::with_capacity(count);
        for i in 0..count {
            let data = testbeds::pseudo_random(size, 9000 + i as u64);
            fids.push(over_http.upload(data, &UploadOptions::named("bench.bin")).await?.fid);
        }
        let fids = Arc::new(fids);
        let mut rdma = Vec::new();
        for (name, client) in &over_rdma {
            rdma.push((name.as_str(), measure(client, &server, &fids, size, o).await?));
        }
        let http = measure(&over_http, &server, &fids, size, o).await?;
        for (path, f) in rdma.iter().map(|(name, f)| (*name, f)).chain([("http", &http)]) {
            println!(
                "{:>9} {:>20} {:>10.0} {:>10.0} {:>10.1} {:>14.2}",
                human(size as u64),
                path,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6,
                f.mb_per_s,
                f.cpu_s_per_gib
            );
        }
        rows.push((size, rdma, http));
    }
    println!("ratios RDMA / HTTP (targets: p50 at 4 KiB <= 0.5, MB/s at 1 MiB >= 2, CPU per GiB <= 0.1):");
    for (size, rdma, http) in &rows {
        for (name, rdma) in rdma {
            println!(
                "{:>9} {:>20}: p50 {:.2}x, p99 {:.2}x, throughput {:.2}x, server CPU per GiB {:.3}x",
                human(*size as u64),
                name,
                rdma.p50.as_secs_f64() / http.p50.as_secs_f64(),
                rdma.p99.as_secs_f64() / http.p99.as_secs_f64(),
                rdma.mb_per_s / http.mb_per_s,
                rdma.cpu_s_per_gib / http.cpu_s_per_gib,
            );
        }
    }
    println!(
        "note: with Soft-RoCE the RDMA responder runs in the guest kernel (rxe), outside the server process, so its CPU is not in the server's figure; on an RNIC it is the NIC's."
    );
    let method = format!(
        "SDK downloads, {} s phases, p50/p99 from one reader, MB/s from {} concurrent, RDMA locations cached {location_ttl:?} (cold: a Locate per read)",
        o.seconds, o.concurrency
    );
    let mut saved = FigureSet::new("sdk-rdma-vs-http", method);
    for (size, rdma, http) in &rows {
        saved.figures.extend(rdma.iter().map(|(name, f)| f.saved(name, *size)));
        saved.figures.push(http.saved("http", *size));
    }
    if let Some(path) = saved.save_if_asked()? {
        println!("sdk-rdma-vs-http: figures saved in {}", path.display());
    }
    drop(server);
    compare_exposures(o).await
}

/// How many times each exposure's figures are taken, alternating between the two
/// servers (and which goes first), so drift in the guest's speed falls on both alike.
const EXPOSURE_ROUNDS: usize = 7;

/// One exposure under test: its server, a client that caches locations (the SDK's
/// default) and one that locates every read, and the needles uploaded to it.
struct ExposureUnderTest {
    name: &'static str,
    server: Server,
    cached: Client,
    locating: Client,
    small: Arc<Vec<FileId>>,
    large: Arc<Vec<FileId>>,
}

impl ExposureUnderTest {
    async fn start(o: &Options, name: &'static str, extra: &[&str]) -> Result<Self, BoxError> {
        let server = Server::start(o, extra)?;
        let client = |location_ttl: Duration| {
            let rdma = RdmaTransport::new(RdmaTransportConfig {
                device: DeviceChoice::Name(o.device.clone()),
                location_ttl,
                ..RdmaTransportConfig::default()
            });
            Client::builder(server.addr())
                .rdma_transport(Arc::new(rdma))
                .rdma_policy(RdmaPolicy::Require)
                .rdma_timeout(testbeds::softroce::slowness::scaled(Duration::from_secs(10)))
                .build()
        };
        let cached = client(RdmaTransportConfig::default().location_ttl)?;
        let locating = client(Duration::ZERO)?;
        let small = upload_warm(&cached, 4096, 16).await?;
        let large = upload_warm(&cached, 1 << 20, 8).await?;
        Ok(ExposureUnderTest { name, server, cached, locating, small, large })
    }

    /// One round: hot 4 KiB p50, 1 MiB throughput, and the server's CPU per Locate, each
    /// over a `phase`.
    async fn round(&self, o: &Options, phase: Duration) -> Result<ExposureFigures, BoxError> {
        let mut hot = latencies(&self.cached, &self.small, 4096, phase).await?;
        hot.sort();
        let (bytes, seconds) = throughput(&self.cached, &self.large, o.concurrency, phase).await?;
        let cpu_before = self.server.cpu_seconds()?;
        let reads = latencies(&self.locating, &self.small, 4096, phase).await?.len();
        let cpu = self.server.cpu_seconds()? - cpu_before;
        Ok(ExposureFigures {
            hot_4k_p50: quantile(&hot, 0.50),
            mb_per_s_1m: bytes as f64 / 1e6 / seconds,
            cpu_us_per_locate: cpu * 1e6 / reads.max(1) as f64,
        })
    }
}

/// Uploads `count` needles of `size` bytes and reads each once (which locates it).
async fn upload_warm(client: &Client, size: usize, count: usize) -> Result<Arc<Vec<FileId>>, BoxError> {
    let mut fids = Vec::with_capacity(count);
    for i in 0..count {
        let data = testbeds::pseudo_random(size, 7000 + i as u64);
        let fid = client.upload(data, &UploadOptions::named("bench.bin")).await?.fid;
        client.download(&fid).await?;
        fids.push(fid);
    }
    Ok(Arc::new(fids))
}

/// One exposure's figures in one round (see the module docs).
struct ExposureFigures {
    hot_4k_p50: Duration,
    mb_per_s_1m: f64,
    cpu_us_per_locate: f64,
}

/// Sorts `values` and returns their middle (the upper one of an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Record vs volume exposure through the SDK (sideway): both servers run at once, and
/// the figures are taken in `EXPOSURE_ROUNDS` rounds that alternate between them. Each
/// ratio is the median of the rounds' ratios, with their range, so one slow moment of
/// the guest moves neither it nor the verdict.
async fn compare_exposures(o: &Options) -> Result<(), BoxError> {
    let exposures = [
        ExposureUnderTest::start(o, "record", &[]).await?,
        // Both through Locate: what exposure costs, apart from the one-sided index.
        ExposureUnderTest::start(
            o,
            "volume",
            &["--rdma-exposure", "volume", "--rdma-one-sided-index", "off"],
        )
        .await?,
    ];
    let phase = Duration::from_secs_f64(o.seconds / 2.0);
    let mut rounds: Vec<[ExposureFigures; 2]> = Vec::new();
    for round in 0..EXPOSURE_ROUNDS {
        let (first, second) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        let a = exposures[first].round(o, phase).await?;
        let b = exposures[second].round(o, phase).await?;
        rounds.push(if first == 0 { [a, b] } else { [b, a] });
    }
    println!(
        "exposure (SDK, sideway; hot = locations cached, CPU per Locate = a client locating every read; \
         {EXPOSURE_ROUNDS} alternating rounds of {phase:?} per figure, medians):"
    );
    println!("{:>9} {:>14} {:>14} {:>18}", "exposure", "hot 4K p50 us", "1 MiB MB/s", "srv CPU us/Locate");
    for (i, exposure) in exposures.iter().enumerate() {
        let of = |figure: fn(&ExposureFigures) -> f64| {
            median(&mut rounds.iter().map(|r| figure(&r[i])).collect::<Vec<_>>())
        };
        println!(
            "{:>9} {:>14.0} {:>14.1} {:>18.0}",
            exposure.name,
            of(|f| f.hot_4k_p50.as_secs_f64() * 1e6),
            of(|f| f.mb_per_s_1m),
            of(|f| f.cpu_us_per_locate)
        );
    }
    let ratio = |figure: fn(&ExposureFigures) -> f64| {
        let mut ratios: Vec<f64> =
            rounds.iter().map(|[record, volume]| figure(record) / figure(volume)).collect();
        let middle = median(&mut ratios);
        format!("{middle:.2}x ({:.2}-{:.2})", ratios[0], ratios[ratios.len() - 1])
    };
    println!(
        "ratios record / volume, median of the rounds' (range) (target: hot 4 KiB p50 <= 1.1): hot 4 KiB p50 {}, 1 MiB throughput {}, server CPU per Locate {}",
        ratio(|f| f.hot_4k_p50.as_secs_f64()),
        ratio(|f| f.mb_per_s_1m),
        ratio(|f| f.cpu_us_per_locate),
    );
    Ok(())
}
