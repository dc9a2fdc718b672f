//! The client and its builder: the state a [`Client`] shares across clones (master
//! API, transports, fallback policy) and its read metrics.

use crate::FallbackReason;
use crate::master::{self, MasterApi};
use crate::policy::PolicyState;
use crate::{Backoff, Error, HttpTransport, RdmaPolicy, ReadMetrics, ReadTransport, TransportHealth};
use fallback_http::{HttpReadConfig, HttpReader};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Builds a [`Client`].
///
/// ```
/// use client_sdk::{Backoff, Client, RdmaPolicy};
/// use std::time::Duration;
///
/// let client = Client::builder("127.0.0.1:9333")          // a master
///     .request_timeout(Duration::from_secs(10))
///     .location_cache_ttl(Duration::from_secs(60))
///     .rdma_policy(RdmaPolicy::Prefer)                    // with .rdma_transport(engine)
///     .rdma_timeout(Duration::from_millis(500))
///     .backoff(Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(30) })
///     .jwt("eyJhbGciOiJIUzI1NiJ9.e30.signature")
///     .build()?;
/// # drop(client);
/// # Ok::<(), client_sdk::Error>(())
/// ```
#[derive(Debug)]
pub struct ClientBuilder {
    master: String,
    single_server: bool,
    request_timeout: Duration,
    location_cache_ttl: Duration,
    rdma: Vec<Arc<dyn ReadTransport>>,
    rdma_policy: RdmaPolicy,
    rdma_timeout: Duration,
    backoff: Backoff,
    jwt: Option<String>,
    stream_memory_limit: u64,
    locator: Option<Arc<dyn master::VolumeLocator>>,
}

impl ClientBuilder {
    /// Bound on each HTTP request (master and volume servers), connect to last byte.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a volume's locations are trusted before asking the master again
    /// (default 10 minutes; errors that suggest a move refresh them sooner).
    pub fn location_cache_ttl(mut self, ttl: Duration) -> Self {
        self.location_cache_ttl = ttl;
        self
    }

    /// Adds an RDMA read transport, tried before HTTP per the [`RdmaPolicy`]. Several
    /// are tried in the order they are added.
    pub fn rdma_transport(mut self, transport: Arc<dyn ReadTransport>) -> Self {
        self.rdma.push(transport);
        self
    }

    /// Whether reads use RDMA (default [`RdmaPolicy::Prefer`]).
    pub fn rdma_policy(mut self, policy: RdmaPolicy) -> Self {
        self.rdma_policy = policy;
        self
    }

    /// Bound on one RDMA attempt; past it the attempt is dropped and the read falls back
    /// (default 5 s).
    pub fn rdma_timeout(mut self, timeout: Duration) -> Self {
        self.rdma_timeout = timeout;
        self
    }

    /// How long a failing RDMA transport is skipped on a server before it is tried again.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// A token presented on every read and delete, and when an RDMA session opens. In
    /// a cluster that signs reads or writes, HTTP reads, stats and deletes need none: on
    /// a 401 they get the file's own token from the master (`/dir/lookup?fileId=`) and
    /// try once more. RDMA sessions only ever present this one: for clusters that sign
    /// reads, give a token signed with the read key (without a `fid` claim it opens
    /// sessions for any file).
    pub fn jwt(mut self, token: impl Into<String>) -> Self {
        self.jwt = Some(token.into());
        self
    }

    /// Needles up to this many stored bytes are held in memory by [`Client::download_stream`]
    /// until verified; larger ones in an unlinked temporary file (default 16 MiB).
    pub fn stream_memory_limit(mut self, bytes: u64) -> Self {
        self.stream_memory_limit = bytes;
        self
    }

    /// Volume locations from `locator` instead of the master's `/dir/lookup`.
    #[cfg(feature = "filer")]
    pub(crate) fn volume_locator(mut self, locator: Arc<dyn master::VolumeLocator>) -> Self {
        self.locator = Some(locator);
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.master.is_empty() {
            return Err(Error::Config("the master address is empty".into()));
        }
        if self.rdma_policy == RdmaPolicy::Require && self.rdma.is_empty() {
            return Err(Error::Config("RdmaPolicy::Require needs an RDMA transport".into()));
        }
        if self.rdma_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config("timeouts must be above zero".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(self.request_timeout)
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let reader =
            HttpReader::new(&HttpReadConfig { request_timeout: self.request_timeout, ..Default::default() })
                .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Client {
            inner: Arc::new(Inner {
                master: MasterApi::new(
                    http.clone(),
                    self.master,
                    self.single_server,
                    self.location_cache_ttl,
                )
                .with_locator(self.locator),
                http,
                rdma: if self.rdma_policy == RdmaPolicy::Off { Vec::new() } else { self.rdma },
                rdma_policy: self.rdma_policy,
                rdma_timeout: self.rdma_timeout,
                http_transport: HttpTransport::new(reader),
                policy: PolicyState::new(self.backoff),
                jwt: self.jwt,
                stream_memory_limit: self.stream_memory_limit,
            }),
        })
    }
}

/// A SeaweedFS client. Cheap to clone; clones share connections, caches and counters.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) master: MasterApi,
    pub(crate) http: reqwest::Client,
    pub(crate) rdma: Vec<Arc<dyn ReadTransport>>,
    pub(crate) rdma_policy: RdmaPolicy,
    pub(crate) rdma_timeout: Duration,
    pub(crate) http_transport: HttpTransport,
    pub(crate) policy: PolicyState,
    pub(crate) jwt: Option<String>,
    pub(crate) stream_memory_limit: u64,
}

impl Client {
    /// A client of the master (or of a standalone volume server, which embeds the
    /// master API) at `host:port`.
    pub fn builder(master: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            master: master.into(),
            single_server: false,
            request_timeout: Duration::from_secs(30),
            location_cache_ttl: Duration::from_secs(600),
            rdma: Vec::new(),
            rdma_policy: RdmaPolicy::default(),
            rdma_timeout: Duration::from_secs(5),
            backoff: Backoff::default(),
            jwt: None,
            stream_memory_limit: 16 << 20,
            locator: None,
        }
    }

    /// A client of one volume server at `host:port` that holds every volume it reads:
    /// no location lookups. Uploads still ask it for `/dir/assign`, which our standalone
    /// volume server answers.
    pub fn builder_for_volume_server(server: impl Into<String>) -> ClientBuilder {
        ClientBuilder { single_server: true, ..Self::builder(server) }
    }

    /// Reads served per transport, fallbacks per transport and reason, and location
    /// lookups, since the client was built.
    pub fn metrics(&self) -> ReadMetrics {
        self.inner.policy.metrics()
    }

    /// How many reads fell back from each transport, by reason (the `fallbacks` of
    /// [`Client::metrics`]).
    pub fn fallback_counts(&self) -> HashMap<(&'static str, FallbackReason), u64> {
        self.metrics().fallbacks.into_iter().collect()
    }

    /// The RDMA transports that failed on some server since they last worked there, and
    /// how long each is still skipped.
    pub fn transport_health(&self) -> Vec<TransportHealth> {
        self.inner.policy.health()
    }
}
