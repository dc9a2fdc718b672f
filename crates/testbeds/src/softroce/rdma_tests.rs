//! Finding the workspace's RDMA tests and running them in the guest: the guest stage of
//! `scripts/test-all` (`testbeds rdma-tests`).
//!
//! The convention (see the crate docs): an RDMA test is an ordinary `#[test]`, marked
//! `#[ignore = "needs an RDMA device: ..."]`, in an integration-test target whose name
//! starts with `rdma_` (`tests/rdma_*.rs`). Cargo builds the test executables on the host;
//! this module picks the `rdma_*` ones out of cargo's JSON messages, lists their ignored
//! tests (on the host: listing needs no device) and runs each executable in the guest
//! with `--ignored --test-threads 1`, so exactly the RDMA tests run there, one at a time.
//!
//! One boot: rxe0's state, the perftest baseline (which gives the boot's slowness,
//! [`super::slowness`], passed to every test and benchmark in `$SOFTROCE_SLOWNESS`),
//! each executable's tests under a time limit scaled to that slowness (each test timed
//! from libtest's live report; a hang is cut off and the test it was in named), then the
//! benchmarks. The stage has a budget
//! ([`StageClock`]): every step's limit is cut to what remains of it, so the stage ends
//! before any outer bound, with the wall time of each step and, if the budget ran out,
//! the step it ran out in.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::guest::{
    CommandOutput, Echo, Guest, GuestCommand, GuestConfig, GuestPair, Watch, hidden_in_guest,
};
use super::image::GuestImage;
use super::perftest::{self, PerftestCase, SELFCHECK_CASES};
use super::{Error, slowness, tail_lines};

/// Integration-test targets whose name starts with this hold RDMA tests.
pub const TARGET_PREFIX: &str = "rdma_";

/// How long one RDMA test may run on the reference guest (scaled by the boot's
/// slowness). Tests take seconds to a minute there: this only cuts off a hang.
const TEST_TIMEOUT: Duration = Duration::from_secs(150);

/// Where a benchmark saves its figures as JSON (read by `benches::figures`). The guest
/// cannot write to the host's root, so its benchmarks save into the run directory and
/// the stage copies the files to `<target>/bench-report`, for `bench-report` to draw.
pub const BENCH_FIGURES_ENV: &str = "BENCH_FIGURES_DIR";

/// How long each benchmark may run on the reference guest (scaled). Their figures take
/// fixed seconds; the rest (a server, uploads, perftest) follows the guest's speed.
const BENCH_TIMEOUT: Duration = Duration::from_secs(120);

/// How long rxe0's state may take to show.
const STATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The scratch ext4 disk attached for the tests (`$SOFTROCE_SCRATCH`).
const SCRATCH_DISK_MIB: u32 = 256;

/// What became of one step of the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Ok,
    Failed,
    /// Cut off at its own time limit.
    TimedOut,
    /// Cut off because the stage's budget ran out.
    OutOfBudget,
}

impl StepOutcome {
    fn label(self) -> &'static str {
        match self {
            StepOutcome::Ok => "ok",
            StepOutcome::Failed => "FAILED",
            StepOutcome::TimedOut => "TIMED OUT",
            StepOutcome::OutOfBudget => "OUT OF TIME",
        }
    }
}

/// One step's wall time and outcome.
#[derive(Debug, Clone)]
pub struct StepTime {
    pub name: String,
    pub elapsed: Duration,
    pub outcome: StepOutcome,
}

/// The stage's budget and the wall time of each of its steps.
#[derive(Debug)]
pub struct StageClock {
    started: Instant,
    budget: Duration,
    steps: Vec<StepTime>,
}

impl StageClock {
    /// A clock started now, for a stage that must end within `budget`.
    pub fn new(budget: Duration) -> Self {
        Self { started: Instant::now(), budget, steps: Vec::new() }
    }

    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// What is left of the budget.
    pub fn remaining(&self) -> Duration {
        self.budget.saturating_sub(self.started.elapsed())
    }

    /// `limit` cut to what remains of the budget, and whether it was cut.
    pub fn bound(&self, limit: Duration) -> (Duration, bool) {
        let remaining = self.remaining();
        if limit <= remaining { (limit, false) } else { (remaining, true) }
    }

