//! A real SeaweedFS (`weed` 4.48 from PyPI, the 5-byte-offset build) on loopback.
//!
//! Interop tests start a [`WeedMaster`] and one or more [`WeedVolume`]s in a scratch
//! directory, talk to them over HTTP, and stop them before reading their files, so
//! everything they wrote has reached the files. Nothing here fakes `weed`: when the
//! binary is missing the caller gets [`Error::WeedMissing`], never a silent skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The `weed` version the interop tests are written against.
pub const WEED_VERSION: &str = "4.48";

pub use crate::process::Error;
use crate::process::{ServerProcess, free_port_pair, http_ok, on_free_port};

/// Names the `weed` executable to run instead of `weed` on `PATH`: the Soft-RoCE guest
/// stage sets it to the host's (see [`executable`]), as the guest's `PATH` has no `weed`.
pub const BINARY_ENV: &str = "WEED_BINARY";

/// Finds `weed` (`$WEED_BINARY`, else on `PATH`) and checks that it is the version the
/// tests expect.
pub fn weed_binary() -> Result<PathBuf, Error> {
    let weed = std::env::var_os(BINARY_ENV).map_or_else(|| PathBuf::from("weed"), PathBuf::from);
    let output = Command::new(&weed)
        .arg("version")
        .stderr(Stdio::null())
        .output()
        .map_err(|_| Error::WeedMissing { needed: WEED_VERSION })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !text.contains(WEED_VERSION) {
        return Err(Error::WrongVersion { found: text.trim().to_owned(), needed: WEED_VERSION });
    }
    Ok(weed)
}

/// The `weed` executable itself, for running it where `PATH` does not lead to it (the
/// guest): `$WEED_BINARY`, else `weed` on `PATH`, or, when that is a pyenv shim (a
/// script that finds the real one through pyenv's own state), what `pyenv which weed`
/// names.
pub fn executable() -> Option<PathBuf> {
    if let Some(weed) = std::env::var_os(BINARY_ENV) {
        return Some(PathBuf::from(weed));
    }
    let on_path = std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("weed"))
        .find(|p| p.is_file())?;
    let mut head = [0u8; 2];
    let is_script = std::fs::File::open(&on_path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok_and(|()| &head == b"#!");
    if !is_script {
        return Some(on_path);
    }
    let output = Command::new("pyenv").args(["which", "weed"]).stderr(Stdio::null()).output().ok()?;
    let real = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    (output.status.success() && real.is_file()).then_some(real)
}

/// `weed master` on 127.0.0.1, HTTP on `port`, gRPC on `port + 10000`.
#[derive(Debug)]
pub struct WeedMaster {
    process: ServerProcess,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    /// The working directory, whose `security.toml` weed reads; None: the caller's.
    config_dir: Option<PathBuf>,
}

impl WeedMaster {
    /// Starts a master keeping its metadata under `dir`, with a small volume size
    /// limit so tests see volumes fill up.
    pub fn start(dir: &Path, volume_size_limit_mb: u32) -> Result<Self, Error> {
        Self::start_in(dir, volume_size_limit_mb, None)
    }

    /// [`WeedMaster::start`] running in `config_dir`, so it reads the
    /// `security.toml` there (weed looks in `.` first): a master that signs tokens.
    pub fn start_in(dir: &Path, volume_size_limit_mb: u32, config_dir: Option<&Path>) -> Result<Self, Error> {
        Self::start_with(dir, volume_size_limit_mb, config_dir, &[])
    }

    /// [`WeedMaster::start_in`] with more flags, e.g. `-defaultReplication=001` (a flag
    /// given again overrides the default one).
    pub fn start_with(
        dir: &Path,
        volume_size_limit_mb: u32,
        config_dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self, Error> {
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        on_free_port(|port| {
            let (args, log) = Self::prepare(dir, "master", port, volume_size_limit_mb, &extra)?;
            let process = Self::spawn(port, &args, &log, config_dir)?;
            Ok(Self { process, port, args, log, config_dir: config_dir.map(Path::to_owned) })
        })
    }

    /// Starts `count` masters forming one raft cluster (`-peers`), the i-th keeping its
    /// metadata in `dir/master-i`. Their HTTP ports answer at once; a leader is
    /// elected a few seconds later (see [`WeedMaster::leader`]).
    ///
    /// The peers' ports are fixed before any starts: if one finds its port taken, all are
    /// stopped and the cluster starts again on other ports (as [`on_free_port`] does).
    pub fn start_cluster(dir: &Path, count: usize, volume_size_limit_mb: u32) -> Result<Vec<Self>, Error> {
        // on_free_port's port is the first master's; the others are found beside it.
        on_free_port(|first| {
            let mut ports = vec![first];
            while ports.len() < count {
                let port = free_port_pair()?;
                if !ports.contains(&port) {
                    ports.push(port);
                }
            }
            let peers = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
            let mut masters = Vec::new();
            for (i, &port) in ports.iter().enumerate() {
                let extra = [format!("-peers={peers}")];
                let (args, log) =
                    Self::prepare(dir, &format!("master-{i}"), port, volume_size_limit_mb, &extra)?;
                // All start before any is waited for: none answers until a quorum is up.
                let process = ServerProcess::spawn(&weed_binary()?, "weed master", &args, log.clone())?;
                masters.push(Self { process, port, args, log, config_dir: None });
            }
            // A failure drops `masters`, which kills every one of them.
            for master in &mut masters {
                let url = format!("{}/cluster/status", master.url());
                master.process.wait_ready(&[master.port, master.port + 10000], || http_ok(&url).is_some())?;
            }
            Ok(masters)
        })
    }

    /// The command line and log path of a master named `name` under `dir`.
    fn prepare(
        dir: &Path,
        name: &str,
        port: u16,
        limit_mb: u32,
        extra: &[String],
    ) -> Result<(Vec<String>, PathBuf), Error> {
        let meta = dir.join(name);
        std::fs::create_dir_all(&meta).map_err(|source| Error::Io { path: meta.clone(), source })?;
        let mut args = vec![
            "master".to_owned(),
            format!("-port={port}"),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-mdir={}", meta.display()),
            format!("-volumeSizeLimitMB={limit_mb}"),
            "-defaultReplication=000".to_owned(),
        ];
        args.extend_from_slice(extra);
        Ok((args, dir.join(format!("{name}.log"))))
    }

    /// The leader this master reports (`host:port.grpcPort`), once one is elected.
    pub fn leader(&self) -> Option<String> {
        let status: serde_json::Value =
            serde_json::from_str(&http_ok(&format!("{}/cluster/status", self.url()))?).ok()?;
        status["Leader"].as_str().filter(|l| !l.is_empty()).map(str::to_owned)
    }

    fn spawn(port: u16, args: &[String], log: &Path, cwd: Option<&Path>) -> Result<ServerProcess, Error> {
        let mut process = ServerProcess::spawn_in(&weed_binary()?, "weed master", args, log.to_owned(), cwd)?;
        process.wait_ready(&[port, port + 10000], || {
            http_ok(&format!("http://127.0.0.1:{port}/cluster/status")).is_some()
        })?;
        Ok(process)
    }

    /// Stops the master and starts it again on the same ports and metadata directory
    /// (its log restarts in `master.log`), as an operator restarting it would.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.process.stop();
        self.process = Self::spawn(self.port, &self.args, &self.log, self.config_dir.as_deref())?;
        Ok(())
    }

