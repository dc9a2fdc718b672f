//! Load generator for SeaweedFS volume servers: small writes then reads at a fixed
//! size, count and concurrency, printing req/s, p50 and p99.
//!
//! ```text
//! volume-load run --master http://127.0.0.1:9333 [--size 1024] [--count 20000] [--concurrency 16]
//! volume-load compare [--sizes 1024,65536] [--count 20000] [--concurrency 16] [--ours-bin PATH]
//!                     [--server-cpus 1]
//! volume-load weed-benchmark [--sizes 1024] [--count 20000] [--concurrency 16] [--rounds 1]
//!                            [--ours-bin PATH] [--ours-args "--workers 2"] [--server-cpus 1]
//! volume-load maps [--sizes 1024,65536] [--count 20000] [--concurrency 16] [--rounds 3]
//!                  [--ours-bin PATH] [--server-cpus 1]
//! ```
//!
//! `run` targets any server: fids come from the master API at `--master` (a real
//! `weed master` or our server's embedded one); uploads and reads go to the volume
//! server each assignment names. Fids are assigned before the clock starts, so only
//! the volume server is measured. `compare` starts a `weed master` + `weed volume`
//! and our `volume-server` in scratch directories, runs the same load against both
//! in the same process, and prints the ratios. `maps` compares our server with
//! itself: `--index memory` against `--index rocksdb`, writes only, in interleaved
//! rounds, with writes/s, p50, p99 and the server's CPU per write (a steadier figure
//! than writes/s on a shared machine), and the rocksdb/memory ratios.
//!
//! `weed-benchmark` measures with weed's own client instead: two clusters, each a
//! `weed master` with one volume server (ours joined with `--mserver`, or `weed
//! volume`), and `weed benchmark -n COUNT -c CONCURRENCY -size SIZE` against each in
//! turn (`-writeOnly`, then `-readOnly` of the files written). Its write phase
//! includes the gRPC assign to the master per file, as weed's users see it. It
//! prints weed benchmark's own req/s, p50 and p99, the CPU time per request of the
//! volume server (and how much of it is kernel time) and of the master (from `/proc`)
//! and of `weed benchmark` itself (its rusage), and the ours/weed ratios. When the machine is CPU-bound (2 cores running
//! client, master and server), req/s follows the total CPU per request, so it also
//! prints the ceiling: the ratio ours would reach if our server cost no CPU at all.
//!
//! The client is a minimal keep-alive HTTP/1.1 client (one connection per worker):
//! both servers see the same requests, byte for byte.
//!
//! `--server-cpus 1` runs both volume servers on CPU 1 and everything else (this load
//! generator, the masters, `weed benchmark`) on the other CPUs. On a 2-core machine the
//! load generator otherwise competes with the server it measures, so the ratio says as
//! much about how much CPU a server leaves to its client as about how fast it serves;
//! with the split, each server has the same dedicated core, as in a deployment. Go reads
//! the affinity mask at start, so `weed volume` runs with GOMAXPROCS = that many CPUs, as
//! ours runs with that many workers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use benches::figures::{Figure, FigureSet};
use testbeds::ours::OurVolumeServer;
use testbeds::process::CpuTime;
use testbeds::weed::{WeedMaster, WeedVolume};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Options {
    sizes: Vec<usize>,
    count: usize,
    concurrency: usize,
    master: String,
    ours_bin: Option<PathBuf>,
    /// Whether `--size(s)` was given (`weed-benchmark` defaults to 1 KiB only).
    sizes_given: bool,
    /// `--rounds`: `weed-benchmark` runs per cluster (default 1), `maps` rounds per
    /// server (default 3); the medians are compared.
    rounds: Option<usize>,
    /// Extra flags for our server in `weed-benchmark` (e.g. `--workers 2`).
    ours_args: Vec<String>,
    /// CPUs reserved for the volume servers (`--server-cpus`), if any.
    server_cpus: Option<Vec<usize>>,
}

