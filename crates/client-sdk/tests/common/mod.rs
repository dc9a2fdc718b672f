//! Shared by the SDK's integration tests: our standalone volume server, and stand-ins for
//! an RDMA engine on a host that has none.

#![allow(dead_code)] // each test target uses a different part

use client_sdk::{
    Backoff, BoxFuture, Client, FileId, NeedleData, ReadTransport, TransportError, TransportErrorKind,
};
use fallback_http::{HttpReadConfig, HttpReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testbeds::ours::{OurVolumeServer, volume_server_binary};
use testbeds::softroce::slowness::scaled;

/// Our volume server, standalone (it answers the master API itself), over `dir`.
pub fn our_server(dir: &std::path::Path) -> OurVolumeServer {
    OurVolumeServer::start(&volume_server_binary(), dir, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// The RDMA device of the Soft-RoCE guest (`$SOFTROCE_DEVICE`, rxe0).
#[cfg(feature = "rdma")]
pub fn guest_device() -> String {
    std::env::var("SOFTROCE_DEVICE").unwrap_or_else(|_| "rxe0".to_owned())
}

/// The RDMA transport of the guest tests: `engine` on the guest's device, its
/// control-plane and READ limits scaled to the guest's speed (`testbeds::softroce::
/// slowness`): a read that is slow because the whole guest is slow is not a failure.
#[cfg(feature = "rdma")]
pub fn guest_rdma_config(engine: client_sdk::RdmaEngine) -> client_sdk::RdmaTransportConfig {
    client_sdk::RdmaTransportConfig {
        engine,
        device: client_sdk::DeviceChoice::Name(guest_device()),
        read_timeout: scaled(Duration::from_secs(10)),
        rpc_timeout: scaled(Duration::from_secs(10)),
        ..client_sdk::RdmaTransportConfig::default()
    }
}

/// A client of `server` reading through `rdma` first under `policy` (with `jwt` for RDMA
/// sessions if given), its limits scaled to the guest's speed. The first read of a
/// client opens a TLS or plain gRPC connection, a session and a queue pair: seconds in
/// the emulated guest, hence an RDMA limit well above that.
#[cfg(feature = "rdma")]
pub fn guest_client(
    server: &str,
    rdma: client_sdk::RdmaTransportConfig,
    policy: client_sdk::RdmaPolicy,
    jwt: Option<String>,
) -> Client {
    let mut builder = Client::builder(server)
        .rdma_transport(Arc::new(client_sdk::RdmaTransport::new(rdma)))
        .rdma_policy(policy)
        .rdma_timeout(scaled(Duration::from_secs(15)))
        .request_timeout(scaled(Duration::from_secs(30)))
        .backoff(Backoff { initial: Duration::from_millis(200), max: Duration::from_millis(200) });
    if let Some(jwt) = jwt {
        builder = builder.jwt(jwt);
    }
    builder.build().expect("a client")
}

/// The runtime the SDK tests drive their clients on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A backoff no test outlasts: reads made while it runs are skipped however slow they are.
pub const LONG_BACKOFF: Backoff =
    Backoff { initial: Duration::from_secs(3600), max: Duration::from_secs(3600) };

/// A short backoff, for tests that wait it out with [`wait_out_backoff`].
pub const SHORT_BACKOFF: Backoff =
    Backoff { initial: Duration::from_millis(100), max: Duration::from_millis(100) };

/// Sleeps until every transport `client` backs off from may be tried again (the longest
/// `retry_in` of its `transport_health`): a backoff waited out exactly, not guessed with
/// a sleep that a slow read before could have eaten into.
pub async fn wait_out_backoff(client: &Client) {
    let longest = client.transport_health().iter().map(|h| h.retry_in).max().unwrap_or_default();
    // tokio's timer has millisecond granularity and never fires early; one more
    // millisecond keeps a sub-millisecond remainder from being rounded away.
    tokio::time::sleep(longest + Duration::from_millis(1)).await;
}

/// A client of `server` whose RDMA transport is a [`FakeRdma`] that serves every read.
pub fn client_over_serving_fake_rdma(server: &str) -> Client {
    Client::builder(server).rdma_transport(Arc::new(FakeRdma::new(Script::Serve))).build().unwrap()
}

/// What a [`FakeRdma`] does on each read.
#[derive(Clone, Debug)]
pub enum Script {
    /// Fails with this kind.
    Fail(TransportErrorKind),
    /// Never answers (the client's RDMA timeout must cut it off).
    Hang,
    /// Serves the needle, verified, by reading it over HTTP: stands in for a working
    /// RDMA engine so the policy's success path can run on a host without RDMA.
    Serve,
}

/// Fakes an RDMA engine on a host that has no RDMA device: it does what its script says
/// and counts its attempts. The policy around it (fallback, backoff, counters, timeout)
/// is real, and so is the HTTP path; real RDMA engines are tested in the Soft-RoCE guest.
#[derive(Debug)]
pub struct FakeRdma {
    pub script: Mutex<Script>,
    pub attempts: AtomicUsize,
    http: HttpReader,
}

impl FakeRdma {
    pub fn new(script: Script) -> Self {
        Self {
            script: Mutex::new(script),
            attempts: AtomicUsize::new(0),
            http: HttpReader::new(&HttpReadConfig::default()).unwrap(),
        }
    }

    pub fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::Relaxed)
    }
}

impl ReadTransport for FakeRdma {
    fn name(&self) -> &'static str {
        "fake-rdma"
    }

    fn read_needle<'a>(
        &'a self,
        server: &'a str,
        fid: &'a FileId,
        jwt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NeedleData, TransportError>> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let script = self.script.lock().unwrap().clone();
        Box::pin(async move {
            match script {
                Script::Fail(kind) => Err(TransportError { kind, message: format!("scripted {kind:?}") }),
                Script::Hang => std::future::pending().await,
                Script::Serve => over_http(&self.http, server, fid, jwt).await,
            }
        })
    }
}

