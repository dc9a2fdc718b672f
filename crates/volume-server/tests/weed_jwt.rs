//! weed's JWT security, live: a `weed master` that reads a `security.toml` with a write
//! key and a read key, and in one cluster our server (`--mserver`, the same file via
//! `--security-config`), in another a real `weed volume` (reading it from its working
//! directory). `weed upload` gets its token from the master and succeeds on ours;
//! every refused request gets weed's 401 `{"error":"wrong jwt"}`; and both servers
//! answer the same request set with the same statuses and bodies.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rdma_transport::server::auth::JwtKey;
use testbeds::weed::{WeedMaster, WeedVolume};

const WRITE_KEY: &str = "write-secret-for-tests";
const READ_KEY: &str = "read-secret-for-tests";

fn write_security_toml(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("security.toml");
    // Tokens live a minute: the test is slow under load, and expiry is tested with a
    // token signed already expired.
    std::fs::write(
        &path,
        format!(
            "[jwt.signing]\nkey = \"{WRITE_KEY}\"\nexpires_after_seconds = 60\n\n\
             [jwt.signing.read]\nkey = \"{READ_KEY}\"\nexpires_after_seconds = 60\n"
        ),
    )
    .unwrap();
    path
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The token in a master reply's `Authorization: BEARER <jwt>`.
fn bearer(reply: &Reply) -> String {
    let value = reply.header("authorization").unwrap_or_else(|| panic!("no token: {reply:?}"));
    let (scheme, token) = value.split_once(' ').unwrap();
    assert!(scheme.eq_ignore_ascii_case("bearer"), "{value}");
    token.to_owned()
}

/// `/dir/assign` on the master: the fid, the server to write to, the write token.
fn assign(master: &WeedMaster) -> (String, String, String) {
    let reply = get(&master.addr(), "/dir/assign");
    assert_eq!(reply.status, 200, "assign: {}", reply.text());
    let json = reply.json();
    (json["fid"].as_str().unwrap().to_owned(), json["url"].as_str().unwrap().to_owned(), bearer(&reply))
}

/// `/dir/lookup?fileId=` on the master: a write token, or with `read` a read token.
fn lookup_token(master: &WeedMaster, fid: &str, read: bool) -> String {
    lookup(master, fid, read).1
}

/// `/dir/lookup?fileId=`: the first server holding the file, and the token.
fn lookup(master: &WeedMaster, fid: &str, read: bool) -> (String, String) {
    let query = if read { "&read=yes" } else { "" };
    let reply = get(&master.addr(), &format!("/dir/lookup?fileId={fid}{query}"));
    assert_eq!(reply.status, 200, "lookup: {}", reply.text());
    (reply.json()["locations"][0]["url"].as_str().unwrap_or_default().to_owned(), bearer(&reply))
}

fn post(addr: &str, path: &str, data: &[u8], headers: &[(&str, &str)]) -> Reply {
    let (content_type, body) = multipart_body("hello.txt", Some("text/plain"), &[], data);
    let mut all = vec![("Content-Type", content_type.as_str())];
    all.extend_from_slice(headers);
    // weed volume answers a refused upload without reading its body and closes, so the
    // kernel may reset the connection before the 401 is read: try again (bounded).
    let mut attempts = 0;
    loop {
        match request(addr, "POST", path, &all, &body) {
            Ok(reply) => return reply,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && attempts < 5 => attempts += 1,
            Err(e) => panic!("POST {path} on {addr}: {e}"),
        }
    }
}

fn send(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, method, path, headers, b"").unwrap_or_else(|e| panic!("{method} {path} on {addr:?}: {e}"))
}