    /// `127.0.0.1:PORT`, the form `-mserver` and `-master` take.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Has the master grow one volume in data center `dc` (its AllocateVolume call to a
    /// server there), so that assigns with `dataCenter={dc}` (and `weed upload
    /// -dataCenter={dc}`) land there: placing files by data center is how a test with
    /// several servers decides which holds what, never the master's random choice. The
    /// explicit grow: weed master 4.48 answers "volume growth in progress" to assigns
    /// for a second data center without ever growing there.
    pub fn grow_in(&self, dc: &str) -> Result<(), HttpError> {
        let reply: serde_json::Value =
            ureq::get(&format!("{}/vol/grow?count=1&dataCenter={dc}", self.url())).call()?.into_json()?;
        match reply["count"].as_u64() {
            Some(1) => Ok(()),
            _ => Err(format!("growing a volume in {dc}: {reply}").into()),
        }
    }

    /// Whether the master's topology lists a volume server at `addr` (`ip:port`).
    pub fn knows_volume_server(&self, addr: &str) -> bool {
        http_ok(&format!("{}/dir/status", self.url()))
            .is_some_and(|topology| topology.contains(&format!("\"Url\":\"{addr}\"")))
    }

    /// CPU time the master process has used so far.
    pub fn cpu_time(&self) -> Option<crate::process::CpuTime> {
        self.process.cpu_time()
    }

    pub fn stop(mut self) {
        self.process.stop();
    }
}

/// `weed volume` on 127.0.0.1 storing its volumes in one directory.
#[derive(Debug)]
pub struct WeedVolume {
    process: ServerProcess,
    port: u16,
    dir: PathBuf,
}

impl WeedVolume {
    /// Starts a volume server over `dir` (created if missing) that joins `master`,
    /// and waits until the master lists it.
    pub fn start(dir: &Path, master: &WeedMaster) -> Result<Self, Error> {
        Self::start_in(dir, master, None)
    }

    /// [`WeedVolume::start`] running in `config_dir`, so it reads the `security.toml`
    /// there: a volume server that checks tokens.
    pub fn start_in(dir: &Path, master: &WeedMaster, config_dir: Option<&Path>) -> Result<Self, Error> {
        Self::spawn(dir, master, config_dir, &[])
    }

    /// [`WeedVolume::start`] with more flags, e.g. `-readMode=proxy` (a flag given
    /// again overrides the default one).
    pub fn start_with(dir: &Path, master: &WeedMaster, extra: &[&str]) -> Result<Self, Error> {
        Self::spawn(dir, master, None, extra)
    }

    /// [`WeedVolume::start_in`] with more flags, e.g. `-dataCenter=dc1`.
    pub fn start_in_with(
        dir: &Path,
        master: &WeedMaster,
        config_dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self, Error> {
        Self::spawn(dir, master, config_dir, extra)
    }

    fn spawn(
        dir: &Path,
        master: &WeedMaster,
        config_dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
        on_free_port(|port| Self::spawn_on(port, dir, master, config_dir, extra))
    }

    fn spawn_on(
        port: u16,
        dir: &Path,
        master: &WeedMaster,
        config_dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self, Error> {
        let mut args = vec![
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
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let log = dir.with_extension(format!("volume-{port}.log"));
        let mut process = ServerProcess::spawn_in(&weed_binary()?, "weed volume", &args, log, config_dir)?;
        let addr = format!("127.0.0.1:{port}");
        process.wait_ready(&[port, port + 10000], || master.knows_volume_server(&addr))?;
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

    /// CPU time the server process has used so far.
    pub fn cpu_time(&self) -> Option<crate::process::CpuTime> {
        self.process.cpu_time()
    }

    /// Stops the server gracefully so its `.dat`/`.idx` files are complete.
    pub fn stop(mut self) {
        self.process.stop();
    }
    /// SIGKILL: the server dies mid-whatever (a copy it is serving, say).
    pub fn kill(mut self) {
        self.process.kill();
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
