//! The volume server as a library call: [`start`] loads `security.toml`, opens the store
//! and binds the listeners; [`Running::serve`] serves HTTP and gRPC (and heartbeats to
//! the masters) until a shutdown future resolves, then writes the needle maps out.
//! `main.rs` parses the command line into a [`Config`] and calls them; tests can run a
//! server in-process the same way.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::Parser;
use needle::OffsetWidth;
use rdma_transport::grpc_tls::Dialer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::service::Routes;
use tracing::level_filters::LevelFilter;
use volume_store::disk_space::MinFreeSpace;
use volume_store::{IndexKind, Store, StoreConfig, VolumeOptions};

use crate::cluster::grpc;
use crate::cluster::heartbeat::{self, HeartbeatConfig, HeartbeatStatus};
use crate::cluster::supervise::supervise;
use crate::cluster::volume_grpc::VolumeGrpc;
use crate::http::master_api::MasterApi;
use crate::http::throttle::{Budget, Throttle};
use crate::http::{AppState, ReadMode, VolumeLocations, router, version_string};
use crate::metrics::Metrics;
use crate::rdma::RdmaArgs;
use crate::security::Security;
use crate::security::grpc_tls::GrpcTls;
use crate::security::guard::WhiteList;

/// Why the server could not start or stopped with an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `--index`'s values: the store's [`IndexKind`], which knows nothing of command lines.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum IndexFlag {
    /// A hash map rebuilt from `.idx` at load.
    Memory,
    /// RocksDB in `<volume>.rdb`, persisted with an `.idx` watermark.
    Rocksdb,
}

impl From<IndexFlag> for IndexKind {
    fn from(flag: IndexFlag) -> Self {
        match flag {
            IndexFlag::Memory => IndexKind::Memory,
            IndexFlag::Rocksdb => IndexKind::Rocksdb,
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A drop-in SeaweedFS volume server (same files, same HTTP answers as `weed volume`)"
)]
pub struct Config {
    /// Data directories, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub dir: Vec<PathBuf>,
    /// IP address to listen on and to advertise.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: String,
    /// IP address to listen on, when it differs from --ip (weed's -ip.bind), e.g. 0.0.0.0.
    #[arg(long)]
    pub ip_bind: Option<String>,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The address clients are sent to for this server's files (weed's -publicUrl).
    /// Default: --ip and --public-port.
    #[arg(long)]
    pub public_url: Option<String>,
    /// The port of the default public URL (weed's -port.public). Default: --port.
    #[arg(long)]
    pub public_port: Option<u16>,
    /// gRPC port (the master, `weed shell` and RDMA clients dial it). Default: port +
    /// 10000, or a port the system picks when --port is 0.
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// Most volumes per directory (one value, or one per directory).
    #[arg(long, value_delimiter = ',', default_value = "8")]
    pub max: Vec<usize>,
    /// Needle map kind.
    #[arg(long, value_enum, default_value_t = IndexFlag::Memory)]
    pub index: IndexFlag,
    /// weed masters to join (comma-separated `host:port`); without it the server runs
    /// standalone with an embedded master API.
    #[arg(long, value_delimiter = ',')]
    pub mserver: Option<Vec<String>>,
    /// Data center and rack to report to the master.
    #[arg(long, default_value = "")]
    pub data_center: String,
    #[arg(long, default_value = "")]
    pub rack: String,
    /// A read of a volume not on this server (weed's -readMode): proxy it to a server
    /// holding the volume, redirect (301) there, or answer 404 (local).
    #[arg(long, value_enum, default_value_t = ReadMode::Proxy)]
    pub read_mode: ReadMode,
    /// Bytes per `.idx` offset: 5 is what the PyPI `weed` writes, 4 weed's default build.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    pub offset_width: u8,
    /// Acknowledge a write only once `.dat` and `.idx` are fdatasync'ed (survives power
    /// loss; concurrent writers share each sync). Without it a write survives a crash of
    /// the server process but not of the machine, as with `weed volume`.
    #[arg(long)]
    pub fsync: bool,
    /// A volume this large gets no more assignments (weed master's -volumeSizeLimitMB).
    #[arg(long, default_value_t = 30_000)]
    pub volume_size_limit_mb: u64,
    /// Free space each data directory keeps, comma-separated (one value, or one per
    /// directory): a number up to 100 is a percentage of the file system, anything else a
    /// size like 10GiB (weed's -minFreeSpace). Below it, the directory's volumes turn
    /// read-only and it takes no new volumes until space is freed; reads and deletes go on.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub min_free_space: Vec<MinFreeSpace>,
    /// Seconds between checks of the free space (weed checks every minute).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub disk_check_interval_secs: u64,
    /// Largest upload accepted; larger ones get 413 (weed's -fileSizeLimitMB).
    #[arg(long, default_value_t = 256)]
    pub file_size_limit_mb: u64,
    /// HTTP worker threads. Default: half the cores (at least one): measured on 2 cores,
    /// one worker serves as many requests as two with a third less CPU, because the
    /// kernel's TCP processing and the clients need the other core.
    #[arg(long)]
    pub workers: Option<usize>,
    /// weed's security.toml ([jwt.signing] key guards writes and deletes, [jwt.signing.read]
    /// key guards reads, `[guard]` white_list limits who may write and delete, [grpc] ca
    /// with [grpc.volume] cert/key turn on mutual TLS for gRPC, served and dialed).
    /// Default: the first of ./security.toml, $HOME/.seaweedfs/security.toml,
    /// /usr/local/etc/seaweedfs/security.toml, /etc/seaweedfs/security.toml, as weed looks.
    #[arg(long)]
    pub security_config: Option<PathBuf>,
    /// Comma-separated IP addresses and CIDR ranges allowed to upload and delete (weed's
    /// -whiteList), joined with security.toml's `[guard] white_list`. Reads stay open.
    /// Default: no list, everyone may write.
    #[arg(long, default_value = "")]
    pub white_list: String,
    /// Most upload bytes held at once, in MiB; an upload waits for room, then gets 429
    /// (weed's -concurrentUploadLimitMB; 0 = unlimited). Replica writes are not limited.
    #[arg(long, default_value_t = 0)]
    pub concurrent_upload_limit_mb: u64,
    /// Most download bytes held at once, in MiB (weed's -concurrentDownloadLimitMB;
    /// 0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub concurrent_download_limit_mb: u64,
    /// Longest an upload waits for room before its 429 (weed's -inflightUploadDataTimeout).
    #[arg(long, default_value_t = 60)]
    pub inflight_upload_data_timeout_secs: u64,
    /// Longest a download waits for room before its 429 (weed's -inflightDownloadDataTimeout).
    #[arg(long, default_value_t = 60)]
    pub inflight_download_data_timeout_secs: u64,
    /// Log lines as text (coloured only on a terminal) or as one JSON object per line,
    /// for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The most detailed level logged: error, warn, info, debug or trace (weed's -v:
    /// 0-1 info, 2-3 debug, 4 and up trace).
    #[arg(long, default_value = "info")]
    pub log_level: LevelFilter,
    /// Log to standard error instead of standard output (weed's -logtostderr).
    #[arg(long)]
    pub log_to_stderr: bool,
    #[command(flatten)]
    pub rdma: RdmaArgs,
}

