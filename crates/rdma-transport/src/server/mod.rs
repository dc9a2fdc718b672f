//! The server side: the `RdmaControl` gRPC service over a [`NeedleSource`], with its
//! device, sessions (one server queue pair each) and what they may READ.
//!
//! **Exposure.** A session gets `record` exposure by default: its own protection domain,
//! and in it a registration of exactly each record it located, for a bounded time
//! ([`grants`]). With `volume` exposure (`--rdma-exposure volume`, an explicit opt-in for
//! trusted fabrics), sessions that present a volume-read grant or come over mutual TLS
//! with a client certificate the server names ([`TlsPeer`]), or every session on a
//! server with neither a key nor names, share the device's protection domain, where
//! volume `.dat` files are registered in extents ([`regions`]) and a location may be
//! READ around.
//!
//! Locate checks what an HTTP GET checks (cookie, deletion, TTL) against the record
//! itself, and the token's `exp` on every call. Sessions are capped per client address
//! and in all, checked before a queue pair is made; the bytes one Locate may register
//! are bounded. No lock is taken in a way that a panic turns into more panics, and a
//! queue pair whose teardown fails is logged and counted.
//!
//! [`RdmaServer::start`] opens the device; when there is none, the server runs without
//! RDMA, says so once in the log, and answers `OpenSession` with FAILED_PRECONDITION so
//! that clients fall back to HTTP. Region tokens (rkeys) travel only in Locate replies
//! and are never logged.

pub mod auth;
pub mod grants;
pub mod index;
mod memory;
pub mod regions;
pub mod sessions;
pub mod source;
#[cfg(test)]
pub(crate) mod test_support;

use std::fmt::Write as _;
use std::mem::ManuallyDrop;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use needle::FileId;
use serde::Serialize;
use sideway::ibverbs::AccessFlags;
use sideway::ibverbs::completion::BasicCompletionQueue;
use sideway::ibverbs::queue_pair::BasicQueuePair;
use tonic::{Request, Response, Status};

use crate::endpoint::QpEndpoint;
use crate::proto::rdma_control_server::{RdmaControl, RdmaControlServer};
use crate::proto::{self, LocateStatus};
use crate::verbs::{Device, DeviceChoice, DeviceRegistrar, random_psn};
use auth::{JwtKey, VolumeGrant};
use grants::{GrantConfig, GrantGauges, RecordGrants};
use index::{IndexConfig, Indexes};
use memory::lock;
use regions::{ExposeError, RecordSpan, RegionCache, RegionConfig, RegionStats};
use sessions::SessionTable;
pub use source::{DatFile, IndexAppendFn, IndexSource, Lookup, NeedleSource, SourceLocation};

/// Most fids one Locate may carry.
pub const MAX_FIDS_PER_LOCATE: usize = 1024;

/// What sessions may READ (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Exposure {
    /// Each session exactly the records it located, through its own queue pair, for a
    /// bounded time.
    #[default]
    Record,
    /// Sessions with a volume-read grant or a named client certificate (every
    /// session, on a server with neither a key nor names) whole volume files; the
    /// others `Record`.
    Volume,
}

impl Exposure {
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::Record => "record",
            Exposure::Volume => "volume",
        }
    }
}

/// How the RDMA server is set up.
#[derive(Clone, Debug)]
pub struct RdmaServerConfig {
    /// The device to use; `None` runs without RDMA.
    pub device: Option<DeviceChoice>,
    pub exposure: Exposure,
    /// `volume` exposure's registered extents.
    pub regions: RegionConfig,
    /// `record` exposure's per-session registrations.
    pub grants: GrantConfig,
    /// `volume` exposure's one-sided index.
    pub index: IndexConfig,
    pub max_sessions: usize,
    /// Most sessions one client address may have open.
    pub max_sessions_per_peer: usize,
    /// A session unused this long is closed and its queue pair destroyed.
    pub idle_timeout: Duration,
    /// When set, `OpenSession` needs a JWT signed with it, and volume-read grants are
    /// checked with it.
    pub jwt_key: Option<JwtKey>,
    /// Most bytes one Locate may newly register; the fids past it are answered
    /// UNAVAILABLE (locate them again, or read them over HTTP).
    pub max_locate_bytes: u64,
    /// `volume` exposure: the client-certificate common names (as the gRPC port's
    /// mutual TLS verified them, [`TlsPeer`]) whose sessions READ whole volumes.
    pub volume_common_names: Vec<String>,
}

/// The connect info a mutual-TLS gRPC port gives tonic for each connection (its
/// `Connected::ConnectInfo`): the TCP addresses, and the common name of the client
/// certificate the handshake verified. `OpenSession` reads the name from it.
#[derive(Clone, Debug)]
pub struct TlsPeer {
    pub tcp: tonic::transport::server::TcpConnectInfo,
    pub common_name: Option<String>,
}