    pub fn record(&mut self, name: impl Into<String>, elapsed: Duration, outcome: StepOutcome) {
        self.steps.push(StepTime { name: name.into(), elapsed, outcome });
    }

    /// Times `step` as `name`: its outcome is what it returns, or Failed on an error.
    pub fn time<T>(
        &mut self,
        name: &str,
        step: impl FnOnce() -> Result<(T, StepOutcome), Error>,
    ) -> Result<T, Error> {
        let started = Instant::now();
        let result = step();
        let outcome = result.as_ref().map_or(StepOutcome::Failed, |(_, outcome)| *outcome);
        self.record(name, started.elapsed(), outcome);
        result.map(|(value, _)| value)
    }

    /// Runs `command` in `guest` as step `name` within `limit` (cut to the budget).
    /// Ok with the output, also when the command failed (the outcome says so); the
    /// error of a command cut off (at its limit or the budget's) or a lost guest.
    pub fn run(
        &mut self,
        guest: &Guest,
        name: &str,
        command: GuestCommand,
        limit: Duration,
    ) -> Result<CommandOutput, Error> {
        let (limit, cut) = self.bound(limit);
        let started = Instant::now();
        let result = guest.run(&command.timeout(limit), Echo::Live);
        let outcome = match &result {
            Ok(output) if output.success() => StepOutcome::Ok,
            Ok(_) => StepOutcome::Failed,
            Err(Error::CommandTimedOut { .. }) if cut => StepOutcome::OutOfBudget,
            Err(Error::CommandTimedOut { .. }) => StepOutcome::TimedOut,
            Err(_) => StepOutcome::Failed,
        };
        self.record(name, started.elapsed(), outcome);
        result
    }

    /// The step the budget ran out in, if it did.
    pub fn ran_out_in(&self) -> Option<&StepTime> {
        self.steps.iter().find(|s| s.outcome == StepOutcome::OutOfBudget)
    }

    /// Every step with its wall time and outcome, and the total against the budget.
    pub fn render(&self) -> String {
        let mut table = String::new();
        for step in &self.steps {
            table.push_str(&format!(
                "{:>8.1} s  {:<11} {}\n",
                step.elapsed.as_secs_f64(),
                step.outcome.label(),
                step.name
            ));
        }
        table.push_str(&format!(
            "{:>8.1} s  in all (budget {} s)\n",
            self.started.elapsed().as_secs_f64(),
            self.budget.as_secs()
        ));
        table
    }
}

/// One `rdma_*` integration-test executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestExecutable {
    /// The target's name, e.g. `rdma_verbs_smoke`.
    pub target: String,
    pub path: PathBuf,
    /// The package's directory: cargo runs tests there, so the guest does too.
    pub manifest_dir: PathBuf,
}

impl TestExecutable {
    /// `crate-dir/target`, e.g. `testbeds/rdma_verbs_smoke`.
    pub fn label(&self) -> String {
        let package =
            self.manifest_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!("{package}/{}", self.target)
    }

