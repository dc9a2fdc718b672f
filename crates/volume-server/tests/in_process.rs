//! The server as a library call (`volume_server::server`), as main.rs runs it: started
//! in this process on ports the system picks, it serves uploads and reads, stops when
//! its shutdown future resolves, and a second start on the same directory serves what
//! the first one acknowledged: the first let go of its store (RocksDB's lock is per
//! process, so a store kept alive after its server stopped would fail the second open).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use clap::Parser;
use common::{get, multipart_body, pseudo_random, request};
use volume_server::server::{self, Config};

/// A server running on its own runtime in a thread of this process.
struct InProcess {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<Result<(), String>>,
}

impl InProcess {
    fn start(dir: &Path) -> InProcess {
        let config = Config::parse_from([
            "volume-server",
            "--dir",
            dir.to_str().unwrap(),
            "--port",
            "0",
            "--max",
            "2",
            "--index",
            "rocksdb",
        ]);
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let running = server::start(config).await.map_err(|e| e.to_string())?;
                addr_tx.send(running.http_addr().map_err(|e| e.to_string())?).unwrap();
                running.serve(async move { _ = stopped.await }).await.map_err(|e| e.to_string())
            })
        });
        let addr = match addr_rx.recv() {
            Ok(addr) => addr,
            Err(_) => panic!("the server did not start: {:?}", thread.join()),
        };
        InProcess { addr, stop, thread }
    }

    fn stop(self) {
        self.stop.send(()).unwrap();
        let result = self.thread.join().expect("the server thread panicked");
        assert_eq!(result, Ok(()), "serve ends without an error when asked to stop");
    }
}

#[test]
fn a_server_started_in_process_serves_stops_when_asked_and_keeps_what_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let first = InProcess::start(dir.path());
    assert_ne!(first.addr.port(), 0, "the system picked a port");
    let addr = first.addr.to_string();

    let assigned = get(&addr, "/dir/assign");
    assert_eq!(assigned.status, 200, "{}", assigned.text());
    let fid = assigned.json()["fid"].as_str().unwrap().to_owned();
    let data = pseudo_random(10_000, 7);
    let (content_type, body) = multipart_body("f.bin", Some("application/octet-stream"), &[], &data);
    let written =
        request(&addr, "POST", &format!("/{fid}"), &[("Content-Type", &content_type)], &body).unwrap();
    assert_eq!(written.status, 201, "{}", written.text());
    assert_eq!(get(&addr, &format!("/{fid}")).body, data);

    first.stop();
    assert!(TcpStream::connect(&addr).is_err(), "nothing listens on {addr} after the stop");

    let second = InProcess::start(dir.path());
    let status = get(&second.addr.to_string(), "/status").json();
    assert!(status["FailedVolumes"].is_null(), "the first server let go of its RocksDB maps: {status}");
    let read = get(&second.addr.to_string(), &format!("/{fid}"));
    assert_eq!(read.status, 200);
    assert_eq!(read.body, data, "the restarted server serves the acknowledged write");
    second.stop();
}
