//! Our server as a member of a real `weed master` cluster (`--mserver`): weed's own
//! tools (`weed benchmark`, `weed upload`, `weed download`) work against it, the
//! master's vacuum compacts its volumes into files `weed volume` opens, it serves
//! side by side with a `weed volume`, and it re-registers when the master restarts.

mod common;

use std::time::Duration;

use common::*;
use testbeds::weed::{WeedMaster, WeedVolume};

#[test]
fn weed_tools_work_with_ours_as_the_only_volume_server() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let ours = join(&scratch.path().join("ours"), &master, &[]);
    let m = master.addr();

    let list = scratch.path().join("benchmark.list");
    let (ok, out) = run_weed(
        &[
            "benchmark",
            &format!("-master={m}"),
            "-n=2000",
            "-c=4",
            "-size=1024",
            &format!("-list={}", list.display()),
        ],
        "",
        Duration::from_secs(120),
    );
    assert!(ok, "weed benchmark failed:\n{out}");
    let completed = out.matches("Completed requests:      2000").count();
    let failed = out.matches("Failed requests:        0").count();
    assert_eq!((completed, failed), (2, 2), "both phases complete 2000 requests, none failed:\n{out}");

    let file = scratch.path().join("payload.bin");
    let data = pseudo_random(300_000, 7);
    std::fs::write(&file, &data).unwrap();
    let (ok, out) =
        run_weed(&["upload", &format!("-master={m}"), file.to_str().unwrap()], "", Duration::from_secs(60));
    assert!(ok, "weed upload: {out}");
    let uploaded: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let fid = uploaded[0]["fid"].as_str().expect("fid").to_owned();
    let downloads = scratch.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (ok, out) = run_weed(
        &["download", &format!("-server={m}"), &format!("-dir={}", downloads.display()), &fid],
        "",
        Duration::from_secs(60),
    );
    assert!(ok, "weed download: {out}");
    assert_eq!(sha256(&std::fs::read(downloads.join("payload.bin")).unwrap()), sha256(&data));

    let ids = volume_ids(&ours.addr);
    assert!(ids.len() >= 2, "the master allocated volumes on our server: {ids:?}");
    for id in ids {
        assert_eq!(lookup(&master, id), vec![ours.addr.clone()], "/dir/lookup of volume {id}");
    }
    ours.stop();
    master.stop();
}

#[test]
fn vacuum_through_the_master_compacts_ours_and_weed_opens_the_result() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let dir = scratch.path().join("ours");
    let ours = join(&dir, &master, &[]);
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| {
            let data = pseudo_random(4000 + i * 10, i as u64);
            (put(&master, &data).0, data)
        })
        .collect();
    let (deleted, kept): (Vec<_>, Vec<_>) = files.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, (fid, _)) in &deleted {
        let reply = request(&ours.addr, "DELETE", &format!("/{fid}"), &[], b"").unwrap();
        assert_eq!(reply.status, 202, "delete {fid}: {}", reply.text());
    }
    let compacted: std::collections::BTreeSet<u32> = deleted.iter().map(|(_, (fid, _))| vid(fid)).collect();
    let sizes_before: Vec<u64> =
        compacted.iter().map(|v| std::fs::metadata(dir.join(format!("{v}.dat"))).unwrap().len()).collect();

    let reply = get(&master.addr(), "/vol/vacuum?garbageThreshold=0.1");
    assert_eq!(reply.status, 200, "vacuum: {}", reply.text());
    for (v, before) in compacted.iter().zip(sizes_before) {
        let dat = std::fs::read(dir.join(format!("{v}.dat"))).unwrap();
        assert!((dat.len() as u64) < before, "volume {v} shrank: {before} -> {}", dat.len());
        assert_eq!(u16::from_be_bytes([dat[4], dat[5]]), 1, "volume {v}'s superblock compaction revision");
        assert!(!dir.join(format!("{v}.cpd")).exists() && !dir.join(format!("{v}.cpx")).exists());
    }
    let check = |addr: &str, who: &str| {
        for (_, (fid, data)) in &kept {
            let reply = get(addr, &format!("/{fid}"));
            assert_eq!(reply.status, 200, "{who} reads kept {fid}");
            assert_eq!(reply.body, *data, "{who}: {fid}'s bytes");
        }
        for (_, (fid, _)) in &deleted {
            assert_eq!(get(addr, &format!("/{fid}")).status, 404, "{who}: deleted {fid} stays deleted");
        }
    };
    check(&ours.addr, "ours after vacuum");
    // Writes still work on a compacted volume.
    let (fid, _) = put(&master, b"after vacuum");
    assert_eq!(get(&ours.addr, &format!("/{fid}")).body, b"after vacuum");
    ours.stop();

    let weed = WeedVolume::start(&dir, &master).unwrap();
    check(&weed.addr(), "weed volume");
    let status = get(&weed.addr(), "/status").json();
    for v in status["Volumes"].as_array().unwrap() {
        if compacted.contains(&(v["Id"].as_u64().unwrap() as u32)) {
            assert_eq!(v["CompactRevision"], 1, "weed reads the bumped revision: {v}");
        }
    }
    weed.stop();
    master.stop();
}

