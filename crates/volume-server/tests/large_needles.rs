//! Large needles (data over 1 MiB, stored plain) are streamed from the `.dat`: they read
//! back byte-exact with the same headers, a server does not hold a whole needle per
//! reader, a corrupt one never reads back as a clean 200, and the replies match a real
//! `weed volume` 4.48's.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::*;
use testbeds::weed::{WeedMaster, WeedVolume};

const MIB: usize = 1 << 20;

fn upload_raw(addr: &str, fid: &str, data: &[u8]) -> Reply {
    let headers = [("Content-Type", "application/octet-stream")];
    let reply = request(addr, "POST", &format!("/{fid}?ts=1700000000"), &headers, data).unwrap();
    assert_eq!(reply.status, 201, "upload {fid}: {}", reply.text());
    reply
}

fn get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, headers, b"").unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The server's resident memory, from `/proc/PID/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server is running");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value");
    kib * 1024
}

/// Sends a GET on a fresh connection and reads the reply head; returns the stream and
/// the body bytes read so far.
fn open_get(addr: &str, path: &str) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed before the reply head");
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            return (stream, raw[end + 4..].to_vec());
        }
    }
}

#[test]
fn a_large_needle_reads_back_exact_whole_in_ranges_and_by_head() {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(dir.path(), &[]);
    let data = pseudo_random(48 * MIB, 11);
    let fid = server.assign("");
    let written = upload_raw(&server.addr, &fid, &data);
    let etag = written.header("etag").expect("the write's ETag").to_owned();

    let whole = get(&server.addr, &format!("/{fid}"));
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), Some(data.len().to_string().as_str()));
    assert_eq!(whole.header("etag"), Some(etag.as_str()));
    assert_eq!(whole.header("accept-ranges"), Some("bytes"));
    assert_eq!(whole.header("last-modified"), Some("Tue, 14 Nov 2023 22:13:20 GMT"));
    assert!(whole.header("content-type").is_some(), "sniffed from the first bytes");
    assert!(whole.body == data, "the body is the upload, byte for byte");

    let (start, end) = (20 * MIB + 12345, 27 * MIB + 999);
    let middle = get_with(&server.addr, &format!("/{fid}"), &[("Range", &format!("bytes={start}-{end}"))]);
    assert_eq!(middle.status, 206);
    assert_eq!(middle.header("content-range"), Some(format!("bytes {start}-{end}/{}", data.len()).as_str()));
    assert!(middle.body == data[start..=end]);
    let suffix = get_with(&server.addr, &format!("/{fid}"), &[("Range", "bytes=-1000")]);
    assert_eq!(suffix.status, 206);
    assert!(suffix.body == data[data.len() - 1000..]);
    let everything = get_with(&server.addr, &format!("/{fid}"), &[("Range", "bytes=0-")]);
    assert_eq!(everything.status, 206);
    assert!(everything.body == data);

    let two = get_with(&server.addr, &format!("/{fid}"), &[("Range", "bytes=0-9,30000000-30000009")]);
    assert_eq!(two.status, 206);
    assert_eq!(two.header("content-length"), Some(two.body.len().to_string().as_str()));
    let text = String::from_utf8_lossy(&two.body);
    assert!(text.contains(&format!("Content-Range: bytes 30000000-30000009/{}", data.len())), "{text}");
    let at = |needle: &[u8]| two.body.windows(needle.len()).position(|w| w == needle);
    assert!(at(&data[..10]).is_some() && at(&data[30_000_000..30_000_010]).is_some());

    let head = request(&server.addr, "HEAD", &format!("/{fid}"), &[], b"").unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(data.len().to_string().as_str()));
    assert_eq!(head.header("etag"), Some(etag.as_str()));
    let not_modified = get_with(&server.addr, &format!("/{fid}"), &[("If-None-Match", &etag)]);
    assert_eq!(not_modified.status, 304);
    server.stop();
}