/// Runs the request set against the server `master` assigns to, returning
/// (label, status, content type and body) per request and asserting what must hold on any weed-compatible
/// server.
fn probe(master: &WeedMaster) -> Vec<(String, u16, String)> {
    let mut seen = Vec::new();
    let mut record = |label: &str, reply: &Reply| {
        let content_type = reply.header("content-type").unwrap_or_default();
        seen.push((label.to_owned(), reply.status, format!("{content_type} {}", reply.text())));
    };
    let data = pseudo_random(3000, 7);
    let (fid, server, token) = assign(master);
    let (other_fid, _, other_token) = assign(master);
    let path = format!("/{fid}");
    let wrong = |reply: &Reply, what: &str| {
        assert_eq!((reply.status, reply.json()), (401, serde_json::json!({"error": "wrong jwt"})), "{what}");
    };

    let r = post(&server, &path, &data, &[]);
    wrong(&r, "write without a token");
    record("POST no token", &r);
    let r = post(&server, &path, &data, &[("Authorization", &format!("Bearer {other_token}"))]);
    wrong(&r, "write with another fid's token");
    record("POST other fid's token", &r);
    let foreign = JwtKey::new("not-the-key").sign(&serde_json::json!({ "fid": fid, "exp": now() + 60 }));
    let r = post(&server, &format!("{path}?jwt={foreign}"), &data, &[]);
    wrong(&r, "write with a token signed with another key");
    record("POST other key", &r);
    let expired = JwtKey::new(WRITE_KEY).sign(&serde_json::json!({ "fid": fid, "exp": now() - 5 }));
    let r = post(&server, &path, &data, &[("Authorization", &format!("Bearer {expired}"))]);
    wrong(&r, "write with an expired token");
    record("POST expired", &r);
    let read_token = JwtKey::new(READ_KEY).sign(&serde_json::json!({ "fid": fid, "exp": now() + 60 }));
    let r = post(&server, &path, &data, &[("Authorization", &format!("Bearer {read_token}"))]);
    wrong(&r, "write with a read token");
    record("POST read token", &r);
    let r = post(&server, &path, &data, &[("Authorization", &format!("BEARER {token}"))]);
    assert_eq!(r.status, 201, "write with the assign's token: {}", r.text());
    record("POST assign token", &r);
    // The `_N` siblings of a fid share its token.
    let r =
        post(&server, &format!("/{fid}_1"), &data[..100], &[("Authorization", &format!("bearer {token}"))]);
    assert_eq!(r.status, 201, "write of fid_1 with the fid's token: {}", r.text());
    record("POST _1 with the fid's token", &r);

    let r = send(&server, "GET", &path, &[]);
    wrong(&r, "read without a token");
    record("GET no token", &r);
    let r = send(&server, "GET", &path, &[("Authorization", &format!("Bearer {token}"))]);
    wrong(&r, "read with a write token");
    record("GET write token", &r);
    let read = lookup_token(master, &fid, true);
    let r = send(&server, "GET", &path, &[("Authorization", &format!("Bearer {read}"))]);
    assert_eq!((r.status, r.body == data), (200, true), "read with the lookup's read token");
    record("GET lookup read token", &r);
    let r = send(&server, "GET", &format!("{path}?jwt={read}"), &[]);
    assert_eq!((r.status, r.body == data), (200, true), "read with ?jwt=");
    record("GET ?jwt=", &r);
    let r = send(&server, "GET", &path, &[("Cookie", &format!("AT={read}"))]);
    assert_eq!((r.status, r.body == data), (200, true), "read with the AT cookie");
    record("GET cookie AT", &r);
    let r = send(&server, "GET", &format!("/{fid}_1"), &[("Authorization", &format!("Bearer {read}"))]);
    assert_eq!((r.status, r.body.len()), (200, 100), "read of fid_1 with the fid's read token");
    record("GET _1", &r);
    let r = send(&server, "GET", &format!("/{other_fid}"), &[("Authorization", &format!("Bearer {read}"))]);
    wrong(&r, "read of another fid");
    record("GET other fid", &r);
    // The token is checked before the ids: a bad fid without a token is still 401.
    let r = send(&server, "GET", &format!("/{}", fid.replace(',', ",zz")), &[]);
    record("GET bad fid no token", &r);

    let r = send(&server, "HEAD", &path, &[]);
    assert_eq!(r.status, 401, "HEAD without a token");
    record("HEAD no token", &r);
    let r = send(&server, "HEAD", &path, &[("Authorization", &format!("Bearer {read}"))]);
    assert_eq!(r.status, 200, "HEAD with the read token");
    record("HEAD read token", &r);

    let r = send(&server, "DELETE", &path, &[]);
    wrong(&r, "delete without a token");
    record("DELETE no token", &r);
    let r = send(&server, "DELETE", &path, &[("Authorization", &format!("Bearer {other_token}"))]);
    wrong(&r, "delete with another fid's token");
    record("DELETE other fid's token", &r);
    let r = send(&server, "DELETE", &path, &[("Authorization", &format!("Bearer {expired}"))]);
    wrong(&r, "delete with an expired token");
    record("DELETE expired", &r);
    let r = send(&server, "DELETE", &path, &[("Authorization", &format!("Bearer {read}"))]);
    wrong(&r, "delete with a read token");
    record("DELETE read token", &r);
    let delete_token = lookup_token(master, &fid, false);
    let r = send(&server, "DELETE", &path, &[("Authorization", &format!("Bearer {delete_token}"))]);
    assert_eq!(r.status, 202, "delete with the lookup's write token: {}", r.text());
    record("DELETE lookup write token", &r);
    let r = send(&server, "GET", &path, &[("Authorization", &format!("Bearer {read}"))]);
    assert_eq!(r.status, 404, "read after delete");
    record("GET after delete", &r);
    seen
}