/// Serves needles over HTTP like [`Script::Serve`], but lets reads through only in
/// groups: each waits until `group` reads are under way together. It records the most
/// ever under way at once, so a test sees a reader's concurrency is exactly its bound:
/// never more (counted here), and never less (a smaller group would wait until the
/// reader's RDMA timeout cut it off, a counted fallback).
#[derive(Debug)]
pub struct GatheringTransport {
    barrier: tokio::sync::Barrier,
    under_way: AtomicUsize,
    most: AtomicUsize,
    http: HttpReader,
}

impl GatheringTransport {
    pub fn new(group: usize) -> Self {
        Self {
            barrier: tokio::sync::Barrier::new(group),
            under_way: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            http: HttpReader::new(&HttpReadConfig::default()).unwrap(),
        }
    }

    /// The most reads that were under way at once.
    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

impl ReadTransport for GatheringTransport {
    fn name(&self) -> &'static str {
        "gathering"
    }

    fn read_needle<'a>(
        &'a self,
        server: &'a str,
        fid: &'a FileId,
        jwt: Option<&'a str>,
    ) -> BoxFuture<'a, Result<NeedleData, TransportError>> {
        Box::pin(async move {
            let now = self.under_way.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            self.barrier.wait().await;
            let read = over_http(&self.http, server, fid, jwt).await;
            self.under_way.fetch_sub(1, Ordering::SeqCst);
            read
        })
    }
}

/// What the test transports serve: the needle read over HTTP, an HTTP failure as an
/// unavailable transport.
async fn over_http(
    http: &HttpReader,
    server: &str,
    fid: &FileId,
    jwt: Option<&str>,
) -> Result<NeedleData, TransportError> {
    let stored = http
        .read_needle(server, fid, jwt)
        .await
        .map_err(|e| TransportError { kind: TransportErrorKind::Unavailable, message: e.to_string() })?;
    Ok(NeedleData::from(stored))
}
