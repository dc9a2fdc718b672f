//! `volume-server`: a drop-in `weed volume`. Flags mirror weed's; see `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::HeaderValue;
use clap::Parser;
use needle::OffsetWidth;
use volume_server::http::{AppState, router, version_string};
use volume_server::master_api::MasterApi;
use volume_server::metrics::Metrics;
use volume_server::{IndexKind, Store, StoreConfig, VolumeOptions};

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
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Most volumes per directory (one value, or one per directory).
    #[arg(long, value_delimiter = ',', default_value = "8")]
    max: Vec<usize>,
    /// Needle map kind.
    #[arg(long, value_enum, default_value_t = IndexKind::Memory)]
    index: IndexKind,
    /// A weed master to join. Joining is not implemented yet: with it, the embedded
    /// master API is off and the server only serves its volumes.
    #[arg(long)]
    mserver: Option<String>,
    /// Bytes per `.idx` offset: 5 is what the PyPI `weed` writes, 4 weed's default build.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(4..=5))]
    offset_width: u8,
    /// fsync `.dat` and `.idx` before acknowledging each write.
    #[arg(long)]
    fsync: bool,
    /// A volume this large gets no more assignments (weed master's -volumeSizeLimitMB).
    #[arg(long, default_value_t = 30_000)]
    volume_size_limit_mb: u64,
    /// Largest upload accepted; larger ones get 413 (weed's -fileSizeLimitMB).
    #[arg(long, default_value_t = 256)]
    file_size_limit_mb: u64,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_target(false).init();
    if let Err(e) = run(Cli::parse()).await {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    let width = if cli.offset_width == 4 { OffsetWidth::Four } else { OffsetWidth::Five };
    let config = StoreConfig {
        dirs: cli.dir.clone(),
        max_volumes: cli.max.clone(),
        volume_size_limit: cli.volume_size_limit_mb << 20,
        volume: VolumeOptions { width, index: cli.index, fsync: cli.fsync },
    };
    let store = Arc::new(tokio::task::spawn_blocking(move || Store::open(config)).await??);
    let public_url = format!("{}:{}", cli.ip, cli.port);
    let master = match &cli.mserver {
        None => Some(MasterApi::new(&store, public_url.clone())),
        Some(m) => {
            tracing::warn!(mserver = %m, "joining a master is not implemented yet; serving volumes only");
            None
        }
    };
    let version = version_string(width);
    let state = Arc::new(AppState {
        store: Arc::clone(&store),
        file_size_limit: cli.file_size_limit_mb << 20,
        server_header: HeaderValue::from_str(&format!("SeaweedFS Volume {version}"))?,
        version,
        master,
        metrics: Metrics::new(),
    });
    let addr: SocketAddr = format!("{}:{}", cli.ip, cli.port).parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, volumes = store.volumes().len(), index = ?cli.index, "volume server listening");
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
