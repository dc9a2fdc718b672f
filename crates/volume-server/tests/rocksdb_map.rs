//! Test 5: the RocksDB needle map and the in-memory one give the same answers over the
//! same volumes, and a restart with RocksDB replays none of the `.idx` (only the tail
//! another server appended since).

mod common;

use std::sync::Mutex;

use common::*;

/// The answers a server gives for `fids`: status, ETag and body hash of each.
fn answers(addr: &str, fids: &[String]) -> Vec<(u16, Option<String>, String)> {
    fids.iter()
        .map(|fid| {
            let r = get(addr, &format!("/{fid}"));
            (r.status, r.header("etag").map(str::to_owned), sha256(&r.body))
        })
        .collect()
}

/// Sum of a per-volume load gauge in `/metrics`.
fn load_metric(addr: &str, name: &str) -> u64 {
    get(addr, "/metrics")
        .text()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn status_counters(addr: &str) -> String {
    let status = get(addr, "/status").json();
    status["Volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            format!(
                "{} {} {} {} {}",
                v["Id"], v["FileCount"], v["DeleteCount"], v["Size"], v["DeletedByteCount"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Writes `n` files (every fifth overwritten, every seventh deleted) into two volumes.
fn write_files(server: &OurServer, n: u64, seed: u64) -> Vec<String> {
    let mut fids = Vec::new();
    for i in 0..n {
        let query = if i % 2 == 0 { "" } else { "?collection=c" };
        let fid = server.assign(query);
        let put = |data: &[u8]| {
            let r = request(&server.addr, "PUT", &format!("/{fid}"), &[("Content-Type", "text/plain")], data)
                .unwrap();
            assert_eq!(r.status, 201, "{}", r.text());
        };
        put(&pseudo_random(100 + i as usize * 37, seed + i));
        if i % 5 == 0 {
            put(&pseudo_random(50, seed + i + 1000));
        }
        if i % 7 == 0 {
            assert_eq!(request(&server.addr, "DELETE", &format!("/{fid}"), &[], b"").unwrap().status, 202);
        }
        fids.push(fid);
    }
    fids.push("1,ff12345678".to_owned()); // never written
    fids
}

/// `.idx` entries `write_files(_, n, _)` appends: one per upload, overwrite and delete.
fn idx_entries(n: u64) -> u64 {
    (0..n).map(|i| 1 + u64::from(i % 5 == 0) + u64::from(i % 7 == 0)).sum()
}

#[test]
fn rocksdb_and_memory_maps_agree_and_rocksdb_restarts_without_replaying() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let rocks = ["--index", "rocksdb"];

    let server = OurServer::start(&dir, &rocks);
    let mut fids = write_files(&server, 120, 1);
    let expected = answers(&server.addr, &fids);
    let counters = status_counters(&server.addr);
    assert_eq!(load_metric(&server.addr, "volume_server_load_replayed_idx_entries"), 0, "new volumes");
    server.stop();
    assert!(dir.join("1.rdb").is_dir() && dir.join("c_2.rdb").is_dir(), "a .rdb per volume");

    let server = OurServer::start(&dir, &rocks);
    assert_eq!(
        load_metric(&server.addr, "volume_server_load_replayed_idx_entries"),
        0,
        "a restart replays nothing"
    );
    assert_eq!(answers(&server.addr, &fids), expected);
    assert_eq!(status_counters(&server.addr), counters);
    server.stop();

    // The in-memory map over the same files: same answers, built from the whole .idx.
    let memory = OurServer::start(&dir, &["--index", "memory"]);
    let entries = idx_entries(120);
    assert_eq!(load_metric(&memory.addr, "volume_server_load_replayed_idx_entries"), entries);
    assert_eq!(answers(&memory.addr, &fids), expected);
    assert_eq!(status_counters(&memory.addr), counters);
    // It appends to the .idx behind RocksDB's back ...
    let more = write_files(&memory, 10, 500);
    fids.extend(more);
    let expected = answers(&memory.addr, &fids);
    let counters = status_counters(&memory.addr);
    memory.stop();

    // ... so RocksDB replays exactly that tail, and agrees again.
    let server = OurServer::start(&dir, &rocks);
    let tail = idx_entries(10);
    assert_eq!(load_metric(&server.addr, "volume_server_load_replayed_idx_entries"), tail);
    assert_eq!(answers(&server.addr, &fids), expected);
    assert_eq!(status_counters(&server.addr), counters);
    server.stop();
}

/// Uploads files until the server goes away, recording each acknowledged one.
fn upload_until_gone(addr: &str, seed: u64, acked: &Mutex<Vec<(String, Vec<u8>)>>) {
    for i in 0u64.. {
        let Ok(assign) = request(addr, "GET", "/dir/assign", &[], b"") else { return };
        let Some(fid) = assign.json()["fid"].as_str().map(str::to_owned) else { return };
        let data = pseudo_random(200 + (i as usize * 61) % 4000, seed + i);
        match request(addr, "PUT", &format!("/{fid}"), &[("Content-Type", "text/plain")], &data) {
            Ok(r) if r.status == 201 => acked.lock().unwrap().push((fid, data)),
            Ok(r) => panic!("upload {fid}: {} {}", r.status, r.text()),
            Err(_) => return,
        }
    }
}

/// `kill -9` during a burst of writes: RocksDB loses the entries it held only in
/// memory (it keeps no log of its own), and the restart replays the `.idx` from the
/// watermark it did keep. Every acknowledged write is there, only the tail since the
/// last clean stop is replayed, and the map agrees with one rebuilt from all the `.idx`.
#[test]
fn kill_9_during_a_burst_of_writes_catches_up_from_the_watermark() {
    const BURST_THREADS: u64 = 4;
    const ACKED_BEFORE_KILL: usize = 400;
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let rocks = ["--index", "rocksdb"];

    let server = OurServer::start(&dir, &rocks);
    let mut fids = write_files(&server, 40, 7);
    server.stop();
    let before_burst = idx_entries(40);

    let server = OurServer::start(&dir, &rocks);
    assert_eq!(load_metric(&server.addr, "volume_server_load_replayed_idx_entries"), 0, "a clean stop");
    let acked = Mutex::new(Vec::new());
    let addr = server.addr.clone();
    std::thread::scope(|s| {
        let uploaders: Vec<_> = (0..BURST_THREADS)
            .map(|t| {
                let (addr, acked) = (addr.as_str(), &acked);
                s.spawn(move || upload_until_gone(addr, 1000 * t, acked))
            })
            .collect();
        // Killed while the uploads go on, once a fixed number were acknowledged.
        while acked.lock().unwrap().len() < ACKED_BEFORE_KILL {
            assert!(!uploaders.iter().all(|u| u.is_finished()), "the server went away before the kill");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        server.kill9();
    });
    let acked = acked.into_inner().unwrap();

    let server = OurServer::start(&dir, &rocks);
    let replayed = load_metric(&server.addr, "volume_server_load_replayed_idx_entries");
    for (fid, data) in &acked {
        let r = get(&server.addr, &format!("/{fid}"));
        assert!(r.status == 200 && r.body == *data, "acknowledged {fid} lost: {}", r.status);
    }
    fids.extend(acked.iter().map(|(fid, _)| fid.clone()));
    let expected = answers(&server.addr, &fids);
    let counters = status_counters(&server.addr);
    server.stop();

    let memory = OurServer::start(&dir, &["--index", "memory"]);
    let all = load_metric(&memory.addr, "volume_server_load_replayed_idx_entries");
    assert_eq!(answers(&memory.addr, &fids), expected);
    assert_eq!(status_counters(&memory.addr), counters);
    memory.stop();
    // The burst (far less than a memtable) was in RocksDB's memory only, so the
    // restart replayed it; what the clean stop wrote out it did not.
    assert!(replayed >= ACKED_BEFORE_KILL as u64, "replayed {replayed} entries after the crash");
    assert!(replayed <= all - before_burst, "replayed {replayed} of {all} entries: more than the burst");
}
