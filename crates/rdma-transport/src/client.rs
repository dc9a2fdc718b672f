//! The client side above the engine: sessions over gRPC, a location cache, READs of
//! every segment, verification, one retry, typed errors.
//!
//! One [`RdmaClient`] talks to one volume server through one session (one queue pair).
//! A read goes: location (cached, or Locate) -> READ of each segment -> verify. When the
//! verify step fails on a cached location, the location is dropped and the read is
//! retried once with a fresh one; when the session or the queue pair is lost (server
//! restart, idle expiry, a failed READ), the client opens a new session and retries
//! once. Everything else is returned as a typed [`RdmaError`].
//!
//! In `volume` exposure, reads go through the server's one-sided index first
//! ([`crate::one_sided`]): READs only, current as of the read (a delete or overwrite
//! acknowledged before the read started is seen), no location cache; what the index
//! cannot settle is located as below.
//!
//! A session is closed by the server once it made no call for its idle timeout; reads
//! that are all one-sided make none, so a read sends `KeepAlive` first when the session
//! made no call for a third of it (one read in that time, not every read).
//!
//! Cached locations live `location_ttl` (default 1 s), never past three quarters of
//! the time the server said they stay readable (so a location is located again before
//! its grant runs out and a READ never fails for that), and are dropped when Locate
//! reports another compaction revision for their volume. Within that time a needle that
//! was overwritten or deleted may still be read in its previous, intact version: set
//! `location_ttl` to zero to Locate every read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use needle::{FileId, Needle, Version};
use tonic::transport::{Channel, Endpoint};

use crate::endpoint::QpEndpoint;
use crate::engine::{EngineQp, ReadEngine};
use crate::error::RdmaError;
use crate::grpc_tls::Dialer;
use crate::index_layout::RemoteSpan;
use crate::one_sided::{ColdRead, OpenedIndex, Replicas, bounded};
use crate::proto::rdma_control_client::RdmaControlClient;
use crate::proto::{self, LocateStatus};
use crate::verify::verify_record;

/// How an [`RdmaClient`] behaves.
#[derive(Clone, Debug)]
pub struct RdmaClientConfig {
    /// A weed-style JWT to open sessions with, when the server requires one.
    pub jwt: Option<String>,
    /// A volume-read grant to present (servers running `volume` exposure read whole
    /// volumes to its holder); `None` asks for `record` exposure.
    pub volume_grant: Option<String>,
    /// How long a location stays cached (zero: never cache).
    pub location_ttl: Duration,
    /// Bound on each control-plane call (connect included).
    pub rpc_timeout: Duration,
    /// Bound on the READs of one record.
    pub read_timeout: Duration,
    /// How the control plane is dialed: plaintext (the default), or mutual TLS when the
    /// server's gRPC port runs it. A failed handshake (server not trusted, our
    /// certificate refused, a plaintext port) fails the session as a
    /// [`RdmaError::ControlPlane`] error, bounded by `rpc_timeout`.
    pub dialer: Dialer,
    /// In `volume` exposure, read needles without a cached location through the
    /// server's one-sided index ([`crate::one_sided`]): no Locate, no server CPU.
    pub one_sided_index: bool,
    /// Most bytes the replicas of volume indexes may hold (least recently used volumes
    /// are dropped; 28-46 bytes per needle, by how full the hash tables are). A volume
    /// whose `.idx` has more entries than the whole budget holds is read through Locate.
    pub index_memory: u64,
}

impl Default for RdmaClientConfig {
    fn default() -> Self {
        Self {
            jwt: None,
            volume_grant: None,
            location_ttl: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            dialer: Dialer::default(),
            one_sided_index: true,
            index_memory: 256 << 20,
        }
    }
}

/// A verified, unexpired needle record as it is stored: header, body, checksum (and v3 timestamp).
#[derive(Clone, Debug)]
pub struct NeedleRecord {
    /// The record bytes (no padding).
    pub record: Vec<u8>,
    pub version: Version,
    /// Raw CRC32-C of the data (what weed's ETag shows).
    pub crc: u32,
}

impl NeedleRecord {
    /// The parsed needle (data, name, mime, flags, ...), borrowing from the record.
    pub fn needle(&self) -> Needle<'_> {
        Needle::parse(&self.record, self.version).expect("the record was verified when it was read")
    }
}

