//! weed's `VolumeServer` gRPC calls against our running server, over real gRPC on
//! loopback: the answers weed's master and tools get, the volume changes the master
//! learns from our heartbeat deltas, and `Unimplemented` for calls we do not serve.

mod common;

use std::time::{Duration, Instant};

use common::*;
use testbeds::weed::WeedMaster;
use tonic::Code;
use volume_server::cluster::pb::volume_server_pb::volume_server_client::VolumeServerClient;
use volume_server::cluster::pb::volume_server_pb::*;

type Client = VolumeServerClient<tonic::transport::Channel>;

/// Headers of a raw (not multipart) upload.
const RAW: &[(&str, &str)] = &[("Content-Type", "application/octet-stream")];

async fn connect(http_addr: &str) -> Client {
    let grpc = volume_server::cluster::pb::grpc_address(http_addr).unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    VolumeServerClient::new(endpoint.connect().await.unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn volume_admin_calls_and_batch_delete() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let ours = OurServer::start(&scratch.path().join("ours"), &["--mserver", &master.addr(), "--max", "4"]);
    let rt = runtime();
    let mut client = rt.block_on(connect(&ours.addr));

    // Allocate: the master hears of the new volume from our heartbeat.
    let allocate = |id, collection: &str, replication: &str| AllocateVolumeRequest {
        volume_id: id,
        collection: collection.into(),
        replication: replication.into(),
        ..Default::default()
    };
    rt.block_on(client.allocate_volume(allocate(42, "", "000"))).unwrap();
    eventually("the master lists volume 42 on ours", || lookup(&master, 42) == vec![ours.addr.clone()]);
    let again = rt.block_on(client.allocate_volume(allocate(42, "", ""))).unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again}");
    let bad = rt.block_on(client.allocate_volume(allocate(43, "", "9x"))).unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad}");
    let ssd = AllocateVolumeRequest { disk_type: "ssd".into(), ..allocate(44, "", "") };
    assert_eq!(rt.block_on(client.allocate_volume(ssd)).unwrap_err().code(), Code::InvalidArgument);

    // Files on it, written over HTTP.
    let fids: Vec<String> = (1..=4).map(|k| format!("42,{k:x}0000abcd")).collect();
    for fid in &fids {
        let reply = request(&ours.addr, "POST", &format!("/{fid}"), RAW, fid.as_bytes()).unwrap();
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let status =
        rt.block_on(client.volume_status(VolumeStatusRequest { volume_id: 42 })).unwrap().into_inner();
    assert_eq!((status.file_count, status.file_deleted_count, status.is_read_only), (4, 0, false));
    let missing = rt.block_on(client.volume_status(VolumeStatusRequest { volume_id: 7 })).unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // Read-only refuses writes until marked writable again; persisted in the .vif.
    rt.block_on(client.volume_mark_readonly(VolumeMarkReadonlyRequest {
        volume_id: 42,
        persist: true,
        ..Default::default()
    }))
    .unwrap();
    let vif: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scratch.path().join("ours/42.vif")).unwrap()).unwrap();
    assert_eq!(vif["readOnly"], true, "{vif}");
    let refused = request(&ours.addr, "POST", "/42,50000abcd", RAW, b"x").unwrap();
    assert_eq!(refused.status, 500, "{}", refused.text());
    rt.block_on(client.volume_mark_writable(VolumeMarkWritableRequest { volume_id: 42 })).unwrap();
    assert_eq!(request(&ours.addr, "POST", "/42,50000abcd", RAW, b"x").unwrap().status, 201);

    // Batch delete: weed's per-file HTTP codes.
    let batch = BatchDeleteRequest {
        file_ids: vec![
            fids[0].clone(),
            "42,20000beef".into(),  // wrong cookie
            "42,990000abcd".into(), // no such needle
            "nonsense".into(),
            "9,10000abcd".into(), // no such volume
        ],
        skip_cookie_check: false,
    };
    let results = rt.block_on(client.batch_delete(batch)).unwrap().into_inner().results;
    let codes: Vec<i32> = results.iter().map(|r| r.status).collect();
    assert_eq!(codes, vec![202, 400, 404, 400, 404], "{results:?}");
    assert!(results[0].size as usize > fids[0].len(), "the deleted record's body size: {results:?}");
    let skip = BatchDeleteRequest { file_ids: vec!["42,2ffffffff".into()], skip_cookie_check: true };
    assert_eq!(rt.block_on(client.batch_delete(skip)).unwrap().into_inner().results[0].status, 202);
    assert_eq!(get(&ours.addr, &format!("/{}", fids[0])).status, 404);
    assert_eq!(get(&ours.addr, &format!("/{}", fids[1])).status, 404);
    assert_eq!(get(&ours.addr, &format!("/{}", fids[2])).body, fids[2].as_bytes());

    // Vacuum steps called directly: check, compact, commit; a commit without a
    // compaction is refused.
    let ratio = rt
        .block_on(client.vacuum_volume_check(VacuumVolumeCheckRequest { volume_id: 42 }))
        .unwrap()
        .into_inner()
        .garbage_ratio;
    assert!(ratio > 0.3, "{ratio}");
    let refused =
        rt.block_on(client.vacuum_volume_commit(VacuumVolumeCommitRequest { volume_id: 42 })).unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused}");
    let mut stream = rt
        .block_on(client.vacuum_volume_compact(VacuumVolumeCompactRequest { volume_id: 42, preallocate: 0 }))
        .unwrap()
        .into_inner();
    let progress = rt.block_on(stream.message()).unwrap().expect("one progress message");
    assert!(progress.processed_bytes > 8);
    assert!(rt.block_on(stream.message()).unwrap().is_none(), "then the stream ends");
    let committed = rt
        .block_on(client.vacuum_volume_commit(VacuumVolumeCommitRequest { volume_id: 42 }))
        .unwrap()
        .into_inner();
    assert_eq!(committed.volume_size, std::fs::metadata(scratch.path().join("ours/42.dat")).unwrap().len());
    rt.block_on(client.vacuum_volume_cleanup(VacuumVolumeCleanupRequest { volume_id: 42 })).unwrap();
    assert_eq!(get(&ours.addr, &format!("/{}", fids[3])).body, fids[3].as_bytes());

    // Server status and pings (of itself, and of the master on our behalf).
    let status = rt.block_on(client.volume_server_status(VolumeServerStatusRequest {})).unwrap().into_inner();
    assert_eq!(status.disk_statuses.len(), 1);
    assert!(status.disk_statuses[0].all > 0 && status.disk_statuses[0].error.is_empty(), "{status:?}");
    let pong = rt.block_on(client.ping(PingRequest::default())).unwrap().into_inner();
    assert!(pong.start_time_ns > 0 && pong.stop_time_ns >= pong.start_time_ns);
    let master_ping = PingRequest { target: master.addr(), target_type: "master".into() };
    assert!(rt.block_on(client.ping(master_ping)).unwrap().into_inner().remote_time_ns > 0);
    let filer_ping = PingRequest { target: master.addr(), target_type: "filer".into() };
    assert_eq!(rt.block_on(client.ping(filer_ping)).unwrap_err().code(), Code::Unimplemented);

    // Delete: refused while not empty with only_empty; the master forgets the volume.
    let only_empty = VolumeDeleteRequest { volume_id: 42, only_empty: true, ..Default::default() };
    assert_eq!(rt.block_on(client.volume_delete(only_empty)).unwrap_err().code(), Code::FailedPrecondition);
    rt.block_on(client.volume_delete(VolumeDeleteRequest { volume_id: 42, ..Default::default() })).unwrap();
    assert!(!scratch.path().join("ours/42.dat").exists());
    eventually("the master drops volume 42", || lookup(&master, 42).is_empty());
    assert_eq!(get(&ours.addr, &format!("/{}", fids[2])).status, 404);
    ours.stop();
    master.stop();
}