/// `weed upload` of a file (it takes the token from the master's gRPC assign), then a
/// read of it with the lookup's read token.
fn weed_upload(master: &WeedMaster, scratch: &Path) {
    let data = pseudo_random(50_000, 3);
    let file = scratch.join("payload.bin");
    std::fs::write(&file, &data).unwrap();
    let master_flag = format!("-master={}", master.addr());
    let (ok, out) = run_weed(&["upload", &master_flag, file.to_str().unwrap()], "", Duration::from_secs(120));
    assert!(ok, "weed upload: {out}");
    let uploaded: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let fid = uploaded[0]["fid"].as_str().unwrap_or_else(|| panic!("no fid: {out}"));
    assert!(uploaded[0]["error"].as_str().unwrap_or("").is_empty(), "weed upload: {out}");
    let (server, read) = lookup(master, fid, true);
    let r = send(&server, "GET", &format!("/{fid}"), &[("Authorization", &format!("Bearer {read}"))]);
    assert_eq!((r.status, sha256(&r.body)), (200, sha256(&data)), "read back of weed upload's file");
}

#[test]
fn a_secured_cluster_signs_and_checks_tokens_as_weed_does() {
    let scratch = tempfile::tempdir().unwrap();
    let config_dir = scratch.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let security_toml = write_security_toml(&config_dir);

    // Ours behind a secured weed master.
    let master = WeedMaster::start_in(&scratch.path().join("m-ours"), 100, Some(&config_dir)).unwrap();
    let ours =
        join(&scratch.path().join("ours"), &master, &["--security-config", security_toml.to_str().unwrap()]);
    weed_upload(&master, scratch.path());
    let from_ours = probe(&master);

    // A real weed volume behind a secured weed master: the same requests.
    let weed_master = WeedMaster::start_in(&scratch.path().join("m-weed"), 100, Some(&config_dir)).unwrap();
    let weed = WeedVolume::start_in(&scratch.path().join("weed"), &weed_master, Some(&config_dir)).unwrap();
    let from_weed = probe(&weed_master);

    for (o, w) in from_ours.iter().zip(&from_weed) {
        assert_eq!(o, w, "ours vs weed volume");
    }
    assert_eq!(from_ours.len(), from_weed.len());
    weed.stop();
    weed_master.stop();
    ours.stop();
    master.stop();
}