/// Counters of what a client did, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub sessions_opened: u64,
    pub locate_calls: u64,
    /// `KeepAlive` calls (a session whose reads made no other call for a while).
    pub keep_alives: u64,
    pub location_hits: u64,
    pub reads: u64,
    /// Reads retried after a lost session, a failed READ or a failed verification.
    pub retries: u64,
    /// Reads served by the one-sided index (no Locate).
    pub one_sided_hits: u64,
    /// Times a replica of a volume's index was brought up to date with READs.
    pub index_refreshes: u64,
    /// Reads the one-sided index left to Locate.
    pub index_fallbacks: u64,
    /// `OpenIndex` calls that gave a replica.
    pub index_opens: u64,
    /// READs the one-sided path posted (bucket and record batches, refreshes).
    pub index_reads_posted: u64,
    /// Bytes the index replicas hold now.
    pub index_replica_bytes: u64,
}

impl std::ops::Add for ClientStats {
    type Output = Self;

    /// Two clients' counters together (bytes held: the sum too).
    fn add(self, other: Self) -> Self {
        Self {
            sessions_opened: self.sessions_opened + other.sessions_opened,
            locate_calls: self.locate_calls + other.locate_calls,
            keep_alives: self.keep_alives + other.keep_alives,
            location_hits: self.location_hits + other.location_hits,
            reads: self.reads + other.reads,
            retries: self.retries + other.retries,
            one_sided_hits: self.one_sided_hits + other.one_sided_hits,
            index_refreshes: self.index_refreshes + other.index_refreshes,
            index_fallbacks: self.index_fallbacks + other.index_fallbacks,
            index_opens: self.index_opens + other.index_opens,
            index_reads_posted: self.index_reads_posted + other.index_reads_posted,
            index_replica_bytes: self.index_replica_bytes + other.index_replica_bytes,
        }
    }
}

#[derive(Default)]
struct Counters {
    sessions_opened: AtomicU64,
    locate_calls: AtomicU64,
    keep_alives: AtomicU64,
    location_hits: AtomicU64,
    reads: AtomicU64,
    retries: AtomicU64,
}

/// Where a record is, as Locate said.
#[derive(Clone, Debug)]
struct Location {
    segments: Vec<proto::Segment>,
    needle_size: u32,
    version: Version,
    /// How long the server keeps it readable from when it answered (`None`: an older
    /// server, which does not say).
    valid: Option<Duration>,
}

impl Location {
    /// Bytes of the record the segments add up to (no padding).
    fn read_size(&self) -> usize {
        self.version.unpadded_record_size(self.needle_size)
    }
}

struct CachedLocation {
    location: Location,
    /// When it must be located again.
    until: Instant,
}

/// Cached locations of one volume, valid for one compaction revision.
struct VolumeLocations {
    revision: u32,
    needles: HashMap<u64, CachedLocation>,
}

struct Session {
    id: u64,
    qp: Box<dyn EngineQp>,
    mode: proto::RegionMode,
    exposure: proto::Exposure,
    /// The server closes the session once it made no call for this long (`None`: it
    /// did not say). One-sided READs are no calls: see [`Session::keep_alive_due`].
    idle_timeout: Option<Duration>,
    opened: Instant,
    /// When the session last made a call, in milliseconds since `opened`.
    last_call_ms: AtomicU64,
}

