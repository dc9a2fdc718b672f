//! weed's `-concurrentUploadLimitMB` / `-concurrentDownloadLimitMB`: a byte budget that
//! requests draw from before they hold data in memory, waiting at most a timeout for
//! room (then the caller answers weed's 429).
//!
//! Unlike weed, which admits a request whenever the bytes in flight are at most the
//! limit and adds its size afterwards (so the total can overshoot by one request), the
//! budget here is strict: bytes in flight never exceed the limit, except that a request
//! larger than the whole budget is charged the whole budget, i.e. admitted alone rather
//! than never. Waiters are served first come, first served (tokio's semaphore is fair),
//! so a large request is not starved by a stream of small ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Permits count KiB, so one `acquire_many` (a `u32`) covers up to 4 TiB.
const UNIT: u64 = 1024;

/// A byte budget shared by concurrent requests; a limit of 0 is unlimited (the
/// bytes are still counted for the gauge).
pub struct Budget {
    /// `None` when unlimited.
    permits: Option<Arc<Semaphore>>,
    /// The limit in bytes (0: unlimited).
    limit: u64,
    timeout: Duration,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    in_flight: AtomicU64,
    refused: AtomicU64,
}

/// No room came free within the timeout.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy {
    /// Bytes in flight when the wait gave up.
    pub in_flight: u64,
    pub limit: u64,
}

/// Bytes drawn from a [`Budget`]; dropping it (reply sent, request cancelled, error)
/// gives them back.
#[must_use = "the bytes are given back when this is dropped"]
pub struct Held {
    _permit: Option<OwnedSemaphorePermit>,
    bytes: u64,
    counters: Arc<Counters>,
}

impl Budget {
    pub fn new(limit_mb: u64, timeout: Duration) -> Self {
        let limit = limit_mb.saturating_mul(1 << 20);
        let permits = (limit > 0).then(|| {
            let units = usize::try_from(limit / UNIT).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
            Arc::new(Semaphore::new(units))
        });
        Self { permits, limit, timeout, counters: Arc::default() }
    }

    /// Draws `bytes` (at most the whole budget), waiting up to the timeout for room.
    pub async fn admit(&self, bytes: u64) -> Result<Held, Busy> {
        let Some(permits) = &self.permits else {
            return Ok(self.held(None, bytes));
        };
        let units = bytes.div_ceil(UNIT).min(self.limit / UNIT);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        match tokio::time::timeout(self.timeout, Arc::clone(permits).acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(self.held(Some(permit), bytes)),
            // Timed out, or the semaphore was closed (never done here): no room.
            _ => {
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                Err(Busy { in_flight: self.in_flight(), limit: self.limit })
            }
        }
    }

    fn held(&self, permit: Option<OwnedSemaphorePermit>, bytes: u64) -> Held {
        self.counters.in_flight.fetch_add(bytes, Ordering::Relaxed);
        Held { _permit: permit, bytes, counters: Arc::clone(&self.counters) }
    }

    /// Bytes drawn and not yet given back.
    pub fn in_flight(&self) -> u64 {
        self.counters.in_flight.load(Ordering::Relaxed)
    }

    /// Requests refused because the wait timed out.
    pub fn refused(&self) -> u64 {
        self.counters.refused.load(Ordering::Relaxed)
    }
}