#[test]
fn calls_we_do_not_serve_answer_unimplemented() {
    let scratch = tempfile::tempdir().unwrap();
    let ours = OurServer::start(&scratch.path().join("ours"), &[]);
    let rt = runtime();
    let grpc = volume_server::cluster::pb::grpc_address(&ours.addr).unwrap();
    let status = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        // VolumeEcShardsGenerate (erasure coding) exists in weed's service but not in
        // ours; the body is irrelevant.
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(
            "/volume_server_pb.VolumeServer/VolumeEcShardsGenerate",
        );
        let codec = tonic_prost::ProstCodec::<VolumeStatusRequest, VolumeStatusResponse>::default();
        grpc.unary(tonic::Request::new(VolumeStatusRequest { volume_id: 1 }), path, codec).await.unwrap_err()
    });
    assert_eq!(status.code(), Code::Unimplemented, "{status}");
    ours.stop();
}

/// A collection name becomes part of the volume's file names: one that is no plain
/// file name (a separator, `..`) is refused, over HTTP assign (400) and gRPC
/// AllocateVolume (InvalidArgument), and nothing is created in or outside the
/// data directory. (weed 4.48 itself writes `../../x` outside its directory.)
#[test]
fn collection_names_that_are_paths_are_refused_over_http_and_grpc() {
    let scratch = tempfile::tempdir().unwrap();
    let data = scratch.path().join("a").join("data");
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    let ours = OurServer::start(&data, &[]);
    let rt = runtime();
    let mut client = rt.block_on(connect(&ours.addr));
    for collection in ["../../x", "..", "a/b", "a\\b", "nul\0l"] {
        let query = url_encoded(collection);
        let r = get(&ours.addr, &format!("/dir/assign?collection={query}"));
        assert_eq!(r.status, 400, "assign {collection:?}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some_and(|e| e.contains("collection")), "{}", r.text());
        let request =
            AllocateVolumeRequest { volume_id: 7, collection: collection.into(), ..Default::default() };
        let refused = rt.block_on(client.allocate_volume(request)).unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "allocate {collection:?}: {refused}");
    }
    let outside: Vec<_> = walkdir(scratch.path())
        .into_iter()
        .filter(|p| !p.starts_with(&data) && !p.is_dir() && p.extension().is_none_or(|e| e != "log"))
        .collect();
    assert!(outside.is_empty(), "files outside the data directory: {outside:?}");
    assert!(volume_ids(&ours.addr).is_empty(), "no volume was created");
    // A plain name still works, dots and underscores included (weed's `a.b_16.dat`).
    let r = get(&ours.addr, "/dir/assign?collection=a.b_c");
    assert_eq!(r.status, 200, "{}", r.text());
    let files: Vec<_> = std::fs::read_dir(&data).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(data.join("a.b_c_1.dat").exists(), "{files:?}");
    ours.stop();
}

/// `%`-encodes every byte that is not alphanumeric, for a query value.
fn url_encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Every path under `root`, recursively.
fn walkdir(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walkdir(&path));
        }
        found.push(path);
    }
    found
}
