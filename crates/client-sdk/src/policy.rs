//! When reads use RDMA and when they fall back to HTTP: the policy, the per-server health
//! of each RDMA transport (with its backoff), and the counters an operator reads to see
//! why RDMA was not used: for the whole client, and for the reads of one [`traced`]
//! future (a filer file's chunks).

use crate::TransportErrorKind;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Whether reads use the RDMA transports given to the builder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RdmaPolicy {
    /// HTTP only; RDMA transports are ignored and no fallback is counted.
    Off,
    /// RDMA first when it is healthy for the server; HTTP for any request RDMA cannot
    /// serve (unavailable, timed out, failed verification, server error).
    #[default]
    Prefer,
    /// RDMA only: a read RDMA cannot serve fails instead of falling back, and backoff
    /// is ignored. For benchmarks and tests that must know the bytes came over RDMA.
    Require,
}

/// How long a transport that failed on a server is skipped there: `initial` after the
/// first failure, doubling with each consecutive failure up to `max`; a success resets it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 s, doubling to 60 s: a flapping link costs at most one slow attempt a second,
    /// a server without RDMA one attempt a minute.
    fn default() -> Self {
        Self { initial: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

impl Backoff {
    fn after(&self, consecutive_failures: u32) -> Duration {
        let doublings = consecutive_failures.saturating_sub(1).min(31);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }
}

/// Why a read did not use a preferred (RDMA) transport and went on to the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FallbackReason {
    /// The policy prefers RDMA but the client was built without an RDMA transport.
    NoRdmaTransport,
    /// The server, or this host, does not offer the transport (no RDMA service, no device).
    NotOffered,
    /// The transport is broken right now (connection refused, session or queue pair lost).
    Unavailable,
    /// No answer within the RDMA timeout.
    Timeout,
    /// Bytes arrived but failed the header or CRC32-C check; they were dropped.
    VerificationFailed,
    /// The server answered the transport's request with an error.
    ServerError,
    /// Skipped without trying: the transport failed on this server recently and is
    /// waiting out its backoff.
    Backoff,
}

impl FallbackReason {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackReason::NoRdmaTransport => "no_rdma_transport",
            FallbackReason::NotOffered => "not_offered",
            FallbackReason::Unavailable => "unavailable",
            FallbackReason::Timeout => "timeout",
            FallbackReason::VerificationFailed => "verification_failed",
            FallbackReason::ServerError => "server_error",
            FallbackReason::Backoff => "backoff",
        }
    }

    /// The reason a failed attempt of this kind gives, or `None` when the error is
    /// authoritative (not found) and must not fall back.
    pub(crate) fn of(kind: TransportErrorKind) -> Option<Self> {
        match kind {
            TransportErrorKind::NotOffered => Some(FallbackReason::NotOffered),
            TransportErrorKind::Unavailable => Some(FallbackReason::Unavailable),
            TransportErrorKind::Timeout => Some(FallbackReason::Timeout),
            TransportErrorKind::Corrupt => Some(FallbackReason::VerificationFailed),
            TransportErrorKind::Server(_) => Some(FallbackReason::ServerError),
            TransportErrorKind::NotFound => None,
        }
    }

    /// Whether this failure says the transport, not the needle, is the problem, so the
    /// transport is skipped on that server for a while. A failed verification does not:
    /// the needle may be corrupt on disk or was being rewritten, and HTTP will tell.
    fn backs_off(self) -> bool {
        !matches!(self, FallbackReason::VerificationFailed | FallbackReason::Backoff)
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one RDMA transport fares on one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportHealth {
    pub transport: &'static str,
    pub server: String,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Why it last failed.
    pub last_failure: FallbackReason,
    /// How long it is still skipped on this server (zero: it is tried on the next read).
    pub retry_in: Duration,
}

/// Counters since the client was built, in the shape of metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadMetrics {
    /// Reads served, by transport name.
    pub reads: BTreeMap<&'static str, u64>,
    /// Reads that left a transport for the next one, by transport name and reason.
    pub fallbacks: BTreeMap<(&'static str, FallbackReason), u64>,
    /// Volume location lookups sent to the master (cache misses, expiries and refreshes).
    pub location_lookups: u64,
    /// Cached locations dropped because an error suggested the volume moved.
    pub location_refreshes: u64,
}

impl ReadMetrics {
    /// The counters in the Prometheus text format.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::from("# TYPE seaweed_sdk_reads_total counter\n");
        for (transport, n) in &self.reads {
            out += &format!("seaweed_sdk_reads_total{{transport=\"{transport}\"}} {n}\n");
        }
        out += "# TYPE seaweed_sdk_fallbacks_total counter\n";
        for ((transport, reason), n) in &self.fallbacks {
            out += &format!(
                "seaweed_sdk_fallbacks_total{{transport=\"{transport}\",reason=\"{reason}\"}} {n}\n"
            );
        }
        out += "# TYPE seaweed_sdk_location_lookups_total counter\n";
        out += &format!("seaweed_sdk_location_lookups_total {}\n", self.location_lookups);
        out += "# TYPE seaweed_sdk_location_refreshes_total counter\n";
        out += &format!("seaweed_sdk_location_refreshes_total {}\n", self.location_refreshes);
        out
    }
}