    /// The names of its ignored tests (the RDMA ones), listed by running it on the host.
    pub fn ignored_tests(&self) -> Result<Vec<String>, Error> {
        let output = Command::new(&self.path)
            .args(["--list", "--ignored", "--format", "terse"])
            .current_dir(&self.manifest_dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Cargo(format!("listing the tests of {}: {e}", self.path.display())))?;
        if !output.status.success() {
            return Err(Error::Cargo(format!(
                "listing the tests of {} failed ({}): {}",
                self.path.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(parse_test_list(&String::from_utf8_lossy(&output.stdout)))
    }
}

/// The test names of libtest's `--list --format terse` output (`NAME: test` lines).
pub fn parse_test_list(output: &str) -> Vec<String> {
    output.lines().filter_map(|line| line.strip_suffix(": test")).map(str::to_owned).collect()
}

/// Picks the `rdma_*` integration-test executables out of `cargo --message-format=json`
/// output. Only `test`-kind targets count: a library named `rdma_transport` has a unit-test
/// executable too, and those tests run on the host.
pub fn discover(cargo_messages: &str) -> Result<Vec<TestExecutable>, Error> {
    let mut found = Vec::new();
    for line in cargo_messages.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).map_err(|e| Error::Cargo(format!("unreadable cargo message: {e}")))?;
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let target = &message["target"];
        let is_test_target = target["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        let name = target["name"].as_str().unwrap_or_default();
        if !is_test_target || !name.starts_with(TARGET_PREFIX) {
            continue;
        }
        let (Some(executable), Some(manifest)) =
            (message["executable"].as_str(), message["manifest_path"].as_str())
        else {
            return Err(Error::Cargo(format!("cargo reported test target {name} without an executable")));
        };
        let executable = TestExecutable {
            target: name.to_owned(),
            path: PathBuf::from(executable),
            manifest_dir: Path::new(manifest).parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        if !found.contains(&executable) {
            found.push(executable);
        }
    }
    found.sort_by_key(TestExecutable::label);
    Ok(found)
}

/// Builds every test executable of the workspace around the current directory (cargo's
/// progress goes to stderr as usual) and returns the RDMA ones. `features` is cargo's
/// `--features` list (empty for none): optional engines such as `rdma-transport/async-rdma`
/// have RDMA tests of their own, and the host tests should be built with the same features
/// so the guest stage reuses their build.
pub fn build_and_discover(features: &str) -> Result<Vec<TestExecutable>, Error> {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.args(["test", "--workspace", "--locked", "--no-run", "--message-format=json-render-diagnostics"]);
    if !features.is_empty() {
        cargo.args(["--features", features]);
    }
    let output =
        cargo.stderr(Stdio::inherit()).output().map_err(|e| Error::Cargo(format!("running cargo: {e}")))?;
    if !output.status.success() {
        return Err(Error::Cargo(format!(
            "`cargo test --workspace --no-run --features '{features}'` failed ({})",
            output.status
        )));
    }
    discover(&String::from_utf8_lossy(&output.stdout))
}

/// The counts on libtest's closing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LibtestCounts {
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
}

/// Reads `test result: ok. 3 passed; 0 failed; 0 ignored; ...` (the last such line).
pub fn parse_libtest_result(output: &str) -> Option<LibtestCounts> {
    let line = output.lines().rev().find_map(|l| l.trim().strip_prefix("test result: "))?;
    let (_verdict, counts) = line.split_once(". ")?;
    let count = |what: &str| -> Option<u32> {
        counts.split(';').find_map(|part| {
            let (number, word) = part.trim().split_once(' ')?;
            if word == what { number.parse().ok() } else { None }
        })
    };
    Some(LibtestCounts { passed: count("passed")?, failed: count("failed")?, ignored: count("ignored")? })
}

/// What a guest run of the RDMA tests found.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub passed: u32,
    /// Tests that failed, crashed, or were cut off at their time limit.
    pub failed: Vec<String>,
    /// Tests never started: the budget ran out, or their executable was cut off, first.
    pub not_run: u32,
}

/// One boot: shows rxe0's state, runs the perftest baseline, then each RDMA test of
/// `executables` (one process per executable), then the benchmarks, each step timed on
/// `clock` and cut to its budget. Boot, rxe0, perftest and "no RDMA test at all" failures are errors;
/// failing tests are counted in the summary.
pub fn run_in_guest(
    image: &GuestImage,
    config: &GuestConfig,
    executables: &[TestExecutable],
    clock: &mut StageClock,
    report: &mut dyn FnMut(&str),
) -> Result<Summary, Error> {
    if executables.is_empty() {
        return Err(Error::NoRdmaTests(format!(
            "no integration-test target named {TARGET_PREFIX}* in the workspace"
        )));
    }
    // Host binaries run in the guest at the same path, which the guest must see.
    if let Some((executable, mount)) =
        executables.iter().find_map(|e| hidden_in_guest(&e.path).map(|mount| (e, mount)))
    {
        return Err(Error::InvalidSetup(format!(
            "{} is under {mount}, which the guest mounts over: build with CARGO_TARGET_DIR elsewhere",
            executable.path.display()
        )));
    }
    let mut tests = Vec::new();
    for executable in executables {
        tests.push((executable, executable.ignored_tests()?));
    }
    let total: usize = tests.iter().map(|(_, names)| names.len()).sum();
    if total == 0 {
        return Err(Error::NoRdmaTests(format!(
            "{} {TARGET_PREFIX}* target(s) list no ignored test: are the RDMA tests #[ignore]d as the convention says?",
            executables.len()
        )));
    }
    let config = GuestConfig {
        scratch_disk_mib: Some(config.scratch_disk_mib.unwrap_or(SCRATCH_DISK_MIB)),
        boot_timeout: clock.bound(config.boot_timeout).0,
        lifetime: config.lifetime.max(clock.remaining() + Duration::from_secs(300)),
        ..config.clone()
    };
    let guest = clock.time("boot", || Ok((Guest::boot(image, &config)?, StepOutcome::Ok)))?;
    report(&format!("booted in {:.1} s (QEMU start to rxe0 ready)", guest.boot_time().as_secs_f64()));

    let state = clock.run(
        &guest,
        "rxe0 state",
        GuestCommand::shell("rdma link show; ibv_devinfo -d rxe0"),
        STATE_TIMEOUT,
    )?;
    if !state.success() || !state.stdout.contains("state ACTIVE") || !state.stdout.contains("PORT_ACTIVE") {
        return Err(Error::Rxe {
            guest: guest.name().to_owned(),
            reason: format!("rxe0 is not active:\n{}{}", state.stdout, state.stderr),
            console: guest.console_log().to_path_buf(),
            console_tail: guest.console_tail(),
        });
    }

    let baseline = clock.time("perftest baseline", || {
        Ok((perftest::run_cases(&guest, &guest, &SELFCHECK_CASES)?, StepOutcome::Ok))
    })?;
    let factor = perftest::slowness(&baseline).unwrap_or(1.0);
    report(&format!(
        "perftest over rxe0, same boot (the verbs-level limit to compare with):\n{}",
        perftest::render_table(&baseline).trim_end()
    ));
    report(&format!(
        "slowness of this boot: {factor:.2} (the larger of 4 KiB ib_read_lat typical over the \
         reference {} us and the reference {} MB/s over 1 MiB ib_read_bw average); every test \
         and benchmark gets it in ${}",
        slowness::REFERENCE_READ_LAT_US,
        slowness::REFERENCE_READ_BW_MB_S,
        slowness::ENV
    ));

    let mut summary = Summary::default();
    for (executable, names) in &tests {
        if clock.ran_out_in().is_some() {
            summary.not_run += names.len() as u32;
            continue;
        }
        run_executable(&guest, executable, names, factor, clock, report, &mut summary)?;
    }
    if clock.ran_out_in().is_none() {
        run_read_path_benchmark(&guest, &baseline, factor, clock, report);
    }
    if clock.ran_out_in().is_none() {
        run_cold_read_benchmark(&guest, &baseline, factor, clock, report);
    }
    for (name, seconds, heading) in SDK_HARNESSES {
        if clock.ran_out_in().is_none()
            && let Some(command) = harness_command(name, seconds, report)
        {
            report(heading);
            run_benchmark(&guest, name, command, factor, clock, report);
        }
    }
    guest.shutdown()?;
    Ok(summary)
}

/// Runs the RDMA tests `names` of `executable` in one process (one start of a large
/// debug executable costs the emulated guest seconds, many times over if each test had
/// its own), one at a time. Each test is a step of `clock`, timed from libtest's live
/// report, and may run [`TEST_TIMEOUT`] scaled by `factor`: a test past that is cut
/// off then (a hang costs its own limit, not its executable's), as is the process at
/// the sum of its tests' limits (cut to the budget). The test that was running is the
/// step named, and the ones after it are counted as not run.
fn run_executable(
    guest: &Guest,
    executable: &TestExecutable,
    names: &[String],
    factor: f64,
    clock: &mut StageClock,
    report: &mut dyn FnMut(&str),
    summary: &mut Summary,
) -> Result<(), Error> {
    let label = executable.label();
    report(&format!("running {label}: {} test(s), one at a time", names.len()));
    let test_limit = TEST_TIMEOUT.mul_f64(factor);
    let (limit, cut) = clock.bound(test_limit * names.len() as u32);
    let command =
        GuestCommand::argv([executable.path.to_string_lossy().as_ref(), "--ignored", "--test-threads", "1"])
            .cwd(&executable.manifest_dir)
            .env("CARGO_MANIFEST_DIR", executable.manifest_dir.to_string_lossy())
            .env(slowness::ENV, factor.to_string())
            .timeout(limit);
    let mut progress = LibtestProgress::new(Instant::now());
    let result = guest.spawn(&command)?.wait_watching(Echo::Live, &mut |bytes| {
        let now = Instant::now();
        progress.feed(bytes, now);
        if progress.running_for(now) > test_limit { Watch::Cut } else { Watch::Go }
    });
    for test in &progress.finished {
        let step = format!("{label}::{}", test.name);
        clock.record(&step, test.elapsed, if test.passed { StepOutcome::Ok } else { StepOutcome::Failed });
        if test.passed {
            summary.passed += 1;
        } else {
            summary.failed.push(step);
        }
    }
    let unfinished: Vec<&String> =
        names.iter().filter(|name| !progress.finished.iter().any(|t| &t.name == *name)).collect();
    let Some(running) = unfinished.first() else {
        if let Ok(output) = &result
            && !output.success()
            && progress.finished.iter().all(|t| t.passed)
        {
            report(&format!(
                "{label} exited {} after its tests:\n{}",
                output.exit_code,
                tail_lines(&output.stderr, 20)
            ));
            summary.failed.push(label);
        }
        return result.map(|_| ());
    };
    let step = format!("{label}::{running}");
    let since_last = progress.last.elapsed();
    match result {
        Ok(output) => {
            report(&format!(
                "{step} ended its executable (exit {}) without a result:\n{}",
                output.exit_code,
                tail_lines(&output.stderr, 20)
            ));
            clock.record(&step, since_last, StepOutcome::Failed);
        }
        Err(Error::CommandTimedOut { timeout, .. }) if since_last > test_limit => {
            report(&format!(
                "{step} ran past its limit of {test_limit:?} and was cut off (executable's limit {timeout:?})"
            ));
            clock.record(&step, since_last, StepOutcome::TimedOut);
        }
        Err(Error::CommandTimedOut { timeout, .. }) => {
            report(&format!("{label} was cut off after {timeout:?}, in {running}"));
            clock.record(
                &step,
                since_last,
                if cut { StepOutcome::OutOfBudget } else { StepOutcome::TimedOut },
            );
        }
        Err(e) => return Err(e),
    }
    summary.failed.push(step);
    summary.not_run += unfinished.len() as u32 - 1;
    Ok(())
}

/// One test as libtest reported it.
#[derive(Debug, Clone, PartialEq)]
struct FinishedTest {
    name: String,
    /// Since the test before it ended (the first: since the executable started).
    elapsed: Duration,
    passed: bool,
}

/// The tests of one executable as libtest reports them on stdout, one at a time
/// (`test NAME ... ok`), timed as their lines arrive.
#[derive(Debug)]
struct LibtestProgress {
    /// Output after the last complete line.
    pending: Vec<u8>,
    /// When the last test ended (or the executable started).
    last: Instant,
    finished: Vec<FinishedTest>,
}

impl LibtestProgress {
    fn new(started: Instant) -> Self {
        Self { pending: Vec::new(), last: started, finished: Vec::new() }
    }

    /// How long the test now running has been running at `now`.
    fn running_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last)
    }

