//! The verbs-level baseline: perftest's `ib_read_lat` and `ib_read_bw` over rxe0.
//!
//! Under full emulation absolute figures mean little; what means something is the ratio
//! of one of our RDMA paths to perftest measured in the *same boot*. So these run in a
//! guest a caller already has (the server side in one guest, the client in the same or
//! the other guest of a pair), and the caller runs its own benchmark in that boot too.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use super::guest::{Echo, Guest, GuestCommand, RDMA_DEVICE};
use super::{Error, slowness, tail_lines};

/// Which perftest program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerftestKind {
    ReadLatency,
    ReadBandwidth,
}

impl PerftestKind {
    pub fn program(self) -> &'static str {
        match self {
            PerftestKind::ReadLatency => "ib_read_lat",
            PerftestKind::ReadBandwidth => "ib_read_bw",
        }
    }
}

/// One perftest run: program, message size, iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerftestCase {
    pub kind: PerftestKind,
    pub size: u64,
    pub iterations: u32,
}

impl PerftestCase {
    /// `ib_read_lat -s size`, 1000 iterations (~0.1 s of READs under emulation).
    pub const fn read_latency(size: u64) -> Self {
        Self { kind: PerftestKind::ReadLatency, size, iterations: 1000 }
    }

    /// `ib_read_bw -s size`, sized to move 64 MiB at most (~1 s at the emulated device's
    /// ~70 MB/s, a few seconds on a slow guest) while keeping 1000 messages for small sizes.
    pub const fn read_bandwidth(size: u64) -> Self {
        let by_volume = (64 << 20) / if size == 0 { 1 } else { size };
        let iterations = if by_volume < 1000 { by_volume as u32 } else { 1000 };
        Self {
            kind: PerftestKind::ReadBandwidth,
            size,
            iterations: if iterations < 10 { 10 } else { iterations },
        }
    }

    /// The arguments both sides pass (the client adds the server's address).
    fn arguments(&self, port: u16) -> String {
        format!(
            "{program} -d {RDMA_DEVICE} -x \"$SOFTROCE_GID_INDEX\" -s {size} -n {iterations} -p {port}",
            program = self.kind.program(),
            size = self.size,
            iterations = self.iterations,
        )
    }
}

impl std::fmt::Display for PerftestCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -s {} -n {}", self.kind.program(), self.size, self.iterations)
    }
}

/// What the self-check measures: the latency of a 4 KiB READ (a typical small needle) and
/// the bandwidth of 4 KiB and 1 MiB READs.
pub const SELFCHECK_CASES: [PerftestCase; 3] = [
    PerftestCase::read_latency(4096),
    PerftestCase::read_bandwidth(4096),
    PerftestCase::read_bandwidth(1 << 20),
];

/// Parsed figures of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figures {
    /// Microseconds.
    Latency { min: f64, max: f64, typical: f64, average: f64, stdev: f64, p99: f64, p999: f64 },
    /// MB/s (perftest's MB: 2^20 bytes) and millions of messages per second.
    Bandwidth { peak_mb_s: f64, average_mb_s: f64, msg_rate_mpps: f64 },
}

/// One case and what it measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PerftestResult {
    pub case: PerftestCase,
    pub figures: Figures,
}

/// How long a perftest server may take to start listening, and a whole run to finish
/// (the slowest case moves 64 MiB at a few to tens of MB/s).
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// perftest's default port and up: a fresh port per run, so a server still in TIME_WAIT
/// from the previous case never blocks the next.
fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    18515 + NEXT.fetch_add(1, Ordering::Relaxed) % 1000
}

/// Runs each case: its server in `server`, its client in `client` (the same guest for the
/// one-guest topology), connecting to `server`'s RDMA address.
pub fn run_cases(
    server: &Guest,
    client: &Guest,
    cases: &[PerftestCase],
) -> Result<Vec<PerftestResult>, Error> {
    cases.iter().map(|case| run_case(server, client, case)).collect()
}

