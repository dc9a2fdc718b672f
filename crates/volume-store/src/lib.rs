//! The volume server's storage engine: SeaweedFS volumes (`.dat`/`.idx`/`.vif`) in one
//! or more data directories. It knows nothing of how it is served: HTTP, gRPC and the
//! RDMA control plane live in `volume-server`, which reads what it reports (load
//! reports, map statistics, [`store::Store::changed`]) and tells it whom to call when a
//! volume's files are retired ([`store::RetireHook`]).
//!
//! - [`store`]: the volumes of one or more data directories, and where new ones go;
//! - [`volume`]: one volume: appends, tombstones, verified reads, and
//!   [`volume::Volume::locate_readable`], the record location the RDMA control plane
//!   needs;
//! - [`recovery`]: the load-time check that cuts torn tails and re-indexes records a
//!   crash left unindexed;
//! - [`needle_map`]: needle id -> record, in memory or in RocksDB;
//! - compaction: vacuum (weed's compact / commit / cleanup);
//! - [`vif`]: the `.vif` volume info file; [`durable`]: file changes that survive a
//!   power loss (fsync before rename, and of the directory after);
//! - [`disk_space`]: the free space a data directory keeps before it stops taking writes;
//! - [`clock`]: the one wall clock (TTLs, AppendAtNs), which the server's replies share;
//! - [`error`]: the storage's one error type.

// One unsafe call (statvfs, in `disk_space`) is allowed where it is made.
#![deny(unsafe_code)]

pub mod clock;
mod compaction;
pub mod disk_space;
pub mod durable;
pub mod error;
pub mod needle_map;
pub mod recovery;
pub mod store;
pub mod vif;
pub mod volume;

#[cfg(test)]
mod recovery_tests;

pub use error::{Error, Result};
pub use store::{Store, StoreConfig};
pub use volume::{
    IndexAppend, IndexKind, IndexObserver, IndexSnapshot, NeedleLocation, StoredMeta, StoredNeedle, Volume,
    VolumeOptions, WriteOutcome,
};
