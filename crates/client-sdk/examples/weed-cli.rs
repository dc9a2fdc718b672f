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
//! and files by path through a `weed filer` (`--filer HOST:PORT`, or `$SEAWEED_FILER`;
//! default 127.0.0.1:8888, its gRPC port + 10000):
//!
//! ```text
//! cargo run -p client-sdk --example weed-cli -- ls /buckets/photos
//! cargo run -p client-sdk --example weed-cli -- cat /notes/today.txt
//! cargo run -p client-sdk --example weed-cli -- get /buckets/photos/cat.jpg /tmp/cat.jpg
//! ```
//!
//! `--master HOST:PORT` (or `$SEAWEED_MASTER`) picks another master or standalone server;
//! `$SEAWEED_RDMA_ENGINE` the RDMA engine (`sideway`, or `async-rdma` with that feature).
//! Downloads stream to the file and are verified before any byte is written; they go
//! over RDMA when they can, and say why not when they cannot (e.g. `not over
//! rdma-sideway: not_offered`). `cat` and `get` say the same per file, chunk by chunk
//! (`6 of 6 chunk needles over RDMA`); `get` writes `FILE.part` and renames it to `FILE`
//! only once every chunk verified, drawing a progress bar on a terminal for files of
//! 8 MiB and more.

use client_sdk::{
    ChunkReport, Client, ClientBuilder, Error, FileId, FileInfo, FilerClient, ReadTransport, UploadOptions,
};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "usage: weed-cli [--master HOST:PORT] [--filer HOST:PORT] \
    upload FILE | download FID FILE | delete FID | stat FID | ls PATH | cat PATH | get PATH FILE";

