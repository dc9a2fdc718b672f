//! Chunk manifests (`weed upload -maxMB`) on our server in a real `weed master` cluster:
//! weed's tools and plain GETs get the file byte-exact, with weed's headers (compared
//! with a `weed volume` cluster); `cm=false`, ranges and DELETE behave as weed's; chunks
//! on another server are fetched; a corrupt chunk never yields a complete reply. And
//! manifests written by hand on a standalone server: order, `cm=true`/`cm=false`, a
//! manifest that does not parse, a chunk that cannot be had (GET and DELETE fail).
//!
//! Where the clusters hold both a weed volume and ours, each server has its own data
//! center and every chunk is assigned in the one chosen for it, so which server holds
//! what is decided by the test, never by the master's random placement.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use testbeds::weed::{UploadBody, WeedMaster, WeedVolume};

/// ~3.5 MiB: four chunks at `-maxMB=1`.
const FILE_SIZE: usize = 3 * (1 << 20) + (1 << 19) + 12_345;

/// The data centers of the weed volume and of ours in the mixed clusters.
const WEED_DC: &str = "dc-weed";
const OURS_DC: &str = "dc-ours";
/// Where the four chunks of a mixed manifest go: on both servers, with chunks of ours
/// after the first (read after the reply's headers are out).
const MIXED: [&str; 4] = [WEED_DC, OURS_DC, WEED_DC, OURS_DC];

/// `weed ARGS...`, which must succeed within 90 s; its output.
fn weed_ok(args: &[&str]) -> String {
    let (ok, text) = run_weed(args, "", Duration::from_secs(90));
    assert!(ok, "weed {args:?}: {text}");
    text
}

/// `weed upload -maxMB=1` of `data` as `big.bin`; the manifest's fid.
fn upload_chunked(master: &WeedMaster, dir: &Path, data: &[u8]) -> String {
    let file = dir.join("big.bin");
    std::fs::write(&file, data).unwrap();
    let out = weed_ok(&["upload", &format!("-master={}", master.addr()), "-maxMB=1", file.to_str().unwrap()]);
    let reply: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    reply[0]["fid"].as_str().expect("fid").to_owned()
}

fn holder(master: &WeedMaster, fid: &str) -> String {
    let vid = fid.split(',').next().unwrap();
    let reply = get(&master.addr(), &format!("/dir/lookup?volumeId={vid}"));
    reply.json()["locations"][0]["url"].as_str().expect("a location").to_owned()
}

/// The chunk fids a manifest lists (read with `cm=false`).
fn chunk_fids(server: &str, fid: &str) -> Vec<String> {
    let raw = get(server, &format!("/{fid}?cm=false"));
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("x-file-store"), None, "cm=false is the manifest as stored");
    let manifest = raw.json();
    let chunks = manifest["chunks"].as_array().unwrap_or_else(|| panic!("a manifest: {}", raw.text()));
    chunks.iter().map(|c| c["fid"].as_str().unwrap().to_owned()).collect()
}

/// What one cluster's server answered to the same requests on a chunked upload.
#[derive(Debug, PartialEq)]
struct Seen {
    get: (u16, Vec<(String, String)>),
    head: (u16, Vec<(String, String)>),
    range: (u16, Vec<(String, String)>),
    /// Status, Content-Length and the type without its (random) boundary.
    ranges: (u16, Option<String>, Option<String>),
    delete: (u16, String),
}

/// Headers whose value must match between the servers, and those that only must exist.
const SAME: [&str; 6] = [
    "content-length",
    "x-file-store",
    "accept-ranges",
    "content-type",
    "content-disposition",
    "content-range",
];
const PRESENT: [&str; 2] = ["etag", "last-modified"];

fn headers_of(reply: &Reply) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        SAME.iter().filter_map(|h| reply.header(h).map(|v| (h.to_string(), v.to_owned()))).collect();
    out.extend(PRESENT.iter().filter(|h| reply.header(h).is_some()).map(|h| (h.to_string(), "*".into())));
    out
}

