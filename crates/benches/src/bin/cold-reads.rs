//! `cold-reads`: needles never read before, each read once in random order through the
//! SDK, from one live `volume-server` in `--rdma-exposure volume`, in the Soft-RoCE
//! guest. It prints figures and ratios and never passes or fails on them.
//!
//! Three paths, per needle size (default 4 KiB and 64 KiB, `--needles` of each, default
//! 10,000):
//! - `one-sided`: RDMA through the server's one-sided index (the SDK's default in
//!   `volume` exposure): the client READs the volume's index once (first contact,
//!   reported apart), then each read is a bucket version and the record, READ together;
//! - `locate`: RDMA with a Locate (gRPC, server CPU) before every READ
//!   (`one_sided_index: false`, no location cache): what a cold read cost before;
//! - `http`: the SDK's HTTP GET.
//!
//! Each path reads its needles (all of them for `one-sided`; `--baseline-reads`, default
//! 1,000, for `locate` and `http`, whose cost per read does not depend on how many are
//! read and which would take most of the guest stage's time otherwise) once each in a
//! random order of its own: the first half one at a time (p50, p99), the second half
//! with `--concurrency` readers (MB/s of needle data, reads/s).
//! Per read: the server process's CPU (utime + stime from `/proc/<pid>/stat`, both
//! phases), RPCs (Locate, OpenIndex and KeepAlive calls) and READs posted (one-sided path). The
//! volumes are written as files before the server starts (uploading 700 MB over HTTP
//! in an emulated guest would take most of the stage). In the guest, perftest's
//! `ib_read_lat -s 4096` runs right before and right after the one-sided 4 KiB reads,
//! and their p50 is printed against the mean of the two (against `--ib-read-lat-us`,
//! the boot's figure, when perftest cannot run), with the share of the CRC32-C check.
//!
//! usage: cold-reads [--device rxe0] [--volume-server PATH] [--needles N]
//!                   [--baseline-reads N] [--one-sided-reads N (default: all)]
//!                   [--sizes 4096,65536] [--concurrency C]
//!                   [--ib-read-lat-us US]
//!                   [--seconds S (accepted, unused: every needle is read once)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use benches::figures::{Figure, FigureSet, percentiles_us, quantile};
use benches::harness::{self, BoxError};
use benches::report::human;
use client_sdk::{Client, DeviceChoice, FileId, RdmaPolicy, RdmaStats, RdmaTransport, RdmaTransportConfig};
use needle::{
    Cookie, IdxEntry, Needle, NeedleId, OffsetWidth, ReplicaPlacement, SuperBlock, Ttl, Version, VolumeId,
};
use testbeds::ours::OurVolumeServer;

struct Options {
    device: String,
    volume_server: PathBuf,
    needles: usize,
    baseline_reads: usize,
    /// Reads through the one-sided index per size (`None`: every needle).
    one_sided_reads: Option<usize>,
    sizes: Vec<usize>,
    concurrency: usize,
    ib_read_lat_us: Option<f64>,
}

fn options() -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Options {
        device: std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".into()),
        volume_server: exe.with_file_name("volume-server"),
        needles: 10_000,
        baseline_reads: 1_000,
        one_sided_reads: None,
        sizes: vec![4096, 65536],
        concurrency: 4,
        ib_read_lat_us: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag}: {value} is not valid");
        match flag.as_str() {
            "--device" => o.device = value.clone(),
            "--volume-server" => o.volume_server = PathBuf::from(&value),
            "--needles" => o.needles = value.parse().ok().filter(|n| *n >= 2).ok_or_else(bad)?,
            "--one-sided-reads" => {
                o.one_sided_reads = Some(value.parse().ok().filter(|n| *n >= 2).ok_or_else(bad)?)
            }
            "--baseline-reads" => {
                o.baseline_reads = value.parse().ok().filter(|n| *n >= 2).ok_or_else(bad)?
            }
            "--concurrency" => o.concurrency = value.parse().ok().filter(|c| *c > 0).ok_or_else(bad)?,
            "--ib-read-lat-us" => o.ib_read_lat_us = Some(value.parse().map_err(|_| bad())?),
            "--seconds" => {}
            "--sizes" => o.sizes = harness::sizes(&value).ok_or_else(bad)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(o)
}

