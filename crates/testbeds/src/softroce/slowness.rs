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

use std::time::Duration;

use super::perftest::{Figures, PerftestKind, PerftestResult};

/// The environment variable the guest stage sets for every command it runs.
pub const ENV: &str = "SOFTROCE_SLOWNESS";

/// `ib_read_lat -s 4096`'s typical latency where the guest tests' limits were set: the
/// middle of the 58-70 us measured there.
pub const REFERENCE_READ_LAT_US: f64 = 64.0;

/// The factor is kept within this: a guest slower than that is broken, not slow.
const MAX_FACTOR: f64 = 20.0;

/// The slowness of the boot `baseline` was measured in: its 4 KiB `ib_read_lat`
/// typical latency over [`REFERENCE_READ_LAT_US`], at least 1 (a faster guest keeps the
/// limits as written). None if the baseline has no such figure.
pub fn from_baseline(baseline: &[PerftestResult]) -> Option<f64> {
    baseline.iter().find_map(|result| match (result.case.kind, result.case.size, result.figures) {
        (PerftestKind::ReadLatency, 4096, Figures::Latency { typical, .. }) if typical > 0.0 => {
            Some((typical / REFERENCE_READ_LAT_US).clamp(1.0, MAX_FACTOR))
        }
        _ => None,
    })
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

    #[test]
    fn the_factor_is_the_latency_over_the_reference_and_never_below_one() {
        assert_eq!(from_baseline(&[latency(REFERENCE_READ_LAT_US * 3.0)]), Some(3.0));
        assert_eq!(from_baseline(&[latency(30.0)]), Some(1.0), "a fast guest keeps the limits");
        assert_eq!(from_baseline(&[latency(1e9)]), Some(MAX_FACTOR));
        let bandwidth = PerftestResult {
            case: PerftestCase::read_bandwidth(4096),
            figures: Figures::Bandwidth { peak_mb_s: 1.0, average_mb_s: 1.0, msg_rate_mpps: 1.0 },
        };
        assert_eq!(from_baseline(&[bandwidth]), None);
    }
}
