//! Tests 2 and 3: what our server writes is what weed writes.
//!
//! - Test 2: volumes written by ours open in a real `weed volume` read-write, and
//!   weed answers every probe of every file exactly as ours did.
//! - Test 3: the same upload (same fid, same `ts`) sent to both servers produces needle
//!   records that are byte-identical except `AppendAtNs` (padding included).

mod common;

use std::path::Path;

use common::*;
use needle::idx::{IdxEntry, OffsetWidth};
use needle::{HEADER_SIZE, NeedleHeader, Version};
use testbeds::weed::{WeedMaster, WeedVolume};

/// One upload: a name for messages, then how to send it.
struct Upload {
    kind: &'static str,
    method: &'static str,
    query: &'static str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Delete the file after uploading it.
    delete: bool,
    /// A raw upload's stored name is its URL's last segment, volume id included.
    named_by_url: bool,
}

fn multipart_upload(
    kind: &'static str,
    name: &str,
    ct: Option<&str>,
    part: &[(&str, &str)],
    headers: &[(&str, &str)],
    data: &[u8],
) -> Upload {
    let (content_type, body) = multipart_body(name, ct, part, data);
    let mut all = vec![("Content-Type".to_owned(), content_type)];
    all.extend(headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    Upload {
        kind,
        method: "POST",
        query: "?ts=1700000000",
        headers: all,
        body,
        delete: false,
        named_by_url: false,
    }
}

fn raw_upload(kind: &'static str, method: &'static str, headers: &[(&str, &str)], data: &[u8]) -> Upload {
    let headers = headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    Upload {
        kind,
        method,
        query: "?ts=1700000001",
        headers,
        body: data.to_vec(),
        delete: false,
        named_by_url: true,
    }
}

/// The uploads both tests use. `gzip_by_server` adds text the server compresses
/// itself: Go's and our deflate produce different (equally valid) bytes, so test 3
/// leaves it out.
fn uploads(gzip_by_server: bool) -> Vec<Upload> {
    let text: Vec<u8> =
        (0..3000).flat_map(|i| format!("{i} lorem ipsum dolor sit amet\n").into_bytes()).collect();
    let mut all = vec![
        multipart_upload("small-named", "hello.txt", Some("text/plain"), &[], &[], b"hello"),
        raw_upload(
            "raw-body",
            "POST",
            &[("Content-Type", "application/octet-stream")],
            &pseudo_random(777, 21),
        ),
        raw_upload(
            "raw-put-pairs",
            "PUT",
            &[("Content-Type", "text/plain"), ("Seaweed-Foo", "b&r")],
            b"short text",
        ),
        raw_upload("raw-sniffed", "PUT", &[], b"<html><body>x</body></html>"),
        multipart_upload(
            "binary-1MiB",
            "blob.bin",
            Some("application/octet-stream"),
            &[],
            &[],
            &pseudo_random(1 << 20, 22),
        ),
        multipart_upload("binary-2MiB", "big.dat", None, &[], &[], &pseudo_random(2 << 20, 23)),
        multipart_upload(
            "pre-gzipped",
            "pre.txt",
            Some("text/plain"),
            &[("Content-Encoding", "gzip")],
            &[],
            &volume_server::http::upload::gzip(&text),
        ),
        multipart_upload(
            "pairs",
            "p.bin",
            None,
            &[],
            &[("Seaweed-Foo-Bar", "baz"), ("Seaweed-A", "1")],
            &pseudo_random(300, 24),
        ),
        multipart_upload("empty", "empty.txt", Some("text/plain"), &[], &[], b""),
        multipart_upload("json", "a.json", Some("application/json"), &[], &[], b"{\"a\":[1,2]}"),
        multipart_upload("unicode-name", "ü é.txt", Some("text/plain"), &[], &[], b"unicode"),
        Upload {
            delete: true,
            ..multipart_upload("deleted", "gone.bin", None, &[], &[], &pseudo_random(4000, 25))
        },
    ];
    let mut ttl = multipart_upload("ttl", "t.bin", None, &[], &[], &pseudo_random(200, 26));
    ttl.query = "?ts=1700000000&ttl=3d";
    all.push(ttl);
    if gzip_by_server {
        all.push(multipart_upload("gzipped-by-server", "notes.txt", Some("text/plain"), &[], &[], &text));
    }
    all
}

fn send(addr: &str, fid: &str, upload: &Upload) -> Reply {
    let headers: Vec<(&str, &str)> = upload.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let reply =
        request(addr, upload.method, &format!("/{fid}{}", upload.query), &headers, &upload.body).unwrap();
    assert_eq!(reply.status, 201, "{} to {addr}: {}", upload.kind, reply.text());
    if upload.delete {
        assert_eq!(request(addr, "DELETE", &format!("/{fid}"), &[], b"").unwrap().status, 202);
    }
    reply
}

fn record_probes(addr: &str, files: &[(&'static str, String)]) -> Vec<(String, Observed)> {
    let mut seen = Vec::new();
    for (kind, fid) in files {
        let etag = get(addr, &format!("/{fid}")).header("etag").unwrap_or("").to_owned();
        for (label, method, suffix, headers) in probes(&etag) {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let reply = request(addr, method, &format!("/{fid}{suffix}"), &headers, b"").unwrap();
            seen.push((format!("{kind} {label}"), observe(&reply, &["foo", "foo-bar", "a"])));
        }
    }
    seen
}

fn compare(expected: &[(String, Observed)], actual: &[(String, Observed)], who: &str) {
    let mismatches: Vec<String> = expected
        .iter()
        .zip(actual)
        .filter(|(e, a)| e != a)
        .map(|((label, e), (_, a))| format!("{label}:\n  ours {e:?}\n  {who} {a:?}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} probes differ:\n{}",
        mismatches.len(),
        expected.len(),
        mismatches.join("\n")
    );
}

#[test]
fn volumes_written_by_ours_open_read_write_in_weed_and_serve_the_same() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let ours = OurServer::start(&dir, &[]);
    let mut files = Vec::new();
    for upload in uploads(true) {
        let query = if upload.kind == "ttl" { "?ttl=3d" } else { "" };
        let fid = ours.assign(query);
        send(&ours.addr, &fid, &upload);
        files.push((upload.kind, fid));
    }
    // Another collection, in its own volume file.
    let fid = ours.assign("?collection=pics");
    send(&ours.addr, &fid, &uploads(false).remove(0));
    files.push(("collection", fid));
    assert!(dir.join("pics_3.dat").exists(), "collection volumes are named <collection>_<vid>");
    let ours_seen = record_probes(&ours.addr, &files);
    ours.stop();

    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed = WeedVolume::start(&dir, &master).unwrap();
    let status = get(&weed.addr(), "/status").json();
    let volumes = status["Volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 3, "{status}");
    for v in volumes {
        assert_eq!(v["ReadOnly"], false, "weed opened volume {} read-only: {status}", v["Id"]);
    }
    let weed_seen = record_probes(&weed.addr(), &files);
    compare(&ours_seen, &weed_seen, "weed");
    weed.stop();
    master.stop();
}

/// The newest `.idx` entry of `key` in a volume, and the record it points at.
fn record_of(dir: &Path, vid: &str, key: u64) -> Vec<u8> {
    let idx = std::fs::read(dir.join(format!("{vid}.idx"))).unwrap();
    let entry: IdxEntry =
        needle::idx::entries(&idx, OffsetWidth::Five).filter(|e| e.key.0 == key).last().expect("indexed");
    let dat = std::fs::read(dir.join(format!("{vid}.dat"))).unwrap();
    let at = entry.byte_offset() as usize;
    let header = NeedleHeader::parse(&dat[at..]).unwrap();
    let len = Version::V3.record_size(header.size) as usize;
    let mut record = dat[at..at + len].to_vec();
    let ts = HEADER_SIZE + header.size as usize + needle::CHECKSUM_SIZE;
    record[ts..ts + 8].fill(0); // AppendAtNs: the one field allowed to differ
    record
}

#[test]
fn the_same_upload_makes_the_same_needle_record() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed_dir = scratch.path().join("weed");
    let weed = WeedVolume::start(&weed_dir, &master).unwrap();
    let ours_dir = scratch.path().join("ours");
    let ours = OurServer::start(&ours_dir, &[]);
    let mut compared = Vec::new();
    for upload in uploads(false) {
        let query = if upload.kind == "ttl" { "?ttl=3d" } else { "" };
        // The same key and cookie on both sides, and for names taken from the URL the
        // same volume id too.
        let ours_vid = ours.assign(query).split_once(',').unwrap().0.to_owned();
        let weed_fid = (0..500)
            .map(|_| weed_assign(&master, query))
            .find(|f| !upload.named_by_url || f.split_once(',').unwrap().0 == ours_vid)
            .expect("weed assigned no fid in the same volume");
        let (weed_vid, key_cookie) = weed_fid.split_once(',').unwrap();
        let ours_fid = format!("{ours_vid},{key_cookie}");
        let weed_reply = send(&weed.addr(), &weed_fid, &upload);
        let ours_reply = send(&ours.addr, &ours_fid, &upload);
        let reply_text = |r: &Reply, vid: &str| r.text().replace(&format!("\"{vid},"), "\"VID,");
        assert_eq!(
            reply_text(&ours_reply, &ours_vid),
            reply_text(&weed_reply, weed_vid),
            "{} upload reply",
            upload.kind
        );
        assert_eq!(ours_reply.header("etag"), weed_reply.header("etag"), "{}", upload.kind);
        let key = u64::from_str_radix(&key_cookie[..key_cookie.len() - 8], 16).unwrap();
        compared.push((upload.kind, weed_vid.to_owned(), ours_vid, key));
    }
    weed.stop();
    master.stop();
    ours.stop();
    assert!(compared.len() >= 12);
    for (kind, weed_vid, ours_vid, key) in compared {
        let weed_record = record_of(&weed_dir, &weed_vid, key);
        let ours_record = record_of(&ours_dir, &ours_vid, key);
        assert_eq!(ours_record, weed_record, "{kind}: records differ (AppendAtNs masked)");
    }
}