/// Everything a client can see of a chunked upload on the cluster of `master`, checked
/// for content, and summarized for the comparison with the other cluster.
fn exercise(master: &WeedMaster, scratch: &Path, data: &[u8]) -> Seen {
    let fid = upload_chunked(master, scratch, data);
    let server = holder(master, &fid);

    let downloads = scratch.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    weed_ok(&[
        "download",
        &format!("-server={}", master.addr()),
        &format!("-dir={}", downloads.display()),
        &fid,
    ]);
    assert!(std::fs::read(downloads.join("big.bin")).unwrap() == data, "weed download of {fid} on {server}");

    let whole = get(&server, &format!("/{fid}"));
    assert_eq!(whole.status, 200);
    assert!(whole.body == data, "GET {fid}: {} bytes, byte-exact", whole.body.len());
    let head = request(&server, "HEAD", &format!("/{fid}"), &[], b"").unwrap();
    let (from, to) = (1_000_000usize, 2_200_000usize);
    let range_header = format!("bytes={from}-{}", to - 1);
    let range = request(&server, "GET", &format!("/{fid}"), &[("Range", &range_header)], b"").unwrap();
    assert_eq!(range.status, 206);
    assert!(range.body == data[from..to], "a range over three chunks");

    let two =
        request(&server, "GET", &format!("/{fid}"), &[("Range", "bytes=0-99,2000000-2000099")], b"").unwrap();
    assert_eq!(two.status, 206);
    let text = |b: &[u8]| b.iter().map(|&c| c as char).collect::<String>();
    let body = text(&two.body);
    assert!(body.contains(&text(&data[..100])) && body.contains(&text(&data[2_000_000..2_000_100])));
    assert!(body.contains(&format!("Content-Range: bytes 2000000-2000099/{}", data.len())), "{body:.300}");

    let chunks = chunk_fids(&server, &fid);
    assert_eq!(chunks.len(), 4, "{chunks:?}");
    let deleted = request(&server, "DELETE", &format!("/{fid}"), &[], b"").unwrap();
    for chunk in &chunks {
        assert_eq!(get(&holder(master, chunk), &format!("/{chunk}")).status, 404, "chunk {chunk} deleted");
    }
    assert_eq!(get(&server, &format!("/{fid}")).status, 404);
    Seen {
        get: (whole.status, headers_of(&whole)),
        head: (head.status, headers_of(&head)),
        range: (range.status, headers_of(&range)),
        ranges: (
            two.status,
            two.header("content-length").map(str::to_owned),
            two.header("content-type").and_then(|t| t.split(';').next()).map(str::to_owned),
        ),
        delete: (deleted.status, deleted.text()),
    }
}

#[test]
fn weed_upload_max_mb_on_ours_behaves_as_on_weed_volume() {
    let data = pseudo_random(FILE_SIZE, 42);
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(&scratch.path().join("m1"), 64).unwrap();
    let ours = join(&scratch.path().join("ours"), &master, &[]);
    let seen_ours = exercise(&master, scratch.path(), &data);

    let reference = tempfile::tempdir().unwrap();
    let weed_master = WeedMaster::start(&reference.path().join("m2"), 64).unwrap();
    let weed = WeedVolume::start(&reference.path().join("weed"), &weed_master).unwrap();
    let seen_weed = exercise(&weed_master, reference.path(), &data);

    assert_eq!(
        seen_ours.get.1.iter().find(|(h, _)| h == "x-file-store").map(|h| h.1.as_str()),
        Some("chunked")
    );
    assert_eq!(seen_ours, seen_weed, "ours (left) and weed volume (right)");
    ours.stop();
    master.stop();
    weed.stop();
    weed_master.stop();
}

/// A token signed with `key` for `fid`, valid for 5 minutes.
fn token(key: &str, fid: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    rdma_transport::server::auth::JwtKey::new(key).sign(&serde_json::json!({"fid": fid, "exp": exp}))
}

