//! Shared by the integration tests: a byte-exact HTTP/1.1 client (no automatic
//! decompression or header rewriting, so replies are compared as sent), our server
//! as a child process, and the request set both servers are probed with.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};
#[allow(unused_imports)] // not every test binary uses both
pub use testbeds::{multipart_body, pseudo_random};

/// One HTTP reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names lower-cased; a repeated header keeps its first value.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Sends one request on a fresh connection and reads the whole reply.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    request_on(TcpStream::connect(addr)?, addr, method, path, headers, body)
}

/// [`request`] on a connection the caller opened (e.g. from a chosen source address).
pub fn request_on(
    mut stream: TcpStream,
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let sized = !body.is_empty() || method == "POST" || method == "PUT";
    stream.write_all(request_head(addr, method, path, headers, sized.then_some(body.len())).as_bytes())?;
    stream.write_all(body)?;
    read_reply(stream, method == "HEAD")
}

/// A request's head, through the blank line: `Connection: close`, `headers`, and a
/// `Content-Length` when given.
fn request_head(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
) -> String {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(len) = content_length {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// A request sent as careful clients send large bodies: the head with `Expect:
/// 100-continue`, the body only after the server's `100 Continue`. A server that refuses
/// the request from its head alone (a 413 for a `Content-Length` over the limit) answers
/// before any of the body is sent, so the reply is read whatever the server then does
/// with the connection. ([`request`] would race it: the server may close while the body
/// is still being written, and the client then sees a reset instead of the 413.)
pub fn request_expecting_continue(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let headers: Vec<_> = [("Expect", "100-continue")].into_iter().chain(headers.iter().copied()).collect();
    stream.write_all(request_head(addr, method, path, &headers, Some(body.len())).as_bytes())?;
    // The first answer's status line, left in the socket for read_reply if it is final.
    let mut status_line = [0u8; 12];
    loop {
        match stream.peek(&mut status_line)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n == status_line.len() => break,
            _ => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    if &status_line != b"HTTP/1.1 100" {
        return read_reply(stream, false);
    }
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte)?;
        interim.push(byte[0]);
    }
    stream.write_all(body)?;
    read_reply(stream, false)
}

/// Reads the reply to a request already sent on `stream`, to the end of the connection.
pub fn read_reply(mut stream: TcpStream, head_only: bool) -> std::io::Result<Reply> {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_reply(&raw, head_only)
}

fn parse_reply(raw: &[u8], head_only: bool) -> std::io::Result<Reply> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(status_line))?;
    let mut headers = BTreeMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.entry(k.trim().to_ascii_lowercase()).or_insert_with(|| v.trim().to_owned());
        }
    }
    let rest = &raw[split + 4..];
    let body = if head_only {
        Vec::new()
    } else if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        dechunk(rest).ok_or_else(|| bad("bad chunked body"))?
    } else {
        rest.to_vec()
    };
    Ok(Reply { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).ok()?.split(';').next()?.trim(), 16)
                .ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

pub fn get(addr: &str, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"").unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

pub fn sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// `cp -r` of the files directly in `from` (volumes are flat directories).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Our `volume-server` binary (this package's), running as a child process.
pub struct OurServer {
    server: testbeds::ours::OurVolumeServer,
    pub addr: String,
}

impl OurServer {
    /// Starts `volume-server --dir DIR --port P [extra...]` and waits for `/healthz`.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let bin = testbeds::ours::volume_server_binary();
        let server =
            testbeds::ours::OurVolumeServer::start(&bin, dir, extra).unwrap_or_else(|e| panic!("{e}"));
        Self { addr: server.addr().to_owned(), server }
    }

    /// [`OurServer::start`] listening on and advertising `ip`.
    pub fn start_on(dir: &Path, ip: &str, extra: &[&str]) -> Self {
        let bin = testbeds::ours::volume_server_binary();
        let server =
            testbeds::ours::OurVolumeServer::start_on(&bin, dir, ip, extra).unwrap_or_else(|e| panic!("{e}"));
        Self { addr: server.addr().to_owned(), server }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(self) {
        self.server.stop();
    }

    /// SIGKILL: a crash.
    pub fn kill9(self) {
        self.server.kill();
    }

    /// `/dir/assign` on the embedded master API.
    pub fn assign(&self, query: &str) -> String {
        let reply = get(&self.addr, &format!("/dir/assign{query}"));
        assert_eq!(reply.status, 200, "assign: {}", reply.text());
        reply.json()["fid"].as_str().expect("fid").to_owned()
    }
}

