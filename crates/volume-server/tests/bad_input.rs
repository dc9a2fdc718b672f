//! The "bad input" answers, on the real binary: a malformed fid is 400 with a
//! message, a missing or deleted needle or a wrong cookie is 404, an oversized upload
//! is 413, an unsatisfiable range 416; plus weed's answers for the other refusals.

mod common;

use common::*;

#[test]
fn bad_requests_get_weeds_status_codes_and_a_message() {
    let scratch = tempfile::tempdir().unwrap();
    let server = OurServer::start(&scratch.path().join("data"), &["--file-size-limit-mb", "1"]);
    let a = server.addr.as_str();
    let fid = server.assign("");
    let put = |path: &str, body: &[u8]| {
        request(a, "PUT", path, &[("Content-Type", "application/octet-stream")], body).unwrap()
    };
    assert_eq!(put(&format!("/{fid}"), b"payload").status, 201);

    // Malformed ids: 400 with a message that names the problem.
    for path in ["/1,zz", "/1,123", "/x,0112345678", "/1,ffffffffffffffff00000000_1", "/a/b/c/d"] {
        let r = get(a, path);
        assert_eq!(r.status, 400, "GET {path}");
        assert!(!r.body.is_empty(), "GET {path}: 400 without a message");
    }
    let r = request(a, "DELETE", "/1,zz", &[], b"").unwrap();
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("Invalid fid"), "{}", r.text());
    let r = put("/1,zz", b"x");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
    let (vid, key) = fid.split_once(',').unwrap();
    assert_eq!(put(&format!("/{vid}/{key}"), b"x").status, 400, "writes need the comma form");

    // Missing, wrong cookie, deleted: 404 (DELETE with a wrong cookie: 400, like weed).
    let mut wrong = fid.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == '0' { '1' } else { '0' });
    assert_eq!(get(a, &format!("/{wrong}")).status, 404);
    assert_eq!(get(a, &format!("/{vid},ff12345678")).status, 404);
    assert_eq!(get(a, "/999,0112345678").status, 404);
    let r = request(a, "DELETE", &format!("/{wrong}"), &[], b"").unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("File Random Cookie does not match.")));
    let r = put(&format!("/{wrong}"), b"other cookie");
    assert_eq!(r.status, 500, "overwriting with another cookie: {}", r.text());
    assert!(r.text().contains("mismatching cookie"));
    let r = request(a, "DELETE", &format!("/{fid}"), &[], b"").unwrap();
    assert_eq!(
        (r.status, r.text()),
        (202, format!("{{\"size\":{}}}", 7 + 4 + 1 + 1 + fid.len() + 1 + 24 + 5))
    );
    assert_eq!(get(a, &format!("/{fid}")).status, 404);
    let r = get(a, &format!("/{fid}?readDeleted=true"));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"payload"[..]), "weed's readDeleted");
    let r = request(a, "DELETE", &format!("/{fid}"), &[], b"").unwrap();
    assert_eq!((r.status, r.text().as_str()), (404, "{\"size\":0}"));

    // Too large: 413, nothing stored.
    let big = server.assign("");
    let r = put(&format!("/{big}"), &vec![7u8; (1 << 20) + 1]);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(get(a, &format!("/{big}")).status, 404);
    assert_eq!(put(&format!("/{big}"), &vec![7u8; 1 << 20]).status, 201, "exactly the limit is fine");

    // Ranges and methods.
    let r = request(a, "GET", &format!("/{big}"), &[("Range", "bytes=99999999-")], b"").unwrap();
    assert_eq!((r.status, r.header("content-range")), (416, Some("bytes */1048576")));
    let r = request(a, "PATCH", &format!("/{big}"), &[], b"").unwrap();
    assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("unsupported method PATCH")));
    let r = request(a, "OPTIONS", &format!("/{big}"), &[("Origin", "http://x")], b"").unwrap();
    assert_eq!((r.status, r.header("access-control-allow-origin")), (200, Some("*")));
    assert!(r.header("server").unwrap().contains("SeaweedFS Volume"));
    assert_eq!(r.header("x-amz-request-id").map(str::len), Some(24));

    // Nothing above may have broken the server: it still answers, and counted errors.
    let metrics = get(a, "/metrics").text();
    assert!(metrics.contains("volume_server_errors_total{route=\"read\",class=\"4xx\"}"));
    assert!(!metrics.contains("volume_server_errors_total{route=\"read\",class=\"5xx\"} 1"));
    assert_eq!(get(a, "/healthz").status, 200);
    server.stop();
}