/// Stores `data` as `weed upload -maxMB=1` does (1 MiB chunks uploaded first, then a
/// manifest listing them, POSTed with `?cm=true`), but with chunk `i` assigned in data
/// center `layout[i]` and the manifest on ours, each request signed with `write_key` if
/// given. Checks that every needle is where it was sent; returns the manifest's fid and
/// the chunks' fids.
fn upload_mixed(
    master: &WeedMaster,
    servers: (&WeedVolume, &OurServer),
    data: &[u8],
    layout: &[&str],
    write_key: Option<&str>,
) -> (String, Vec<String>) {
    for dc in [WEED_DC, OURS_DC] {
        master.grow_in(dc).unwrap();
    }
    let (weed, ours) = servers;
    let post = |dc: &str, bytes: &[u8], query: &str, content_type: &str| -> String {
        let a = testbeds::weed::assign(&master.url(), &format!("dataCenter={dc}")).unwrap();
        let expected = if dc == WEED_DC { weed.addr() } else { ours.addr.clone() };
        assert_eq!(a.url, expected, "{} was assigned in {dc}", a.fid);
        let auth = write_key.map(|key| format!("Bearer {}", token(key, &a.fid)));
        let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("Authorization", v.as_str())).collect();
        let body = UploadBody::Multipart { filename: "big.bin", content_type };
        let (status, reply) = testbeds::weed::upload(&a.url, &a.fid, query, bytes, body, &headers).unwrap();
        assert_eq!(status, 201, "upload of {} to {}: {reply}", a.fid, a.url);
        a.fid
    };
    let pieces: Vec<&[u8]> = data.chunks(1 << 20).collect();
    assert_eq!(pieces.len(), layout.len(), "one data center per chunk");
    let mut chunks = Vec::new();
    let mut listed = Vec::new();
    for (i, (piece, dc)) in pieces.iter().zip(layout).enumerate() {
        let fid = post(dc, piece, "", "application/octet-stream");
        listed.push(serde_json::json!({"fid": fid, "offset": i << 20, "size": piece.len()}));
        chunks.push(fid);
    }
    let manifest = serde_json::json!({
        "name": "big.bin",
        "mime": "application/octet-stream",
        "size": data.len(),
        "chunks": listed,
    });
    let fid = post(OURS_DC, manifest.to_string().as_bytes(), "cm=true", "application/json");
    (fid, chunks)
}

#[test]
fn chunks_on_a_weed_volume_are_fetched_and_a_corrupt_chunk_aborts_the_reply() {
    let data = pseudo_random(FILE_SIZE, 7);
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(&scratch.path().join("m"), 64).unwrap();
    let weed_dc = format!("-dataCenter={WEED_DC}");
    let weed = WeedVolume::start_with(&scratch.path().join("weed"), &master, &[&weed_dc]).unwrap();
    let ours = join(&scratch.path().join("ours"), &master, &["--data-center", OURS_DC]);

    let (fid, chunks) = upload_mixed(&master, (&weed, &ours), &data, &MIXED, None);
    assert_eq!(chunk_fids(&ours.addr, &fid), chunks);
    let whole = get(&ours.addr, &format!("/{fid}"));
    assert_eq!((whole.status, whole.header("x-file-store")), (200, Some("chunked")));
    assert!(whole.body == data, "chunks from both servers, byte-exact");

    // Flip one byte of the last chunk (on ours) in its .dat: the reply must not complete
    // (the headers of a 200 are out by the time that chunk is read).
    let last = MIXED.len() - 1;
    assert_eq!(MIXED[last], OURS_DC);
    let at = last * (1 << 20) + 4096;
    flip_in_dat(&scratch.path().join("ours"), &data[at..at + 64]);
    let reply = request(&ours.addr, "GET", &format!("/{fid}"), &[], b"");
    match reply {
        Err(e) => eprintln!("the reply was aborted: {e}"),
        Ok(reply) => {
            let length: usize = reply.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
            eprintln!("the reply: {} with {} of {length} bytes", reply.status, reply.body.len());
            assert!(
                reply.status != 200 || reply.body.len() < length,
                "a corrupt chunk gave a complete reply: {} of {length} bytes",
                reply.body.len()
            );
        }
    }
    ours.stop();
    weed.stop();
    master.stop();
}

