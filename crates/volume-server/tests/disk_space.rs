//! A data directory running out of space, on a real (tmpfs) file system of 32 MiB:
//! with `--min-free-space`, writes stop before the disk is full and start again once
//! space is freed, while reads and deletes go on; without it, a write that finds the
//! disk full gets a clear 500 and every acknowledged file survives, across a restart.
//!
//! Mounting a tmpfs needs root (CI runs as root); where it cannot mount one, the test
//! says so and stops.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{OurServer, Reply, get, pseudo_random, request};

const MIB: usize = 1 << 20;

/// A tmpfs mounted on a fresh directory, unmounted when dropped.
struct Tmpfs {
    mount_point: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: usize) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let parent = tempfile::tempdir().unwrap();
        let mount_point = parent.path().join("disk");
        std::fs::create_dir(&mount_point).unwrap();
        let mount = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount_point)
            .output()
            .unwrap();
        if !mount.status.success() {
            // Root in a container without CAP_SYS_ADMIN, say.
            eprintln!(
                "skipped: cannot mount a tmpfs here: {}",
                String::from_utf8_lossy(&mount.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs { mount_point, _parent: parent })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount_point).status();
    }
}

fn upload(addr: &str, fid: &str, data: &[u8]) -> Reply {
    request(addr, "POST", &format!("/{fid}"), &[("Content-Type", "application/octet-stream")], data).unwrap()
}

fn assert_reads_back(addr: &str, files: &[(String, Vec<u8>)]) {
    for (fid, data) in files {
        let reply = get(addr, &format!("/{fid}"));
        assert_eq!(reply.status, 200, "{fid}");
        assert!(reply.body == *data, "{fid}: the bytes differ");
    }
}

fn fill(path: &Path, bytes: usize) {
    std::fs::write(path, vec![0xa5u8; bytes]).unwrap();
}

#[test]
fn low_free_space_stops_writes_until_space_is_freed() {
    let Some(disk) = Tmpfs::mount(32) else { return };
    let filler = disk.mount_point.join("filler");
    fill(&filler, 16 * MIB);
    let server =
        OurServer::start(&disk.mount_point, &["--min-free-space", "8MiB", "--disk-check-interval-secs", "1"]);
    let addr = server.addr.as_str();
    let five = |seed| pseudo_random(5 * MIB, seed);

    // 16 MiB free, then 11: above the minimum.
    let first = (server.assign(""), five(1));
    assert_eq!(upload(addr, &first.0, &first.1).status, 201);
    let vid = common::vid(&first.0);
    // 6 MiB free: below it. The next check turns the volume read-only.
    let second = (server.assign(""), five(2));
    assert_eq!(upload(addr, &second.0, &second.1).status, 201);
    common::wait_until(Duration::from_secs(10), "the volume turns read-only", || {
        common::read_only(addr, vid) == Some(true)
    });

    let refused = upload(addr, &format!("{vid},ff0000beef"), b"no room");
    assert_eq!(refused.status, 500, "{}", refused.text());
    assert!(refused.text().contains("read only"), "{}", refused.text());
    let assign = get(addr, "/dir/assign");
    assert_ne!(assign.status, 200, "nowhere to write, nothing to assign: {}", assign.text());
    assert!(assign.json()["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", assign.text());
    // Reads and deletes go on.
    assert_reads_back(addr, &[first.clone(), second.clone()]);
    let deleted = request(addr, "DELETE", &format!("/{}", second.0), &[], b"").unwrap();
    assert_eq!(deleted.status, 202, "{}", deleted.text());

    // Space comes back: so do writes and assignments.
    std::fs::remove_file(&filler).unwrap();
    common::wait_until(Duration::from_secs(10), "the volume takes writes again", || {
        common::read_only(addr, vid) == Some(false)
    });
    let third = (server.assign(""), b"room again".to_vec());
    assert_eq!(upload(addr, &third.0, &third.1).status, 201);
    assert_reads_back(addr, &[first, third]);
    server.stop();
}

#[test]
fn a_write_that_finds_the_disk_full_fails_cleanly_and_loses_nothing() {
    let Some(disk) = Tmpfs::mount(32) else { return };
    // 0%: never refuse ahead of time, so the writes run into the full disk.
    let never = ["--min-free-space", "0"];
    let server = OurServer::start(&disk.mount_point, &never);
    let addr = server.addr.as_str();
    let mut acknowledged = Vec::new();
    let mut full = None;
    for seed in 0..10 {
        let (fid, data) = (server.assign(""), pseudo_random(5 * MIB, seed));
        let reply = upload(addr, &fid, &data);
        if reply.status == 201 {
            acknowledged.push((fid, data));
        } else {
            full = Some(reply);
            break;
        }
    }
    let full = full.expect("32 MiB cannot hold ten 5 MiB files");
    assert_eq!(full.status, 500, "{}", full.text());
    assert!(full.text().contains("No space left on device"), "{}", full.text());
    assert!(acknowledged.len() >= 4, "only {} files fit", acknowledged.len());
    assert_reads_back(addr, &acknowledged);
    // The failed write was cut back: a small one fits after it.
    let small = (server.assign(""), b"still writable".to_vec());
    assert_eq!(upload(addr, &small.0, &small.1).status, 201);
    acknowledged.push(small);

    // A crash, then a restart on the same files: everything acknowledged is there.
    server.kill9();
    let server = OurServer::start(&disk.mount_point, &never);
    assert_reads_back(&server.addr, &acknowledged);
    server.stop();
}

#[test]
fn a_weed_master_stops_assigning_to_a_server_low_on_space() {
    let scratch = tempfile::tempdir().unwrap();
    let master = testbeds::weed::WeedMaster::start(&scratch.path().join("m"), 64).unwrap();
    let data_dir = scratch.path().join("ours");
    let ours = common::join(&data_dir, &master, &[]);
    let (fid, _) = common::put(&master, b"written while there was room");
    ours.stop();

    // 100%: the disk is "low" from the start. The heartbeat reports every volume
    // read-only and no free slot, so the master has nowhere to put a file.
    let ours = common::join(&data_dir, &master, &["--min-free-space", "100"]);
    common::wait_until(Duration::from_secs(20), "the master refuses to assign", || {
        get(&master.addr(), "/dir/assign").status != 200
    });
    let volumes = get(&ours.addr, "/status").json()["Volumes"].as_array().cloned().unwrap();
    assert!(!volumes.is_empty() && volumes.iter().all(|v| v["ReadOnly"] == true), "{volumes:?}");
    let read = get(&ours.addr, &format!("/{fid}"));
    assert_eq!((read.status, read.body.as_slice()), (200, &b"written while there was room"[..]));
    ours.stop();
    master.stop();
}
