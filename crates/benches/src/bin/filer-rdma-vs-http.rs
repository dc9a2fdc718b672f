//! `filer-rdma-vs-http`: a file read by path through a real `weed filer`, in the
//! Soft-RoCE guest, three ways: the SDK's [`FilerClient`] with its chunks over RDMA
//! (`RdmaPolicy::Require`: nothing can fall back), the same client with its chunks over
//! HTTP (`RdmaPolicy::Off`), and the filer's own HTTP read (`GET /path`, with a `Range`
//! header for ranges), which is what weed's clients use. It prints figures and ratios and
//! never passes or fails on them.
//!
//! The cluster: a `weed master`, our `volume-server` (RDMA on, volumes on tmpfs) as its
//! only volume server, and a `weed filer` over them. One file of `--file-mib` MiB
//! (default 64) is written through the filer in chunks of `--chunk-mib` MiB (default 4,
//! weed's own default). For each way of reading, for `--seconds` each (at least once):
//! - sequential: the whole file, again and again (the SDK streams it, chunks fetched
//!   ahead concurrently; the filer's GET streams it), MB/s and p50 per whole read;
//! - ranges: `--range` bytes (default 4 KiB) at pseudo-random offsets, one at a time,
//!   p50, p99 and reads/s. The SDK verifies every chunk whole (header and CRC32-C), so a
//!   small range costs its whole chunk; the filer's GET asks the volume server for the
//!   range alone, unverified.
//! - the CPU (user + system) the filer and the volume server used together, per GiB
//!   returned to the reader.
//!
//! Every read is checked against the file written, on every path.
//!
//! usage: filer-rdma-vs-http [--device rxe0] [--volume-server PATH] [--seconds S]
//!                           [--file-mib N] [--chunk-mib N] [--range BYTES]

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::figures::{Figure, FigureSet, percentiles_us, quantile};
use benches::harness::{self, BoxError};
use benches::report::human;
use client_sdk::{DeviceChoice, FilerClient, RdmaEngine, RdmaPolicy, RdmaTransport, RdmaTransportConfig};
use testbeds::ours::OurVolumeServer;
use testbeds::softroce::slowness::scaled;
use testbeds::weed::WeedMaster;
use testbeds::weed_filer::WeedFiler;

const MIB: usize = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;
const FILE_PATH: &str = "/bench/file.bin";

struct Options {
    device: String,
    volume_server: PathBuf,
    seconds: f64,
    file_mib: usize,
    chunk_mib: usize,
    range: usize,
}

