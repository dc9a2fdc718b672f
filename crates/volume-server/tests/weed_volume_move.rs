//! `weed shell`'s volume.move between a real `weed volume` and ours, both ways: the
//! files read byte-exact on the target, the master locates the volume there, and the
//! source no longer has it. Also a failed copy: a clear gRPC error, nothing mounted.
//!
//! weed 4.48's VolumeCopy refuses to pull from a loopback address, so when ours is
//! the source it listens on this machine's first non-loopback IPv4 address.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use testbeds::weed::{WeedMaster, WeedVolume};
use tonic::Code;
use volume_server::cluster::pb::volume_server_pb::volume_server_client::VolumeServerClient;
use volume_server::cluster::pb::volume_server_pb::*;

/// Runs `script` in `weed shell` against `master` (at most two minutes); returns its
/// output. The shell's exit status says nothing about the commands, so callers check
/// the output.
fn weed_shell(master: &WeedMaster, script: &str) -> String {
    run_weed(&["shell", &format!("-master={}", master.addr())], script, Duration::from_secs(120)).1
}

/// Headers of a raw (not multipart) upload.
const RAW: &[(&str, &str)] = &[("Content-Type", "application/octet-stream")];

fn move_volume(master: &WeedMaster, vid: u32, source: &str, target: &str) -> String {
    let out = weed_shell(
        master,
        &format!("lock\nvolume.move -source {source} -target {target} -volumeId {vid}\nunlock\n"),
    );
    assert!(out.contains(&format!("moved volume {vid} from {source} to {target}")), "volume.move:\n{out}");
    out
}

/// Files of several sizes (one spans more than one 2 MiB copy chunk); returns those
/// on the volume holding the most of them, that volume, and one of its files deleted.
fn fill(master: &WeedMaster, server: &str) -> (u32, Vec<(String, Vec<u8>)>, String) {
    let mut files = Vec::new();
    for i in 0..30u64 {
        let len = if i == 0 { 5 * 1024 * 1024 + 17 } else { 1000 + i as usize * 3001 };
        let data = pseudo_random(len, i);
        let (fid, at) = put(master, &data);
        assert_eq!(at, server, "only {server} holds volumes yet");
        files.push((fid, data));
    }
    let mut count = std::collections::BTreeMap::<u32, usize>::new();
    for (fid, _) in &files {
        *count.entry(vid(fid)).or_default() += 1;
    }
    let (&moved, _) = count.iter().max_by_key(|(_, n)| **n).unwrap();
    let mut on: Vec<_> = files.into_iter().filter(|(fid, _)| vid(fid) == moved).collect();
    assert!(on.len() >= 2, "volume {moved} holds {} files", on.len());
    let (deleted, _) = on.pop().unwrap();
    let reply = request(server, "DELETE", &format!("/{deleted}"), &[], b"").unwrap();
    assert_eq!(reply.status, 202, "delete {deleted}: {}", reply.text());
    (moved, on, deleted)
}

/// Every file reads byte-exact from `server`; the deleted one (if any) stays deleted.
fn check(server: &str, files: &[(String, Vec<u8>)], deleted: Option<&str>) {
    for (fid, data) in files {
        let reply = get(server, &format!("/{fid}"));
        assert_eq!(reply.status, 200, "{fid} on {server}");
        assert!(reply.body == *data, "{fid} on {server}: {} bytes differ from the upload", reply.body.len());
    }
    if let Some(deleted) = deleted {
        assert_eq!(get(server, &format!("/{deleted}")).status, 404, "{deleted} stays deleted on {server}");
    }
}

fn no_files_of(dir: &Path, vid: u32) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(&format!("{vid}.")), "{name} left in {}", dir.display());
    }
}

/// Our server joined to `master` (`--max 20`) on this machine's first non-loopback IPv4
/// address (weed refuses loopback copy sources), once the master lists it.
fn join_on_routable_ip(dir: &Path, master: &WeedMaster) -> OurServer {
    let out = Command::new("hostname").arg("-I").output().expect("hostname -I");
    let ip = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| !ip.is_loopback()))
        .expect("weed refuses loopback copy sources: this test needs a non-loopback IPv4 address")
        .to_owned();
    let ours = OurServer::start_on(dir, &ip, &["--mserver", &master.addr(), "--max", "20"]);
    wait_until(Duration::from_secs(20), "the master lists ours", || master.knows_volume_server(&ours.addr));
    ours
}