/// Values past what their field holds are refused with a 4xx, or answered as weed
/// answers them, never with a panic: a `ts` past year 9999 reads back with weed's
/// five-digit year, one past the needle's 5-byte field is a 400; an assign `count`
/// that would run the key sequence past 2^64 is weed master's 406, and so is any
/// assign once a volume holds the largest key (the server still starts).
#[test]
fn values_past_their_range_get_a_4xx_or_weeds_answer_not_a_panic() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let server = OurServer::start(&dir, &[]);
    let a = server.addr.as_str();
    let put = |path: &str| {
        request(a, "PUT", path, &[("Content-Type", "application/octet-stream")], b"dated").unwrap()
    };

    let fid = server.assign("");
    assert_eq!(put(&format!("/{fid}?ts=253402300800")).status, 201);
    let r = get(a, &format!("/{fid}"));
    assert_eq!(r.status, 200, "{}", r.text());
    // weed 4.48 answers the same upload with this header (Go formats the year as is).
    assert_eq!(r.header("last-modified"), Some("Sat, 01 Jan 10000 00:00:00 GMT"));
    let r =
        request(a, "GET", &format!("/{fid}"), &[("If-Modified-Since", "Fri, 31 Dec 9999 23:59:59 GMT")], b"")
            .unwrap();
    assert_eq!(r.status, 200, "modified after the date asked about");

    let fid = server.assign("");
    let r = put(&format!("/{fid}?ts=1099511627776"));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("ts"), "{}", r.text());

    let key = |fid: &str| {
        let key_and_cookie = fid.split_once(',').unwrap().1;
        u64::from_str_radix(&key_and_cookie[..key_and_cookie.len() - 8], 16).unwrap()
    };
    let before = key(&server.assign(""));
    let r = get(a, "/dir/assign?count=18446744073709551615");
    assert_eq!(r.status, 406, "{}", r.text());
    assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", r.text());
    assert!(key(&server.assign("")) > before, "the refused count took no keys and reused none");

    // A needle with the largest key: no key is left for the embedded master to give.
    let vid = vid(&fid);
    assert_eq!(put(&format!("/{vid},ffffffffffffffff12345678")).status, 201);
    server.stop();
    let server = OurServer::start(&dir, &[]);
    let r = get(&server.addr, "/dir/assign");
    assert_eq!(r.status, 406, "{}", r.text());
    assert_eq!(get(&server.addr, &format!("/{vid},ffffffffffffffff12345678")).body, b"dated");
    server.stop();
}

/// 8 MiB of zeros, gzipped: about 8 KiB that inflate a thousandfold.
fn gzip_bomb() -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![0u8; 8 << 20]).unwrap();
    encoder.finish().unwrap()
}

