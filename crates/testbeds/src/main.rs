//! `testbeds`: prepare the Soft-RoCE guest, run commands in it, measure the verbs-level
//! baseline, and run the workspace's RDMA tests there. `testbeds help` lists the commands.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use testbeds::softroce::perftest;
use testbeds::softroce::rdma_tests::{self, StageClock, StepOutcome};
use testbeds::softroce::{Echo, Error, Guest, GuestCommand, GuestConfig, GuestImage, GuestPair};

const USAGE: &str = "\
usage: testbeds COMMAND [OPTIONS]

commands:
  prepare                 fetch the Debian kernel and build the initramfs into the cache
                          (idempotent: says what it reused)
  run [OPTIONS] -- CMD... boot, run CMD in the guest (chrooted host root, rxe0 up), print its
                          output, exit with its exit code
      --guests 1|2        2: two guests joined by a socket netdev; CMD runs in guest B (client)
      --server-cmd SCRIPT with --guests 2: a shell script run in guest A (server) meanwhile;
                          it should create $SOFTROCE_READY_FILE once it serves
      --timeout SECS      time limit of CMD (default 600)
      --memory MIB        guest memory (default 2048)
      --scratch-disk MIB  attach an ext4 disk, mounted at $SOFTROCE_SCRATCH
  selfcheck [--guests 1|2]
                          run ib_read_lat (4 KiB) and ib_read_bw (4 KiB, 1 MiB) over rxe0 and
                          print the figures
  rdma-tests [--cross-host] [--features FEATURES] [--budget SECS]
                          build the workspace's test executables, then in one boot: show rxe0,
                          run the selfcheck, run the tests of every `rdma_*` target (its
                          ignored ones) one at a time, limits scaled to the boot's speed,
                          then the benchmarks; --cross-host adds an ib_read_lat across two
                          guests afterwards; --features is passed to cargo (e.g.
                          rdma-transport/async-rdma); the stage ends within --budget
                          (default 1080) and prints the wall time of each step
";

/// `rdma-tests`' default budget: 18 min, inside `scripts/test-all`'s 20-minute bound on
/// the stage with room to shut down and print the steps.
const DEFAULT_BUDGET: Duration = Duration::from_secs(1080);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("prepare") => prepare().map(|_| ExitCode::SUCCESS),
        Some("run") => run(&args[1..]),
        Some("selfcheck") => selfcheck(&args[1..]),
        Some("rdma-tests") => rdma_tests_command(&args[1..]),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(CliError::Usage(message)) => {
            eprintln!("testbeds: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(CliError::Failed(message)) => {
            eprintln!("testbeds: {message}");
            ExitCode::FAILURE
        }
    }
}

enum CliError {
    Usage(String),
    Failed(String),
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        CliError::Failed(error.to_string())
    }
}

fn prepare() -> Result<GuestImage, CliError> {
    let started = Instant::now();
    let image = GuestImage::prepare(&mut |line| println!("prepare: {line}"))?;
    println!("prepare: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(image)
}

/// Options shared by the subcommands that boot guests.
struct Options {
    guests: u32,
    server_cmd: Option<String>,
    timeout: Duration,
    config: GuestConfig,
    cross_host: bool,
    /// Cargo features for the test build (`--features`), empty for none.
    features: String,
    /// What `rdma-tests` may take in all (`--budget`).
    budget: Duration,
    command: Vec<String>,
}

fn parse_options(args: &[String], allowed: &[&str]) -> Result<Options, CliError> {
    let mut options = Options {
        guests: 1,
        server_cmd: None,
        timeout: Duration::from_secs(600),
        config: GuestConfig::default(),
        cross_host: false,
        features: String::new(),
        budget: DEFAULT_BUDGET,
        command: Vec::new(),
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            options.command = iter.cloned().collect();
            break;
        }
        if !allowed.contains(&arg.as_str()) {
            return Err(CliError::Usage(format!("unexpected argument `{arg}`")));
        }
        if arg == "--cross-host" {
            options.cross_host = true;
            continue;
        }
        let value = iter.next().ok_or_else(|| CliError::Usage(format!("{arg} needs a value")))?;
        let number = || value.parse::<u32>().map_err(|_| CliError::Usage(format!("{arg} takes a number")));
        match arg.as_str() {
            "--guests" => {
                options.guests = number()?;
                if !matches!(options.guests, 1 | 2) {
                    return Err(CliError::Usage("--guests is 1 or 2".to_owned()));
                }
            }
            "--server-cmd" => options.server_cmd = Some(value.clone()),
            "--timeout" => options.timeout = Duration::from_secs(u64::from(number()?)),
            "--memory" => options.config.memory_mib = number()?,
            "--scratch-disk" => options.config.scratch_disk_mib = Some(number()?),
            "--features" => options.features = value.clone(),
            "--budget" => options.budget = Duration::from_secs(u64::from(number()?)),
            _ => return Err(CliError::Usage(format!("unexpected argument `{arg}`"))),
        }
    }
    // The guest must outlive the command it runs.
    options.config.lifetime = options.config.lifetime.max(options.timeout + Duration::from_secs(300));
    Ok(options)
}

