//! The server side: the `RdmaControl` gRPC service over a [`NeedleSource`], with its
//! device, sessions (one server queue pair each) and region cache.
//!
//! [`RdmaServer::start`] opens the device; when there is none, the server runs without
//! RDMA, says so once in the log, and answers `OpenSession` with FAILED_PRECONDITION so
//! that clients fall back to HTTP. Region tokens (rkeys) travel only in Locate replies
//! and are never logged.

pub mod auth;
pub mod regions;
pub mod sessions;
pub mod source;

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
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
use auth::JwtKey;
use regions::{RecordSpan, RegionCache, RegionConfig, RegionStats};
use sessions::SessionTable;
pub use source::{Lookup, NeedleSource, SourceLocation};

/// Most fids one Locate may carry.
pub const MAX_FIDS_PER_LOCATE: usize = 1024;

/// How the RDMA server is set up.
#[derive(Clone, Debug)]
pub struct RdmaServerConfig {
    /// The device to use; `None` runs without RDMA.
    pub device: Option<DeviceChoice>,
    pub regions: RegionConfig,
    pub max_sessions: usize,
    /// A session unused this long is closed and its queue pair destroyed.
    pub idle_timeout: Duration,
    /// When set, `OpenSession` needs a JWT signed with it.
    pub jwt_key: Option<JwtKey>,
}

impl Default for RdmaServerConfig {
    fn default() -> Self {
        Self {
            device: None,
            regions: RegionConfig::default(),
            max_sessions: 256,
            idle_timeout: Duration::from_secs(60),
            jwt_key: None,
        }
    }
}

/// One client's session: its server-side queue pair, and the fid its token allows.
struct Session {
    // Destroyed with the session.
    _qp: BasicQueuePair,
    only_fid: Option<String>,
}

/// What a device-backed server has.
struct Rdma {
    // Field order is drop order: sessions (queue pairs) before their CQ.
    sessions: Mutex<SessionTable<Session>>,
    cq: Arc<BasicCompletionQueue>,
    regions: RegionCache,
    device: Arc<Device>,
}

struct State {
    rdma: Result<Rdma, String>,
    source: Arc<dyn NeedleSource>,
    jwt_key: Option<JwtKey>,
    sessions_opened: AtomicU64,
    sessions_expired: AtomicU64,
    locate_requests: AtomicU64,
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
    /// `registered-file` or `staging`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    pub sessions: u64,
    pub region_hits: u64,
    pub region_misses: u64,
    pub region_evictions: u64,
    pub pinned_bytes: u64,
    pub regions: u64,
}