/// `--log-format`'s values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A server whose store is open and whose listeners are bound, not serving yet.
pub struct Running {
    config: Config,
    store: Arc<Store>,
    state: Arc<AppState>,
    grpc_tls: GrpcTls,
    width: OffsetWidth,
    listener: TcpListener,
    grpc_listener: TcpListener,
}

/// Loads `security.toml`, opens the store and binds the listeners.
pub async fn start(config: Config) -> Result<Running, BoxError> {
    let (mut security, security_file) = Security::load(config.security_config.as_deref())?;
    let white_list = WhiteList::parse(&config.white_list).map_err(|e| format!("--white-list: {e}"))?;
    security.white_list.extend(white_list);
    let grpc_tls = GrpcTls::load(&security.grpc)?;
    config.rdma.check(grpc_tls.acceptor.is_some())?;
    match &security_file {
        Some(file) => {
            tracing::info!(config = %file.display(), "{}; {}", security.describe(), grpc_tls.describe())
        }
        None => tracing::info!("{}; {} (no security.toml)", security.describe(), grpc_tls.describe()),
    }
    let width = if config.offset_width == 4 { OffsetWidth::Four } else { OffsetWidth::Five };
    let store_config = StoreConfig {
        dirs: config.dir.clone(),
        max_volumes: config.max.clone(),
        volume_size_limit: config.volume_size_limit_mb << 20,
        min_free_space: config.min_free_space.clone(),
        volume: VolumeOptions { width, index: config.index.into(), fsync: config.fsync },
    };
    let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(store_config)).await??);
    let (listener, grpc_listener) = listen(&config).await?;
    let port = listener.local_addr()?.port();
    let state = Arc::new(app_state(&config, port, &store, security, width)?);
    Ok(Running { config, store, state, grpc_tls, width, listener, grpc_listener })
}

