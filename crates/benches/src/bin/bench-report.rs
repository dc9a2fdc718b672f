//! `bench-report [DIR] [--out FILE]`: draws the figures the harnesses saved in DIR
//! (default `$BENCH_FIGURES_DIR`) into one self-contained HTML page (default
//! `DIR/index.html`) and prints its path.

use std::path::PathBuf;
use std::process::ExitCode;

use benches::figures::{DIR_ENV, FigureSet};

fn main() -> ExitCode {
    match run() {
        Ok(path) => {
            println!("bench-report: {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<PathBuf, String> {
    let mut args = std::env::args().skip(1);
    let (mut dir, mut out) = (std::env::var_os(DIR_ENV).map(PathBuf::from), None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a file")?)),
            "-h" | "--help" => return Err("usage: bench-report [DIR] [--out FILE]".into()),
            _ => dir = Some(PathBuf::from(arg)),
        }
    }
    let dir = dir.ok_or_else(|| format!("give the figures' directory, or set {DIR_ENV}"))?;
    let sets = FigureSet::load_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let html = benches::report::render(&sets)?;
    let out = out.unwrap_or_else(|| dir.join("index.html"));
    std::fs::write(&out, html).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}
