//! Drop-in SeaweedFS volume server: the weed HTTP API, gRPC service and RDMA control
//! plane over the storage engine in `volume-store` (`.dat`/`.idx`/`.vif` volumes).
//!
//! - [`http`]: weed's HTTP API (reads, writes, admin pages, the embedded master API);
//! - [`heartbeat`], [`volume_grpc`], [`pb`]: membership in a `weed master` cluster and
//!   weed's `VolumeServer` gRPC service; [`volume_move`]: both sides of moving a volume.
//! - [`rdma`]: the `--rdma*` flags and the store as the RDMA control plane's needle source.
//! - [`security`]: weed's `security.toml`: JWT keys guarding the HTTP API, and
//!   [`guard`], the IP white list for uploads and deletes; [`grpc_tls`], mutual TLS
//!   on the gRPC port and for the gRPC clients (heartbeats, volume moves, pings).
//! - [`throttle`]: the byte budgets bounding upload and download data held at once.
//! - [`weed_cli`]: `weed volume`'s command line (`-dataCenter=dc1`) translated to ours.
//! - [`supervise`]: background tasks (the heartbeat) restarted, logged and counted when
//!   they panic.

pub mod grpc;
pub mod grpc_tls;
pub mod guard;
pub mod heartbeat;
pub mod http;
pub mod metrics;
pub mod mime;
pub mod pb;
pub mod range;
pub mod rdma;
pub mod security;
pub mod supervise;
pub mod throttle;
pub mod upload;
pub mod volume_grpc;
pub mod volume_move;
pub mod weed_cli;
