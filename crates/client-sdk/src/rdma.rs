//! The RDMA read transport: `rdma-transport`'s [`RdmaClient`] behind [`ReadTransport`].
//!
//! One [`RdmaClient`] (one control-plane channel, one session and queue pair) per volume
//! server, made on the first read from that server and kept in a bounded map (the least
//! recently used one goes when it is full). A client whose connection failed is dropped,
//! so the next attempt after the policy's backoff starts afresh. The engine (the opened
//! device) is shared by all of them; it is opened on the first read, and again on a
//! later one if there was no device then.
//!
//! `rdma-transport`'s typed errors become the [`TransportErrorKind`]s the fallback policy
//! decides on:
//!
//! | `RdmaError`                                   | kind            | the read          |
//! |-----------------------------------------------|-----------------|-------------------|
//! | `NoDevice` (this host, or the server has none, or no RDMA service) | `NotOffered` | falls back, backs off |
//! | `ControlPlane`, `Transfer`, `Protocol`, `Refused` | `Unavailable` | falls back, backs off |
//! | `NotFound`, `Deleted`, `VolumeNotHere`        | `NotFound`      | ends (authoritative) |
//! | `Corrupt` (header or CRC32-C, after one retry) | `Corrupt`      | falls back        |
//! | `BadFid` (the server rejects the fid or the token's scope) | `Server(400)` | falls back, backs off |
//!
//! A cluster whose gRPC runs mutual TLS (weed's `security.toml` `[grpc]` sections) serves
//! the control plane on its TLS gRPC port: give the transport a client certificate
//! ([`RdmaTransportConfig::with_weed_security_toml`] or
//! [`RdmaTransportConfig::with_grpc_tls`]). Without one, or with one the servers do not
//! trust, no session opens (`ControlPlane`: the reads fall back to HTTP, counted as
//! `Unavailable`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use needle::FileId;
use rdma_transport::grpc_tls::{ClientTlsFiles, Dialer, TlsError};
use rdma_transport::verbs::{SidewayConfig, SidewayEngine};
use rdma_transport::{ClientStats, NeedleRecord, RdmaClient, RdmaClientConfig, RdmaError, ReadEngine};

use crate::transport::{BoxFuture, NeedleData, ReadTransport, TransportError, TransportErrorKind};

pub use rdma_transport::verbs::DeviceChoice;

/// Which `rdma-transport` engine does the READs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RdmaEngine {
    /// sideway (libibverbs loaded at run time): the default.
    #[default]
    Sideway,
    /// async-rdma 0.5.0 (feature `async-rdma`; GPL-3.0). Its completions are polled on the
    /// tokio runtime that made the first read to a server, so that runtime must keep
    /// running (and have IO enabled) while the client reads.
    #[cfg(feature = "async-rdma")]
    AsyncRdma,
}

impl RdmaEngine {
    /// The transport's name in metrics and logs.
    fn transport_name(self) -> &'static str {
        match self {
            RdmaEngine::Sideway => "rdma-sideway",
            #[cfg(feature = "async-rdma")]
            RdmaEngine::AsyncRdma => "rdma-async-rdma",
        }
    }

    fn open(self, device: &DeviceChoice) -> Result<Arc<dyn ReadEngine>, RdmaError> {
        match self {
            RdmaEngine::Sideway => Ok(Arc::new(SidewayEngine::open(SidewayConfig::new(device.clone()))?)),
            #[cfg(feature = "async-rdma")]
            RdmaEngine::AsyncRdma => {
                use rdma_transport::async_rdma_engine::{AsyncRdmaConfig, AsyncRdmaEngine};
                Ok(Arc::new(AsyncRdmaEngine::open(AsyncRdmaConfig::new(device.clone()))?))
            }
        }
    }
}

