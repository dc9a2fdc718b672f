//! `weed volume`'s own flags start our server in a real `weed master` cluster and take
//! effect: the command line of a unit file written for weed (single dashes, camelCase,
//! `-index=leveldb`, flags we do not implement) needs no rewriting.

mod common;

use common::*;
use testbeds::weed::{UploadBody, WeedMaster, assign, upload};

#[test]
fn a_weed_volume_command_line_joins_the_master_and_its_flags_take_effect() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let dir = scratch.path().join("ours");
    std::fs::create_dir_all(&dir).unwrap();
    let mserver = format!("-mserver={}", master.addr());
    let ours = OurServer::start(
        &dir,
        &[
            &mserver,
            "-dataCenter=dcWeedFlags",
            "-rack",
            "rackA",
            "-index=leveldb",
            "-max=3",
            "-fileSizeLimitMB=1",
            "-compactionMBps=50",
            "-images.fix.orientation",
        ],
    );
    wait_until(std::time::Duration::from_secs(20), "the master lists our server", || {
        master.knows_volume_server(&ours.addr)
    });

    // -dataCenter and -rack reached the master: it places by them, and its topology
    // shows our server there.
    let grown = get(&master.addr(), "/vol/grow?count=1&dataCenter=dcWeedFlags");
    assert_eq!(grown.status, 200, "grow: {}", grown.text());
    let a = assign(&master.url(), "dataCenter=dcWeedFlags&rack=rackA").unwrap();
    assert_eq!(a.url, ours.addr, "the assign for dcWeedFlags/rackA names our server");
    let topology = get(&master.addr(), "/dir/status").text();
    assert!(topology.contains("dcWeedFlags") && topology.contains("rackA"), "{topology}");

    let raw = UploadBody::Raw { content_type: "application/octet-stream" };
    let small = pseudo_random(4096, 1);
    let (status, reply) = upload(&a.url, &a.fid, "", &small, raw, &[]).unwrap();
    assert_eq!(status, 201, "{reply}");
    assert_eq!(get(&ours.addr, &format!("/{}", a.fid)).body, small);

    // -fileSizeLimitMB=1: a 2 MiB upload is refused as weed refuses it.
    let b = assign(&master.url(), "dataCenter=dcWeedFlags").unwrap();
    let big = pseudo_random(2 << 20, 2);
    let reply = request_expecting_continue(
        &b.url,
        "POST",
        &format!("/{}", b.fid),
        &[("Content-Type", "application/octet-stream")],
        &big,
    );
    assert_eq!(reply.unwrap().status, 413);

    // -index=leveldb: the persistent map, one RocksDB directory per volume.
    let maps: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".rdb"))
        .collect();
    assert!(!maps.is_empty(), "no .rdb map under {}", dir.display());

    // The flags we do not implement are named once in the log, which (written to a file,
    // not a terminal) carries no colour escapes.
    let port = ours.addr.rsplit(':').next().unwrap();
    let log = std::fs::read_to_string(dir.with_extension(format!("ours-{port}.log"))).unwrap();
    assert_eq!(log.matches("-compactionMBps=50").count(), 1, "{log}");
    assert_eq!(log.matches("-images.fix.orientation").count(), 1, "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log file:\n{log}");
    ours.stop();
}