impl Default for RdmaServerConfig {
    fn default() -> Self {
        Self {
            device: None,
            exposure: Exposure::Record,
            regions: RegionConfig::default(),
            grants: GrantConfig::default(),
            index: IndexConfig::default(),
            max_sessions: 256,
            max_sessions_per_peer: 16,
            idle_timeout: Duration::from_secs(60),
            jwt_key: None,
            max_locate_bytes: 64 << 20,
            volume_common_names: Vec::new(),
        }
    }
}

/// A server queue pair whose teardown never panics: sideway asserts that
/// `ibv_destroy_qp` succeeds, so the drop runs under `catch_unwind`, and a failure is
/// logged and counted while the server goes on.
struct ServerQp {
    qp: ManuallyDrop<BasicQueuePair>,
    teardown_failures: Arc<AtomicU64>,
}

impl Drop for ServerQp {
    fn drop(&mut self) {
        // SAFETY: taken once, here; the field is not used after.
        let qp = unsafe { ManuallyDrop::take(&mut self.qp) };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(qp))).is_err() {
            self.teardown_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!("destroying an RDMA session's queue pair failed; the server goes on");
        }
    }
}

/// What a session may READ.
enum Access {
    /// Its own located records (grants in its own protection domain).
    Record(Mutex<RecordGrants>),
    /// Whole volume files: those its grant covers, or all (`None`: no key on the server).
    Volume(Option<VolumeGrant>),
}

/// One client's session. Field order is drop order: the session's registrations go
/// before its queue pair, and its protection domain goes with the last of them.
struct Session {
    access: Access,
    _qp: ServerQp,
    /// The one file id its token allows, when the token names one.
    only_fid: Option<FileId>,
    /// Unix seconds when its token runs out.
    token_exp: Option<u64>,
}

impl Session {
    fn token_expired(&self, now_unix: u64) -> bool {
        self.token_exp.is_some_and(|exp| exp <= now_unix)
    }

    /// When the token runs out, as an instant (grants never outlive it).
    fn not_after(&self, now: Instant) -> Option<Instant> {
        self.token_exp.map(|exp| now + Duration::from_secs(exp.saturating_sub(unix_now())))
    }

    fn exposure(&self) -> proto::Exposure {
        match self.access {
            Access::Record(_) => proto::Exposure::Record,
            Access::Volume(_) => proto::Exposure::Volume,
        }
    }
}

/// What a device-backed server has.
struct Rdma {
    // Field order is drop order: sessions (queue pairs) before their CQ.
    sessions: Mutex<SessionTable<Arc<Session>>>,
    cq: Arc<BasicCompletionQueue>,
    regions: RegionCache,
    indexes: Arc<Indexes>,
    device: Arc<Device>,
    /// `record` exposure copies records instead of registering file pages (forced, or
    /// since the kernel refused a pin).
    record_staging: AtomicBool,
}

#[derive(Default)]
struct Counters {
    sessions_opened: AtomicU64,
    sessions_expired: AtomicU64,
    sessions_refused: AtomicU64,
    locate_requests: AtomicU64,
    locate_wrong_cookie: AtomicU64,
    locate_expired: AtomicU64,
    locate_over_bound: AtomicU64,
}

struct State {
    rdma: Result<Rdma, String>,
    source: Arc<dyn NeedleSource>,
    config: RdmaServerConfig,
    counters: Counters,
    grant_gauges: Arc<GrantGauges>,
    teardown_failures: Arc<AtomicU64>,
}

/// The RDMA side of a volume server.
#[derive(Clone)]
pub struct RdmaServer {
    state: Arc<State>,
}

impl std::fmt::Debug for RdmaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaServer").field("enabled", &self.state.rdma.is_ok()).finish_non_exhaustive()
    }
}

/// What `/status` shows.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RdmaStatus {
    pub enabled: bool,
    /// Why RDMA is off, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// `record` or `volume`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exposure: Option<&'static str>,
    /// `registered-file` or `staging`, for the exposure in force for sessions without
    /// a grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    pub sessions: u64,
    /// Records registered for `record` exposure sessions.
    pub granted_records: u64,
    pub region_hits: u64,
    pub region_misses: u64,
    pub region_evictions: u64,
    /// Bytes registered (pinned) in all: volume extents and granted records (the
    /// one-sided index's are apart, below).
    pub pinned_bytes: u64,
    pub regions: u64,
    /// Volumes with a one-sided index.
    pub indexed_volumes: u64,
    /// `.dat` bytes the one-sided indexes register (pinned).
    pub index_pinned_bytes: u64,
    /// Bytes of the indexes' `.idx` mirrors.
    pub index_mirror_bytes: u64,
    /// Writes and deletes published to an index (mirror entry, length, bucket).
    pub index_header_updates: u64,
    /// `.dat` extents the indexes registered (first time, or longer for a grown tail).
    pub index_tail_registrations: u64,
    /// Indexed volumes whose `.dat` is not registered up to its end yet (their newest or
    /// not yet registered records are located over gRPC meanwhile).
    pub index_pending_volumes: u64,
}