impl Held {
    /// One hold of both draws, given back together (a read that inflates what it read
    /// draws a second time).
    pub fn merge(mut self, mut other: Held) -> Held {
        self._permit = match (self._permit.take(), other._permit.take()) {
            (Some(mut mine), Some(theirs)) => {
                mine.merge(theirs);
                Some(mine)
            }
            (mine, theirs) => mine.or(theirs),
        };
        self.bytes += std::mem::take(&mut other.bytes);
        self
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The upload and download budgets of a server.
pub struct Throttle {
    pub uploads: Budget,
    pub downloads: Budget,
}

impl Throttle {
    /// The gauges and refusal counters in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP volume_server_in_flight_bytes Upload and download bytes held in memory.\n");
        out.push_str("# TYPE volume_server_in_flight_bytes gauge\n");
        for (name, budget) in [("upload", &self.uploads), ("download", &self.downloads)] {
            out.push_str(&format!("volume_server_in_flight_bytes{{op=\"{name}\"}} {}\n", budget.in_flight()));
        }
        out.push_str(
            "# HELP volume_server_throttled_total Requests refused with 429: no room in the budget in time.\n",
        );
        out.push_str("# TYPE volume_server_throttled_total counter\n");
        for (name, budget) in [("upload", &self.uploads), ("download", &self.downloads)] {
            out.push_str(&format!("volume_server_throttled_total{{op=\"{name}\"}} {}\n", budget.refused()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    fn budget(timeout_ms: u64) -> Budget {
        Budget::new(1, Duration::from_millis(timeout_ms))
    }

    #[tokio::test]
    async fn requests_that_fit_are_admitted_together_and_the_next_waits_then_is_refused() {
        let budget = budget(50);
        let a = budget.admit(600 * KIB).await.unwrap();
        let b = budget.admit(400 * KIB).await.unwrap();
        assert_eq!(budget.in_flight(), 1000 * KIB);
        assert_eq!(budget.admit(100 * KIB).await.err(), Some(Busy { in_flight: 1000 * KIB, limit: 1 << 20 }));
        assert_eq!(budget.refused(), 1);
        drop((a, b));
        assert_eq!(budget.in_flight(), 0);
        assert!(budget.admit(1 << 20).await.is_ok());
    }

    #[tokio::test]
    async fn a_waiter_is_admitted_when_room_comes_free() {
        let budget = Arc::new(budget(5_000));
        let first = budget.admit(900 * KIB).await.unwrap();
        let waiter = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.admit(200 * KIB).await.map(|held| held.bytes) }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "admitted although 1100 KiB exceed 1 MiB");
        drop(first);
        assert_eq!(waiter.await.unwrap(), Ok(200 * KIB));
    }

    #[tokio::test]
    async fn a_request_larger_than_the_budget_is_admitted_alone() {
        let budget = budget(50);
        let small = budget.admit(KIB).await.unwrap();
        assert!(budget.admit(10 << 20).await.is_err(), "an oversize request runs only alone");
        drop(small);
        let big = budget.admit(10 << 20).await.unwrap();
        assert_eq!(budget.in_flight(), 10 << 20);
        assert!(budget.admit(1).await.is_err());
        drop(big);
        assert!(budget.admit(1).await.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_wait_and_a_cancelled_request_give_their_bytes_back() {
        let budget = Arc::new(budget(5_000));
        let first = budget.admit(900 * KIB).await.unwrap();
        // A request admitted, then cancelled mid-way (its future dropped).
        let cancelled = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move {
                let _held = budget.admit(100 * KIB).await;
                std::future::pending::<()>().await
            }
        });
        // A request still waiting for room when it is cancelled.
        let waiting = tokio::spawn({
            let budget = Arc::clone(&budget);
            async move { budget.admit(500 * KIB).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(budget.in_flight(), 1000 * KIB);
        cancelled.abort();
        waiting.abort();
        assert!(cancelled.await.unwrap_err().is_cancelled());
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(budget.in_flight(), 900 * KIB);
        drop(first);
        // Every permit is back: the whole budget can be drawn at once.
        assert!(budget.admit(1 << 20).await.is_ok());
        assert_eq!(budget.refused(), 0);
    }

    #[tokio::test]
    async fn unlimited_admits_everything_and_still_counts() {
        let budget = Budget::new(0, Duration::ZERO);
        let held = budget.admit(u64::MAX / 2).await.unwrap();
        assert_eq!(budget.in_flight(), u64::MAX / 2);
        drop(held);
        assert_eq!(budget.in_flight(), 0);
    }
}
