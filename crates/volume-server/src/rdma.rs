//! The volume server's RDMA read path: the `--rdma*` flags, and the store as the
//! [`NeedleSource`] of `rdma-transport`'s control plane (which runs on the gRPC port).

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use needle::{Cookie, NeedleId, VolumeId};
use rdma_transport::server::auth::JwtKey;
use rdma_transport::server::grants::GrantConfig;
use rdma_transport::server::index::IndexConfig;
use rdma_transport::server::regions::RegionConfig;
use rdma_transport::server::{
    DatFile, Exposure, IndexAppendFn, IndexSource, Lookup, NeedleSource, RdmaServer, RdmaServerConfig,
    SourceLocation,
};
use rdma_transport::verbs::DeviceChoice;

use volume_store::error::Error;
use volume_store::store::Store;
use volume_store::volume::{IndexAppend, IndexObserver, Volume};

/// Whether to serve RDMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RdmaSwitch {
    /// Use the device named by `--rdma-device`, else the one with a GID for `--ip`; run
    /// without RDMA (saying so once) when there is none.
    Auto,
    Off,
}

/// What RDMA sessions may READ (`--rdma-exposure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExposureFlag {
    /// Each session exactly the records it located, through its own queue pair, for a
    /// bounded time (`--rdma-location-lifetime-secs`).
    Record,
    /// For trusted fabrics: sessions presenting a volume-read grant (a token signed with
    /// the read key naming volumes or collections) or a client certificate named by
    /// `--rdma-volume-cn` READ whole volume files; with neither a key nor names, EVERY
    /// session can read every byte of every volume. Others get `record`.
    Volume,
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
    /// Most MiB registered (pinned) at once, by volume extents (least recently used
    /// ones are evicted) and, apart, by the records granted to `record` sessions (a
    /// record past it is answered UNAVAILABLE and read over HTTP).
    #[arg(long = "rdma-pinned-mb", default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub pinned_mb: u64,
    /// Copy located needles into registered buffers instead of registering volume files
    /// (what the server falls back to by itself when the kernel refuses file pages).
    #[arg(long = "rdma-staging")]
    pub staging: bool,
    /// What sessions may READ: their located records, or (opt-in) whole volumes.
    #[arg(long = "rdma-exposure", value_enum, default_value_t = ExposureFlag::Record)]
    pub exposure: ExposureFlag,
    /// How long a located record stays readable (`record` exposure); clients locate
    /// again before then.
    #[arg(long = "rdma-location-lifetime-secs", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub location_lifetime_secs: u64,
    /// Most RDMA sessions (one queue pair each) at once.
    #[arg(long = "rdma-max-sessions", default_value_t = 256)]
    pub max_sessions: usize,
    /// Most RDMA sessions one client address may have open.
    #[arg(long = "rdma-max-sessions-per-peer", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_sessions_per_peer: u64,
    /// Most MiB one Locate may newly register; the fids past it are answered
    /// UNAVAILABLE.
    #[arg(long = "rdma-max-locate-mb", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_locate_mb: u64,
    /// A session unused for this many seconds is closed and its queue pair destroyed.
    #[arg(long = "rdma-idle-timeout-secs", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// HS256 key RDMA clients' JWTs must be signed with. Default: security.toml's
    /// jwt.signing.read.key (sessions are reads), none when reads are open.
    #[arg(long = "rdma-jwt-key")]
    pub jwt_key: Option<String>,
    /// With `--rdma-exposure volume`: comma-separated client-certificate common names
    /// whose sessions READ whole volumes (the gRPC port must run mutual TLS, from
    /// security.toml's `[grpc]` ca and `[grpc.volume]` cert and key).
    #[arg(long = "rdma-volume-cn", value_delimiter = ',')]
    pub volume_common_names: Vec<String>,
    /// With `--rdma-exposure volume`: the one-sided index (a registered header, `.idx`
    /// mirror and `.dat` extents per volume read that way), so that clients READ
    /// needles they never located with no Locate call. `off` leaves them to Locate.
    #[arg(long = "rdma-one-sided-index", value_enum, default_value_t = OnOff::On)]
    pub one_sided_index: OnOff,
    /// Most MiB of `.dat` the one-sided index registers (pinned) for all volumes; a
    /// volume that does not fit is read through Locate.
    #[arg(long = "rdma-index-pinned-mb", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub index_pinned_mb: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

