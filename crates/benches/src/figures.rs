//! The figures a harness measured, saved as JSON so that `bench-report` can draw them.
//!
//! Each harness run writes one [`FigureSet`] (`<harness>.json`) into the directory named
//! by `$BENCH_FIGURES_DIR` when it is set (the guest stage sets it); without it nothing is
//! written and the harness only prints its tables, as before.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where harnesses save their figures (the guest stage sets it for the benchmarks it runs).
pub const DIR_ENV: &str = testbeds::softroce::rdma_tests::BENCH_FIGURES_ENV;

/// One harness run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FigureSet {
    /// `rdma-bench`, `sdk-rdma-vs-http`, `volume-load`...
    pub harness: String,
    /// Seconds since the Unix epoch when the run ended.
    pub taken_at: u64,
    /// The machine, as `uname -n` and the CPU count (figures of different machines do not
    /// compare).
    pub machine: String,
    /// How the figures were taken (phase length, concurrency, what the baseline is).
    pub method: String,
    pub figures: Vec<Figure>,
}

/// What one path measured at one size. Absent fields were not measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    /// The path measured: `rdma-sideway`, `http`, `perftest`, `ours`, `weed`...
    pub path: String,
    /// The operation, when a harness measures several (`read`, `write`); empty otherwise.
    #[serde(default)]
    pub op: String,
    /// Bytes per request.
    pub size: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub mb_per_s: Option<f64>,
    pub req_per_s: Option<f64>,
    /// CPU of the server process per GiB served, in seconds.
    pub cpu_s_per_gib: Option<f64>,
    /// The latency distribution: (percentile 0-100, microseconds), ascending.
    #[serde(default)]
    pub percentiles_us: Vec<(f64, f64)>,
}

impl Figure {
    pub fn new(path: &str, size: u64) -> Self {
        Self { path: path.to_owned(), size, ..Self::default() }
    }
}

impl FigureSet {
    /// An empty set for `harness`, stamped with this machine and now.
    pub fn new(harness: &str, method: String) -> Self {
        let taken_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let machine = format!("{} ({cpus} CPUs)", host.trim());
        Self { harness: harness.to_owned(), taken_at, machine, method, figures: Vec::new() }
    }

    /// Writes `<harness>.json` into `$BENCH_FIGURES_DIR`, if set; returns the path.
    pub fn save_if_asked(&self) -> std::io::Result<Option<PathBuf>> {
        match std::env::var_os(DIR_ENV) {
            Some(dir) => self.save_in(Path::new(&dir)).map(Some),
            None => Ok(None),
        }
    }

    pub fn save_in(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.harness));
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// Every set saved in `dir`, by harness name.
    pub fn load_all(dir: &Path) -> std::io::Result<Vec<Self>> {
        let mut sets = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path)?;
                let set: Self = serde_json::from_str(&text)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                sets.push(set);
            }
        }
        sets.sort_by(|a, b| a.harness.cmp(&b.harness));
        Ok(sets)
    }
}

/// The sample of `sorted` (ascending, not empty) at quantile `q` (0 to 1): the nearest
/// rank, as every figure here is taken.
pub fn quantile(sorted: &[std::time::Duration], q: f64) -> std::time::Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// The latency distribution of `sorted` (ascending) at the percentiles a report plots.
pub fn percentiles_us(sorted: &[std::time::Duration]) -> Vec<(f64, f64)> {
    if sorted.is_empty() {
        return Vec::new();
    }
    [1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9]
        .iter()
        .map(|&p| (p, quantile(sorted, p / 100.0).as_nanos() as f64 / 1e3))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_set_saved_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = FigureSet::new("rdma-bench", "3 s phases".into());
        let samples: Vec<_> = (1..=1000).map(Duration::from_micros).collect();
        set.figures.push(Figure {
            p50_us: Some(500.0),
            percentiles_us: percentiles_us(&samples),
            ..Figure::new("rdma-sideway", 4096)
        });
        set.save_in(dir.path()).unwrap();
        assert_eq!(FigureSet::load_all(dir.path()).unwrap(), vec![set.clone()]);
        let distribution = &set.figures[0].percentiles_us;
        assert_eq!(distribution[3], (50.0, 501.0));
        assert_eq!(distribution.last(), Some(&(99.9, 999.0)));
    }
}
