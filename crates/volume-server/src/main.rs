//! `volume-server`: a drop-in `weed volume`. Flags mirror weed's; see `--help`.
//! `volume-server volume -dir=/data -master=m1:9333 ...` takes weed's own command line
//! (`volume_server::weed_cli`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use clap::Parser;
use needle::OffsetWidth;
use std::future::IntoFuture;
use std::io::IsTerminal;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use rdma_transport::grpc_tls::Dialer;
use tonic::service::Routes;
use volume_server::cluster::grpc;
use volume_server::cluster::heartbeat::{self, HeartbeatConfig, HeartbeatStatus};
use volume_server::cluster::supervise::supervise;
use volume_server::cluster::volume_grpc::VolumeGrpc;
use volume_server::http::master_api::MasterApi;
use volume_server::http::throttle::{Budget, Throttle};
use volume_server::http::{AppState, ReadMode, VolumeLocations, router, version_string};
use volume_server::metrics::Metrics;
use volume_server::rdma::RdmaArgs;
use volume_server::security::Security;
use volume_server::security::grpc_tls::GrpcTls;
use volume_server::security::guard::WhiteList;
use volume_server::weed_cli;
use volume_store::disk_space::MinFreeSpace;
use volume_store::{IndexKind, Store, StoreConfig, VolumeOptions};

