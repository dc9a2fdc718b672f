//! weed's `-minFreeSpace`: a data directory whose file system has less free space than
//! its minimum takes no more writes. Its volumes report read-only (so the master stops
//! assigning to them) and the master is told the directory has no free volume slots,
//! until space is freed; reads and deletes go on. The store checks at start and then
//! every `--disk-check-interval-secs` (weed checks every minute).
//!
//! This stops writes before the disk is full. When a write does hit a full disk, the
//! volume cuts its files back to where they were (see `Volume::append`), so nothing
//! acknowledged is lost either way.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The free space a data directory must keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinFreeSpace {
    /// Percent of the file system's size (weed's default: 1).
    Percent(f32),
    Bytes(u64),
}

impl Default for MinFreeSpace {
    fn default() -> Self {
        MinFreeSpace::Percent(1.0)
    }
}

/// weed's rule: a number up to 100 is a percentage, anything else a size such as
/// `10GiB` or `500MB` (SI and IEC units), which must be more than 100 bytes.
impl FromStr for MinFreeSpace {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad =
            || format!("{text:?} is neither a percentage (0-100) nor a size over 100 bytes (like 10GiB)");
        if let Ok(percent) = text.parse::<f32>() {
            return (0.0..=100.0)
                .contains(&percent)
                .then_some(MinFreeSpace::Percent(percent))
                .ok_or_else(bad);
        }
        match parse_bytes(text) {
            Some(bytes) if bytes > 100 => Ok(MinFreeSpace::Bytes(bytes)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for MinFreeSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinFreeSpace::Percent(p) => write!(f, "{p:.2}%"),
            MinFreeSpace::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

impl MinFreeSpace {
    /// Whether `usage` leaves less free space than this minimum.
    pub fn is_low(&self, usage: DiskUsage) -> bool {
        match *self {
            MinFreeSpace::Percent(p) => usage.percent_free() < p,
            MinFreeSpace::Bytes(b) => usage.free < b,
        }
    }
}

/// `42`, `42B`, `42 KB`, `42KiB`, `1.5G` ...: SI units are powers of 1000, IEC units
/// (`Ki`, `Mi`, ...) of 1024; a bare `K`/`M`/`G`/`T`/`P` is SI, as in weed.
fn parse_bytes(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let (prefix, base) = match unit.strip_suffix('i') {
        Some(prefix) => (prefix, 1024f64),
        None => (unit, 1000f64),
    };
    let power = match prefix {
        "" => 0,
        "k" => 1,
        "m" => 2,
        "g" => 3,
        "t" => 4,
        "p" => 5,
        "e" => 6,
        _ => return None,
    };
    let bytes = number * base.powi(power);
    (bytes.is_finite() && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Size and free space of the file system holding a directory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskUsage {
    pub all: u64,
    pub free: u64,
}

impl DiskUsage {
    /// `statvfs` of `dir`. Free counts the blocks reserved for root too, as weed does.
    #[allow(unsafe_code)]
    pub fn of(dir: &Path) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
        // SAFETY: `path` is a valid C string and `stat` points to writable memory of the
        // right type; statvfs only writes into it.
        let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        let block = stat.f_frsize;
        Ok(DiskUsage { all: stat.f_blocks * block, free: stat.f_bfree * block })
    }

    pub fn used(&self) -> u64 {
        self.all.saturating_sub(self.free)
    }

    pub fn percent_free(&self) -> f32 {
        if self.all == 0 { 0.0 } else { self.free as f32 / self.all as f32 * 100.0 }
    }

    pub fn percent_used(&self) -> f32 {
        if self.all == 0 { 0.0 } else { self.used() as f32 / self.all as f32 * 100.0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weed_spellings_of_the_minimum() {
        let parse = |s: &str| s.parse::<MinFreeSpace>();
        assert_eq!(parse("1"), Ok(MinFreeSpace::Percent(1.0)));
        assert_eq!(parse(" 0.5 "), Ok(MinFreeSpace::Percent(0.5)));
        assert_eq!(parse("100"), Ok(MinFreeSpace::Percent(100.0)));
        assert_eq!(parse("10GiB"), Ok(MinFreeSpace::Bytes(10 << 30)));
        assert_eq!(parse("10G"), Ok(MinFreeSpace::Bytes(10_000_000_000)));
        assert_eq!(parse("500 MB"), Ok(MinFreeSpace::Bytes(500_000_000)));
        assert_eq!(parse("1.5KiB"), Ok(MinFreeSpace::Bytes(1536)));
        assert_eq!(parse("101B"), Ok(MinFreeSpace::Bytes(101)));
        for bad in ["", "-1", "101", "100B", "10 furlongs", "1e400", "GiB", "NaN"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn low_is_strictly_below_the_minimum() {
        let usage = DiskUsage { all: 1000, free: 10 };
        assert!(!MinFreeSpace::Percent(1.0).is_low(usage));
        assert!(MinFreeSpace::Percent(1.5).is_low(usage));
        assert!(!MinFreeSpace::Bytes(10).is_low(usage));
        assert!(MinFreeSpace::Bytes(11).is_low(usage));
        assert!(MinFreeSpace::Percent(0.1).is_low(DiskUsage { all: 0, free: 0 }), "an empty file system");
    }

    #[test]
    fn usage_of_a_real_directory() {
        let usage = DiskUsage::of(Path::new("/")).unwrap();
        assert!(usage.all > 0 && usage.free <= usage.all);
        assert!(DiskUsage::of(Path::new("/no/such/dir")).is_err());
    }
}