#[test]
fn a_volume_moves_from_weed_volume_to_ours() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed = WeedVolume::start(&scratch.path().join("weed"), &master).unwrap();
    let (moved, files, deleted) = fill(&master, &weed.addr());
    let dir = scratch.path().join("ours");
    let ours = join(&dir, &master, &[]);

    move_volume(&master, moved, &weed.addr(), &ours.addr);
    check(&ours.addr, &files, Some(&deleted));
    wait_until(Duration::from_secs(20), "the master locates the volume on ours only", || {
        lookup(&master, moved) == vec![ours.addr.clone()]
    });
    assert!(!volume_ids(&weed.addr()).contains(&moved), "weed still serves volume {moved}");
    no_files_of(weed.dir(), moved);
    assert!(dir.join(format!("{moved}.dat")).exists());
    assert!(!dir.join(format!("{moved}.dat.copying")).exists(), "no temporary copy left");
    // The moved volume takes writes on ours.
    let fid = format!("{moved},{:x}{:08x}", 0xabcdef_u64, 0x1234_5678_u32);
    let reply = request(&ours.addr, "POST", &format!("/{fid}"), RAW, b"after the move").unwrap();
    assert_eq!(reply.status, 201, "write after the move: {}", reply.text());
    assert_eq!(get(&ours.addr, &format!("/{fid}")).body, b"after the move");

    // volume.unmount / volume.mount on ours: the master forgets, then relearns it.
    let out =
        weed_shell(&master, &format!("lock\nvolume.unmount -node {} -volumeId {moved}\nunlock\n", ours.addr));
    wait_until(Duration::from_secs(20), &format!("the master forgets the unmounted volume:\n{out}"), || {
        lookup(&master, moved).is_empty()
    });
    assert_eq!(get(&ours.addr, &format!("/{fid}")).status, 404, "an unmounted volume is not served");
    assert!(dir.join(format!("{moved}.dat")).exists(), "unmount keeps the files");
    let out =
        weed_shell(&master, &format!("lock\nvolume.mount -node {} -volumeId {moved}\nunlock\n", ours.addr));
    wait_until(Duration::from_secs(20), &format!("the master relearns the mounted volume:\n{out}"), || {
        lookup(&master, moved) == vec![ours.addr.clone()]
    });
    check(&ours.addr, &files, Some(&deleted));
    ours.stop();
    weed.stop();
    master.stop();
}

#[test]
fn a_volume_moves_from_ours_to_weed_volume_while_a_writer_keeps_writing() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let dir = scratch.path().join("ours");
    let ours = join_on_routable_ip(&dir, &master);
    let (moved, mut files, deleted) = fill(&master, &ours.addr);
    let weed = WeedVolume::start(&scratch.path().join("weed"), &master).unwrap();

    // A writer to the moving volume, straight to ours, until the move is over. The
    // shell marks the source read-only before copying, so ours refuses most of these
    // writes; every write ours acknowledged must reach weed (the copy or the tail).
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (stop, acknowledged, addr) = (Arc::clone(&stop), Arc::clone(&acknowledged), ours.addr.clone());
        std::thread::spawn(move || {
            let mut refused = 0;
            for key in 0x10_0000u64.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let fid = format!("{moved},{key:x}{:08x}", key as u32 ^ 0x5eed);
                let data = pseudo_random(3000, key);
                match request(&addr, "POST", &format!("/{fid}"), RAW, &data) {
                    Ok(reply) if reply.status == 201 => acknowledged.lock().unwrap().push((fid, data)),
                    _ => refused += 1,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            refused
        })
    };
    wait_until(Duration::from_secs(10), "the writer's first writes land", || {
        acknowledged.lock().unwrap().len() >= 5
    });
    move_volume(&master, moved, &ours.addr, &weed.addr());
    stop.store(true, Ordering::Relaxed);
    let refused = writer.join().unwrap();
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    println!("writer: {} writes acknowledged, {refused} refused during the move", acknowledged.len());
    files.extend(acknowledged);

    check(&weed.addr(), &files, Some(&deleted));
    wait_until(Duration::from_secs(20), "the master locates the volume on weed only", || {
        lookup(&master, moved) == vec![weed.addr()]
    });
    assert!(!volume_ids(&ours.addr).contains(&moved), "ours still serves volume {moved}");
    no_files_of(&dir, moved);
    // And weed opens the files it received when it starts over them.
    let weed_dir = weed.dir().to_owned();
    weed.stop();
    let weed = WeedVolume::start(&weed_dir, &master).unwrap();
    check(&weed.addr(), &files, Some(&deleted));
    ours.stop();
    weed.stop();
    master.stop();
}

