//! POST/PUT (upload) and DELETE (weed/server/volume_server_handlers_write.go), with
//! weed's replies: 201 + the upload JSON (keys in
//! weed's order), 204 for an identical rewrite, 202 `{"size":N}` for a delete. Both
//! reach the volume's other replicas too (`replicate`).

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde::Serialize;

use super::upload::{self, Upload, UploadError};
use super::{ApiError, AppState, json_response, path, query_params, replicate};
use crate::security::Access;
use volume_store::clock::now_seconds;
use volume_store::volume::WriteOutcome;

/// Room for the multipart envelope around the largest allowed file.
const ENVELOPE_SLACK: u64 = 64 * 1024;

/// weed's `operation.UploadResult`, every field `omitempty`, in its field order.
#[derive(Serialize)]
struct UploadReply<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    size: usize,
    #[serde(rename = "eTag")]
    etag: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    mime: &'a str,
    #[serde(rename = "contentMd5", skip_serializing_if = "str::is_empty")]
    content_md5: &'a str,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub(super) async fn post(state: &AppState, request: Request) -> Response {
    // weed throttles before anything else; replica writes are exempt (their upload was
    // admitted on the server that fans them out).
    let _held = if replicate::is_replica(request.uri().query()) {
        None
    } else {
        match state.throttle.uploads.admit(upload_charge(state, &request)).await {
            Ok(held) => Some(held),
            Err(busy) => {
                let message = format!(
                    "reject because inflight upload data {} > {}, and wait timeout",
                    busy.in_flight, busy.limit
                );
                tracing::debug!("too many requests: {message}");
                return ApiError::json(StatusCode::TOO_MANY_REQUESTS, message).into_response();
            }
        }
    };
    if let Some(refused) = super::refused_by_white_list(state, &request) {
        return refused;
    }
    match upload_file(state, request).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// weed's `PostHandler`: the path and the write token, the volume here (or the servers
/// to forward to), the upload, then its `ReplicatedWrite`: stored here, then sent to
/// every replica.
async fn upload_file(state: &AppState, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let bad_path = |e: path::PathError| ApiError::bad_request(e.to_string());
    let raw = path::split(parts.uri.path()).map_err(bad_path)?;
    // weed's order: the volume id, then the token, then everything else.
    raw.volume().map_err(bad_path)?;
    if !state.security.allows(Access::Write, parts.uri.query(), &parts.headers, raw.vid, raw.fid) {
        return Err(ApiError::wrong_jwt());
    }
    let url = raw.parse().map_err(bad_path)?;
    if !url.comma_form {
        return Err(ApiError::bad_request(format!("writes take /<vid>,<fid>, not {}", parts.uri.path())));
    }
    // Fail fast (before reading the body) if the volume is not here and there is nowhere
    // to forward the write to; a replica write never forwards.
    let local = match state.store.volume(url.volume) {
        Ok(volume) => Some(volume),
        Err(_) if state.locations.clustered() && !replicate::is_replica(parts.uri.query()) => None,
        Err(e) => return Err(ApiError::for_write(e)),
    };
    let upload = read_upload(state.file_size_limit, &parts, body).await?;

    let needle = upload.to_needle(url.fid.needle_id(), url.fid.cookie);
    // weed's ReplicatedWrite: find the replicas, store here, then send to every replica.
    let replicas = replicate::targets(state, url.volume, local.as_deref(), parts.uri.query(), true)
        .await
        .map_err(|e| ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let unchanged = if local.is_some() {
        let write = || state.store.write_to(url.volume, |volume| volume.write(&needle));
        let outcome = if state.store.config().volume.fsync {
            // fsync blocks for milliseconds: tell the runtime to move other tasks away.
            tokio::task::block_in_place(write)
        } else {
            write()
        };
        outcome.map_err(ApiError::for_write)? == WriteOutcome::Unchanged
    } else if replicas.is_empty() {
        return Err(ApiError::for_write(volume_store::Error::VolumeNotFound(url.volume)));
    } else {
        // Held only elsewhere: forwarded, nothing stored here (as weed does).
        false
    };
    let (path, headers, query) = (parts.uri.path(), &parts.headers, parts.uri.query());
    replicate::write(state, url.volume, replicas, path, headers, query, &upload)
        .await
        .map_err(|e| ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, e))?;

    upload_reply(unchanged, needle.checksum, &upload)
}

/// The body, within the file size limit `limit` (plus the multipart envelope), parsed
/// as weed's `ParseUpload` does: multipart or raw, gzip as the client sent it or
/// compressed here, name, mime, pairs, TTL and the rest from headers and query.
async fn read_upload(limit: u64, parts: &Parts, body: Body) -> Result<Upload, ApiError> {
    let declared: Option<u64> =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    if declared.is_some_and(|len| len > limit + ENVELOPE_SLACK) {
        return Err(too_large(limit));
    }
    let body = axum::body::to_bytes(body, (limit + ENVELOPE_SLACK) as usize).await.map_err(|e| {
        if e.into_inner().is::<http_body_util::LengthLimitError>() {
            too_large(limit)
        } else {
            ApiError::bad_request("reading the request body failed")
        }
    })?;
    let query = query_params(&Request::from_parts(parts.clone(), Body::empty()));
    // Parsing gzips or gunzips the body: CPU work off the async workers.
    let (method, headers, path) = (parts.method.clone(), parts.headers.clone(), parts.uri.path().to_owned());
    tokio::task::spawn_blocking(move || {
        upload::parse(&upload::Request {
            method: &method,
            headers: &headers,
            path: &path,
            query: &query,
            body: &body,
            size_limit: limit,
            now_seconds: now_seconds(),
        })
    })
    .await
    .map_err(|e| ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, format!("parsing the upload: {e}")))?
    .map_err(|e| match e {
        UploadError::TooLarge(_) => too_large(limit),
        UploadError::Bad(message) => ApiError::bad_request(message),
    })
}

