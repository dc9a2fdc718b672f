//! The volume server's RDMA read path: the `--rdma*` flags, and the store as the
//! [`NeedleSource`] of `rdma-transport`'s control plane (which runs on the gRPC port).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use needle::{NeedleId, VolumeId};
use rdma_transport::server::auth::JwtKey;
use rdma_transport::server::regions::RegionConfig;
use rdma_transport::server::{Lookup, NeedleSource, RdmaServer, RdmaServerConfig, SourceLocation};
use rdma_transport::verbs::DeviceChoice;

use crate::error::Error;
use crate::store::Store;

/// Whether to serve RDMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RdmaSwitch {
    /// Use the device named by `--rdma-device`, else the one with a GID for `--ip`; run
    /// without RDMA (saying so once) when there is none.
    Auto,
    Off,
}

/// The `--rdma*` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct RdmaArgs {
    /// Serve one-sided RDMA READs of needles (control plane on the gRPC port).
    #[arg(long = "rdma", value_enum, default_value_t = RdmaSwitch::Auto)]
    pub switch: RdmaSwitch,
    /// The RDMA device (e.g. rxe0). Default: the device with a GID for --ip.
    #[arg(long = "rdma-device")]
    pub device: Option<String>,
    /// Volume files are registered in extents of this many MiB.
    #[arg(long = "rdma-extent-mb", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub extent_mb: u64,
    /// Most MiB registered (pinned) at once; least recently used extents are evicted.
    #[arg(long = "rdma-pinned-mb", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub pinned_mb: u64,
    /// Copy located needles into registered buffers instead of registering volume files
    /// (what the server falls back to by itself when the kernel refuses file pages).
    #[arg(long = "rdma-staging")]
    pub staging: bool,
    /// Most RDMA sessions (one queue pair each) at once.
    #[arg(long = "rdma-max-sessions", default_value_t = 256)]
    pub max_sessions: usize,
    /// A session unused for this many seconds is closed and its queue pair destroyed.
    #[arg(long = "rdma-idle-timeout-secs", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// HS256 key RDMA clients' JWTs must be signed with. Default: security.toml's
    /// jwt.signing.read.key (sessions are reads), none when reads are open.
    #[arg(long = "rdma-jwt-key")]
    pub jwt_key: Option<String>,
}

impl RdmaArgs {
    /// Starts the RDMA side for a server listening on `ip`; sessions need a token
    /// signed with `--rdma-jwt-key`, else with `read_key` (the HTTP read key).
    pub fn start(&self, store: &Arc<Store>, ip: &str, read_key: Option<&JwtKey>) -> RdmaServer {
        let device = match (self.switch, &self.device) {
            (RdmaSwitch::Off, _) => None,
            (RdmaSwitch::Auto, Some(name)) => Some(DeviceChoice::Name(name.clone())),
            (RdmaSwitch::Auto, None) => {
                Some(DeviceChoice::Ip(ip.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]))))
            }
        };
        let config = RdmaServerConfig {
            device,
            regions: RegionConfig {
                extent_size: self.extent_mb << 20,
                pinned_budget: self.pinned_mb << 20,
                force_staging: self.staging,
                ..RegionConfig::default()
            },
            max_sessions: self.max_sessions,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            jwt_key: self.jwt_key.as_ref().map(|k| JwtKey::new(k.as_bytes())).or_else(|| read_key.cloned()),
        };
        let server = RdmaServer::start(config, Arc::new(StoreSource(Arc::clone(store))));
        // A compacted or deleted volume's old `.dat` must stop being readable remotely.
        let retire = server.clone();
        if store.set_retire_hook(Box::new(move |volume| retire.retire(volume.0))).is_err() {
            tracing::warn!("the RDMA read path started twice; the first one is told about retired volumes");
        }
        server
    }
}

/// The store, located into by the control plane.
struct StoreSource(Arc<Store>);

impl NeedleSource for StoreSource {
    fn locate(&self, volume: VolumeId, needle: NeedleId) -> Lookup {
        let Ok(v) = self.0.volume(volume) else { return Lookup::VolumeNotHere };
        match v.locate_readable(needle, false) {
            Ok(location) => Lookup::Found(SourceLocation {
                dat_path: v.dat_path().to_owned(),
                offset: location.offset,
                size: location.size,
                version: location.version,
                compaction_revision: v.compaction_revision(),
            }),
            Err(Error::NeedleNotFound(_)) => Lookup::NotFound,
            Err(Error::AlreadyDeleted(_)) => Lookup::Deleted,
            Err(e) => Lookup::Failed(e.to_string()),
        }
    }
}
