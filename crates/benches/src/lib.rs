//! Benchmarks live in `benches/`; run them with `cargo bench -p benches`. The harnesses
//! (`src/bin`) print their figures and, when `$BENCH_FIGURES_DIR` is set, save them
//! ([`figures`]); `bench-report` draws the saved figures into one HTML page ([`report`]);
//! the guest harnesses share their running and flags ([`harness`]).

pub mod figures;
pub mod harness;
pub mod report;
