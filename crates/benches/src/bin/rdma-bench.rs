//! `rdma-bench`: the RDMA read path's figures, measured in the Soft-RoCE guest against a
//! live `volume-server`, printed beside perftest's (`ib_read_lat`, `ib_read_bw`) from the
//! same boot as ratios. `testbeds rdma-tests` runs it after the RDMA tests, passing the
//! perftest figures it measured; it prints figures and never passes or fails on them.
//!
//! What it measures, through each engine built in (sideway; async-rdma with the `benches`
//! feature `async-rdma`):
//! - 4 KiB READ latency at the engine (one READ of 4096 bytes of a registered extent,
//!   nothing outstanding besides): the like-for-like figure for `ib_read_lat -s 4096`;
//! - the latency of an 8-byte and a 4 KiB READ posted together (one doorbell with
//!   sideway): what a read through the one-sided index posts, beside the single READ;
//! - 4 KiB needle latency through `RdmaClient` (cached location, READ, header and CRC
//!   verification): what an application sees;
//! - 1 MiB READ throughput at the engine with several READs outstanding (like
//!   `ib_read_bw -s 1048576`), and 1 MiB needles through `RdmaClient` with concurrent
//!   readers;
//! - the engine-level 4 KiB latency again on a current-thread tokio runtime (the figures
//!   above use a 2-worker multi-thread runtime): async-rdma completes READs through a
//!   task on the runtime, so the flavour can matter;
//! - with `--rounds N` (in the Soft-RoCE guest), N rounds of `ib_read_lat -s 4096` and
//!   `ib_read_bw -s 1048576` run right before each engine's engine-level 4 KiB p50 and
//!   1 MiB throughput: each round's ratios, then their median. perftest alone varies by
//!   15-30% between runs in one boot, so one ratio against one perftest run says little;
//!   the median of ratios taken side by side is steadier.
//!
//! With `$BENCH_FIGURES_DIR` set (the guest stage sets it), the figures, and perftest's
//! from the options as the baseline, are saved there for `bench-report`.
//!
//! usage: rdma-bench [--device rxe0] [--volume-server PATH] [--seconds S]
//!                   [--ib-read-lat-us X] [--ib-read-bw-mbs Y] [--rounds N]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::figures::{Figure, FigureSet, percentiles_us};
use benches::harness::{self, BoxError};
use needle::FileId;
use rdma_transport::proto::rdma_control_client::RdmaControlClient;
use rdma_transport::proto::{self, LocateStatus};
use rdma_transport::verbs::{DeviceChoice, SidewayConfig, SidewayEngine};
use rdma_transport::{EngineQp, QpEndpoint, RdmaClient, RdmaClientConfig, ReadEngine, RemoteRead};
use testbeds::ours::OurVolumeServer;
use testbeds::weed::{UploadBody, assign, upload};

struct Options {
    device: String,
    volume_server: PathBuf,
    seconds: f64,
    ib_read_lat_us: Option<f64>,
    ib_read_bw_mbs: Option<f64>,
    rounds: u32,
}

fn options() -> Result<Options, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut o = Options {
        device: std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".into()),
        volume_server: exe.with_file_name("volume-server"),
        seconds: 3.0,
        ib_read_lat_us: None,
        ib_read_bw_mbs: None,
        rounds: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<f64>().map_err(|_| format!("{flag}: {value} is not a number"));
        match flag.as_str() {
            "--device" => o.device = value.clone(),
            "--volume-server" => o.volume_server = PathBuf::from(&value),
            "--seconds" => o.seconds = number()?,
            "--ib-read-lat-us" => o.ib_read_lat_us = Some(number()?),
            "--ib-read-bw-mbs" => o.ib_read_bw_mbs = Some(number()?),
            "--rounds" => {
                o.rounds = value.parse().map_err(|_| format!("--rounds: {value} is not a count"))?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(o)
}

fn main() {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rdma-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&options) {
        eprintln!("rdma-bench: {e}");
        std::process::exit(1);
    }
}

const MIB: f64 = (1 << 20) as f64;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1e6
}