/// Runs our server binary with `args` and `env`, which must refuse to start: exit with
/// failure within 30 s (one still running then is killed and fails the test). Returns
/// its stdout+stderr.
pub fn start_refused(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(testbeds::ours::volume_server_binary())
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "volume-server {args:?} still runs after 30 s: {}",
                std::fs::read_to_string(out.path()).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(out.path()).unwrap();
    assert!(!status.success(), "volume-server {args:?} started: {text}");
    text
}

/// Runs `weed ARGS...` to completion (at most `limit`), `stdin` written to it;
/// returns whether it succeeded and its stdout+stderr.
pub fn run_weed(args: &[&str], stdin: &str, limit: Duration) -> (bool, String) {
    use std::process::{Command, Stdio};
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("weed")
        .args(args)
        .stdin(if stdin.is_empty() { Stdio::null() } else { Stdio::piped() })
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .expect("weed is on PATH");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).unwrap();
    }
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "weed {args:?} did not finish in {limit:?}:\n{}",
                std::fs::read_to_string(out.path()).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), std::fs::read_to_string(out.path()).unwrap())
}

/// Polls `done` every 100 ms for up to `limit`.
pub fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Our server joined to `master` (`--mserver`, `--max 20`, then `extra`), once the
/// master lists it.
pub fn join(dir: &Path, master: &testbeds::weed::WeedMaster, extra: &[&str]) -> OurServer {
    let mserver = master.addr();
    let mut args = vec!["--mserver", &mserver, "--max", "20"];
    args.extend_from_slice(extra);
    let ours = OurServer::start(dir, &args);
    wait_until(Duration::from_secs(20), "the master lists our server", || {
        master.knows_volume_server(&ours.addr)
    });
    ours
}

/// The servers (`url`s) the master's `/dir/lookup` lists for volume `vid`.
pub fn lookup(master: &testbeds::weed::WeedMaster, vid: u32) -> Vec<String> {
    let reply = get(&master.addr(), &format!("/dir/lookup?volumeId={vid}"));
    let locations = reply.json()["locations"].as_array().cloned().unwrap_or_default();
    locations.iter().filter_map(|l| l["url"].as_str().map(str::to_owned)).collect()
}

/// Volume ids a volume server's `/status` lists.
pub fn volume_ids(addr: &str) -> Vec<u32> {
    let status = get(addr, "/status").json();
    let volumes = status["Volumes"].as_array().cloned().unwrap_or_default();
    volumes.iter().filter_map(|v| v["Id"].as_u64().map(|id| id as u32)).collect()
}

/// Whether a volume server's `/status` lists volume `vid` as read-only; None if it does
/// not list it.
pub fn read_only(addr: &str, vid: u32) -> Option<bool> {
    let status = get(addr, "/status").json();
    let volumes = status["Volumes"].as_array().cloned().unwrap_or_default();
    volumes.iter().find(|v| v["Id"].as_u64() == Some(u64::from(vid))).and_then(|v| v["ReadOnly"].as_bool())
}

/// The volume id of a fid's text.
pub fn vid(fid: &str) -> u32 {
    fid.split(',').next().unwrap().parse().unwrap()
}

/// Uploads `data` where the master assigns it (multipart, `f.bin`); returns (fid, server).
pub fn put(master: &testbeds::weed::WeedMaster, data: &[u8]) -> (String, String) {
    let a = testbeds::weed::assign(&master.url(), "").unwrap_or_else(|e| panic!("assign: {e}"));
    let body =
        testbeds::weed::UploadBody::Multipart { filename: "f.bin", content_type: "application/octet-stream" };
    let (status, reply) = testbeds::weed::upload(&a.url, &a.fid, "", data, body, &[]).unwrap();
    assert_eq!(status, 201, "upload {}: {reply}", a.fid);
    (a.fid, a.url)
}