#[test]
fn in_a_secured_replicated_cluster_replicas_get_the_clients_token() {
    let scratch = tempfile::tempdir().unwrap();
    let config_dir = scratch.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let security_toml = write_security_toml(&config_dir);
    let master =
        WeedMaster::start_with(scratch.path(), 100, Some(&config_dir), &["-defaultReplication=001"]).unwrap();
    let weed = WeedVolume::start_in(&scratch.path().join("weed"), &master, Some(&config_dir)).unwrap();
    let ours =
        join(&scratch.path().join("ours"), &master, &["--security-config", security_toml.to_str().unwrap()]);
    let servers = [ours.addr.clone(), weed.addr()];
    for (i, writer) in servers.iter().enumerate() {
        let (fid, _, token) = assign(&master);
        let data = pseudo_random(4000, i as u64);
        let r = post(writer, &format!("/{fid}"), &data, &[("Authorization", &format!("Bearer {token}"))]);
        assert_eq!(r.status, 201, "write to {writer}: {}", r.text());
        let read = lookup_token(&master, &fid, true);
        for server in &servers {
            let r = send(server, "GET", &format!("/{fid}"), &[("Authorization", &format!("Bearer {read}"))]);
            assert_eq!(
                (r.status, r.body == data),
                (200, true),
                "{fid} written to {writer}, read on {server}"
            );
        }
        // Deleted through ours: weed 4.48 itself refuses to pass a delete's token on over
        // plain HTTP ("refusing to forward delete authorization ... without HTTPS").
        let write = lookup_token(&master, &fid, false);
        let r =
            send(&ours.addr, "DELETE", &format!("/{fid}"), &[("Authorization", &format!("Bearer {write}"))]);
        assert_eq!(r.status, 202, "delete on ours: {}", r.text());
        for server in &servers {
            let r = send(server, "GET", &format!("/{fid}"), &[("Authorization", &format!("Bearer {read}"))]);
            assert_eq!(r.status, 404, "{fid} deleted through ours, read on {server}");
        }
    }
    ours.stop();
    weed.stop();
    master.stop();
}

