//! Interop with the real SeaweedFS: a live `weed` 4.48 (master + volume server on
//! loopback) stores a set of uploads covering every needle feature; then every `.dat`
//! is walked record by record and every `.idx` entry is followed, and each live needle
//! is checked against what was uploaded and what weed answered. Each record must
//! re-encode to exactly the bytes weed wrote, padding included.
//!
//! Needs `weed` 4.48 on PATH (`scripts/install-deps` installs it); without it the test
//! fails with that message rather than passing.

use needle::idx::{self, OffsetWidth};
use needle::scan::Record;
use needle::{FileId, NeedleId, SuperBlock};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use testbeds::pseudo_random;
use testbeds::weed::{UploadBody, WeedMaster, WeedVolume, assign, upload};

/// What one upload sent and what weed replied.
struct Upload {
    kind: &'static str,
    fid: FileId,
    body: Vec<u8>,
    /// Whether the file must still be live at the end (not deleted or overwritten).
    live: bool,
    expect_name: String,
    expect_mime: &'static str,
    expect_pairs: Option<Value>,
    expect_ttl: &'static str,
    reply: Value,
}

struct Client {
    master: String,
}

impl Client {
    fn assign(&self, query: &str) -> (FileId, String) {
        let assignment = assign(&self.master, query).expect("assign");
        (assignment.fid.parse().expect("weed's fid parses"), assignment.url)
    }

    fn upload(
        &self,
        url: &str,
        fid: &FileId,
        query: &str,
        data: &[u8],
        body: UploadBody<'_>,
        headers: &[(&str, &str)],
    ) -> Value {
        let (status, reply) = upload(url, &fid.to_string(), query, data, body, headers)
            .unwrap_or_else(|e| panic!("upload {fid}: {e}"));
        assert_eq!(status, 201, "upload {fid}");
        reply
    }

    fn delete(&self, url: &str, fid: &FileId) {
        let response = ureq::delete(&format!("http://{url}/{fid}")).call().expect("delete");
        assert_eq!(response.status(), 202);
    }
}

fn multipart<'a>(filename: &'a str, content_type: &'a str) -> UploadBody<'a> {
    UploadBody::Multipart { filename, content_type }
}