#[test]
fn a_failed_copy_answers_a_clear_error_and_mounts_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed = WeedVolume::start(&scratch.path().join("weed"), &master).unwrap();
    // Some 12 MiB on weed's volumes; the largest volume is copied.
    for i in 0..12u64 {
        put(&master, &pseudo_random(1024 * 1024, i));
    }
    let big = volume_ids(&weed.addr())
        .into_iter()
        .max_by_key(|v| std::fs::metadata(weed.dir().join(format!("{v}.dat"))).map_or(0, |m| m.len()))
        .unwrap();
    let size = std::fs::metadata(weed.dir().join(format!("{big}.dat"))).unwrap().len();
    assert!(size > 2 * 1024 * 1024, "volume {big} is {size} bytes");
    let dir = scratch.path().join("ours");
    let ours = OurServer::start(&dir, &["--mserver", &master.addr(), "--max", "20"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut client = grpc_client(&rt, &ours.addr);
    let copy = |volume_id: u32, source: String, io_byte_per_second: i64| VolumeCopyRequest {
        volume_id,
        source_data_node: source,
        io_byte_per_second,
        ..Default::default()
    };
    let run = |client: &mut VolumeServerClient<_>, request| {
        rt.block_on(async {
            let mut stream = client.volume_copy(request).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        })
    };

    // A volume the source does not have.
    let e = run(&mut client, copy(999, weed.addr(), 0)).unwrap_err();
    assert!(e.message().contains("999"), "{e}");
    // A source nobody listens on.
    let e = run(&mut client, copy(big, "127.0.0.1:1".into(), 0)).unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");

    // The source dies mid-copy: the copy runs at 1 MiB/s, and the source is killed once
    // the .dat's copy has begun (its partial file exists), seconds before it can end.
    let weed_addr = weed.addr();
    let partial = dir.join(format!("{big}.dat.copying"));
    let killer = std::thread::spawn(move || {
        wait_until(Duration::from_secs(60), "the copy of the .dat begins", || partial.exists());
        weed.kill();
    });
    let e = run(&mut client, copy(big, weed_addr, 1024 * 1024)).unwrap_err();
    killer.join().unwrap();
    // Which file the copy was on when the source died depends on how much the
    // transport had buffered; either way the copy fails and names what it was doing.
    assert!(e.message().contains("copying .") && e.message().contains(&format!("of volume {big}")), "{e}");

    // Nothing of those copies is mounted or left on disk.
    assert!(!volume_ids(&ours.addr).contains(&big) && !volume_ids(&ours.addr).contains(&999));
    no_files_of(&dir, big);
    no_files_of(&dir, 999);
    ours.stop();
    master.stop();
}

fn grpc_client(
    rt: &tokio::runtime::Runtime,
    http_addr: &str,
) -> VolumeServerClient<tonic::transport::Channel> {
    let grpc = volume_server::cluster::pb::grpc_address(http_addr).unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .connect()
            .await
            .unwrap();
        VolumeServerClient::new(channel)
    })
}