/// `--index`'s values: the store's [`IndexKind`], which knows nothing of command lines.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum IndexFlag {
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
struct Cli {
    /// Data directories, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    dir: Vec<PathBuf>,
    /// IP address to listen on and to advertise.
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    /// IP address to listen on, when it differs from --ip (weed's -ip.bind), e.g. 0.0.0.0.
    #[arg(long)]
    ip_bind: Option<String>,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address clients are sent to for this server's files (weed's -publicUrl).
    /// Default: --ip and --public-port.
    #[arg(long)]
    public_url: Option<String>,
    /// The port of the default public URL (weed's -port.public). Default: --port.
    #[arg(long)]
    public_port: Option<u16>,
    /// gRPC port (the master, `weed shell` and RDMA clients dial it). Default: port + 10000.
    #[arg(long)]
    grpc_port: Option<u16>,
    /// Most volumes per directory (one value, or one per directory).
    #[arg(long, value_delimiter = ',', default_value = "8")]
    max: Vec<usize>,
    /// Needle map kind.
    #[arg(long, value_enum, default_value_t = IndexFlag::Memory)]
    index: IndexFlag,
    /// weed masters to join (comma-separated `host:port`); without it the server runs
    /// standalone with an embedded master API.
    #[arg(long, value_delimiter = ',')]
    mserver: Option<Vec<String>>,
    /// Data center and rack to report to the master.
    #[arg(long, default_value = "")]
    data_center: String,
    #[arg(long, default_value = "")]
    rack: String,
    /// A read of a volume not on this server (weed's -readMode): proxy it to a server
    /// holding the volume, redirect (301) there, or answer 404 (local).
    #[arg(long, value_enum, default_value_t = ReadMode::Proxy)]
    read_mode: ReadMode,
    /// Bytes per `.idx` offset: 5 is what the PyPI `weed` writes, 4 weed's default build.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    offset_width: u8,
    /// Acknowledge a write only once `.dat` and `.idx` are fdatasync'ed (survives power
    /// loss; concurrent writers share each sync). Without it a write survives a crash of
    /// the server process but not of the machine, as with `weed volume`.
    #[arg(long)]
    fsync: bool,
    /// A volume this large gets no more assignments (weed master's -volumeSizeLimitMB).
    #[arg(long, default_value_t = 30_000)]
    volume_size_limit_mb: u64,
    /// Free space each data directory keeps, comma-separated (one value, or one per
    /// directory): a number up to 100 is a percentage of the file system, anything else a
    /// size like 10GiB (weed's -minFreeSpace). Below it, the directory's volumes turn
    /// read-only and it takes no new volumes until space is freed; reads and deletes go on.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    min_free_space: Vec<MinFreeSpace>,
    /// Seconds between checks of the free space (weed checks every minute).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    disk_check_interval_secs: u64,
    /// Largest upload accepted; larger ones get 413 (weed's -fileSizeLimitMB).
    #[arg(long, default_value_t = 256)]
    file_size_limit_mb: u64,
    /// HTTP worker threads. Default: half the cores (at least one): measured on 2 cores,
    /// one worker serves as many requests as two with a third less CPU, because the
    /// kernel's TCP processing and the clients need the other core.
    #[arg(long)]
    workers: Option<usize>,
    /// weed's security.toml ([jwt.signing] key guards writes and deletes, [jwt.signing.read]
    /// key guards reads, [guard] white_list limits who may write and delete, [grpc] ca
    /// with [grpc.volume] cert/key turn on mutual TLS for gRPC, served and dialed).
    /// Default: the first of ./security.toml, $HOME/.seaweedfs/security.toml,
    /// /usr/local/etc/seaweedfs/security.toml, /etc/seaweedfs/security.toml, as weed looks.
    #[arg(long)]
    security_config: Option<PathBuf>,
    /// Comma-separated IP addresses and CIDR ranges allowed to upload and delete (weed's
    /// -whiteList), joined with security.toml's `[guard] white_list`. Reads stay open.
    /// Default: no list, everyone may write.
    #[arg(long, default_value = "")]
    white_list: String,
    /// Most upload bytes held at once, in MiB; an upload waits for room, then gets 429
    /// (weed's -concurrentUploadLimitMB; 0 = unlimited). Replica writes are not limited.
    #[arg(long, default_value_t = 0)]
    concurrent_upload_limit_mb: u64,
    /// Most download bytes held at once, in MiB (weed's -concurrentDownloadLimitMB;
    /// 0 = unlimited).
    #[arg(long, default_value_t = 0)]
    concurrent_download_limit_mb: u64,
    /// Longest an upload waits for room before its 429 (weed's -inflightUploadDataTimeout).
    #[arg(long, default_value_t = 60)]
    inflight_upload_data_timeout_secs: u64,
    /// Longest a download waits for room before its 429 (weed's -inflightDownloadDataTimeout).
    #[arg(long, default_value_t = 60)]
    inflight_download_data_timeout_secs: u64,
    /// Log lines as text (coloured only on a terminal) or as one JSON object per line,
    /// for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The most detailed level logged: error, warn, info, debug or trace (weed's -v:
    /// 0-1 info, 2-3 debug, 4 and up trace).
    #[arg(long, default_value = "info")]
    log_level: LevelFilter,
    /// Log to standard error instead of standard output (weed's -logtostderr).
    #[arg(long)]
    log_to_stderr: bool,
    #[command(flatten)]
    rdma: RdmaArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logging as the flags ask. Colour escapes only when the stream is a terminal: a log
