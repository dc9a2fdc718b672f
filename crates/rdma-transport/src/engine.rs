//! The one interface a client engine implements: create a queue pair, connect it to the
//! server's, and keep one-sided READs outstanding on it. Everything above it (sessions,
//! locations, verification, retries) is shared client code in [`crate::client`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::endpoint::QpEndpoint;
use crate::error::RdmaError;

/// The bytes of one READ, or why it failed.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<u8>, RdmaError>> + Send + 'a>>;

/// The bytes of each READ of a batch, in order, or why one failed.
pub type BatchFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Vec<u8>>, RdmaError>> + Send + 'a>>;

/// One READ of a batch: `len` bytes at `addr` of the server region `rkey`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteRead {
    pub addr: u64,
    pub rkey: u32,
    pub len: u32,
}

/// A way to do one-sided RDMA READs (sideway, async-rdma, ...).
pub trait ReadEngine: Send + Sync + fmt::Debug {
    /// A short name for logs and metrics (`"sideway"`).
    fn name(&self) -> &'static str;

    /// A new RC queue pair, not yet connected. Its [`EngineQp::endpoint`] goes to the
    /// server in `OpenSession`; the server's answer goes to [`EngineQp::connect`].
    fn create_qp(&self) -> Result<Box<dyn EngineQp>, RdmaError>;
}

/// One RC queue pair of an engine.
pub trait EngineQp: Send + Sync {
    /// What the server needs to connect its queue pair to this one.
    fn endpoint(&self) -> QpEndpoint;

    /// Brings this queue pair up (RTR, RTS) towards the server's `remote`.
    fn connect(&mut self, remote: &QpEndpoint) -> Result<(), RdmaError>;

    /// READs `len` bytes at `remote_addr` of the server region `rkey`. Several READs may
    /// be outstanding at once (up to the engine's queue depth; more wait their turn
    /// without blocking the runtime). A failed READ leaves the queue pair unusable: every
    /// later call fails too ([`RdmaError::Transfer`]) and the client reconnects.
    fn read(&self, remote_addr: u64, rkey: u32, len: u32) -> ReadFuture<'_>;

    /// READs all of `reads`, outstanding together; an engine that can posts them with
    /// one doorbell (the sideway engine: one `ibv_post_send` of chained work requests).
    /// By default, each with [`EngineQp::read`], all outstanding at once.
    fn read_batch<'a>(&'a self, reads: &'a [RemoteRead]) -> BatchFuture<'a> {
        Box::pin(futures_util::future::try_join_all(reads.iter().map(|r| self.read(r.addr, r.rkey, r.len))))
    }
}
