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
use testbeds::weed::{WeedMaster, WeedVolume};
use testbeds::weed_filer::WeedFiler;

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
            &testbeds::ours::volume_server_binary(),
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
                check(&filer, written, &ranges(written, 16)).await;
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

/// Needle reads `filer`'s chunk client made so far, on any transport.
fn needle_reads(filer: &FilerClient) -> u64 {
    filer.chunk_client().metrics().reads.values().sum()
}

/// What a read fetches. A range reads only the chunks it overlaps (counted as needle
/// reads), chunk manifests too: one outside the range is not read. A read fetches at
/// most [`FilerClientBuilder::concurrency`] chunks at once, and that many. An object the
/// S3 gateway stored with server-side encryption is refused by kind, not returned as
/// ciphertext.
///
/// [`FilerClientBuilder::concurrency`]: client_sdk::FilerClientBuilder::concurrency
#[test]
fn reads_fetch_only_the_chunks_they_overlap_a_bounded_number_at_once() {
    let cluster = Cluster::start(FILER_FLAGS);
    let rt = common::runtime();
    let filer = FilerClient::builder(cluster.filer.addr()).build().unwrap();
    let six = testbeds::pseudo_random(6 * MIB, 60);
    cluster.filer.put("/fetch/six.bin", "maxMB=1&collection=ours", &six, "application/octet-stream").unwrap();
    let m = MIB as u64;
    rt.block_on(async {
        let manifested = write_manifested(&filer, &cluster.master.addr(), "/fetch", "ours").await;
        let (six_path, manifested_path) = ("/fetch/six.bin", manifested.path.as_str());
        // Inside the last chunk, the one the manifest does not cover.
        let tail = manifested.data.len() as u64 - 50;
        // (file, its bytes, range, needles read: data chunks, and the manifest if it overlaps)
        let cases: [(&str, &[u8], std::ops::Range<u64>, u64); 8] = [
            (six_path, &six, 2 * m + 10..2 * m + 20, 1),
            (six_path, &six, m - 1..m + 1, 2),
            (six_path, &six, m..3 * m, 2),
            (six_path, &six, 0..6 * m, 6),
            (six_path, &six, 5 * m..5 * m, 0),
            (manifested_path, &manifested.data, 50..60, 2),
            (manifested_path, &manifested.data, 0..350, 5),
            (manifested_path, &manifested.data, tail..tail + 10, 1),
        ];
        for (path, data, range, needles) in cases {
            let before = needle_reads(&filer);
            let got = filer.read_range(path, range.clone()).await.unwrap();
            assert!(got[..] == data[range.start as usize..range.end as usize], "{path} {range:?}");
            assert_eq!(needle_reads(&filer) - before, needles, "{path} {range:?}");
        }

        // Three chunks at a time: the transport lets reads through in threes only.
        let gathering = std::sync::Arc::new(common::GatheringTransport::new(3));
        let transport: std::sync::Arc<dyn client_sdk::ReadTransport> = gathering.clone();
        let bounded = FilerClient::builder(cluster.filer.addr())
            .concurrency(3)
            .chunk_reads(|b| b.rdma_transport(transport).rdma_timeout(Duration::from_secs(60)))
            .build()
            .unwrap();
        assert!(bounded.read("/fetch/six.bin").await.unwrap() == six);
        let (streamed, error) = drain(bounded.read_stream("/fetch/six.bin").await.unwrap()).await;
        assert!(error.is_none() && streamed == six, "{error:?}");
        assert_eq!(gathering.most_at_once(), 3);
        let metrics = bounded.chunk_client().metrics();
        assert!(metrics.fallbacks.is_empty(), "every read in a group of three: {metrics:?}");
        assert_eq!(metrics.reads.get("gathering"), Some(&12), "{metrics:?}");
    });
    drop((filer, rt));
    cluster.stop();
}

