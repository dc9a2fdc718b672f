//! The SDK's filer client against a live `weed` 4.48 cluster on a host without RDMA: a
//! master, a filer, our volume server and a `weed volume`. Files written through the
//! filer (its HTTP API, `weed filer.copy`, and enough chunks that the filer writes a
//! chunk manifest) into two collections, one pinned to each volume server, read back
//! byte-exact by path: whole, streamed, and in ranges at and across chunk boundaries.
//! Every chunk goes over HTTP here (the RDMA path runs in the guest, `rdma_filer.rs`).

mod common;
mod filer_files;

use client_sdk::{Error, FallbackReason, FilerClient};
use filer_files::*;
use futures_util::StreamExt;
use std::time::Duration;
use testbeds::ours::OurVolumeServer;
use testbeds::weed::{WeedFiler, WeedMaster, WeedVolume};

/// A master, our volume server and a `weed volume` joined to it, and a filer; the
/// collections `ours` and `weed` pinned to one server each.
struct Cluster {
    _root: tempfile::TempDir,
    scratch: std::path::PathBuf,
    master: WeedMaster,
    ours: OurVolumeServer,
    weed: WeedVolume,
    filer: WeedFiler,
}

impl Cluster {
    fn start(filer_flags: &[&str]) -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let master = WeedMaster::start(dir, 256).unwrap_or_else(|e| panic!("{e}"));
        let weed = WeedVolume::start(&dir.join("weed"), &master).unwrap_or_else(|e| panic!("{e}"));
        let ours = OurVolumeServer::start(
            &common::volume_server_bin(),
            &dir.join("ours"),
            &["--mserver", &master.addr(), "--max", "20"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !master.knows_volume_server(ours.addr()) {
            assert!(std::time::Instant::now() < deadline, "the master lists our server");
            std::thread::sleep(Duration::from_millis(100));
        }
        pin_collection(&master, "ours", ours.addr(), 2);
        pin_collection(&master, "weed", &weed.addr(), 2);
        let filer =
            WeedFiler::start(&dir.join("filer"), &master, filer_flags).unwrap_or_else(|e| panic!("{e}"));
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        Self { _root: root, scratch, master, ours, weed, filer }
    }

    /// Stops every server, the filer first (it holds connections to the others).
    fn stop(self) {
        self.filer.stop();
        self.ours.stop();
        self.weed.stop();
        self.master.stop();
    }
}

#[test]
fn files_written_through_the_filer_read_back_byte_exact_from_both_kinds_of_volume_server() {
    let cluster = Cluster::start(FILER_FLAGS);
    let rt = common::runtime();
    // Small pages, so the listing below takes several.
    let filer = FilerClient::builder(cluster.filer.addr()).list_page(3).build().unwrap();
    for (dir, collection, server) in
        [("/on-ours", "ours", cluster.ours.addr().to_owned()), ("/on-weed", "weed", cluster.weed.addr())]
    {
        let scratch = cluster.scratch.join(collection);
        std::fs::create_dir_all(&scratch).unwrap();
        let mut files = write_files(&cluster.filer, &scratch, dir, collection);
        files.push(rt.block_on(write_manifested(&filer, &cluster.master.addr(), dir, collection)));
        rt.block_on(async {
            for written in &files {
                // The test's reference copy agrees with weed's own reading of the file.
                let served = cluster.filer.get(&written.path).unwrap();
                assert!(
                    served == written.data,
                    "{}: weed's filer GET disagrees with the reference",
                    written.path
                );
                check(&filer, written, 16).await;
            }
            let info = filer.stat(&format!("{dir}/copied.bin")).await.unwrap();
            assert_eq!(info.chunks, 6, "{info:?}");
            let listed: Vec<String> =
                filer.list(dir).map(|entry| entry.unwrap().path).collect::<Vec<_>>().await;
            let mut expected: Vec<String> = files.iter().map(|w| w.path.clone()).collect();
            expected.sort();
            assert_eq!(listed, expected, "the listing, page by page, in name order");
            let page = filer.list_page(dir, Some("many-chunks.bin"), 2).await.unwrap();
            let names: Vec<&str> = page.iter().map(|i| i.path.rsplit('/').next().unwrap()).collect();
            assert_eq!(names, ["notes.txt", "one-chunk.bin"]);
        });
        let holders: std::collections::BTreeSet<String> = rt.block_on(async {
            let mut holders = std::collections::BTreeSet::new();
            for vid in volumes_of(&filer, &files).await {
                holders.extend(filer.chunk_client().lookup(vid).await.unwrap());
            }
            holders
        });
        assert_eq!(
            holders.into_iter().collect::<Vec<_>>(),
            [server],
            "{dir}: chunks only where the collection is pinned"
        );
    }

    rt.block_on(async {
        let metrics = filer.chunk_client().metrics();
        assert!(metrics.reads.get("http").copied().unwrap_or(0) > 100, "{metrics:?}");
        // No RDMA transport on the host: each needle read says why it was not RDMA.
        assert!(
            metrics.fallbacks.keys().all(|(_, reason)| *reason == FallbackReason::NoRdmaTransport),
            "{metrics:?}"
        );

        // What is not a file, or not there.
        assert!(matches!(filer.stat("/on-ours/nope").await, Err(Error::NoSuchPath { .. })));
        assert!(matches!(filer.read("/on-ours").await, Err(Error::WrongEntryKind { .. })));
        assert!(matches!(
            filer.list_page("/on-ours/tiny.bin", None, 10).await,
            Err(Error::WrongEntryKind { .. })
        ));
        assert!(matches!(filer.list_page("/nowhere", None, 10).await, Err(Error::NoSuchPath { .. })));
        let root = filer.stat("/").await.unwrap();
        assert!(root.is_directory);
        let top: Vec<String> = filer.list("/").map(|e| e.unwrap().path).collect::<Vec<_>>().await;
        assert!(top.contains(&"/on-ours".to_owned()) && top.contains(&"/on-weed".to_owned()), "{top:?}");
    });
    drop((filer, rt));
    cluster.stop();
}

/// The volumes holding the data chunks `files` list (not the manifest the filer wrote:
/// that goes to the filer's default collection, on either server).
async fn volumes_of(filer: &FilerClient, files: &[Written]) -> Vec<needle::VolumeId> {
    let mut volumes = std::collections::BTreeSet::new();
    for written in files {
        let info = filer.stat(&written.path).await.unwrap();
        if info.chunks == 0 {
            continue;
        }
        let entry = filer
            .grpc()
            .lookup_directory_entry(client_sdk::filer::pb::LookupDirectoryEntryRequest {
                directory: written.path.rsplit_once('/').unwrap().0.to_owned(),
                name: written.path.rsplit('/').next().unwrap().to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .entry
            .unwrap();
        let data = entry.chunks.iter().filter(|c| !c.is_chunk_manifest);
        volumes.extend(data.map(|c| needle::VolumeId(c.fid.as_ref().unwrap().volume_id)));
    }
    volumes.into_iter().collect()
}