impl RdmaServer {
    /// Opens the device (if configured) and sets up the cache and session table. Inside
    /// a tokio runtime it also starts a task that closes idle sessions, sessions whose
    /// token ran out, and grants whose time ran out; without one, idle sessions are
    /// closed when the next session is opened.
    pub fn start(config: RdmaServerConfig, source: Arc<dyn NeedleSource>) -> Self {
        let rdma = match &config.device {
            None => Err("RDMA is off (--rdma off)".to_owned()),
            Some(choice) => Device::open(choice).map_err(|e| e.to_string()).and_then(|device| {
                let cq = device.new_cq(64).map_err(|e| e.to_string())?;
                let registrar = Arc::new(DeviceRegistrar::new(&device));
                let regions = RegionCache::new(Arc::clone(&registrar) as _, config.regions.clone());
                let indexes = Arc::new(Indexes::new(registrar, config.index.clone()));
                let sessions = Mutex::new(SessionTable::new(
                    config.max_sessions,
                    config.max_sessions_per_peer,
                    config.idle_timeout,
                ));
                let record_staging = AtomicBool::new(config.regions.force_staging);
                Ok(Rdma { sessions, cq, regions, indexes, device, record_staging })
            }),
        };
        match &rdma {
            Ok(r) => log_exposure(r, &config),
            Err(reason) => tracing::warn!("running without RDMA: {reason}"),
        }
        let idle_timeout = config.idle_timeout;
        let state = Arc::new(State {
            rdma,
            source,
            config,
            counters: Counters::default(),
            grant_gauges: Arc::new(GrantGauges::default()),
            teardown_failures: Arc::new(AtomicU64::new(0)),
        });
        if state.rdma.is_ok()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(reap(Arc::downgrade(&state), idle_timeout));
            let signal = state.rdma.as_ref().map(|r| r.indexes.upkeep_signal()).expect("checked above");
            runtime.spawn(index_upkeep(Arc::downgrade(&state), signal));
        }
        Self { state }
    }

    /// Whether a device is open.
    pub fn enabled(&self) -> bool {
        self.state.rdma.is_ok()
    }

    /// The tonic service, to add to the gRPC server's routes.
    pub fn service(&self) -> RdmaControlServer<ControlService> {
        RdmaControlServer::new(ControlService { state: Arc::clone(&self.state) })
    }

    /// Drops the registered regions of `volume`: call when its `.dat` is deleted or
    /// replaced (compaction, which also bumps the revision Locate reports). Records
    /// granted to `record` sessions keep the old file's pages until their time runs out
    /// (their bytes never change; the client's verify step rejects a stale revision).
    pub fn retire(&self, volume: u32) {
        if let Ok(rdma) = &self.state.rdma {
            rdma.regions.retire(volume);
            rdma.indexes.retire(volume);
        }
    }

    pub fn status(&self) -> RdmaStatus {
        match &self.state.rdma {
            Err(reason) => RdmaStatus {
                enabled: false,
                reason: Some(reason.clone()),
                device: None,
                exposure: None,
                mode: None,
                sessions: 0,
                granted_records: 0,
                region_hits: 0,
                region_misses: 0,
                region_evictions: 0,
                pinned_bytes: 0,
                regions: 0,
                indexed_volumes: 0,
                index_pinned_bytes: 0,
                index_mirror_bytes: 0,
                index_header_updates: 0,
                index_tail_registrations: 0,
                index_pending_volumes: 0,
            },
            Ok(rdma) => {
                let RegionStats { hits, misses, evictions, pinned_bytes, regions, .. } = rdma.regions.stats();
                let exposure = self.state.config.exposure;
                let mode = match exposure {
                    Exposure::Record if rdma.record_staging.load(Ordering::Relaxed) => "staging",
                    Exposure::Record => "registered-file",
                    Exposure::Volume => rdma.regions.mode().as_str(),
                };
                let gauges = &self.state.grant_gauges;
                let index = rdma.indexes.stats();
                RdmaStatus {
                    enabled: true,
                    reason: None,
                    device: Some(rdma.device.name().to_owned()),
                    exposure: Some(exposure.as_str()),
                    mode: Some(mode),
                    sessions: lock(&rdma.sessions).len() as u64,
                    granted_records: gauges.grants.load(Ordering::Relaxed),
                    region_hits: hits,
                    region_misses: misses,
                    region_evictions: evictions,
                    pinned_bytes: pinned_bytes + gauges.bytes.load(Ordering::Relaxed),
                    regions,
                    indexed_volumes: index.volumes,
                    index_pinned_bytes: index.dat_pinned_bytes,
                    index_mirror_bytes: index.mirror_bytes,
                    index_header_updates: index.header_updates,
                    index_tail_registrations: index.tail_registrations,
                    index_pending_volumes: index.pending_volumes,
                }
            }
        }
    }

    /// The Prometheus text exposition of the RDMA figures.
    pub fn render_metrics(&self) -> String {
        let s = self.status();
        let mut out = String::new();
        for (name, kind, help, value) in self.series(&s).into_iter().chain(index_series(&s)) {
            let name = format!("volume_server_rdma_{name}");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        let mut labelled =
            |name: &str, help: &str, label: &str, values: [&str; 2], in_force: Option<&str>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                for value in values {
                    let _ =
                        writeln!(out, "{name}{{{label}=\"{value}\"}} {}", u64::from(in_force == Some(value)));
                }
            };
        labelled(
            "volume_server_rdma_mode",
            "How records are exposed (1 = in force).",
            "mode",
            ["registered-file", "staging"],
            s.mode,
        );
        labelled(
            "volume_server_rdma_exposure",
            "What sessions without a grant may READ (1 = in force).",
            "exposure",
            ["record", "volume"],
            s.exposure,
        );
        out
    }

    /// The unlabelled series of `/metrics`: name (after `volume_server_rdma_`), type,
    /// help and value.
    fn series(&self, s: &RdmaStatus) -> [(&'static str, &'static str, &'static str, u64); 16] {
        let c = &self.state.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        const GAUGE: &str = "gauge";
        const COUNTER: &str = "counter";
        [
            ("enabled", GAUGE, "1 if an RDMA device is open.", u64::from(s.enabled)),
            ("sessions", GAUGE, "Open RDMA sessions.", s.sessions),
            ("sessions_opened_total", COUNTER, "RDMA sessions opened.", load(&c.sessions_opened)),
            (
                "sessions_expired_total",
                COUNTER,
                "RDMA sessions closed for idleness or a token past its exp.",
                load(&c.sessions_expired),
            ),
            (
                "sessions_refused_total",
                COUNTER,
                "RDMA sessions refused for the per-address or total cap.",
                load(&c.sessions_refused),
            ),
            (
                "qp_teardown_failures_total",
                COUNTER,
                "Session queue pairs whose destruction failed.",
                load(&self.state.teardown_failures),
            ),
            ("locate_requests_total", COUNTER, "Locate calls.", load(&c.locate_requests)),
            (
                "locate_wrong_cookie_total",
                COUNTER,
                "Fids located with a cookie that is not the stored one (answered NOT_FOUND).",
                load(&c.locate_wrong_cookie),
            ),
            (
                "locate_expired_total",
                COUNTER,
                "Fids located past their TTL (answered NOT_FOUND).",
                load(&c.locate_expired),
            ),
            (
                "locate_over_bound_total",
                COUNTER,
                "Fids answered UNAVAILABLE because their Locate had registered its most bytes.",
                load(&c.locate_over_bound),
            ),
            ("granted_records", GAUGE, "Records registered for record-exposure sessions.", s.granted_records),
            ("region_hits_total", COUNTER, "Located records in registered regions.", s.region_hits),
            ("region_misses_total", COUNTER, "Regions registered on demand.", s.region_misses),
            ("region_evictions_total", COUNTER, "Regions evicted for the pinned budget.", s.region_evictions),
            ("pinned_bytes", GAUGE, "Bytes registered (pinned) for RDMA.", s.pinned_bytes),
            ("regions", GAUGE, "Registered regions.", s.regions),
        ]
    }
}

