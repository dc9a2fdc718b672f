//! Replication as weed's volume server does it (`topology/store_replicate.go`) and reads
//! of volumes held elsewhere (`proxyReqToTargetServer`).
//!
//! **Writes and deletes.** A write or delete of a volume whose replica placement asks
//! for more than one copy (or, for writes, of a volume held only elsewhere) goes to
//! every other server the master lists for it: a write as a multipart POST, a delete as
//! a DELETE, both with `type=replicate`, which stops the replica from fanning out in
//! turn, and with the client's own token (a replica checks the same JWT). The client
//! hears of success only when every replica answered success; otherwise a 500 with
//! weed's message. A volume listed on fewer servers than its copy count fails the write
//! before anything is stored, as weed does: a replica down means no acknowledged write
//! that is not replicated. A single-copy volume never asks the master.
//!
//! **Reads** of a volume not on this server are proxied to a server holding it (weed's
//! default `-readMode=proxy`), or redirected to it (`redirect`), with `proxied=true` so
//! that the other server does not pass the request on again; `local` answers 404.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use needle::VolumeId;
use tokio::task::JoinSet;

use super::AppState;
use super::peers::clients;
use super::upload::Upload;
use crate::security::token_of;
use volume_store::volume::Volume;

/// What a read of a volume not on this server does (weed's `-readMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadMode {
    /// 404.
    Local,
    /// Fetch it from a server holding the volume and pass the reply on.
    #[default]
    Proxy,
    /// 301 to a server holding the volume.
    Redirect,
}

/// Whether a request is replica traffic (`type=replicate`).
pub(super) fn is_replica(query: Option<&str>) -> bool {
    has_pair(query, "type=replicate")
}

/// Whether `query` has `pair` (`name=value`, as sent) among its `&`-separated pairs.
fn has_pair(query: Option<&str>, pair: &str) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p == pair))
}

/// The other servers a write or delete of `volume` must reach too (weed's
/// `GetWritableRemoteReplications`): none for replica traffic, for a single-copy local
/// volume, or on a standalone server; otherwise the master's list without this server.
/// `local` is the volume when it is on this server; `write` tells a write from a
/// delete, which weed 4.48 words differently when replicas are missing.
pub(super) async fn targets(
    state: &AppState,
    volume: VolumeId,
    local: Option<&Volume>,
    query: Option<&str>,
    write: bool,
) -> Result<Vec<String>, String> {
    if is_replica(query) || !state.locations.clustered() {
        return Ok(Vec::new());
    }
    let copies = local.map(|v| v.replica_placement().copy_count() as usize);
    if copies == Some(1) {
        return Ok(Vec::new());
    }
    let listed = state
        .locations
        .lookup(volume.0)
        .await
        .map_err(|e| format!("replicating lookup failed for {}: {e}", volume.0))
        .inspect_err(|e| tracing::warn!(volume = volume.0, error = %e, "no replica list"))?;
    if let Some(copies) = copies
        && listed.len() < copies
    {
        state.locations.forget(volume.0);
        tracing::warn!(volume = volume.0, listed = listed.len(), copies, "fewer servers than copies");
        let what = if write { "writable replication locations" } else { "replication locations" };
        return Err(format!(
            "{what} [{}] is less than volume {} replication copy count [{copies}]",
            listed.len(),
            volume.0
        ));
    }
    Ok(listed.into_iter().filter(|server| *server != state.public_url).collect())
}

/// Sends the stored form of an upload to every target as a `type=replicate` POST to
/// `path`; `Err` names each replica that failed.
pub(super) async fn write(
    state: &AppState,
    volume: VolumeId,
    targets: Vec<String>,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    upload: &Upload,
) -> Result<(), String> {
    let (content_type, body) = multipart(upload);
    let mut params = Vec::new();
    if upload.chunk_manifest {
        params.push("cm=true".to_owned());
    }
    if has_pair(query, "fsync=true") {
        params.push("fsync=true".to_owned());
    }
    if upload.last_modified > 0 {
        params.push(format!("ts={}", upload.last_modified));
    }
    params.push(format!("ttl={}", upload.ttl));
    params.push("type=replicate".to_owned());
    let query_string = params.join("&");
    let pairs = pair_headers(upload.pairs.as_deref());
    let accepted = &[StatusCode::CREATED, StatusCode::NO_CONTENT, StatusCode::OK];
    let outcome = fan_out(state, volume, "write", accepted, targets, token_of(query, headers), |server| {
        let mut request = clients()
            .1
            .post(format!("http://{server}{path}?{query_string}"))
            .header(header::CONTENT_TYPE, content_type.clone())
            .body(body.clone());
        for (name, value) in &pairs {
            request = request.header(name.as_str(), value.clone());
        }
        request
    })
    .await;
    outcome.map_err(|e| format!("failed to write to replicas for volume {}: {e}", volume.0))
}