fn usage() -> ! {
    eprintln!(
        "usage:\n  volume-load run --master URL [--size N] [--count N] [--concurrency N]\n  volume-load compare [--sizes N,N] [--count N] [--concurrency N] [--ours-bin PATH] [--server-cpus N,N]\n  volume-load weed-benchmark [--sizes N] [--count N] [--concurrency N] [--rounds N] [--ours-bin PATH] [--ours-args ARGS] [--server-cpus N,N]\n  volume-load maps [--sizes N,N] [--count N] [--concurrency N] [--rounds N] [--ours-bin PATH] [--server-cpus N,N]"
    );
    std::process::exit(2)
}

fn parse_args() -> (String, Options) {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| usage());
    let mut o = Options {
        sizes: vec![1024, 65536],
        count: 20_000,
        concurrency: 16,
        master: String::new(),
        ours_bin: None,
        sizes_given: false,
        rounds: None,
        ours_args: Vec::new(),
        server_cpus: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        let number = |v: &str| v.parse::<usize>().unwrap_or_else(|_| usage());
        match flag.as_str() {
            "--size" | "--sizes" => {
                o.sizes = value.split(',').map(number).collect();
                o.sizes_given = true;
            }
            "--count" => o.count = number(&value),
            "--concurrency" => o.concurrency = number(&value).max(1),
            "--rounds" => o.rounds = Some(number(&value).max(1)),
            "--ours-args" => o.ours_args = value.split_whitespace().map(str::to_owned).collect(),
            "--master" => o.master = value.trim_start_matches("http://").trim_end_matches('/').to_owned(),
            "--ours-bin" => o.ours_bin = Some(PathBuf::from(value)),
            "--server-cpus" => o.server_cpus = Some(value.split(',').map(number).collect()),
            _ => usage(),
        }
    }
    (mode, o)
}

/// One keep-alive connection.
struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: &str) -> Result<Self, Error> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self { addr: addr.to_owned(), reader: BufReader::new(stream) })
    }

    /// Sends a request and returns (status, body). Replies must carry Content-Length.
    fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), Error> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{headers}Content-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
        let mut length = None;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((k, v)) = trimmed.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                }
            }
        }
        let no_body = status == 204 || status == 304 || method == "HEAD";
        let mut body = vec![0; if no_body { 0 } else { length.ok_or("reply without Content-Length")? }];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}

/// Figures of one phase.
struct Phase {
    requests: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `work(i)` for i in 0..count on `concurrency` threads, timing each call.
fn phase(
    count: usize,
    concurrency: usize,
    work: impl Fn(&mut Vec<Conn>, usize) -> Result<(), Error> + Sync,
) -> Result<Phase, Error> {
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let results: Vec<Result<Vec<Duration>, Error>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency)
            .map(|_| {
                s.spawn(|| {
                    let mut conns = Vec::new();
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return Ok(latencies);
                        }
                        let t = Instant::now();
                        work(&mut conns, i)?;
                        latencies.push(t.elapsed());
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("worker panicked".into()))).collect()
    });
    let elapsed = started.elapsed();
    let mut all = Vec::with_capacity(count);
    for r in results {
        all.extend(r?);
    }
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Phase { requests: all.len(), elapsed, p50: pick(0.50), p99: pick(0.99) })
}

/// The connection to `addr` in a worker's small pool.
fn conn<'a>(conns: &'a mut Vec<Conn>, addr: &str) -> Result<&'a mut Conn, Error> {
    match conns.iter().position(|c| c.addr == addr) {
        Some(i) => Ok(&mut conns[i]),
        None => {
            conns.push(Conn::open(addr)?);
            Ok(conns.last_mut().expect("just pushed"))
        }
    }
}

/// Fids per assign: `fid`, `fid_1`, … Batches keep the untimed setup short.
const BATCH: usize = 64;