/// file or a journal gets plain text.
fn init_logging(cli: &Cli) {
    let (writer, terminal) = if cli.log_to_stderr {
        (BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal())
    } else {
        (BoxMakeWriter::new(std::io::stdout), std::io::stdout().is_terminal())
    };
    let builder =
        tracing_subscriber::fmt().with_target(false).with_max_level(cli.log_level).with_writer(writer);
    match cli.log_format {
        LogFormat::Text => builder.with_ansi(terminal).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() {
    let translated = match weed_cli::translate(std::env::args_os()) {
        Ok(translated) => translated,
        Err(e) => {
            eprintln!("volume-server: {e}");
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(translated.args);
    init_logging(&cli);
    for warning in &translated.warnings {
        tracing::warn!("{warning}");
    }
    let workers = cli
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(cli)),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

/// Re-checks the data directories' free space every `interval` until the server stops
/// (the store checked once when it opened).
async fn check_disk_space(
    store: Arc<Store>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let store = Arc::clone(&store);
        let _ = tokio::task::spawn_blocking(move || store.check_disk_space()).await;
    }
}

/// What the HTTP handlers share, from the flags: the embedded master API when there is
/// no `--mserver`, the RDMA read path (started here), the upload and download budgets.
fn app_state(
    cli: &Cli,
    store: &Arc<Store>,
    security: Security,
    width: OffsetWidth,
) -> Result<AppState, Box<dyn std::error::Error>> {
    let public_url = cli
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{}:{}", cli.ip, cli.public_port.unwrap_or(cli.port)));
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

/// The HTTP and gRPC listeners (weed's `-port` and `-port.grpc`, which defaults to the
/// HTTP port + 10000) on `--ip-bind`, else `--ip`; with the gRPC port the master is told.
async fn listen(
    cli: &Cli,
    store: &Store,
) -> Result<(tokio::net::TcpListener, tokio::net::TcpListener, u16), Box<dyn std::error::Error>> {
    let bind_ip = cli.ip_bind.as_deref().unwrap_or(&cli.ip);
    let addr: SocketAddr =
        format!("{bind_ip}:{}", cli.port).parse().map_err(|e| format!("{bind_ip}: {e}"))?;
    let grpc_port = cli
        .grpc_port
        .or_else(|| grpc::default_port(cli.port))
        .ok_or("--port is too high to add 10000 for the gRPC port: set --grpc-port")?;
    let grpc_addr = SocketAddr::new(addr.ip(), grpc_port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr).await?;
    tracing::info!(%addr, %grpc_addr, volumes = store.volumes().len(), index = ?cli.index, "volume server listening");
    Ok((listener, grpc_listener, grpc_port))
}

/// With `--mserver`: the heartbeat stream to the masters (each checked to have a gRPC
/// address first), under `supervise`, so a panic restarts it.
fn start_heartbeat(
    cli: &Cli,
    masters: &[String],
    grpc_port: u16,
    dialer: Dialer,
    state: &Arc<AppState>,
    stop_rx: &tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error>> {
    for master in masters {
        volume_server::cluster::pb::grpc_address(master).map_err(|e| format!("--mserver: {e}"))?;
    }
    let config = HeartbeatConfig {
        masters: masters.to_vec(),
        ip: cli.ip.clone(),
        port: cli.port,
        grpc_port,
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

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let (mut security, security_file) = Security::load(cli.security_config.as_deref())?;
    security.white_list.extend(WhiteList::parse(&cli.white_list).map_err(|e| format!("--white-list: {e}"))?);
    let grpc_tls = GrpcTls::load(&security.grpc)?;
    cli.rdma.check(grpc_tls.acceptor.is_some())?;
    match &security_file {
        Some(file) => {
            tracing::info!(config = %file.display(), "{}; {}", security.describe(), grpc_tls.describe())
        }
        None => tracing::info!("{}; {} (no security.toml)", security.describe(), grpc_tls.describe()),
    }
    let width = if cli.offset_width == 4 { OffsetWidth::Four } else { OffsetWidth::Five };
    let config = StoreConfig {
        dirs: cli.dir.clone(),
        max_volumes: cli.max.clone(),
        volume_size_limit: cli.volume_size_limit_mb << 20,
        min_free_space: cli.min_free_space.clone(),
        volume: VolumeOptions { width, index: cli.index.into(), fsync: cli.fsync },
    };
    let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(config)).await??);
    let state = Arc::new(app_state(&cli, &store, security, width)?);
    let (listener, grpc_listener, grpc_port) = listen(&cli, &store).await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    tokio::spawn(check_disk_space(
        Arc::clone(&store),
        Duration::from_secs(cli.disk_check_interval_secs),
        stop_rx.clone(),
    ));
    let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
    let http = axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone()));
    if let Some(masters) = &cli.mserver {
        start_heartbeat(&cli, masters, grpc_port, grpc_tls.dialer.clone(), &state, &stop_rx)?;
    }
    let volume_service = VolumeGrpc::new(
        Arc::clone(&store),
        version_string(width),
        cli.data_center,
        cli.rack,
        grpc_tls.dialer,
        cli.file_size_limit_mb << 20,
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

/// Resolves once the shutdown signal has been seen (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
