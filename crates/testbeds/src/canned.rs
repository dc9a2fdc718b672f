//! A canned HTTP answer on loopback, for the one thing no real server produces on
//! demand: bytes corrupted in flight (or a server lying about its checksum). Tests that
//! use it say what it fakes; the real-server paths are tested against real servers.

use std::io::{Read, Write};
use std::net::TcpListener;

/// Serves one connection on a free loopback port: reads the request (up to 4 KiB) and
/// answers with `response` verbatim. Returns the `host:port`.
pub fn serve_once(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = listener.local_addr().expect("a bound listener has an address").to_string();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepting the one connection");
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request);
        let _ = stream.write_all(&response);
    });
    addr
}
