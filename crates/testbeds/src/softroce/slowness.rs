//! How much slower this boot's guest runs than the one the guest tests were written on,
//! and every time limit of a guest test scaled by it.
//!
//! Under full emulation the guest's speed follows the host's: a loaded or older host
//! runs the same guest several times slower (`ib_read_lat` 4 KiB: 58-70 us on the
//! machine the tests were tuned on, 167-252 us on a fresh machine where fixed 4 s
//! limits then failed). The guest stage measures perftest first in each boot
//! ([`super::perftest`]), derives the factor from it ([`super::perftest::slowness`]), and hands it to
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

/// The environment variable the guest stage sets for every command it runs.
pub const ENV: &str = "SOFTROCE_SLOWNESS";

/// `ib_read_lat -s 4096`'s typical latency where the guest tests' limits were set: the
/// middle of the 58-70 us measured there.
pub const REFERENCE_READ_LAT_US: f64 = 64.0;

/// `ib_read_bw -s 1048576`'s average where the guest tests' limits were set (the
/// emulated device's ceiling there, ~50-70 MB/s, with the latency above).
pub const REFERENCE_READ_BW_MB_S: f64 = 65.0;

/// The factor is kept within this: a guest slower than that is broken, not slow.
pub const MAX_FACTOR: f64 = 20.0;

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