/// The reads made inside one [`traced`] future: served, by transport; fallbacks on the
/// way, by transport and reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReadTrace {
    pub(crate) reads: BTreeMap<&'static str, u64>,
    pub(crate) fallbacks: BTreeMap<(&'static str, FallbackReason), u64>,
}

tokio::task_local! {
    /// The trace of the [`traced`] future being polled, if any. Task-local, so concurrent
    /// reads (each traced on its own) never count into each other's trace.
    static TRACE: RefCell<ReadTrace>;
}

/// Runs `reads` and returns, with its output, what served the reads it made.
pub(crate) async fn traced<F: Future>(reads: F) -> (F::Output, ReadTrace) {
    TRACE
        .scope(RefCell::new(ReadTrace::default()), async {
            let output = reads.await;
            (output, TRACE.with(|trace| trace.take()))
        })
        .await
}

/// Adds to the trace of the [`traced`] future being polled (nothing outside one).
fn trace(record: impl FnOnce(&mut ReadTrace)) {
    let _ = TRACE.try_with(|trace| record(&mut trace.borrow_mut()));
}

#[derive(Debug)]
struct Health {
    consecutive_failures: u32,
    last_failure: FallbackReason,
    retry_at: Instant,
}

/// The mutable half of the policy: health per (transport, server) and the counters.
#[derive(Debug, Default)]
pub(crate) struct PolicyState {
    backoff: Backoff,
    health: Mutex<HashMap<(&'static str, String), Health>>,
    metrics: Mutex<ReadMetrics>,
}

impl PolicyState {
    pub(crate) fn new(backoff: Backoff) -> Self {
        Self { backoff, ..Self::default() }
    }

    /// Whether a read may try `transport` on `server` now: yes if it has not failed
    /// there, no while it waits out its backoff. When the backoff is over, one read gets
    /// to probe: the wait is pushed back by `probe_window` (the attempt's timeout) so
    /// concurrent reads keep falling back instead of all trying a transport that may
    /// still be broken. The probe's success or failure then settles the entry.
    pub(crate) fn may_try(&self, transport: &'static str, server: &str, probe_window: Duration) -> bool {
        let mut health = self.health.lock().expect("not poisoned");
        let Some(entry) = health.get_mut(&(transport, server.to_owned())) else {
            return true;
        };
        let now = Instant::now();
        if now < entry.retry_at {
            return false;
        }
        entry.retry_at = now + probe_window;
        true
    }

    pub(crate) fn succeeded(&self, transport: &'static str, server: &str) {
        self.health.lock().expect("not poisoned").remove(&(transport, server.to_owned()));
        *self.metrics.lock().expect("not poisoned").reads.entry(transport).or_default() += 1;
        trace(|t| *t.reads.entry(transport).or_default() += 1);
    }

    /// Records a failed attempt: starts or extends the backoff when the reason says the
    /// transport is at fault, clears it otherwise.
    pub(crate) fn failed(&self, transport: &'static str, server: &str, reason: FallbackReason) {
        let mut health = self.health.lock().expect("not poisoned");
        if !reason.backs_off() {
            // The transport reached the server and delivered: it is healthy there.
            health.remove(&(transport, server.to_owned()));
            return;
        }
        let entry = health.entry((transport, server.to_owned())).or_insert(Health {
            consecutive_failures: 0,
            last_failure: reason,
            retry_at: Instant::now(),
        });
        entry.consecutive_failures = entry.consecutive_failures.saturating_add(1);
        entry.last_failure = reason;
        entry.retry_at = Instant::now() + self.backoff.after(entry.consecutive_failures);
    }