/// Objects the S3 gateway encrypts (SSE-C, SSE-KMS, SSE-S3) mark their chunks; a real
/// filer keeps the mark, and the client refuses them by kind (stat still works).
#[test]
fn server_side_encrypted_objects_are_refused_by_kind() {
    use client_sdk::filer::pb;
    let cluster = Cluster::start(FILER_FLAGS);
    let rt = common::runtime();
    let filer = FilerClient::builder(cluster.filer.addr()).build().unwrap();
    let data = testbeds::pseudo_random(1000, 70);
    rt.block_on(async {
        let uploader = client_sdk::Client::builder(cluster.master.addr()).build().unwrap();
        let stored = uploader.upload(data.clone(), &Default::default()).await.unwrap();
        for (name, sse, kind) in [
            ("c.bin", pb::SseType::SseC, "SSE-C"),
            ("kms.bin", pb::SseType::SseKms, "SSE-KMS"),
            ("s3.bin", pb::SseType::SseS3, "SSE-S3"),
        ] {
            let chunk = pb::FileChunk {
                fid: Some(pb::FileId {
                    volume_id: stored.fid.volume.0,
                    file_key: stored.fid.key.0,
                    cookie: stored.fid.cookie.0,
                }),
                size: data.len() as u64,
                modified_ts_ns: 1,
                sse_type: sse as i32,
                ..Default::default()
            };
            let request = pb::AppendToEntryRequest {
                directory: "/s3".into(),
                entry_name: name.into(),
                chunks: vec![chunk],
            };
            filer.grpc().append_to_entry(request).await.unwrap();
            let path = format!("/s3/{name}");
            assert_eq!(filer.stat(&path).await.unwrap().size, data.len() as u64);
            let refused = |result: Result<(), Error>| match result {
                Err(Error::ServerSideEncrypted { kind: k, .. }) => assert_eq!(k, kind, "{path}"),
                other => panic!("{path}: expected {kind} refused, got {other:?}"),
            };
            refused(filer.read(&path).await.map(drop));
            refused(filer.read_range(&path, 0..10).await.map(drop));
            refused(filer.read_stream(&path).await.map(drop));
        }
        assert_eq!(needle_reads(&filer), 0, "nothing of them was read");
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
        let entry = lookup(filer, &written.path).await;
        let data = entry.chunks.iter().filter(|c| !c.is_chunk_manifest);
        volumes.extend(data.map(|c| needle::VolumeId(c.fid.as_ref().unwrap().volume_id)));
    }
    volumes.into_iter().collect()
}

/// `weed filer -encryptVolumeData`: every chunk it writes (the chunk manifest too) is
/// AES-256-GCM under a key of its own, gzipped first when compressible; the SDK
/// verifies the stored needle, then decrypts (and gunzips) it.
#[test]
fn files_of_an_encrypting_filer_read_back_byte_exact() {
    let flags: Vec<&str> = FILER_FLAGS.iter().copied().chain(["-encryptVolumeData"]).collect();
    let cluster = Cluster::start(&flags);
    let rt = common::runtime();
    let filer = FilerClient::builder(cluster.filer.addr()).build().unwrap();
    let mut files = write_files(&cluster.filer, &cluster.scratch, "/secret", "weed");
    rt.block_on(async {
        assert!(filer.configuration().await.unwrap().cipher, "the filer says it encrypts");
        files.push(write_manifested(&filer, &cluster.master.addr(), "/secret", "ours").await);
        for written in &files {
            check(&filer, written, &ranges(written, 8)).await;
            let info = filer.stat(&written.path).await.unwrap();
            let chunked = !info.inline && !written.data.is_empty();
            if written.path.ends_with("manifested.bin") {
                // Our 10001 chunks are plain; the manifest the filer made of them is not.
                assert!(info.encrypted, "{info:?}");
                continue;
            }
            assert_eq!(info.encrypted, chunked, "{info:?}");
            if !chunked {
                continue;
            }
            // What the volume server holds is not the file's bytes.
            let entry = lookup(&filer, &written.path).await;
            let chunk = &entry.chunks[0];
            assert_eq!(chunk.cipher_key.len(), 32);
            let fid = chunk.fid.as_ref().unwrap();
            let fid = needle::FileId {
                volume: needle::VolumeId(fid.volume_id),
                key: needle::NeedleId(fid.file_key),
                cookie: needle::Cookie(fid.cookie),
                delta: None,
            };
            let stored = filer.chunk_client().read_stored(&fid).await.unwrap();
            let first = &written.data[..written.data.len().min(64)];
            assert!(
                !stored.bytes.windows(first.len()).any(|w| w == first),
                "{}: stored in the clear",
                written.path
            );
            if written.path.ends_with(".txt") {
                assert!(chunk.is_compressed, "text is gzipped before encryption: {chunk:?}");
            }
        }
    });
    drop((filer, rt));
    cluster.stop();
}

/// The entry at `path`, as the filer stores it.
async fn lookup(filer: &FilerClient, path: &str) -> client_sdk::filer::pb::Entry {
    let (directory, name) = path.rsplit_once('/').unwrap();
    let request = client_sdk::filer::pb::LookupDirectoryEntryRequest {
        directory: directory.to_owned(),
        name: name.to_owned(),
    };
    filer.grpc().lookup_directory_entry(request).await.unwrap().into_inner().entry.unwrap()
}

/// Reads a stream to its end: the bytes, or the first error (and the bytes before it).
async fn drain(mut stream: client_sdk::FileStream) -> (Vec<u8>, Option<Error>) {
    let mut data = Vec::new();
    while let Some(piece) = stream.next_chunk().await {
        match piece {
            Ok(bytes) => data.extend_from_slice(&bytes),
            Err(e) => return (data, Some(e)),
        }
    }
    (data, None)
}

/// Servers going away mid-read. Reads go one chunk at a time (concurrency 1), so what
/// happens between two pieces happens before the next chunk is fetched.
/// - The filer stops: a client that must ask it where each chunk is (no location cache)
///   fails with a clear [`Error::Filer`]; one with the locations cached reads on; once
///   the filer is back, a new read works (the connection is remade).
/// - The server a replicated file is being read from dies: the read goes on at the
///   other replica and returns every byte.
/// - The only server holding a file dies: the read fails with
///   [`Error::TransportUnavailable`] (or [`Error::VolumeNotFound`] for a volume the
///   cluster forgot before the client looked it up), bounded by the request timeout.
#[test]
fn servers_going_away_mid_read_mean_fallback_or_a_clear_error() {
    let cluster = Cluster::start(FILER_FLAGS);
    let rt = common::runtime();
    let url = format!("{}/vol/grow?collection=both&count=1&replication=001", cluster.master.url());
    ureq::get(&url).call().unwrap();
    let data = testbeds::pseudo_random(6 * MIB, 40);
    let put = |path: &str, query: &str| {
        cluster.filer.put(path, &format!("maxMB=1&{query}"), &data, "application/octet-stream").unwrap()
    };
    put("/r/replicated.bin", "collection=both&replication=001");
    put("/r/on-ours.bin", "collection=ours");
    put("/r/on-weed.bin", "collection=weed");
    let filer_addr = cluster.filer.addr();
    let client = |cache: Duration| {
        FilerClient::builder(filer_addr.clone())
            .concurrency(1)
            .rpc_timeout(Duration::from_secs(3))
            .chunk_reads(|b| b.location_cache_ttl(cache).request_timeout(Duration::from_secs(5)))
            .build()
            .unwrap()
    };
    let (uncached, cached) = (client(Duration::ZERO), client(Duration::from_secs(600)));
    let mut filer = cluster.filer;
    rt.block_on(async {
        // Both clients have started reading (the cached one has every location: the
        // file's chunks are in the two volumes of its collection, read once before).
        assert!(cached.read("/r/on-ours.bin").await.unwrap() == data);
        let mut streams = Vec::new();
        for client in [&uncached, &cached] {
            let mut stream = client.read_stream("/r/on-ours.bin").await.unwrap();
            let first = stream.next_chunk().await.unwrap().unwrap();
            assert!(first[..] == data[..first.len()]);
            streams.push((stream, first.len()));
        }
        tokio::task::block_in_place(|| filer.halt());
        let mut outcomes = Vec::new();
        for (stream, done) in streams {
            let (rest, error) =
                tokio::time::timeout(Duration::from_secs(60), drain(stream)).await.expect("bounded");
            assert!(rest[..] == data[done..done + rest.len()], "no wrong byte before an error");
            outcomes.push((done + rest.len(), error));
        }
        match &outcomes[0] {
            (_, Some(Error::Filer { message, .. })) => assert!(message.contains("Unavailable"), "{message}"),
            other => panic!("without cached locations, a stopped filer is a filer error: {other:?}"),
        }
        assert!(matches!(outcomes[1], (n, None) if n == data.len()), "cached: {:?}", outcomes[1]);
        tokio::task::block_in_place(|| filer.resume()).unwrap();
        assert!(uncached.read("/r/on-ours.bin").await.unwrap() == data, "after the filer is back");
    });

    // The replicated file: kill the server the client reads it from first.
    let reader = client(Duration::from_secs(600));
    let (mut ours, mut weed) = (Some(cluster.ours), Some(cluster.weed));
    let kill = |addr: &str, ours: &mut Option<OurVolumeServer>, weed: &mut Option<WeedVolume>| {
        if ours.as_ref().is_some_and(|o| o.addr() == addr) {
            ours.take().unwrap().kill();
        } else if weed.as_ref().is_some_and(|w| w.addr() == addr) {
            weed.take().unwrap().kill();
        } else {
            panic!("{addr} is none of the running volume servers");
        }
    };
    let (stream, done, first) = rt.block_on(async {
        let mut stream = reader.read_stream("/r/replicated.bin").await.unwrap();
        let piece = stream.next_chunk().await.unwrap().unwrap();
        let entry = lookup(&reader, "/r/replicated.bin").await;
        let vid = needle::VolumeId(entry.chunks[0].fid.as_ref().unwrap().volume_id);
        let holders = reader.chunk_client().lookup(vid).await.unwrap();
        assert_eq!(holders.len(), 2, "replicated on both servers: {holders:?}");
        (stream, piece.len(), holders[0].clone())
    });
    kill(&first, &mut ours, &mut weed);
    rt.block_on(async {
        let (rest, error) =
            tokio::time::timeout(Duration::from_secs(60), drain(stream)).await.expect("bounded");
        assert!(error.is_none(), "the other replica serves the rest: {error:?}");
        assert!(rest[..] == data[done..], "every byte of the replicated file");
    });

    // The survivor dies in the middle of a file only it holds.
    let (only_there, survivor) = match (&ours, &weed) {
        (Some(o), None) => ("/r/on-ours.bin", o.addr().to_owned()),
        (None, Some(w)) => ("/r/on-weed.bin", w.addr()),
        _ => unreachable!("one server was killed"),
    };
    let stream = rt.block_on(async {
        let mut stream = reader.read_stream(only_there).await.unwrap();
        stream.next_chunk().await.unwrap().unwrap();
        stream
    });
    kill(&survivor, &mut ours, &mut weed);
    rt.block_on(async {
        let (_, error) = tokio::time::timeout(Duration::from_secs(60), drain(stream)).await.expect("bounded");
        // Refused at its cached address, or, for a volume not looked up yet, unknown to
        // the cluster by now.
        let clear = matches!(error, Some(Error::TransportUnavailable { .. } | Error::VolumeNotFound { .. }));
        assert!(clear, "{only_there}: {error:?}");
    });
    drop((reader, uncached, cached, rt));
    filer.stop();
    cluster.master.stop();
}

/// A cluster whose gRPC runs mutual TLS (weed's `security.toml` `[grpc]` sections): the
/// filer client dials with `[grpc.client]`'s certificate, as weed's own tools do, and
/// reads; without a certificate, or with one of another CA, the filer is not reached
/// and the error says so.
#[test]
fn a_filer_with_grpc_mutual_tls_is_read_with_the_clusters_client_certificate() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let config = dir.join("config");
    let pki = testbeds::pki::Pki::new(&config).unwrap();
    pki.ca("cluster").unwrap();
    pki.ca("foreign").unwrap();
    for cn in ["master", "volume", "filer", "client"] {
        pki.cert("cluster", cn).unwrap();
    }
    pki.cert("foreign", "stranger").unwrap();
    let p = |name: &str| config.join(name).display().to_string();
    let mut toml = format!("[grpc]\nca = \"{}\"\n", p("cluster-ca.crt"));
    for (section, cn) in
        [("master", "master"), ("volume", "volume"), ("filer", "filer"), ("client", "client")]
    {
        toml += &format!(
            "[grpc.{section}]\ncert = \"{}\"\nkey = \"{}\"\n",
            p(&format!("{cn}.crt")),
            p(&format!("{cn}.key"))
        );
    }
    let security_toml = config.join("security.toml");
    std::fs::write(&security_toml, toml).unwrap();

    let master = WeedMaster::start_in(dir, 64, Some(&config)).unwrap_or_else(|e| panic!("{e}"));
    let volume =
        WeedVolume::start_in(&dir.join("volume"), &master, Some(&config)).unwrap_or_else(|e| panic!("{e}"));
    let filer = WeedFiler::start_in(&dir.join("filer"), &master, Some(&config), FILER_FLAGS)
        .unwrap_or_else(|e| panic!("{e}"));
    let data = testbeds::pseudo_random(2 * MIB + 5, 50);
    filer.put("/tls/file.bin", "maxMB=1", &data, "application/octet-stream").unwrap();

    let rt = common::runtime();
    rt.block_on(async {
        let trusted = FilerClient::builder(filer.addr())
            .with_weed_security_toml(&security_toml)
            .unwrap()
            .build()
            .unwrap();
        assert!(trusted.read("/tls/file.bin").await.unwrap() == data);

        let stranger = client_sdk::grpc_tls::Dialer::mutual_tls(&client_sdk::grpc_tls::ClientTlsFiles {
            ca: config.join("cluster-ca.crt"),
            cert: config.join("stranger.crt"),
            key: config.join("stranger.key"),
        })
        .unwrap();
        let refused = [
            (
                "plaintext",
                FilerClient::builder(filer.addr()).rpc_timeout(Duration::from_secs(5)).build().unwrap(),
            ),
            (
                "another CA's certificate",
                FilerClient::builder(filer.addr()).grpc_dialer(stranger).build().unwrap(),
            ),
        ];
        for (how, client) in refused {
            match client.stat("/tls/file.bin").await {
                Err(Error::Filer { message, .. }) => {
                    // The handshake fails (Unavailable), or the server cuts the
                    // plaintext HTTP/2 connection (a transport error).
                    assert!(
                        message.contains("Unavailable") || message.contains("transport error"),
                        "{how}: {message}"
                    )
                }
                other => panic!("{how}: expected a filer error, got {other:?}"),
            }
        }
    });
    drop(rt);
    filer.stop();
    volume.stop();
    master.stop();
}
