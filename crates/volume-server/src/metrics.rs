//! `/metrics` in the Prometheus text format: requests, bytes in and out, a latency
//! histogram and error counts, by route. Routes are a fixed set, so the registry is a
//! table of atomics: recording a request takes no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};

/// The routes requests are counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Read,
    Write,
    Delete,
    Status,
    Health,
    Metrics,
    Assign,
    Lookup,
    Other,
}

const ROUTES: [(Route, &str); 9] = [
    (Route::Read, "read"),
    (Route::Write, "write"),
    (Route::Delete, "delete"),
    (Route::Status, "status"),
    (Route::Health, "healthz"),
    (Route::Metrics, "metrics"),
    (Route::Assign, "assign"),
    (Route::Lookup, "lookup"),
    (Route::Other, "other"),
];

/// Latency bucket upper bounds, in seconds.
const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Which route a request belongs to.
pub fn route_of(method: &Method, path: &str, master_api: bool) -> Route {
    match path {
        "/status" => Route::Status,
        "/healthz" | "/readyz" => Route::Health,
        "/metrics" => Route::Metrics,
        "/dir/assign" if master_api => Route::Assign,
        "/dir/lookup" if master_api => Route::Lookup,
        _ => match *method {
            Method::GET | Method::HEAD => Route::Read,
            Method::POST | Method::PUT => Route::Write,
            Method::DELETE => Route::Delete,
            _ => Route::Other,
        },
    }
}