#[test]
fn standalone_the_embedded_master_issues_tokens_and_the_server_checks_them() {
    let scratch = tempfile::tempdir().unwrap();
    let security_toml = write_security_toml(scratch.path());
    let ours = OurServer::start(
        &scratch.path().join("data"),
        &["--security-config", security_toml.to_str().unwrap()],
    );
    let reply = get(&ours.addr, "/dir/assign");
    assert_eq!(reply.status, 200, "{}", reply.text());
    let fid = reply.json()["fid"].as_str().unwrap().to_owned();
    let token = bearer(&reply);
    assert!(reply.header("authorization").unwrap().starts_with("BEARER "), "weed master's spelling");
    let data = pseudo_random(1000, 1);
    let r = post(&ours.addr, &format!("/{fid}"), &data, &[]);
    assert_eq!((r.status, r.text()), (401, r#"{"error":"wrong jwt"}"#.to_owned()), "write without token");
    let r = post(&ours.addr, &format!("/{fid}"), &data, &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(r.status, 201, "{}", r.text());

    // Lookups: a token only for a fileId; a read token with read=yes, else a write token.
    assert!(get(&ours.addr, &format!("/dir/lookup?volumeId={fid}")).header("authorization").is_none());
    let lookup = |query: &str| {
        let reply = get(&ours.addr, &format!("/dir/lookup?fileId={fid}{query}"));
        assert_eq!(reply.status, 200);
        bearer(&reply)
    };
    let (read, write) = (lookup("&read=yes"), lookup(""));
    let vid_fid = fid.split_once(',').unwrap();
    for (token, key) in [(&read, READ_KEY), (&write, WRITE_KEY)] {
        let claims = JwtKey::new(key).verify(token, now()).expect("signed with the right key");
        assert_eq!(claims.fid.as_deref(), Some(fid.as_str()));
    }
    assert!(JwtKey::new(WRITE_KEY).verify(&read, now()).is_err());
    let r = send(&ours.addr, "GET", &format!("/{fid}"), &[]);
    assert_eq!(r.status, 401, "read without token");
    let r = send(
        &ours.addr,
        "GET",
        &format!("/{}/{}", vid_fid.0, vid_fid.1),
        &[("Authorization", &format!("Bearer {read}"))],
    );
    assert_eq!((r.status, r.body == data), (200, true), "read with the lookup's read token");
    let r = send(&ours.addr, "DELETE", &format!("/{fid}"), &[("Authorization", &format!("Bearer {read}"))]);
    assert_eq!(r.status, 401, "delete with a read token");
    let r = send(&ours.addr, "DELETE", &format!("/{fid}"), &[("Authorization", &format!("Bearer {write}"))]);
    assert_eq!(r.status, 202, "delete with the lookup's write token: {}", r.text());
    ours.stop();
}

/// `type=replicate` (replica traffic: no upload budget, no fan-out) is no way around
/// the keys: as in weed, a replica write or delete needs a write token for its file.
#[test]
fn with_keys_a_replica_write_or_delete_needs_a_token_for_its_file() {
    let scratch = tempfile::tempdir().unwrap();
    let security_toml = write_security_toml(scratch.path());
    let ours = OurServer::start(
        &scratch.path().join("data"),
        &["--security-config", security_toml.to_str().unwrap()],
    );
    let assign = || {
        let reply = get(&ours.addr, "/dir/assign");
        (reply.json()["fid"].as_str().unwrap().to_owned(), bearer(&reply))
    };
    let (fid, token) = assign();
    let (_, other_token) = assign();
    let replica = format!("/{fid}?type=replicate");
    let data = pseudo_random(1000, 7);
    let wrong = r#"{"error":"wrong jwt"}"#.to_owned();
    let r = post(&ours.addr, &replica, &data, &[]);
    assert_eq!((r.status, r.text()), (401, wrong.clone()), "replica write without a token");
    let r = post(&ours.addr, &replica, &data, &[("Authorization", &format!("Bearer {other_token}"))]);
    assert_eq!((r.status, r.text()), (401, wrong.clone()), "replica write with another file's token");
    let read = JwtKey::new(READ_KEY).sign(&serde_json::json!({ "fid": fid }));
    assert_eq!(send(&ours.addr, "GET", &format!("/{fid}?jwt={read}"), &[]).status, 404, "nothing stored");
    let r = post(&ours.addr, &replica, &data, &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(r.status, 201, "replica write with its token: {}", r.text());
    let r = send(&ours.addr, "DELETE", &replica, &[]);
    assert_eq!((r.status, r.text()), (401, wrong), "replica delete without a token");
    assert_eq!(send(&ours.addr, "GET", &format!("/{fid}?jwt={read}"), &[]).body, data);
    ours.stop();
}

#[test]
fn without_keys_nothing_is_signed_or_checked() {
    let scratch = tempfile::tempdir().unwrap();
    let empty = scratch.path().join("security.toml");
    std::fs::write(&empty, "[jwt.signing]\nkey = \"\"\n").unwrap();
    let ours =
        OurServer::start(&scratch.path().join("data"), &["--security-config", empty.to_str().unwrap()]);
    let reply = get(&ours.addr, "/dir/assign");
    assert!(reply.header("authorization").is_none());
    let fid = reply.json()["fid"].as_str().unwrap().to_owned();
    assert_eq!(post(&ours.addr, &format!("/{fid}"), b"open", &[]).status, 201);
    assert_eq!(send(&ours.addr, "GET", &format!("/{fid}"), &[]).status, 200);
    assert_eq!(send(&ours.addr, "DELETE", &format!("/{fid}"), &[]).status, 202);
    ours.stop();
}

#[test]
fn a_named_security_config_that_is_missing_or_broken_stops_the_server() {
    let scratch = tempfile::tempdir().unwrap();
    let broken = scratch.path().join("broken.toml");
    std::fs::write(&broken, "[jwt.signing\nkey = ").unwrap();
    for config in [scratch.path().join("missing.toml"), broken] {
        let dir = scratch.path().to_str().unwrap();
        let config_arg = config.to_str().unwrap();
        let stderr = start_refused(
            &["--dir", dir, "--port", "1", "--rdma", "off", "--security-config", config_arg],
            &[],
        );
        assert!(stderr.contains(config.file_name().unwrap().to_str().unwrap()), "names the file: {stderr}");
    }
}