/// Assigns `count` fids for files of `size` bytes, untimed, in batches spread over
/// the servers' volumes. weed's master reserves volume space for each assigned file
/// (a default far above small files unless `dataSize` says otherwise).
fn assign_all(master: &str, count: usize, size: usize) -> Result<Vec<(String, String)>, Error> {
    let mut conn = Conn::open(master)?;
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let batch = BATCH.min(count - out.len());
        let (status, body) =
            conn.call("GET", &format!("/dir/assign?count={batch}&dataSize={size}"), "", b"")?;
        let text = String::from_utf8_lossy(&body);
        if status != 200 {
            return Err(format!("assign: {status} {text}").into());
        }
        let field = |name: &str| -> Option<String> {
            let start = text.find(&format!("\"{name}\":\""))? + name.len() + 4;
            Some(text[start..].split('"').next()?.to_owned())
        };
        out.push((
            field("fid").ok_or("assign reply without fid")?,
            field("url").ok_or("assign reply without url")?,
        ));
    }
    Ok(out)
}

/// Writes then reads `count` files of `size` bytes; returns (writes, reads).
fn load(master: &str, size: usize, count: usize, concurrency: usize) -> Result<(Phase, Phase), Error> {
    let fids = assign_all(master, count, size)?;
    let writes = upload_all(&fids, size, concurrency)?;
    let reads = phase(count, concurrency, |conns, i| {
        let (fid, url) = &fids[(i * 7919) % fids.len()];
        let (status, reply) = conn(conns, url)?.call("GET", &format!("/{fid}"), "", b"")?;
        if status != 200 || reply.len() != size {
            return Err(format!("read {fid}: {status}, {} bytes", reply.len()).into());
        }
        Ok(())
    })?;
    Ok((writes, reads))
}

/// The timed write phase: one multipart POST of `size` bytes to each of `fids`.
fn upload_all(fids: &[(String, String)], size: usize, concurrency: usize) -> Result<Phase, Error> {
    // Incompressible, like weed benchmark's payload.
    let data = testbeds::pseudo_random(size, size as u64);
    let boundary = "volumeLoadBoundary7MA4YWxkTrZu0gW";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let headers = format!("Content-Type: multipart/form-data; boundary={boundary}\r\n");
    phase(fids.len(), concurrency, |conns, i| {
        let (fid, url) = &fids[i];
        let (status, reply) = conn(conns, url)?.call("POST", &format!("/{fid}"), &headers, &body)?;
        if status != 201 {
            return Err(format!("upload {fid}: {status} {}", String::from_utf8_lossy(&reply)).into());
        }
        Ok(())
    })
}

fn print_row(target: &str, size: usize, op: &str, p: &Phase) {
    println!(
        "{target:<5} {:>6} {op:<5} {:>10.0} {:>10.0} {:>10.0}",
        human(size),
        p.rate(),
        p.p50.as_secs_f64() * 1e6,
        p.p99.as_secs_f64() * 1e6
    );
}

fn human(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 { format!("{}KiB", size / 1024) } else { format!("{size}B") }
}

fn header() {
    println!("{:<5} {:>6} {:<5} {:>10} {:>10} {:>10}", "srv", "size", "op", "req/s", "p50 us", "p99 us");
}

/// Our server's binary: `--ours-bin`, else the `volume-server` next to this one.
fn ours_bin(o: &Options) -> Result<PathBuf, Error> {
    match &o.ours_bin {
        Some(b) => Ok(b.clone()),
        None => Ok(std::env::current_exe()?.with_file_name("volume-server")),
    }
}

