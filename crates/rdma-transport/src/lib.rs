//! The RDMA read path of seaweed-rdma.
//!
//! A client reads a needle in four steps: it opens a **session** with the volume
//! server's control plane over gRPC (exchanging RC queue-pair endpoints), asks where the
//! needle's record is (**Locate**: region token, address, length, in one or more
//! segments), fetches the record with one-sided **RDMA READs** (the server's CPU is not
//! involved), and **verifies** it (header id, cookie and size, then CRC32-C) before
//! anything is returned.
//!
//! - Server side ([`server`]): [`server::RdmaServer`] serves the `RdmaControl` gRPC
//!   service over a [`server::NeedleSource`] (which the volume server implements; this
//!   crate does not know the volume server). Volume `.dat` files are mapped and
//!   registered REMOTE_READ in fixed-size extents kept under a pinned-bytes budget
//!   ([`server::regions`]); when the kernel refuses to register file pages, located
//!   records are staged into registered anonymous buffers instead.
//! - Client side ([`client`]): [`client::RdmaClient`] does sessions, locations, READs and
//!   verification above one small engine interface ([`engine::ReadEngine`] /
//!   [`engine::EngineQp`]); [`verbs::SidewayEngine`] is the default engine, and
//!   `async_rdma_engine::AsyncRdmaEngine` (cargo feature `async-rdma`, GPL-3.0) the other.
//! - [`grpc_tls`]: the control plane dialed plaintext or over weed-style mutual TLS (the
//!   volume server dials the rest of its gRPC with it too).
//! - [`verbs`]: the device, queue pairs and registrations on sideway (libibverbs loaded at
//!   run time, so a host without RDMA builds, runs and reports "no device").
//! - [`proto`]: the generated control-plane messages, client and server
//!   (`proto/rdma_control.proto`).

pub mod client;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod grpc_tls;
pub mod index_layout;
pub mod one_sided;
pub mod server;
pub mod verbs;
pub mod verify;

#[cfg(feature = "async-rdma")]
pub mod async_rdma_engine;

/// The control plane's messages and tonic client/server, generated from
/// `proto/rdma_control.proto`.
#[allow(clippy::all, missing_docs, rust_2018_idioms)]
pub mod proto {
    tonic::include_proto!("seaweed_rdma.v1");
}

pub use client::{ClientStats, NeedleRecord, RdmaClient, RdmaClientConfig};
pub use endpoint::QpEndpoint;
pub use engine::{BatchFuture, EngineQp, ReadEngine, ReadFuture, RemoteRead};
pub use error::{ErrorKind, RdmaError};
