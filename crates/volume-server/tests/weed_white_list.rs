//! weed's `[guard] white_list`, live: a `weed master` and a volume server (ours, then a
//! real `weed volume`) reading a `security.toml` whose list allows 127.0.0.1 only.
//! Requests come over loopback from 127.0.0.1 (on the list) and from 127.0.0.2 (not on
//! it): uploads and deletes from 127.0.0.2 get weed's bare 401 even with a forged
//! `X-Forwarded-For`, reads and `/status` stay open, and both servers answer the same
//! request set with the same statuses, lengths and bodies.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;

use common::*;
use testbeds::weed::{WeedMaster, WeedVolume};

const ALLOWED: &str = "127.0.0.1";
const REFUSED: &str = "127.0.0.2";

/// A connection to `addr` from the loopback address `source` (all of 127/8 is local).
fn connect_from(source: &str, addr: &str) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
    runtime
        .block_on(async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))?;
            let stream = socket.connect(addr.parse().unwrap()).await?;
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            Ok::<_, std::io::Error>(stream)
        })
        .unwrap_or_else(|e| panic!("connect to {addr} from {source}: {e}"))
}

/// One request from `source`. A server may answer a refused upload without reading its
/// body and close, so the kernel can reset the connection before the reply is read:
/// try again (bounded).
fn send_from(
    source: &str,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut attempts = 0;
    loop {
        match request_on(connect_from(source, addr), addr, method, path, headers, body) {
            Ok(reply) => return reply,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && attempts < 5 => attempts += 1,
            Err(e) => panic!("{method} {path} on {addr} from {source}: {e}"),
        }
    }
}

fn upload_from(
    source: &str,
    addr: &str,
    method: &str,
    fid: &str,
    data: &[u8],
    extra: &[(&str, &str)],
) -> Reply {
    let (content_type, body) = multipart_body("hello.txt", Some("text/plain"), &[], data);
    let mut headers = vec![("Content-Type", content_type.as_str())];
    headers.extend_from_slice(extra);
    send_from(source, addr, method, &format!("/{fid}"), &headers, &body)
}

