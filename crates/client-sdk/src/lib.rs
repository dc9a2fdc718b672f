//! The Rust SDK for SeaweedFS: upload, download, ranged and streaming reads, delete,
//! stat and lookup, with every byte verified before it is returned.
//!
//! ## Transports and the fallback policy
//! Reads go to a volume server through [`ReadTransport`]s: RDMA engines (given to the
//! builder with [`ClientBuilder::rdma_transport`]; `RdmaTransport`, with the default
//! `rdma` feature, is the one over `rdma-transport`) first, then HTTP ([`HttpTransport`],
//! always present). Under [`RdmaPolicy::Prefer`] (the default), a read that RDMA cannot
//! serve — not offered, unavailable, timed out ([`ClientBuilder::rdma_timeout`]), failed
//! verification, server error — is served over HTTP for that request; a transport at
//! fault is then skipped on that server for a [`Backoff`], after which one read probes it
//! (the others keep using HTTP until the probe answers) and a success restores it.
//! Every fallback is counted with its [`FallbackReason`] ([`Client::metrics`],
//! [`Client::fallback_counts`]) and logged with `tracing::debug!`, so an operator can see
//! why RDMA is not used; [`Client::transport_health`] shows which servers are backed off.
//! "Not found" is authoritative and never falls back.
//!
//! ## Clusters with gRPC mutual TLS
//! RDMA sessions are opened over the volume server's gRPC port. When the cluster runs
//! that port with mutual TLS (weed's `security.toml` `[grpc]` sections), the RDMA
//! transport needs a client certificate the servers trust:
//! `RdmaTransportConfig::with_weed_security_toml` takes `[grpc.client]`'s certificate and
//! `[grpc] ca` from the file weed's own clients use; `RdmaTransportConfig::with_grpc_tls`
//! takes the PEM files. Without one (or with a certificate of another CA) no session
//! opens and every read falls back to HTTP, counted as `unavailable`.
//!
//! ## Locations
//! Volume locations come from the master's `/dir/lookup` and are cached for
//! [`ClientBuilder::location_cache_ttl`]. A cached location is dropped and looked up
//! again, and the read retried once, when every server in it is unreachable or when it
//! answers "not found" (a volume server without the volume answers 404, so that may mean
//! the volume moved; the answer stands if the master still names the same servers).
//!
//! ## Integrity
//! A whole-needle read is verified by the transport (CRC32-C of the stored bytes, and
//! for RDMA the needle header too); gzip-stored needles are then decompressed. Nothing
//! unverified is ever returned, on any kind of read:
//! - [`Client::read_range`]: SeaweedFS keeps one CRC per needle and none per block, so a
//!   sub-range cannot be verified on its own and an HTTP `Range` reply could not be
//!   checked. A ranged read therefore reads the whole needle and returns the range only
//!   after the whole needle's CRC32-C matched. Over HTTP the needle streams through the
//!   CRC (and through gunzip when stored compressed) keeping only the requested bytes, so
//!   memory is the size of the range while bandwidth is the size of the needle; over RDMA
//!   the needle lands whole in memory anyway, and the range is sliced from it.
//! - [`Client::download_stream`]: see [`NeedleStream`]: chunks are released only after
//!   the whole needle verified; above [`ClientBuilder::stream_memory_limit`] the needle
//!   is held in an unlinked temporary file rather than in memory.
//!
//! ## Chunked files
//! A needle flagged as a chunk manifest (flag 0x80: `weed upload -maxMB`, or
//! [`Client::upload_chunked`]) holds JSON listing the needles ("chunks") that hold the
//! file. [`Client::download`], [`Client::read_range`] and [`Client::download_stream`]
//! read the manifest as stored (verified like any needle), then each chunk it lists as
//! a needle of its own — RDMA first, HTTP as the fallback, CRC32-C verified — and
//! return the file. A ranged read reads only the chunks the range touches. A stream of
//! a chunked file is put together from all its verified chunks before its first chunk
//! is released, as for one needle. [`Client::read_stored`] returns the manifest itself
//! ([`NeedleData::chunk_manifest`] set). Every chunk must have exactly the size the
//! manifest lists, else [`Error::BadManifest`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), client_sdk::Error> {
//! use client_sdk::{Client, UploadOptions};
//!
//! // A master, or our standalone volume server (`./scripts/serve`), at host:port.
//! let client = Client::builder("127.0.0.1:8080").build()?;
//! let stored = client.upload(b"hello".to_vec(), &UploadOptions::named("hello.txt")).await?;
//! assert_eq!(client.download(&stored.fid).await?, &b"hello"[..]);
//! assert_eq!(client.read_range(&stored.fid, 1..4).await?, &b"ell"[..]);
//! client.delete(&stored.fid).await?;
//! // Why reads did not use RDMA, as Prometheus text:
//! print!("{}", client.metrics().to_prometheus());
//! # Ok(()) }
//! ```

// Nothing here needs unsafe: the verbs live in rdma-transport.
#![forbid(unsafe_code)]

mod chunked;
mod client;
mod error;
#[cfg(feature = "filer")]
pub mod filer;
mod http_ops;
mod master;
mod plain;
mod policy;
#[cfg(feature = "rdma")]
mod rdma;
mod read;
mod route;
mod stream;
mod transport;
mod upload;
#[cfg(any(feature = "rdma", feature = "filer"))]
mod weed_security;

pub use client::{Client, ClientBuilder};
pub use error::Error;
#[cfg(feature = "filer")]
pub use filer::{ChunkReport, FileInfo, FileStream, FilerClient, FilerClientBuilder};
pub use http_ops::FileStat;
pub use master::{AssignOptions, Assignment};
pub use needle::FileId;
pub use policy::{Backoff, FallbackReason, RdmaPolicy, ReadMetrics, TransportHealth};
#[cfg(feature = "rdma")]
pub use rdma::{DeviceChoice, RdmaEngine, RdmaTransport, RdmaTransportConfig};
/// The RDMA counters [`RdmaTransport::stats`] sums.
#[cfg(feature = "rdma")]
pub use rdma_transport::ClientStats as RdmaStats;
/// Dialing the RDMA control plane and the filer over weed-style gRPC mutual TLS
/// (`rdma-transport`'s): see `RdmaTransportConfig::with_grpc_tls` and
/// `FilerClientBuilder::grpc_dialer`.
#[cfg(any(feature = "rdma", feature = "filer"))]
pub use rdma_transport::grpc_tls;
pub use stream::NeedleStream;
pub use transport::{
    BoxFuture, HttpTransport, NeedleData, ReadTransport, TransportError, TransportErrorKind,
};
pub use upload::{UploadOptions, Uploaded};