fn ratio(ours: f64, theirs: Option<f64>, what: &str) -> String {
    match theirs {
        Some(t) if t > 0.0 => format!("{:.2}x {what}", ours / t),
        _ => format!("({what} not given)"),
    }
}

fn run(o: &Options) -> Result<(), BoxError> {
    let dir = tempfile_dir()?;
    let server = OurVolumeServer::start(&o.volume_server, &dir, &["--rdma-device", &o.device, "--max", "1"])?;
    let grpc = server.grpc_addr();
    let upload_one = |data: &[u8]| -> Result<FileId, BoxError> {
        let a = assign(&format!("http://{}", server.addr()), "")?;
        let body = UploadBody::Raw { content_type: "application/octet-stream" };
        let (status, reply) = upload(server.addr(), &a.fid, "", data, body, &[])?;
        if status != 201 {
            return Err(format!("upload: {status} {reply}").into());
        }
        Ok(a.fid.parse()?)
    };
    let small = upload_one(&testbeds::pseudo_random(4096, 1))?;
    let large: Vec<FileId> =
        (0..8).map(|i| upload_one(&testbeds::pseudo_random(1 << 20, 10 + i))).collect::<Result<_, _>>()?;

    let engines = engines(&o.device)?;
    let method = format!(
        "{} s per figure; READs of a registered extent at the engine, needles (cached location, READ, verify) \
         through RdmaClient; 1 MiB throughput with the engine's queue depth outstanding; perftest from the same boot",
        o.seconds
    );
    let mut saved = FigureSet::new("rdma-bench", method);
    saved.figures.extend(perftest_baseline(o));
    for (engine, depth) in &engines {
        saved.figures.extend(measure(o, &grpc, engine, *depth, &small, &large)?);
    }
    if o.rounds > 0 {
        side_by_side(o, &grpc, &engines, &large[0])?;
    }
    server.stop();
    std::fs::remove_dir_all(&dir)?;
    if let Some(path) = saved.save_if_asked()? {
        println!("rdma-bench: figures saved in {}", path.display());
    }
    Ok(())
}

/// perftest's figures given on the command line, as the figures to compare with.
fn perftest_baseline(o: &Options) -> Vec<Figure> {
    let mut baseline = Vec::new();
    if let Some(us) = o.ib_read_lat_us {
        baseline.push(Figure { p50_us: Some(us), ..Figure::new("perftest ib_read_lat (typical)", 4096) });
    }
    if let Some(mbs) = o.ib_read_bw_mbs {
        baseline.push(Figure { mb_per_s: Some(mbs), ..Figure::new("perftest ib_read_bw", 1 << 20) });
    }
    baseline
}

/// A latency figure of `path` at `size` from its sorted samples.
fn latency_figure(path: String, size: u64, sorted: &[Duration]) -> Figure {
    Figure {
        p50_us: Some(percentile(sorted, 0.5)),
        p99_us: Some(percentile(sorted, 0.99)),
        percentiles_us: percentiles_us(sorted),
        ..Figure::new(&path, size)
    }
}

fn throughput_figure(path: String, size: u64, mb_per_s: f64) -> Figure {
    Figure { mb_per_s: Some(mb_per_s), ..Figure::new(&path, size) }
}

/// An engine and its queue depth (READs it keeps outstanding per queue pair).
type EngineWithDepth = (Arc<dyn ReadEngine>, usize);

/// Every engine built in, opened on `device`.
fn engines(device: &str) -> Result<Vec<EngineWithDepth>, BoxError> {
    let config = SidewayConfig::new(DeviceChoice::Name(device.to_owned()));
    let depth = config.queue_depth;
    #[cfg_attr(not(feature = "async-rdma"), allow(unused_mut))]
    let mut engines: Vec<(Arc<dyn ReadEngine>, usize)> =
        vec![(Arc::new(SidewayEngine::open(config)?), depth)];
    #[cfg(feature = "async-rdma")]
    {
        use rdma_transport::async_rdma_engine::{AsyncRdmaConfig, AsyncRdmaEngine};
        let config = AsyncRdmaConfig::new(DeviceChoice::Name(device.to_owned()));
        let depth = config.queue_depth;
        engines.push((Arc::new(AsyncRdmaEngine::open(config)?), depth));
    }
    Ok(engines)
}

