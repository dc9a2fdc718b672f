//! weed's `-concurrentUploadLimitMB` / `-concurrentDownloadLimitMB` on our server, over
//! real HTTP: a request that finds no room in the byte budget within the timeout gets
//! weed's 429 JSON, replica writes are not limited, and once the budget is free again
//! requests succeed and every acknowledged write reads back exact.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{OurServer, Reply, get, pseudo_random, read_reply, request, wait_until};

const KIB: usize = 1024;

/// `--concurrent-*-limit-mb 1` with a 1 s wait.
const LIMITED: [&str; 8] = [
    "--concurrent-upload-limit-mb",
    "1",
    "--inflight-upload-data-timeout-secs",
    "1",
    "--concurrent-download-limit-mb",
    "1",
    "--inflight-download-data-timeout-secs",
    "1",
];

/// Sends a request's head only (declaring `content_length` body bytes when given) and
/// returns the open connection.
fn send_head(addr: &str, method: &str, path: &str, content_length: Option<usize>) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(len) = content_length {
        head.push_str(&format!("Content-Type: application/octet-stream\r\nContent-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream
}

/// A metric's value from `/metrics`.
fn metric(addr: &str, series: &str) -> u64 {
    let text = get(addr, "/metrics").text();
    let line = text.lines().find(|l| l.starts_with(series)).unwrap_or_else(|| panic!("no {series}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a number")
}

fn upload(addr: &str, path: &str, data: &[u8]) -> Reply {
    request(addr, "POST", path, &[("Content-Type", "application/octet-stream")], data).unwrap()
}

#[test]
fn an_upload_with_no_room_in_time_gets_429_and_replica_writes_are_not_limited() {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(dir.path(), &LIMITED);
    let addr = server.addr.as_str();

    // A slow upload holds 900 KiB of the 1 MiB budget: its head and a first piece only.
    let slow_fid = server.assign("");
    let slow_data = pseudo_random(900 * KIB, 1);
    let mut slow = send_head(addr, "POST", &format!("/{slow_fid}"), Some(slow_data.len()));
    slow.write_all(&slow_data[..100 * KIB]).unwrap();
    wait_until(Duration::from_secs(10), "the slow upload is admitted", || {
        metric(addr, "volume_server_in_flight_bytes{op=\"upload\"}") == 900 * KIB as u64
    });

    // 150 KiB more do not fit: refused after the 1 s wait, before any body is read.
    let refused_fid = server.assign("");
    let started = Instant::now();
    let refused =
        read_reply(send_head(addr, "POST", &format!("/{refused_fid}"), Some(150 * KIB)), false).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "refused before the wait: {:?}",
        started.elapsed()
    );
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("content-type"), Some("application/json"));
    assert_eq!(
        refused.json(),
        serde_json::json!({"error": "reject because inflight upload data 921600 > 1048576, and wait timeout"})
    );
    // Byte for byte as weed 4.48 sends it (Go escapes `>`), checked against `weed server`.
    assert_eq!(
        refused.text(),
        r#"{"error":"reject because inflight upload data 921600 \u003e 1048576, and wait timeout"}"#
    );
    assert_eq!(metric(addr, "volume_server_throttled_total{op=\"upload\"}"), 1);

    // A replica write is not limited (its upload was admitted where it was fanned out from).
    let replica_fid = server.assign("");
    let replica_data = pseudo_random(300 * KIB, 2);
    let replica = upload(addr, &format!("/{replica_fid}?type=replicate"), &replica_data);
    assert_eq!(replica.status, 201, "{}", replica.text());

    // The slow upload finishes; its bytes come back and uploads fit again.
    slow.write_all(&slow_data[100 * KIB..]).unwrap();
    let slow_reply = read_reply(slow, false).unwrap();
    assert_eq!(slow_reply.status, 201, "{}", slow_reply.text());
    wait_until(Duration::from_secs(10), "the budget is free", || {
        metric(addr, "volume_server_in_flight_bytes{op=\"upload\"}") == 0
    });
    let later_data = pseudo_random(150 * KIB, 3);
    let later = upload(addr, &format!("/{refused_fid}"), &later_data);
    assert_eq!(later.status, 201, "{}", later.text());

    for (fid, data) in [(&slow_fid, &slow_data), (&replica_fid, &replica_data), (&refused_fid, &later_data)] {
        let read = get(addr, &format!("/{fid}"));
        assert_eq!(read.status, 200);
        assert!(read.body == *data, "{fid} reads back byte for byte");
    }
}

#[test]
fn a_read_with_no_room_in_time_gets_429_until_the_holding_reply_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = OurServer::start(dir.path(), &LIMITED);
    let addr = server.addr.as_str();
    let (big_fid, small_fid) = (server.assign(""), server.assign(""));
    let big = pseudo_random(32 * 1024 * KIB, 4);
    let small = pseudo_random(10 * KIB, 5);
    assert_eq!(upload(addr, &format!("/{big_fid}"), &big).status, 201);
    assert_eq!(upload(addr, &format!("/{small_fid}"), &small).status, 201);

    // A client that does not read holds the streamed reply, and its share of the budget
    // (two 1 MiB chunks, capped at the whole 1 MiB budget): far more than socket buffers take.
    let stalled = send_head(addr, "GET", &format!("/{big_fid}"), None);
    wait_until(Duration::from_secs(10), "the stalled read is admitted", || {
        metric(addr, "volume_server_in_flight_bytes{op=\"download\"}") > 0
    });
    let refused = get(addr, &format!("/{small_fid}"));
    assert_eq!(refused.status, 429, "{}", refused.text());
    let message = refused.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.starts_with(&format!("request /{small_fid} because inflight download data "))
            && message.ends_with(" > 1048576, and wait timeout"),
        "{message}"
    );
    assert_eq!(metric(addr, "volume_server_throttled_total{op=\"download\"}"), 1);

    // The client goes away: the reply is dropped and its bytes given back.
    drop(stalled);
    wait_until(Duration::from_secs(10), "the budget is free", || {
        metric(addr, "volume_server_in_flight_bytes{op=\"download\"}") == 0
    });
    let small_read = get(addr, &format!("/{small_fid}"));
    assert_eq!(small_read.status, 200);
    assert!(small_read.body == small);
    let big_read = get(addr, &format!("/{big_fid}"));
    assert_eq!(big_read.status, 200);
    assert!(big_read.body == big, "the large needle reads back byte for byte");
}