fn main() {
    harness::main("cold-reads", options, run);
}

/// The bytes of needle `n` of the volume of `size`-byte needles.
fn payload(size: usize, n: u64) -> Vec<u8> {
    testbeds::pseudo_random(size, n * 7919 + size as u64)
}

fn fid(volume: u32, n: u64) -> FileId {
    FileId::new(VolumeId(volume), NeedleId(n), Cookie(0xc01d ^ n as u32))
}

/// Writes volume `volume` of `count` needles of `size` bytes into `dir` (`.dat`, and
/// `.idx` with 5-byte offsets, the server's default), as the server would have.
fn write_volume(dir: &Path, volume: u32, size: usize, count: usize) -> Result<(), BoxError> {
    let mut dat = SuperBlock::new(ReplicaPlacement::default(), Ttl::default()).to_bytes()?;
    let mut idx = Vec::with_capacity(count * 17);
    for n in 1..=count as u64 {
        let offset = dat.len() as u64;
        let data = payload(size, n);
        let f = fid(volume, n);
        let needle = Needle::new(f.needle_id(), f.cookie, &data).with_append_at_ns(n);
        needle.encode_into(Version::V3, &mut dat)?;
        IdxEntry::new(f.needle_id(), offset, needle.body_size(Version::V3)?)?
            .encode_into(OffsetWidth::Five, &mut idx)?;
    }
    std::fs::write(dir.join(format!("{volume}.dat")), dat)?;
    std::fs::write(dir.join(format!("{volume}.idx")), idx)?;
    Ok(())
}