/// weed's reply to a stored upload: 204 with the ETag for an identical rewrite,
/// else 201 with the upload JSON; both carry the client's Content-MD5.
fn upload_reply(unchanged: bool, checksum: u32, upload: &Upload) -> Result<Response, ApiError> {
    let etag = needle::crc::etag(checksum);
    let md5 = upload.content_md5.as_deref().unwrap_or("");
    let md5_header = HeaderValue::from_str(md5).unwrap_or(HeaderValue::from_static(""));
    if unchanged {
        return Response::builder()
            .status(StatusCode::NO_CONTENT)
            .header(header::ETAG, format!("\"{etag}\""))
            .header("content-md5", md5_header)
            .body(Body::empty())
            .map_err(|e| ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    }
    let reply = UploadReply {
        name: &upload.name,
        size: upload.original_size,
        etag: &etag,
        mime: &upload.mime,
        content_md5: md5,
    };
    let json = upload::go_json(&serde_json::to_string(&reply).expect("the reply serializes"));
    let mut response = json_response(StatusCode::CREATED, json);
    let headers = response.headers_mut();
    headers
        .insert(header::ETAG, HeaderValue::from_str(&format!("\"{etag}\"")).expect("hex is a valid header"));
    headers.insert("content-md5", md5_header);
    Ok(response)
}

/// The bytes an upload may hold: its `Content-Length`, or without one (chunked) the
/// most it can carry; never more than that, since a larger one is refused (413) unread.
fn upload_charge(state: &AppState, request: &Request) -> u64 {
    let most = state.file_size_limit + ENVELOPE_SLACK;
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    declared.unwrap_or(most).min(most)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::json(StatusCode::PAYLOAD_TOO_LARGE, format!("file over the limited {limit} bytes"))
}

pub(super) async fn delete(state: &AppState, request: Request) -> Response {
    if let Some(refused) = super::refused_by_white_list(state, &request) {
        return refused;
    }
    let raw = match path::split(request.uri().path()) {
        Ok(raw) => raw,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    let url = match raw.parse() {
        Ok(url) => Some(url),
        // weed reads a bad volume id as volume 0, which is never there (after the token check).
        Err(path::PathError::BadVolume(_)) => None,
        Err(e) => return ApiError::bad_request(e.to_string()).into_response(),
    };
    if !state.security.allows(Access::Write, request.uri().query(), request.headers(), raw.vid, raw.fid) {
        return ApiError::wrong_jwt().into_response();
    }
    let Some(url) = url else {
        return ApiError::for_delete(volume_store::Error::VolumeNotFound(needle::VolumeId(0)))
            .into_response();
    };
    let manifest_size = match super::manifest::delete_chunks(state, &url.fid).await {
        Ok(size) => size,
        Err(e) => return e.into_response(),
    };
    // weed's ReplicatedDelete; a volume not here is a 404 below, never forwarded.
    let (path, headers, query) = (request.uri().path(), request.headers(), request.uri().query());
    let replicas = match state.store.volume(url.volume) {
        Ok(local) => match replicate::targets(state, url.volume, Some(&local), query, false).await {
            Ok(replicas) => replicas,
            Err(e) => return deletion_failed(e),
        },
        Err(_) => Vec::new(),
    };
    let delete =
        || state.store.write_to(url.volume, |volume| volume.delete(url.fid.needle_id(), url.fid.cookie));
    let result =
        if state.store.config().volume.fsync { tokio::task::block_in_place(delete) } else { delete() };
    match result {
        Ok(size) => {
            if let Err(e) = replicate::delete(state, url.volume, replicas, path, headers, query).await {
                return deletion_failed(e);
            }
            let size = manifest_size.unwrap_or(u64::from(size));
            json_response(StatusCode::ACCEPTED, format!("{{\"size\":{size}}}"))
        }
        Err(e @ (volume_store::Error::NeedleNotFound(_) | volume_store::Error::AlreadyDeleted(_))) => {
            // Gone here already, e.g. a retry of a delete whose fan-out failed: the
            // replicas may still hold it. The answer stays weed's 404.
            if let Err(cause) = replicate::delete(state, url.volume, replicas, path, headers, query).await {
                tracing::warn!(fid = %url.fid, %cause, "delete of a needle gone here: replicas still failing");
            }
            ApiError::for_delete(e).into_response()
        }
        Err(e) => ApiError::for_delete(e).into_response(),
    }
}

/// weed's `writeDeleteResult` for a delete that could not reach every replica.
fn deletion_failed(cause: String) -> Response {
    ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, format!("Deletion Failed: {cause}")).into_response()
}
