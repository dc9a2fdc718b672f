//! How much slower this boot's guest runs than the one the guest tests were written on,
//! and every time limit of a guest test scaled by it.
//!
//! Under full emulation the guest's speed follows the host's: a loaded or older host
//! runs the same guest several times slower (`ib_read_lat` 4 KiB: 58-70 us on the
//! machine the tests were tuned on, 167-252 us on a fresh machine where fixed 4 s
//! limits then failed). The guest stage measures perftest first in each boot
//! ([`super::perftest`]), derives the factor here ([`from_baseline`]), and hands it to
//! every test and benchmark it runs in `$SOFTROCE_SLOWNESS`; a test takes each of its
//! time limits through [`scaled`], so a limit means the same amount of work on any
//! host. Outside the stage (a test run by hand, `testbeds run`) the factor is 1.
//!
//! Two figures, the larger ratio wins: the typical 4 KiB READ latency shows a slower
//! CPU, but is a median, so a host busy with other work (the guest's one CPU thread
//! descheduled often) barely moves it: on a host at a load of 13 on 2 cores it read
//! 3x the reference while the 1 MiB READ bandwidth, which needs the emulated CPU all
//! the time, read 12x and the tests ran about as much slower.

use std::time::Duration;

use super::perftest::{Figures, PerftestKind, PerftestResult};

/// The environment variable the guest stage sets for every command it runs.
pub const ENV: &str = "SOFTROCE_SLOWNESS";

/// `ib_read_lat -s 4096`'s typical latency where the guest tests' limits were set: the
/// middle of the 58-70 us measured there.
pub const REFERENCE_READ_LAT_US: f64 = 64.0;

/// `ib_read_bw -s 1048576`'s average where the guest tests' limits were set (the
/// emulated device's ceiling there, ~50-70 MB/s, with the latency above).
pub const REFERENCE_READ_BW_MB_S: f64 = 65.0;

/// The factor is kept within this: a guest slower than that is broken, not slow.
const MAX_FACTOR: f64 = 20.0;

/// The slowness of the boot `baseline` was measured in: the larger of its 4 KiB
/// `ib_read_lat` typical latency over [`REFERENCE_READ_LAT_US`] and
/// [`REFERENCE_READ_BW_MB_S`] over its 1 MiB `ib_read_bw` average, at least 1 (a faster
/// guest keeps the limits as written). None if the baseline has neither figure.
pub fn from_baseline(baseline: &[PerftestResult]) -> Option<f64> {
    baseline
        .iter()
        .filter_map(|result| match (result.case.kind, result.case.size, result.figures) {
            (PerftestKind::ReadLatency, 4096, Figures::Latency { typical, .. }) if typical > 0.0 => {
                Some(typical / REFERENCE_READ_LAT_US)
            }
            (PerftestKind::ReadBandwidth, 1_048_576, Figures::Bandwidth { average_mb_s, .. })
                if average_mb_s > 0.0 =>
            {
                Some(REFERENCE_READ_BW_MB_S / average_mb_s)
            }
            _ => None,
        })
        .reduce(f64::max)
        .map(|factor| factor.clamp(1.0, MAX_FACTOR))
}

/// This process's slowness: `$SOFTROCE_SLOWNESS` (at least 1), or 1 when it is not set
/// or not a number.
pub fn factor() -> f64 {
    std::env::var(ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|f| f.is_finite())
        .map_or(1.0, |f| f.clamp(1.0, MAX_FACTOR))
}

/// `limit` (written for the reference guest) scaled to this guest's speed.
pub fn scaled(limit: Duration) -> Duration {
    limit.mul_f64(factor())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::softroce::perftest::PerftestCase;

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
        assert_eq!(from_baseline(&[latency(REFERENCE_READ_LAT_US * 3.0)]), Some(3.0));
        assert_eq!(from_baseline(&[latency(30.0)]), Some(1.0), "a fast guest keeps the limits");
        assert_eq!(from_baseline(&[latency(1e9)]), Some(MAX_FACTOR));
        // A busy host: the median latency barely moves, the bandwidth shows it.
        let busy = [latency(REFERENCE_READ_LAT_US * 3.0), bandwidth(1 << 20, 5.0)];
        assert_eq!(from_baseline(&busy), Some(REFERENCE_READ_BW_MB_S / 5.0));
        let slow_cpu =
            [latency(REFERENCE_READ_LAT_US * 4.0), bandwidth(1 << 20, REFERENCE_READ_BW_MB_S / 2.0)];
        assert_eq!(from_baseline(&slow_cpu), Some(4.0));
        assert_eq!(from_baseline(&[bandwidth(4096, 1.0)]), None, "only the 1 MiB figure counts");
        assert_eq!(from_baseline(&[]), None);
    }
}
