//! Replication in a real weed cluster (`weed master -defaultReplication=001`): every
//! write and delete through either server of a volume's pair reaches the other, whether
//! the pair is ours and a `weed volume` or two of ours; a write to ours with its replica
//! down fails rather than being acknowledged unreplicated; and a read of a volume held
//! elsewhere is proxied as `weed volume` proxies it.

mod common;

use std::time::Duration;

use common::*;
use testbeds::weed::{UploadBody, WeedMaster, WeedVolume};

/// The data centers of the weed volume and of ours where a test places files on each.
const WEED_DC: &str = "dc-weed";
const OURS_DC: &str = "dc-ours";

/// The servers the master's `/dir/lookup` lists for `fid`'s volume, sorted.
fn holders(master: &WeedMaster, fid: &str) -> Vec<String> {
    let vid = fid.split(',').next().unwrap();
    let reply = get(&master.addr(), &format!("/dir/lookup?volumeId={vid}"));
    let locations = reply.json()["locations"].as_array().cloned().unwrap_or_default();
    let mut servers: Vec<String> =
        locations.iter().filter_map(|l| l["url"].as_str().map(str::to_owned)).collect();
    servers.sort();
    servers
}

/// A fid the master assigns in a volume both `a` and `b` hold.
fn assign_on_both(master: &WeedMaster, a: &str, b: &str) -> String {
    let mut both = vec![a.to_owned(), b.to_owned()];
    both.sort();
    let mut fid = String::new();
    wait_until(Duration::from_secs(30), "the master assigns a volume held by both servers", || {
        fid = testbeds::weed::assign(&master.url(), "").map(|a| a.fid).unwrap_or_default();
        !fid.is_empty() && holders(master, &fid) == both
    });
    fid
}