/// Flips a byte in the middle of every place `needle` occurs in the `.dat`s under `dir`.
fn flip_in_dat(dir: &Path, needle: &[u8]) {
    let mut flipped = 0;
    for entry in walk(dir) {
        if entry.extension().is_some_and(|e| e == "dat") {
            let mut bytes = std::fs::read(&entry).unwrap();
            let places: Vec<usize> = bytes
                .windows(needle.len())
                .enumerate()
                .filter(|(_, w)| *w == needle)
                .map(|(i, _)| i)
                .collect();
            for pos in &places {
                bytes[pos + needle.len() / 2] ^= 0xff;
            }
            if !places.is_empty() {
                std::fs::write(&entry, bytes).unwrap();
                flipped += places.len();
            }
        }
    }
    assert!(flipped > 0, "the bytes are in no .dat under {}", dir.display());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

/// Uploads `data` to `fid` on a standalone server as a multipart POST, `?cm=true` when
/// `manifest`.
fn post(server: &OurServer, fid: &str, data: &[u8], manifest: bool) {
    let (content_type, body) = multipart_body("f.json", Some("application/json"), &[], data);
    let path = if manifest { format!("/{fid}?cm=true") } else { format!("/{fid}") };
    let reply = request(&server.addr, "POST", &path, &[("Content-Type", &content_type)], &body).unwrap();
    assert_eq!(reply.status, 201, "upload: {}", reply.text());
}

#[test]
fn manifests_by_hand_on_a_standalone_server() {
    let scratch = tempfile::tempdir().unwrap();
    let ours = OurServer::start(scratch.path(), &[]);
    let chunks: Vec<(String, Vec<u8>)> =
        (0..3u64).map(|i| (ours.assign(""), pseudo_random(100_000 + i as usize, i))).collect();
    for (fid, data) in &chunks {
        post(&ours, fid, data, false);
    }
    // Listed out of order: served in offset order.
    let mut listed = Vec::new();
    let mut offset = 0;
    for (fid, data) in &chunks {
        listed.push(serde_json::json!({"fid": fid, "offset": offset, "size": data.len()}));
        offset += data.len();
    }
    listed.reverse();
    let whole: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.clone()).collect();
    let json = serde_json::json!({"name": "hand.txt", "size": whole.len(), "chunks": listed}).to_string();
    let manifest = ours.assign("");
    post(&ours, &manifest, json.as_bytes(), true);

    let reply = get(&ours.addr, &format!("/{manifest}"));
    assert_eq!((reply.status, reply.header("x-file-store")), (200, Some("chunked")));
    assert!(reply.body == whole, "chunks in offset order");
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"), "type from the name");
    let raw = get(&ours.addr, &format!("/{manifest}?cm=false"));
    assert_eq!(raw.body, json.as_bytes(), "cm=false: the manifest as stored");

    // The same JSON without cm=true is an ordinary file.
    let plain = ours.assign("");
    post(&ours, &plain, json.as_bytes(), false);
    assert_eq!(get(&ours.addr, &format!("/{plain}")).body, json.as_bytes());
    // A flagged needle that is no manifest is served as stored, as weed does.
    let junk = ours.assign("");
    post(&ours, &junk, b"not json", true);
    assert_eq!(get(&ours.addr, &format!("/{junk}")).body, b"not json");

    // A chunk this standalone server does not have: GET is an empty 500 (the first chunk
    // fails before the headers), DELETE a 500 that leaves the manifest in place.
    let (first, _) = &chunks[0];
    let elsewhere = format!("999,{}", first.split_once(',').unwrap().1);
    let json = serde_json::json!({"chunks": [{"fid": elsewhere, "offset": 0, "size": 10}]}).to_string();
    let orphan = ours.assign("");
    post(&ours, &orphan, json.as_bytes(), true);
    let reply = get(&ours.addr, &format!("/{orphan}"));
    assert_eq!((reply.status, reply.body.len()), (500, 0));
    let reply = request(&ours.addr, "DELETE", &format!("/{orphan}"), &[], b"").unwrap();
    assert_eq!(reply.status, 500);
    assert!(reply.json()["error"].as_str().unwrap().starts_with("Delete chunks error: "), "{}", reply.text());
    assert_eq!(get(&ours.addr, &format!("/{orphan}?cm=false")).status, 200, "the manifest stays");

    // DELETE of the good manifest: chunks first, the manifest's size reported.
    let reply = request(&ours.addr, "DELETE", &format!("/{manifest}"), &[], b"").unwrap();
    assert_eq!((reply.status, reply.json()["size"].as_u64()), (202, Some(whole.len() as u64)));
    for (fid, _) in &chunks {
        assert_eq!(get(&ours.addr, &format!("/{fid}")).status, 404, "chunk {fid}");
    }
    assert_eq!(get(&ours.addr, &format!("/{manifest}")).status, 404);
    ours.stop();
}