/// How an [`RdmaTransport`] is set up.
#[derive(Clone, Debug)]
pub struct RdmaTransportConfig {
    pub engine: RdmaEngine,
    /// The local RDMA device. The default, `Ip(0.0.0.0)`, takes the first device with an
    /// IPv4 RoCE v2 GID.
    pub device: DeviceChoice,
    /// The control plane listens on the volume server's HTTP port plus this (weed's gRPC
    /// convention, default 10000).
    pub grpc_port_offset: u16,
    /// Most volume servers with a live RDMA client at once.
    pub max_servers: usize,
    /// How long a needle's location (from the control plane) is reused; zero locates
    /// every read. Within it, a needle another client deleted or overwrote may still be
    /// read in its previous, intact version (this client's own deletes drop the
    /// location at once). A location is never reused past three quarters of the time
    /// the server keeps it readable (it says so in each Locate answer), so READs never
    /// run into an expired grant.
    pub location_ttl: Duration,
    /// A volume-read grant (a token signed with the servers' read key naming volumes or
    /// collections) presented when a session opens: servers running `--rdma-exposure
    /// volume` then let the session READ those volumes whole, the others give it `record`
    /// exposure as to any session; `None` (the default) asks for `record` exposure.
    pub volume_grant: Option<String>,
    /// Bound on each control-plane call.
    pub rpc_timeout: Duration,
    /// Bound on the READs of one needle. The client's RDMA timeout
    /// ([`ClientBuilder::rdma_timeout`](crate::ClientBuilder::rdma_timeout)) bounds the
    /// whole attempt as well.
    pub read_timeout: Duration,
    /// How the control plane is dialed: plaintext (the default), or mutual TLS, set with
    /// [`RdmaTransportConfig::with_grpc_tls`] or
    /// [`RdmaTransportConfig::with_weed_security_toml`].
    pub grpc_dialer: Dialer,
    /// On servers running `volume` exposure, read needles with no cached location
    /// through the server's one-sided index: READs only, no Locate and no server CPU
    /// (on by default; off locates them).
    pub one_sided_index: bool,
    /// Most bytes the per-volume index replicas may hold, per volume server (28-46 bytes
    /// per needle, by how full the hash tables are; least recently used volumes are
    /// dropped first). A volume whose `.idx` has more entries than the whole budget
    /// holds (5.3 million for 256 MiB) is read through Locate, its index not READ.
    pub index_memory: u64,
}

impl Default for RdmaTransportConfig {
    fn default() -> Self {
        let client = RdmaClientConfig::default();
        Self {
            engine: RdmaEngine::default(),
            device: DeviceChoice::Ip([0, 0, 0, 0].into()),
            grpc_port_offset: 10000,
            max_servers: 256,
            location_ttl: client.location_ttl,
            volume_grant: None,
            rpc_timeout: client.rpc_timeout,
            read_timeout: client.read_timeout,
            grpc_dialer: Dialer::default(),
            one_sided_index: client.one_sided_index,
            index_memory: client.index_memory,
        }
    }
}

impl RdmaTransportConfig {
    /// Dials the control plane over mutual TLS: presents `files.cert`/`files.key` and
    /// trusts servers whose certificate chains to `files.ca` (their host names are not
    /// checked, as in weed). The files are read now: a missing or unreadable one is an
    /// error here, not a fallback later.
    pub fn with_grpc_tls(self, files: &ClientTlsFiles) -> Result<Self, TlsError> {
        Ok(Self { grpc_dialer: Dialer::mutual_tls(files)?, ..self })
    }

    /// Dials the control plane as weed's own gRPC clients (`weed shell`, `mount`, ...)
    /// do with this `security.toml`: with `[grpc.client]`'s certificate
    /// (`client_cert`/`client_key` if set, else `cert`/`key`), trusting `[grpc] ca`.
    /// Relative paths are taken from the file's directory. A file without a client
    /// certificate leaves the control plane plaintext, as in weed; a half one (`cert`
    /// without `key`, no `ca`), a missing file or a bad PEM is an error. weed's
    /// `WEED_GRPC_*` environment variables are not read.
    ///
    /// ```no_run
    /// use client_sdk::{RdmaTransport, RdmaTransportConfig};
    ///
    /// let config = RdmaTransportConfig::default()
    ///     .with_weed_security_toml("/etc/seaweedfs/security.toml".as_ref())?;
    /// let rdma = RdmaTransport::new(config);
    /// # drop(rdma);
    /// # Ok::<(), client_sdk::grpc_tls::TlsError>(())
    /// ```
    pub fn with_weed_security_toml(self, security_toml: &Path) -> Result<Self, TlsError> {
        match crate::weed_security::grpc_client_files(security_toml)? {
            Some(files) => self.with_grpc_tls(&files),
            None => Ok(Self { grpc_dialer: Dialer::default(), ..self }),
        }
    }
}