/// The one-sided index's series of `/metrics` (as [`RdmaServer::series`]).
fn index_series(s: &RdmaStatus) -> [(&'static str, &'static str, &'static str, u64); 6] {
    const GAUGE: &str = "gauge";
    const COUNTER: &str = "counter";
    [
        ("indexed_volumes", GAUGE, "Volumes with a one-sided index.", s.indexed_volumes),
        ("index_pinned_bytes", GAUGE, ".dat bytes registered by one-sided indexes.", s.index_pinned_bytes),
        ("index_mirror_bytes", GAUGE, "Bytes of the one-sided indexes' .idx mirrors.", s.index_mirror_bytes),
        (
            "index_header_updates_total",
            COUNTER,
            "Writes and deletes published to one-sided indexes.",
            s.index_header_updates,
        ),
        (
            "index_tail_registrations_total",
            COUNTER,
            ".dat extents registered by one-sided indexes (new, or longer for a grown tail).",
            s.index_tail_registrations,
        ),
        (
            "index_pending_volumes",
            GAUGE,
            "Indexed volumes whose .dat is not registered to its end yet.",
            s.index_pending_volumes,
        ),
    ]
}

/// Says once, at startup, what sessions can READ and how.
fn log_exposure(rdma: &Rdma, config: &RdmaServerConfig) {
    let device = rdma.device.name();
    let record = if config.regions.force_staging {
        "record exposure: each session has its own protection domain; located records are copied into \
         buffers registered there (--rdma-staging)"
    } else {
        "record exposure: each session has its own protection domain; each located record's own bytes \
         are registered there for a bounded time (staging into the session's buffers if the kernel \
         refuses file pages). Memory windows are not used: rxe checks READs against the region under \
         a window, not the window's range"
    };
    tracing::info!(
        device,
        lifetime_ms = config.grants.lifetime.as_millis() as u64,
        "RDMA read path on; {record}"
    );
    let names = config.volume_common_names.join(",");
    match (config.exposure, &config.jwt_key) {
        (Exposure::Record, _) => {}
        (Exposure::Volume, Some(_)) => tracing::warn!(
            device,
            mode = rdma.regions.mode().as_str(),
            extent_bytes = config.regions.extent_size,
            pinned_budget = config.regions.pinned_budget,
            client_common_names = names,
            "volume exposure: sessions presenting a volume-read grant can READ every byte of the volumes \
             it names, sessions whose client certificate has one of client_common_names every byte of \
             every volume; other sessions get record exposure"
        ),
        (Exposure::Volume, None) if !names.is_empty() => tracing::warn!(
            device,
            mode = rdma.regions.mode().as_str(),
            extent_bytes = config.regions.extent_size,
            pinned_budget = config.regions.pinned_budget,
            client_common_names = names,
            "volume exposure: sessions whose client certificate has one of client_common_names can READ \
             every byte of every volume; other sessions get record exposure (no key: grants are not read)"
        ),
        (Exposure::Volume, None) => tracing::warn!(
            device,
            mode = rdma.regions.mode().as_str(),
            extent_bytes = config.regions.extent_size,
            pinned_budget = config.regions.pinned_budget,
            "volume exposure without a key: ANY session can READ EVERY BYTE OF EVERY VOLUME on this \
             server (deleted and overwritten needles included)"
        ),
    }
}

/// Every tick (a quarter of the idle timeout, at most a second): closes sessions idle
/// past the timeout or whose token ran out, and drops grants whose time ran out, until
/// the server is gone.
async fn reap(state: Weak<State>, idle_timeout: Duration) {
    let period = (idle_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        if let Ok(rdma) = &state.rdma {
            let now_unix = unix_now();
            let (expired, live) = {
                let mut sessions = lock(&rdma.sessions);
                let expired = sessions.expire(Instant::now(), |s| s.token_expired(now_unix));
                (expired, sessions.values().cloned().collect::<Vec<_>>())
            };
            state.counters.sessions_expired.fetch_add(expired.len() as u64, Ordering::Relaxed);
            drop(expired);
            let now = Instant::now();
            rdma.indexes.prune(now);
            for session in live {
                if let Access::Record(grants) = &session.access {
                    lock(grants).prune(now);
                }
            }
        }
    }
}

/// While the server lives: when a write grew an indexed volume past its registered
/// tail, waits 50 ms (the writes of a burst are registered once; a volume written all
/// the time is registered again at most 20 times a second) and registers the grown
/// tails, so that new records become readable one-sidedly without a Locate. The work is
/// on the blocking pool (registration pins pages); writers only set a flag and notify,
/// and an idle server never wakes this task.
async fn index_upkeep(state: Weak<State>, signal: Arc<tokio::sync::Notify>) {
    loop {
        signal.notified().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(indexes) =
            state.upgrade().and_then(|s| s.rdma.as_ref().ok().map(|r| Arc::clone(&r.indexes)))
        else {
            return;
        };
        let _ = tokio::task::spawn_blocking(move || indexes.extend_tails()).await;
    }
}

/// The tonic implementation of `RdmaControl`.
pub struct ControlService {
    state: Arc<State>,
}

/// The parser's entry point for one fid of a Locate request: the file id it names, if
/// it is one and the session may read it (`only_fid`: the `fid` claim of the session's
/// token, when it had one); otherwise why not (a `BAD_FID` answer's message).
pub fn locate_target(fid_text: &str, only_fid: Option<&FileId>) -> Result<FileId, String> {
    let fid = FileId::from_str(fid_text).map_err(|e| e.to_string())?;
    if let Some(allowed) = only_fid
        // The token names one file: compare parsed ids, so spelling variants match.
        && (allowed.volume, allowed.needle_id(), allowed.cookie) != (fid.volume, fid.needle_id(), fid.cookie)
    {
        return Err("the session's token is for another file id".into());
    }
    Ok(fid)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl State {
    fn rdma(&self) -> Result<&Rdma, Status> {
        self.rdma
            .as_ref()
            .map_err(|reason| Status::failed_precondition(format!("this server runs without RDMA: {reason}")))
    }

    /// What a session opened with `grant`, by a client whose certificate has
    /// `common_name`, may READ: `None` for `record` exposure. A server in `record`
    /// exposure gives it to every session, grant or not (the answer says so), so one
    /// client configuration serves a fleet where only some servers opt in; a grant a
    /// `volume` server cannot verify is refused.
    fn volume_access(
        &self,
        grant: &str,
        common_name: Option<&str>,
    ) -> Result<Option<Option<VolumeGrant>>, Status> {
        let names = &self.config.volume_common_names;
        let named = common_name.is_some_and(|cn| names.iter().any(|n| n == cn));
        match (self.config.exposure, &self.config.jwt_key) {
            (Exposure::Record, _) => Ok(None),
            (Exposure::Volume, _) if named => Ok(Some(None)),
            (Exposure::Volume, None) if names.is_empty() => Ok(Some(None)),
            (Exposure::Volume, None) => Ok(None),
            (Exposure::Volume, Some(_)) if grant.is_empty() => Ok(None),
            (Exposure::Volume, Some(key)) => key
                .verify_grant(grant, unix_now())
                .map(|g| Some(Some(g)))
                .map_err(|e| Status::permission_denied(format!("volume-read grant: {e}"))),
        }
    }

    fn open_session(
        &self,
        request: proto::OpenSessionRequest,
        peer: Option<IpAddr>,
        common_name: Option<String>,
    ) -> Result<proto::OpenSessionResponse, Status> {
        let rdma = self.rdma()?;
        let claims = match &self.config.jwt_key {
            None => None,
            Some(key) => match key.verify(&request.jwt, unix_now()) {
                Ok(claims) => Some(claims),
                Err(auth::JwtError::Missing) => return Err(Status::unauthenticated("a JWT is required")),
                Err(e) => return Err(Status::permission_denied(e.to_string())),
            },
        };
        let volume_access = self.volume_access(&request.volume_grant, common_name.as_deref())?;
        let only_fid = match claims.as_ref().and_then(|c| c.fid.as_deref()) {
            None => None,
            Some(fid) => Some(
                FileId::from_str(fid)
                    .map_err(|e| Status::permission_denied(format!("the token's fid {fid:?}: {e}")))?,
            ),
        };
        let grant_exp = volume_access.as_ref().and_then(|a| a.as_ref()).and_then(|g| g.exp);
        let token_exp = [claims.as_ref().and_then(|c| c.exp), grant_exp].into_iter().flatten().min();
        let client = request.client.as_ref().ok_or_else(|| Status::invalid_argument("no client endpoint"))?;
        let client = QpEndpoint::try_from(client).map_err(|e| Status::invalid_argument(e.to_string()))?;

        // A place first: a refused client costs no queue pair.
        let (reservation, expired) = lock(&rdma.sessions).reserve(peer, Instant::now());
        self.counters.sessions_expired.fetch_add(expired.len() as u64, Ordering::Relaxed);
        drop(expired);
        let reservation = reservation.map_err(|refusal| {
            self.counters.sessions_refused.fetch_add(1, Ordering::Relaxed);
            Status::resource_exhausted(refusal.to_string())
        })?;
        // A panic in the verbs binding (sideway asserts) must not keep the place taken.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.new_session(rdma, &client, volume_access, only_fid, token_exp)
        }))
        .unwrap_or_else(|_| Err(Status::internal("creating the session's queue pair failed")));
        let mut sessions = lock(&rdma.sessions);
        let (session, local) = match made {
            Ok(made) => made,
            Err(e) => {
                sessions.cancel(reservation);
                return Err(e);
            }
        };
        let exposure = session.exposure();
        let id = sessions.insert(reservation, Arc::new(session), Instant::now());
        let idle_timeout = sessions.idle_timeout();
        drop(sessions);
        self.counters.sessions_opened.fetch_add(1, Ordering::Relaxed);
        let mode = match exposure {
            proto::Exposure::Volume => rdma.regions.mode().to_proto(),
            _ if rdma.record_staging.load(Ordering::Relaxed) => proto::RegionMode::Staging,
            _ => proto::RegionMode::RegisteredFile,
        };
        Ok(proto::OpenSessionResponse {
            session_id: id,
            server: Some(local.into()),
            idle_timeout_ms: millis(idle_timeout),
            mode: mode as i32,
            exposure: exposure as i32,
        })
    }

    /// A session's queue pair (in its own protection domain for `record` exposure, in
    /// the device's for `volume`), connected to `client`.
    fn new_session(
        &self,
        rdma: &Rdma,
        client: &QpEndpoint,
        volume_access: Option<Option<VolumeGrant>>,
        only_fid: Option<FileId>,
        token_exp: Option<u64>,
    ) -> Result<(Session, QpEndpoint), Status> {
        let internal = |e: crate::error::RdmaError| Status::internal(e.to_string());
        let (access, pd) = match volume_access {
            Some(grant) => (Access::Volume(grant), Arc::clone(rdma.device.pd())),
            None => {
                let pd = rdma.device.alloc_pd().map_err(internal)?;
                let registrar = Arc::new(DeviceRegistrar::on(Arc::clone(&pd)));
                let grants =
                    RecordGrants::new(registrar, self.config.grants.clone(), Arc::clone(&self.grant_gauges));
                (Access::Record(Mutex::new(grants)), pd)
            }
        };
        let qp = rdma.device.new_qp_in(&pd, &rdma.cq, 1).map_err(internal)?;
        let mut qp =
            ServerQp { qp: ManuallyDrop::new(qp), teardown_failures: Arc::clone(&self.teardown_failures) };
        let local = rdma.device.endpoint(&qp.qp, random_psn(), rdma.device.max_dest_read_atomic());
        rdma.device.connect(&mut qp.qp, &local, client, AccessFlags::RemoteRead).map_err(internal)?;
        Ok((Session { access, _qp: qp, only_fid, token_exp }, local))
    }

    /// Session `id`, marked used: NOT_FOUND when it is unknown or idle past its time,
    /// UNAUTHENTICATED (and closed) when its token's `exp` has passed. An expired session
    /// is counted and dropped (queue pair, registrations) outside the table's lock.
    fn live_session(&self, rdma: &Rdma, id: u64) -> Result<Arc<Session>, Status> {
        let touched = lock(&rdma.sessions).touch(id, Instant::now()).cloned();
        let session = match touched {
            Ok(session) => session,
            Err(expired) => {
                if expired.is_some() {
                    self.counters.sessions_expired.fetch_add(1, Ordering::Relaxed);
                }
                drop(expired);
                return Err(Status::not_found("unknown or expired RDMA session"));
            }
        };
        if session.token_expired(unix_now()) {
            let removed = lock(&rdma.sessions).remove(id);
            self.counters.sessions_expired.fetch_add(1, Ordering::Relaxed);
            drop((removed, session));
            return Err(Status::unauthenticated("the session's token has expired: open a new session"));
        }
        Ok(session)
    }

    fn locate(&self, request: proto::LocateRequest) -> Result<proto::LocateResponse, Status> {
        self.counters.locate_requests.fetch_add(1, Ordering::Relaxed);
        let rdma = self.rdma()?;
        if request.fids.len() > MAX_FIDS_PER_LOCATE {
            return Err(Status::invalid_argument(format!("more than {MAX_FIDS_PER_LOCATE} fids")));
        }
        let session = self.live_session(rdma, request.session_id)?;
        if let Access::Record(grants) = &session.access {
            // A session that keeps locating drops its grants past their time here, at
            // once; the reaper drops those of the others within a tick.
            lock(grants).prune(Instant::now());
        }
        let mut registered = 0u64;
        let results =
            request.fids.iter().map(|fid| self.locate_one(rdma, &session, fid, &mut registered)).collect();
        Ok(proto::LocateResponse { results })
    }

    fn locate_one(
        &self,
        rdma: &Rdma,
        session: &Session,
        fid_text: &str,
        registered: &mut u64,
    ) -> proto::LocateResult {
        let answer = |status: LocateStatus, message: String| proto::LocateResult {
            status: status as i32,
            message,
            ..Default::default()
        };
        let fid = match locate_target(fid_text, session.only_fid.as_ref()) {
            Ok(fid) => fid,
            Err(why) => return answer(LocateStatus::BadFid, why),
        };
        let location = match self.source.locate(fid.volume, fid.needle_id(), fid.cookie) {
            Lookup::Found(location) => location,
            Lookup::NotFound => return answer(LocateStatus::NotFound, String::new()),
            Lookup::WrongCookie => {
                self.counters.locate_wrong_cookie.fetch_add(1, Ordering::Relaxed);
                return answer(LocateStatus::NotFound, String::new());
            }
            Lookup::Expired => {
                self.counters.locate_expired.fetch_add(1, Ordering::Relaxed);
                return answer(LocateStatus::NotFound, String::new());
            }
            Lookup::Deleted => return answer(LocateStatus::Deleted, String::new()),
            Lookup::VolumeNotHere => return answer(LocateStatus::VolumeNotHere, String::new()),
            Lookup::Failed(why) => return answer(LocateStatus::Unavailable, why),
        };
        if *registered >= self.config.max_locate_bytes {
            self.counters.locate_over_bound.fetch_add(1, Ordering::Relaxed);
            let bound = self.config.max_locate_bytes;
            return answer(
                LocateStatus::Unavailable,
                format!("this Locate registered its most bytes ({bound}): locate the rest in another call"),
            );
        }
        let span = RecordSpan {
            volume: fid.volume.0,
            dat: &location.dat,
            compaction_revision: u32::from(location.compaction_revision),
            offset: location.offset,
            len: location.read_size(),
        };
        let now = Instant::now();
        let not_after = session.not_after(now);
        let exposed = match &session.access {
            Access::Record(grants) => self.grant(rdma, &mut lock(grants), &span, now, not_after),
            Access::Volume(Some(grant)) if !grant.covers(fid.volume.0, &location.collection) => {
                return answer(
                    LocateStatus::Forbidden,
                    format!("the volume-read grant does not cover volume {}", fid.volume),
                );
            }
            Access::Volume(_) => rdma.regions.expose(&span).map(|exposed| {
                let lifetime = self.config.grants.lifetime;
                let valid = not_after.map_or(lifetime, |t| t.saturating_duration_since(now).min(lifetime));
                (exposed.segments, valid, exposed.registered)
            }),
        };
        match exposed {
            Ok((segments, valid, newly)) => {
                *registered += newly;
                proto::LocateResult {
                    status: LocateStatus::Found as i32,
                    segments,
                    read_size: location.read_size(),
                    needle_size: location.size,
                    version: u32::from(location.version as u8),
                    compaction_revision: u32::from(location.compaction_revision),
                    message: String::new(),
                    valid_ms: millis(valid),
                }
            }
            Err(e) => {
                tracing::warn!(%fid, error = %e, "cannot expose a record for RDMA");
                answer(LocateStatus::Unavailable, e.to_string())
            }
        }
    }

    fn open_index(&self, request: proto::OpenIndexRequest) -> Result<proto::OpenIndexResponse, Status> {
        let rdma = self.rdma()?;
        let session = self.live_session(rdma, request.session_id)?;
        let grant = match &session.access {
            Access::Record(_) => {
                return Err(Status::permission_denied("the one-sided index needs volume exposure"));
            }
            Access::Volume(grant) => grant,
        };
        if session.only_fid.is_some() {
            return Err(Status::permission_denied("the session's token names one file"));
        }
        let volume = request.volume_id;
        // A grant that names no collection cannot cover a volume it does not name:
        // refused before anything is registered for it.
        if let Some(grant) = grant
            && grant.collections.is_empty()
            && !grant.volumes.contains(&volume)
        {
            return Err(Status::permission_denied(format!(
                "the volume-read grant does not cover volume {volume}"
            )));
        }
        if rdma.regions.mode() == regions::Mode::Staging {
            return Err(Status::failed_precondition("volume files are staged, not registered: Locate"));
        }
        let (opened, collection) = rdma
            .indexes
            .open(volume, self.source.as_ref())
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        if let Some(grant) = grant
            && !grant.covers(volume, &collection)
        {
            return Err(Status::permission_denied(format!(
                "the volume-read grant does not cover volume {volume}"
            )));
        }
        let h = opened.header;
        Ok(proto::OpenIndexResponse {
            header: Some(proto::Segment { rkey: h.rkey, addr: h.addr, len: h.len }),
            generation: u32::from(opened.generation),
            grace_ms: millis(rdma.indexes.grace()),
        })
    }

    /// Grants `span` to a `record` session: its own bytes registered where they are, or
    /// staged when the kernel refuses to pin file pages (which switches every later
    /// grant to staging, logged once).
    fn grant(
        &self,
        rdma: &Rdma,
        grants: &mut RecordGrants,
        span: &RecordSpan<'_>,
        now: Instant,
        not_after: Option<Instant>,
    ) -> Result<(Vec<proto::Segment>, Duration, u64), ExposeError> {
        let staging = rdma.record_staging.load(Ordering::Relaxed);
        let granted = match grants.grant(span, now, not_after, staging) {
            Err(ExposeError::Register(e)) if !staging && regions::pin_refused(&e) => {
                if !rdma.record_staging.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "the kernel refused to register volume file pages: record exposure continues by \
                         copying located records into each session's registered buffers"
                    );
                }
                grants.grant(span, now, not_after, true)
            }
            other => other,
        }?;
        Ok((vec![granted.segment], granted.expires.saturating_duration_since(now), granted.registered))
    }
}

