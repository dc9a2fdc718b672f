//! The files the filer tests write through a live `weed filer` (its HTTP API, `weed
//! filer.copy`, and AppendToEntry for a file long enough that the filer writes a chunk
//! manifest), each with the bytes it must read back as, and the checks every read kind
//! (whole, streamed, ranges at and across chunk boundaries) must pass against them. The
//! host tests (`filer_reads.rs`) and the guest's (`rdma_filer.rs`) share them.

#![allow(dead_code)] // each test target uses a different part

use client_sdk::{AssignOptions, Client, FilerClient, UploadOptions};
use proptest::strategy::{Strategy, ValueTree};
use sha2::{Digest, Sha256};
use std::path::Path;
use testbeds::pseudo_random;
use testbeds::weed::WeedMaster;
use testbeds::weed_filer::WeedFiler;

pub const MIB: usize = 1 << 20;

/// Below this size the test filers keep a file in its entry (`-saveToFilerLimit`).
pub const INLINE_LIMIT: usize = 1024;

/// Flags every test filer runs with.
pub const FILER_FLAGS: &[&str] = &["-saveToFilerLimit=1024"];

/// Chunks weed folds into one chunk manifest (its `ManifestBatch`).
const MANIFEST_BATCH: usize = 10_000;

/// A file written through the filer, and what it must read back as.
pub struct Written {
    pub path: String,
    pub data: Vec<u8>,
    /// File offsets where one chunk ends and another starts (or a hole does).
    pub boundaries: Vec<u64>,
    /// How it was written, for messages.
    pub how: &'static str,
}

impl Written {
    fn new(path: String, data: Vec<u8>, boundaries: Vec<u64>, how: &'static str) -> Self {
        Self { path, data, boundaries, how }
    }
}

/// Grows `count` volumes of `collection` on the volume server `node` (`host:port`), so
/// writes to that collection land there and nowhere else: the master assigns from a
/// collection's writable volumes and grows more only when they fill up, which the
/// tests' few MiB never make them do.
pub fn pin_collection(master: &WeedMaster, collection: &str, node: &str, count: u32) {
    let url = format!("{}/vol/grow?collection={collection}&count={count}&dataNode={node}", master.url());
    let reply = ureq::get(&url).call().unwrap_or_else(|e| panic!("{url}: {e}")).into_string().unwrap();
    assert!(reply.contains(&format!("\"count\":{count}")), "{url}: {reply}");
}

/// `data` with each write `(offset, bytes)` applied in turn, past the end growing the
/// file (a gap reads as zeros).
fn overwritten(mut data: Vec<u8>, writes: &[(usize, &[u8])]) -> Vec<u8> {
    for (offset, bytes) in writes {
        let end = offset + bytes.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[*offset..end].copy_from_slice(bytes);
    }
    data
}