fn compare(o: &Options) -> Result<(), Error> {
    let bin = ours_bin(o)?;
    let scratch = std::env::temp_dir().join(format!("volume-load-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let cpus = CpuSplit::new(o.server_cpus.as_deref())?;
    let master = WeedMaster::start(&scratch, 1024)?;
    let weed = cpus.on_server_cpus(|| WeedVolume::start(&scratch.join("weed"), &master))?;
    // Our server with its embedded master API.
    let ours =
        cpus.on_server_cpus(|| OurVolumeServer::start(&bin, &scratch.join("ours"), &["--max", "8"]))?;
    println!(
        "count {} per phase, concurrency {}, keep-alive connections, fids assigned untimed; {}",
        o.count,
        o.concurrency,
        cpus.describe()
    );
    header();
    let mut ratios = Vec::new();
    let method =
        format!("{} requests per phase, {} concurrent, keep-alive connections", o.count, o.concurrency);
    let mut saved = FigureSet::new("volume-load", method);
    for &size in &o.sizes {
        // Keep each run within a few hundred MiB of disk and of weed's volume limits.
        let count = o.count.min((256 << 20) / size.max(1)).max(1);
        let (ww, wr) = load(&master.addr(), size, count, o.concurrency)?;
        print_row("weed", size, "write", &ww);
        print_row("weed", size, "read", &wr);
        let (ow, or) = load(ours.addr(), size, count, o.concurrency)?;
        print_row("ours", size, "write", &ow);
        print_row("ours", size, "read", &or);
        for (server, op, phase) in
            [("weed", "write", &ww), ("weed", "read", &wr), ("ours", "write", &ow), ("ours", "read", &or)]
        {
            saved.figures.push(Figure {
                op: op.to_owned(),
                req_per_s: Some(phase.rate()),
                p50_us: Some(phase.p50.as_secs_f64() * 1e6),
                p99_us: Some(phase.p99.as_secs_f64() * 1e6),
                ..Figure::new(server, size as u64)
            });
        }
        ratios.push((size, "write", ow.rate() / ww.rate(), ow.p99.as_secs_f64() / ww.p99.as_secs_f64()));
        ratios.push((size, "read", or.rate() / wr.rate(), or.p99.as_secs_f64() / wr.p99.as_secs_f64()));
    }
    println!("\nours/weed      req/s ratio   p99 ratio (lower is better)");
    for (size, op, rate, p99) in ratios {
        println!("{:>6} {op:<5}  {rate:>10.2}x  {p99:>10.2}x", human(size));
    }
    if let Some(path) = saved.save_if_asked()? {
        println!("volume-load: figures saved in {}", path.display());
    }
    ours.stop();
    weed.stop();
    master.stop();
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn main() {
    let (mode, options) = parse_args();
    let result = match mode.as_str() {
        "run" if !options.master.is_empty() => (|| {
            header();
            for &size in &options.sizes {
                let (w, r) = load(&options.master, size, options.count, options.concurrency)?;
                print_row("-", size, "write", &w);
                print_row("-", size, "read", &r);
            }
            Ok(())
        })(),
        "compare" => compare(&options),
        "maps" => maps(&options),
        "weed-benchmark" => weed_benchmark(&options),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("volume-load: {e}");
        std::process::exit(1);
    }
}

/// One write phase against one server: its figures and the server's CPU per write.
struct MapRun {
    writes: Phase,
    /// Server CPU (user + system, every thread: RocksDB's flushes and compactions too)
    /// per write, in microseconds.
    cpu_us: f64,
}

/// `maps`: two of our servers, one per needle map, under the same write load in
/// interleaved rounds (the order alternates, so a neighbour's burst of load does not
/// always land on the same one); prints each phase and the rocksdb/memory ratios.
fn maps(o: &Options) -> Result<(), Error> {
    const KINDS: [&str; 2] = ["memory", "rocksdb"];
    let bin = ours_bin(o)?;
    let rounds = o.rounds.unwrap_or(3);
    let scratch = std::env::temp_dir().join(format!("volume-load-maps-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let cpus = CpuSplit::new(o.server_cpus.as_deref())?;
    let mut servers = Vec::new();
    for kind in KINDS {
        let dir = scratch.join(kind);
        let args = ["--max", "8", "--index", kind];
        servers.push(cpus.on_server_cpus(|| OurVolumeServer::start(&bin, &dir, &args))?);
    }
    println!(
        "our server with --index memory and --index rocksdb, {} interleaved rounds of {} writes, concurrency {}, \
         keep-alive connections, fids assigned untimed; {}; load average at start: {}",
        rounds,
        o.count,
        o.concurrency,
        cpus.describe(),
        load_average()
    );
    println!(
        "{:<8} {:>6} {:>5} {:>10} {:>10} {:>10} {:>14}",
        "index", "size", "round", "writes/s", "p50 us", "p99 us", "cpu/write us"
    );
    let mut summary = Vec::new();
    for &size in &o.sizes {
        let count = o.count.min((256 << 20) / size.max(1)).max(1);
        // Per round, rocksdb over memory: (writes/s, p99, cpu per write).
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut runs: [Option<MapRun>; 2] = [None, None];
            for i in order {
                let server = &servers[i];
                let fids = assign_all(server.addr(), count, size)?;
                let cpu = || server.cpu_time().ok_or("server CPU time unavailable");
                let before = cpu()?;
                let writes = upload_all(&fids, size, o.concurrency)?;
                let used = cpu()? - before;
                let cpu_us = used.total().as_secs_f64() * 1e6 / writes.requests as f64;
                println!(
                    "{:<8} {:>6} {round:>5} {:>10.0} {:>10.0} {:>10.0} {cpu_us:>14.1}",
                    KINDS[i],
                    human(size),
                    writes.rate(),
                    writes.p50.as_secs_f64() * 1e6,
                    writes.p99.as_secs_f64() * 1e6,
                );
                runs[i] = Some(MapRun { writes, cpu_us });
            }
            let [Some(memory), Some(rocks)] = runs else { unreachable!("both servers ran") };
            ratios.push((
                rocks.writes.rate() / memory.writes.rate(),
                rocks.writes.p99.as_secs_f64() / memory.writes.p99.as_secs_f64(),
                rocks.cpu_us / memory.cpu_us,
            ));
        }
        summary.push((size, ratios));
    }
    println!(
        "\nrocksdb/memory, per round and (last column) their median; load average now: {}",
        load_average()
    );
    for (size, ratios) in summary {
        for (name, pick) in [
            ("writes/s", (|r: &(f64, f64, f64)| r.0) as fn(&(f64, f64, f64)) -> f64),
            ("p99", |r| r.1),
            ("cpu/write", |r| r.2),
        ] {
            let values: Vec<f64> = ratios.iter().map(pick).collect();
            let rounds: Vec<String> = values.iter().map(|v| format!("{v:.2}x")).collect();
            println!("{:>6} {name:<10} {}   median {:.2}x", human(size), rounds.join(" "), median(values));
        }
    }
    for server in servers {
        server.stop();
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The median (upper middle for an even count) of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`): how busy the shared machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Figures `weed benchmark` printed for one phase, and the CPU the cluster's
/// processes spent on it.
struct WeedPhase {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    failed: u64,
    /// CPU microseconds per request of the volume server, the master and `weed benchmark`.
    server_cpu_us: f64,
    /// The part of `server_cpu_us` spent in the kernel (system time).
    server_kernel_us: f64,
    master_cpu_us: f64,
    client_cpu_us: f64,
}

/// Parses the "Requests per second", "Failed requests" and 50%/99% lines of the phase
/// whose banner contains `banner`.
fn weed_phase(output: &str, banner: &str) -> Result<WeedPhase, Error> {
    let start = output.find(banner).ok_or_else(|| format!("no {banner:?} phase in:\n{output}"))?;
    let text = &output[start + banner.len()..];
    let text = &text[..text.find("------------").unwrap_or(text.len())];
    let number = |prefix: &str| -> Result<f64, Error> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .ok_or_else(|| format!("no {prefix:?} line in:\n{text}"))?;
        let value = line[prefix.len()..].split_whitespace().next().unwrap_or("");
        Ok(value.parse::<f64>().map_err(|_| format!("bad number in {line:?}"))?)
    };
    // weed prints one line per latency bucket, for the highest percentage that falls in
    // it: a missing "99%" line means 99% is in the bucket of the next line printed.
    let percentiles: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (pct, rest) = l.trim().split_once('%')?;
            Some((pct.parse().ok()?, rest.split_whitespace().next()?.parse().ok()?))
        })
        .collect();
    let percentile = |target: f64| -> Result<f64, Error> {
        let found = percentiles.iter().find(|(pct, _)| *pct >= target).map(|(_, ms)| *ms);
        Ok(found.ok_or_else(|| format!("no percentile line at or above {target}% in:\n{text}"))?)
    };
    Ok(WeedPhase {
        rate: number("Requests per second:")?,
        p50_ms: percentile(50.0)?,
        p99_ms: percentile(99.0)?,
        failed: number("Failed requests:")? as u64,
        server_cpu_us: 0.0,
        server_kernel_us: 0.0,
        master_cpu_us: 0.0,
        client_cpu_us: 0.0,
    })
}

/// Per figure, the median over rounds of (write, read) phases.
fn medians(runs: Vec<(WeedPhase, WeedPhase)>) -> (WeedPhase, WeedPhase) {
    let of = |phases: Vec<&WeedPhase>| WeedPhase {
        rate: median(phases.iter().map(|p| p.rate).collect()),
        p50_ms: median(phases.iter().map(|p| p.p50_ms).collect()),
        p99_ms: median(phases.iter().map(|p| p.p99_ms).collect()),
        failed: phases.iter().map(|p| p.failed).sum(),
        server_cpu_us: median(phases.iter().map(|p| p.server_cpu_us).collect()),
        server_kernel_us: median(phases.iter().map(|p| p.server_kernel_us).collect()),
        master_cpu_us: median(phases.iter().map(|p| p.master_cpu_us).collect()),
        client_cpu_us: median(phases.iter().map(|p| p.client_cpu_us).collect()),
    };
    (of(runs.iter().map(|r| &r.0).collect()), of(runs.iter().map(|r| &r.1).collect()))
}

/// A cluster `weed benchmark` runs against: its master, and the CPU clocks of the
/// master and of its one volume server.
struct Cluster<'a> {
    master: &'a WeedMaster,
    server_cpu: &'a dyn Fn() -> Option<CpuTime>,
}

/// Runs one `weed benchmark` phase (`-writeOnly` or `-readOnly`, both with the same
/// `-list` of written fids) against `cluster`, measuring its processes' CPU.
fn run_weed_phase(
    cluster: &Cluster<'_>,
    size: usize,
    o: &Options,
    list: &std::path::Path,
    only: &str,
    banner: &str,
) -> Result<WeedPhase, Error> {
    let cpu = || -> Result<(CpuTime, CpuTime), Error> {
        let server = (cluster.server_cpu)().ok_or("volume server CPU time unavailable")?;
        let master = cluster.master.cpu_time().ok_or("master CPU time unavailable")?;
        Ok((server, master))
    };
    let (server_before, master_before) = cpu()?;
    let client_before = reaped_children_cpu();
    let output = std::process::Command::new("weed")
        .args([
            "benchmark".to_owned(),
            format!("-master={}", cluster.master.addr()),
            format!("-n={}", o.count),
            format!("-c={}", o.concurrency),
            format!("-size={size}"),
            format!("-list={}", list.display()),
            only.to_owned(),
        ])
        .stdin(std::process::Stdio::null())
        .output()?;
    let (server_after, master_after) = cpu()?;
    // `weed benchmark` is the only child reaped in between (servers and masters run on).
    let client = reaped_children_cpu() - client_before;
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("weed benchmark {only} failed ({}):\n{text}", output.status).into());
    }
    let per_request = |d: Duration| d.as_secs_f64() * 1e6 / o.count as f64;
    let server = server_after - server_before;
    Ok(WeedPhase {
        server_cpu_us: per_request(server.total()),
        server_kernel_us: per_request(server.system),
        master_cpu_us: per_request((master_after - master_before).total()),
        client_cpu_us: per_request(client),
        ..weed_phase(&text, banner)?
    })
}

/// User + system CPU of this process's terminated and reaped children.
fn reaped_children_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid `who` and a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// The write phase, then the read phase of the files it wrote.
fn run_weed_benchmark(
    cluster: &Cluster<'_>,
    size: usize,
    o: &Options,
    list: &std::path::Path,
) -> Result<(WeedPhase, WeedPhase), Error> {
    Ok((
        run_weed_phase(cluster, size, o, list, "-writeOnly", "Writing Benchmark")?,
        run_weed_phase(cluster, size, o, list, "-readOnly", "Randomly Reading Benchmark")?,
    ))
}

fn weed_benchmark(o: &Options) -> Result<(), Error> {
    let bin = ours_bin(o)?;
    let rounds = o.rounds.unwrap_or(1);
    let scratch = std::env::temp_dir().join(format!("volume-load-weed-{}", std::process::id()));
    std::fs::create_dir_all(scratch.join("a"))?;
    std::fs::create_dir_all(scratch.join("b"))?;
    let cpus = CpuSplit::new(o.server_cpus.as_deref())?;
    let ours_master = WeedMaster::start(&scratch.join("a"), 1024)?;
    let mserver = ours_master.addr();
    let mut ours_args = vec!["--mserver", &mserver, "--max", "20"];
    ours_args.extend(o.ours_args.iter().map(String::as_str));
    let ours = cpus.on_server_cpus(|| OurVolumeServer::start(&bin, &scratch.join("a/ours"), &ours_args))?;
    let weed_master = WeedMaster::start(&scratch.join("b"), 1024)?;
    let weed = cpus.on_server_cpus(|| WeedVolume::start(&scratch.join("b/weed"), &weed_master))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ours_master.knows_volume_server(ours.addr()) {
        if Instant::now() > deadline {
            return Err("the master did not list our server within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "weed benchmark -n {} -c {} per cluster (a weed master + one volume server each), same run; ours: {:?}; {}",
        o.count,
        o.concurrency,
        o.ours_args,
        cpus.describe()
    );
    println!(
        "{:<5} {:>6} {:<5} {:>10} {:>8} {:>8} {:>6} {:>14} {:>12} {:>14} {:>14}",
        "srv",
        "size",
        "op",
        "req/s",
        "p50 ms",
        "p99 ms",
        "failed",
        "server cpu/req",
        "(in kernel)",
        "master cpu/req",
        "client cpu/req"
    );
    let row = |who: &str, size: usize, op: &str, p: &WeedPhase| {
        println!(
            "{who:<5} {:>6} {op:<5} {:>10.0} {:>8.1} {:>8.1} {:>6} {:>12.0}us {:>10.0}us {:>12.0}us {:>12.0}us",
            human(size),
            p.rate,
            p.p50_ms,
            p.p99_ms,
            p.failed,
            p.server_cpu_us,
            p.server_kernel_us,
            p.master_cpu_us,
            p.client_cpu_us
        );
    };
    let ours_cpu = || ours.cpu_time();
    let weed_cpu = || weed.cpu_time();
    let ours_cluster = Cluster { master: &ours_master, server_cpu: &ours_cpu };
    let weed_cluster = Cluster { master: &weed_master, server_cpu: &weed_cpu };
    let sizes = if o.sizes_given { o.sizes.clone() } else { vec![1024] };
    let mut ratios = Vec::new();
    for &size in &sizes {
        // Rounds alternate which cluster goes first, so a neighbour's load burst does
        // not always land on the same one; the medians are compared.
        let (mut weed_runs, mut ours_runs) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            for ours_turn in [round % 2 == 1, round % 2 == 0] {
                let (who, cluster, list, runs) = if ours_turn {
                    ("ours", &ours_cluster, scratch.join("a/list"), &mut ours_runs)
                } else {
                    ("weed", &weed_cluster, scratch.join("b/list"), &mut weed_runs)
                };
                let (w, r) = run_weed_benchmark(cluster, size, o, &list)?;
                row(who, size, "write", &w);
                row(who, size, "read", &r);
                runs.push((w, r));
            }
        }
        let (ww, wr) = medians(weed_runs);
        let (ow, or) = medians(ours_runs);
        if rounds > 1 {
            println!("medians of {rounds} rounds:");
            row("weed", size, "write", &ww);
            row("weed", size, "read", &wr);
            row("ours", size, "write", &ow);
            row("ours", size, "read", &or);
        }
        for (op, ours, weed) in [("write", &ow, &ww), ("read", &or, &wr)] {
            ratios.push((
                size,
                op,
                ours.rate / weed.rate,
                ours.p50_ms / weed.p50_ms,
                ours.p99_ms / weed.p99_ms,
                ours.server_cpu_us / weed.server_cpu_us,
                cpu_bound_ceiling(ours, weed),
            ));
        }
    }
    println!(
        "\nours/weed      req/s ratio   p50 ratio   p99 ratio   server cpu/req ratio   req/s ceiling (server at 0 cpu)"
    );
    for (size, op, rate, p50, p99, cpu, ceiling) in ratios {
        println!(
            "{:>6} {op:<5}  {rate:>10.2}x  {p50:>9.2}x  {p99:>9.2}x  {cpu:>19.2}x  {ceiling:>29.2}x",
            human(size)
        );
    }
    ours.stop();
    weed.stop();
    ours_master.stop();
    weed_master.stop();
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// The req/s ratio ours would reach with a volume server that costs no CPU, when every
/// process shares the same cores and they are saturated (req/s = cores / total CPU per
/// request): weed's total over what the client and master spend with ours.
fn cpu_bound_ceiling(ours: &WeedPhase, weed: &WeedPhase) -> f64 {
    let weed_total = weed.client_cpu_us + weed.master_cpu_us + weed.server_cpu_us;
    weed_total / (ours.client_cpu_us + ours.master_cpu_us)
}

/// Which CPUs the volume servers get (`--server-cpus`) and which the rest gets. Servers
/// are spawned while this thread's affinity is the server set (a child inherits its
/// parent thread's mask at fork); this thread, the load threads it starts, the masters
/// and `weed benchmark` keep the rest.
struct CpuSplit {
    server: Option<Vec<usize>>,
    rest: Vec<usize>,
}

impl CpuSplit {
    fn new(server: Option<&[usize]>) -> Result<Self, Error> {
        let all = std::thread::available_parallelism()?.get();
        let Some(server) = server else {
            return Ok(CpuSplit { server: None, rest: (0..all).collect() });
        };
        if let Some(cpu) = server.iter().find(|&&c| c >= all) {
            return Err(format!("--server-cpus: CPU {cpu} does not exist (this machine has {all})").into());
        }
        let rest: Vec<usize> = (0..all).filter(|c| !server.contains(c)).collect();
        if rest.is_empty() {
            return Err("--server-cpus leaves no CPU for the load generator".into());
        }
        set_affinity(&rest)?;
        Ok(CpuSplit { server: Some(server.to_vec()), rest })
    }

    fn on_server_cpus<T, E: Into<Error>>(&self, spawn: impl FnOnce() -> Result<T, E>) -> Result<T, Error> {
        let Some(server) = &self.server else {
            return spawn().map_err(Into::into);
        };
        set_affinity(server)?;
        let spawned = spawn().map_err(Into::into);
        set_affinity(&self.rest)?;
        spawned
    }

    fn describe(&self) -> String {
        match &self.server {
            None => "servers and load share every CPU".to_owned(),
            Some(server) => format!("volume servers on CPUs {server:?}, load and masters on {:?}", self.rest),
        }
    }
}

/// Pins the calling thread (and what it spawns from now on) to `cpus`.
fn set_affinity(cpus: &[usize]) -> Result<(), Error> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` is below available_parallelism, far below CPU_SETSIZE (1024).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; the set is initialised and sized correctly.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!("sched_setaffinity({cpus:?}): {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read phase as weed benchmark 4.48 printed it for 200 requests: buckets holding
    /// several percentages print only the highest, so there is no "99%" line.
    const READS_WITHOUT_A_99_LINE: &str = "------------ Randomly Reading Benchmark ----------
Concurrency Level:      4
Time taken for tests:   0.029 seconds
Completed requests:      200
Failed requests:        0
Requests per second:    6842.12 [#/sec]

Percentage of the requests served within a certain time (ms)
   50%      0.5 ms
   66%      0.8 ms
   95%      0.9 ms
   98%      1.1 ms
  100%      1.3 ms
";

    #[test]
    fn an_omitted_percentile_takes_the_next_printed_bucket() {
        let phase = weed_phase(READS_WITHOUT_A_99_LINE, "Randomly Reading Benchmark").unwrap();
        assert_eq!((phase.rate, phase.failed), (6842.12, 0));
        assert_eq!((phase.p50_ms, phase.p99_ms), (0.5, 1.3));
        let truncated = READS_WITHOUT_A_99_LINE.replace("  100%      1.3 ms\n", "");
        assert!(weed_phase(&truncated, "Randomly Reading Benchmark").is_err(), "no line at or above 99%");
    }
}