/// Reads needles over RDMA; give it to
/// [`ClientBuilder::rdma_transport`](crate::ClientBuilder::rdma_transport).
///
/// ```no_run
/// use client_sdk::{Client, RdmaPolicy, RdmaTransport, RdmaTransportConfig};
/// use std::sync::Arc;
///
/// let rdma = RdmaTransport::new(RdmaTransportConfig::default());
/// let client = Client::builder("127.0.0.1:9333")
///     .rdma_transport(Arc::new(rdma))
///     .rdma_policy(RdmaPolicy::Prefer)
///     .build()?;
/// # drop(client);
/// # Ok::<(), client_sdk::Error>(())
/// ```
#[derive(Debug)]
pub struct RdmaTransport {
    config: RdmaTransportConfig,
    /// Opened on first use; stays `None` while there is no device.
    engine: Mutex<Option<Arc<dyn ReadEngine>>>,
    clients: Mutex<HashMap<ClientKey, Cached>>,
}

/// A client per server and token: the session is opened with the token.
type ClientKey = (String, Option<String>);

#[derive(Debug)]
struct Cached {
    client: Arc<RdmaClient>,
    used: Instant,
}

impl RdmaTransport {
    /// Nothing is opened or dialed until the first read.
    pub fn new(config: RdmaTransportConfig) -> Self {
        Self { config, engine: Mutex::new(None), clients: Mutex::new(HashMap::new()) }
    }

    /// What the RDMA clients of the servers connected now did, summed: sessions,
    /// Locate calls, one-sided index hits and refreshes, READs posted, replica bytes.
    pub fn stats(&self) -> ClientStats {
        let clients = self.clients.lock().expect("not poisoned");
        clients.values().map(|c| c.client.stats()).fold(ClientStats::default(), |a, b| a + b)
    }

    /// Volume servers with a live client now.
    pub fn connected_servers(&self) -> usize {
        self.clients.lock().expect("not poisoned").len()
    }

    fn engine(&self) -> Result<Arc<dyn ReadEngine>, RdmaError> {
        let mut engine = self.engine.lock().expect("not poisoned");
        if let Some(engine) = engine.as_ref() {
            return Ok(Arc::clone(engine));
        }
        let opened = self.config.engine.open(&self.config.device)?;
        *engine = Some(Arc::clone(&opened));
        Ok(opened)
    }

    /// The client for `server`, made if there is none.
    fn client(&self, server: &str, jwt: Option<&str>) -> Result<Arc<RdmaClient>, RdmaError> {
        let key = (server.to_owned(), jwt.map(str::to_owned));
        let now = Instant::now();
        if let Some(cached) = self.clients.lock().expect("not poisoned").get_mut(&key) {
            cached.used = now;
            return Ok(Arc::clone(&cached.client));
        }
        let engine = self.engine()?;
        let grpc = grpc_address(server, self.config.grpc_port_offset)?;
        let config = RdmaClientConfig {
            jwt: key.1.clone(),
            volume_grant: self.config.volume_grant.clone(),
            location_ttl: self.config.location_ttl,
            rpc_timeout: self.config.rpc_timeout,
            read_timeout: self.config.read_timeout,
            dialer: self.config.grpc_dialer.clone(),
            one_sided_index: self.config.one_sided_index,
            index_memory: self.config.index_memory,
        };
        let client = Arc::new(RdmaClient::new(&grpc, engine, config)?);
        let mut clients = self.clients.lock().expect("not poisoned");
        if clients.len() >= self.config.max_servers.max(1)
            && !clients.contains_key(&key)
            && let Some(oldest) = clients.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| k.clone())
        {
            clients.remove(&oldest);
        }
        // Another read may have made one meanwhile: use the one in the map.
        let cached = clients.entry(key).or_insert(Cached { client, used: now });
        Ok(Arc::clone(&cached.client))
    }

    /// Drops `client` (if it is still the one for `server`) so the next read reconnects.
    fn forget(&self, server: &str, jwt: Option<&str>, client: &Arc<RdmaClient>) {
        let key = (server.to_owned(), jwt.map(str::to_owned));
        let mut clients = self.clients.lock().expect("not poisoned");
        if clients.get(&key).is_some_and(|c| Arc::ptr_eq(&c.client, client)) {
            clients.remove(&key);
        }
    }
}

