//! The Soft-RoCE guest: a QEMU (full emulation) guest running Debian's own kernel with
//! `rdma_rxe`, where RDMA tests and benchmarks run on real verbs. See the crate docs for
//! the whole picture; the parts are:
//!
//! - [`image`]: fetches the kernel and builds the initramfs, once, into a cache;
//! - [`guest`]: boots guests (one, or two joined by a socket netdev) and runs commands in them;
//! - [`perftest`]: the verbs-level baseline (`ib_read_lat`, `ib_read_bw`) and its parser;
//! - [`slowness`]: how much slower this boot runs than the reference, and time limits
//!   scaled by it (what guest tests take their limits through);
//! - [`rdma_tests`]: finds the `rdma_*` test executables and runs them in a guest.

pub mod guest;
pub mod image;
pub mod perftest;
pub mod rdma_tests;
pub mod slowness;

use std::path::PathBuf;
use std::time::Duration;

pub use guest::{CommandOutput, Echo, Guest, GuestCommand, GuestConfig, GuestPair, Job};
pub use image::GuestImage;

/// How many console lines an error carries: enough to show a panic or the failing init step.
pub const CONSOLE_TAIL_LINES: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{tool}` is missing (Debian package {package}); run scripts/install-deps")]
    MissingTool { tool: String, package: String },
    #[error(
        "{path} is not a static executable: the initramfs has no libc, so it needs busybox-static \
         (apt-get install busybox-static)"
    )]
    BusyboxNotStatic { path: PathBuf },
    #[error("finding the Debian kernel package: {0}")]
    KernelPackage(String),
    #[error("`{command}` failed ({status}):\n{stderr}")]
    HostCommand { command: String, status: String, stderr: String },
    #[error("I/O error in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid guest setup: {0}")]
    InvalidSetup(String),
    #[error("{guest} did not boot: {reason}\n--- last lines of {console} ---\n{console_tail}")]
    Boot { guest: String, reason: String, console: PathBuf, console_tail: String },
    #[error(
        "{guest} booted but could not bring up rxe0: {reason}\n--- last lines of {console} ---\n{console_tail}"
    )]
    Rxe { guest: String, reason: String, console: PathBuf, console_tail: String },
    #[error(
        "lost {guest} while running a command: {reason}\n--- last lines of {console} ---\n{console_tail}"
    )]
    GuestLost { guest: String, reason: String, console: PathBuf, console_tail: String },
    #[error(
        "command in {guest} did not finish within {timeout:?} and was killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    )]
    CommandTimedOut { guest: String, timeout: Duration, stdout: String, stderr: String },
    #[error(
        "{what} in {guest} did not signal readiness within {timeout:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    )]
    NotReady { guest: String, what: String, timeout: Duration, stdout: String, stderr: String },
    #[error("perftest {case}: {reason}\n--- output ---\n{output}")]
    Perftest { case: String, reason: String, output: String },
    #[error("building or finding the test executables: {0}")]
    Cargo(String),
    #[error("no RDMA test ran: {0}")]
    NoRdmaTests(String),
}

/// The last `n` lines of `text`.
pub(crate) fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_only_the_last_lines() {
        let text = (1..=50).map(|i| format!("line {i}")).collect::<Vec<_>>().join("\n");
        let tail = tail_lines(&text, 3);
        assert_eq!(tail, "line 48\nline 49\nline 50");
        assert_eq!(tail_lines("short", 40), "short");
        assert_eq!(tail_lines("", 40), "");
    }
}
