//! Chunked files (chunk manifests): the SDK's `upload_chunked` against our standalone
//! server, reads of every kind over HTTP and over a stand-in RDMA engine, a corrupt
//! chunk reported as such; and files `weed upload -maxMB` stored through a live weed
//! master, on our server and on a `weed volume`.

mod common;

use client_sdk::{Client, Error, FileId, UploadOptions};
use common::{client_over_serving_fake_rdma, our_server, runtime};
use std::path::Path;
use std::time::{Duration, Instant};
use testbeds::ours::OurVolumeServer;
use testbeds::ours::volume_server_binary;
use testbeds::pseudo_random;
use testbeds::weed::{WeedMaster, WeedVolume};

const MIB: usize = 1 << 20;
const FILE_SIZE: usize = 3 * MIB + MIB / 2 + 12_345;

async fn drain(client: &Client, fid: &FileId) -> Result<Vec<u8>, Error> {
    let mut stream = client.download_stream(fid).await?;
    let mut all = Vec::new();
    while let Some(chunk) = stream.next_chunk().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all)
}

/// The chunk fids of a chunked file, from its manifest as stored.
async fn chunks_of(client: &Client, fid: &FileId) -> Vec<FileId> {
    let stored = client.read_stored(fid).await.unwrap();
    assert!(stored.chunk_manifest, "{fid} reads as a manifest");
    let manifest = needle::ChunkManifest::parse(&stored.bytes).unwrap();
    manifest.chunks.iter().map(|c| c.fid).collect()
}

#[test]
fn upload_chunked_then_every_read_against_ours() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let rt = runtime();
    let http = Client::builder(server.addr()).stream_memory_limit(MIB as u64).build().unwrap();
    let rdma = client_over_serving_fake_rdma(server.addr());
    let data = pseudo_random(FILE_SIZE, 3);
    rt.block_on(async {
        let options = UploadOptions::named("big.bin");
        let stored = http.upload_chunked(data.clone(), &options, MIB as u64).await.unwrap();
        assert_eq!(stored.size, FILE_SIZE as u64);
        let chunks = chunks_of(&http, &stored.fid).await;
        assert_eq!(chunks.len(), 4);
        for client in [&http, &rdma] {
            assert!(client.download(&stored.fid).await.unwrap() == data, "download byte-exact");
            // Spilled to a file (1 MiB memory limit) for `http`, in memory for `rdma`.
            assert!(drain(client, &stored.fid).await.unwrap() == data, "stream byte-exact");
            for (start, end) in
                [(0, 10), (MIB - 5, MIB + 5), (100, 3 * MIB + 100), (FILE_SIZE - 1, FILE_SIZE)]
            {
                let got = client.read_range(&stored.fid, start as u64..end as u64).await.unwrap();
                assert!(got[..] == data[start..end], "range {start}..{end}");
            }
            let past = client.read_range(&stored.fid, 0..FILE_SIZE as u64 + 1).await;
            assert!(matches!(past, Err(Error::RangeNotSatisfiable { len, .. }) if len == FILE_SIZE as u64));
        }
        http.delete(&stored.fid).await.unwrap();
        for chunk in chunks {
            assert!(matches!(http.download(&chunk).await, Err(Error::NotFound { .. })), "{chunk} deleted");
        }
        assert!(matches!(http.download(&stored.fid).await, Err(Error::NotFound { .. })));
    });
}

#[test]
fn a_corrupt_chunk_is_reported_not_returned() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let rt = runtime();
    let http = Client::builder(server.addr()).build().unwrap();
    let rdma = client_over_serving_fake_rdma(server.addr());
    let data = pseudo_random(FILE_SIZE, 5);
    let fid = rt.block_on(async {
        http.upload_chunked(data.clone(), &UploadOptions::named("big.bin"), MIB as u64).await.unwrap().fid
    });
    // One byte of the third chunk (file bytes 2 MiB..3 MiB).
    let at = 2 * MIB + 1000;
    flip_in_dat(&root.path().join("data"), &data[at..at + 64]);
    // Our server checks the CRC itself and refuses the chunk (500, as weed does); a
    // transport that reads the record (RDMA) reports it corrupt. Never bytes.
    rt.block_on(async {
        for client in [&http, &rdma] {
            let whole = client.download(&fid).await;
            assert!(refused(whole.map(|b| b.to_vec())));
            let streamed = drain(client, &fid).await;
            assert!(refused(streamed));
            let touching = client.read_range(&fid, (2 * MIB) as u64..(2 * MIB + 10) as u64).await;
            assert!(refused(touching.map(|b| b.to_vec())));
            // The other chunks are intact, and a range over them alone reads.
            let elsewhere = client.read_range(&fid, 10..(2 * MIB) as u64).await.unwrap();
            assert!(elsewhere[..] == data[10..2 * MIB]);
        }
    });
}