impl Session {
    fn millis_since_opened(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Notes a call the server answered for this session (it marked the session used).
    fn called(&self) {
        self.last_call_ms.fetch_max(self.millis_since_opened(), Ordering::Relaxed);
    }

    /// Whether this read should send `KeepAlive` first: the session made no call for a
    /// third of the idle timeout. Reads that are all one-sided make no other call, and
    /// the server would close a session that reads all the time. True for one reader
    /// only (the others go on): the time is claimed here.
    fn keep_alive_due(&self) -> bool {
        let Some(idle) = self.idle_timeout else { return false };
        let now = self.millis_since_opened();
        let last = self.last_call_ms.load(Ordering::Relaxed);
        let due = u64::try_from((idle / 3).as_millis()).unwrap_or(u64::MAX);
        now.saturating_sub(last) >= due
            && self.last_call_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// Reads needles from one volume server over RDMA.
///
/// Use it from a tokio runtime with the time driver enabled (its calls are bounded by
/// timeouts). It is `Send + Sync`: share one per server (e.g. in an `Arc`) and read from
/// many tasks at once; they share the session and keep several READs outstanding.
pub struct RdmaClient {
    endpoint: Endpoint,
    /// Made on first use: a channel needs the runtime it will run on.
    channel: std::sync::OnceLock<RdmaControlClient<Channel>>,
    engine: Arc<dyn ReadEngine>,
    config: RdmaClientConfig,
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    locations: std::sync::Mutex<HashMap<u32, VolumeLocations>>,
    replicas: Replicas,
    counters: Counters,
}

impl std::fmt::Debug for RdmaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaClient").field("engine", &self.engine.name()).finish_non_exhaustive()
    }
}

enum Attempt {
    Done(Result<NeedleRecord, RdmaError>),
    /// Worth one more try, for this reason (returned if the retry is spent).
    Retry(RdmaError),
}

impl RdmaClient {
    /// A client for the volume server whose gRPC port is at `grpc_addr` (`host:port`).
    /// Nothing is dialed yet: the first read opens the session.
    pub fn new(
        grpc_addr: &str,
        engine: Arc<dyn ReadEngine>,
        config: RdmaClientConfig,
    ) -> Result<Self, RdmaError> {
        let endpoint = Endpoint::from_shared(format!("http://{grpc_addr}"))
            .map_err(|e| RdmaError::ControlPlane(format!("{grpc_addr}: {e}")))?
            .connect_timeout(config.rpc_timeout)
            .timeout(config.rpc_timeout);
        Ok(Self {
            endpoint,
            channel: std::sync::OnceLock::new(),
            engine,
            session: tokio::sync::Mutex::new(None),
            locations: std::sync::Mutex::new(HashMap::new()),
            replicas: Replicas::new(config.index_memory),
            counters: Counters::default(),
            config,
        })
    }

    /// The control-plane client (connects lazily, reconnects after failures). Called
    /// from async code only, i.e. inside the runtime.
    fn grpc(&self) -> RdmaControlClient<Channel> {
        self.channel
            .get_or_init(|| RdmaControlClient::new(self.config.dialer.connect_lazy(self.endpoint.clone())))
            .clone()
    }

    /// The engine's name (`"sideway"`).
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// How the server exposes records in the current session (`None` before the first
    /// read or after the session was lost).
    pub async fn server_mode(&self) -> Option<proto::RegionMode> {
        self.session.lock().await.as_ref().map(|s| s.mode)
    }

    /// What the current session may READ (`None` before the first read or after the
    /// session was lost).
    pub async fn exposure(&self) -> Option<proto::Exposure> {
        self.session.lock().await.as_ref().map(|s| s.exposure)
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let one_sided = &self.replicas.counters;
        ClientStats {
            sessions_opened: load(&c.sessions_opened),
            locate_calls: load(&c.locate_calls),
            keep_alives: load(&c.keep_alives),
            location_hits: load(&c.location_hits),
            reads: load(&c.reads),
            retries: load(&c.retries),
            one_sided_hits: load(&one_sided.hits),
            index_refreshes: load(&one_sided.refreshes),
            index_fallbacks: load(&one_sided.fallbacks),
            index_opens: load(&one_sided.opens),
            index_reads_posted: load(&one_sided.posted),
            index_replica_bytes: self.replicas.bytes(),
        }
    }

    /// Reads needle `fid` and returns its record once verified.
    pub async fn read(&self, fid: &FileId) -> Result<NeedleRecord, RdmaError> {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        match self.attempt(fid).await {
            Attempt::Done(result) => result,
            Attempt::Retry(reason) => {
                tracing::debug!(%fid, %reason, "retrying an RDMA read once");
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                match self.attempt(fid).await {
                    Attempt::Done(result) => result,
                    Attempt::Retry(error) => Err(error),
                }
            }
        }
    }

    /// Closes the session (the server destroys its queue pair). The next read opens a
    /// new one.
    pub async fn close(&self) -> Result<(), RdmaError> {
        let session = self.session.lock().await.take();
        if let Some(session) = session {
            let request = proto::CloseSessionRequest { session_id: session.id };
            self.grpc().close_session(request).await.map_err(control_plane)?;
        }
        Ok(())
    }

