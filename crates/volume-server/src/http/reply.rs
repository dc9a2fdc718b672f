//! The reply pieces a GET or HEAD of a file and of a chunk manifest share
//! (weed/server/volume_server_handlers_read.go and common.go's range handling): the
//! Content-Type and Content-Disposition weed sends, replies without a body, the 416,
//! and [`finish`], which turns a builder and a body into a reply.

use axum::body::Body;
use axum::http::response::Builder;
use axum::http::{Request, StatusCode, header};
use axum::response::Response;

use super::mime;
use super::query_params;
use super::range::RangeError;
use super::upload::parse_bool;

/// The Content-Type weed sends: the stored mime, unless it is empty or
/// `application/octet-stream`, else the type of the file name's extension `ext`.
pub(super) fn content_type_for(stored_mime: &str, ext: &str) -> String {
    if !stored_mime.is_empty() && !stored_mime.starts_with("application/octet-stream") {
        stored_mime.to_owned()
    } else {
        mime::type_by_extension(ext)
    }
}

/// Adds `Content-Disposition` for a named file: `inline`, or `attachment` when the
/// query's `dl` is true.
pub(super) fn with_disposition(builder: Builder, request: &Request<()>, filename: &str) -> Builder {
    if filename.is_empty() {
        return builder;
    }
    let dl = query_params(request).get("dl").and_then(|v| parse_bool(v)).unwrap_or(false);
    let disposition = if dl { "attachment" } else { "inline" };
    builder.header(header::CONTENT_DISPOSITION, mime::content_disposition(disposition, filename))
}

/// A reply without a body: a HEAD, or a `Range` weed ignores. Content-Type when
/// known (no sniffing without bytes), and `length` as Content-Length.
pub(super) fn headers_only(mut builder: Builder, content_type: &str, length: u64) -> Response {
    if !content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    finish(builder.header(header::CONTENT_LENGTH, length), Body::empty())
}

/// weed's 416 for a `Range` header it cannot serve (with `bytes */total` when no
/// range overlaps the content).
pub(super) fn range_not_satisfiable(mut builder: Builder, e: RangeError, total: u64) -> Response {
    if e == RangeError::NoOverlap {
        builder = builder.header(header::CONTENT_RANGE, format!("bytes */{total}"));
    }
    let body = e.body();
    let response = builder
        .status(StatusCode::RANGE_NOT_SATISFIABLE)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("x-content-type-options", "nosniff")
        .header(header::CONTENT_LENGTH, body.len());
    finish(response, Body::from(body))
}

/// The reply `builder` describes with `body`; a 500 if the headers do not make one.
pub(super) fn finish(builder: Builder, body: Body) -> Response {
    builder.body(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "building a reply");
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