/// Gzip is inflated only up to the file size limit: an upload sent with
/// `Content-Encoding: gzip` that inflates past it is a 413, and a stored one read by a
/// client that does not accept gzip is a 406 (it can still be had as gzip).
#[test]
fn gzip_that_inflates_past_the_file_size_limit_is_refused_not_inflated() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let bomb = gzip_bomb();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let gzip_put = |addr: &str, fid: &str| {
        let headers = [("Content-Type", "application/octet-stream"), ("Content-Encoding", "gzip")];
        request(addr, "PUT", &format!("/{fid}"), &headers, &bomb).unwrap()
    };

    let server = OurServer::start(&dir, &["--file-size-limit-mb", "1"]);
    let fid = server.assign("");
    let r = gzip_put(&server.addr, &fid);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(get(&server.addr, &format!("/{fid}")).status, 404, "nothing stored");
    server.stop();

    // Stored under a larger limit, read under a smaller one.
    let server = OurServer::start(&dir, &["--file-size-limit-mb", "16"]);
    let fid = server.assign("");
    assert_eq!(gzip_put(&server.addr, &fid).status, 201);
    assert_eq!(get(&server.addr, &format!("/{fid}")).body.len(), 8 << 20, "within the limit: inflated");
    server.stop();
    let server = OurServer::start(&dir, &["--file-size-limit-mb", "1"]);
    let r = get(&server.addr, &format!("/{fid}"));
    assert_eq!(r.status, 406, "{}", r.text());
    assert!(r.text().contains("Accept-Encoding"), "{}", r.text());
    let r = request(&server.addr, "GET", &format!("/{fid}"), &[("Accept-Encoding", "gzip")], b"").unwrap();
    assert_eq!((r.status, r.body == bomb), (200, true), "as stored, to a client that accepts gzip");
    server.stop();
}

/// Gzip of several members (a client may upload it with `Content-Encoding: gzip`; its
/// trailer declares only the last member's size) reads back whole to a client that does
/// not accept gzip, and as stored to one that does.
#[test]
fn gzip_of_several_members_reads_back_whole() {
    use std::io::Write;
    let scratch = tempfile::tempdir().unwrap();
    let server = OurServer::start(&scratch.path().join("data"), &[]);
    let (first, second) = (pseudo_random(300_000, 1), b"the last member, much shorter".to_vec());
    let mut stored = Vec::new();
    for member in [&first, &second] {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(member).unwrap();
        stored.extend(encoder.finish().unwrap());
    }
    let fid = server.assign("");
    let headers = [("Content-Type", "application/octet-stream"), ("Content-Encoding", "gzip")];
    let r = request(&server.addr, "PUT", &format!("/{fid}"), &headers, &stored).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());

    let r = get(&server.addr, &format!("/{fid}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == [first, second].concat(), "both members inflated: {} bytes", r.body.len());
    let r = request(&server.addr, "GET", &format!("/{fid}"), &[("Accept-Encoding", "gzip")], b"").unwrap();
    assert_eq!((r.status, r.body == stored), (200, true), "as stored, to a client that accepts gzip");
    server.stop();
}

/// One unreadable volume does not keep the server from starting (as in weed, which
/// logs it and serves the others): it is left out, and named in the log, in `/status`
/// (`FailedVolumes`, which weed does not have) and in `/metrics`.
#[test]
fn an_unreadable_volume_is_reported_and_the_others_are_served() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let server = OurServer::start(&dir, &[]);
    let fid = server.assign("");
    let put =
        request(&server.addr, "PUT", &format!("/{fid}"), &[("Content-Type", "text/plain")], b"kept").unwrap();
    assert_eq!(put.status, 201);
    server.stop();
    // Shorter than a superblock: weed says "not initialized" and skips it.
    std::fs::write(dir.join("pics_9.dat"), b"xyz").unwrap();

    let server = OurServer::start(&dir, &[]);
    assert_eq!(get(&server.addr, &format!("/{fid}")).body, b"kept", "the readable volume is served");
    let status = get(&server.addr, "/status").json();
    let ids: Vec<_> =
        status["Volumes"].as_array().unwrap().iter().map(|v| v["Id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1]);
    let failed = &status["FailedVolumes"][0];
    assert_eq!((failed["Id"].as_u64(), failed["Collection"].as_str()), (Some(9), Some("pics")), "{status}");
    assert!(failed["Error"].as_str().is_some_and(|e| e.contains("pics_9.dat")), "{status}");
    let metrics = get(&server.addr, "/metrics").text();
    assert!(metrics.contains("volume_server_volume_load_failed{volume=\"9\"} 1"), "{metrics}");
    server.stop();
}
