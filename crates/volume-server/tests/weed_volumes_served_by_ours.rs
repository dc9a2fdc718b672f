//! Test 1: volumes written by a real `weed volume` are served by ours with the same
//! answers. Every kind of file is uploaded to weed; each is probed (plain, gzip, HEAD,
//! ranges, conditional requests…) and weed's replies recorded; then weed stops, ours
//! starts on a copy of the same directory, and the same probes must give the same
//! status, the same listed headers and the same body (sha256), case by case.

mod common;

use common::*;
use testbeds::weed::{WeedMaster, WeedVolume};

/// An uploaded file: how to reach it and how to probe it.
struct Case {
    kind: String,
    fid: String,
}

fn upload(addr: &str, method: &str, fid: &str, query: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let reply = request(addr, method, &format!("/{fid}{query}"), headers, body).unwrap();
    assert!(matches!(reply.status, 201 | 204), "upload {fid}: {} {}", reply.status, reply.text());
    reply
}

/// A file part: name, Content-Type, extra part headers.
type FilePart<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, &'a str)]);

fn upload_multipart(
    addr: &str,
    fid: &str,
    query: &str,
    file: FilePart<'_>,
    headers: &[(&str, &str)],
    data: &[u8],
) {
    let (name, ct, part) = file;
    let (content_type, body) = multipart_body(name, ct, part, data);
    let mut all = vec![("Content-Type", content_type.as_str())];
    all.extend_from_slice(headers);
    upload(addr, "POST", fid, query, &all, &body);
}

