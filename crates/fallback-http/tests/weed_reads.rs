//! The HTTP transport against a live `weed` 4.48: verified reads of every kind of
//! needle, 404s, a dead server, and a byte corrupted in the `.dat` under the running
//! server, which must never come back as data.

use fallback_http::{HttpReadConfig, HttpReadError, HttpReader};
use needle::{FileId, OffsetWidth, SuperBlock};
use std::os::unix::fs::FileExt;
use std::time::Duration;
use testbeds::canned::serve_once;
use testbeds::pseudo_random;
use testbeds::weed::{UploadBody, WeedMaster, WeedVolume, assign, upload};

struct Stored {
    fid: FileId,
    server: String,
    body: Vec<u8>,
}

fn put(master: &WeedMaster, filename: &str, content_type: &str, body: Vec<u8>) -> Stored {
    let assignment = assign(&master.url(), "").expect("assign");
    let multipart = UploadBody::Multipart { filename, content_type };
    let (status, _) = upload(&assignment.url, &assignment.fid, "", &body, multipart, &[]).expect("upload");
    assert_eq!(status, 201);
    Stored { fid: assignment.fid.parse().unwrap(), server: assignment.url, body }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("valid gzip");
    out
}

/// Flips one byte of `fid`'s data inside its volume's `.dat`, in place.
fn corrupt_data_byte(volume_dir: &std::path::Path, fid: &FileId) {
    let dat_path = volume_dir.join(format!("{}.dat", fid.volume));
    let idx = std::fs::read(dat_path.with_extension("idx")).unwrap();
    let entry =
        needle::idx::entries(&idx, OffsetWidth::Five).filter(|e| e.key == fid.needle_id()).last().unwrap();
    let dat = std::fs::read(&dat_path).unwrap();
    assert_eq!(SuperBlock::parse(&dat).unwrap().version, needle::Version::V3);
    // The data starts after the 16-byte header and the 4-byte DataSize; hit its middle.
    let data_len = u32::from_be_bytes(dat[entry.byte_offset() as usize + 16..][..4].try_into().unwrap());
    let at = entry.byte_offset() + 20 + u64::from(data_len / 2);
    let file = std::fs::OpenOptions::new().write(true).open(&dat_path).unwrap();
    file.write_all_at(&[dat[at as usize] ^ 0xff], at).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_reads_from_a_live_weed() {
    let root = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(root.path(), 64).unwrap_or_else(|e| panic!("{e}"));
    let volume = WeedVolume::start(&root.path().join("volume"), &master).unwrap_or_else(|e| panic!("{e}"));

    let small = put(&master, "hello.txt", "text/plain", b"hello".to_vec());
    let text = put(&master, "notes.txt", "text/plain", "a dull boy\n".repeat(5000).into_bytes());
    let large = put(&master, "big.bin", "application/octet-stream", pseudo_random(3 << 20, 7));
    let empty = put(&master, "empty.txt", "text/plain", Vec::new());
    let reader = HttpReader::new(&HttpReadConfig::default()).unwrap();

    let got = reader.read_needle(&small.server, &small.fid, None).await.unwrap();
    assert_eq!((&got.bytes[..], got.compressed, got.crc), (&b"hello"[..], false, 0x9a71bb4c));

    let got = reader.read_needle(&text.server, &text.fid, None).await.unwrap();
    assert!(got.compressed, "weed gzips text it stores; we receive the stored form");
    assert!(got.bytes.len() < text.body.len() / 10);
    assert_eq!(gunzip(&got.bytes), text.body);

    let got = reader.read_needle(&large.server, &large.fid, None).await.unwrap();
    assert_eq!(got.bytes, large.body);

    let got = reader.read_needle(&empty.server, &empty.fid, None).await.unwrap();
    assert!(got.bytes.is_empty());

    let missing: FileId = format!("{},ffffffff12345678", small.fid.volume).parse().unwrap();
    let wrong_cookie = FileId { cookie: needle::Cookie(small.fid.cookie.0 ^ 1), ..small.fid };
    for fid in [missing, wrong_cookie] {
        let err = reader.read_needle(&small.server, &fid, None).await.unwrap_err();
        assert!(matches!(err, HttpReadError::NotFound { .. }), "{fid}: {err}");
    }

    // A corrupted byte under the live server: weed 4.48 checks the CRC itself and
    // answers 500 (for large needles too); a server that streamed the bad bytes would
    // be caught by our own check (see `corrupt_bytes_in_flight_are_rejected`). Either
    // way no data comes back.
    for stored in [&small, &large] {
        corrupt_data_byte(volume.dir(), &stored.fid);
        let err = reader.read_needle(&stored.server, &stored.fid, None).await.unwrap_err();
        assert!(
            matches!(err, HttpReadError::Server { status: 500, .. } | HttpReadError::ChecksumMismatch { .. }),
            "corrupt needle {}: {err}",
            stored.fid
        );
    }

    let server = small.server.clone();
    volume.stop();
    let quick =
        HttpReader::new(&HttpReadConfig { request_timeout: Duration::from_secs(2), ..Default::default() })
            .unwrap();
    let err = quick.read_needle(&server, &small.fid, None).await.unwrap_err();
    assert!(matches!(err, HttpReadError::Transport { .. }), "dead server: {err}");
    master.stop();
}

// The tests below fake, with canned answers, a volume server whose bytes were corrupted
// in flight or that lies about its checksum, which no real weed produces on demand; the
// real-server paths are covered above.

#[tokio::test]
async fn corrupt_bytes_in_flight_are_rejected() {
    let reader = HttpReader::new(&HttpReadConfig::default()).unwrap();
    let fid: FileId = "3,01637037d6".parse().unwrap();
    // "hellp" with the ETag of "hello".
    let lying = b"HTTP/1.1 200 OK\r\nETag: \"9a71bb4c\"\r\nContent-Length: 5\r\n\r\nhellp".to_vec();
    let err = reader.read_needle(&serve_once(lying), &fid, None).await.unwrap_err();
    assert!(matches!(err, HttpReadError::ChecksumMismatch { expected: 0x9a71bb4c, .. }), "{err}");

    let unverifiable = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let err = reader.read_needle(&serve_once(unverifiable), &fid, None).await.unwrap_err();
    assert!(matches!(err, HttpReadError::MissingChecksum { etag: None, .. }), "{err}");
}

#[tokio::test]
async fn a_streamed_body_fails_at_its_end_when_the_crc_does_not_match() {
    let reader = HttpReader::new(&HttpReadConfig::default()).unwrap();
    let fid: FileId = "3,01637037d6".parse().unwrap();
    // "hellp" with the ETag of "hello", in two chunks: the bytes arrive, the end is an error.
    let lying =
        b"HTTP/1.1 200 OK\r\nETag: \"9a71bb4c\"\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlp\r\n0\r\n\r\n"
            .to_vec();
    let mut body = reader.open_needle(&serve_once(lying), &fid, None).await.unwrap();
    assert_eq!(body.expected_crc(), 0x9a71bb4c);
    let mut received = Vec::new();
    let err = loop {
        match body.next_unverified_chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => panic!("a mismatching body must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert_eq!(received, b"hellp");
    assert!(
        matches!(err, HttpReadError::ChecksumMismatch { computed, .. } if computed == needle::crc::crc32c(b"hellp")),
        "{err}"
    );

    let honest = b"HTTP/1.1 200 OK\r\nETag: \"9a71bb4c\"\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    let mut body = reader.open_needle(&serve_once(honest), &fid, None).await.unwrap();
    assert_eq!(body.content_length, Some(5));
    assert_eq!(body.next_unverified_chunk().await.unwrap().as_deref(), Some(&b"hello"[..]));
    assert!(body.next_unverified_chunk().await.unwrap().is_none(), "ends verified");
}