impl RdmaArgs {
    /// Refuses flags that cannot do what they say: names of client certificates
    /// without `volume` exposure, or on a gRPC port that sees no certificates.
    pub fn check(&self, grpc_mutual_tls: bool) -> Result<(), String> {
        if self.volume_common_names.is_empty() {
            return Ok(());
        }
        if self.exposure != ExposureFlag::Volume {
            return Err("--rdma-volume-cn grants volume exposure: it needs --rdma-exposure volume".into());
        }
        if !grpc_mutual_tls {
            return Err(
                "--rdma-volume-cn needs the gRPC port to run mutual TLS (security.toml's [grpc] ca and \
                 [grpc.volume] cert and key): without it no client certificate is seen"
                    .into(),
            );
        }
        if self.volume_common_names.iter().any(|n| n.trim().is_empty()) {
            return Err("--rdma-volume-cn: an empty name".into());
        }
        Ok(())
    }

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
            exposure: match self.exposure {
                ExposureFlag::Record => Exposure::Record,
                ExposureFlag::Volume => Exposure::Volume,
            },
            grants: GrantConfig {
                lifetime: Duration::from_secs(self.location_lifetime_secs),
                max_bytes_in_all: self.pinned_mb << 20,
                ..GrantConfig::default()
            },
            regions: RegionConfig {
                extent_size: self.extent_mb << 20,
                pinned_budget: self.pinned_mb << 20,
                force_staging: self.staging,
                ..RegionConfig::default()
            },
            index: IndexConfig {
                enabled: self.one_sided_index == OnOff::On,
                dat_budget: self.index_pinned_mb << 20,
                extent_size: self.extent_mb << 20,
                ..IndexConfig::default()
            },
            max_sessions: self.max_sessions,
            max_sessions_per_peer: usize::try_from(self.max_sessions_per_peer).unwrap_or(usize::MAX),
            max_locate_bytes: self.max_locate_mb << 20,
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            jwt_key: self.jwt_key.as_ref().map(|k| JwtKey::new(k.as_bytes())).or_else(|| read_key.cloned()),
            volume_common_names: self.volume_common_names.clone(),
        };
        let server = RdmaServer::start(config, Arc::new(StoreSource(Arc::downgrade(store))));
        // A compacted or deleted volume's old `.dat` must stop being readable remotely.
        let retire = server.clone();
        if store.set_retire_hook(Box::new(move |volume| retire.retire(volume.0))).is_err() {
            tracing::warn!("the RDMA read path started twice; the first one is told about retired volumes");
        }
        server
    }
}

/// The store, located into by the control plane. Weak: the store holds the RDMA server
/// (its retire hook), which holds this; a strong reference would make a cycle, and the
/// store (with its RocksDB maps and their locks) would outlive the server that used it.
struct StoreSource(Weak<Store>);

impl NeedleSource for StoreSource {
    /// As a GET: the live record's header and metadata are read (two small preads, no
    /// data) and its cookie and TTL checked, so Locate hands out nothing HTTP would 404.
    fn locate(&self, volume: VolumeId, needle: NeedleId, cookie: Cookie) -> Lookup {
        let Some(store) = self.0.upgrade() else { return Lookup::VolumeNotHere };
        let Ok(v) = store.volume(volume) else { return Lookup::VolumeNotHere };
        let location = match v.locate_readable(needle, false) {
            Ok(location) => location,
            Err(Error::NeedleNotFound(_)) => return Lookup::NotFound,
            Err(Error::AlreadyDeleted(_)) => return Lookup::Deleted,
            Err(e) => return Lookup::Failed(e.to_string()),
        };
        match v.read_meta_at(needle, cookie, location) {
            Ok(_) => Lookup::Found(SourceLocation {
                collection: v.collection().to_owned(),
                offset: location.offset,
                size: location.size,
                version: location.version,
                compaction_revision: v.compaction_revision(),
                dat: Arc::new(VolumeDat(v)),
            }),
            // The record is there: read_meta_at's "not found" is its TTL running out.
            Err(Error::NeedleNotFound(_)) => Lookup::Expired,
            Err(Error::CookieMismatch { .. }) => Lookup::WrongCookie,
            Err(e) => Lookup::Failed(e.to_string()),
        }
    }

    fn open_index(&self, volume: VolumeId, on_append: IndexAppendFn) -> Result<IndexSource, String> {
        let store = self.0.upgrade().ok_or("the store is closed")?;
        let v = store.volume(volume).map_err(|e| e.to_string())?;
        let observer: IndexObserver =
            Arc::new(move |append: &IndexAppend<'_>| on_append(append.position, append.entry));
        let snapshot = v.observe_index(observer).map_err(|e| e.to_string())?;
        Ok(IndexSource {
            collection: v.collection().to_owned(),
            version: v.version(),
            entry_size: snapshot.width.entry_size(),
            compaction_revision: v.compaction_revision(),
            entries: snapshot.entries,
            dat: Arc::new(VolumeDat(v)),
        })
    }

    fn close_index(&self, volume: VolumeId) {
        if let Some(v) = self.0.upgrade().and_then(|store| store.volume(volume).ok()) {
            v.stop_observing_index();
        }
    }
}

/// A volume's open `.dat` as the control plane registers it. A wrapper because neither
/// the trait (rdma-transport's) nor the volume (the store's) is this crate's.
struct VolumeDat(Arc<Volume>);

impl DatFile for VolumeDat {
    fn dat(&self) -> &std::fs::File {
        self.0.dat_file()
    }