/// Deletes `path` on every target with `type=replicate`; a replica that no longer has
/// the file counts as done, as in weed.
pub(super) async fn delete(
    state: &AppState,
    volume: VolumeId,
    targets: Vec<String>,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<(), String> {
    let accepted = &[StatusCode::ACCEPTED, StatusCode::NOT_FOUND, StatusCode::NO_CONTENT, StatusCode::OK];
    fan_out(state, volume, "delete", accepted, targets, token_of(query, headers), |server| {
        clients().1.delete(format!("http://{server}{path}?type=replicate"))
    })
    .await
}

/// Sends the request `build` makes for every target at once, with the client's `token`,
/// and waits for all of them (each bounded by the client's timeouts); a reply whose
/// status is not `accepted` is a failure. The error lists every failure as weed's
/// `DistributedOperation` does, `[server]: cause`, one a line.
async fn fan_out(
    state: &AppState,
    volume: VolumeId,
    op: &'static str,
    accepted: &'static [StatusCode],
    targets: Vec<String>,
    token: Option<String>,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<(), String> {
    if targets.is_empty() {
        return Ok(());
    }
    let mut running = JoinSet::new();
    for server in targets {
        let mut request = build(&server);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        running.spawn(async move {
            let outcome = match request.send().await {
                Ok(reply) if accepted.contains(&reply.status()) => Ok(()),
                Ok(reply) => Err(failure(reply.status(), reply).await),
                Err(e) => Err(e.to_string()),
            };
            (server, outcome)
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = running.join_next().await {
        let (server, outcome) = done.map_err(|e| format!("replica task: {e}"))?;
        if let Err(e) = outcome {
            tracing::warn!(volume = volume.0, peer = %server, op, error = %e, "replica failed");
            failures.push(format!("[{server}]: {e}"));
        }
    }
    state.metrics.replicated(op, failures.is_empty());
    if failures.is_empty() {
        Ok(())
    } else {
        state.locations.forget(volume.0);
        failures.sort();
        Err(failures.join("\n"))
    }
}

/// A replica's refusal: the `error` of its JSON reply, or the body as text.
async fn failure(status: StatusCode, reply: reqwest::Response) -> String {
    let body = reply.bytes().await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| json["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    format!("{status}: {message}")
}

/// The upload as weed's uploader sends it to a replica: one `file` part carrying the
/// name, the mime type, `Content-Encoding: gzip` for data stored compressed (sent as
/// stored, so the replica stores the same bytes) and the client's `Content-MD5`.
fn multipart(upload: &Upload) -> (String, Bytes) {
    let boundary = format!("{:032x}", rand::random::<u128>());
    let mut head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; ");
    // Go's mime.FormatMediaType: control characters and non-ASCII go RFC 2231-encoded,
    // so no name can break the part's header lines.
    if upload.name.bytes().all(|b| (b >= b' ' || b == b'\t') && b < 0x7f) {
        let quoted = upload.name.replace('\\', "\\\\").replace('"', "\\\"");
        head.push_str(&format!("filename=\"{quoted}\"\r\n"));
    } else {
        head.push_str(&format!("filename*=utf-8''{}\r\n", percent_encode(&upload.name)));
    }
    if upload.gzipped {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    if let Some(md5) = &upload.content_md5 {
        head.push_str(&format!("Content-Md5: {md5}\r\n"));
    }
    if !upload.mime.is_empty() {
        head.push_str(&format!("Content-Type: {}\r\n", upload.mime));
    }
    head.push_str("\r\n");
    let tail = format!("\r\n--{boundary}--\r\n");
    let mut body = Vec::with_capacity(head.len() + upload.data.len() + tail.len());
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(&upload.data);
    body.extend_from_slice(tail.as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body.into())
}

/// RFC 2231 / 5987 value encoding: everything but unreserved characters as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The stored pairs JSON as the `Seaweed-` headers that recreate it on the replica.
fn pair_headers(pairs: Option<&[u8]>) -> Vec<(String, HeaderValue)> {
    let Some(Ok(serde_json::Value::Object(map))) = pairs.map(serde_json::from_slice) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(key, value)| {
            // UTF-8 goes through as the bytes Go would send.
            let value = HeaderValue::from_bytes(value.as_str()?.as_bytes()).ok()?;
            let name = format!("Seaweed-{key}");
            axum::http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            Some((name, value))
        })
        .collect()
}

/// GET/HEAD of a volume not on this server, as `state.read_mode` says. `None` when
/// the read should be answered as a plain miss (404): standalone, `local`, a request
/// already proxied, or no other server listed.
/// `vid` and `fid` are the URL's text for them.
pub(super) async fn read_elsewhere(
    state: &AppState,
    request: &Request<()>,
    volume: VolumeId,
    (vid, fid): (&str, &str),
) -> Option<Response> {
    if state.read_mode == ReadMode::Local || !state.locations.clustered() {
        return None;
    }
    if has_pair(request.uri().query(), "proxied=true") {
        return None;
    }
    let servers = match state.locations.lookup(volume.0).await {
        Ok(servers) => servers,
        Err(e) => {
            tracing::info!(volume = volume.0, error = %e, "read of a volume not here: lookup failed");
            return None;
        }
    };
    let others: Vec<&String> = servers.iter().filter(|s| **s != state.public_url).collect();
    let server = *others.get(rand::random_range(0..others.len().max(1)))?;
    if state.read_mode == ReadMode::Redirect {
        return Some(redirect(server, request, (vid, fid)));
    }
    let query = match request.uri().query() {
        None | Some("") => "proxied=true".to_owned(),
        Some(query) => format!("{query}&proxied=true"),
    };
    let url = format!("http://{server}{}?{query}", request.uri().path());
    let mut forwarded = clients().1.request(request.method().clone(), &url);
    for (name, value) in request.headers() {
        if ![header::HOST, header::CONNECTION].contains(name) {
            forwarded = forwarded.header(name, value);
        }
    }
    let mut reply = match forwarded.send().await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::warn!(volume = volume.0, peer = %server, error = %e, "proxied read failed");
            state.locations.forget(volume.0);
            state.metrics.proxied_read(false);
            return Some(super::ApiError::empty(StatusCode::INTERNAL_SERVER_ERROR).into_response());
        }
    };
    state.metrics.proxied_read(true);
    let mut response = Response::builder().status(reply.status());
    for (name, value) in reply.headers() {
        // Framing is hyper's to set for this connection; `Server` is ours.
        if ![header::SERVER, header::TRANSFER_ENCODING, header::CONNECTION].contains(name) {
            response = response.header(name, value);
        }
    }
    // Streamed on as it arrives; a failure half-way aborts the reply (short body).
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tokio::spawn(async move {
        loop {
            let next = match reply.chunk().await {
                Ok(Some(bytes)) => Ok(bytes),
                Ok(None) => return,
                Err(e) => Err(std::io::Error::other(e)),
            };
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    response.body(Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))).ok()
}

/// weed's redirect: a 301 to `/<vid>,<fid>` on `server`, keeping only `collection`, as
/// Go's `http.Redirect` words it.
fn redirect(server: &str, request: &Request<()>, (vid, fid): (&str, &str)) -> Response {
    let collection = super::query_params(request).remove("collection").filter(|c| !c.is_empty());
    let query = match collection {
        Some(c) => format!("collection={}&proxied=true", percent_encode(&c)),
        None => "proxied=true".to_owned(),
    };
    let url = format!("http://{server}/{vid},{fid}?{query}");
    let mut response =
        Response::builder().status(StatusCode::MOVED_PERMANENTLY).header(header::LOCATION, &url);
    let body = if request.method() == axum::http::Method::GET {
        response = response.header(header::CONTENT_TYPE, "text/html; charset=utf-8");
        format!("<a href=\"{}\">Moved Permanently</a>.\n\n", url.replace('&', "&amp;"))
    } else {
        String::new()
    };
    response
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body))
        .unwrap_or_else(|_| super::ApiError::empty(StatusCode::INTERNAL_SERVER_ERROR).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_traffic_is_recognised() {
        assert!(is_replica(Some("ttl=&type=replicate")));
        assert!(!is_replica(Some("type=replicated")));
        assert!(!is_replica(None));
    }

    #[test]
    fn the_replica_upload_parses_back_to_the_same_needle() {
        let upload = Upload {
            data: Bytes::from_static(b"\x1f\x8b stored as sent"),
            name: "r\u{e9}sum\u{e9} \"1\"\r\nContent-Encoding: x.txt".into(),
            mime: "text/plain".into(),
            gzipped: true,
            pairs: Some("{\"Color\":\"bl\u{fc}e\"}".as_bytes().to_vec()),
            ..Upload::default()
        };
        let (content_type, body) = multipart(&upload);
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        for (name, value) in pair_headers(upload.pairs.as_deref()) {
            headers.insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
        }
        let query = [("type".to_owned(), "replicate".to_owned())].into();
        let parsed = crate::http::upload::parse(&crate::http::upload::Request {
            method: &axum::http::Method::POST,
            headers: &headers,
            path: "/3,01637037d6",
            query: &query,
            body: &body,
            size_limit: 1 << 20,
            now_seconds: 1,
        })
        .unwrap();
        assert_eq!(parsed.data, upload.data);
        assert_eq!(parsed.name, upload.name);
        assert_eq!(parsed.mime, upload.mime);
        assert!(parsed.gzipped);
        assert_eq!(parsed.pairs, upload.pairs);
    }
}