/// The copy-then-tail protocol step by step, with the source still writable (as
/// volume.copy and volume.fix.replication leave it): records the source takes after
/// the copy, a delete among them, reach the target through `VolumeTailReceiver`.
/// The target is started (`start_target`: the server and its address) once the
/// source holds the files. Returns the target.
fn copy_then_tail<T>(
    master: &WeedMaster,
    source: &str,
    start_target: impl FnOnce() -> (T, String),
    check_delete: bool,
) -> T {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (moved, files, _) = fill(master, source);
    let (server, target) = start_target();
    let mut target_client = grpc_client(&rt, &target);
    let copy = VolumeCopyRequest { volume_id: moved, source_data_node: source.into(), ..Default::default() };
    let since_ns = rt.block_on(async {
        let mut stream = target_client.volume_copy(copy).await.unwrap().into_inner();
        let mut last = 0;
        while let Some(message) = stream.message().await.unwrap() {
            last = message.last_append_at_ns.max(last);
        }
        last
    });
    assert!(since_ns > 0, "the copy reports where the tail starts");
    check(&target, &files, None);

    // After the copy: new files (one over a 2 MiB tail chunk) and a delete on the source.
    let later: Vec<(String, Vec<u8>)> = (0..4u64)
        .map(|i| {
            let fid = format!("{moved},{:x}{:08x}", 0x77_0000 + i, 0xc0ffee_u32 + i as u32);
            let data = pseudo_random(if i == 0 { 3 * 1024 * 1024 } else { 5000 }, 100 + i);
            let reply = request(source, "POST", &format!("/{fid}"), RAW, &data).unwrap();
            assert_eq!(reply.status, 201, "write {fid} to {source}: {}", reply.text());
            (fid, data)
        })
        .collect();
    let gone = &files[0].0;
    assert_eq!(request(source, "DELETE", &format!("/{gone}"), &[], b"").unwrap().status, 202);

    let tail = VolumeTailReceiverRequest {
        volume_id: moved,
        since_ns,
        idle_timeout_seconds: 1,
        source_volume_server: source.into(),
    };
    rt.block_on(target_client.volume_tail_receiver(tail)).unwrap_or_else(|e| panic!("tail: {e}"));
    check(&target, &later, None);
    check(&target, &files[1..], None);
    if check_delete {
        assert_eq!(get(&target, &format!("/{gone}")).status, 404, "the delete reached {target}");
    }
    server
}

#[test]
fn the_tail_carries_writes_and_deletes_made_after_a_copy_from_weed_to_ours() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed = WeedVolume::start(&scratch.path().join("weed"), &master).unwrap();
    let ours = copy_then_tail(
        &master,
        &weed.addr(),
        || {
            let ours =
                OurServer::start(&scratch.path().join("ours"), &["--mserver", &master.addr(), "--max", "20"]);
            let addr = ours.addr.clone();
            (ours, addr)
        },
        true,
    );
    ours.stop();
    weed.stop();
    master.stop();
}

#[test]
fn the_tail_carries_writes_made_after_a_copy_from_ours_to_weed() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let ours = join_on_routable_ip(&scratch.path().join("ours"), &master);
    // weed 4.48's tail receiver does not apply tombstones as deletes (checked: the
    // deleted file still reads on weed after the tail), so only writes are checked
    // this way round; volume.move keeps the source read-only, where no deletes land.
    let weed = copy_then_tail(
        &master,
        &ours.addr,
        || {
            let weed = WeedVolume::start(&scratch.path().join("weed"), &master).unwrap();
            let addr = weed.addr();
            (weed, addr)
        },
        false,
    );
    weed.stop();
    ours.stop();
    master.stop();
}