    /// Takes the next piece of stdout, which arrived at `now`.
    fn feed(&mut self, bytes: &[u8], now: Instant) {
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Some((name, verdict)) = parse_test_line(&String::from_utf8_lossy(&line)) {
                self.finished.push(FinishedTest {
                    name: name.to_owned(),
                    elapsed: now.saturating_duration_since(self.last),
                    passed: verdict == "ok",
                });
                self.last = now;
            }
        }
    }
}

/// libtest's line for a test that ran: `test NAME ... ok` (or `FAILED`), as name and
/// verdict.
pub fn parse_test_line(line: &str) -> Option<(&str, &str)> {
    let (name, verdict) = line.trim_end().strip_prefix("test ")?.rsplit_once(" ... ")?;
    matches!(verdict, "ok" | "FAILED").then_some((name, verdict))
}

/// One `ib_read_lat -s 4096` across two guests (the cross-host topology), as a step of
/// `clock`, if time remains.
pub fn run_cross_host(
    image: &GuestImage,
    config: &GuestConfig,
    clock: &mut StageClock,
    report: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let config = GuestConfig { boot_timeout: clock.bound(config.boot_timeout).0, ..config.clone() };
    let result = clock.time("across two guests: boot, ib_read_lat 4 KiB", || {
        let pair = GuestPair::boot(image, &config)?;
        let result = perftest::run_cases(&pair.server, &pair.client, &[PerftestCase::read_latency(4096)])?;
        pair.shutdown()?;
        Ok((result, StepOutcome::Ok))
    })?;
    report(&format!("across two guests (socket netdev):\n{}", perftest::render_table(&result).trim_end()));
    Ok(())
}