fn options() -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Options {
        device: std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".into()),
        volume_server: exe.with_file_name("volume-server"),
        seconds: 2.0,
        file_mib: 64,
        chunk_mib: 4,
        range: 4096,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: {value} is not valid");
        let count = || value.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(bad);
        match flag.as_str() {
            "--device" => o.device = value.clone(),
            "--volume-server" => o.volume_server = PathBuf::from(&value),
            "--seconds" => o.seconds = value.parse().ok().filter(|s: &f64| *s > 0.0).ok_or_else(bad)?,
            "--file-mib" => o.file_mib = count()?,
            "--chunk-mib" => o.chunk_mib = count()?,
            "--range" => o.range = count()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if o.range > o.file_mib * MIB {
        return Err(format!("--range {} is larger than the file", o.range));
    }
    Ok(o)
}

fn main() {
    harness::main("filer-rdma-vs-http", options, run);
}

/// The cluster under test; every process is stopped when it is dropped.
struct Cluster {
    filer: WeedFiler,
    ours: OurVolumeServer,
    _master: WeedMaster,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(o: &Options) -> Result<Self, BoxError> {
        let dir = tempfile::Builder::new().prefix("filer-bench-").tempdir_in("/dev/shm")?;
        let master = WeedMaster::start(dir.path(), 256)?;
        let master_addr = master.addr();
        let args = ["--mserver", master_addr.as_str(), "--max", "8", "--rdma-device", o.device.as_str()];
        let ours = OurVolumeServer::start(&o.volume_server, &dir.path().join("ours"), &args)?;
        let deadline = Instant::now() + scaled(Duration::from_secs(60));
        while !master.knows_volume_server(ours.addr()) {
            if Instant::now() > deadline {
                return Err("the master did not list our volume server".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let filer = WeedFiler::start(&dir.path().join("filer"), &master, &[])?;
        Ok(Cluster { filer, ours, _master: master, _dir: dir })
    }

    /// CPU seconds the filer and the volume server have used so far, together.
    fn cpu_seconds(&self) -> Result<f64, BoxError> {
        let filer = self.filer.cpu_time().ok_or("the filer's /proc/<pid>/stat is unreadable")?;
        let ours = self.ours.cpu_time().ok_or("the volume server's /proc/<pid>/stat is unreadable")?;
        Ok((filer.total() + ours.total()).as_secs_f64())
    }
}

/// One way of reading the file.
enum Reader {
    Sdk(Box<FilerClient>),
    FilerHttp(String),
}

impl Reader {
    /// Reads the whole file in order; its bytes are compared with `expected` on the way.
    async fn whole(&self, expected: &[u8]) -> Result<(), BoxError> {
        let mut at = 0usize;
        let mut check = |piece: &[u8]| -> Result<(), BoxError> {
            if expected.get(at..at + piece.len()) != Some(piece) {
                return Err(format!("bytes {at}..{} differ from the file written", at + piece.len()).into());
            }
            at += piece.len();
            Ok(())
        };
        match self {
            Reader::Sdk(client) => {
                let mut stream = client.read_stream(FILE_PATH).await?;
                while let Some(piece) = stream.next_chunk().await {
                    check(&piece?)?;
                }
            }
            Reader::FilerHttp(url) => tokio::task::block_in_place(|| {
                let response = ureq::get(&format!("{url}{FILE_PATH}")).call()?;
                let mut body = response.into_reader();
                let mut buffer = vec![0u8; MIB];
                loop {
                    let n = std::io::Read::read(&mut body, &mut buffer)?;
                    if n == 0 {
                        break;
                    }
                    check(&buffer[..n])?;
                }
                Ok::<(), BoxError>(())
            })?,
        }
        if at != expected.len() {
            return Err(format!("{at} bytes read, {} written", expected.len()).into());
        }
        Ok(())
    }

    /// Reads `range` of the file and compares it with `expected`.
    async fn range(&self, range: Range<usize>, expected: &[u8]) -> Result<(), BoxError> {
        let read = match self {
            Reader::Sdk(client) => {
                client.read_range(FILE_PATH, range.start as u64..range.end as u64).await?.to_vec()
            }
            Reader::FilerHttp(url) => tokio::task::block_in_place(|| {
                let response = ureq::get(&format!("{url}{FILE_PATH}"))
                    .set("Range", &format!("bytes={}-{}", range.start, range.end - 1))
                    .call()?;
                let mut body = Vec::new();
                std::io::Read::read_to_end(&mut response.into_reader(), &mut body)?;
                Ok::<_, BoxError>(body)
            })?,
        };
        if read != expected[range.clone()] {
            return Err(
                format!("range {range:?}: {} bytes that differ from the file written", read.len()).into()
            );
        }
        Ok(())
    }
}

/// One way of reading's figures for one kind of read.
struct Measured {
    latencies: Vec<Duration>,
    bytes: u64,
    elapsed: Duration,
    cpu_seconds: f64,
}

impl Measured {
    fn p(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / MIB as f64 / self.elapsed.as_secs_f64()
    }
    fn reads_per_s(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_s_per_gib(&self) -> f64 {
        self.cpu_seconds * GIB / self.bytes as f64
    }
    fn figure(&self, path: &str, op: &str, size: usize) -> Figure {
        Figure {
            op: op.to_owned(),
            p50_us: Some(self.p(0.5).as_secs_f64() * 1e6),
            p99_us: Some(self.p(0.99).as_secs_f64() * 1e6),
            mb_per_s: Some(self.mb_per_s()),
            req_per_s: Some(self.reads_per_s()),
            cpu_s_per_gib: Some(self.cpu_s_per_gib()),
            percentiles_us: percentiles_us(&self.latencies),
            ..Figure::new(path, size as u64)
        }
    }
}

/// Runs `read` one at a time for `seconds` (at least `minimum` times) and measures it,
/// with the cluster's CPU over the phase.
async fn measure<F, Fut>(
    cluster: &Cluster,
    seconds: f64,
    minimum: usize,
    bytes_per_read: usize,
    mut read: F,
) -> Result<Measured, BoxError>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>>,
{
    let phase = Duration::from_secs_f64(seconds);
    let cpu_before = cluster.cpu_seconds()?;
    let started = Instant::now();
    let mut latencies = Vec::new();
    while latencies.len() < minimum || started.elapsed() < phase {
        let t = Instant::now();
        read(latencies.len()).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Measured {
        bytes: (latencies.len() * bytes_per_read) as u64,
        latencies,
        elapsed,
        cpu_seconds: cluster.cpu_seconds()? - cpu_before,
    })
}

/// The range offsets every way of reading gets, the same for each: a fixed
/// pseudo-random sequence (64-bit LCG), so the ways read the same bytes in the same order.
fn range_at(i: usize, file_len: usize, range: usize) -> Range<usize> {
    let mixed =
        (i as u64 + 1).wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let start = ((mixed >> 17) % (file_len - range + 1) as u64) as usize;
    start..start + range
}

/// One way of reading's figures: (its name, whole-file reads, range reads).
type Row = (&'static str, Measured, Measured);

async fn run(o: &Options) -> Result<(), BoxError> {
    let cluster = tokio::task::block_in_place(|| Cluster::start(o))?;
    let data = testbeds::pseudo_random(o.file_mib * MIB, 64);
    tokio::task::block_in_place(|| {
        cluster.filer.put(FILE_PATH, &format!("maxMB={}", o.chunk_mib), &data, "application/octet-stream")
    })?;
    println!(
        "filer-rdma-vs-http: a {} file in {} chunks through weed filer {} and our volume-server {} \
         (device {}), {} s per phase, one read at a time",
        human(data.len() as u64),
        human((o.chunk_mib * MIB) as u64),
        cluster.filer.addr(),
        cluster.ours.addr(),
        o.device,
        o.seconds
    );
    let readers = readers(o, &cluster)?;
    let mut rows = Vec::new();
    for (name, reader) in &readers {
        // A first range read opens what each way keeps open (gRPC channels, the RDMA
        // session and queue pair, HTTP connections), outside the figures.
        reader.range(0..o.range, &data).await?;
        let sequential = measure(&cluster, o.seconds, 1, data.len(), |_| reader.whole(&data)).await?;
        let ranges = measure(&cluster, o.seconds, 3, o.range, |i| {
            reader.range(range_at(i, data.len(), o.range), &data)
        })
        .await?;
        rows.push((*name, sequential, ranges));
    }
    if let Reader::Sdk(client) = &readers[0].1 {
        let metrics = client.chunk_client().metrics();
        println!(
            "filer-rdma-vs-http: sdk-rdma chunk reads {:?}, fallbacks {:?}",
            metrics.reads, metrics.fallbacks
        );
    }
    print_figures(&rows, data.len(), o.range);
    save_figures(&rows, data.len(), o)
}

/// The three ways of reading: the SDK with its chunks over RDMA (nothing may fall back),
/// the SDK over HTTP, and the filer's own GET.
fn readers(o: &Options, cluster: &Cluster) -> Result<[(&'static str, Reader); 3], BoxError> {
    let rdma = Arc::new(RdmaTransport::new(RdmaTransportConfig {
        engine: RdmaEngine::Sideway,
        device: DeviceChoice::Name(o.device.clone()),
        read_timeout: scaled(Duration::from_secs(10)),
        rpc_timeout: scaled(Duration::from_secs(10)),
        ..RdmaTransportConfig::default()
    }));
    let sdk = |policy: RdmaPolicy| {
        let rdma = Arc::clone(&rdma);
        FilerClient::builder(cluster.filer.addr())
            .rpc_timeout(scaled(Duration::from_secs(30)))
            .chunk_reads(move |b| {
                b.rdma_transport(rdma)
                    .rdma_policy(policy)
                    .rdma_timeout(scaled(Duration::from_secs(20)))
                    .request_timeout(scaled(Duration::from_secs(60)))
            })
            .build()
    };
    Ok([
        ("sdk-rdma", Reader::Sdk(Box::new(sdk(RdmaPolicy::Require)?))),
        ("sdk-http", Reader::Sdk(Box::new(sdk(RdmaPolicy::Off)?))),
        ("filer-http", Reader::FilerHttp(cluster.filer.url())),
    ])
}

/// The table, then the ratios of the first way (RDMA) to each other.
fn print_figures(rows: &[Row], file_len: usize, range: usize) {
    println!(
        "{:>18} {:>11} {:>10} {:>10} {:>9} {:>9} {:>16}",
        "read", "path", "p50 ms", "p99 ms", "MB/s", "reads/s", "CPU s/GiB (f+v)"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for (kind, size) in [("sequential", file_len), ("range", range)] {
        for (name, sequential, ranges) in rows {
            let m = if kind == "sequential" { sequential } else { ranges };
            println!(
                "{:>18} {name:>11} {:>10.2} {:>10.2} {:>9.2} {:>9.2} {:>16.2}",
                format!("{} {kind}", human(size as u64)),
                ms(m.p(0.5)),
                ms(m.p(0.99)),
                m.mb_per_s(),
                m.reads_per_s(),
                m.cpu_s_per_gib()
            );
        }
    }
    let (_, rdma_seq, rdma_ranges) = &rows[0];
    println!("ratios sdk-rdma / other (p50 latency, throughput, filer + volume server CPU per GiB):");
    for (name, sequential, ranges) in &rows[1..] {
        for (kind, ours, theirs) in [("sequential", rdma_seq, sequential), ("range", rdma_ranges, ranges)] {
            println!(
                "  {kind:>10} vs {name:<10}: p50 {:.2}x, throughput {:.2}x, CPU per GiB {:.2}x",
                ours.p(0.5).as_secs_f64() / theirs.p(0.5).as_secs_f64(),
                ours.mb_per_s() / theirs.mb_per_s(),
                ours.cpu_s_per_gib() / theirs.cpu_s_per_gib()
            );
        }
    }
}

/// Into `$BENCH_FIGURES_DIR`, when it is set, for `bench-report`.
fn save_figures(rows: &[Row], file_len: usize, o: &Options) -> Result<(), BoxError> {
    let method = format!(
        "a {} file in {} chunks through weed filer, read by path one read at a time, {} s per phase; \
         CPU is the filer's plus the volume server's",
        human(file_len as u64),
        human((o.chunk_mib * MIB) as u64),
        o.seconds
    );
    let mut saved = FigureSet::new("filer-rdma-vs-http", method);
    for (name, sequential, ranges) in rows {
        saved.figures.push(sequential.figure(name, "sequential", file_len));
        saved.figures.push(ranges.figure(name, "range", o.range));
    }
    if let Some(path) = saved.save_if_asked()? {
        println!("filer-rdma-vs-http: figures saved in {}", path.display());
    }
    Ok(())
}
