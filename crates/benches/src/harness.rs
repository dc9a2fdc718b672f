//! What the guest harnesses (`rdma-bench`, `sdk-rdma-vs-http`, `filer-rdma-vs-http`,
//! `cold-reads`) share around their own work: running it, the flags they read alike,
//! and perftest beside them.

use std::time::{Duration, Instant};

/// A harness's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Parses the options with `options` (a bad one: its message and exit status 2), then
/// runs `run` on a two-worker tokio runtime (a failure: its message and exit status 1).
/// Messages start with the harness's `name`.
pub fn main<O>(
    name: &str,
    options: impl FnOnce() -> Result<O, String>,
    run: impl AsyncFnOnce(&O) -> Result<(), BoxError>,
) {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let result = runtime.map_err(BoxError::from).and_then(|rt| rt.block_on(run(&options)));
    if let Err(e) = result {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

/// `--sizes 4096,65536`: positive byte counts, comma-separated.
pub fn sizes(value: &str) -> Option<Vec<usize>> {
    value.split(',').map(|s| s.parse().ok().filter(|n| *n > 0)).collect()
}

/// Runs one perftest case over `device` within this guest (server and client here, as
/// `testbeds` does) and parses the client's figures: the like-for-like baseline, taken
/// beside a measurement. Needs the guest's `SOFTROCE_IP` and `SOFTROCE_GID_INDEX`.
pub fn perftest(
    device: &str,
    case: &testbeds::softroce::perftest::PerftestCase,
) -> Result<testbeds::softroce::perftest::Figures, BoxError> {
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU16, Ordering};
    // A fresh port per run, and per process (the guest stage runs harnesses one after
    // another): a server still in TIME_WAIT never blocks the next.
    static RUNS: AtomicU16 = AtomicU16::new(0);
    let env = |name: &str| {
        std::env::var(name).map_err(|_| format!("perftest needs ${name} (the Soft-RoCE guest's)"))
    };
    let (ip, gid_index) = (env("SOFTROCE_IP")?, env("SOFTROCE_GID_INDEX")?);
    let port = 19515 + (std::process::id() % 500) as u16 * 16 + RUNS.fetch_add(1, Ordering::Relaxed) % 16;
    let program = case.kind.program();
    let args = [
        "-d".to_owned(),
        device.to_owned(),
        "-x".to_owned(),
        gid_index,
        "-s".to_owned(),
        case.size.to_string(),
        "-n".to_owned(),
        case.iterations.to_string(),
        "-p".to_owned(),
        port.to_string(),
    ];
    let mut server = Command::new(program)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    // The client fails at once if it connects before the server listens.
    let listening = format!(":{port:04X} 00000000:0000 0A");
    let limit = testbeds::softroce::slowness::scaled(Duration::from_secs(30));
    let deadline = Instant::now() + limit;
    while !std::fs::read_to_string("/proc/net/tcp")?.contains(&listening) {
        if Instant::now() > deadline || server.try_wait()?.is_some() {
            let _ = server.kill();
            let _ = server.wait();
            return Err(format!("{program} server did not listen on port {port}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let client = Command::new(program).args(&args).arg(&ip).stdin(Stdio::null()).output();
    // The server exits once its client is done; a failed client may leave it waiting.
    let deadline = Instant::now() + limit;
    while server.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = server.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = server.wait();
    let client = client.map_err(|e| format!("running the {program} client: {e}"))?;
    if !client.status.success() {
        return Err(format!(
            "{program} client exited {}: {}",
            client.status,
            String::from_utf8_lossy(&client.stderr)
        )
        .into());
    }
    Ok(testbeds::softroce::perftest::parse_figures(case, &String::from_utf8_lossy(&client.stdout))?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_positive_numbers() {
        assert_eq!(super::sizes("4096,65536"), Some(vec![4096, 65536]));
        assert_eq!(super::sizes("4096,0"), None);
        assert_eq!(super::sizes("4k"), None);
    }
}