    async fn attempt(&self, fid: &FileId) -> Attempt {
        let session = match self.session().await {
            Ok(s) => s,
            Err(e) => return Attempt::Done(Err(e)),
        };
        if session.keep_alive_due()
            && let Err(e) = self.keep_alive(&session).await
        {
            // Closed already (idle, its token's time, a restarted server): a new one.
            self.forget_session(&session).await;
            return Attempt::Retry(e);
        }
        let located_at = Instant::now();
        // With the one-sided index every read checks its needle's bucket, so nothing is
        // read from (or put in) the location cache, whose locations may be stale. A
        // volume the server does not index is read as in `record` exposure.
        let one_sided = self.config.one_sided_index
            && session.exposure == proto::Exposure::Volume
            && self.replicas.may_serve(fid.volume.0);
        let cached = if one_sided { None } else { self.cached_location(fid) };
        if one_sided {
            match self
                .replicas
                .read(session.qp.as_ref(), fid, self.config.read_timeout, async |volume| {
                    self.open_index(&session, volume).await
                })
                .await
            {
                ColdRead::Record { record, needle_size, version } => {
                    match self.verified(fid, needle_size, version, record) {
                        Ok(result) => return Attempt::Done(result),
                        // Not returned; Locate decides (and reads) below.
                        Err(reason) => tracing::debug!(%fid, %reason, "one-sided read failed verification"),
                    }
                }
                ColdRead::Deleted => return Attempt::Done(Err(RdmaError::Deleted { fid: fid.to_string() })),
                ColdRead::Fallback(why) => tracing::trace!(%fid, why, "one-sided index: Locate instead"),
                ColdRead::Lost(e) => {
                    self.forget_session(&session).await;
                    return Attempt::Retry(e);
                }
            }
        }
        let (location, cached) = match cached {
            Some(location) => (location, true),
            None => match self.locate(&session, fid).await {
                Ok(location) => (location, false),
                Err(LocateError::SessionLost(e)) => {
                    self.forget_session(&session).await;
                    return Attempt::Retry(e);
                }
                Err(LocateError::Other(e)) => return Attempt::Done(Err(e)),
            },
        };
        let record = match self.fetch(&session, &location).await {
            Ok(record) => record,
            Err(e) => {
                self.forget_session(&session).await;
                self.forget_location(fid);
                return Attempt::Retry(e);
            }
        };
        match self.verified(fid, location.needle_size, location.version, record) {
            Ok(result) => {
                if result.is_ok() && !cached && !one_sided {
                    self.remember_location(fid, location, located_at);
                }
                Attempt::Done(result)
            }
            Err(e) => {
                self.forget_location(fid);
                let error = RdmaError::Corrupt { fid: fid.to_string(), reason: e.to_string() };
                if cached { Attempt::Retry(error) } else { Attempt::Done(Err(error)) }
            }
        }
    }

