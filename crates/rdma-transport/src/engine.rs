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
}
