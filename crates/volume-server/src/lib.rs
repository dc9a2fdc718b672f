//! Drop-in SeaweedFS volume server: `.dat`/`.idx`/`.vif` storage and the weed HTTP API.
//!
//! - [`store`]: the volumes of one or more data directories;
//! - [`volume`]: one volume: appends, tombstones, verified reads, and
//!   [`volume::Volume::locate`], the record location the RDMA control plane needs;
//! - [`recovery`]: the load-time check that cuts torn tails and re-indexes records a
//!   crash left unindexed;
//! - [`needle_map`]: needle id -> record, in memory or in RocksDB;
//! - [`vif`]: the `.vif` volume info file; [`durable`]: file changes that survive a
//!   power loss (fsync before rename, and of the directory after);
//! - compaction: vacuum (weed's compact / commit / cleanup);
//! - [`heartbeat`], [`volume_grpc`], [`pb`]: membership in a `weed master` cluster and
//!   weed's `VolumeServer` gRPC service.
//! - [`rdma`]: the `--rdma*` flags and the store as the RDMA control plane's needle source.
//! - [`security`]: weed's `security.toml`: JWT keys guarding the HTTP API, and
//!   [`guard`], the IP white list for uploads and deletes; [`grpc_tls`], mutual TLS
//!   on the gRPC port and for the gRPC clients (heartbeats, volume moves, pings).
//! - [`throttle`]: the byte budgets bounding upload and download data held at once.
//! - [`disk_space`]: the free space a data directory keeps before it stops taking writes.
//! - [`weed_cli`]: `weed volume`'s command line (`-dataCenter=dc1`) translated to ours.
//! - [`supervise`]: background tasks (the heartbeat) restarted, logged and counted when
//!   they panic.

mod clock;
mod compaction;
pub mod disk_space;
pub mod durable;
pub mod error;
pub mod grpc;
pub mod grpc_tls;
pub mod guard;
pub mod heartbeat;
pub mod http;
pub mod metrics;
pub mod mime;
pub mod needle_map;
pub mod pb;
pub mod range;
pub mod rdma;
pub mod recovery;
pub mod security;
pub mod store;
pub mod supervise;
pub mod throttle;
pub mod upload;
pub mod vif;
pub mod volume;
pub mod volume_grpc;
pub mod volume_move;
pub mod weed_cli;

#[cfg(test)]
mod recovery_tests;

pub use error::{Error, Result};
pub use store::{Store, StoreConfig};
pub use volume::{IndexKind, NeedleLocation, StoredMeta, StoredNeedle, Volume, VolumeOptions, WriteOutcome};
