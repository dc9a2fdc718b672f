//! Drop-in SeaweedFS volume server: weed's HTTP API, gRPC service and cluster membership,
//! and the RDMA control plane, over the storage engine of the `volume-store` crate
//! (`.dat`/`.idx`/`.vif` volumes in data directories).
//!
//! - [`http`]: weed's HTTP API on axum: reads, writes, deletes, admin pages, the
//!   embedded master API, and what only HTTP needs: upload parsing, `Range`, content
//!   types, and the byte budgets bounding upload and download data held at once.
//! - [`cluster`]: the gRPC listener and weed's `VolumeServer` service on it (volume
//!   admin, vacuum, moving volumes between servers), and the heartbeat stream to a
//!   `weed master`, restarted when it panics.
//! - [`security`]: weed's `security.toml`: JWT keys guarding the HTTP API, the IP white
//!   list for uploads and deletes, mutual TLS on the gRPC port and for the gRPC clients
//!   (heartbeats, volume moves, pings).
//! - [`rdma`]: the `--rdma*` flags and the store as the RDMA control plane's needle source.
//! - [`metrics`]: `/metrics` in the Prometheus text format (requests, bytes, latency and
//!   errors, by route).
//! - [`weed_cli`]: `weed volume`'s command line (`-dataCenter=dc1`) translated to ours.
//! - [`server`]: the flags as a [`server::Config`], and the server started from them and
//!   run until a shutdown future resolves (what `main.rs` calls; tests may too).

pub mod cluster;
pub mod http;
pub mod metrics;
pub mod rdma;
pub mod security;
pub mod server;
pub mod weed_cli;
