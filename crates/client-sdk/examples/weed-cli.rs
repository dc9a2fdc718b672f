//! A small command line over the SDK, to try against `./scripts/serve` (which listens on
//! 127.0.0.1:8080) or any SeaweedFS master:
//!
//! ```text
//! cargo run -p client-sdk --example weed-cli -- upload README.md      # prints the fid
//! cargo run -p client-sdk --example weed-cli -- stat 1,01a2b3c4d5
//! cargo run -p client-sdk --example weed-cli -- download 1,01a2b3c4d5 /tmp/copy
//! cargo run -p client-sdk --example weed-cli -- delete 1,01a2b3c4d5
//! ```
//!
//! `--master HOST:PORT` (or `$SEAWEED_MASTER`) picks another master or standalone server;
//! `$SEAWEED_RDMA_ENGINE` the RDMA engine (`sideway`, or `async-rdma` with that feature).
//! Downloads stream to the file and are verified before any byte is written; they go
//! over RDMA when they can, and say why not when they cannot (e.g. `not over
//! rdma-sideway: not_offered`).

use client_sdk::{Client, Error, FileId, UploadOptions};
use std::process::ExitCode;

const USAGE: &str =
    "usage: weed-cli [--master HOST:PORT] upload FILE | download FID FILE | delete FID | stat FID";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut master = std::env::var("SEAWEED_MASTER").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    if args.first().is_some_and(|a| a == "--master") && args.len() >= 2 {
        master = args.remove(1);
        args.remove(0);
    }
    match run(&master, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("weed-cli: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(master: &str, args: &[String]) -> Result<(), String> {
    let builder = Client::builder(master);
    // RDMA first when this host has a device and the server offers it; the download
    // command says why it was not used otherwise.
    // `$SEAWEED_RDMA_ENGINE` picks the engine: sideway (default), or async-rdma when built
    // with the `async-rdma` feature.
    #[cfg(feature = "rdma")]
    let builder = {
        let engine = match std::env::var("SEAWEED_RDMA_ENGINE").as_deref() {
            Err(_) | Ok("sideway") => client_sdk::RdmaEngine::Sideway,
            #[cfg(feature = "async-rdma")]
            Ok("async-rdma") => client_sdk::RdmaEngine::AsyncRdma,
            Ok(other) => return Err(format!("SEAWEED_RDMA_ENGINE={other}: not an engine built in")),
        };
        let config = client_sdk::RdmaTransportConfig { engine, ..client_sdk::RdmaTransportConfig::default() };
        builder.rdma_transport(std::sync::Arc::new(client_sdk::RdmaTransport::new(config)))
    };
    let client = builder.build().map_err(|e| e.to_string())?;
    let fid = |text: &String| text.parse::<FileId>().map_err(|e| Error::from(e).to_string());
    match args {
        [cmd, file] if cmd == "upload" => {
            let data = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
            let name = std::path::Path::new(file).file_name().map(|n| n.to_string_lossy().into_owned());
            let options = UploadOptions { name, ..UploadOptions::default() };
            let stored = client.upload(data, &options).await.map_err(|e| e.to_string())?;
            println!("{}\t{} bytes\t{}", stored.fid, stored.size, stored.server);
        }
        [cmd, id, file] if cmd == "download" => {
            let mut stream = client.download_stream(&fid(id)?).await.map_err(|e| e.to_string())?;
            let mut out = std::fs::File::create(file).map_err(|e| format!("{file}: {e}"))?;
            let mut written = 0;
            while let Some(chunk) = stream.next_chunk().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                std::io::Write::write_all(&mut out, &chunk).map_err(|e| format!("{file}: {e}"))?;
                written += chunk.len();
            }
            println!("{written} bytes verified and written to {file}");
            let metrics = client.metrics();
            for ((transport, reason), n) in &metrics.fallbacks {
                println!("not over {transport}: {reason} ({n})");
            }
        }
        [cmd, id] if cmd == "delete" => {
            client.delete(&fid(id)?).await.map_err(|e| e.to_string())?;
            println!("deleted {id}");
        }
        [cmd, id] if cmd == "stat" => {
            let stat = client.stat(&fid(id)?).await.map_err(|e| e.to_string())?;
            println!("server:        {}", stat.server);
            println!("stored size:   {}{}", stat.stored_size, if stat.compressed { " (gzip)" } else { "" });
            println!("crc32c (etag): {}", stat.etag.as_deref().unwrap_or("-"));
            println!("content type:  {}", stat.content_type.as_deref().unwrap_or("-"));
            println!("last modified: {}", stat.last_modified.as_deref().unwrap_or("-"));
        }
        _ => return Err(USAGE.to_owned()),
    }
    Ok(())
}
