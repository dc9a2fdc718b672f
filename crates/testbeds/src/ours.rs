//! Our `volume-server` binary as a child process, for tests and load runs that need the
//! real server (its CLI, its crash behaviour) rather than the library.

use crate::process::{Error, ServerProcess, http_ok, on_free_port};
use std::path::{Path, PathBuf};

/// Our `volume-server` binary as cargo builds it for the running test: in the profile
/// directory (`<target>/debug/`) above the test executable's `deps/`, where `cargo test`
/// puts the workspace's binaries. Panics, saying how to build it, when it is not there.
pub fn volume_server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let bin = exe.parent().and_then(Path::parent).expect("<target>/debug").join("volume-server");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build -p volume-server` (`cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// A running `volume-server`, standalone (embedded master API) unless `extra` says
/// `--mserver`, with its HTTP port `P` and its gRPC port `P + 10000` (the default: tests
/// do not pass `--grpc-port`, so both ports are the start's own choice).
#[derive(Debug)]
pub struct OurVolumeServer {
    process: ServerProcess,
    bin: PathBuf,
    /// `IP:PORT` of the HTTP listener.
    addr: String,
    ip: String,
    port: u16,
    args: Vec<String>,
    log: PathBuf,
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
        on_free_port(|port| {
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
            let process = Self::launch(bin, ip, port, &args, &log)?;
            let addr = format!("{ip}:{port}");
            Ok(Self { process, bin: bin.to_owned(), addr, ip: ip.to_owned(), port, args, log })
        })
    }

    fn launch(bin: &Path, ip: &str, port: u16, args: &[String], log: &Path) -> Result<ServerProcess, Error> {
        let mut process = ServerProcess::spawn(bin, "volume-server", args, log.to_owned())?;
        let health = format!("http://{ip}:{port}/healthz");
        process.wait_ready(&[port, port + 10000], || http_ok(&health).is_some())?;
        Ok(process)
    }

    /// A graceful stop, then the same command again: same ports, data and flags (the
    /// log starts over). For a crash, [`OurVolumeServer::crash`].
    pub fn restart(&mut self) -> Result<(), Error> {
        self.process.stop();
        self.start_again()
    }

    /// SIGKILL (sessions, queue pairs and registrations vanish with the process), waiting
    /// until the process is gone; [`OurVolumeServer::start_again`] brings it back.
    pub fn crash(&mut self) {
        self.process.kill();
    }

    /// The same command again (same ports, data and flags; the log starts over) after a
    /// [`OurVolumeServer::crash`].
    pub fn start_again(&mut self) -> Result<(), Error> {
        self.process = Self::launch(&self.bin, &self.ip, self.port, &self.args, &self.log)?;
        Ok(())
    }

    /// `IP:PORT` (127.0.0.1 unless started with [`OurVolumeServer::start_on`]).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `IP:PORT` of the gRPC listener (weed's VolumeServer service and the RDMA control
    /// plane).
    pub fn grpc_addr(&self) -> String {
        format!("{}:{}", self.ip, self.port + 10000)
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