#[test]
fn weed_upload_max_mb_files_read_through_the_sdk() {
    let root = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(root.path(), 64).unwrap_or_else(|e| panic!("{e}"));
    // Each server in a data center of its own: `weed upload -dataCenter` puts a file
    // (manifest and chunks) on the one chosen.
    let weed = WeedVolume::start_with(&root.path().join("weed"), &master, &["-dataCenter=dc-weed"])
        .unwrap_or_else(|e| panic!("{e}"));
    let ours = OurVolumeServer::start(
        &volume_server_binary(),
        &root.path().join("ours"),
        &["--mserver", &master.addr(), "--max", "20", "--data-center", "dc-ours"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !master.knows_volume_server(ours.addr()) {
        assert!(Instant::now() < deadline, "the master lists our server");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = runtime();
    let client = Client::builder(master.addr()).build().unwrap();
    let data = pseudo_random(FILE_SIZE, 9);
    let file = root.path().join("big.bin");
    std::fs::write(&file, &data).unwrap();
    for (dc, server) in [("dc-weed", weed.addr()), ("dc-ours", ours.addr().to_owned())] {
        master.grow_in(dc).unwrap_or_else(|e| panic!("{e}"));
        let fid = weed_upload(&master.addr(), dc, &file);
        let holders = rt.block_on(client.lookup(fid.volume)).unwrap();
        assert_eq!(holders, [server], "{fid} was uploaded in {dc}");
        rt.block_on(async {
            let stored = client.read_stored(&fid).await.unwrap();
            assert!(stored.chunk_manifest, "{fid} on {holders:?}: the manifest, seen as one");
            assert!(client.download(&fid).await.unwrap() == data, "{fid} on {holders:?}");
            let got = client.read_range(&fid, MIB as u64 - 3..2 * MIB as u64 + 3).await.unwrap();
            assert!(got[..] == data[MIB - 3..2 * MIB + 3]);
        });
    }
}

/// The server refused the corrupt chunk or the client caught it; never bytes.
fn refused(result: Result<Vec<u8>, Error>) -> bool {
    match result {
        Err(Error::Server { status: 500, .. } | Error::ChecksumMismatch { .. }) => true,
        other => {
            eprintln!("not refused: {:?}", other.map(|b| b.len()));
            false
        }
    }
}

/// `weed upload -maxMB=1` of `file` in data center `dc`; the manifest's fid.
fn weed_upload(master: &str, dc: &str, file: &Path) -> FileId {
    let out = std::process::Command::new("weed")
        .args(["upload", &format!("-master={master}"), &format!("-dataCenter={dc}"), "-maxMB=1"])
        .arg(file)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("weed is on PATH");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "weed upload: {text} {}", String::from_utf8_lossy(&out.stderr));
    let reply: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    reply[0]["fid"].as_str().expect("fid").parse().unwrap()
}

/// Flips a byte in the middle of the one place `bytes` occur in the `.dat`s under `dir`.
fn flip_in_dat(dir: &Path, bytes: &[u8]) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "dat") {
            let mut dat = std::fs::read(&path).unwrap();
            if let Some(pos) = dat.windows(bytes.len()).position(|w| w == bytes) {
                dat[pos + bytes.len() / 2] ^= 0xff;
                std::fs::write(&path, dat).unwrap();
                return;
            }
        }
    }
    panic!("the bytes are in no .dat under {}", dir.display());
}