/// Files written alternately through `a` and `b` read back byte-exact, with their
/// pairs, from both; deletes through either remove them from both.
fn writes_and_deletes_reach_both(master: &WeedMaster, a: &str, b: &str) {
    let mut files = Vec::new();
    for i in 0..6u64 {
        let (writer, other) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let fid = assign_on_both(master, a, b);
        // Text gets gzipped by the first server: the replica must store it as sent.
        let (data, name, mime) = if i == 5 {
            (pseudo_random(3 << 20, i), "large.bin", "application/octet-stream")
        } else if i % 3 == 0 {
            ("replicated text ".repeat(200 + i as usize).into_bytes(), "notes.txt", "text/plain")
        } else {
            (pseudo_random(5000 + i as usize * 777, i), "blob.bin", "application/octet-stream")
        };
        let color = format!("shade-{i}");
        let body = UploadBody::Multipart { filename: name, content_type: mime };
        let (status, reply) =
            testbeds::weed::upload(writer, &fid, "", &data, body, &[("Seaweed-Color", &color)])
                .unwrap_or_else(|e| panic!("upload {fid} to {writer}: {e}"));
        assert_eq!(status, 201, "upload {fid} to {writer}: {reply}");
        let mut etags = Vec::new();
        for server in [writer, other] {
            let read = get(server, &format!("/{fid}"));
            etags.push(read.header("ETag").map(str::to_owned));
            assert_eq!(read.status, 200, "{fid} (written to {writer}) read from {server}");
            assert_eq!(read.body, data, "{fid} (written to {writer}) bytes on {server}");
            assert_eq!(read.header("Color"), Some(color.as_str()), "{fid}'s pair on {server}");
            assert!(
                read.header("Content-Disposition").is_some_and(|d| d.contains(name)),
                "{fid}'s name on {server}: {:?}",
                read.header("Content-Disposition")
            );
        }
        // The ETag is the CRC of the stored bytes: the replica stored what the writer did.
        assert_eq!(etags[0], etags[1], "{fid}: the same stored bytes on both servers");
        files.push((fid, writer, other));
    }
    for (fid, writer, other) in files.iter().step_by(2) {
        // Deleted through the server that did not take the write.
        let reply = request(other, "DELETE", &format!("/{fid}"), &[], b"").unwrap();
        assert_eq!(reply.status, 202, "delete {fid} on {other}: {}", reply.text());
        for server in [writer, other] {
            assert_eq!(
                get(server, &format!("/{fid}")).status,
                404,
                "{fid} deleted on {other}, read on {server}"
            );
        }
    }
    for (fid, writer, other) in files.iter().skip(1).step_by(2) {
        for server in [writer, other] {
            assert_eq!(get(server, &format!("/{fid}")).status, 200, "{fid} kept on {server}");
        }
    }
    // Replica traffic never fans out: a `type=replicate` delete on `a` (ours) leaves `b`'s
    // copy, as a delete whose fan-out failed would. Deleting again through `a` answers
    // weed's 404 and still reaches `b`.
    let (fid, _, _) = &files[1];
    let reply = request(a, "DELETE", &format!("/{fid}?type=replicate"), &[], b"").unwrap();
    assert_eq!(reply.status, 202, "replica delete of {fid} on {a}: {}", reply.text());
    assert_eq!(get(b, &format!("/{fid}")).status, 200, "{fid}: a replica delete does not fan out");
    let reply = request(a, "DELETE", &format!("/{fid}"), &[], b"").unwrap();
    assert_eq!((reply.status, reply.text()), (404, r#"{"size":0}"#.to_owned()), "{fid} already gone on {a}");
    assert_eq!(get(b, &format!("/{fid}")).status, 404, "{fid}: the second delete reached {b}");
}

#[test]
fn ours_and_weed_volume_replicate_each_others_writes_and_deletes() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start_with(scratch.path(), 64, None, &["-defaultReplication=001"]).unwrap();
    let weed = WeedVolume::start(&scratch.path().join("weed"), &master).unwrap();
    let ours = join(&scratch.path().join("ours"), &master, &[]);
    writes_and_deletes_reach_both(&master, &ours.addr, &weed.addr());
    ours.stop();
    weed.stop();
    master.stop();
}

#[test]
fn two_of_ours_replicate_each_others_writes_and_deletes() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start_with(scratch.path(), 64, None, &["-defaultReplication=001"]).unwrap();
    let first = join(&scratch.path().join("first"), &master, &[]);
    let second = join(&scratch.path().join("second"), &master, &[]);
    writes_and_deletes_reach_both(&master, &first.addr, &second.addr);
    let metrics = get(&first.addr, "/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("volume_server_replication_total{op=\"write\",result=\"ok\"} ")
                && !l.ends_with(" 0")),
        "replicated writes are counted:\n{metrics}"
    );
    first.stop();
    second.stop();
    master.stop();
}

#[test]
fn a_write_to_ours_with_its_replica_down_fails_until_the_replica_is_back() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start_with(scratch.path(), 64, None, &["-defaultReplication=001"]).unwrap();
    let weed_dir = scratch.path().join("weed");
    let weed = WeedVolume::start(&weed_dir, &master).unwrap();
    let ours = join(&scratch.path().join("ours"), &master, &[]);
    let fid = assign_on_both(&master, &ours.addr, &weed.addr());
    let post = |fid: &str, data: &[u8]| {
        let (content_type, body) = multipart_body("f.bin", Some("application/octet-stream"), &[], data);
        request(&ours.addr, "POST", &format!("/{fid}"), &[("Content-Type", &content_type)], &body).unwrap()
    };
    assert_eq!(post(&fid, b"both up").status, 201);
    assert_eq!(get(&weed.addr(), &format!("/{fid}")).body, b"both up");

    weed.stop();
    let refused = post(&fid, b"replica down");
    assert_eq!(refused.status, 500, "a write that cannot be replicated: {}", refused.text());
    let error = refused.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("replica"), "weed's error JSON names the replication failure: {error}");

    // The same directory served again (weed takes a new port): writes go through again.
    let weed = WeedVolume::start(&weed_dir, &master).unwrap();
    wait_until(Duration::from_secs(30), "a write to ours succeeds with the replica back", || {
        post(&fid, b"replica back").status == 201
    });
    assert_eq!(get(&weed.addr(), &format!("/{fid}")).body, b"replica back");
    assert_eq!(get(&ours.addr, &format!("/{fid}")).body, b"replica back");
    ours.stop();
    weed.stop();
    master.stop();
}

