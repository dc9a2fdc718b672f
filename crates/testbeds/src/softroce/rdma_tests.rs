//! Finding the workspace's RDMA tests and running them in the guest.
//!
//! The convention (see the crate docs): an RDMA test is an ordinary `#[test]`, marked
//! `#[ignore = "needs an RDMA device: ..."]`, in an integration-test target whose name
//! starts with `rdma_` (`tests/rdma_*.rs`). Cargo builds the test executables on the host;
//! this module picks the `rdma_*` ones out of cargo's JSON messages and runs each in the
//! guest with `--ignored`, so exactly the RDMA tests run there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::guest::{Echo, Guest, GuestCommand, GuestConfig, hidden_in_guest};
use super::image::GuestImage;
use super::perftest::{self, SELFCHECK_CASES};
use super::{Error, tail_lines};

/// Integration-test targets whose name starts with this hold RDMA tests.
pub const TARGET_PREFIX: &str = "rdma_";

/// How long one test executable may run in the guest (they are sized for emulation, where
/// a 1 MiB READ takes ~20 ms).
const EXECUTABLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The scratch ext4 disk attached for the tests (`$SOFTROCE_SCRATCH`).
const SCRATCH_DISK_MIB: u32 = 256;

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
    pub failed: u32,
    /// Executables that failed without a libtest result (crashed, killed, not runnable).
    pub broken_executables: Vec<String>,
}

/// One boot: shows rxe0's state, runs the perftest self-check, then each executable with
/// `--ignored`. Boot, rxe0, perftest and "no RDMA test ran at all" failures are errors;
/// failing tests are counted in the summary.
pub fn run_in_guest(
    image: &GuestImage,
    config: &GuestConfig,
    executables: &[TestExecutable],
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
    let config = GuestConfig {
        scratch_disk_mib: Some(config.scratch_disk_mib.unwrap_or(SCRATCH_DISK_MIB)),
        ..config.clone()
    };
    let guest = Guest::boot(image, &config)?;
    report(&format!("booted in {:.1} s (QEMU start to rxe0 ready)", guest.boot_time().as_secs_f64()));

    let state = guest.run(
        &GuestCommand::shell("rdma link show; ibv_devinfo -d rxe0").timeout(Duration::from_secs(60)),
        Echo::Quiet,
    )?;
    report(&format!("rxe0 in the guest:\n{}", state.stdout.trim_end()));
    if !state.success() || !state.stdout.contains("state ACTIVE") || !state.stdout.contains("PORT_ACTIVE") {
        return Err(Error::Rxe {
            guest: guest.name().to_owned(),
            reason: format!("rxe0 is not active:\n{}{}", state.stdout, state.stderr),
            console: guest.console_log().to_path_buf(),
            console_tail: guest.console_tail(),
        });
    }

    let baseline = perftest::run_cases(&guest, &guest, &SELFCHECK_CASES)?;
    report(&format!(
        "perftest over rxe0, same boot (the verbs-level limit to compare with):\n{}",
        perftest::render_table(&baseline).trim_end()
    ));

    let mut summary = Summary::default();
    for executable in executables {
        report(&format!("running {} --ignored", executable.label()));
        let command = GuestCommand::argv([executable.path.to_string_lossy().as_ref(), "--ignored"])
            .cwd(&executable.manifest_dir)
            .env("CARGO_MANIFEST_DIR", executable.manifest_dir.to_string_lossy())
            .timeout(EXECUTABLE_TIMEOUT);
        let output = guest.run(&command, Echo::Live)?;
        let counts = parse_libtest_result(&output.stdout);
        match counts {
            Some(counts) => {
                summary.passed += counts.passed;
                summary.failed += counts.failed;
                if !output.success() && counts.failed == 0 {
                    summary.broken_executables.push(executable.label());
                }
            }
            None => {
                report(&format!(
                    "{} exited {} without a test result:\n{}",
                    executable.label(),
                    output.exit_code,
                    tail_lines(&output.stderr, 20)
                ));
                summary.broken_executables.push(executable.label());
            }
        }
    }
    run_read_path_benchmark(&guest, &baseline, report);
    run_sdk_benchmark(&guest, report);
    guest.shutdown()?;
    if summary.passed == 0 && summary.failed == 0 && summary.broken_executables.is_empty() {
        return Err(Error::NoRdmaTests(format!(
            "{} {TARGET_PREFIX}* target(s) ran but no test did: are the RDMA tests #[ignore]d as the convention says?",
            executables.len()
        )));
    }
    Ok(summary)
}