/// Uploads one file of every kind to a live weed; returns what was sent.
fn upload_cases(client: &Client) -> Vec<Upload> {
    let mut uploads = Vec::new();
    let mut add = |kind, fid, body: Vec<u8>, live, name: String, mime, pairs, ttl, reply| {
        uploads.push(Upload {
            kind,
            fid,
            body,
            live,
            expect_name: name,
            expect_mime: mime,
            expect_pairs: pairs,
            expect_ttl: ttl,
            reply,
        })
    };

    let (fid, url) = client.assign("");
    let body = b"hello".to_vec();
    let reply = client.upload(&url, &fid, "ts=1700000000", &body, multipart("hello.txt", "text/plain"), &[]);
    add("small-named", fid, body, true, "hello.txt".into(), "text/plain", None, "", reply);

    let (fid, url) = client.assign("");
    let body = pseudo_random(777, 1);
    let reply = client.upload(
        &url,
        &fid,
        "",
        &body,
        UploadBody::Raw { content_type: "application/octet-stream" },
        &[],
    );
    add("raw-body", fid, body, true, fid.to_string(), "application/octet-stream", None, "", reply);

    for (kind, len, seed) in [("binary-1MiB", 1 << 20, 2), ("binary-3MiB", 3 << 20, 3)] {
        let (fid, url) = client.assign("");
        let body = pseudo_random(len, seed);
        let reply =
            client.upload(&url, &fid, "", &body, multipart("blob.bin", "application/octet-stream"), &[]);
        add(kind, fid, body, true, "blob.bin".into(), "", None, "", reply);
    }

    let (fid, url) = client.assign("");
    let body = "All work and no play makes Jack a dull boy.\n".repeat(2000).into_bytes();
    let reply = client.upload(&url, &fid, "", &body, multipart("notes.txt", "text/plain"), &[]);
    add("gzippable-text", fid, body, true, "notes.txt".into(), "text/plain", None, "", reply);

    let (fid, url) = client.assign("");
    let body = pseudo_random(300, 4);
    let headers = [("Seaweed-Color", "blue"), ("Seaweed-Owner", "interop-test")];
    let reply =
        client.upload(&url, &fid, "", &body, multipart("p.bin", "application/octet-stream"), &headers);
    let pairs = serde_json::json!({"Color": "blue", "Owner": "interop-test"});
    add("pairs", fid, body, true, "p.bin".into(), "", Some(pairs), "", reply);

    let (fid, url) = client.assign("ttl=7d");
    let body = pseudo_random(200, 5);
    let reply =
        client.upload(&url, &fid, "ttl=7d", &body, multipart("t.bin", "application/octet-stream"), &[]);
    add("ttl", fid, body, true, "t.bin".into(), "", None, "1w", reply);

    let (fid, url) = client.assign("");
    let reply = client.upload(&url, &fid, "", b"", multipart("empty.txt", "text/plain"), &[]);
    add("empty", fid, Vec::new(), true, String::new(), "", None, "", reply);

    let (fid, url) = client.assign("");
    let body = br#"{"a": 1}"#.to_vec();
    let reply = client.upload(&url, &fid, "", &body, multipart("a.json", "application/json"), &[]);
    add("json-mime", fid, body, true, "a.json".into(), "application/json", None, "", reply);

    let (base, url) = client.assign("count=3");
    for delta in 0..3u64 {
        let fid = if delta == 0 { base } else { base.with_delta(delta) };
        let body = pseudo_random(1000 + 1111 * delta as usize, 6 + delta);
        let name = format!("d{delta}.bin");
        let reply = client.upload(&url, &fid, "", &body, multipart(&name, "application/octet-stream"), &[]);
        add("delta", fid, body, true, name, "", None, "", reply);
    }

    let (fid, url) = client.assign("");
    let body = pseudo_random(4000, 9);
    let reply = client.upload(&url, &fid, "", &body, multipart("gone.bin", "application/octet-stream"), &[]);
    client.delete(&url, &fid);
    add("deleted", fid, body, false, "gone.bin".into(), "", None, "", reply);

    let (fid, url) = client.assign("");
    let old = pseudo_random(999, 10);
    let reply = client.upload(&url, &fid, "", &old, multipart("v1.bin", "application/octet-stream"), &[]);
    add("overwritten-old", fid, old, false, "v1.bin".into(), "", None, "", reply);
    let new = pseudo_random(1999, 11);
    let reply = client.upload(&url, &fid, "", &new, multipart("v2.bin", "application/octet-stream"), &[]);
    add("overwritten-new", fid, new, true, "v2.bin".into(), "", None, "", reply);

    for i in 0..12u64 {
        let (fid, url) = client.assign("");
        let len = (pseudo_random(2, 100 + i)[0] as usize) * 257 + (i as usize);
        let body = pseudo_random(len, 200 + i);
        let name = format!("r{i}.dat");
        let reply = client.upload(&url, &fid, "", &body, multipart(&name, "application/octet-stream"), &[]);
        add("random", fid, body, true, name, "", None, "", reply);
    }
    uploads
}