/// The figures of one engine: engine-level and through `RdmaClient`, on a multi-thread
/// runtime, then the engine-level latency on a current-thread one.
fn measure(
    o: &Options,
    grpc: &str,
    engine: &Arc<dyn ReadEngine>,
    depth: usize,
    small: &FileId,
    large: &[FileId],
) -> Result<Vec<Figure>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let budget = Duration::from_secs_f64(o.seconds);
    let (at_engine, through_client) =
        (format!("{} READ", engine.name()), format!("{} RdmaClient", engine.name()));
    let mut figures = Vec::new();
    runtime.block_on(async {
        println!("rdma-bench: engine {}, device {}, {} s per figure", engine.name(), o.device, o.seconds);

        // Engine level: a session of our own and the location of a 1 MiB needle.
        let (qp, segment) = raw_session(grpc, engine.as_ref(), &large[0]).await?;
        let lat = timed_reads(budget, 20_000, || qp.read(segment.addr, segment.rkey, 4096)).await?;
        println!(
            "rdma-bench: 4 KiB READ, engine          p50 {:8.2} us  p99 {:8.2} us  ({} reads)  p50 {}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.len(),
            ratio(percentile(&lat, 0.5), o.ib_read_lat_us, "ib_read_lat typical")
        );
        figures.push(latency_figure(at_engine.clone(), 4096, &lat));
        // What a one-sided index read posts: an 8-byte bucket version and the record,
        // chained behind one doorbell (here 8 bytes and 4 KiB of the same extent).
        let batch = [
            RemoteRead { addr: segment.addr, rkey: segment.rkey, len: 8 },
            RemoteRead { addr: segment.addr + 4096, rkey: segment.rkey, len: 4096 },
        ];
        let batched = timed_reads(budget, 20_000, || async {
            qp.read_batch(&batch).await.map(|mut parts| parts.pop().unwrap_or_default())
        })
        .await?;
        println!(
            "rdma-bench: 8 B + 4 KiB READs, one batch  p50 {:8.2} us  p99 {:8.2} us  ({} batches)  p50 {}, {:.2}x the single READ",
            percentile(&batched, 0.5),
            percentile(&batched, 0.99),
            batched.len(),
            ratio(percentile(&batched, 0.5), o.ib_read_lat_us, "ib_read_lat typical"),
            percentile(&batched, 0.5) / percentile(&lat, 0.5)
        );
        let len = segment.len.min(1 << 20);
        let mbs = throughput(budget, depth, len, || qp.read(segment.addr, segment.rkey, len)).await?;
        println!(
            "rdma-bench: 1 MiB READ, engine, {depth:>2} outstanding  {mbs:8.2} MB/s  {}",
            ratio(mbs, o.ib_read_bw_mbs, "ib_read_bw average")
        );
        figures.push(throughput_figure(at_engine.clone(), len as u64, mbs));

        // Through RdmaClient: locate once (cached), READ, verify header and CRC32-C.
        let config =
            RdmaClientConfig { location_ttl: Duration::from_secs(3600), ..RdmaClientConfig::default() };
        let client = Arc::new(RdmaClient::new(grpc, Arc::clone(engine), config)?);
        client.read(small).await?;
        let lat =
            timed_reads(budget, 20_000, || async { client.read(small).await.map(|r| r.record) }).await?;
        println!(
            "rdma-bench: 4 KiB needle, RdmaClient    p50 {:8.2} us  p99 {:8.2} us  ({} reads)  p50 {}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.len(),
            ratio(percentile(&lat, 0.5), o.ib_read_lat_us, "ib_read_lat typical")
        );
        figures.push(latency_figure(through_client.clone(), 4096, &lat));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..depth {
            let (client, large) = (Arc::clone(&client), large.to_vec());
            tasks.push(tokio::spawn(async move {
                let mut bytes = 0u64;
                let mut i = t;
                while started.elapsed() < budget {
                    bytes += client.read(&large[i % large.len()]).await?.needle().data.len() as u64;
                    i += 1;
                }
                Ok::<u64, rdma_transport::RdmaError>(bytes)
            }));
        }
        let mut bytes = 0;
        for task in tasks {
            bytes += task.await??;
        }
        let mbs = bytes as f64 / MIB / started.elapsed().as_secs_f64();
        println!(
            "rdma-bench: 1 MiB needles, RdmaClient, {depth} readers  {mbs:8.2} MB/s  {}",
            ratio(mbs, o.ib_read_bw_mbs, "ib_read_bw average")
        );
        figures.push(throughput_figure(through_client.clone(), 1 << 20, mbs));
        // The verify step's cost on this CPU, for reading the figure above.
        let data = testbeds::pseudo_random(1 << 20, 99);
        let started = Instant::now();
        let mut rounds = 0u32;
        while started.elapsed() < Duration::from_secs(1) {
            std::hint::black_box(needle::crc::crc32c(std::hint::black_box(&data)));
            rounds += 1;
        }
        println!(
            "rdma-bench: CRC32-C of 1 MiB on this CPU     {:8.2} MB/s (the verify step's ceiling)",
            f64::from(rounds) / started.elapsed().as_secs_f64()
        );
        Ok::<(), BoxError>(())
    })?;

    // The same engine-level latency on a current-thread runtime (async-rdma's completion
    // task then shares the reader's thread).
    let current = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    current.block_on(async {
        let (qp, segment) = raw_session(grpc, engine.as_ref(), &large[0]).await?;
        let lat = timed_reads(budget, 20_000, || qp.read(segment.addr, segment.rkey, 4096)).await?;
        println!(
            "rdma-bench: 4 KiB READ, engine, current-thread runtime  p50 {:8.2} us  p99 {:8.2} us  p50 {}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            ratio(percentile(&lat, 0.5), o.ib_read_lat_us, "ib_read_lat typical")
        );
        Ok::<(), BoxError>(())
    })?;
    Ok(figures)
}