#[tonic::async_trait]
impl RdmaControl for ControlService {
    async fn open_session(
        &self,
        request: Request<proto::OpenSessionRequest>,
    ) -> Result<Response<proto::OpenSessionResponse>, Status> {
        let state = Arc::clone(&self.state);
        let tls = request.extensions().get::<TlsPeer>();
        let peer = request.remote_addr().or_else(|| tls.and_then(|t| t.tcp.remote_addr())).map(|a| a.ip());
        let common_name = tls.and_then(|t| t.common_name.clone());
        let request = request.into_inner();
        blocking(move || state.open_session(request, peer, common_name)).await
    }

    async fn locate(
        &self,
        request: Request<proto::LocateRequest>,
    ) -> Result<Response<proto::LocateResponse>, Status> {
        let state = Arc::clone(&self.state);
        let request = request.into_inner();
        blocking(move || state.locate(request)).await
    }

    async fn open_index(
        &self,
        request: Request<proto::OpenIndexRequest>,
    ) -> Result<Response<proto::OpenIndexResponse>, Status> {
        let state = Arc::clone(&self.state);
        let request = request.into_inner();
        blocking(move || state.open_index(request)).await
    }

    async fn keep_alive(
        &self,
        request: Request<proto::KeepAliveRequest>,
    ) -> Result<Response<proto::KeepAliveResponse>, Status> {
        let state = Arc::clone(&self.state);
        let id = request.into_inner().session_id;
        // Off the async workers: an expired session found here is torn down (verbs calls).
        blocking(move || state.live_session(state.rdma()?, id).map(|_| proto::KeepAliveResponse {})).await
    }

    async fn close_session(
        &self,
        request: Request<proto::CloseSessionRequest>,
    ) -> Result<Response<proto::CloseSessionResponse>, Status> {
        if let Ok(rdma) = &self.state.rdma {
            let session = lock(&rdma.sessions).remove(request.into_inner().session_id);
            // Dropped after the lock: its grants are deregistered, its queue pair destroyed.
            drop(session);
        }
        Ok(Response::new(proto::CloseSessionResponse {}))
    }
}

/// Runs `f` (verbs calls, file I/O, registration) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<Response<T>, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map(Response::new),
        Err(e) => Err(Status::internal(format!("RDMA control task failed: {e}"))),
    }
}
