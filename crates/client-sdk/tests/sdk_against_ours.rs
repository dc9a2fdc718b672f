//! The SDK against our real standalone volume server (its embedded master API included):
//! verified ranged reads against reference copies (proptest), streaming reads in memory
//! and spilled to a file, the location cache, and a test for each typed error.

mod common;

use client_sdk::{Client, Error, FileId, UploadOptions};
use common::{client_over_serving_fake_rdma, our_server, runtime};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use testbeds::canned::serve_once;
use testbeds::pseudo_random;

async fn drain(client: &Client, fid: &FileId) -> Vec<u8> {
    let mut stream = client.download_stream(fid).await.unwrap();
    let mut all = Vec::new();
    while let Some(chunk) = stream.next_chunk().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    all
}

#[test]
fn random_ranges_match_reference_copies() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let rt = runtime();
    // Over HTTP (streamed through the CRC, keeping the range) and over a stand-in RDMA
    // engine (whole needle, sliced): both must agree with the reference.
    let http = Client::builder(server.addr()).build().unwrap();
    let rdma = client_over_serving_fake_rdma(server.addr());
    let blob = pseudo_random(1_500_000, 11);
    let text = "all work and no play makes a dull boy\n".repeat(20_000).into_bytes();
    let (blob_fid, text_fid) = rt.block_on(async {
        let blob_fid = http.upload(blob.clone(), &UploadOptions::named("blob.bin")).await.unwrap().fid;
        let text_options = UploadOptions { mime: Some("text/plain".into()), ..UploadOptions::named("t.txt") };
        let text_fid = http.upload(text.clone(), &text_options).await.unwrap().fid;
        assert!(http.read_stored(&text_fid).await.unwrap().compressed, "text is stored gzip");
        (blob_fid, text_fid)
    });

    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(40));
    let strategy = (any::<bool>(), any::<bool>(), 0u64..1_600_000, 0u64..200_000);
    runner
        .run(&strategy, |(use_text, over_rdma, start, len)| {
            let (fid, reference) = if use_text { (&text_fid, &text) } else { (&blob_fid, &blob) };
            let client = if over_rdma { &rdma } else { &http };
            let start = start % (reference.len() as u64 + 10);
            let end = start + len;
            let got = rt.block_on(client.read_range(fid, start..end));
            if end <= reference.len() as u64 {
                prop_assert_eq!(&got.unwrap()[..], &reference[start as usize..end as usize]);
            } else {
                let is_range_error = matches!(got, Err(Error::RangeNotSatisfiable { .. }));
                prop_assert!(is_range_error, "{}..{}: {:?}", start, end, got);
            }
            Ok(())
        })
        .unwrap();
    // Backwards ranges are refused before any transfer.
    let (start, end) = (9, 3);
    let err = rt.block_on(http.read_range(&blob_fid, start..end)).unwrap_err();
    assert!(matches!(err, Error::RangeNotSatisfiable { start: 9, end: 3, .. }), "{err}");
    drop((http, rdma));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_release_verified_chunks_from_memory_or_a_file() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let in_memory = Client::builder(server.addr()).build().unwrap();
    let spilled = Client::builder(server.addr()).stream_memory_limit(1000).build().unwrap();
    let blob = pseudo_random(3 << 20, 12);
    let text = "a dull boy\n".repeat(100_000).into_bytes();
    let blob_fid = in_memory.upload(blob.clone(), &UploadOptions::default()).await.unwrap().fid;
    let text_options = UploadOptions { mime: Some("text/plain".into()), ..UploadOptions::default() };
    let text_fid = in_memory.upload(text.clone(), &text_options).await.unwrap().fid;
    let empty_fid = in_memory.upload(Vec::new(), &UploadOptions::default()).await.unwrap().fid;
    for client in [&in_memory, &spilled] {
        assert_eq!(drain(client, &blob_fid).await, blob);
        assert_eq!(drain(client, &text_fid).await, text, "gzip-stored text streams plain");
        assert!(drain(client, &empty_fid).await.is_empty());
    }
    // And as a futures Stream.
    use futures_util::StreamExt;
    let chunks: Vec<_> = spilled.download_stream(&blob_fid).await.unwrap().into_stream().collect().await;
    assert!(chunks.len() > 1, "a 3 MiB needle comes in several chunks");
    assert_eq!(chunks.into_iter().map(Result::unwrap).collect::<Vec<_>>().concat(), blob);
    drop((in_memory, spilled));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locations_are_cached_until_they_expire() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let cached = Client::builder(server.addr()).build().unwrap();
    let expiring = Client::builder(server.addr()).location_cache_ttl(Duration::ZERO).build().unwrap();
    let single = Client::builder_for_volume_server(server.addr()).build().unwrap();
    let fid = cached.upload(b"x".to_vec(), &UploadOptions::default()).await.unwrap().fid;
    for client in [&cached, &expiring, &single] {
        for _ in 0..3 {
            assert_eq!(client.download(&fid).await.unwrap(), &b"x"[..]);
        }
    }
    assert_eq!(cached.metrics().location_lookups, 1);
    assert_eq!(expiring.metrics().location_lookups, 3);
    assert_eq!(single.metrics().location_lookups, 0, "single-server mode never looks up");
    assert_eq!(cached.lookup(fid.volume).await.unwrap(), [server.addr()]);
    // "Not found" at a cached location asks the master again once (the volume may have
    // moved); the same answer means the file really is missing.
    let missing = FileId { cookie: needle::Cookie(fid.cookie.0 ^ 1), ..fid };
    assert!(matches!(cached.download(&missing).await, Err(Error::NotFound { .. })));
    assert_eq!((cached.metrics().location_refreshes, cached.metrics().location_lookups), (1, 2));
    drop((cached, expiring, single));
    server.stop();
}