fn tempfile_dir() -> std::io::Result<PathBuf> {
    let dir = PathBuf::from(format!("/dev/shm/rdma-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Opens a session by hand and returns the connected queue pair and the first segment
/// of `fid`'s record.
async fn raw_session(
    grpc: &str,
    engine: &dyn ReadEngine,
    fid: &FileId,
) -> Result<(Box<dyn EngineQp>, proto::Segment), BoxError> {
    let mut control = RdmaControlClient::connect(format!("http://{grpc}")).await?;
    let mut qp = engine.create_qp()?;
    let reply = control
        .open_session(proto::OpenSessionRequest { client: Some(qp.endpoint().into()), ..Default::default() })
        .await?
        .into_inner();
    let server = QpEndpoint::try_from(reply.server.as_ref().ok_or("no server endpoint")?)?;
    qp.connect(&server)?;
    let located = control
        .locate(proto::LocateRequest { session_id: reply.session_id, fids: vec![fid.to_string()] })
        .await?
        .into_inner();
    let result = located.results.into_iter().next().ok_or("no Locate result")?;
    if result.status() != LocateStatus::Found {
        return Err(format!("Locate: {:?} {}", result.status(), result.message).into());
    }
    let segment = result.segments.into_iter().max_by_key(|s| s.len).ok_or("no segment")?;
    Ok((qp, segment))
}

/// Sequential reads for `budget` (at most `max`), after a warm-up; sorted latencies.
async fn timed_reads<F, Fut, E>(budget: Duration, max: usize, mut read: F) -> Result<Vec<Duration>, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, E>>,
{
    for _ in 0..50 {
        read().await?;
    }
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed() < budget && latencies.len() < max {
        let t = Instant::now();
        read().await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    Ok(latencies)
}

/// MB/s of `len`-byte reads with `depth` outstanding for `budget`.
async fn throughput<F, Fut>(
    budget: Duration,
    depth: usize,
    len: u32,
    read: F,
) -> Result<f64, rdma_transport::RdmaError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, rdma_transport::RdmaError>>,
{
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let started = Instant::now();
    let mut done = 0u64;
    for _ in 0..depth {
        in_flight.push(read());
    }
    while let Some(result) = futures_util::StreamExt::next(&mut in_flight).await {
        result?;
        done += 1;
        if started.elapsed() < budget {
            in_flight.push(read());
        }
    }
    Ok(done as f64 * f64::from(len) / MIB / started.elapsed().as_secs_f64())
}

/// `--rounds`: perftest and each engine's like-for-like figures alternately in this boot,
/// the ratio of each round (against the perftest run just before) and their median.
fn side_by_side(o: &Options, grpc: &str, engines: &[EngineWithDepth], fid: &FileId) -> Result<(), BoxError> {
    use testbeds::softroce::perftest::{Figures, PerftestCase};
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let budget = Duration::from_secs_f64(o.seconds);
    println!(
        "rdma-bench: {} rounds of perftest then each engine ({} s per engine figure): ratio to the round's perftest",
        o.rounds, o.seconds
    );
    // Per engine: the rounds' 4 KiB p50 and 1 MiB throughput ratios.
    let mut ratios = vec![(Vec::new(), Vec::new()); engines.len()];
    // Each perftest run sized to about `--seconds` from the baseline's figures when they
    // were given (a slow guest gets fewer iterations, not a longer run).
    let mut latency = PerftestCase::read_latency(4096);
    let mut bandwidth = PerftestCase::read_bandwidth(1 << 20);
    if let Some(us) = o.ib_read_lat_us.filter(|us| *us > 0.0) {
        latency.iterations = (o.seconds * 1e6 / us).clamp(100.0, 20_000.0) as u32;
    }
    if let Some(mbs) = o.ib_read_bw_mbs.filter(|mbs| *mbs > 0.0) {
        bandwidth.iterations = (o.seconds * mbs).clamp(10.0, 200.0) as u32;
    }
    for round in 1..=o.rounds {
        let Figures::Latency { typical: lat_us, .. } = harness::perftest(&o.device, &latency)? else {
            return Err("ib_read_lat gave no latency figures".into());
        };
        let Figures::Bandwidth { average_mb_s: bw_mbs, .. } = harness::perftest(&o.device, &bandwidth)?
        else {
            return Err("ib_read_bw gave no bandwidth figures".into());
        };
        for ((engine, depth), (lat_ratios, bw_ratios)) in engines.iter().zip(&mut ratios) {
            let (p50, mbs) = runtime.block_on(async {
                let (qp, segment) = raw_session(grpc, engine.as_ref(), fid).await?;
                let lat = timed_reads(budget, 20_000, || qp.read(segment.addr, segment.rkey, 4096)).await?;
                let len = segment.len.min(1 << 20);
                let mbs =
                    throughput(budget, *depth, len, || qp.read(segment.addr, segment.rkey, len)).await?;
                Ok::<_, BoxError>((percentile(&lat, 0.5), mbs))
            })?;
            lat_ratios.push(p50 / lat_us);
            bw_ratios.push(mbs / bw_mbs);
            println!(
                "rdma-bench: round {round} {:<10}  4 KiB p50 {p50:7.2} us / ib_read_lat {lat_us:7.2} us = {:.2}x   \
                 1 MiB {mbs:6.2} MB/s / ib_read_bw {bw_mbs:6.2} MB/s = {:.2}x",
                engine.name(),
                p50 / lat_us,
                mbs / bw_mbs
            );
        }
    }
    for ((engine, _), (lat_ratios, bw_ratios)) in engines.iter().zip(&ratios) {
        println!(
            "rdma-bench: median of {} rounds, {:<10}  4 KiB p50 {:.2}x ib_read_lat   1 MiB {:.2}x ib_read_bw   \
             (per round: {} | {})",
            o.rounds,
            engine.name(),
            median(lat_ratios),
            median(bw_ratios),
            listed(lat_ratios),
            listed(bw_ratios)
        );
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn listed(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(" ")
}
