//! Writes the seed corpora: valid inputs of every fuzz target, built with the crates'
//! own encoders (whose output the tests check byte for byte against weed 4.48's), so
//! the fuzzers start from the shapes real traffic and real files have.
//!
//! `seed-corpora DIR` writes `DIR/<target>/seed-<n>` files (existing ones are
//! overwritten; what the fuzzers added next to them is left alone). scripts/fuzz runs it.

use std::path::{Path, PathBuf};

use prost::Message;
use rdma_transport::proto;
use rdma_transport::server::auth::JwtKey;
use volume_store::vif::VolumeInfo;

use needle::{
    Chunk, ChunkManifest, Cookie, FileId, Flags, IdxEntry, Needle, NeedleId, OffsetWidth, ReplicaPlacement,
    SuperBlock, Ttl, Version, VolumeId,
};

struct Corpora {
    root: PathBuf,
}

impl Corpora {
    fn write(&self, target: &str, seeds: impl IntoIterator<Item = Vec<u8>>) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (n, seed) in seeds.into_iter().enumerate() {
            let path = dir.join(format!("seed-{n}"));
            std::fs::write(&path, seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

/// Needles of every shape weed writes: plain, with each optional field, gzip and
/// chunk-manifest flags, empty, tombstones.
fn needles(data: &[u8]) -> Vec<Needle<'_>> {
    let id = NeedleId(0x0163);
    let cookie = Cookie(0x7037d6);
    let plain = Needle::new(id, cookie, data).with_append_at_ns(1_700_000_000_123_456_789);
    vec![
        plain,
        plain.with_name(b"hello.txt").with_mime(b"text/plain").with_last_modified(1_700_000_000),
        plain
            .with_name(b"a.bin")
            .with_mime(b"application/octet-stream")
            .with_last_modified(1_700_000_000)
            .with_ttl("3d".parse().unwrap())
            .with_pairs(br#"{"Seaweed-A":"b"}"#),
        plain.with_flags(Flags::COMPRESSED).with_name(b""),
        plain.with_flags(Flags::CHUNK_MANIFEST),
        Needle::new(id, cookie, b""),
        Needle::tombstone(id, cookie, 0x9a71bb4c, 1_700_000_001_000_000_000),
    ]
}

fn encode(needle: &Needle<'_>, version: Version) -> Option<Vec<u8>> {
    needle.to_bytes(version).ok()
}

fn records() -> Vec<Vec<u8>> {
    let data = b"hello, seaweed".repeat(3);
    let mut seeds = Vec::new();
    for (selector, version) in [(0u8, Version::V1), (1, Version::V2), (2, Version::V3)] {
        for needle in needles(&data) {
            if let Some(record) = encode(&needle, version) {
                seeds.push([&[selector][..], &record].concat());
            }
        }
    }
    seeds
}

fn dat_scans() -> Vec<Vec<u8>> {
    let data = b"0123456789abcdef".repeat(5);
    let mut seeds = Vec::new();
    for (selector, version) in [(0u8, Version::V1), (1, Version::V2), (2, Version::V3)] {
        let mut dat = vec![selector];
        for needle in needles(&data) {
            if let Some(record) = encode(&needle, version) {
                dat.extend_from_slice(&record);
            }
        }
        seeds.push(dat.clone());
        dat.truncate(dat.len() - 5); // a torn tail
        seeds.push(dat);
    }
    seeds
}

fn idx_files() -> Vec<Vec<u8>> {
    [(0u8, OffsetWidth::Four), (1, OffsetWidth::Five)]
        .into_iter()
        .map(|(selector, width)| {
            let mut idx = vec![selector];
            for (key, offset, size) in [(1, 8, 40), (2, 48, 1000), (1, 1048, u32::MAX), (3, 8 << 30, 7)] {
                if let Ok(entry) = IdxEntry::new(NeedleId(key), offset, size) {
                    let _ = entry.encode_into(width, &mut idx);
                }
            }
            idx.extend_from_slice(&[0xab; 5]); // a partial entry
            idx
        })
        .collect()
}

fn superblocks() -> Vec<Vec<u8>> {
    let mut with_extra = SuperBlock::new("001".parse().unwrap(), "5d".parse().unwrap());
    with_extra.extra = vec![0x08, 0x01];
    with_extra.version = Version::V2;
    let v1 = SuperBlock { version: Version::V1, ..SuperBlock::new(ReplicaPlacement::default(), Ttl::EMPTY) };
    [SuperBlock::new("002".parse().unwrap(), Ttl::EMPTY), with_extra, v1]
        .iter()
        .map(|block| block.to_bytes().unwrap())
        .collect()
}

fn ids() -> Vec<Vec<u8>> {
    [
        "3,01637037d6",
        "3,01637037d6_2",
        "4294967295,ffffffffffffffff00000000",
        "7,0b8faef8b2_0",
        "5d",
        "120m",
        "1y",
        "90",
        "002",
        "1",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn manifests() -> Vec<Vec<u8>> {
    let chunks = (0..3u64)
        .map(|i| Chunk {
            fid: FileId::new(VolumeId(3), NeedleId(0x0163 + i), Cookie(0x7037d6)),
            offset: i * 1_048_576,
            size: 1_048_576,
        })
        .collect();
    let manifest = ChunkManifest {
        name: "big.bin".into(),
        mime: "application/octet-stream".into(),
        size: 3_145_728,
        chunks,
    };
    vec![
        manifest.to_json().into_bytes(),
        br#"{"chunks":[{"fid":"3,01637037d6","offset":0,"size":5}]}"#.to_vec(),
    ]
}

fn vif_files() -> Vec<Vec<u8>> {
    let ours = VolumeInfo::new(3, OffsetWidth::Five, 1_795_671_783).to_bytes();
    let weeds = br#"{
  "files":  [],
  "version":  3,
  "replication":  "001",
  "bytesOffset":  4,
  "datFileSize":  "0",
  "expireAtSec":  "0",
  "readOnly":  true,
  "ecShardConfig":  null,
  "readOnlyCanDelete": false
}"#;
    let snake = br#"{"version":2,"bytes_offset":5,"dat_file_size":1024,"read_only":false,"files":[{"backendType":"s3"}]}"#;
    vec![ours, weeds.to_vec(), snake.to_vec(), b"  \n".to_vec()]
}

fn request_targets() -> Vec<Vec<u8>> {
    [
        "/3,01637037d6.jpg?jwt=a.b.c&ts=1700000000",
        "/3/01637037d6_1/my.pdf",
        "/3/01637037d6?cm=false&ttl=5d&collection=pics",
        "/1,ffffffffffffffff00000000_1?name=%41%zz+b&x",
        "/4294967295,0b8faef8b2_2.tar.gz?readDeleted=true",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn range_headers() -> Vec<Vec<u8>> {
    let sized = |size: u64, header: &str| [&size.to_be_bytes()[..], header.as_bytes()].concat();
    vec![
        sized(5000, "bytes=0-99"),
        sized(5000, "bytes=-10"),
        sized(5000, "bytes=0-1, 5-9,100-"),
        sized(100, "bytes=100-"),
        sized(0, "bytes=0-0"),
        sized(u64::MAX, "bytes=0-,-5"),
    ]
}

/// `method`, Content-Type, Content-Disposition, Content-Encoding, Content-MD5, query,
/// one `Seaweed-*` header, body: the upload_multipart target's input.
fn upload(lines: [&str; 7], body: &[u8]) -> Vec<u8> {
    [lines.join("\n").as_bytes(), b"\n", body].concat()
}

fn uploads() -> Vec<Vec<u8>> {
    let form = |disposition: &str, part_type: &str, data: &[u8]| {
        [
            format!("--xYz\r\nContent-Disposition: {disposition}\r\nContent-Type: {part_type}\r\n\r\n")
                .as_bytes(),
            data,
            b"\r\n--xYz--\r\n",
        ]
        .concat()
    };
    let text = b"hello hello hello hello hello hello hello hello".to_vec();
    let gz = volume_server::http::upload::gzip(&text);
    vec![
        upload(
            [
                "POST",
                "multipart/form-data; boundary=xYz",
                "",
                "",
                "",
                "ts=1700000000&ttl=3d",
                "Seaweed-Owner: me",
            ],
            &form(r#"form-data; name="file"; filename="a.txt""#, "text/plain", &text),
        ),
        upload(
            ["POST", "multipart/form-data; boundary=xYz", "", "", "", "cm=true", ""],
            &form(r#"form-data; name="file"; filename*=utf-8''b%20c.json"#, "application/json", b"{}"),
        ),
        upload(
            ["PUT", "image/png", r#"attachment; filename="p.png""#, "", "", "", ""],
            &[0x89, b'P', b'N', b'G'],
        ),
        upload(["PUT", "text/plain", "", "gzip", "", "type=replicate", ""], &gz),
        upload(["POST", "application/x-www-form-urlencoded", "", "", "", "", ""], b"a=b"),
        upload(["PUT", "", "", "", "XUFAKrxLKna5cZ2REBfFkg==", "", ""], b"hello"),
    ]
}

fn header_params() -> Vec<Vec<u8>> {
    [
        r#"form-data; name="file"; filename="a.txt""#,
        "attachment; filename*=utf-8''a%20b.txt; filename=\"fallback\"",
        "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
        r#"form-data; name="q\"uo\\te""#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn jwts() -> Vec<Vec<u8>> {
    let key = JwtKey::new("secret");
    let with_exp = key.sign(&serde_json::json!({ "fid": "3,01637037d6", "exp": 1_900_000_000u64 }));
    let without = key.sign(&serde_json::json!({ "fid": "3,01637037d6" }));
    [
        format!("secret\n{with_exp}\n3,01637037d6"),
        format!("secret\n{without}\n3,01637037d6_1"),
        "k\nx.y.z\n".into(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

fn control_requests() -> Vec<Vec<u8>> {
    let endpoint = proto::QpEndpoint {
        qp_num: 17,
        psn: 0x123456,
        gid: vec![0; 16],
        lid: 0,
        mtu: 1024,
        max_read_atomic: 16,
    };
    let open = proto::OpenSessionRequest { client: Some(endpoint), jwt: "a.b.c".into(), ..Default::default() };
    let locate = proto::LocateRequest {
        session_id: 7,
        fids: vec![
            "3,01637037d6".into(),
            "3,1637037d6".into(),
            "3,01637037d6_0".into(),
            "4,01637037d6".into(),
        ],
    };
    vec![[&[0u8][..], &open.encode_to_vec()].concat(), [&[1u8][..], &locate.encode_to_vec()].concat()]
}

fn verify_inputs() -> Vec<Vec<u8>> {
    let data = b"hello, rdma".repeat(4);
    let mut seeds = Vec::new();
    for (selector, version) in [(0u8, Version::V1), (1, Version::V2), (2, Version::V3)] {
        for needle in needles(&data) {
            if let Some(record) = encode(&needle, version) {
                let ids = [needle.id.0.to_be_bytes().as_slice(), &needle.cookie.0.to_be_bytes()].concat();
                seeds.push([&[selector][..], &ids, &record].concat());
            }
        }
    }
    seeds
}

fn tail_messages() -> Vec<Vec<u8>> {
    let data = b"tail".repeat(40);
    let mut seeds = Vec::new();
    for needle in needles(&data) {
        let Some(record) = encode(&needle, Version::V3) else { continue };
        let (header, body) = record.split_at(needle::HEADER_SIZE);
        let mut input = vec![4u8]; // bound 1 KiB
        let pieces: Vec<&[u8]> = body.chunks(64).collect();
        for (i, piece) in pieces.iter().enumerate() {
            input.push(u8::from(i + 1 == pieces.len()));
            input.push(header.len() as u8);
            input.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            input.extend_from_slice(header);
            input.extend_from_slice(piece);
        }
        seeds.push(input);
    }
    seeds
}

fn main() {
    let root =
        std::env::args_os().nth(1).map(PathBuf::from).unwrap_or_else(|| Path::new("corpus").to_owned());
    let corpora = Corpora { root };
    corpora.write("needle_record", records());
    corpora.write("needle_dat_scan", dat_scans());
    corpora.write("needle_idx", idx_files());
    corpora.write("needle_superblock", superblocks());
    corpora.write("needle_ids", ids());
    corpora.write("needle_manifest", manifests());
    corpora.write("vif_json", vif_files());
    corpora.write("http_path", request_targets());
    corpora.write("http_range", range_headers());
    corpora.write("upload_multipart", uploads());
    corpora.write("upload_params", header_params());
    corpora.write("jwt", jwts());
    corpora.write("rdma_control", control_requests());
    corpora.write("rdma_verify", verify_inputs());
    corpora.write("tail_framing", tail_messages());
}