    /// The current session, opened if there is none.
    async fn session(&self) -> Result<Arc<Session>, RdmaError> {
        let mut current = self.session.lock().await;
        if let Some(session) = current.as_ref() {
            return Ok(Arc::clone(session));
        }
        let mut qp = self.engine.create_qp()?;
        let request = proto::OpenSessionRequest {
            client: Some(qp.endpoint().into()),
            jwt: self.config.jwt.clone().unwrap_or_default(),
            volume_grant: self.config.volume_grant.clone().unwrap_or_default(),
        };
        let reply = self.grpc().open_session(request).await.map_err(|status| match status.code() {
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated | tonic::Code::ResourceExhausted => {
                RdmaError::Refused(status.message().to_owned())
            }
            tonic::Code::FailedPrecondition => RdmaError::NoDevice(format!("server: {}", status.message())),
            // A gRPC server without the RdmaControl service (e.g. weed's own volume server).
            tonic::Code::Unimplemented => {
                RdmaError::NoDevice(format!("the server does not offer RDMA: {}", status.message()))
            }
            _ => control_plane(status),
        })?;
        let reply = reply.into_inner();
        let server = reply.server.as_ref().ok_or_else(|| RdmaError::Protocol("no server endpoint".into()))?;
        let server = QpEndpoint::try_from(server)?;
        if let Err(e) = qp.connect(&server) {
            let close = proto::CloseSessionRequest { session_id: reply.session_id };
            let _ = self.grpc().close_session(close).await;
            return Err(e);
        }
        self.counters.sessions_opened.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session {
            id: reply.session_id,
            qp,
            mode: reply.mode(),
            exposure: reply.exposure(),
            idle_timeout: (reply.idle_timeout_ms > 0)
                .then(|| Duration::from_millis(u64::from(reply.idle_timeout_ms))),
            opened: Instant::now(),
            last_call_ms: AtomicU64::new(0),
        });
        *current = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Drops `session` if it is still the current one (another task may have replaced
    /// it already), and the index replicas with it: a lost session may be a restarted
    /// server, whose registrations are gone.
    async fn forget_session(&self, session: &Arc<Session>) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, session)) {
            *current = None;
            self.replicas.clear();
            let request = proto::CloseSessionRequest { session_id: session.id };
            // Best effort: the server may be gone; its idle timeout reaps the rest.
            let _ = self.grpc().close_session(request).await;
        }
    }

    /// Marks `session` used at the server. An error means it is gone (or the server is
    /// down); a server without the call is not one (its sessions then expire as before).
    async fn keep_alive(&self, session: &Session) -> Result<(), RdmaError> {
        self.counters.keep_alives.fetch_add(1, Ordering::Relaxed);
        let request = proto::KeepAliveRequest { session_id: session.id };
        match self.grpc().keep_alive(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(()),
            Err(status) => Err(control_plane(status)),
        }
    }

    /// The one-sided index of `volume` (`None`: the server does not index it for us).
    async fn open_index(&self, session: &Session, volume: u32) -> Result<Option<OpenedIndex>, RdmaError> {
        let request = proto::OpenIndexRequest { session_id: session.id, volume_id: volume };
        let reply = match self.grpc().open_index(request).await {
            Ok(reply) => {
                session.called();
                reply.into_inner()
            }
            Err(status) => {
                return match status.code() {
                    tonic::Code::NotFound | tonic::Code::Unavailable | tonic::Code::Unauthenticated => {
                        Err(control_plane(status))
                    }
                    // Refused, not offered, or an older server without the call.
                    _ => Ok(None),
                };
            }
        };
        let Some(header) = reply.header else { return Ok(None) };
        let header = RemoteSpan { addr: header.addr, rkey: header.rkey, len: header.len };
        Ok(Some(OpenedIndex { header, grace: Duration::from_millis(u64::from(reply.grace_ms)) }))
    }

    /// The record, checked (header, cookie, size, CRC32-C) and unexpired.
    fn verified(
        &self,
        fid: &FileId,
        needle_size: u32,
        version: Version,
        record: Vec<u8>,
    ) -> Result<Result<NeedleRecord, RdmaError>, needle::FormatError> {
        let (needle, crc) = verify_record(fid, needle_size, version, &record)?;
        if needle.is_expired_at(unix_now_ns()) {
            // As weed's HTTP read says: a needle past its TTL is not found.
            return Ok(Err(RdmaError::NotFound { fid: fid.to_string() }));
        }
        Ok(Ok(NeedleRecord { record, version, crc }))
    }

    async fn locate(&self, session: &Session, fid: &FileId) -> Result<Location, LocateError> {
        self.counters.locate_calls.fetch_add(1, Ordering::Relaxed);
        let request = proto::LocateRequest { session_id: session.id, fids: vec![fid.to_string()] };
        let reply = self.grpc().locate(request).await.map_err(|status| match status.code() {
            // Unknown session (expired, or the server restarted), its token run out, and a
            // server that is down for now: a new session may help.
            tonic::Code::NotFound | tonic::Code::Unavailable | tonic::Code::Unauthenticated => {
                LocateError::SessionLost(control_plane(status))
            }
            _ => LocateError::Other(control_plane(status)),
        })?;
        session.called();
        let result = reply.into_inner().results.into_iter().next();
        let result = result
            .ok_or_else(|| LocateError::Other(RdmaError::Protocol("Locate answered nothing".into())))?;
        let fid_text = fid.to_string();
        let located = match result.status() {
            LocateStatus::Found => self.location_of(fid, &result),
            LocateStatus::NotFound => Err(RdmaError::NotFound { fid: fid_text }),
            LocateStatus::Deleted => Err(RdmaError::Deleted { fid: fid_text }),
            LocateStatus::BadFid => Err(RdmaError::BadFid { fid: fid_text, message: result.message }),
            LocateStatus::VolumeNotHere => Err(RdmaError::VolumeNotHere { fid: fid_text }),
            LocateStatus::Unavailable => Err(RdmaError::ControlPlane(result.message)),
            LocateStatus::Forbidden => Err(RdmaError::Refused(result.message)),
            LocateStatus::Unspecified => Err(RdmaError::Protocol("Locate status missing".into())),
        };
        located.map_err(LocateError::Other)
    }

    /// Checks a FOUND result and notes its volume's compaction revision.
    fn location_of(&self, fid: &FileId, result: &proto::LocateResult) -> Result<Location, RdmaError> {
        let version = u8::try_from(result.version)
            .ok()
            .and_then(|v| Version::from_byte(v).ok())
            .ok_or_else(|| RdmaError::Protocol(format!("needle version {}", result.version)))?;
        let expected = version.unpadded_record_size(result.needle_size) as u64;
        let total: u64 = result.segments.iter().map(|s| u64::from(s.len)).sum();
        if result.read_size != expected || total != expected {
            return Err(RdmaError::Protocol(format!(
                "segments of {total} bytes for a record of {expected} bytes (read size {})",
                result.read_size
            )));
        }
        let mut locations = self.locations.lock().expect("location cache lock");
        let volume = locations.entry(fid.volume.0).or_insert_with(|| VolumeLocations {
            revision: result.compaction_revision,
            needles: HashMap::new(),
        });
        if volume.revision != result.compaction_revision {
            volume.revision = result.compaction_revision;
            volume.needles.clear();
        }
        let valid = (result.valid_ms > 0).then(|| Duration::from_millis(u64::from(result.valid_ms)));
        Ok(Location { segments: result.segments.clone(), needle_size: result.needle_size, version, valid })
    }

    fn cached_location(&self, fid: &FileId) -> Option<Location> {
        if self.config.location_ttl.is_zero() {
            return None;
        }
        let mut locations = self.locations.lock().expect("location cache lock");
        let needles = &mut locations.get_mut(&fid.volume.0)?.needles;
        let key = fid.needle_id().0;
        let cached = needles.get(&key)?;
        if Instant::now() >= cached.until {
            needles.remove(&key);
            return None;
        }
        self.counters.location_hits.fetch_add(1, Ordering::Relaxed);
        Some(cached.location.clone())
    }

    /// Caches `location`, located at `located_at`, until the TTL or three quarters of
    /// its validity, whichever comes first.
    fn remember_location(&self, fid: &FileId, location: Location, located_at: Instant) {
        let keep =
            location.valid.map_or(self.config.location_ttl, |v| self.config.location_ttl.min(v * 3 / 4));
        if keep.is_zero() {
            return;
        }
        let mut locations = self.locations.lock().expect("location cache lock");
        if let Some(volume) = locations.get_mut(&fid.volume.0) {
            let now = Instant::now();
            volume.needles.retain(|_, c| now < c.until);
            volume.needles.insert(fid.needle_id().0, CachedLocation { location, until: located_at + keep });
        }
    }

    /// Drops the cached location of `fid`, e.g. after the caller deleted or overwrote
    /// it, so that the next read locates it again.
    pub fn forget_location(&self, fid: &FileId) {
        let mut locations = self.locations.lock().expect("location cache lock");
        if let Some(volume) = locations.get_mut(&fid.volume.0) {
            volume.needles.remove(&fid.needle_id().0);
        }
    }

    /// READs every segment (all outstanding at once) into one record.
    async fn fetch(&self, session: &Session, location: &Location) -> Result<Vec<u8>, RdmaError> {
        let reads = location.segments.iter().map(|s| session.qp.read(s.addr, s.rkey, s.len));
        let parts = bounded(self.config.read_timeout, futures_util::future::try_join_all(reads)).await?;
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let mut record = Vec::with_capacity(location.read_size());
        for part in parts {
            record.extend_from_slice(&part);
        }
        Ok(record)
    }
}

enum LocateError {
    SessionLost(RdmaError),
    Other(RdmaError),
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn control_plane(status: tonic::Status) -> RdmaError {
    RdmaError::ControlPlane(format!("{:?}: {}", status.code(), status.message()))
}