impl ReadTransport for RdmaTransport {
    fn name(&self) -> &'static str {
        self.config.engine.transport_name()
    }

    fn read_needle<'a>(
        &'a self,
        server: &'a str,
        fid: &'a FileId,
        jwt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NeedleData, TransportError>> {
        Box::pin(async move {
            let client = self.client(server, jwt).map_err(|e| transport_error(&e))?;
            match client.read(fid).await {
                Ok(record) => Ok(needle_data(record)),
                Err(e) => {
                    if breaks_connection(&e) {
                        self.forget(server, jwt, &client);
                    }
                    Err(transport_error(&e))
                }
            }
        })
    }

    fn forget_needle(&self, server: &str, fid: &FileId) {
        let clients = self.clients.lock().expect("not poisoned");
        for ((at, _), cached) in clients.iter() {
            if at == server {
                cached.client.forget_location(fid);
            }
        }
    }
}

/// The control plane's `host:port` for the volume server at HTTP `host:port`.
fn grpc_address(server: &str, offset: u16) -> Result<String, RdmaError> {
    let bad = || RdmaError::NoDevice(format!("no RDMA control-plane address for server {server:?}"));
    let (host, port) = server.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse::<u16>().ok().and_then(|p| p.checked_add(offset)).ok_or_else(bad)?;
    Ok(format!("{host}:{port}"))
}

/// Whether the client's connection is suspect after `e`: then it is rebuilt.
fn breaks_connection(e: &RdmaError) -> bool {
    matches!(
        e,
        RdmaError::NoDevice(_) | RdmaError::ControlPlane(_) | RdmaError::Transfer(_) | RdmaError::Protocol(_)
    )
}

/// The kind the fallback policy decides on (see the module docs).
fn transport_error(e: &RdmaError) -> TransportError {
    let kind = match e {
        RdmaError::NoDevice(_) => TransportErrorKind::NotOffered,
        RdmaError::ControlPlane(_)
        | RdmaError::Transfer(_)
        | RdmaError::Protocol(_)
        | RdmaError::Refused(_) => TransportErrorKind::Unavailable,
        RdmaError::NotFound { .. } | RdmaError::Deleted { .. } | RdmaError::VolumeNotHere { .. } => {
            TransportErrorKind::NotFound
        }
        RdmaError::Corrupt { .. } => TransportErrorKind::Corrupt,
        RdmaError::BadFid { .. } => TransportErrorKind::Server(400),
    };
    TransportError { kind, message: e.to_string() }
}

