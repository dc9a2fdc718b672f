//! Test 4: `kill -9` during concurrent uploads loses nothing acknowledged.
//!
//! Several rounds: start our server on the same directory, check that every upload
//! acknowledged so far reads back byte-identical (and every acknowledged delete is
//! gone), run concurrent uploads and deletes from a few threads, and SIGKILL the
//! server at a pseudo-random moment (every other round with `--fsync`). Finally a real `weed volume` must open the
//! directory read-write and serve every acknowledged file. Once with each needle map.
//!
//! The moment is a point in the clients' progress (after a pseudo-random number of
//! acknowledged operations, with the clients still writing), not a point in time: a slow
//! machine crashes the server after as much work as a fast one.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use testbeds::weed::{WeedMaster, WeedVolume};

const ROUNDS: u64 = 5;
const THREADS: u64 = 4;

/// What clients were told: fid -> Some(data) (stored) or None (deleted).
type Acked = Arc<Mutex<BTreeMap<String, Option<Vec<u8>>>>>;

fn verify(addr: &str, acked: &Acked) -> usize {
    let acked = acked.lock().unwrap();
    for (fid, expected) in acked.iter() {
        let reply = get(addr, &format!("/{fid}"));
        match expected {
            Some(data) => {
                assert_eq!(reply.status, 200, "acknowledged {fid} is missing on {addr}");
                assert!(reply.body == *data, "acknowledged {fid} reads back different bytes on {addr}");
            }
            None => assert_eq!(reply.status, 404, "acknowledged delete of {fid} undone on {addr}"),
        }
    }
    acked.len()
}

/// Uploads (and now and then deletes) until the server goes away or `stop` is set,
/// counting each acknowledged operation in `done`.
fn client(addr: String, seed: u64, stop: Arc<AtomicBool>, acked: Acked, done: Arc<AtomicUsize>) {
    let mut mine = Vec::new();
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if i % 7 == 6 && !mine.is_empty() {
            let fid: String = mine.swap_remove((seed as usize + i as usize) % mine.len());
            // Unanswered, a delete may or may not have happened: stop tracking the file.
            let answer = acked.lock().unwrap().remove(&fid);
            match request(&addr, "DELETE", &format!("/{fid}"), &[], b"") {
                Ok(r) if r.status == 202 => {
                    acked.lock().unwrap().insert(fid, None);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => panic!("delete {fid}: {} {}", r.status, r.text()),
                Err(_) => {
                    drop(answer);
                    return;
                }
            }
            continue;
        }
        let Ok(assign) = request(&addr, "GET", "/dir/assign", &[], b"") else { return };
        let Some(fid) = assign.json()["fid"].as_str().map(str::to_owned) else { return };
        let size = (pseudo_random(4, seed * 1_000_003 + i).iter().fold(0usize, |a, &b| a * 256 + b as usize))
            % (64 << 10);
        let data = pseudo_random(size, seed ^ (i << 20));
        match request(
            &addr,
            "PUT",
            &format!("/{fid}"),
            &[("Content-Type", "application/octet-stream")],
            &data,
        ) {
            Ok(r) if r.status == 201 => {
                acked.lock().unwrap().insert(fid.clone(), Some(data));
                mine.push(fid);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(r) => panic!("upload {fid}: {} {}", r.status, r.text()),
            Err(_) => return,
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_and_the_volume_opens_in_weed() {
    kill_9_rounds("memory");
}

/// The same with the RocksDB map, which keeps its latest entries in memory only (the
/// `.idx` is its log): each restart replays the `.idx` from the map's watermark.
#[test]
fn acknowledged_writes_survive_kill_9_with_the_rocksdb_map() {
    kill_9_rounds("rocksdb");
}

fn kill_9_rounds(index: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let acked: Acked = Arc::default();
    for round in 0..ROUNDS {
        // Every other round acknowledges only after fsync.
        let mut flags = vec!["--max", "3", "--index", index];
        if round % 2 == 1 {
            flags.push("--fsync");
        }
        let server = OurServer::start(&dir, &flags);
        verify(&server.addr, &acked);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..THREADS)
            .map(|t| {
                let (addr, stop, acked) = (server.addr.clone(), Arc::clone(&stop), Arc::clone(&acked));
                let done = Arc::clone(&done);
                std::thread::spawn(move || client(addr, round * THREADS + t + 1, stop, acked, done))
            })
            .collect();
        let crash_after = 20 + pseudo_random(1, round + 99)[0] as usize / 4;
        wait_until(Duration::from_secs(120), &format!("{crash_after} operations are acknowledged"), || {
            done.load(Ordering::Relaxed) >= crash_after
        });
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client thread");
        }
    }
    let server = OurServer::start(&dir, &["--index", index]);
    let checked = verify(&server.addr, &acked);
    assert!(checked > 50, "only {checked} acknowledged operations: the test exercised too little");
    server.stop();

    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed = WeedVolume::start(&dir, &master).unwrap();
    let status = get(&weed.addr(), "/status").json();
    let volumes = status["Volumes"].as_array().unwrap();
    assert!(!volumes.is_empty());
    for v in volumes {
        assert_eq!(v["ReadOnly"], false, "weed opened volume {} read-only: {status}", v["Id"]);
    }
    verify(&weed.addr(), &acked);
    weed.stop();
    master.stop();
}