/// A request with a token signed with `key` for `fid`.
fn signed(addr: &str, method: &str, fid: &str, query: &str, key: &str) -> Reply {
    let auth = format!("Bearer {}", token(key, fid));
    request(addr, method, &format!("/{fid}{query}"), &[("Authorization", &auth)], b"").unwrap()
}

#[test]
fn in_a_signed_cluster_ours_signs_its_chunk_reads_and_deletes() {
    const WRITE_KEY: &str = "chunk-write-key";
    const READ_KEY: &str = "chunk-read-key";
    let scratch = tempfile::tempdir().unwrap();
    let config_dir = scratch.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config = config_dir.join("security.toml");
    std::fs::write(
        &config,
        format!("[jwt.signing]\nkey = \"{WRITE_KEY}\"\n[jwt.signing.read]\nkey = \"{READ_KEY}\"\n"),
    )
    .unwrap();
    let master = WeedMaster::start_in(&scratch.path().join("m"), 64, Some(&config_dir)).unwrap();
    let weed_dc = format!("-dataCenter={WEED_DC}");
    let weed =
        WeedVolume::start_in_with(&scratch.path().join("weed"), &master, Some(&config_dir), &[&weed_dc])
            .unwrap();
    let ours = join(
        &scratch.path().join("ours"),
        &master,
        &["--security-config", config.to_str().unwrap(), "--data-center", OURS_DC],
    );

    let data = pseudo_random(FILE_SIZE, 11);
    let (fid, chunks) = upload_mixed(&master, (&weed, &ours), &data, &MIXED, Some(WRITE_KEY));
    let raw = signed(&ours.addr, "GET", &fid, "?cm=false", READ_KEY);
    assert_eq!(raw.status, 200, "{}", raw.text());
    let listed = raw.json()["chunks"].as_array().cloned().unwrap_or_default();
    let listed: Vec<&str> = listed.iter().map(|c| c["fid"].as_str().unwrap()).collect();
    assert_eq!(listed, chunks, "the manifest as stored");
    assert_eq!(get(&ours.addr, &format!("/{fid}")).status, 401, "the manifest itself needs a token");
    let whole = signed(&ours.addr, "GET", &fid, "", READ_KEY);
    assert_eq!(whole.status, 200);
    assert!(whole.body == data, "chunks on the weed volume read with our tokens");

    let deleted = signed(&ours.addr, "DELETE", &fid, "", WRITE_KEY);
    assert_eq!(
        (deleted.status, deleted.json()["size"].as_u64()),
        (202, Some(FILE_SIZE as u64)),
        "{}",
        deleted.text()
    );
    for chunk in &chunks {
        let reply = signed(&holder(&master, chunk), "GET", chunk, "", READ_KEY);
        assert_eq!(reply.status, 404, "chunk {chunk} deleted with our token");
    }
    ours.stop();
    weed.stop();
    master.stop();
}