/// The needle's stored data out of its verified record, without copying it.
fn needle_data(record: NeedleRecord) -> NeedleData {
    let needle = record.needle();
    let compressed = needle.is_compressed();
    let content_type = (!needle.mime.is_empty()).then(|| String::from_utf8_lossy(needle.mime).into_owned());
    let start = needle.data.as_ptr() as usize - record.record.as_ptr() as usize;
    let data = start..start + needle.data.len();
    let chunk_manifest = needle.is_chunk_manifest();
    NeedleData {
        bytes: Bytes::from(record.record).slice(data),
        compressed,
        chunk_manifest,
        crc: record.crc,
        content_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_control_plane_is_on_the_http_port_plus_the_offset() {
        assert_eq!(grpc_address("127.0.0.1:8080", 10000).unwrap(), "127.0.0.1:18080");
        assert_eq!(grpc_address("[::1]:8080", 10000).unwrap(), "[::1]:18080");
        for bad in ["localhost", "h:x", "h:60000"] {
            assert!(matches!(grpc_address(bad, 10000), Err(RdmaError::NoDevice(_))), "{bad}");
        }
    }

    #[test]
    fn errors_map_to_what_the_policy_decides_on() {
        let fid = || "3,01637037d6".to_owned();
        let cases = [
            (RdmaError::NoDevice("none".into()), TransportErrorKind::NotOffered),
            (RdmaError::ControlPlane("refused".into()), TransportErrorKind::Unavailable),
            (RdmaError::Transfer("qp".into()), TransportErrorKind::Unavailable),
            (RdmaError::Protocol("?".into()), TransportErrorKind::Unavailable),
            (RdmaError::Refused("jwt".into()), TransportErrorKind::Unavailable),
            (RdmaError::NotFound { fid: fid() }, TransportErrorKind::NotFound),
            (RdmaError::Deleted { fid: fid() }, TransportErrorKind::NotFound),
            (RdmaError::VolumeNotHere { fid: fid() }, TransportErrorKind::NotFound),
            (RdmaError::Corrupt { fid: fid(), reason: "crc".into() }, TransportErrorKind::Corrupt),
            (RdmaError::BadFid { fid: fid(), message: "scope".into() }, TransportErrorKind::Server(400)),
        ];
        for (error, kind) in cases {
            let mapped = transport_error(&error);
            assert_eq!(mapped.kind, kind, "{error}");
            assert_eq!(mapped.message, error.to_string());
        }
    }

    #[test]
    fn grpc_tls_comes_from_security_toml_and_its_files_are_read_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("security.toml");
        let client_section = "[grpc]\nca = \"pki/cluster-ca.crt\"\n[grpc.client]\n\
                              cert = \"pki/client.crt\"\nkey = \"pki/client.key\"\n";
        std::fs::write(&toml, client_section).unwrap();
        // Named but not there yet: an error naming the file (paths relative to the toml's directory).
        let error = RdmaTransportConfig::default().with_weed_security_toml(&toml).unwrap_err();
        let ca = dir.path().join("pki/cluster-ca.crt");
        assert!(matches!(&error, TlsError::File { path, .. } if *path == ca), "{error}");

        let pki = testbeds::pki::Pki::new(&dir.path().join("pki")).unwrap();
        pki.ca("cluster").unwrap();
        pki.cert("cluster", "client").unwrap();
        let config = RdmaTransportConfig::default().with_weed_security_toml(&toml).unwrap();
        assert!(config.grpc_dialer.is_tls());

        // No client certificate in the file: plaintext, as weed's clients dial then.
        std::fs::write(&toml, "[jwt.signing]\nkey = \"k\"\n").unwrap();
        let config = config.with_weed_security_toml(&toml).unwrap();
        assert!(!config.grpc_dialer.is_tls());
        assert!(!RdmaTransportConfig::default().grpc_dialer.is_tls());
    }

    #[test]
    fn stored_data_is_sliced_from_the_verified_record() {
        let data = b"some stored bytes";
        let needle =
            needle::Needle::new(needle::NeedleId(7), needle::Cookie(9), data).with_mime(b"text/plain");
        let record = needle.to_bytes(needle::Version::V3).unwrap();
        let crc = needle::crc::crc32c(data);
        let out = needle_data(NeedleRecord { record, version: needle::Version::V3, crc });
        assert_eq!(&out.bytes[..], data);
        assert_eq!((out.crc, out.compressed, out.content_type.as_deref()), (crc, false, Some("text/plain")));
    }
}
