//! A real `weed filer` (4.48) in a [`WeedMaster`]'s cluster, and the ways tests write
//! files through it: its HTTP API, and `weed filer.copy`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::process::{Error, ServerProcess, http_ok, on_free_port};
use crate::weed::{HttpError, WeedMaster, weed_binary};

/// `weed filer` on 127.0.0.1, HTTP on `port`, gRPC on `port + 10000`, its store (weed's
/// embedded leveldb) in one directory.
#[derive(Debug)]
pub struct WeedFiler {
    process: ServerProcess,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
    config_dir: Option<PathBuf>,
}

impl WeedFiler {
    /// Starts a filer of `master`'s cluster keeping its store in `dir` (created), with
    /// more flags in `extra` (e.g. `-maxMB=1`, `-saveToFilerLimit=1024`,
    /// `-encryptVolumeData`; a flag given again overrides the default one), and waits
    /// until its HTTP API answers.
    pub fn start(dir: &Path, master: &WeedMaster, extra: &[&str]) -> Result<Self, Error> {
        Self::start_in(dir, master, None, extra)
    }

    /// [`WeedFiler::start`] running in `config_dir`, so it reads the `security.toml`
    /// there (e.g. gRPC mutual TLS).
    pub fn start_in(
        dir: &Path,
        master: &WeedMaster,
        config_dir: Option<&Path>,
        extra: &[&str],
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_owned(), source })?;
        on_free_port(|port| {
            let mut args = vec![
                "filer".to_owned(),
                format!("-port={port}"),
                "-ip=127.0.0.1".to_owned(),
                "-ip.bind=127.0.0.1".to_owned(),
                format!("-master={}", master.addr()),
                format!("-defaultStoreDir={}", dir.display()),
                // Its unix socket defaults to /tmp/seaweedfs-filer-PORT.sock; keep it ours.
                format!("-localSocket={}", dir.join("filer.sock").display()),
            ];
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            let log = dir.with_extension(format!("filer-{port}.log"));
            let process = Self::spawn(port, &args, &log, config_dir)?;
            Ok(Self { process, port, args, log, config_dir: config_dir.map(Path::to_owned) })
        })
    }

    fn spawn(port: u16, args: &[String], log: &Path, cwd: Option<&Path>) -> Result<ServerProcess, Error> {
        let mut process = ServerProcess::spawn_in(&weed_binary()?, "weed filer", args, log.to_owned(), cwd)?;
        process
            .wait_ready(&[port, port + 10000], || http_ok(&format!("http://127.0.0.1:{port}/")).is_some())?;
        Ok(process)
    }

    /// Stops the filer and starts it again on the same ports and store, as an operator
    /// restarting it would.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.halt();
        self.resume()
    }

    /// Stops the filer (gracefully) for now: [`WeedFiler::resume`] starts it again.
    pub fn halt(&mut self) {
        self.process.stop();
    }

    /// Starts a halted filer again on the same ports and store.
    pub fn resume(&mut self) -> Result<(), Error> {
        self.process = Self::spawn(self.port, &self.args, &self.log, self.config_dir.as_deref())?;
        Ok(())
    }

    /// `127.0.0.1:PORT` (its HTTP port; the form weed's tools and the SDK take).
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// CPU time the filer process has used so far.
    pub fn cpu_time(&self) -> Option<crate::process::CpuTime> {
        self.process.cpu_time()
    }

    /// A graceful stop (SIGTERM).
    pub fn stop(mut self) {
        self.process.stop();
    }

    /// Writes `data` to `path` through the filer's HTTP API (`PUT path?query`, the body
    /// as the file; e.g. `maxMB=1` for 1 MiB chunks, `offset=N` to write over part of an
    /// existing file, `collection=c` to pick the volumes) with this `Content-Type`.
    pub fn put(&self, path: &str, query: &str, data: &[u8], content_type: &str) -> Result<(), HttpError> {
        let response = ureq::put(&format!("{}{path}?{query}", self.url()))
            .timeout(Duration::from_secs(120))
            .set("Content-Type", content_type)
            .send_bytes(data)
            .map_err(Box::new)?;
        match response.status() {
            200..=299 => Ok(()),
            status => Err(format!("PUT {path}?{query}: {status} {}", response.into_string()?).into()),
        }
    }

    /// The file at `path` as the filer's own HTTP GET serves it.
    pub fn get(&self, path: &str) -> Result<Vec<u8>, HttpError> {
        let response =
            ureq::get(&format!("{}{path}", self.url())).timeout(Duration::from_secs(120)).call()?;
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut response.into_reader(), &mut body)?;
        Ok(body)
    }

    /// `weed filer.copy FILES... http://filer/DIR/` with more flags in `extra` (e.g.
    /// `-maxMB=1`, `-collection=c`), run in `config_dir` when given; bounded to 5
    /// minutes. Its output, or an error with it.
    pub fn copy(
        &self,
        files: &[&Path],
        dir: &str,
        extra: &[&str],
        config_dir: Option<&Path>,
    ) -> Result<String, Error> {
        let mut args: Vec<String> = vec!["filer.copy".to_owned()];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(files.iter().map(|f| f.display().to_string()));
        args.push(format!("{}{}/", self.url(), dir.trim_end_matches('/')));
        run_tool(&args, config_dir, Duration::from_secs(300))
    }
}

/// Runs `weed ARGS...` (a tool that exits: `filer.copy`, `shell`, `upload`) in `cwd`,
/// killing it after `limit`. Its stdout and stderr, or [`Error::Exited`] with them.
pub fn run_tool(args: &[String], cwd: Option<&Path>, limit: Duration) -> Result<String, Error> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let out = std::env::temp_dir().join(format!("weed-tool-{}-{run}.log", std::process::id()));
    let io = |source| Error::Io { path: out.clone(), source };
    let file = std::fs::File::create(&out).map_err(io)?;
    let mut command = Command::new(weed_binary()?);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let what = format!("weed {}", args.join(" "));
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().map_err(io)?)
        .stderr(file)
        .spawn()
        .map_err(|source| Error::Spawn { what: what.clone(), source })?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io)? {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    match status {
        Some(status) if status.success() => Ok(output),
        Some(status) => Err(Error::Failed { what, status, output }),
        None => Err(Error::Unfinished { what, limit, output }),
    }
}
