//! The crash soak: SIGKILL of a loaded server, cycle after cycle, loses nothing
//! acknowledged.
//!
//! Each cycle starts our server on the same directory (the needle map alternating
//! between memory and RocksDB every two cycles, `--fsync` every other cycle, so four
//! cycles cover the four combinations), checks every file against what its clients were
//! told, lets 16 concurrent writers upload, overwrite and delete files and upload chunked
//! files (chunks, then a chunk manifest), and SIGKILLs the server once the writers have
//! had a number of operations acknowledged in that cycle (counted, not timed). At the
//! end our server reads everything once more, and a real `weed volume` opens the
//! directory read-write and serves the same answers.
//!
//! What is checked: an acknowledged write reads back byte-exact, an acknowledged delete
//! reads 404, and an operation the kill cut off (no answer) left the file either as it
//! was or as asked; what the next start reads is then what the file is. `cargo test`
//! runs 4 cycles; `scripts/soak` runs the same test with `SOAK_CYCLES` (50 by default)
//! and prints the summary line.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use testbeds::weed::{WeedMaster, WeedVolume};

/// Cycles when `SOAK_CYCLES` is not set: one of each map and fsync combination.
const DEFAULT_CYCLES: u64 = 4;
const WRITERS: u64 = 16;
/// The largest plain file; chunked files have 2-4 chunks of up to half that.
const MOST_BYTES: usize = 64 << 10;

/// A file's bytes, kept as the (length, seed) of each `pseudo_random` piece so that
/// thousands of files cost no memory: one piece for a plain file, one per chunk for a
/// chunked one (whose GET gives the chunks concatenated).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Content(Vec<(usize, u64)>);

impl Content {
    fn bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|&(len, seed)| pseudo_random(len, seed)).collect()
    }
}

/// What a GET of a file may answer.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Stored(Content),
    /// 404: deleted, or never written.
    Absent,
}

/// Each file's allowed states: one once acknowledged; two (before and after) while an
/// operation the kill cut off is unresolved.
#[derive(Default)]
struct Ledger {
    files: Mutex<BTreeMap<String, Vec<State>>>,
    writes_acked: AtomicU64,
    overwrites_acked: AtomicU64,
    chunked_acked: AtomicU64,
    deletes_acked: AtomicU64,
    unanswered: AtomicU64,
    /// Acknowledged operations of the running cycle: what the kill waits for.
    cycle_acks: AtomicU64,
}

impl Ledger {
    fn set(&self, fid: &str, states: Vec<State>) {
        self.files.lock().unwrap().insert(fid.to_owned(), states);
    }

    fn acked(&self, fid: &str, state: State, counter: &AtomicU64) {
        self.set(fid, vec![state]);
        counter.fetch_add(1, Ordering::Relaxed);
        self.cycle_acks.fetch_add(1, Ordering::Relaxed);
    }