impl RdmaServer {
    /// Opens the device (if configured) and sets up the cache and session table. Inside
    /// a tokio runtime it also starts a task that closes idle sessions; without one,
    /// idle sessions are closed when the next session is opened.
    pub fn start(config: RdmaServerConfig, source: Arc<dyn NeedleSource>) -> Self {
        let rdma = match &config.device {
            None => Err("RDMA is off (--rdma off)".to_owned()),
            Some(choice) => Device::open(choice).map_err(|e| e.to_string()).and_then(|device| {
                let cq = device.new_cq(64).map_err(|e| e.to_string())?;
                let registrar = Arc::new(DeviceRegistrar::new(Arc::clone(&device)));
                let regions = RegionCache::new(registrar, config.regions.clone());
                let sessions = Mutex::new(SessionTable::new(config.max_sessions, config.idle_timeout));
                Ok(Rdma { sessions, cq, regions, device })
            }),
        };
        match &rdma {
            Ok(r) => tracing::info!(
                device = r.device.name(),
                mode = r.regions.mode().as_str(),
                extent_bytes = config.regions.extent_size,
                pinned_budget = config.regions.pinned_budget,
                "RDMA read path on"
            ),
            Err(reason) => tracing::warn!("running without RDMA: {reason}"),
        }
        let state = Arc::new(State {
            rdma,
            source,
            jwt_key: config.jwt_key,
            sessions_opened: AtomicU64::new(0),
            sessions_expired: AtomicU64::new(0),
            locate_requests: AtomicU64::new(0),
        });
        if state.rdma.is_ok()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(reap_idle_sessions(Arc::downgrade(&state), config.idle_timeout));
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
    /// replaced (compaction, which also bumps the revision Locate reports).
    pub fn retire(&self, volume: u32) {
        if let Ok(rdma) = &self.state.rdma {
            rdma.regions.retire(volume);
        }
    }

    pub fn status(&self) -> RdmaStatus {
        match &self.state.rdma {
            Err(reason) => RdmaStatus {
                enabled: false,
                reason: Some(reason.clone()),
                device: None,
                mode: None,
                sessions: 0,
                region_hits: 0,
                region_misses: 0,
                region_evictions: 0,
                pinned_bytes: 0,
                regions: 0,
            },
            Ok(rdma) => {
                let RegionStats { hits, misses, evictions, pinned_bytes, regions, .. } = rdma.regions.stats();
                RdmaStatus {
                    enabled: true,
                    reason: None,
                    device: Some(rdma.device.name().to_owned()),
                    mode: Some(rdma.regions.mode().as_str()),
                    sessions: rdma.sessions.lock().expect("sessions lock").len() as u64,
                    region_hits: hits,
                    region_misses: misses,
                    region_evictions: evictions,
                    pinned_bytes,
                    regions,
                }
            }
        }
    }

    /// The Prometheus text exposition of the RDMA figures.
    pub fn render_metrics(&self) -> String {
        let s = self.status();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric("volume_server_rdma_enabled", "gauge", "1 if an RDMA device is open.", u64::from(s.enabled));
        metric("volume_server_rdma_sessions", "gauge", "Open RDMA sessions.", s.sessions);
        metric(
            "volume_server_rdma_sessions_opened_total",
            "counter",
            "RDMA sessions opened.",
            load(&self.state.sessions_opened),
        );
        metric(
            "volume_server_rdma_sessions_expired_total",
            "counter",
            "RDMA sessions closed for idleness.",
            load(&self.state.sessions_expired),
        );
        metric(
            "volume_server_rdma_locate_requests_total",
            "counter",
            "Locate calls.",
            load(&self.state.locate_requests),
        );
        metric(
            "volume_server_rdma_region_hits_total",
            "counter",
            "Located records in registered regions.",
            s.region_hits,
        );
        metric(
            "volume_server_rdma_region_misses_total",
            "counter",
            "Regions registered on demand.",
            s.region_misses,
        );
        metric(
            "volume_server_rdma_region_evictions_total",
            "counter",
            "Regions evicted for the pinned budget.",
            s.region_evictions,
        );
        metric(
            "volume_server_rdma_pinned_bytes",
            "gauge",
            "Bytes registered (pinned) for RDMA.",
            s.pinned_bytes,
        );
        metric("volume_server_rdma_regions", "gauge", "Registered regions.", s.regions);
        let _ = writeln!(out, "# HELP volume_server_rdma_mode How records are exposed (1 = in force).");
        let _ = writeln!(out, "# TYPE volume_server_rdma_mode gauge");
        for mode in ["registered-file", "staging"] {
            let _ = writeln!(
                out,
                "volume_server_rdma_mode{{mode=\"{mode}\"}} {}",
                u64::from(s.mode == Some(mode))
            );
        }
        out
    }
}

/// Closes idle sessions every quarter of the idle timeout, until the server is gone.
async fn reap_idle_sessions(state: Weak<State>, idle_timeout: Duration) {
    let mut tick = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        if let Ok(rdma) = &state.rdma {
            let expired = rdma.sessions.lock().expect("sessions lock").expire(Instant::now());
            state.sessions_expired.fetch_add(expired.len() as u64, Ordering::Relaxed);
        }
    }
}

/// The tonic implementation of `RdmaControl`.
pub struct ControlService {
    state: Arc<State>,
}

