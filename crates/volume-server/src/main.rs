//! `volume-server`: a drop-in `weed volume`. Flags mirror weed's; see `--help`.
//! `volume-server volume -dir=/data -master=m1:9333 ...` takes weed's own command line
//! (`volume_server::weed_cli`). This file only parses the command line, sets up logging
//! and the runtime, and runs [`volume_server::server`] until SIGTERM or Ctrl-C.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use volume_server::server::{self, BoxError, Config, LogFormat};
use volume_server::weed_cli;

/// Logging as the flags ask. Colour escapes only when the stream is a terminal: a log
/// file or a journal gets plain text.
fn init_logging(config: &Config) {
    let (writer, terminal) = if config.log_to_stderr {
        (BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal())
    } else {
        (BoxMakeWriter::new(std::io::stdout), std::io::stdout().is_terminal())
    };
    let builder =
        tracing_subscriber::fmt().with_target(false).with_max_level(config.log_level).with_writer(writer);
    match config.log_format {
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
    let config = Config::parse_from(translated.args);
    init_logging(&config);
    for warning in &translated.warnings {
        tracing::warn!("{warning}");
    }
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(config)),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

async fn run(config: Config) -> Result<(), BoxError> {
    server::start(config).await?.serve(shutdown_signal()).await
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