#[test]
fn concurrent_slow_readers_do_not_each_hold_the_needle() {
    const READERS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(dir.path(), &[]);
    let data = pseudo_random(48 * MIB, 12);
    let fid = server.assign("");
    upload_raw(&server.addr, &fid, &data);
    // One full read first, so what one reply costs is in the baseline.
    assert_eq!(get(&server.addr, &format!("/{fid}")).body.len(), data.len());
    let pid = server.pid();
    let baseline = rss_bytes(pid);

    let started = Arc::new(Barrier::new(READERS + 1));
    let finish = Arc::new(Barrier::new(READERS + 1));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (addr, path) = (server.addr.clone(), format!("/{fid}"));
            let (started, finish) = (Arc::clone(&started), Arc::clone(&finish));
            std::thread::spawn(move || {
                let (mut stream, mut body) = open_get(&addr, &path);
                // A slow client: a little at a time, then it stalls mid-transfer.
                let mut buf = vec![0u8; 64 * 1024];
                while body.len() < 2 * MIB {
                    let n = stream.read(&mut buf).unwrap();
                    body.extend_from_slice(&buf[..n]);
                    std::thread::sleep(Duration::from_millis(5));
                }
                started.wait();
                finish.wait();
                let mut rest = Vec::new();
                stream.read_to_end(&mut rest).unwrap();
                body.len() + rest.len()
            })
        })
        .collect();
    started.wait();
    let mut peak = 0;
    for _ in 0..10 {
        peak = peak.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    finish.wait();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), data.len(), "every reader gets the whole needle");
    }
    let growth = peak.saturating_sub(baseline);
    eprintln!(
        "server RSS: baseline {} MiB, peak with {READERS} readers of a 48 MiB needle mid-transfer {} MiB (+{} MiB)",
        baseline >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(growth < 96 * MIB as u64, "RSS grew by {} MiB", growth >> 20);
    server.stop();
}

#[test]
fn a_corrupt_large_needle_never_reads_back_complete() {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(dir.path(), &[]);
    let data = pseudo_random(8 * MIB, 13);
    let fid = server.assign("");
    upload_raw(&server.addr, &fid, &data);
    let small_fid = server.assign("");
    upload_raw(&server.addr, &small_fid, b"a small neighbour");

    // Flip a byte in the middle of the data, in the .dat under the live server.
    let vid = fid.split(',').next().unwrap();
    let dat_path = dir.path().join(format!("{vid}.dat"));
    let dat = std::fs::read(&dat_path).unwrap();
    let marker = &data[4 * MIB..4 * MIB + 64];
    let at = dat.windows(marker.len()).position(|w| w == marker).expect("the data is in the .dat");
    let file = std::fs::OpenOptions::new().write(true).open(&dat_path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &[dat[at] ^ 0x01], at as u64).unwrap();
    drop(file);

    let mut stream = TcpStream::connect(&server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(stream, "GET /{fid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    // A reset is as good as a close here: either way the transfer failed.
    let _ = stream.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let body_len = end.map_or(0, |end| raw.len() - end - 4);
    assert!(body_len < data.len(), "a corrupt needle was sent whole ({body_len} bytes)");

    let head = request(&server.addr, "HEAD", &format!("/{fid}"), &[], b"").unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(data.len().to_string().as_str()));
    let small = get(&server.addr, &format!("/{small_fid}"));
    assert_eq!((small.status, small.body.as_slice()), (200, &b"a small neighbour"[..]));
    server.stop();
}

#[test]
fn large_needle_replies_match_weed() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed = WeedVolume::start(&scratch.path().join("weed"), &master).unwrap();
    let ours_dir = scratch.path().join("ours");
    std::fs::create_dir_all(&ours_dir).unwrap();
    let ours = OurServer::start(&ours_dir, &[]);
    let data = pseudo_random(6 * MIB + 777, 14);

    let weed_fid = weed_assign(&master, "");
    let weed_written = upload_raw(&weed.addr(), &weed_fid, &data);
    let our_fid = ours.assign("");
    let our_written = upload_raw(&ours.addr, &our_fid, &data);
    let etag = weed_written.header("etag").unwrap().to_owned();
    assert_eq!(our_written.header("etag"), Some(etag.as_str()));

    // A raw upload is named after its fid, which differs between the two servers.
    let same = |mine: &Reply, theirs: &Reply, what: &str| {
        let (mut mine, mut theirs) = (observe(mine, &[]), observe(theirs, &[]));
        for (observed, fid) in [(&mut mine, &our_fid), (&mut theirs, &weed_fid)] {
            if let Some(v) = observed.headers.get_mut("content-disposition") {
                *v = v.replace(fid.as_str(), "FID");
            }
        }
        assert_eq!(mine, theirs, "{what}");
    };
    let mut compared = 0;
    for (label, method, suffix, headers) in probes(&etag) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let theirs = request(&weed.addr(), method, &format!("/{weed_fid}{suffix}"), &headers, b"").unwrap();
        let mine = request(&ours.addr, method, &format!("/{our_fid}{suffix}"), &headers, b"").unwrap();
        same(&mine, &theirs, &label);
        compared += 1;
    }
    let middle = [("Range", "bytes=3000000-4000000")];
    let theirs = request(&weed.addr(), "GET", &format!("/{weed_fid}"), &middle, b"").unwrap();
    let mine = request(&ours.addr, "GET", &format!("/{our_fid}"), &middle, b"").unwrap();
    same(&mine, &theirs, "a range in the middle");
    assert!(compared > 10);
    ours.stop();
    weed.stop();
    master.stop();
}