/// The parser's entry point for one fid of a Locate request: the file id it names, if
/// it is one and the session may read it (`only_fid`: the `fid` claim of the session's
/// token, when it had one); otherwise why not (a `BAD_FID` answer's message).
pub fn locate_target(fid_text: &str, only_fid: Option<&str>) -> Result<FileId, String> {
    let fid = FileId::from_str(fid_text).map_err(|e| e.to_string())?;
    if let Some(allowed) = only_fid {
        // The token names one file: compare parsed ids, so spelling variants match.
        if FileId::from_str(allowed).ok().map(|a| (a.volume, a.needle_id(), a.cookie))
            != Some((fid.volume, fid.needle_id(), fid.cookie))
        {
            return Err("the session's token is for another file id".into());
        }
    }
    Ok(fid)
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl State {
    fn rdma(&self) -> Result<&Rdma, Status> {
        self.rdma
            .as_ref()
            .map_err(|reason| Status::failed_precondition(format!("this server runs without RDMA: {reason}")))
    }

    fn open_session(&self, request: proto::OpenSessionRequest) -> Result<proto::OpenSessionResponse, Status> {
        let rdma = self.rdma()?;
        let only_fid = match &self.jwt_key {
            None => None,
            Some(key) => match key.verify(&request.jwt, unix_now()) {
                Ok(claims) => claims.fid,
                Err(auth::JwtError::Missing) => return Err(Status::unauthenticated("a JWT is required")),
                Err(e) => return Err(Status::permission_denied(e.to_string())),
            },
        };
        let client = request.client.as_ref().ok_or_else(|| Status::invalid_argument("no client endpoint"))?;
        let client = QpEndpoint::try_from(client).map_err(|e| Status::invalid_argument(e.to_string()))?;

        let internal = |e: crate::error::RdmaError| Status::internal(e.to_string());
        let mut qp = rdma.device.new_qp(&rdma.cq, 1).map_err(internal)?;
        let local = rdma.device.endpoint(&qp, random_psn(), rdma.device.max_dest_read_atomic());
        rdma.device.connect(&mut qp, &local, &client, AccessFlags::RemoteRead).map_err(internal)?;

        let mut sessions = rdma.sessions.lock().expect("sessions lock");
        let expired_before = sessions.len();
        let inserted = sessions.insert(Session { _qp: qp, only_fid }, Instant::now());
        let idle_timeout = sessions.idle_timeout();
        let id = inserted.map_err(|_| Status::resource_exhausted("too many RDMA sessions"))?;
        let expired = (expired_before + 1).saturating_sub(sessions.len());
        drop(sessions);
        self.sessions_expired.fetch_add(expired as u64, Ordering::Relaxed);
        self.sessions_opened.fetch_add(1, Ordering::Relaxed);
        Ok(proto::OpenSessionResponse {
            session_id: id,
            server: Some(local.into()),
            idle_timeout_ms: u32::try_from(idle_timeout.as_millis()).unwrap_or(u32::MAX),
            mode: rdma.regions.mode().to_proto() as i32,
        })
    }

    fn locate(&self, request: proto::LocateRequest) -> Result<proto::LocateResponse, Status> {
        self.locate_requests.fetch_add(1, Ordering::Relaxed);
        let rdma = self.rdma()?;
        if request.fids.len() > MAX_FIDS_PER_LOCATE {
            return Err(Status::invalid_argument(format!("more than {MAX_FIDS_PER_LOCATE} fids")));
        }
        let only_fid = {
            let mut sessions = rdma.sessions.lock().expect("sessions lock");
            let session = sessions
                .touch(request.session_id, Instant::now())
                .ok_or_else(|| Status::not_found("unknown or expired RDMA session"))?;
            session.only_fid.clone()
        };
        let results =
            request.fids.iter().map(|fid| self.locate_one(rdma, fid, only_fid.as_deref())).collect();
        Ok(proto::LocateResponse { results })
    }

    fn locate_one(&self, rdma: &Rdma, fid_text: &str, only_fid: Option<&str>) -> proto::LocateResult {
        let answer = |status: LocateStatus, message: String| proto::LocateResult {
            status: status as i32,
            message,
            ..Default::default()
        };
        let fid = match locate_target(fid_text, only_fid) {
            Ok(fid) => fid,
            Err(why) => return answer(LocateStatus::BadFid, why),
        };
        let location = match self.source.locate(fid.volume, fid.needle_id()) {
            Lookup::Found(location) => location,
            Lookup::NotFound => return answer(LocateStatus::NotFound, String::new()),
            Lookup::Deleted => return answer(LocateStatus::Deleted, String::new()),
            Lookup::VolumeNotHere => return answer(LocateStatus::VolumeNotHere, String::new()),
            Lookup::Failed(why) => return answer(LocateStatus::Unavailable, why),
        };
        let span = RecordSpan {
            volume: fid.volume.0,
            dat_path: &location.dat_path,
            compaction_revision: u32::from(location.compaction_revision),
            offset: location.offset,
            len: location.read_size(),
        };
        match rdma.regions.expose(&span) {
            Ok(segments) => proto::LocateResult {
                status: LocateStatus::Found as i32,
                segments,
                read_size: location.read_size(),
                needle_size: location.size,
                version: u32::from(location.version as u8),
                compaction_revision: u32::from(location.compaction_revision),
                message: String::new(),
            },
            Err(e) => {
                tracing::warn!(%fid, error = %e, "cannot expose a record for RDMA");
                answer(LocateStatus::Unavailable, e.to_string())
            }
        }
    }
}

#[tonic::async_trait]
impl RdmaControl for ControlService {
    async fn open_session(
        &self,
        request: Request<proto::OpenSessionRequest>,
    ) -> Result<Response<proto::OpenSessionResponse>, Status> {
        let state = Arc::clone(&self.state);
        let request = request.into_inner();
        blocking(move || state.open_session(request)).await
    }

    async fn locate(
        &self,
        request: Request<proto::LocateRequest>,
    ) -> Result<Response<proto::LocateResponse>, Status> {
        let state = Arc::clone(&self.state);
        let request = request.into_inner();
        blocking(move || state.locate(request)).await
    }

    async fn close_session(
        &self,
        request: Request<proto::CloseSessionRequest>,
    ) -> Result<Response<proto::CloseSessionResponse>, Status> {
        if let Ok(rdma) = &self.state.rdma {
            let session =
                rdma.sessions.lock().expect("sessions lock").remove(request.into_inner().session_id);
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