#[test]
fn a_mixed_cluster_serves_files_on_either_server() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    // Each server in a data center of its own: three files are placed on each.
    let weed =
        WeedVolume::start_with(&scratch.path().join("weed"), &master, &["-dataCenter=dc-weed"]).unwrap();
    let ours = join(&scratch.path().join("ours"), &master, &["--data-center", "dc-ours"]);
    let mut files = Vec::new();
    for (dc, server) in [("dc-weed", weed.addr()), ("dc-ours", ours.addr.clone())] {
        master.grow_in(dc).unwrap();
        for _ in 0..3 {
            let data = pseudo_random(2000, files.len() as u64);
            let (fid, on) = put_in(&master, dc, &data);
            assert_eq!(on, server, "{fid} was assigned in {dc}");
            files.push((fid, data));
        }
    }
    let downloads = scratch.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    for (fid, data) in &files {
        let holders = lookup(&master, vid(fid));
        assert_eq!(holders.len(), 1, "{fid}: {holders:?}");
        assert!(holders[0] == ours.addr || holders[0] == weed.addr(), "{fid} is on {holders:?}");
        let reply = get(&holders[0], &format!("/{fid}"));
        assert_eq!(reply.body, *data, "{fid} read from {}", holders[0]);
    }
    // weed's own client (gRPC lookups through the master) reads from both.
    for server in [ours.addr.clone(), weed.addr()] {
        let (fid, data) = files
            .iter()
            .find(|(fid, _)| lookup(&master, vid(fid)) == vec![server.clone()])
            .expect("a file on each server");
        let (ok, out) = run_weed(
            &[
                "download",
                &format!("-server={}", master.addr()),
                &format!("-dir={}", downloads.display()),
                fid,
            ],
            "",
            Duration::from_secs(60),
        );
        assert!(ok, "weed download {fid}: {out}");
        assert_eq!(std::fs::read(downloads.join("f.bin")).unwrap(), *data, "{fid} via weed download");
    }
    ours.stop();
    weed.stop();
    master.stop();
}

#[test]
fn after_a_master_restart_ours_reconnects_and_reregisters() {
    let scratch = tempfile::tempdir().unwrap();
    let mut master = WeedMaster::start(scratch.path(), 64).unwrap();
    let ours = join(&scratch.path().join("ours"), &master, &[]);
    let data = pseudo_random(10_000, 3);
    let (fid, server) = put(&master, &data);
    assert_eq!(server, ours.addr);

    master.restart().unwrap();
    wait_until(Duration::from_secs(30), "the restarted master lists our volumes again", || {
        lookup(&master, vid(&fid)) == vec![ours.addr.clone()]
    });
    let ids = volume_ids(&ours.addr);
    for id in &ids {
        assert_eq!(lookup(&master, *id), vec![ours.addr.clone()], "volume {id} re-registered");
    }
    // The restarted master assigns to us again, and reads go through.
    let (fid2, server) = put(&master, b"after restart");
    assert_eq!(server, ours.addr);
    assert_eq!(get(&ours.addr, &format!("/{fid2}")).body, b"after restart");
    assert_eq!(get(&ours.addr, &format!("/{fid}")).body, data);
    ours.stop();
    master.stop();
}

#[test]
fn ours_follows_the_leader_of_a_master_cluster_and_its_successor() {
    let scratch = tempfile::tempdir().unwrap();
    let mut masters = WeedMaster::start_cluster(scratch.path(), 3, 64).unwrap();
    // The master every live one names as leader, as an index into `masters`.
    let elected = |masters: &[WeedMaster]| -> Option<usize> {
        let leaders: Vec<Option<String>> = masters.iter().map(WeedMaster::leader).collect();
        let leader = leaders[0].clone()?;
        if leaders.iter().any(|l| l.as_deref() != Some(leader.as_str())) {
            return None;
        }
        // weed names masters `host:port.grpcPort`.
        let (host, ports) = leader.rsplit_once(':')?;
        let addr = format!("{host}:{}", ports.split('.').next()?);
        masters.iter().position(|m| m.addr() == addr)
    };
    let mut leader = None;
    wait_until(Duration::from_secs(40), "the masters elect a leader", || {
        leader = elected(&masters);
        leader.is_some()
    });
    let leader = leader.unwrap();
    let follower = (leader + 1) % masters.len();
    // Ours is told only about a follower: the follower names the leader, ours follows.
    let dir = scratch.path().join("ours");
    let ours = OurServer::start(&dir, &["--mserver", &masters[follower].addr(), "--max", "20"]);
    wait_until(Duration::from_secs(20), "the leader lists our server", || {
        masters[leader].knows_volume_server(&ours.addr)
    });

    // The leader goes away: once the others elect a successor, ours registers there.
    masters.remove(leader).stop();
    let mut successor = None;
    wait_until(Duration::from_secs(60), "a new leader is elected", || {
        successor = elected(&masters);
        successor.is_some()
    });
    let successor = successor.unwrap();
    wait_until(Duration::from_secs(30), "the new leader lists our server", || {
        masters[successor].knows_volume_server(&ours.addr)
    });
    ours.stop();
    for master in masters {
        master.stop();
    }
}