    fn committed_len(&self) -> u64 {
        self.0.dat_size()
    }
}

#[cfg(test)]
mod tests {
    //! The store as a needle source, over a volume written by hand (the server cannot be
    //! asked to write a needle in the past): Locate checks what a GET checks.
    use super::*;
    use needle::{IdxEntry, Needle, OffsetWidth, ReplicaPlacement, SuperBlock, Ttl, Version};
    use volume_store::disk_space::MinFreeSpace;
    use volume_store::store::StoreConfig;
    use volume_store::volume::{IndexKind, VolumeOptions};

    #[test]
    fn locate_refuses_a_wrong_cookie_an_expired_needle_and_a_deleted_one() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Ttl::fit_seconds(60);
        let mut dat = SuperBlock::new(ReplicaPlacement::default(), ttl).to_bytes().unwrap();
        let mut idx = Vec::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        for (key, written) in [(1u64, now), (2, now - 3600)] {
            let offset = dat.len() as u64;
            let needle = Needle::new(NeedleId(key), Cookie(7), b"data")
                .with_ttl(ttl)
                .with_last_modified(written)
                .with_append_at_ns(written * 1_000_000_000);
            needle.encode_into(Version::V3, &mut dat).unwrap();
            let size = needle.body_size(Version::V3).unwrap();
            IdxEntry::new(NeedleId(key), offset, size)
                .unwrap()
                .encode_into(OffsetWidth::Four, &mut idx)
                .unwrap();
        }
        std::fs::write(dir.path().join("5.dat"), &dat).unwrap();
        std::fs::write(dir.path().join("5.idx"), &idx).unwrap();
        let store = Store::open(StoreConfig {
            dirs: vec![dir.path().to_owned()],
            max_volumes: vec![8],
            volume_size_limit: 1 << 30,
            min_free_space: vec![MinFreeSpace::Percent(0.0)],
            volume: VolumeOptions { width: OffsetWidth::Four, index: IndexKind::Memory, fsync: false },
        })
        .unwrap();
        let store = Arc::new(store);
        let source = StoreSource(Arc::downgrade(&store));
        let locate = |key: u64, cookie: u32| source.locate(VolumeId(5), NeedleId(key), Cookie(cookie));
        match locate(1, 7) {
            Lookup::Found(found) => {
                assert_eq!(found.offset, 8);
                assert_eq!(found.dat.committed_len(), dat.len() as u64);
            }
            other => panic!("the live needle: {other:?}"),
        }
        assert!(matches!(locate(1, 8), Lookup::WrongCookie), "{:?}", locate(1, 8));
        assert!(matches!(locate(2, 7), Lookup::Expired), "{:?}", locate(2, 7));
        assert!(matches!(locate(3, 7), Lookup::NotFound));
        store.volume(VolumeId(5)).unwrap().delete(NeedleId(1), Cookie(7)).unwrap();
        assert!(matches!(locate(1, 7), Lookup::Deleted));
        assert!(matches!(source.locate(VolumeId(6), NeedleId(1), Cookie(7)), Lookup::VolumeNotHere));
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        rdma: RdmaArgs,
    }

    fn flags(args: &[&str]) -> RdmaArgs {
        <Flags as clap::Parser>::try_parse_from(std::iter::once("volume-server").chain(args.iter().copied()))
            .unwrap()
            .rdma
    }

    #[test]
    fn client_certificate_names_need_volume_exposure_and_mutual_tls() {
        assert_eq!(flags(&[]).check(false), Ok(()));
        let named = flags(&["--rdma-exposure", "volume", "--rdma-volume-cn", "reader,trainer"]);
        assert_eq!(named.volume_common_names, ["reader", "trainer"]);
        assert_eq!(named.check(true), Ok(()));
        assert!(named.check(false).unwrap_err().contains("mutual TLS"));
        let record = flags(&["--rdma-volume-cn", "reader"]);
        assert!(record.check(true).unwrap_err().contains("--rdma-exposure volume"));
        let empty = flags(&["--rdma-exposure", "volume", "--rdma-volume-cn", "reader,"]);
        assert!(empty.check(true).unwrap_err().contains("empty"));
    }
}