    fn unanswered(&self, fid: &str, before: State, after: State) {
        self.set(fid, vec![before, after]);
        self.unanswered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads every file from `addr` and checks it against the ledger; what a file was left
/// in by a cut-off operation becomes its one state. Returns the files read.
fn verify(addr: &str, ledger: &Ledger) -> usize {
    let mut files = ledger.files.lock().unwrap();
    let mut losses = Vec::new();
    for (fid, states) in files.iter_mut() {
        let reply = get(addr, &format!("/{fid}"));
        let found = states.iter().find(|state| match state {
            State::Stored(content) => reply.status == 200 && reply.body == content.bytes(),
            State::Absent => reply.status == 404,
        });
        match found {
            Some(state) => *states = vec![state.clone()],
            None => losses.push(format!(
                "{fid}: {} ({} bytes), expected one of {states:?}",
                reply.status,
                reply.body.len()
            )),
        }
    }
    assert!(losses.is_empty(), "{} files lost or wrong on {addr}:\n{}", losses.len(), losses.join("\n"));
    files.len()
}

/// One writer's files, which it alone changes.
struct Writer {
    addr: String,
    seed: u64,
    ledger: Arc<Ledger>,
    plain: Vec<(String, Content)>,
    chunked: Vec<(String, Content)>,
}

/// How an operation ended: the server answered, or is gone (the kill).
type Answered = Result<(), ()>;

impl Writer {
    fn random(&self, i: u64, salt: u64) -> u64 {
        pseudo_random(8, self.seed.wrapping_mul(1_000_003) ^ (i << 8) ^ salt)
            .iter()
            .fold(0u64, |a, &b| (a << 8) | u64::from(b))
    }

    fn content(&self, i: u64, salt: u64, most: usize) -> (usize, u64) {
        let len = self.random(i, salt) as usize % most;
        (len, (self.seed << 40) ^ (i << 8) ^ salt)
    }

    fn assign(&self) -> Result<String, ()> {
        let reply = request(&self.addr, "GET", "/dir/assign", &[], b"").map_err(|_| ())?;
        reply.json()["fid"].as_str().map(str::to_owned).ok_or(())
    }

    /// PUT; Ok when stored (201), Err when the server is gone; anything else fails the test.
    fn put(&self, fid: &str, query: &str, body: &[u8]) -> Result<(), ()> {
        let path = format!("/{fid}{query}");
        match request(&self.addr, "PUT", &path, &[("Content-Type", "application/octet-stream")], body) {
            Ok(r) if r.status == 201 => Ok(()),
            Ok(r) => panic!("PUT {path}: {} {}", r.status, r.text()),
            Err(_) => Err(()),
        }
    }

    fn delete(&self, fid: &str) -> Result<(), ()> {
        match request(&self.addr, "DELETE", &format!("/{fid}"), &[], b"") {
            Ok(r) if r.status == 202 => Ok(()),
            Ok(r) => panic!("DELETE {fid}: {} {}", r.status, r.text()),
            Err(_) => Err(()),
        }
    }

    fn upload(&mut self, i: u64) -> Answered {
        let fid = self.assign()?;
        let content = Content(vec![self.content(i, 1, MOST_BYTES)]);
        let ledger = Arc::clone(&self.ledger);
        match self.put(&fid, "", &content.bytes()) {
            Ok(()) => ledger.acked(&fid, State::Stored(content.clone()), &ledger.writes_acked),
            Err(()) => {
                ledger.unanswered(&fid, State::Absent, State::Stored(content));
                return Err(());
            }
        }
        self.plain.push((fid, content));
        Ok(())
    }

    fn overwrite(&mut self, i: u64) -> Answered {
        let at = self.random(i, 2) as usize % self.plain.len();
        let (fid, old) = self.plain.swap_remove(at);
        let new = Content(vec![self.content(i, 3, MOST_BYTES)]);
        let ledger = Arc::clone(&self.ledger);
        match self.put(&fid, "", &new.bytes()) {
            Ok(()) => ledger.acked(&fid, State::Stored(new.clone()), &ledger.overwrites_acked),
            // Which of the two it is, the next start's check finds out; the writer
            // leaves the file alone from now on.
            Err(()) => {
                ledger.unanswered(&fid, State::Stored(old), State::Stored(new));
                return Err(());
            }
        }
        self.plain.push((fid, new));
        Ok(())
    }

    /// Chunks first (each a file of its own, not tracked: the manifest's GET reads
    /// them), then the manifest, which is what is acknowledged.
    fn upload_chunked(&mut self, i: u64) -> Answered {
        let pieces: Vec<(usize, u64)> =
            (0..2 + self.random(i, 4) % 3).map(|c| self.content(i, 10 + c, MOST_BYTES / 2)).collect();
        let mut chunks = Vec::new();
        let mut offset = 0;
        for &(len, seed) in &pieces {
            let fid = self.assign()?;
            self.put(&fid, "", &pseudo_random(len, seed))?;
            chunks.push(serde_json::json!({ "fid": fid, "offset": offset, "size": len }));
            offset += len;
        }
        let manifest =
            serde_json::json!({ "name": "soak.bin", "size": offset, "chunks": chunks }).to_string();
        let fid = self.assign()?;
        let content = Content(pieces);
        let ledger = Arc::clone(&self.ledger);
        match self.put(&fid, "?cm=true", manifest.as_bytes()) {
            Ok(()) => ledger.acked(&fid, State::Stored(content.clone()), &ledger.chunked_acked),
            Err(()) => {
                ledger.unanswered(&fid, State::Absent, State::Stored(content));
                return Err(());
            }
        }
        self.chunked.push((fid, content));
        Ok(())
    }

    fn delete_one(&mut self, i: u64) -> Answered {
        let chunked = !self.chunked.is_empty() && (self.plain.is_empty() || self.random(i, 5) % 4 == 0);
        let files = if chunked { &mut self.chunked } else { &mut self.plain };
        let at = (self.seed as usize + i as usize) % files.len();
        let (fid, old) = files.swap_remove(at);
        let ledger = Arc::clone(&self.ledger);
        match self.delete(&fid) {
            Ok(()) => ledger.acked(&fid, State::Absent, &ledger.deletes_acked),
            // A chunked file's delete removes the chunks before the manifest: cut off,
            // its manifest may be left naming a chunk already gone. That file is no
            // longer checked (as weed, a client retries the delete).
            Err(()) if chunked => {
                ledger.files.lock().unwrap().remove(&fid);
                ledger.unanswered.fetch_add(1, Ordering::Relaxed);
                return Err(());
            }
            Err(()) => {
                ledger.unanswered(&fid, State::Stored(old), State::Absent);
                return Err(());
            }
        }
        Ok(())
    }

    /// Operations until the server goes away or `stop` is set: mostly new files, then
    /// overwrites, deletes and chunked files.
    fn run(&mut self, stop: &AtomicBool) {
        for i in 0u64.. {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let have_files = !self.plain.is_empty() || !self.chunked.is_empty();
            let answered = match self.random(i, 0) % 20 {
                _ if !have_files => self.upload(i),
                0..=9 => self.upload(i),
                10..=11 => self.upload_chunked(i),
                12..=15 if !self.plain.is_empty() => self.overwrite(i),
                12..=15 => self.upload(i),
                _ => self.delete_one(i),
            };
            if answered.is_err() {
                return;
            }
        }
    }
}

fn cycles() -> u64 {
    std::env::var("SOAK_CYCLES").ok().map_or(DEFAULT_CYCLES, |n| n.parse().expect("SOAK_CYCLES is a number"))
}

#[test]
fn acknowledged_operations_survive_sigkill_cycles_and_the_volumes_open_in_weed() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("data");
    let ledger = Arc::new(Ledger::default());
    let cycles = cycles();
    let mut writers: Vec<Option<Writer>> = (0..WRITERS).map(|_| None).collect();
    for cycle in 0..cycles {
        let index = if cycle / 2 % 2 == 0 { "memory" } else { "rocksdb" };
        let mut flags = vec!["--max", "3", "--index", index];
        if cycle % 2 == 1 {
            flags.push("--fsync");
        }
        let server = OurServer::start(&dir, &flags);
        verify(&server.addr, &ledger);
        ledger.cycle_acks.store(0, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = writers
            .iter_mut()
            .enumerate()
            .map(|(w, slot)| {
                // A writer keeps its files across cycles, so later cycles overwrite and
                // delete files written before earlier kills.
                let mut writer = slot.take().unwrap_or_else(|| Writer {
                    addr: String::new(),
                    seed: w as u64 + 1,
                    ledger: Arc::clone(&ledger),
                    plain: Vec::new(),
                    chunked: Vec::new(),
                });
                writer.addr = server.addr.clone();
                writer.seed = writer.seed.wrapping_mul(31).wrapping_add(cycle);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    writer.run(&stop);
                    writer
                })
            })
            .collect();
        // Kill once this cycle has 100-355 acknowledged operations: always under load,
        // at a point that varies from cycle to cycle.
        let target = 100 + u64::from(pseudo_random(1, cycle + 99)[0]);
        let started = Instant::now();
        while ledger.cycle_acks.load(Ordering::Relaxed) < target && !threads.iter().all(|t| t.is_finished()) {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "cycle {cycle}: the writers made no progress"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for (slot, thread) in writers.iter_mut().zip(threads) {
            *slot = Some(thread.join().expect("writer thread"));
        }
        let acks = ledger.cycle_acks.load(Ordering::Relaxed);
        assert!(
            acks >= target,
            "cycle {cycle}: the writers stopped after {acks} operations, before the kill"
        );
    }
    let server = OurServer::start(&dir, &[]);
    let checked = verify(&server.addr, &ledger);
    server.stop();

    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed = WeedVolume::start(&dir, &master).unwrap();
    let status = get(&weed.addr(), "/status").json();
    let volumes = status["Volumes"].as_array().unwrap();
    assert!(!volumes.is_empty());
    for v in volumes {
        assert_eq!(v["ReadOnly"], false, "weed opened volume {} read-only: {status}", v["Id"]);
    }
    assert_eq!(verify(&weed.addr(), &ledger), checked);
    weed.stop();
    master.stop();
    println!(
        "soak: {cycles} cycles of SIGKILL under {WRITERS} writers; acknowledged: {} writes, {} overwrites, \
         {} chunked files, {} deletes; {} operations cut off by the kill; {checked} files checked after \
         every restart and in weed volume; losses: 0",
        ledger.writes_acked.load(Ordering::Relaxed),
        ledger.overwrites_acked.load(Ordering::Relaxed),
        ledger.chunked_acked.load(Ordering::Relaxed),
        ledger.deletes_acked.load(Ordering::Relaxed),
        ledger.unanswered.load(Ordering::Relaxed),
    );
}