/// Text that gzips well (so the filer stores its chunks compressed).
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["needle", "volume", "filer", "chunk", "manifest", "rdma", "verbs", "cookie", "crc"];
    let mut out = Vec::with_capacity(len + 16);
    let mut n = seed;
    while out.len() < len {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(n >> 33) as usize % words.len()].as_bytes());
        out.push(if n % 11 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

fn mib_boundaries(len: usize) -> Vec<u64> {
    (1..len.div_ceil(MIB)).map(|i| (i * MIB) as u64).collect()
}

/// Writes the file kinds into `dir` on `filer`, their chunks in `collection`: through
/// the HTTP API (`PUT`, 1 MiB chunks): empty, inline, one chunk, many chunks, ranges
/// written over (chunks overlapping, a hole), gzippable text; with `weed filer.copy
/// -maxMB=1`: a tiny file, many chunks, text. `scratch` holds the local copies.
pub fn write_files(filer: &WeedFiler, scratch: &Path, dir: &str, collection: &str) -> Vec<Written> {
    let put = |name: &str, query: &str, data: &[u8], content_type: &str| {
        put_file(filer, &format!("{dir}/{name}"), collection, query, data, content_type)
    };
    let octets = "application/octet-stream";
    let mut written = Vec::new();

    let path = put("empty.bin", "", b"", octets);
    written.push(Written::new(path, Vec::new(), vec![], "HTTP, empty"));
    let small = pseudo_random(INLINE_LIMIT / 2, 1);
    let path = put("inline.bin", "", &small, octets);
    written.push(Written::new(path, small, vec![], "HTTP, inline"));
    let one = pseudo_random(300_000, 2);
    let path = put("one-chunk.bin", "", &one, octets);
    written.push(Written::new(path, one, vec![], "HTTP, one chunk"));
    let many = pseudo_random(3 * MIB + 12_345, 3);
    let path = put("many-chunks.bin", "", &many, octets);
    written.push(Written::new(path, many.clone(), mib_boundaries(many.len()), "HTTP, 1 MiB chunks"));

    // Written over: the first write's 1 MiB chunks, then newer chunks over parts of
    // them (across the 1 MiB boundary; over the end, growing the file), then one past a
    // gap (a hole).
    let base = pseudo_random(3 * MIB, 4);
    let (a, b, c) = (pseudo_random(700_000, 5), pseudo_random(MIB + 100, 6), pseudo_random(10_000, 7));
    let writes: [(usize, &[u8]); 3] = [(1_000_000, &a), (2_500_000, &b), (4_000_000, &c)];
    let path = put("overwritten.bin", "", &base, octets);
    for (offset, bytes) in writes {
        put("overwritten.bin", &format!("&offset={offset}"), bytes, octets);
    }
    let data = overwritten(base, &writes);
    let mut boundaries = mib_boundaries(3 * MIB);
    for (offset, bytes) in writes {
        boundaries.extend([offset as u64, (offset + bytes.len()) as u64]);
    }
    written.push(Written::new(path, data, boundaries, "HTTP, overlapping chunks and a hole"));

    let log = text(2 * MIB + 777, 8);
    let path = put("notes.txt", "", &log, "text/plain");
    written.push(Written::new(path, log.clone(), mib_boundaries(log.len()), "HTTP, gzip-stored text"));

    // filer.copy: the file's name is the local one.
    let copy = |name: &str, data: &[u8]| copy_file(filer, scratch, dir, collection, name, data);
    let tiny = b"tiny!\n".to_vec();
    written.push(Written::new(
        copy("tiny.bin", &tiny),
        tiny,
        vec![],
        "filer.copy, tiny (a chunk, not inline)",
    ));
    let big = pseudo_random(5 * MIB + 4321, 9);
    written.push(Written::new(
        copy("copied.bin", &big),
        big.clone(),
        mib_boundaries(big.len()),
        "filer.copy, 1 MiB chunks",
    ));
    let words = text(MIB + MIB / 2, 10);
    written.push(Written::new(
        copy("words.txt", &words),
        words.clone(),
        mib_boundaries(words.len()),
        "filer.copy, gzip text",
    ));
    written
}

/// PUTs `data` at `path` through the filer's HTTP API in 1 MiB chunks (`query` adds to
/// the query string, e.g. `&offset=N`); the path.
fn put_file(
    filer: &WeedFiler,
    path: &str,
    collection: &str,
    query: &str,
    data: &[u8],
    content_type: &str,
) -> String {
    let query = format!("collection={collection}&maxMB=1{query}");
    filer.put(path, &query, data, content_type).unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    path.to_owned()
}

/// `weed filer.copy -maxMB=1` of `data`, saved as `scratch/name`, into `dir`; the path
/// (the file's name is the local one).
fn copy_file(
    filer: &WeedFiler,
    scratch: &Path,
    dir: &str,
    collection: &str,
    name: &str,
    data: &[u8],
) -> String {
    let local = scratch.join(name);
    std::fs::write(&local, data).unwrap();
    let extra = ["-maxMB=1".to_owned(), format!("-collection={collection}")];
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    filer.copy(&[&local], dir, &extra, None).unwrap_or_else(|e| panic!("filer.copy {name}: {e}"));
    format!("{dir}/{name}")
}

/// The kinds of [`write_files`] that matter for a transport, kept small for the
/// emulated RDMA guest: inline, one chunk, three chunks, gzip-stored text (HTTP API),
/// and a tiny file and gzip text through `weed filer.copy`.
pub fn write_small_files(filer: &WeedFiler, scratch: &Path, dir: &str, collection: &str) -> Vec<Written> {
    let octets = "application/octet-stream";
    let (small, one, three) =
        (pseudo_random(INLINE_LIMIT / 2, 21), pseudo_random(200_000, 22), pseudo_random(2 * MIB + 1234, 23));
    let log = text(MIB + 777, 24);
    let (tiny, words) = (b"tiny!\n".to_vec(), text(MIB + 100, 25));
    let put = |name: &str, data: &[u8], content_type: &str| {
        put_file(filer, &format!("{dir}/{name}"), collection, "", data, content_type)
    };
    vec![
        Written::new(put("inline.bin", &small, octets), small, vec![], "HTTP, inline"),
        Written::new(put("one-chunk.bin", &one, octets), one, vec![], "HTTP, one chunk"),
        Written::new(
            put("three-chunks.bin", &three, octets),
            three.clone(),
            mib_boundaries(three.len()),
            "HTTP, 1 MiB chunks",
        ),
        Written::new(
            put("notes.txt", &log, "text/plain"),
            log.clone(),
            mib_boundaries(log.len()),
            "HTTP, gzip-stored text",
        ),
        Written::new(
            copy_file(filer, scratch, dir, collection, "tiny.bin", &tiny),
            tiny,
            vec![],
            "filer.copy, tiny",
        ),
        Written::new(
            copy_file(filer, scratch, dir, collection, "words.txt", &words),
            words.clone(),
            mib_boundaries(words.len()),
            "filer.copy, gzip text",
        ),
    ]
}

/// A file of [`MANIFEST_BATCH`] + 1 chunks, appended with the filer's AppendToEntry: the
/// filer folds the first 10000 into a chunk manifest it writes itself (weed's
/// `MaybeManifestize`), keeping the last one beside it. The chunks reference 101
/// needles of distinct sizes (uploaded to `collection` through the master), each many
/// times, so the file is ~1.5 MB and reading it needs 101 needle reads, not 10001.
pub async fn write_manifested(filer: &FilerClient, master: &str, dir: &str, collection: &str) -> Written {
    use client_sdk::filer::pb;
    let uploader = Client::builder(master).build().unwrap();
    let options = UploadOptions {
        assign: AssignOptions { collection: Some(collection.into()), ..Default::default() },
        ..Default::default()
    };
    let mut needles = Vec::new();
    for i in 0..101u64 {
        let data = pseudo_random(100 + i as usize, 1000 + i);
        let stored = uploader.upload(data.clone(), &options).await.expect("upload a needle");
        needles.push((stored.fid, data));
    }
    let mut chunks = Vec::new();
    let mut file = Vec::new();
    for k in 0..=MANIFEST_BATCH {
        let (fid, data) = &needles[k % needles.len()];
        chunks.push(pb::FileChunk {
            fid: Some(pb::FileId { volume_id: fid.volume.0, file_key: fid.key.0, cookie: fid.cookie.0 }),
            size: data.len() as u64,
            modified_ts_ns: 1_700_000_000_000_000_000 + k as i64,
            ..Default::default()
        });
        file.extend_from_slice(data);
    }
    let name = "manifested.bin";
    let request = pb::AppendToEntryRequest { directory: dir.into(), entry_name: name.into(), chunks };
    filer.grpc().append_to_entry(request).await.expect("AppendToEntry");
    let path = format!("{dir}/{name}");
    let info = filer.stat(&path).await.unwrap();
    assert_eq!(info.chunks, 2, "the filer folded 10000 chunks into a manifest and kept one: {info:?}");
    let mut boundaries = Vec::new();
    let mut at = 0u64;
    for k in 0..=MANIFEST_BATCH {
        at += needles[k % needles.len()].1.len() as u64;
        if k % 2499 == 0 || k + 2 >= MANIFEST_BATCH {
            boundaries.push(at);
        }
    }
    boundaries.pop();
    Written::new(path, file, boundaries, "AppendToEntry, 10001 chunks: the filer wrote a chunk manifest")
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Ranges at and across each boundary, and `random` more drawn by proptest from a fixed
/// seed (the same on every run), all within the file.
pub fn ranges(written: &Written, random: usize) -> Vec<(u64, u64)> {
    let len = written.data.len() as u64;
    let mut ranges = vec![(0, len), (0, 0), (len, len), (0, len.min(1)), (len.saturating_sub(1), len)];
    for &b in &written.boundaries {
        for (before, after) in [(1, 1), (3, 0), (0, 5), (100, 100), (4096, 4096)] {
            ranges.push((b.saturating_sub(before), (b + after).min(len)));
        }
    }
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (0..=len).prop_flat_map(move |start| (proptest::strategy::Just(start), start..=len));
    ranges.extend((0..random).map(|_| strategy.new_tree(&mut runner).expect("a range").current()));
    ranges
}

/// A few ranges for a slow transport: the first and the last byte, and two bytes across
/// each boundary.
pub fn crossings(written: &Written) -> Vec<(u64, u64)> {
    let len = written.data.len() as u64;
    let mut ranges = vec![(0, len.min(1)), (len.saturating_sub(1), len)];
    ranges.extend(written.boundaries.iter().map(|&b| (b - 1, (b + 1).min(len))));
    ranges
}

/// Reads `written` every way through `filer` and checks the bytes: whole (sha256 of what
/// was uploaded), streamed, and `ranges` (see [`ranges`]) against the reference copy.
/// How the stream's needles were served.
pub async fn check(filer: &FilerClient, written: &Written, ranges: &[(u64, u64)]) -> client_sdk::ChunkReport {
    check_unstreamed(filer, written, ranges).await;
    check_stream(filer, written).await
}

/// [`check`] without the stream: stat, the whole file and `ranges`.
pub async fn check_unstreamed(filer: &FilerClient, written: &Written, ranges: &[(u64, u64)]) {
    let (path, how) = (&written.path, written.how);
    let info = filer.stat(path).await.unwrap_or_else(|e| panic!("stat {path} ({how}): {e}"));
    assert_eq!(info.size, written.data.len() as u64, "{path} ({how}): size {info:?}");
    assert!(!info.is_directory);
    assert_eq!(info.inline, how.ends_with(", inline"), "{path} ({how}): {info:?}");

    let whole = filer.read(path).await.unwrap_or_else(|e| panic!("read {path} ({how}): {e}"));
    assert!(sha256(&whole) == sha256(&written.data), "{path} ({how}): read() differs from the upload");

    for &(start, end) in ranges {
        let got = filer
            .read_range(path, start..end)
            .await
            .unwrap_or_else(|e| panic!("read_range {path} {start}..{end} ({how}): {e}"));
        assert!(
            got[..] == written.data[start as usize..end as usize],
            "{path} ({how}): range {start}..{end} differs from the reference"
        );
    }
    let past = filer.read_range(path, 0..written.data.len() as u64 + 1).await;
    assert!(matches!(past, Err(client_sdk::Error::RangeNotSatisfiable { .. })), "{path}: {past:?}");
}

/// Streams `written` through `filer` and checks the bytes; how the needles were served.
pub async fn check_stream(filer: &FilerClient, written: &Written) -> client_sdk::ChunkReport {
    let (path, how) = (&written.path, written.how);
    let mut stream =
        filer.read_stream(path).await.unwrap_or_else(|e| panic!("read_stream {path} ({how}): {e}"));
    let mut hasher = Sha256::new();
    let mut streamed = 0u64;
    while let Some(piece) = stream.next_chunk().await {
        let piece = piece.unwrap_or_else(|e| panic!("stream {path} ({how}): {e}"));
        streamed += piece.len() as u64;
        hasher.update(&piece);
    }
    assert_eq!(streamed, written.data.len() as u64, "{path} ({how}): streamed length");
    assert!(
        <[u8; 32]>::from(hasher.finalize()) == sha256(&written.data),
        "{path} ({how}): the stream differs"
    );
    assert_eq!(stream.report().inline, stream.info().inline, "{path}: {:?}", stream.report());
    stream.report().clone()
}