/// Flips a byte in the middle of `needle_bytes`' copy inside a `.dat` under `dir`.
fn corrupt_on_disk(dir: &std::path::Path, needle_bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "dat") {
            let dat = std::fs::read(&path).unwrap();
            if let Some(at) = dat.windows(64).position(|w| w == &needle_bytes[..64]) {
                let at = at + needle_bytes.len() / 2;
                let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                file.write_all_at(&[dat[at] ^ 0xff], at as u64).unwrap();
                return;
            }
        }
    }
    panic!("needle bytes not found in any .dat under {}", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_has_its_typed_error() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    let server = our_server(&dir);
    let client = Client::builder(server.addr()).request_timeout(Duration::from_secs(5)).build().unwrap();

    let err = Error::from("3,zz".parse::<FileId>().unwrap_err());
    assert!(matches!(err, Error::BadFileId(_)), "{err}");

    let blob = pseudo_random(200_000, 13);
    let stored = client.upload(blob.clone(), &UploadOptions::named("b")).await.unwrap();
    let stat = client.stat(&stored.fid).await.unwrap();
    assert_eq!((stat.stored_size, stat.compressed), (blob.len() as u64, false));
    assert_eq!(stat.etag.as_deref(), Some(stored.etag.trim_matches('"')));
    assert_eq!(stat.server, server.addr());

    let err = client.download(&FileId { volume: needle::VolumeId(999), ..stored.fid }).await.unwrap_err();
    assert!(matches!(err, Error::VolumeNotFound { volume: 999, .. }), "{err}");

    let bad_ttl = UploadOptions { ttl: Some("bogus".into()), ..Default::default() };
    let err = client.upload(b"x".to_vec(), &bad_ttl).await.unwrap_err();
    assert!(matches!(err, Error::Master { .. } | Error::Server { .. }), "{err}");

    // A byte corrupted on disk: the server refuses it (500) or we catch it; never data.
    corrupt_on_disk(&dir, &blob);
    for result in [client.download(&stored.fid).await, client.read_range(&stored.fid, 0..10).await] {
        let err = result.unwrap_err();
        assert!(
            matches!(err, Error::Server { status: 500, .. } | Error::ChecksumMismatch { .. }),
            "corrupt needle: {err}"
        );
    }

    // Bytes corrupted in flight (a canned answer: no real server produces it on demand;
    // a corrupt .dat is caught by the server itself, above): "hellp" with the ETag of "hello".
    let lying = b"HTTP/1.1 200 OK\r\nETag: \"9a71bb4c\"\r\nContent-Length: 5\r\n\r\nhellp".to_vec();
    let fake = Client::builder_for_volume_server(serve_once(lying)).build().unwrap();
    let err = fake.download(&stored.fid).await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");

    let addr = server.addr().to_owned();
    drop(client);
    server.stop();
    let client =
        Client::builder_for_volume_server(addr).request_timeout(Duration::from_secs(2)).build().unwrap();
    let err = client.download(&stored.fid).await.unwrap_err();
    assert!(matches!(err, Error::TransportUnavailable { .. }), "dead server: {err}");
    let err = client.delete(&stored.fid).await.unwrap_err();
    assert!(matches!(err, Error::TransportUnavailable { .. }), "dead server: {err}");
}

/// Many readers at once on mixed sizes and read kinds, through one shared client (the
/// tasks are spawned, so the client and its futures are `Send`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_on_mixed_sizes_all_get_their_bytes() {
    let root = tempfile::tempdir().unwrap();
    let server = our_server(&root.path().join("data"));
    let client = Client::builder(server.addr()).stream_memory_limit(64 << 10).build().unwrap();
    let mut stored = Vec::new();
    for (i, size) in [0usize, 1, 4 << 10, 64 << 10, 300_000, 1 << 20].into_iter().enumerate() {
        let blob = pseudo_random(size, 100 + i as u64);
        stored.push((client.upload(blob.clone(), &UploadOptions::default()).await.unwrap().fid, blob));
    }
    let stored = Arc::new(stored);
    let tasks: Vec<_> = (0..48)
        .map(|task| {
            let (client, stored) = (client.clone(), stored.clone());
            tokio::spawn(async move {
                let (fid, blob) = &stored[task % stored.len()];
                match task % 3 {
                    0 => assert_eq!(client.download(fid).await.unwrap(), &blob[..]),
                    1 => {
                        let (start, end) = (blob.len() as u64 / 3, blob.len() as u64 / 2);
                        let got = client.read_range(fid, start..end).await.unwrap();
                        assert_eq!(got, &blob[start as usize..end as usize]);
                    }
                    _ => assert_eq!(drain(&client, fid).await, *blob),
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(client.metrics().reads.get("http"), Some(&48));
    drop(client);
    server.stop();
}