#[test]
fn weed_written_volumes_are_served_identically() {
    let scratch = tempfile::tempdir().unwrap();
    let master = WeedMaster::start(scratch.path(), 64).unwrap();
    let weed_dir = scratch.path().join("weed");
    let weed = WeedVolume::start(&weed_dir, &master).unwrap();
    let w = weed.addr();
    let ts = "?ts=1700000000";
    let mut cases = Vec::new();
    let mut add = |kind: &str, fid: &str| cases.push(Case { kind: kind.to_owned(), fid: fid.to_owned() });

    let fid = weed_assign(&master, "");
    upload_multipart(&w, &fid, ts, ("hello.txt", Some("text/plain"), &[]), &[], b"hello");
    add("small-named", &fid);
    let fid = weed_assign(&master, "");
    upload(&w, "POST", &fid, ts, &[("Content-Type", "application/octet-stream")], &pseudo_random(777, 1));
    add("raw-body", &fid);
    let fid = weed_assign(&master, "");
    upload(
        &w,
        "PUT",
        &fid,
        "",
        &[("Content-Type", "text/plain"), ("Seaweed-Foo", "bar")],
        b"hello world, hello world",
    );
    add("raw-put-text-pairs", &fid);
    let fid = weed_assign(&master, "");
    upload(&w, "PUT", &fid, ts, &[], b"<html><body>sniffed</body></html>");
    add("raw-html-sniffed", &fid);
    let fid = weed_assign(&master, "");
    upload(
        &w,
        "PUT",
        &fid,
        ts,
        &[("Content-Disposition", "attachment; filename=\"report.pdf\"")],
        &pseudo_random(300, 2),
    );
    add("raw-named-by-disposition", &fid);
    let fid = weed_assign(&master, "");
    upload_multipart(
        &w,
        &fid,
        ts,
        ("blob.bin", Some("application/octet-stream"), &[]),
        &[],
        &pseudo_random(1 << 20, 3),
    );
    add("binary-1MiB", &fid);
    let fid = weed_assign(&master, "");
    upload_multipart(
        &w,
        &fid,
        ts,
        ("big.bin", Some("application/octet-stream"), &[]),
        &[],
        &pseudo_random(3 << 20, 4),
    );
    add("binary-3MiB", &fid);
    let text: Vec<u8> =
        (0..2000).flat_map(|i| format!("line {i}: the quick brown fox\n").into_bytes()).collect();
    let fid = weed_assign(&master, "");
    upload_multipart(&w, &fid, ts, ("notes.txt", Some("text/plain"), &[]), &[], &text);
    add("gzippable-text", &fid);
    let fid = weed_assign(&master, "");
    let gz = volume_server::http::upload::gzip(&text);
    upload_multipart(
        &w,
        &fid,
        ts,
        ("pre.txt", Some("text/plain"), &[("Content-Encoding", "gzip")]),
        &[],
        &gz,
    );
    add("pre-gzipped", &fid);
    let fid = weed_assign(&master, "");
    upload_multipart(
        &w,
        &fid,
        ts,
        ("p.bin", None, &[]),
        &[("Seaweed-Foo-Bar", "baz"), ("Seaweed-A", "<x&y>")],
        &pseudo_random(300, 5),
    );
    add("pairs", &fid);
    let fid = weed_assign(&master, "?ttl=5d");
    upload_multipart(
        &w,
        &fid,
        "?ttl=5d",
        ("t.bin", Some("application/octet-stream"), &[]),
        &[],
        &pseudo_random(200, 6),
    );
    add("ttl", &fid);
    let fid = weed_assign(&master, "");
    upload_multipart(&w, &fid, ts, ("empty.txt", Some("text/plain"), &[]), &[], b"");
    add("empty", &fid);
    let fid = weed_assign(&master, "");
    upload_multipart(&w, &fid, ts, ("a.json", Some("application/json"), &[]), &[], b"{\"a\":1}");
    add("json-mime", &fid);
    let fid = weed_assign(&master, "");
    upload_multipart(&w, &fid, ts, ("é ü \"q\".txt", Some("text/plain"), &[]), &[], b"unicode name");
    add("unicode-quoted-name", &fid);
    let fid = weed_assign(&master, "?count=3");
    for (i, sibling) in [fid.clone(), format!("{fid}_1"), format!("{fid}_2")].iter().enumerate() {
        upload_multipart(
            &w,
            sibling,
            ts,
            (&format!("d{i}.bin"), None, &[]),
            &[],
            &pseudo_random(1000 + i * 1111, 7 + i as u64),
        );
        add(&format!("delta-{i}"), sibling);
    }
    let fid = weed_assign(&master, "");
    upload_multipart(&w, &fid, ts, ("gone.bin", None, &[]), &[], &pseudo_random(4000, 10));
    assert_eq!(request(&w, "DELETE", &format!("/{fid}"), &[], b"").unwrap().status, 202);
    add("deleted", &fid);
    let fid = weed_assign(&master, "");
    upload_multipart(&w, &fid, ts, ("v1.bin", None, &[]), &[], &pseudo_random(999, 11));
    upload_multipart(&w, &fid, ts, ("v2.bin", None, &[]), &[], &pseudo_random(1999, 12));
    add("overwritten", &fid);
    let fid = weed_assign(&master, "");
    upload_multipart(&w, &fid, ts, ("same.bin", None, &[]), &[], b"same bytes twice");
    upload_multipart(&w, &fid, ts, ("same.bin", None, &[]), &[], b"same bytes twice");
    add("identical-rewrite", &fid);

    // Probes beyond the stored files: other URL forms, bad ids.
    let first = cases[0].fid.clone();
    let (vid, key) = first.split_once(',').unwrap();
    let mut wrong_cookie = key.to_owned();
    let last = wrong_cookie.pop().unwrap();
    wrong_cookie.push(if last == '0' { '1' } else { '0' });
    let extra_paths = [
        format!("/{vid},{wrong_cookie}"),
        format!("/{vid},ffffff12345678"),
        format!("/{vid}/{key}"),
        format!("/{vid}/{key}.jpg"),
        format!("/{vid}/{key}/renamed.html"),
        "/9999,0112345678".to_owned(),
    ];
    // Only the status of malformed ids is compared: our 400 carries a message.
    let bad_paths = ["/1,zz", "/1", "/x,0112345678", "/1,ffffffffffffffff00000000_1"];

    let pair_headers = ["foo", "foo-bar", "a"];
    let record = |addr: &str| {
        let mut seen = Vec::new();
        for case in &cases {
            let etag = get(addr, &format!("/{}", case.fid)).header("etag").unwrap_or("").to_owned();
            for (label, method, suffix, headers) in probes(&etag) {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let reply = request(addr, method, &format!("/{}{suffix}", case.fid), &headers, b"").unwrap();
                seen.push((format!("{} {label}", case.kind), observe(&reply, &pair_headers)));
            }
        }
        for path in &extra_paths {
            seen.push((format!("path {path}"), observe(&get(addr, path), &[])));
        }
        for path in bad_paths {
            seen.push((
                format!("bad path {path}"),
                Observed {
                    status: get(addr, path).status,
                    headers: Default::default(),
                    body_sha256: String::new(),
                },
            ));
        }
        seen
    };
    let weed_seen = record(&w);
    let weed_status = get(&w, "/status").json();
    weed.stop();
    master.stop();

    let ours_dir = scratch.path().join("ours");
    copy_dir(&weed_dir, &ours_dir);
    let ours = OurServer::start(&ours_dir, &["--offset-width", "5"]);
    let ours_seen = record(&ours.addr);
    let mismatches: Vec<String> = weed_seen
        .iter()
        .zip(&ours_seen)
        .filter(|(w, o)| w != o)
        .map(|((label, w), (_, o))| format!("{label}:\n  weed {w:?}\n  ours {o:?}"))
        .collect();
    assert!(
        mismatches.is_empty(),
        "{} of {} probes differ:\n{}",
        mismatches.len(),
        weed_seen.len(),
        mismatches.join("\n")
    );
    assert!(weed_seen.len() > 400, "probed {} replies", weed_seen.len());

    // /status: the same volumes with the same counters.
    let ours_status = get(&ours.addr, "/status").json();
    let counters = |status: &serde_json::Value| -> Vec<String> {
        status["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let pick = |k: &str| v[k].to_string();
                [
                    "Id",
                    "Collection",
                    "FileCount",
                    "DeleteCount",
                    "Size",
                    "DeletedByteCount",
                    "ReadOnly",
                    "Ttl",
                    "ReplicaPlacement",
                    "Version",
                ]
                .map(pick)
                .join(" ")
            })
            .collect()
    };
    assert_eq!(counters(&ours_status), counters(&weed_status));
    assert!(ours_status["DiskStatuses"][0]["all"].as_u64().unwrap() > 0);
    ours.stop();
}