/// Uploads `data` (multipart, `f.bin`) where the master assigns it in data center `dc`,
/// which has a volume (`WeedMaster::grow_in`); returns (fid, server).
pub fn put_in(master: &testbeds::weed::WeedMaster, dc: &str, data: &[u8]) -> (String, String) {
    let a = testbeds::weed::assign(&master.url(), &format!("dataCenter={dc}"))
        .unwrap_or_else(|e| panic!("assign in {dc}: {e}"));
    let body =
        testbeds::weed::UploadBody::Multipart { filename: "f.bin", content_type: "application/octet-stream" };
    let (status, reply) = testbeds::weed::upload(&a.url, &a.fid, "", data, body, &[]).unwrap();
    assert_eq!(status, 201, "upload {} to {}: {reply}", a.fid, a.url);
    (a.fid, a.url)
}

/// A master assign against a real `weed master` (`query` as in a URL: "" or "?ttl=5d").
pub fn weed_assign(master: &testbeds::weed::WeedMaster, query: &str) -> String {
    let query = query.strip_prefix('?').unwrap_or(query);
    testbeds::weed::assign(&master.url(), query).unwrap_or_else(|e| panic!("weed assign: {e}")).fid
}

/// The headers whose values both servers must agree on.
pub const COMPARED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "content-range",
    "content-disposition",
    "etag",
    "last-modified",
    "accept-ranges",
];

/// One request a file is probed with: (label, method, path suffix, headers).
pub type Probe = (String, &'static str, String, Vec<(String, String)>);

/// The requests each file is probed with.
pub fn probes(etag: &str) -> Vec<Probe> {
    let mut out: Vec<Probe> = vec![
        ("GET".into(), "GET", String::new(), vec![]),
        ("GET gzip".into(), "GET", String::new(), vec![("Accept-Encoding".into(), "gzip".into())]),
        ("HEAD".into(), "HEAD", String::new(), vec![]),
        ("GET ?dl=true".into(), "GET", "?dl=true".into(), vec![]),
        (
            "If-Modified-Since future".into(),
            "GET",
            String::new(),
            vec![("If-Modified-Since".into(), "Fri, 01 Jan 2100 00:00:00 GMT".into())],
        ),
    ];
    if !etag.is_empty() {
        out.push((
            "If-None-Match".into(),
            "GET",
            String::new(),
            vec![("If-None-Match".into(), etag.to_owned())],
        ));
    }
    for range in [
        "bytes=0-99",
        "bytes=-10",
        "bytes=100-",
        "bytes=5-5",
        "bytes=0-1,3-4",
        "bytes=999999999-",
        "bytes=foo",
        "bytes=0-0,0-0",
    ] {
        out.push((format!("Range {range}"), "GET", String::new(), vec![("Range".into(), range.into())]));
        out.push((
            format!("Range {range} gzip"),
            "GET",
            String::new(),
            vec![("Range".into(), range.into()), ("Accept-Encoding".into(), "gzip".into())],
        ));
    }
    out
}

/// What a probe observed, normalized for comparison: multipart boundaries are random.
#[derive(Debug, PartialEq, Eq)]
pub struct Observed {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body_sha256: String,
}

pub fn observe(reply: &Reply, extra_headers: &[&str]) -> Observed {
    let boundary =
        reply.header("content-type").and_then(|ct| ct.split_once("boundary=")).map(|(_, b)| b.to_owned());
    let mut body = reply.body.clone();
    let mut headers = BTreeMap::new();
    for name in COMPARED_HEADERS.iter().chain(extra_headers) {
        if let Some(v) = reply.header(name) {
            let v = match &boundary {
                Some(b) => v.replace(b, "BOUNDARY"),
                None => v.to_owned(),
            };
            headers.insert((*name).to_owned(), v);
        }
    }
    if let Some(b) = &boundary {
        let text = String::from_utf8_lossy(&body).replace(b, "BOUNDARY");
        body = text.into_bytes();
    }
    Observed { status: reply.status, headers, body_sha256: sha256(&body) }
}