/// The harnesses (crates/benches) run after rdma-bench, if they were built in the bench
/// profile: (name, seconds per phase, heading). Figures only: they never fail the run.
/// - `sdk-rdma-vs-http`: downloads through the SDK over RDMA and over HTTP from one
///   volume server, in the same boot;
/// - `filer-rdma-vs-http`: a 64 MiB file read by path through a `weed filer`,
///   sequentially and in 4 KiB ranges, with its chunks over RDMA, over the SDK's HTTP
///   path, and through the filer's own HTTP read.
const SDK_HARNESSES: [(&str, &str, &str); 2] = [
    ("sdk-rdma-vs-http", "1", "SDK benchmark (downloads over RDMA vs over HTTP):"),
    (
        "filer-rdma-vs-http",
        "2",
        "filer benchmark (a file read by path: chunks over RDMA, over HTTP, and the filer's GET):",
    ),
];

/// The command of harness `name` built in the bench profile next to this binary's target
/// directory (`<target>/release/NAME`), against the volume server beside it (the
/// optimized build, or the debug one), with `seconds` per figure; None (and a note) if
/// it was not built.
fn harness_command(name: &str, seconds: &str, report: &mut dyn FnMut(&str)) -> Option<Vec<String>> {
    let debug_dir = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf))?;
    let release = debug_dir.with_file_name("release");
    let bench = release.join(name);
    if !bench.exists() {
        report(&format!("{name} skipped: {} not built", bench.display()));
        return None;
    }
    let server = [release.join("volume-server"), debug_dir.join("volume-server")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| debug_dir.join("volume-server"));
    Some(vec![
        bench.display().to_string(),
        "--volume-server".to_owned(),
        server.display().to_string(),
        "--seconds".to_owned(),
        seconds.to_owned(),
    ])
}