#[test]
fn copy_file_streams_bounded_chunks_up_to_the_stop_offset_and_checks_the_revision() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("ours");
    let ours = OurServer::start(&dir, &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut client = grpc_client(&rt, &ours.addr);
    rt.block_on(client.allocate_volume(AllocateVolumeRequest { volume_id: 3, ..Default::default() }))
        .unwrap();
    let big = pseudo_random(5 * 1024 * 1024, 9);
    let reply = request(&ours.addr, "POST", "/3,01000000aa", RAW, &big).unwrap();
    assert_eq!(reply.status, 201, "{}", reply.text());

    let status = rt
        .block_on(client.read_volume_file_status(ReadVolumeFileStatusRequest { volume_id: 3 }))
        .unwrap()
        .into_inner();
    let dat = std::fs::read(dir.join("3.dat")).unwrap();
    assert_eq!(status.dat_file_size, dat.len() as u64);
    assert_eq!(status.idx_file_size, std::fs::metadata(dir.join("3.idx")).unwrap().len());
    assert_eq!((status.file_count, status.version, status.compaction_revision), (1, 3, 0));

    let fetch = |client: &mut VolumeServerClient<_>, request: CopyFileRequest| {
        rt.block_on(async {
            let mut stream = client.copy_file(request).await?.into_inner();
            let mut messages = Vec::new();
            while let Some(message) = stream.message().await? {
                messages.push(message);
            }
            Ok::<_, tonic::Status>(messages)
        })
    };
    let ask = |ext: &str, revision: u32, stop_offset: u64| CopyFileRequest {
        volume_id: 3,
        ext: ext.into(),
        compaction_revision: revision,
        stop_offset,
        ..Default::default()
    };
    // The whole .dat, in bounded messages; the first one carries the modification time.
    let messages = fetch(&mut client, ask(".dat", 0, status.dat_file_size)).unwrap();
    assert!(messages.len() >= 3, "{} messages for {} bytes", messages.len(), dat.len());
    assert!(messages.iter().all(|m| m.file_content.len() <= 2 * 1024 * 1024));
    assert!(messages[0].modified_ts_ns > 0 && messages[1..].iter().all(|m| m.modified_ts_ns == 0));
    assert!(messages.iter().flat_map(|m| m.file_content.iter().copied()).eq(dat.iter().copied()));
    // Up to the stop offset only; any revision with u32::MAX.
    let messages = fetch(&mut client, ask(".dat", u32::MAX, 1000)).unwrap();
    assert!(messages.iter().flat_map(|m| m.file_content.iter().copied()).eq(dat[..1000].iter().copied()));

    // A compaction revision other than the volume's is refused, as weed does.
    let e = fetch(&mut client, ask(".dat", 1, status.dat_file_size)).unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    // Files other than the volume's own, and EC shards, are not served.
    for ext in ["../3.dat", ".ecx", ""] {
        let e = fetch(&mut client, ask(ext, 0, 10)).unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{ext:?}: {e}");
    }
    let ec = CopyFileRequest { is_ec_volume: true, ..ask(".ec00", 0, 10) };
    assert_eq!(fetch(&mut client, ec).unwrap_err().code(), Code::Unimplemented);
    let e = fetch(&mut client, CopyFileRequest { volume_id: 99, ..ask(".dat", 0, 10) }).unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    ours.stop();
}

#[test]
fn a_copy_is_refused_over_a_mounted_or_unmounted_volume_of_the_same_id() {
    let scratch = tempfile::tempdir().unwrap();
    let source = OurServer::start(&scratch.path().join("a"), &[]);
    let target_dir = scratch.path().join("b");
    let target = OurServer::start(&target_dir, &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut source_client = grpc_client(&rt, &source.addr);
    let mut target_client = grpc_client(&rt, &target.addr);
    let allocate = AllocateVolumeRequest { volume_id: 4, collection: "pics".into(), ..Default::default() };
    rt.block_on(source_client.allocate_volume(allocate)).unwrap();
    let data = pseudo_random(70_000, 4);
    assert_eq!(request(&source.addr, "POST", "/4,0200000bb", RAW, &data).unwrap().status, 201);

    let copy =
        || VolumeCopyRequest { volume_id: 4, source_data_node: source.addr.clone(), ..Default::default() };
    let run = |client: &mut VolumeServerClient<_>, request| {
        rt.block_on(async {
            let mut stream = client.volume_copy(request).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), tonic::Status>(())
        })
    };
    run(&mut target_client, copy()).unwrap();
    assert_eq!(get(&target.addr, "/4,0200000bb").body, data, "the copy serves the file");
    assert!(target_dir.join("pics_4.dat").exists(), "the collection is part of the file names");

    let e = run(&mut target_client, copy()).unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "a mounted copy: {e}");
    rt.block_on(target_client.volume_unmount(VolumeUnmountRequest { volume_id: 4 })).unwrap();
    let e = run(&mut target_client, copy()).unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "unmounted files: {e}");
    rt.block_on(target_client.volume_mount(VolumeMountRequest { volume_id: 4 })).unwrap();
    assert_eq!(get(&target.addr, "/4,0200000bb").body, data, "the files were left alone");
    source.stop();
    target.stop();
}