fn run_case(server: &Guest, client: &Guest, case: &PerftestCase) -> Result<PerftestResult, Error> {
    let port = next_port();
    let server_job = server.spawn(&GuestCommand::shell(server_script(case, port)).timeout(RUN_TIMEOUT))?;
    server_job.wait_ready(&format!("{} server", case.kind.program()), SERVER_START_TIMEOUT)?;
    let client_script = format!("exec {} {}", case.arguments(port), server.rdma_ip());
    let client_output = client.run(&GuestCommand::shell(client_script).timeout(RUN_TIMEOUT), Echo::Quiet)?;
    let failure = |reason: String, server: &str| Error::Perftest {
        case: case.to_string(),
        reason,
        output: format!(
            "client:\n{}\n{}\nserver:\n{server}",
            tail_lines(&client_output.stdout, 30),
            tail_lines(&client_output.stderr, 10),
        ),
    };
    // A failed client can leave the server waiting for it: do not wait for the server then
    // (the guest's shutdown ends it).
    if !client_output.success() {
        return Err(failure(format!("the client exited {}", client_output.exit_code), "(not awaited)"));
    }
    let server_output = server_job.wait(Echo::Quiet)?;
    if !server_output.success() {
        let server =
            format!("{}\n{}", tail_lines(&server_output.stdout, 10), tail_lines(&server_output.stderr, 10));
        return Err(failure(format!("the server exited {}", server_output.exit_code), &server));
    }
    let figures =
        parse_figures(case, &client_output.stdout).map_err(|reason| failure(reason, "(exited 0)"))?;
    Ok(PerftestResult { case: *case, figures })
}

/// The server side: start the server, say "ready" once its TCP port listens (the client
/// fails at once if it connects earlier), then wait for it.
fn server_script(case: &PerftestCase, port: u16) -> String {
    format!(
        "{args} &\n\
         server=$!\n\
         while ! grep -q ':{port:04X} 00000000:0000 0A' /proc/net/tcp; do\n\
         \x20 kill -0 $server 2>/dev/null || {{ wait $server; exit $?; }}\n\
         \x20 sleep 0.05\n\
         done\n\
         touch \"$SOFTROCE_READY_FILE\"\n\
         wait $server\n",
        args = case.arguments(port),
    )
}

/// Parses the result table of a perftest client's output.
pub fn parse_figures(case: &PerftestCase, output: &str) -> Result<Figures, String> {
    let lines: Vec<&str> = output.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("#bytes"))
        .ok_or_else(|| "no result table (#bytes header) in the output".to_owned())?;
    let row = lines[header + 1..]
        .iter()
        .find(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .ok_or_else(|| "no result row under the #bytes header".to_owned())?;
    let numbers: Vec<f64> = row
        .split_whitespace()
        .map(|w| w.parse::<f64>().map_err(|_| format!("`{w}` in the result row is not a number")))
        .collect::<Result<_, _>>()?;
    let expected_columns = match case.kind {
        PerftestKind::ReadLatency => 9,
        PerftestKind::ReadBandwidth => 5,
    };
    if numbers.len() != expected_columns {
        return Err(format!("the result row has {} columns, expected {expected_columns}", numbers.len()));
    }
    if numbers[0] != case.size as f64 {
        return Err(format!("the result row is for {} bytes, the run asked for {}", numbers[0], case.size));
    }
    let header = lines[header];
    match case.kind {
        PerftestKind::ReadLatency if header.contains("t_typical") => Ok(Figures::Latency {
            min: numbers[2],
            max: numbers[3],
            typical: numbers[4],
            average: numbers[5],
            stdev: numbers[6],
            p99: numbers[7],
            p999: numbers[8],
        }),
        PerftestKind::ReadBandwidth if header.contains("BW average") => Ok(Figures::Bandwidth {
            peak_mb_s: numbers[2],
            average_mb_s: numbers[3],
            msg_rate_mpps: numbers[4],
        }),
        _ => Err(format!("unexpected result header: {}", header.trim())),
    }
}

