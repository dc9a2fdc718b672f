//! Our `volume-server` binary as a child process, for tests and load runs that need the
//! real server (its CLI, its crash behaviour) rather than the library.

use crate::process::{Error, ServerProcess, free_port_pair, http_ok};
use std::path::Path;

/// A running `volume-server` on 127.0.0.1, standalone (embedded master API) unless
/// `extra` says `--mserver`.
#[derive(Debug)]
pub struct OurVolumeServer {
    process: ServerProcess,
    addr: String,
}

impl OurVolumeServer {
    /// Starts `bin --dir DIR --ip 127.0.0.1 --port P [extra...]` on a free port, logging
    /// next to `dir`, and waits until `/healthz` answers.
    pub fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Self, Error> {
        Self::start_on(bin, dir, "127.0.0.1", extra)
    }

    /// [`OurVolumeServer::start`] listening on (and advertising) `ip` instead of
    /// 127.0.0.1: weed refuses to copy volumes from loopback addresses.
    pub fn start_on(bin: &Path, dir: &Path, ip: &str, extra: &[&str]) -> Result<Self, Error> {
        let port = free_port_pair()?;
        let mut args = vec![
            "--dir".to_owned(),
            dir.display().to_string(),
            "--ip".to_owned(),
            ip.to_owned(),
            "--port".to_owned(),
            port.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let log = dir.with_extension(format!("ours-{port}.log"));
        let mut process = ServerProcess::spawn(bin, "volume-server", &args, log)?;
        let addr = format!("{ip}:{port}");
        process.wait_ready(|| http_ok(&format!("http://{addr}/healthz")).is_some())?;
        Ok(Self { process, addr })
    }

    /// `IP:PORT` (127.0.0.1 unless started with [`OurVolumeServer::start_on`]).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// CPU time the server process has used so far.
    pub fn cpu_time(&self) -> Option<crate::process::CpuTime> {
        self.process.cpu_time()
    }

    /// A graceful stop (SIGTERM).
    pub fn stop(mut self) {
        self.process.stop();
    }

    /// A crash (SIGKILL).
    pub fn kill(mut self) {
        self.process.kill();
    }
}