#[test]
fn a_read_of_a_volume_held_elsewhere_is_proxied_like_weed_volume_does() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed_dc = format!("-dataCenter={WEED_DC}");
    let weed = WeedVolume::start_with(&scratch.path().join("weed"), &master, &["-readMode=proxy", &weed_dc])
        .unwrap();
    let ours = join(&scratch.path().join("ours"), &master, &["--data-center", OURS_DC]);
    // A file on each server, placed by data center.
    let mut on = std::collections::BTreeMap::<String, (String, Vec<u8>)>::new();
    for (i, dc) in [WEED_DC, OURS_DC].into_iter().enumerate() {
        master.grow_in(dc).unwrap();
        let data = pseudo_random(3000, i as u64);
        let (fid, server) = put_in(&master, dc, &data);
        on.insert(server, (fid, data));
    }
    assert_eq!(on.len(), 2, "files on both servers: {on:?}");
    let servers = [ours.addr.clone(), weed.addr()];
    for (holder, (fid, data)) in &on {
        let reader = servers.iter().find(|s| *s != holder).unwrap();
        let reply = get(reader, &format!("/{fid}"));
        assert_eq!((reply.status, &reply.body), (200, data), "{fid} (on {holder}) read through {reader}");
        // A key that is not there: the holder's 404 comes back.
        let (vid, rest) = fid.split_once(',').unwrap();
        let missing = format!("/{vid},ff{}", &rest[2..]);
        assert_eq!(get(reader, &missing).status, 404, "{missing} through {reader}");
    }
    // Already proxied once: not passed on again.
    let (fid, _) = &on[&weed.addr()];
    assert_eq!(get(&ours.addr, &format!("/{fid}?proxied=true")).status, 404);
    // A write to ours for weed's volume is forwarded there, not stored here (weed's way).
    let (vid, rest) = fid.split_once(',').unwrap();
    let forwarded = format!("{vid},ee{}", &rest[2..]);
    let body = UploadBody::Multipart { filename: "fw.bin", content_type: "application/octet-stream" };
    let (status, reply) =
        testbeds::weed::upload(&ours.addr, &forwarded, "", b"forwarded", body, &[]).unwrap();
    assert_eq!(status, 201, "{reply}");
    assert_eq!(get(&weed.addr(), &format!("/{forwarded}")).body, b"forwarded");
    assert_eq!(get(&ours.addr, &format!("/{forwarded}?proxied=true")).status, 404, "nothing stored on ours");
    ours.stop();

    // With --read-mode local, ours answers 404 as weed's -readMode=local does.
    let local = join(&scratch.path().join("ours"), &master, &["--read-mode", "local"]);
    assert_eq!(get(&local.addr, &format!("/{fid}")).status, 404);
    local.stop();
    // With --read-mode redirect, a 301 to the holder, as weed's -readMode=redirect.
    let redirecting = join(&scratch.path().join("ours"), &master, &["--read-mode", "redirect"]);
    let reply = get(&redirecting.addr, &format!("/{fid}.bin?collection=&x=1"));
    assert_eq!(reply.status, 301);
    let (vid, rest) = fid.split_once(',').unwrap();
    let expected = format!("http://{}/{vid},{rest}?proxied=true", weed.addr());
    assert_eq!(reply.header("Location"), Some(expected.as_str()));
    redirecting.stop();
    weed.stop();
    master.stop();
}