impl Running {
    /// The address the HTTP API listens on (its port chosen by the system for port 0).
    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address the gRPC service listens on.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc_listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then lets calls under way finish (bounded) and
    /// writes the needle maps out.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), BoxError> {
        let Running { config, store, state, grpc_tls, width, listener, grpc_listener } = self;
        let (addr, grpc_addr) = (listener.local_addr()?, grpc_listener.local_addr()?);
        tracing::info!(%addr, %grpc_addr, volumes = store.volumes().len(), index = ?config.index, "volume server listening");
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        tokio::spawn(check_disk_space(
            Arc::clone(&store),
            Duration::from_secs(config.disk_check_interval_secs),
            stop_rx.clone(),
        ));
        let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
        let http = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
        if let Some(masters) = &config.mserver {
            let ports = (addr.port(), grpc_addr.port());
            start_heartbeat(&config, masters, ports, grpc_tls.dialer.clone(), &state, &stop_rx)?;
        }
        let volume_service = VolumeGrpc::new(
            Arc::clone(&store),
            version_string(width),
            config.data_center,
            config.rack,
            grpc_tls.dialer,
            config.file_size_limit_mb << 20,
        )
        .into_service();
        let routes = Routes::new(volume_service).add_service(state.rdma.service());
        let grpc = grpc::serve(grpc_listener, routes, grpc_tls.acceptor, stopped(stop_rx));
        let (http, grpc) = tokio::join!(http.into_future(), grpc);
        // The RocksDB needle maps keep their latest entries in memory (the .idx is their
        // log), and the store is not dropped on the way out: write them out, so the next
        // start replays nothing.
        tokio::task::spawn_blocking(move || store.volumes().iter().for_each(|v| v.close_map())).await?;
        http?;
        grpc?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The HTTP and gRPC listeners (weed's `-port` and `-port.grpc`, which defaults to the
/// HTTP port + 10000) on `--ip-bind`, else `--ip`. Port 0 lets the system pick both.
async fn listen(cli: &Config) -> Result<(TcpListener, TcpListener), BoxError> {
    let bind_ip = cli.ip_bind.as_deref().unwrap_or(&cli.ip);
    let addr: SocketAddr =
        format!("{bind_ip}:{}", cli.port).parse().map_err(|e| format!("{bind_ip}: {e}"))?;
    let grpc_port = match (cli.grpc_port, cli.port) {
        (Some(port), _) => port,
        (None, 0) => 0,
        (None, port) => grpc::default_port(port)
            .ok_or("--port is too high to add 10000 for the gRPC port: set --grpc-port")?,
    };
    let listener = TcpListener::bind(addr).await?;
    let grpc_listener = TcpListener::bind(SocketAddr::new(addr.ip(), grpc_port)).await?;
    Ok((listener, grpc_listener))
}

/// What the HTTP handlers share, from the flags: the embedded master API when there is
/// no `--mserver`, the RDMA read path (started here), the upload and download budgets.
fn app_state(
    cli: &Config,
    port: u16,
    store: &Arc<Store>,
    security: Security,
    width: OffsetWidth,
) -> Result<AppState, BoxError> {
    let public_url =
        cli.public_url.clone().unwrap_or_else(|| format!("{}:{}", cli.ip, cli.public_port.unwrap_or(port)));
    let master = cli.mserver.is_none().then(|| MasterApi::new(store, public_url.clone()));
    let rdma = cli.rdma.start(store, &cli.ip, security.read.as_ref().map(|k| k.jwt_key()));
    let version = version_string(width);
    Ok(AppState {
        store: Arc::clone(store),
        file_size_limit: cli.file_size_limit_mb << 20,
        server_header: HeaderValue::from_str(&format!("SeaweedFS Volume {version}"))?,
        version,
        master,
        locations: VolumeLocations::new(cli.mserver.clone().unwrap_or_default()),
        public_url,
        read_mode: cli.read_mode,
        metrics: Metrics::new(),
        rdma,
        heartbeat: Arc::new(HeartbeatStatus::default()),
        security,
        throttle: Throttle {
            uploads: Budget::new(
                cli.concurrent_upload_limit_mb,
                Duration::from_secs(cli.inflight_upload_data_timeout_secs),
            ),
            downloads: Budget::new(
                cli.concurrent_download_limit_mb,
                Duration::from_secs(cli.inflight_download_data_timeout_secs),
            ),
        },
    })
}

/// With `--mserver`: the heartbeat stream to the masters (each checked to have a gRPC
/// address first), under `supervise`, so a panic restarts it.
fn start_heartbeat(
    cli: &Config,
    masters: &[String],
    ports: (u16, u16),
    dialer: Dialer,
    state: &Arc<AppState>,
    stop_rx: &watch::Receiver<bool>,
) -> Result<(), BoxError> {
    for master in masters {
        crate::cluster::pb::grpc_address(master).map_err(|e| format!("--mserver: {e}"))?;
    }
    let config = HeartbeatConfig {
        masters: masters.to_vec(),
        ip: cli.ip.clone(),
        port: ports.0,
        grpc_port: ports.1,
        public_url: state.public_url.clone(),
        data_center: cli.data_center.clone(),
        rack: cli.rack.clone(),
        pulse: std::time::Duration::from_secs(5),
        dialer,
        status: Arc::clone(&state.heartbeat),
    };
    let (store, state, stop) = (Arc::clone(&state.store), Arc::clone(state), stop_rx.clone());
    tokio::spawn(supervise(
        "heartbeat",
        stop_rx.clone(),
        move || state.metrics.heartbeat_restarted(),
        move || heartbeat::run(Arc::clone(&store), config.clone(), stop.clone()),
    ));
    Ok(())
}

/// Re-checks the data directories' free space every `interval` until the server stops
/// (the store checked once when it opened).
async fn check_disk_space(store: Arc<Store>, interval: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let store = Arc::clone(&store);
        let _ = tokio::task::spawn_blocking(move || store.check_disk_space()).await;
    }
}

/// Resolves once the shutdown signal has been seen (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