#[derive(Default)]
struct RouteMetrics {
    by_class: [AtomicU64; 5],
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
    /// Cumulative counts are computed at render time; these are per bucket, plus +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    routes: [RouteMetrics; ROUTES.len()],
    /// Fan-outs to replicas: write ok, write failed, delete ok, delete failed.
    replication: [AtomicU64; 4],
    /// Reads of volumes held elsewhere passed on: ok, failed.
    proxied_reads: [AtomicU64; 2],
    /// Background tasks started again after a panic: the heartbeat.
    heartbeat_restarts: AtomicU64,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn observe(&self, route: Route, status: StatusCode, received: u64, sent: u64, elapsed: Duration) {
        let index = ROUTES.iter().position(|(r, _)| *r == route).unwrap_or(ROUTES.len() - 1);
        let m = &self.routes[index];
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        m.by_class[class].fetch_add(1, Ordering::Relaxed);
        m.bytes_received.fetch_add(received, Ordering::Relaxed);
        m.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS.iter().position(|&b| seconds <= b).unwrap_or(BUCKETS.len());
        m.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        m.latency_sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A write or delete sent to its replicas: `op` is `"write"` or `"delete"`, `ok`
    /// whether every replica succeeded.
    pub fn replicated(&self, op: &str, ok: bool) {
        let index = usize::from(op == "delete") * 2 + usize::from(!ok);
        self.replication[index].fetch_add(1, Ordering::Relaxed);
    }

    /// A read passed on to the server holding its volume; `ok` if that server answered.
    pub fn proxied_read(&self, ok: bool) {
        self.proxied_reads[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// The heartbeat task panicked and was started again.
    pub fn heartbeat_restarted(&self) {
        self.heartbeat_restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_side_work(&mut out);
        self.render_requests(&mut out);
        self.render_durations(&mut out);
        out
    }

    /// The counters of work besides answering requests: replication, restarted tasks,
    /// proxied reads.
    fn render_side_work(&self, out: &mut String) {
        out.push_str(
            "# HELP volume_server_replication_total Writes and deletes sent to replicas, by outcome.\n",
        );
        out.push_str("# TYPE volume_server_replication_total counter\n");
        for (i, (op, result)) in
            [("write", "ok"), ("write", "failed"), ("delete", "ok"), ("delete", "failed")].iter().enumerate()
        {
            let _ = writeln!(
                *out,
                "volume_server_replication_total{{op=\"{op}\",result=\"{result}\"}} {}",
                load(&self.replication[i])
            );
        }
        out.push_str(
            "# HELP volume_server_task_restarts_total Background tasks started again after a panic.\n",
        );
        out.push_str("# TYPE volume_server_task_restarts_total counter\n");
        let _ = writeln!(
            out,
            "volume_server_task_restarts_total{{task=\"heartbeat\"}} {}",
            load(&self.heartbeat_restarts)
        );
        out.push_str(
            "# HELP volume_server_proxied_reads_total Reads passed to the server holding the volume.\n",
        );
        out.push_str("# TYPE volume_server_proxied_reads_total counter\n");
        for (i, result) in ["ok", "failed"].iter().enumerate() {
            let _ = writeln!(
                *out,
                "volume_server_proxied_reads_total{{result=\"{result}\"}} {}",
                load(&self.proxied_reads[i])
            );
        }
    }

    /// Requests, errors and body bytes, by route.
    fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP volume_server_requests_total HTTP requests by route and status class.\n");
        out.push_str("# TYPE volume_server_requests_total counter\n");
        for ((_, name), m) in ROUTES.iter().zip(&self.routes) {
            for (class, count) in CLASSES.iter().zip(&m.by_class) {
                let _ = writeln!(
                    out,
                    "volume_server_requests_total{{route=\"{name}\",code=\"{class}\"}} {}",
                    load(count)
                );
            }
        }
        out.push_str("# HELP volume_server_errors_total Replies with a 4xx or 5xx status, by route.\n");
        out.push_str("# TYPE volume_server_errors_total counter\n");
        for ((_, name), m) in ROUTES.iter().zip(&self.routes) {
            for (class, i) in [("4xx", 3), ("5xx", 4)] {
                let _ = writeln!(
                    out,
                    "volume_server_errors_total{{route=\"{name}\",class=\"{class}\"}} {}",
                    load(&m.by_class[i])
                );
            }
        }
        for (metric, help, pick) in [
            ("volume_server_received_bytes_total", "Request body bytes (Content-Length) by route.", 0),
            ("volume_server_sent_bytes_total", "Reply body bytes (Content-Length) by route.", 1),
        ] {
            let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
            for ((_, name), m) in ROUTES.iter().zip(&self.routes) {
                let value = if pick == 0 { load(&m.bytes_received) } else { load(&m.bytes_sent) };
                let _ = writeln!(out, "{metric}{{route=\"{name}\"}} {value}");
            }
        }
    }

    /// The request duration histogram, by route.
    fn render_durations(&self, out: &mut String) {
        out.push_str("# HELP volume_server_request_duration_seconds Time to the reply headers, by route.\n");
        out.push_str("# TYPE volume_server_request_duration_seconds histogram\n");
        for ((_, name), m) in ROUTES.iter().zip(&self.routes) {
            let mut cumulative = 0;
            for (i, bound) in BUCKETS.iter().enumerate() {
                cumulative += load(&m.buckets[i]);
                let _ = writeln!(
                    out,
                    "volume_server_request_duration_seconds_bucket{{route=\"{name}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += load(&m.buckets[BUCKETS.len()]);
            let _ = writeln!(
                *out,
                "volume_server_request_duration_seconds_bucket{{route=\"{name}\",le=\"+Inf\"}} {cumulative}"
            );
            let sum = load(&m.latency_sum_ns) as f64 / 1e9;
            let _ = writeln!(out, "volume_server_request_duration_seconds_sum{{route=\"{name}\"}} {sum}");
            let _ = writeln!(
                *out,
                "volume_server_request_duration_seconds_count{{route=\"{name}\"}} {cumulative}"
            );
        }
    }
}

/// A counter's value; the exposition needs no ordering with other counters.
fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_histogram() {
        let m = Metrics::new();
        m.observe(Route::Read, StatusCode::OK, 0, 100, Duration::from_micros(300));
        m.observe(Route::Read, StatusCode::NOT_FOUND, 0, 0, Duration::from_millis(2));
        m.observe(Route::Write, StatusCode::INTERNAL_SERVER_ERROR, 10, 5, Duration::from_secs(9));
        m.replicated("delete", false);
        m.proxied_read(true);
        let text = m.render();
        for line in [
            "volume_server_requests_total{route=\"read\",code=\"2xx\"} 1",
            "volume_server_errors_total{route=\"read\",class=\"4xx\"} 1",
            "volume_server_errors_total{route=\"write\",class=\"5xx\"} 1",
            "volume_server_sent_bytes_total{route=\"read\"} 100",
            "volume_server_request_duration_seconds_bucket{route=\"read\",le=\"0.00025\"} 0",
            "volume_server_request_duration_seconds_bucket{route=\"read\",le=\"0.0005\"} 1",
            "volume_server_request_duration_seconds_bucket{route=\"read\",le=\"0.0025\"} 2",
            "volume_server_request_duration_seconds_bucket{route=\"write\",le=\"5\"} 0",
            "volume_server_request_duration_seconds_bucket{route=\"write\",le=\"+Inf\"} 1",
            "volume_server_request_duration_seconds_count{route=\"read\"} 2",
            "volume_server_replication_total{op=\"delete\",result=\"failed\"} 1",
            "volume_server_replication_total{op=\"write\",result=\"failed\"} 0",
            "volume_server_proxied_reads_total{result=\"ok\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert_eq!(route_of(&Method::GET, "/dir/assign", false), Route::Read);
        assert_eq!(route_of(&Method::GET, "/dir/assign", true), Route::Assign);
    }
}