/// (label, status, content type, content length, body) of each request of the set, run
/// against the one volume server behind `master`; asserts what must hold on any
/// weed-compatible server.
fn probe(master: &WeedMaster) -> Vec<(String, u16, String, String, String)> {
    let mut seen = Vec::new();
    let mut record = |label: &str, reply: &Reply| {
        let header = |name| reply.header(name).unwrap_or_default().to_owned();
        seen.push((
            label.to_owned(),
            reply.status,
            header("content-type"),
            header("content-length"),
            reply.text(),
        ));
    };
    let refused = |reply: &Reply, what: &str| {
        assert_eq!((reply.status, reply.text()), (401, String::new()), "{what}: weed's bare 401");
    };
    let data = pseudo_random(3000, 11);
    let (fid, server) = put(master, &data);
    let (other_fid, other_server) = {
        let a = testbeds::weed::assign(&master.url(), "").unwrap();
        (a.fid, a.url)
    };
    assert_eq!(server, other_server, "one volume server");

    let r = upload_from(REFUSED, &server, "POST", &other_fid, &data, &[]);
    refused(&r, "POST from an address not on the list");
    record("POST refused", &r);
    let forged = [("X-Forwarded-For", ALLOWED), ("X-Real-IP", ALLOWED), ("Forwarded", "for=127.0.0.1")];
    let r = upload_from(REFUSED, &server, "POST", &other_fid, &data, &forged);
    refused(&r, "POST claiming to come from an allowed address");
    record("POST forged X-Forwarded-For", &r);
    let r = upload_from(REFUSED, &server, "PUT", &other_fid, &data, &[]);
    refused(&r, "PUT from an address not on the list");
    record("PUT refused", &r);
    let r = send_from(REFUSED, &server, "GET", &format!("/{other_fid}"), &[], b"");
    assert_eq!(r.status, 404, "the refused upload wrote nothing");
    record("GET after refused upload", &r);

    let r = send_from(REFUSED, &server, "GET", &format!("/{fid}"), &[], b"");
    assert_eq!((r.status, r.body == data), (200, true), "reads stay open");
    record("GET from anywhere", &r);
    let r = send_from(REFUSED, &server, "HEAD", &format!("/{fid}"), &[], b"");
    assert_eq!(r.status, 200, "HEAD stays open");
    record("HEAD from anywhere", &r);
    let r = send_from(REFUSED, &server, "GET", "/status", &[], b"");
    assert_eq!(r.status, 200, "/status stays open");
    let r = send_from(REFUSED, &server, "GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200, "/healthz stays open");

    let r = send_from(REFUSED, &server, "DELETE", &format!("/{fid}"), &forged, b"");
    refused(&r, "DELETE from an address not on the list");
    record("DELETE refused", &r);
    let r = send_from(ALLOWED, &server, "GET", &format!("/{fid}"), &[], b"");
    assert_eq!((r.status, r.body == data), (200, true), "the refused delete deleted nothing");

    let r = upload_from(ALLOWED, &server, "POST", &other_fid, &data[..500], &[]);
    assert_eq!(r.status, 201, "POST from the list: {}", r.text());
    record("POST allowed", &r);
    let r = send_from(ALLOWED, &server, "DELETE", &format!("/{fid}"), &[], b"");
    assert_eq!(r.status, 202, "DELETE from the list: {}", r.text());
    record("DELETE allowed", &r);
    let r = send_from(REFUSED, &server, "GET", &format!("/{fid}"), &[], b"");
    assert_eq!(r.status, 404, "deleted");
    seen
}

fn write_security_toml(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("security.toml");
    std::fs::write(&path, format!("[guard]\nwhite_list = \"{ALLOWED},192.0.2.0/24\"\n")).unwrap();
    path
}

#[test]
fn uploads_and_deletes_only_from_the_white_list_as_weed_does() {
    let scratch = tempfile::tempdir().unwrap();
    let config_dir = scratch.path().join("config");
    let security_toml = write_security_toml(&config_dir);

    // The master reads the same file: its /dir/assign is guarded too, and we ask it from
    // 127.0.0.1.
    let master = WeedMaster::start_in(&scratch.path().join("m-ours"), 100, Some(&config_dir)).unwrap();
    let ours =
        join(&scratch.path().join("ours"), &master, &["--security-config", security_toml.to_str().unwrap()]);
    let from_ours = probe(&master);

    let weed_master = WeedMaster::start_in(&scratch.path().join("m-weed"), 100, Some(&config_dir)).unwrap();
    let weed = WeedVolume::start_in(&scratch.path().join("weed"), &weed_master, Some(&config_dir)).unwrap();
    let from_weed = probe(&weed_master);

    assert_eq!(from_ours.len(), from_weed.len());
    for (o, w) in from_ours.iter().zip(&from_weed) {
        assert_eq!(o, w, "ours vs weed volume");
    }
    weed.stop();
    weed_master.stop();
    ours.stop();
    master.stop();
}

#[test]
fn the_white_list_flag_guards_a_standalone_server_and_a_bad_entry_stops_it() {
    let scratch = tempfile::tempdir().unwrap();
    let ours =
        OurServer::start(&scratch.path().join("flag"), &["--white-list", &format!("10.0.0.0/8,{REFUSED}")]);
    // The embedded master API is guarded as weed master's is.
    let r = send_from(ALLOWED, &ours.addr, "GET", "/dir/assign", &[], b"");
    assert_eq!((r.status, r.text()), (401, String::new()), "assign from 127.0.0.1");
    let r = send_from(REFUSED, &ours.addr, "GET", "/dir/assign", &[], b"");
    assert_eq!(r.status, 200, "assign from {REFUSED}: {}", r.text());
    let fid = r.json()["fid"].as_str().unwrap().to_owned();
    let data = pseudo_random(700, 3);
    let r = upload_from(ALLOWED, &ours.addr, "POST", &fid, &data, &[]);
    assert_eq!((r.status, r.text()), (401, String::new()), "127.0.0.1 is not on the list");
    let r = upload_from(REFUSED, &ours.addr, "POST", &fid, &data, &[]);
    assert_eq!(r.status, 201, "{REFUSED} is: {}", r.text());
    ours.stop();

    // A bad entry stops the server with a message instead of leaving it unguarded.
    let dir = scratch.path().join("bad");
    let stderr = start_refused(
        &["--dir", dir.to_str().unwrap(), "--port", "0"],
        &[("WEED_GUARD_WHITE_LIST", "127.0.0.1,localhost")],
    );
    assert!(stderr.contains("WEED_GUARD_WHITE_LIST") && stderr.contains("\"localhost\""), "{stderr}");
}