/// A permutation of `1..=count` from a fixed seed (a Lehmer generator: the same order
/// every run).
fn shuffled(count: usize, seed: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (1..=count as u64).collect();
    let mut state = seed.max(1);
    for i in (1..order.len()).rev() {
        state = state * 48_271 % 2_147_483_647;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

struct PathFigures {
    p50: Duration,
    p99: Duration,
    mb_per_s: f64,
    reads_per_s: f64,
    cpu_us_per_read: f64,
    rpcs_per_read: f64,
    reads_posted_per_read: Option<f64>,
    percentiles_us: Vec<(f64, f64)>,
}

/// One path: `client`, and the RDMA transport under it (None for HTTP).
struct PathUnderTest {
    name: &'static str,
    client: Client,
    rdma: Option<Arc<RdmaTransport>>,
}

impl PathUnderTest {
    fn stats(&self) -> RdmaStats {
        self.rdma.as_ref().map(|r| r.stats()).unwrap_or_default()
    }

    /// Reads `order` (one at a time for its first half, `concurrency` at once for the
    /// rest), checking every byte.
    async fn measure(
        &self,
        server: &OurVolumeServer,
        volume: u32,
        size: usize,
        order: Vec<u64>,
        concurrency: usize,
    ) -> Result<PathFigures, BoxError> {
        let (single, concurrent) = order.split_at(order.len() / 2);
        let before = self.stats();
        let cpu_before = cpu_seconds(server)?;
        let mut latencies = Vec::with_capacity(single.len());
        for &n in single {
            let t = Instant::now();
            let data = self.client.download(&fid(volume, n)).await?;
            latencies.push(t.elapsed());
            check(&data, size, n)?;
        }
        let concurrent = Arc::new(concurrent.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, concurrent, next) =
                (self.client.clone(), Arc::clone(&concurrent), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                while let Some(&n) = concurrent.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let data = client.download(&fid(volume, n)).await?;
                    check(&data, size, n)?;
                }
                Ok::<(), BoxError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(server)? - cpu_before;
        let after = self.stats();
        let reads = order.len() as f64;
        latencies.sort();
        Ok(PathFigures {
            p50: quantile(&latencies, 0.50),
            p99: quantile(&latencies, 0.99),
            mb_per_s: (concurrent.len() * size) as f64 / 1e6 / elapsed,
            reads_per_s: concurrent.len() as f64 / elapsed,
            cpu_us_per_read: cpu * 1e6 / reads,
            rpcs_per_read: ((after.locate_calls + after.index_opens + after.keep_alives)
                - (before.locate_calls + before.index_opens + before.keep_alives))
                as f64
                / reads,
            reads_posted_per_read: (after.one_sided_hits > before.one_sided_hits)
                .then(|| (after.index_reads_posted - before.index_reads_posted) as f64 / reads),
            percentiles_us: percentiles_us(&latencies),
        })
    }
}

fn check(data: &[u8], size: usize, n: u64) -> Result<(), BoxError> {
    if data != payload(size, n) {
        return Err(format!("needle {n}: {} bytes that are not the ones written", data.len()).into());
    }
    Ok(())
}

/// Waits (bounded) until the server's indexed volumes are registered to their end.
async fn wait_until_registered(server: &OurVolumeServer) -> Result<(), BoxError> {
    let url = format!("http://{}/metrics", server.addr());
    let deadline = Instant::now() + testbeds::softroce::slowness::scaled(Duration::from_secs(120));
    loop {
        let url = url.clone();
        let fetched = tokio::task::spawn_blocking(move || -> Result<String, BoxError> {
            Ok(ureq::get(&url).call().map_err(Box::new)?.into_string()?)
        });
        let text = fetched.await??;
        let pending = text.lines().find_map(|l| l.strip_prefix("volume_server_rdma_index_pending_volumes "));
        if pending.map(str::trim) == Some("0") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the server did not register the indexed volumes in time".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cpu_seconds(server: &OurVolumeServer) -> Result<f64, BoxError> {
    Ok(server.cpu_time().ok_or("the server's /proc/<pid>/stat is unreadable")?.total().as_secs_f64())
}

async fn run(o: &Options) -> Result<(), BoxError> {
    let dir = tempfile::Builder::new().prefix("cold-reads-").tempdir_in("/dev/shm")?;
    let written = Instant::now();
    for (i, &size) in o.sizes.iter().enumerate() {
        write_volume(dir.path(), i as u32 + 1, size, o.needles)?;
    }
    let written = written.elapsed();
    // Both RDMA paths may pin all the volumes (the index its own extents, Locate the
    // region cache's): the Locate path is measured without evictions.
    let args = [
        "--rdma-device",
        o.device.as_str(),
        "--rdma-exposure",
        "volume",
        "--rdma-index-pinned-mb",
        "2048",
        "--rdma-pinned-mb",
        "2048",
    ];
    let server = OurVolumeServer::start(&o.volume_server, dir.path(), &args)?;
    let timeout = testbeds::softroce::slowness::scaled(Duration::from_secs(10));
    let rdma_path = |name: &'static str, one_sided_index: bool| -> Result<PathUnderTest, BoxError> {
        let rdma = Arc::new(RdmaTransport::new(RdmaTransportConfig {
            device: DeviceChoice::Name(o.device.clone()),
            location_ttl: Duration::ZERO,
            one_sided_index,
            ..RdmaTransportConfig::default()
        }));
        let client = Client::builder(server.addr())
            .rdma_transport(Arc::clone(&rdma) as _)
            .rdma_policy(RdmaPolicy::Require)
            .rdma_timeout(timeout)
            .build()?;
        Ok(PathUnderTest { name, client, rdma: Some(rdma) })
    };
    let paths = [
        rdma_path("one-sided", true)?,
        rdma_path("locate", false)?,
        PathUnderTest {
            name: "http",
            client: Client::builder(server.addr()).rdma_policy(RdmaPolicy::Off).build()?,
            rdma: None,
        },
    ];
    println!(
        "cold-reads: {} needles per size, read once each in random order through the SDK (one-sided: \
         {}; locate and http: {}), one at a time for the first half, {} at once for the second, \
         volume exposure, {} (volumes written in {written:.1?})",
        o.needles,
        o.one_sided_reads.unwrap_or(o.needles).min(o.needles),
        o.baseline_reads.min(o.needles),
        o.concurrency,
        o.volume_server.display()
    );
    println!(
        "{:>6} {:>10} {:>8} {:>8} {:>8} {:>9} {:>12} {:>9} {:>11}",
        "size", "path", "p50 us", "p99 us", "MB/s", "reads/s", "srv CPU us/rd", "RPCs/rd", "READs/rd"
    );
    let mut saved = FigureSet::new(
        "cold-reads",
        format!(
            "needles never read before, each once: {} per size; p50/p99 one reader, MB/s {} readers",
            o.needles, o.concurrency
        ),
    );
    let mut rows = Vec::new();
    for (i, &size) in o.sizes.iter().enumerate() {
        let volume = i as u32 + 1;
        // First contact of the one-sided path with this volume (OpenIndex, then the whole
        // index READ into a replica), apart from the measured reads: needle 1 is read
        // here and by nobody after (every order below starts from 2).
        let first_contact = Instant::now();
        check(&paths[0].client.download(&fid(volume, 1)).await?, size, 1)?;
        let first_contact = first_contact.elapsed();
        // The server registers the volume's .dat for the index in the background (reads
        // of what is not registered yet are located): measured from here on, all is.
        let registered = Instant::now();
        wait_until_registered(&server).await?;
        let registered = registered.elapsed();
        let mut figures = Vec::new();
        let mut beside = Vec::new();
        for (p, path) in paths.iter().enumerate() {
            // perftest right before and after the one-sided 4 KiB reads: the ratio's
            // baseline from the same minutes, not only from the boot's start.
            let with_perftest = p == 0 && size == 4096;
            if with_perftest {
                beside.extend(ib_read_lat_now(&o.device).await);
            }
            let reads = if p == 0 { o.one_sided_reads.unwrap_or(o.needles) } else { o.baseline_reads };
            let reads = reads.min(o.needles);
            let order: Vec<u64> = shuffled(o.needles, 17 + p as u64 + volume as u64 * 31)
                .into_iter()
                .filter(|&n| n != 1)
                .take(reads)
                .collect();
            let f = path.measure(&server, volume, size, order, o.concurrency).await?;
            if with_perftest {
                beside.extend(ib_read_lat_now(&o.device).await);
            }
            println!(
                "{:>6} {:>10} {:>8.0} {:>8.0} {:>8.1} {:>9.0} {:>12.1} {:>9.3} {:>11}",
                human(size as u64),
                path.name,
                f.p50.as_secs_f64() * 1e6,
                f.p99.as_secs_f64() * 1e6,
                f.mb_per_s,
                f.reads_per_s,
                f.cpu_us_per_read,
                f.rpcs_per_read,
                f.reads_posted_per_read.map_or("-".to_owned(), |r| format!("{r:.2}")),
            );
            saved.figures.push(Figure {
                p50_us: Some(f.p50.as_secs_f64() * 1e6),
                p99_us: Some(f.p99.as_secs_f64() * 1e6),
                mb_per_s: Some(f.mb_per_s),
                percentiles_us: f.percentiles_us.clone(),
                ..Figure::new(path.name, size as u64)
            });
            figures.push(f);
        }
        let one_sided = paths[0].stats();
        let replica = one_sided.index_replica_bytes;
        println!(
            "{:>6} one-sided client so far: {} one-sided hits, {} refreshes, {} left to Locate, {} index opens, {} retries, {} sessions",
            human(size as u64),
            one_sided.one_sided_hits,
            one_sided.index_refreshes,
            one_sided.index_fallbacks,
            one_sided.index_opens,
            one_sided.retries,
            one_sided.sessions_opened
        );
        println!(
            "{:>6} one-sided first contact with the volume: {first_contact:.1?} (OpenIndex, replica of {} needles by READs: {} KiB held in all); the server registered its .dat in {registered:.1?} more",
            human(size as u64),
            o.needles,
            replica >> 10
        );
        if !beside.is_empty() {
            println!(
                "{:>6} ib_read_lat 4 KiB typical beside the one-sided reads: {beside:.1?} us",
                human(size as u64)
            );
        }
        let beside = (!beside.is_empty()).then(|| beside.iter().sum::<f64>() / beside.len() as f64);
        rows.push((size, figures, beside));
    }
    println!(
        "ratios (targets: one-sided CPU per read <= 0.05x locate's; one-sided 4 KiB reads/s >= 3x http's; one-sided 4 KiB p50 <= 1.5x ib_read_lat):"
    );
    for (size, f, beside) in &rows {
        let (one_sided, locate, http) = (&f[0], &f[1], &f[2]);
        let vs_perftest = match (beside.or(o.ib_read_lat_us), *size == 4096) {
            (Some(lat), true) => format!(
                ", p50 / ib_read_lat {:.2}x ({lat:.1} us, {}; of the p50, {:.1} us is the CRC32-C check on this CPU, which perftest does not do)",
                one_sided.p50.as_secs_f64() * 1e6 / lat,
                if beside.is_some() { "the mean beside the reads" } else { "given" },
                crc_us(*size)
            ),
            _ => String::new(),
        };
        println!(
            "{:>6} one-sided / locate: p50 {:.2}x, reads/s {:.2}x, server CPU per read {:.3}x; one-sided / http: p50 {:.2}x, reads/s {:.2}x, server CPU per read {:.3}x{vs_perftest}",
            human(*size as u64),
            one_sided.p50.as_secs_f64() / locate.p50.as_secs_f64(),
            one_sided.reads_per_s / locate.reads_per_s,
            one_sided.cpu_us_per_read / locate.cpu_us_per_read,
            one_sided.p50.as_secs_f64() / http.p50.as_secs_f64(),
            one_sided.reads_per_s / http.reads_per_s,
            one_sided.cpu_us_per_read / http.cpu_us_per_read,
        );
    }
    println!(
        "note: with Soft-RoCE the RDMA responder runs in the guest kernel (rxe), outside the server process, so its CPU is not in the server's figure; on an RNIC it is the NIC's."
    );
    if let Some(path) = saved.save_if_asked()? {
        println!("cold-reads: figures saved in {}", path.display());
    }
    drop(server);
    Ok(())
}

/// Microseconds one CRC32-C of `size` bytes takes on this CPU (the verify step of every
/// read; emulated in the guest, it is a visible part of a small read's latency).
fn crc_us(size: usize) -> f64 {
    let data = payload(size, 7);
    let started = Instant::now();
    let mut rounds = 0u32;
    while started.elapsed() < Duration::from_millis(200) {
        std::hint::black_box(needle::crc::crc32c(std::hint::black_box(&data)));
        rounds += 1;
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

/// `ib_read_lat -s 4096`'s typical latency now, in the Soft-RoCE guest; `None` outside it
/// (or if perftest fails: the ratio then uses `--ib-read-lat-us`).
async fn ib_read_lat_now(device: &str) -> Option<f64> {
    use testbeds::softroce::perftest::{Figures, PerftestCase};
    std::env::var_os("SOFTROCE_IP")?;
    let device = device.to_owned();
    let run =
        tokio::task::spawn_blocking(move || harness::perftest(&device, &PerftestCase::read_latency(4096)));
    match run.await {
        Ok(Ok(Figures::Latency { typical, .. })) => Some(typical),
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            eprintln!("cold-reads: ib_read_lat beside the reads: {e}");
            None
        }
        Err(e) => {
            eprintln!("cold-reads: ib_read_lat beside the reads: {e}");
            None
        }
    }
}