    /// Counts one fallback and logs it at debug level.
    pub(crate) fn fell_back(&self, transport: &'static str, reason: FallbackReason, server: &str, fid: &str) {
        tracing::debug!(transport, %reason, server, fid, "read falls back from this transport to the next (HTTP last)");
        *self.metrics.lock().expect("not poisoned").fallbacks.entry((transport, reason)).or_default() += 1;
        trace(|t| *t.fallbacks.entry((transport, reason)).or_default() += 1);
    }

    pub(crate) fn counted_lookup(&self) {
        self.metrics.lock().expect("not poisoned").location_lookups += 1;
    }

    pub(crate) fn counted_refresh(&self) {
        self.metrics.lock().expect("not poisoned").location_refreshes += 1;
    }

    pub(crate) fn metrics(&self) -> ReadMetrics {
        self.metrics.lock().expect("not poisoned").clone()
    }

    pub(crate) fn health(&self) -> Vec<TransportHealth> {
        let now = Instant::now();
        let mut all: Vec<TransportHealth> = self
            .health
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|((transport, server), h)| TransportHealth {
                transport,
                server: server.clone(),
                consecutive_failures: h.consecutive_failures,
                last_failure: h.last_failure,
                retry_in: h.retry_at.saturating_duration_since(now),
            })
            .collect();
        all.sort_by(|a, b| (a.transport, &a.server).cmp(&(b.transport, &b.server)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        let waits: Vec<u128> = (1..=6).map(|n| b.after(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.after(u32::MAX), Duration::from_secs(1), "no overflow");
    }

    #[test]
    fn verification_failures_do_not_back_off_and_success_resets() {
        let state =
            PolicyState::new(Backoff { initial: Duration::from_secs(60), max: Duration::from_secs(60) });
        let window = Duration::from_secs(1);
        state.failed("rdma", "a:1", FallbackReason::VerificationFailed);
        assert!(state.may_try("rdma", "a:1", window));
        state.failed("rdma", "a:1", FallbackReason::Timeout);
        assert!(!state.may_try("rdma", "a:1", window));
        assert!(state.may_try("rdma", "b:1", window), "health is per server");
        assert_eq!(state.health()[0].last_failure, FallbackReason::Timeout);
        state.succeeded("rdma", "a:1");
        assert!(state.may_try("rdma", "a:1", window));
        assert_eq!(state.metrics().reads.get("rdma"), Some(&1));
    }

    #[test]
    fn after_a_backoff_one_read_probes_while_the_others_keep_falling_back() {
        let state = PolicyState::new(Backoff { initial: Duration::ZERO, max: Duration::ZERO });
        state.failed("rdma", "a:1", FallbackReason::Unavailable);
        let window = Duration::from_secs(60);
        assert!(state.may_try("rdma", "a:1", window), "the backoff (zero) is over: probe");
        assert!(!state.may_try("rdma", "a:1", window), "a probe is in flight");
        state.failed("rdma", "a:1", FallbackReason::Unavailable);
        assert!(state.may_try("rdma", "a:1", window), "the failed probe set a new (zero) backoff");
    }

    #[tokio::test]
    async fn a_trace_counts_only_the_reads_of_its_own_future() {
        let state = PolicyState::default();
        state.succeeded("http", "a:1");
        let (_, trace) = traced(async {
            state.fell_back("rdma", FallbackReason::Timeout, "a:1", "3,01637037d6");
            state.succeeded("http", "a:1");
            let (_, inner) = traced(async { state.succeeded("rdma", "a:1") }).await;
            assert_eq!(inner.reads.get("rdma"), Some(&1), "a nested trace is its own");
        })
        .await;
        assert_eq!(trace.reads.get("http"), Some(&1));
        assert_eq!(trace.reads.get("rdma"), None);
        assert_eq!(trace.fallbacks.get(&("rdma", FallbackReason::Timeout)), Some(&1));
        assert_eq!(state.metrics().reads.get("http"), Some(&2), "the client's counters count all");
    }

    #[test]
    fn prometheus_text_names_transport_and_reason() {
        let state = PolicyState::default();
        state.fell_back("rdma", FallbackReason::NotOffered, "a:1", "3,01637037d6");
        state.succeeded("http", "a:1");
        let text = state.metrics().to_prometheus();
        assert!(
            text.contains("seaweed_sdk_fallbacks_total{transport=\"rdma\",reason=\"not_offered\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("seaweed_sdk_reads_total{transport=\"http\"} 1\n"), "{text}");
    }
}