fn run(args: &[String]) -> Result<ExitCode, CliError> {
    let options =
        parse_options(args, &["--guests", "--server-cmd", "--timeout", "--memory", "--scratch-disk"])?;
    if options.command.is_empty() {
        return Err(CliError::Usage("run needs a command after --".to_owned()));
    }
    if options.server_cmd.is_some() && options.guests != 2 {
        return Err(CliError::Usage("--server-cmd needs --guests 2".to_owned()));
    }
    let image = prepare()?;
    let command = GuestCommand::argv(&options.command).timeout(options.timeout);
    let output = if options.guests == 2 {
        let pair = GuestPair::boot(&image, &options.config)?;
        println!(
            "run: booted two guests in {:.1} s",
            pair.server.boot_time().max(pair.client.boot_time()).as_secs_f64()
        );
        let server = match &options.server_cmd {
            Some(script) => {
                let job = pair.server.spawn(&GuestCommand::shell(script.clone()).timeout(options.timeout))?;
                job.wait_ready("--server-cmd", options.timeout)?;
                Some(job)
            }
            None => None,
        };
        let output = pair.client.run(&command, Echo::Live)?;
        if let Some(job) = server {
            let server_output = job.wait(Echo::Quiet)?;
            println!(
                "--- guest A (server) exited {} ---\n{}{}",
                server_output.exit_code, server_output.stdout, server_output.stderr
            );
        }
        pair.shutdown()?;
        output
    } else {
        let guest = Guest::boot(&image, &options.config)?;
        println!("run: booted in {:.1} s", guest.boot_time().as_secs_f64());
        let output = guest.run(&command, Echo::Live)?;
        guest.shutdown()?;
        output
    };
    Ok(ExitCode::from(u8::try_from(output.exit_code).unwrap_or(1)))
}

fn selfcheck(args: &[String]) -> Result<ExitCode, CliError> {
    let options = parse_options(args, &["--guests", "--memory"])?;
    let image = prepare()?;
    let results = if options.guests == 2 {
        let pair = GuestPair::boot(&image, &options.config)?;
        println!(
            "selfcheck: two guests booted; server {} in guest A, client in guest B",
            pair.server.rdma_ip()
        );
        let results = perftest::run_cases(&pair.server, &pair.client, &perftest::SELFCHECK_CASES)?;
        pair.shutdown()?;
        results
    } else {
        let guest = Guest::boot(&image, &options.config)?;
        println!("selfcheck: booted in {:.1} s", guest.boot_time().as_secs_f64());
        let results = perftest::run_cases(&guest, &guest, &perftest::SELFCHECK_CASES)?;
        guest.shutdown()?;
        results
    };
    print!("{}", perftest::render_table(&results));
    Ok(ExitCode::SUCCESS)
}

fn rdma_tests_command(args: &[String]) -> Result<ExitCode, CliError> {
    let options = parse_options(args, &["--cross-host", "--memory", "--features", "--budget"])?;
    let mut clock = StageClock::new(options.budget);
    let mut report = |line: &str| println!("rdma-tests: {line}");
    let result = rdma_tests_stage(&options, &mut clock, &mut report);
    println!("rdma-tests: wall time of each step:\n{}", clock.render().trim_end());
    if let Some(step) = clock.ran_out_in() {
        println!(
            "rdma-tests: the stage's budget of {} s ran out during `{}` ({:.1} s)",
            clock.budget().as_secs(),
            step.name,
            step.elapsed.as_secs_f64()
        );
    }
    let summary = result?;
    for failed in &summary.failed {
        println!("rdma-tests: FAILED {failed}");
    }
    if summary.not_run > 0 {
        println!(
            "rdma-tests: {} test(s) not run: the budget ran out, or their executable was cut off, first",
            summary.not_run
        );
    }
    let failed = summary.failed.len() as u32 + summary.not_run;
    println!("rdma-tests: {} passed, {failed} failed", summary.passed);
    Ok(if failed == 0 && clock.ran_out_in().is_none() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The guest stage's steps, each timed on `clock`.
fn rdma_tests_stage(
    options: &Options,
    clock: &mut StageClock,
    report: &mut dyn FnMut(&str),
) -> Result<rdma_tests::Summary, CliError> {
    let image = clock.time("prepare the guest image", || {
        Ok((GuestImage::prepare(&mut |line| println!("prepare: {line}"))?, StepOutcome::Ok))
    })?;
    let executables = clock.time("build the test executables", || {
        Ok((rdma_tests::build_and_discover(&options.features)?, StepOutcome::Ok))
    })?;
    report(&format!(
        "{} RDMA test target(s): {}",
        executables.len(),
        executables.iter().map(|e| e.target.as_str()).collect::<Vec<_>>().join(", ")
    ));
    let summary = rdma_tests::run_in_guest(&image, &options.config, &executables, clock, report)?;
    if options.cross_host && clock.ran_out_in().is_none() {
        rdma_tests::run_cross_host(&image, &options.config, clock, report)?;
    }
    Ok(summary)
}