/// `get` draws a progress bar (on a terminal) for files of at least this many bytes.
const PROGRESS_FROM: u64 = 8 << 20;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut master = std::env::var("SEAWEED_MASTER").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let mut filer = std::env::var("SEAWEED_FILER").unwrap_or_else(|_| "127.0.0.1:8888".to_owned());
    while args.len() >= 2 && (args[0] == "--master" || args[0] == "--filer") {
        let value = args.remove(1);
        if args.remove(0) == "--master" {
            master = value;
        } else {
            filer = value;
        }
    }
    let result = match args.first().map(String::as_str) {
        Some("ls" | "cat" | "get") => by_path(&filer, &args).await,
        _ => run(&master, &args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("weed-cli: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The RDMA transport reads try first, when this host has a device and the server
/// offers it (the commands that read say why it was not used otherwise).
/// `$SEAWEED_RDMA_ENGINE` picks the engine: sideway (default), or async-rdma when built
/// with that feature.
#[cfg(feature = "rdma")]
fn rdma() -> Result<Option<Arc<dyn ReadTransport>>, String> {
    let engine = match std::env::var("SEAWEED_RDMA_ENGINE").as_deref() {
        Err(_) | Ok("sideway") => client_sdk::RdmaEngine::Sideway,
        #[cfg(feature = "async-rdma")]
        Ok("async-rdma") => client_sdk::RdmaEngine::AsyncRdma,
        Ok(other) => return Err(format!("SEAWEED_RDMA_ENGINE={other}: not an engine built in")),
    };
    let config = client_sdk::RdmaTransportConfig { engine, ..client_sdk::RdmaTransportConfig::default() };
    Ok(Some(Arc::new(client_sdk::RdmaTransport::new(config))))
}

/// Built without RDMA: every read goes over HTTP.
#[cfg(not(feature = "rdma"))]
fn rdma() -> Result<Option<Arc<dyn ReadTransport>>, String> {
    Ok(None)
}

/// `builder` with `rdma` tried first, if any.
fn with_rdma(builder: ClientBuilder, rdma: Option<Arc<dyn ReadTransport>>) -> ClientBuilder {
    match rdma {
        Some(transport) => builder.rdma_transport(transport),
        None => builder,
    }
}

/// The commands on file ids, through the master (or standalone server) `master`.
async fn run(master: &str, args: &[String]) -> Result<(), String> {
    let client = with_rdma(Client::builder(master), rdma()?).build().map_err(|e| e.to_string())?;
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

/// The commands on paths, through the filer `filer`.
async fn by_path(filer: &str, args: &[String]) -> Result<(), String> {
    let rdma = rdma()?;
    let filer =
        FilerClient::builder(filer).chunk_reads(|b| with_rdma(b, rdma)).build().map_err(|e| e.to_string())?;
    match args {
        [cmd, path] if cmd == "ls" => list(&filer, path).await,
        [cmd, path] if cmd == "cat" => {
            let mut stdout = std::io::stdout().lock();
            let (bytes, report) = copy_file(&filer, path, &mut stdout, &mut |_, _| {}).await?;
            eprintln!("{path}: {bytes} bytes verified; {report}");
            Ok(())
        }
        [cmd, path, file] if cmd == "get" => get(&filer, path, file).await,
        _ => Err(USAGE.to_owned()),
    }
}

/// `ls PATH`: a directory's entries, or the file's own line with its chunk count.
async fn list(filer: &FilerClient, path: &str) -> Result<(), String> {
    use futures_util::StreamExt;
    let info = filer.stat(path).await.map_err(|e| e.to_string())?;
    if !info.is_directory {
        let how = if info.inline {
            "inline".to_owned()
        } else {
            format!("{} chunks{}", info.chunks, if info.encrypted { ", encrypted" } else { "" })
        };
        println!("{}  ({how})", entry_line(&info));
        return Ok(());
    }
    let mut entries = std::pin::pin!(filer.list(path));
    while let Some(entry) = entries.next().await {
        println!("{}", entry_line(&entry.map_err(|e| e.to_string())?));
    }
    Ok(())
}

/// `kind size modified path`, `ls -l`-like.
fn entry_line(info: &FileInfo) -> String {
    let kind = if info.is_directory { 'd' } else { '-' };
    let name = if info.is_directory { format!("{}/", info.path) } else { info.path.clone() };
    format!("{kind} {:>14} {} {name}", info.size, utc(info.mtime))
}

/// Unix seconds as `YYYY-MM-DD HH:MM` UTC (days to a civil date: Howard Hinnant's
/// published algorithm).
fn utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// `get PATH FILE`: the file into `FILE.part`, renamed to `FILE` once complete.
async fn get(filer: &FilerClient, path: &str, file: &str) -> Result<(), String> {
    let part = format!("{file}.part");
    let mut out = std::fs::File::create(&part).map_err(|e| format!("{part}: {e}"))?;
    let terminal = std::io::stderr().is_terminal();
    let mut drew = false;
    let mut progress = |done: u64, total: u64| {
        if terminal && total >= PROGRESS_FROM {
            eprint!("\r{}", bar(done, total));
            drew = true;
        }
    };
    let copied = copy_file(filer, path, &mut out, &mut progress).await;
    if drew {
        eprintln!();
    }
    let synced = copied.and_then(|done| out.sync_all().map(|()| done).map_err(|e| format!("{part}: {e}")));
    let (bytes, report) = match synced {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
    };
    std::fs::rename(&part, file).map_err(|e| format!("{part} -> {file}: {e}"))?;
    eprintln!("{path} -> {file}: {bytes} bytes verified; {report}");
    Ok(())
}

/// `[#####---------------]  25%  2.0 / 8.0 MiB`
fn bar(done: u64, total: u64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done * WIDTH / total.max(1)) as usize;
    let mib = |n: u64| n as f64 / f64::from(1 << 20);
    format!(
        "[{}{}] {:3}%  {:.1} / {:.1} MiB",
        "#".repeat(filled),
        "-".repeat(WIDTH as usize - filled),
        done * 100 / total.max(1),
        mib(done),
        mib(total)
    )
}

/// Streams `path` into `out`, calling `progress(bytes so far, size)` after each verified
/// piece: the bytes written and how the chunks were served.
async fn copy_file(
    filer: &FilerClient,
    path: &str,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(u64, ChunkReport), String> {
    let mut stream = filer.read_stream(path).await.map_err(|e| e.to_string())?;
    let size = stream.info().size;
    let mut done = 0u64;
    while let Some(piece) = stream.next_chunk().await {
        let piece = piece.map_err(|e| format!("{path}: {e} ({})", stream.report()))?;
        out.write_all(&piece).map_err(|e| format!("writing {path}: {e}"))?;
        done += piece.len() as u64;
        progress(done, size);
    }
    out.flush().map_err(|e| format!("writing {path}: {e}"))?;
    Ok((done, stream.report().clone()))
}