/// Runs a benchmark as step `name` with `args` (+ `$SOFTROCE_SLOWNESS`). Figures only:
/// a failure or its limit is reported and the stage goes on; only the stage's budget
/// running out stops it.
fn run_benchmark(
    guest: &Guest,
    name: &str,
    args: Vec<String>,
    factor: f64,
    clock: &mut StageClock,
    report: &mut dyn FnMut(&str),
) {
    let saved_in_guest = guest.run_dir().join("bench-figures");
    let command = GuestCommand::argv(args)
        .env(slowness::ENV, factor.to_string())
        .env(BENCH_FIGURES_ENV, saved_in_guest.display().to_string());
    match clock.run(guest, name, command, BENCH_TIMEOUT.mul_f64(factor)) {
        Ok(output) if output.success() => {}
        Ok(output) => {
            report(&format!("{name} exited {}:\n{}", output.exit_code, tail_lines(&output.stderr, 20)))
        }
        Err(e) => report(&format!("{name} did not complete: {e}")),
    }
    let report_dir =
        std::env::current_exe().ok().and_then(|e| Some(e.parent()?.parent()?.join("bench-report")));
    if let Some(report_dir) = report_dir
        && let Err(e) = copy_figures(&saved_in_guest, &report_dir)
    {
        report(&format!("{name}: its figures were not copied to {}: {e}", report_dir.display()));
    }
}

/// Copies the figure files (`*.json`) a guest benchmark saved in `from` into `to`.
fn copy_figures(from: &Path, to: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(from) else {
        return Ok(()); // The benchmark saved nothing (it failed before, or saves none).
    };
    std::fs::create_dir_all(to)?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Some(name) = path.file_name()
        {
            std::fs::copy(&path, to.join(name))?;
        }
    }
    Ok(())
}