/// `rdma-bench` (crates/benches), built in the bench profile next to this binary's
/// target directory, if it was built: the read path's figures in the same boot as the
/// perftest baseline, printed with their ratios to it, then rounds of perftest and the
/// engines side by side. Figures only: it never fails the run.
fn run_read_path_benchmark(
    guest: &Guest,
    baseline: &[perftest::PerftestResult],
    report: &mut dyn FnMut(&str),
) {
    let Some(debug_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) else {
        return;
    };
    let bench = debug_dir.with_file_name("release").join("rdma-bench");
    if !bench.exists() {
        report(&format!("read-path benchmark skipped: {} not built", bench.display()));
        return;
    }
    // Besides one run of every figure, three rounds of perftest then each engine's
    // like-for-like figures, for per-round ratios and their median: perftest alone varies
    // by 15-30% between runs in one boot. 1 s per figure (~13000 4 KiB READs) keeps the
    // whole within ~10 s of one 3 s run of every figure.
    let mut command = vec![
        bench.display().to_string(),
        "--volume-server".to_owned(),
        debug_dir.join("volume-server").display().to_string(),
        "--seconds".to_owned(),
        "1".to_owned(),
        "--rounds".to_owned(),
        "3".to_owned(),
    ];
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
    match guest.run(&GuestCommand::argv(command).timeout(Duration::from_secs(240)), Echo::Live) {
        Ok(output) if output.success() => {}
        Ok(output) => report(&format!(
            "read-path benchmark exited {}:\n{}",
            output.exit_code,
            tail_lines(&output.stderr, 20)
        )),
        Err(e) => report(&format!("read-path benchmark could not run: {e}")),
    }
}

/// `sdk-rdma-vs-http` (crates/benches), if it was built in the bench profile: downloads
/// through the SDK over RDMA and over HTTP from one volume server, in the same boot.
/// Figures only: it never fails the run.
fn run_sdk_benchmark(guest: &Guest, report: &mut dyn FnMut(&str)) {
    let Some(debug_dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) else {
        return;
    };
    let bench = debug_dir.with_file_name("release").join("sdk-rdma-vs-http");
    if !bench.exists() {
        report(&format!("SDK benchmark skipped: {} not built", bench.display()));
        return;
    }
    let command = [
        bench.display().to_string(),
        "--volume-server".to_owned(),
        debug_dir.join("volume-server").display().to_string(),
        "--seconds".to_owned(),
        "1".to_owned(),
    ];
    report("SDK benchmark (downloads over RDMA vs over HTTP):");
    match guest.run(&GuestCommand::argv(command).timeout(Duration::from_secs(180)), Echo::Live) {
        Ok(output) if output.success() => {}
        Ok(output) => {
            report(&format!("SDK benchmark exited {}:\n{}", output.exit_code, tail_lines(&output.stderr, 20)))
        }
        Err(e) => report(&format!("SDK benchmark could not run: {e}")),
    }
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
    fn reads_libtest_closing_lines() {
        let ok = "running 3 tests\n...\ntest result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.60s\n";
        assert_eq!(parse_libtest_result(ok), Some(LibtestCounts { passed: 3, failed: 0, ignored: 0 }));
        let failed = "test result: FAILED. 1 passed; 2 failed; 4 ignored; 0 measured; 0 filtered out; finished in 0.05s";
        assert_eq!(parse_libtest_result(failed), Some(LibtestCounts { passed: 1, failed: 2, ignored: 4 }));
        assert_eq!(parse_libtest_result("thread 'main' panicked\n"), None);
        assert_eq!(parse_libtest_result("test result: garbled"), None);
    }
}
