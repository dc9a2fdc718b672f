//! What the guest harnesses (`sdk-rdma-vs-http`, `filer-rdma-vs-http`, `cold-reads`)
//! share around their own work: running it, and the flags they read alike.

/// A harness's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Parses the options with `options` (a bad one: its message and exit status 2), then
/// runs `run` on a two-worker tokio runtime (a failure: its message and exit status 1).
/// Messages start with the harness's `name`.
pub fn main<O>(
    name: &str,
    options: impl FnOnce() -> Result<O, String>,
    run: impl AsyncFnOnce(&O) -> Result<(), BoxError>,
) {
    let options = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let result = runtime.map_err(BoxError::from).and_then(|rt| rt.block_on(run(&options)));
    if let Err(e) = result {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}

/// `--sizes 4096,65536`: positive byte counts, comma-separated.
pub fn sizes(value: &str) -> Option<Vec<usize>> {
    value.split(',').map(|s| s.parse().ok().filter(|n| *n > 0)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_positive_numbers() {
        assert_eq!(super::sizes("4096,65536"), Some(vec![4096, 65536]));
        assert_eq!(super::sizes("4096,0"), None);
        assert_eq!(super::sizes("4k"), None);
    }
}