/// `cold-reads` (crates/benches), if it was built in the bench profile: needles never
/// read before, through the one-sided index, with a Locate each, and over HTTP, its
/// 4 KiB latency beside the boot's `ib_read_lat`. Figures only.
fn run_cold_read_benchmark(
    guest: &Guest,
    baseline: &[perftest::PerftestResult],
    factor: f64,
    clock: &mut StageClock,
    report: &mut dyn FnMut(&str),
) {
    let Some(mut command) = harness_command("cold-reads", "1", report) else { return };
    for result in baseline {
        if let (perftest::PerftestKind::ReadLatency, 4096, perftest::Figures::Latency { typical, .. }) =
            (result.case.kind, result.case.size, result.figures)
        {
            command.extend(["--ib-read-lat-us".to_owned(), typical.to_string()]);
        }
    }
    report("cold-read benchmark (one-sided index vs a Locate per read vs HTTP):");
    run_benchmark(guest, "cold-reads", command, factor, clock, report);
}

/// `rdma-bench` (crates/benches), if it was built in the bench profile: the read path's
/// figures in the same boot as the perftest baseline, printed with their ratios to it,
/// then rounds of perftest and the engines side by side. Figures only: it never fails
/// the run.
fn run_read_path_benchmark(
    guest: &Guest,
    baseline: &[perftest::PerftestResult],
    factor: f64,
    clock: &mut StageClock,
    report: &mut dyn FnMut(&str),
) {
    // Besides one run of every figure, three rounds of perftest then each engine's
    // like-for-like figures, for per-round ratios and their median: perftest alone varies
    // by 15-30% between runs in one boot. 1 s per figure, and perftest's rounds sized to
    // about a second each from the baseline, whatever the guest's speed.
    let Some(mut command) = harness_command("rdma-bench", "1", report) else { return };
    command.extend(["--rounds".to_owned(), "3".to_owned()]);
    for result in baseline {
        match (result.case.kind, result.case.size, result.figures) {
            (perftest::PerftestKind::ReadLatency, 4096, perftest::Figures::Latency { typical, .. }) => {
                command.extend(["--ib-read-lat-us".to_owned(), typical.to_string()])
            }
            (
                perftest::PerftestKind::ReadBandwidth,
                1_048_576,
                perftest::Figures::Bandwidth { average_mb_s, .. },
            ) => command.extend(["--ib-read-bw-mbs".to_owned(), average_mb_s.to_string()]),
            _ => {}
        }
    }
    report("read-path benchmark (each engine built in vs the perftest figures above):");
    run_benchmark(guest, "rdma-bench", command, factor, clock, report);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Messages as `cargo test --workspace --no-run --message-format=json` prints them
    /// (trimmed to the fields read), for: a library's unit tests, a library *named* rdma_*,
    /// an rdma_* integration test, a non-RDMA integration test, the binary, a build script.
    const CARGO_MESSAGES: &str = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/needle#0.1.0","manifest_path":"/w/crates/needle/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"needle","test":true},"profile":{"test":true},"executable":"/t/debug/deps/needle-77","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/rdma-transport#0.1.0","manifest_path":"/w/crates/rdma-transport/Cargo.toml","target":{"kind":["lib"],"crate_types":["lib"],"name":"rdma_transport","test":true},"profile":{"test":true},"executable":"/t/debug/deps/rdma_transport-eb","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/testbeds#0.1.0","manifest_path":"/w/crates/testbeds/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"rdma_verbs_smoke","test":true},"profile":{"test":true},"executable":"/t/debug/deps/rdma_verbs_smoke-df","fresh":false}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/needle#0.1.0","manifest_path":"/w/crates/needle/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"weed_interop","test":true},"profile":{"test":true},"executable":"/t/debug/deps/weed_interop-12","fresh":true}
{"reason":"compiler-artifact","package_id":"path+file:///w/crates/testbeds#0.1.0","manifest_path":"/w/crates/testbeds/Cargo.toml","target":{"kind":["bin"],"crate_types":["bin"],"name":"testbeds","test":true},"profile":{"test":false},"executable":"/t/debug/testbeds","fresh":false}
{"reason":"build-script-executed","package_id":"registry+https://github.com/rust-lang/crates.io-index#rdma-mummy-sys@0.2.6","linked_libs":[],"out_dir":"/t/out"}
{"reason":"build-finished","success":true}
"#;

    #[test]
    fn discovers_only_rdma_integration_tests() {
        let found = discover(CARGO_MESSAGES).unwrap();
        assert_eq!(
            found,
            [TestExecutable {
                target: "rdma_verbs_smoke".to_owned(),
                path: PathBuf::from("/t/debug/deps/rdma_verbs_smoke-df"),
                manifest_dir: PathBuf::from("/w/crates/testbeds"),
            }]
        );
        assert_eq!(found[0].label(), "testbeds/rdma_verbs_smoke");
    }

    #[test]
    fn discovery_reports_garbage_and_finds_nothing_in_nothing() {
        assert!(discover("").unwrap().is_empty());
        assert!(discover("warning: not json\n").unwrap().is_empty());
        assert!(matches!(discover("{not json"), Err(Error::Cargo(_))));
        let no_executable = r#"{"reason":"compiler-artifact","manifest_path":"/w/Cargo.toml","target":{"kind":["test"],"name":"rdma_x"},"profile":{"test":true},"executable":null}"#;
        assert!(matches!(discover(no_executable), Err(Error::Cargo(_))));
    }

    #[test]
    fn lists_the_tests_of_a_terse_listing() {
        let listing = "many_concurrent_readers: test\nstaging_mode: test\n";
        assert_eq!(parse_test_list(listing), ["many_concurrent_readers", "staging_mode"]);
        assert!(parse_test_list("").is_empty());
        assert!(parse_test_list("0 tests, 0 benchmarks\n").is_empty());
    }

    #[test]
    fn times_each_test_from_the_live_report_whatever_the_pieces() {
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let mut progress = LibtestProgress::new(start);
        progress.feed(b"\nrunning 3 tests\ntest alpha ... ", at(1));
        progress.feed(b"ok\ntest beta ... FA", at(5));
        progress.feed(b"ILED\ntest gamma ... ", at(12));
        let names: Vec<_> =
            progress.finished.iter().map(|t| (t.name.as_str(), t.elapsed, t.passed)).collect();
        assert_eq!(
            names,
            [("alpha", Duration::from_secs(5), true), ("beta", Duration::from_secs(7), false)],
            "gamma is still running"
        );
        assert_eq!(progress.last, at(12));
        assert_eq!(
            progress.running_for(at(30)),
            Duration::from_secs(18),
            "gamma's time, not the executable's"
        );
        assert_eq!(parse_test_line("test result: ok. 3 passed; 0 failed"), None);
        assert_eq!(parse_test_line("test a::b ... ok\n"), Some(("a::b", "ok")));
    }

    #[test]
    fn the_clock_cuts_limits_to_the_budget_and_names_the_step_that_ran_out() {
        let mut clock = StageClock::new(Duration::from_secs(100));
        assert_eq!(clock.bound(Duration::from_secs(10)), (Duration::from_secs(10), false));
        let (cut, was_cut) = clock.bound(Duration::from_secs(1000));
        assert!(was_cut && cut <= Duration::from_secs(100), "{cut:?}");
        clock.record("boot", Duration::from_secs(30), StepOutcome::Ok);
        clock.record("a::slow_test", Duration::from_secs(70), StepOutcome::OutOfBudget);
        assert_eq!(clock.ran_out_in().map(|s| s.name.as_str()), Some("a::slow_test"));
        let table = clock.render();
        assert!(table.contains("    30.0 s  ok          boot\n"), "{table}");
        assert!(table.contains("    70.0 s  OUT OF TIME a::slow_test\n"), "{table}");
        assert!(table.contains("(budget 100 s)"), "{table}");
        let value = clock.time("failing", || Err::<((), StepOutcome), _>(Error::NoRdmaTests("x".into())));
        assert!(value.is_err());
        assert_eq!(clock.steps.last().map(|s| s.outcome), Some(StepOutcome::Failed));
    }

    #[test]
    fn reads_libtest_closing_lines() {
        let ok = "running 3 tests\n...\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.60s\n";
        assert_eq!(parse_libtest_result(ok), Some(LibtestCounts { passed: 3, failed: 0, ignored: 0 }));
        let failed = "test result: FAILED. 1 passed; 2 failed; 4 ignored; 0 measured; 0 filtered out; finished in 0.05s";
        assert_eq!(parse_libtest_result(failed), Some(LibtestCounts { passed: 1, failed: 2, ignored: 4 }));
        assert_eq!(parse_libtest_result("thread 'main' panicked\n"), None);
        assert_eq!(parse_libtest_result("test result: garbled"), None);
    }
}