/// A size as people write it: 4 KiB, 1 MiB, 100 B.
fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The figures as a small table.
pub fn render_table(results: &[PerftestResult]) -> String {
    let mut table = String::new();
    let _ = writeln!(table, "{:<12} {:>7} {:>6}  result", "perftest", "size", "iters");
    for result in results {
        let figures = match result.figures {
            Figures::Latency { typical, average, p99, .. } => {
                format!("typical {typical:.2} us, average {average:.2} us, p99 {p99:.2} us")
            }
            Figures::Bandwidth { average_mb_s, peak_mb_s, msg_rate_mpps } => format!(
                "average {average_mb_s:.2} MB/s, peak {peak_mb_s:.2} MB/s, {:.0} msg/s",
                msg_rate_mpps * 1e6
            ),
        };
        let _ = writeln!(
            table,
            "{:<12} {:>7} {:>6}  {figures}",
            result.case.kind.program(),
            human_size(result.case.size),
            result.case.iterations
        );
    }
    table
}

/// The slowness ([`super::slowness`]) of the boot `baseline` was measured in: the larger of its 4 KiB
/// `ib_read_lat` typical latency over [`slowness::REFERENCE_READ_LAT_US`] and
/// [`slowness::REFERENCE_READ_BW_MB_S`] over its 1 MiB `ib_read_bw` average, at least 1 (a faster
/// guest keeps the limits as written). None if the baseline has neither figure.
pub fn slowness(baseline: &[PerftestResult]) -> Option<f64> {
    baseline
        .iter()
        .filter_map(|result| match (result.case.kind, result.case.size, result.figures) {
            (PerftestKind::ReadLatency, 4096, Figures::Latency { typical, .. }) if typical > 0.0 => {
                Some(typical / slowness::REFERENCE_READ_LAT_US)
            }
            (PerftestKind::ReadBandwidth, 1_048_576, Figures::Bandwidth { average_mb_s, .. })
                if average_mb_s > 0.0 =>
            {
                Some(slowness::REFERENCE_READ_BW_MB_S / average_mb_s)
            }
            _ => None,
        })
        .reduce(f64::max)
        .map(|factor| factor.clamp(1.0, slowness::MAX_FACTOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ib_read_lat -s 4096` client output, as measured in the guest (perftest 4.5).
    const LATENCY_OUTPUT: &str = "\
Device not recognized to implement inline feature. Disabling it
---------------------------------------------------------------------------------------
                    RDMA_Read Latency Test
 Dual-port       : OFF\t\tDevice         : rxe0
 Mtu             : 1024[B]
 GID index       : 1
---------------------------------------------------------------------------------------
 #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] 
 4096    1000          59.98          2010.63      61.10    \t       67.25       \t39.05  \t\t122.10  \t\t2010.63
---------------------------------------------------------------------------------------
";

    /// `ib_read_bw -s 1048576` client output, as measured in the guest.
    const BANDWIDTH_OUTPUT: &str = "\
---------------------------------------------------------------------------------------
                    RDMA_Read BW Test
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]
 1048576    100              73.24              71.65  \t\t   0.000072
---------------------------------------------------------------------------------------
";

    #[test]
    fn parses_latency_figures() {
        let figures = parse_figures(&PerftestCase::read_latency(4096), LATENCY_OUTPUT).unwrap();
        assert_eq!(
            figures,
            Figures::Latency {
                min: 59.98,
                max: 2010.63,
                typical: 61.10,
                average: 67.25,
                stdev: 39.05,
                p99: 122.10,
                p999: 2010.63
            }
        );
    }

    #[test]
    fn parses_bandwidth_figures() {
        let case = PerftestCase { kind: PerftestKind::ReadBandwidth, size: 1 << 20, iterations: 100 };
        let figures = parse_figures(&case, BANDWIDTH_OUTPUT).unwrap();
        assert_eq!(
            figures,
            Figures::Bandwidth { peak_mb_s: 73.24, average_mb_s: 71.65, msg_rate_mpps: 0.000072 }
        );
    }

    #[test]
    fn refuses_output_that_does_not_match_the_case() {
        let bw_case = PerftestCase::read_bandwidth(4096);
        // A bandwidth row for another size.
        assert!(parse_figures(&bw_case, BANDWIDTH_OUTPUT).unwrap_err().contains("1048576"));
        // A latency table read as bandwidth.
        assert!(parse_figures(&PerftestCase::read_bandwidth(4096), LATENCY_OUTPUT).is_err());
        // A failed run prints no table.
        let failed =
            " Couldn't connect to 10.99.0.2:18515\nUnable to open file descriptor for socket connection";
        assert!(
            parse_figures(&PerftestCase::read_latency(4096), failed).unwrap_err().contains("no result table")
        );
        let truncated = " #bytes #iterations    t_min[usec]\n 4096    1000    59.98\n";
        assert!(parse_figures(&PerftestCase::read_latency(4096), truncated).unwrap_err().contains("columns"));
    }

    #[test]
    fn bandwidth_iterations_bound_the_volume() {
        assert_eq!(PerftestCase::read_bandwidth(4096).iterations, 1000);
        assert_eq!(PerftestCase::read_bandwidth(1 << 20).iterations, 64);
        assert_eq!(PerftestCase::read_bandwidth(1 << 30).iterations, 10);
    }

    #[test]
    fn server_script_signals_readiness_on_the_listening_port() {
        let script = server_script(&PerftestCase::read_latency(4096), 18515);
        assert!(script.contains("ib_read_lat -d rxe0 -x \"$SOFTROCE_GID_INDEX\" -s 4096 -n 1000 -p 18515 &"));
        assert!(script.contains(":4853 00000000:0000 0A"), "18515 is 0x4853 in /proc/net/tcp");
        let check = std::process::Command::new("/bin/sh").arg("-n").arg("-c").arg(&script).status().unwrap();
        assert!(check.success());
    }

    #[test]
    fn table_shows_every_case() {
        let results = [
            PerftestResult {
                case: PerftestCase::read_latency(4096),
                figures: parse_figures(&PerftestCase::read_latency(4096), LATENCY_OUTPUT).unwrap(),
            },
            PerftestResult {
                case: PerftestCase { kind: PerftestKind::ReadBandwidth, size: 1 << 20, iterations: 100 },
                figures: Figures::Bandwidth {
                    peak_mb_s: 73.24,
                    average_mb_s: 71.65,
                    msg_rate_mpps: 0.000072,
                },
            },
        ];
        let table = render_table(&results);
        assert!(table.contains("ib_read_lat    4 KiB   1000  typical 61.10 us"), "{table}");
        assert!(
            table.contains("ib_read_bw     1 MiB    100  average 71.65 MB/s, peak 73.24 MB/s, 72 msg/s"),
            "{table}"
        );
        assert_eq!(human_size(100), "100 B");
    }

    fn latency(typical: f64) -> PerftestResult {
        PerftestResult {
            case: PerftestCase::read_latency(4096),
            figures: Figures::Latency {
                min: typical,
                max: typical,
                typical,
                average: typical,
                stdev: 0.0,
                p99: typical,
                p999: typical,
            },
        }
    }

    fn bandwidth(size: u64, average_mb_s: f64) -> PerftestResult {
        PerftestResult {
            case: PerftestCase::read_bandwidth(size),
            figures: Figures::Bandwidth { peak_mb_s: average_mb_s, average_mb_s, msg_rate_mpps: 1.0 },
        }
    }

    #[test]
    fn the_factor_is_the_larger_ratio_to_the_reference_and_never_below_one() {
        assert_eq!(slowness(&[latency(slowness::REFERENCE_READ_LAT_US * 3.0)]), Some(3.0));
        assert_eq!(slowness(&[latency(30.0)]), Some(1.0), "a fast guest keeps the limits");
        assert_eq!(slowness(&[latency(1e9)]), Some(slowness::MAX_FACTOR));
        // A busy host: the median latency barely moves, the bandwidth shows it.
        let busy = [latency(slowness::REFERENCE_READ_LAT_US * 3.0), bandwidth(1 << 20, 5.0)];
        assert_eq!(slowness(&busy), Some(slowness::REFERENCE_READ_BW_MB_S / 5.0));
        let slow_cpu = [
            latency(slowness::REFERENCE_READ_LAT_US * 4.0),
            bandwidth(1 << 20, slowness::REFERENCE_READ_BW_MB_S / 2.0),
        ];
        assert_eq!(slowness(&slow_cpu), Some(4.0));
        assert_eq!(slowness(&[bandwidth(4096, 1.0)]), None, "only the 1 MiB figure counts");
        assert_eq!(slowness(&[]), None);
    }
}