/// One volume's files, parsed and cross-checked: every record decodes and re-encodes
/// byte-identical, every `.idx` entry points at a record of that id and size, and
/// `.dat` ends exactly at the last record. Returns the live records by needle id.
fn check_volume<'a>(dat_path: &Path, width: OffsetWidth, dat: &'a [u8]) -> HashMap<NeedleId, Record<'a>> {
    let superblock = SuperBlock::parse(dat).expect("superblock");
    let version = superblock.version;
    let mut by_offset = HashMap::new();
    let mut end = superblock.block_size() as u64;
    for record in needle::scan::records(dat, version, end) {
        let record = record.unwrap_or_else(|e| panic!("{}: {e}", dat_path.display()));
        record
            .needle
            .verify_checksum()
            .unwrap_or_else(|e| panic!("{} @{}: {e}", dat_path.display(), record.offset));
        let on_disk = &dat[record.offset as usize..(record.offset + record.record_size) as usize];
        assert_eq!(
            record.needle.to_bytes(version).unwrap(),
            on_disk,
            "{} @{}: re-encoding differs from weed's bytes",
            dat_path.display(),
            record.offset
        );
        end = record.offset + record.record_size;
        by_offset.insert(record.offset, record);
    }
    assert_eq!(end, dat.len() as u64, "{}: .dat must end at its last record", dat_path.display());

    let idx_bytes = std::fs::read(dat_path.with_extension("idx")).expect(".idx");
    assert_eq!(idx::trailing_bytes(idx_bytes.len(), width), 0, "whole .idx entries");
    let mut live = HashMap::new();
    for entry in idx::entries(&idx_bytes, width) {
        let record = by_offset.get(&entry.byte_offset()).expect(".idx entry points at a record");
        assert_eq!(record.needle.id, entry.key);
        if entry.is_deletion() {
            assert_eq!(record.needle.header(version).unwrap().size, 0, "deletions point at tombstones");
            live.remove(&entry.key);
        } else {
            assert_eq!(
                record.needle.header(version).unwrap().size,
                entry.size,
                ".idx size is the header Size"
            );
            live.insert(entry.key, *record);
        }
    }
    live
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[test]
fn weed_written_volumes_decode_verify_and_re_encode_identically() {
    let root = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(root.path(), 64).unwrap_or_else(|e| panic!("{e}"));
    let volume = WeedVolume::start(&root.path().join("volume"), &master).unwrap_or_else(|e| panic!("{e}"));
    let uploads = upload_cases(&Client { master: master.url() });
    let dir = volume.dir().to_owned();
    volume.stop();
    master.stop();

    let mut files = HashMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "dat") {
            let vid: u32 = path.file_stem().unwrap().to_str().unwrap().parse().expect("no collection used");
            let vif: Value =
                serde_json::from_slice(&std::fs::read(path.with_extension("vif")).unwrap()).unwrap();
            assert_eq!(vif["bytesOffset"], 5, "the PyPI weed is the 5-byte-offset build");
            files.insert(vid, (path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    let mut live = HashMap::new();
    for (vid, (path, dat)) in &files {
        live.insert(*vid, check_volume(path, OffsetWidth::Five, dat));
    }
    assert!(files.values().filter(|(_, dat)| dat.len() > 8).count() >= 2, "uploads spread over volumes");

    for upload in &uploads {
        let what = format!("{} {}", upload.kind, upload.fid);
        let record = live[&upload.fid.volume.0].get(&upload.fid.needle_id());
        if !upload.live {
            if let Some(record) = record {
                assert_ne!(sha256(record.needle.data), sha256(&upload.body), "{what}: stale data still live");
            }
            continue;
        }
        let needle = record.unwrap_or_else(|| panic!("{what}: not live in .idx")).needle;
        assert_eq!(needle.cookie, upload.fid.cookie, "{what}: cookie");
        let crc = needle.verify_checksum().unwrap();
        assert_eq!(upload.reply["eTag"], needle::crc::etag(crc), "{what}: weed's ETag is the raw CRC");
        assert_eq!(upload.reply["size"].as_u64().unwrap_or(0), upload.body.len() as u64, "{what}: size");

        let payload = if needle.is_compressed() {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(needle.data).read_to_end(&mut plain).expect("gzip data");
            assert!(needle.data.len() < plain.len(), "{what}: compressed only when it saves space");
            plain
        } else {
            needle.data.to_vec()
        };
        assert_eq!(sha256(&payload), sha256(&upload.body), "{what}: payload sha256");
        assert_eq!(needle.is_compressed(), upload.kind == "gzippable-text", "{what}: gzip flag");

        if upload.body.is_empty() {
            continue; // weed writes no body for empty files: no name, mime or pairs.
        }
        assert_eq!(needle.name, upload.expect_name.as_bytes(), "{what}: name");
        assert_eq!(needle.mime, upload.expect_mime.as_bytes(), "{what}: mime");
        assert_eq!(upload.reply["mime"].as_str().unwrap_or(""), upload.expect_mime, "{what}: reply mime");
        assert_eq!(needle.ttl.to_string(), upload.expect_ttl, "{what}: ttl");
        match &upload.expect_pairs {
            Some(pairs) => {
                assert_eq!(&serde_json::from_slice::<Value>(needle.pairs).unwrap(), pairs, "{what}")
            }
            None => assert!(needle.pairs.is_empty(), "{what}: no pairs"),
        }
    }
}
