//! GET and HEAD of a file, in weed's order (`GetOrHeadHandler`,
//! weed/server/volume_server_handlers_read.go): parse the fid, find
//! the volume, read and verify the needle (map lookup, pread, CRC, header, cookie),
//! then conditional requests, headers, gzip and ranges. Large needles stored plain are
//! streamed from the `.dat` rather than read whole (`payload`).

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::response::Builder;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use needle::{FileId, Flags, NeedleMeta};

use super::mime;
use super::path::FileUrl;
use super::payload::{Payload, ReadNeedle};
use super::range;
use super::reply::{content_type_for, finish, headers_only, range_not_satisfiable, with_disposition};
use super::throttle::{Busy, Held};
use super::upload::{self, GunzipError, gunzip};
use super::{ApiError, AppState, manifest, path, query_params, replicate};
use crate::security::Access;
use volume_store::volume::Volume;

pub(super) async fn get_or_head(state: &AppState, request: Request) -> Response {
    let is_head = request.method() == Method::HEAD;
    // Without the body (not `Sync`), the request can be held across the awaits of a
    // chunked file's reply.
    let request = axum::http::Request::from_parts(request.into_parts().0, ());
    let mut held = None;
    let response = respond(state, &request, &mut held).await.unwrap_or_else(|e| {
        let mut response = e.into_response();
        if is_head {
            // Go sends no Content-Length on a HEAD error (there is no body to measure).
            response.headers_mut().remove(header::CONTENT_LENGTH);
            *response.body_mut() = Body::new(UnsizedEmpty);
        }
        response
    });
    match held {
        // The bytes are given back once the body is sent (or the client goes away).
        Some(held) => response.map(|body| Body::new(Holding { body, _held: held })),
        None => response,
    }
}

/// weed's steps, in its order: find the volume (or serve the file from the server
/// holding it), read and verify the needle, answer a conditional request, expand a
/// chunk manifest, pick the type and the encoding, then send the whole or the ranges.
/// `respond` sets `held` to the download budget it draws on, which the reply's body
/// keeps until it is sent.
async fn respond(
    state: &AppState,
    request: &axum::http::Request<()>,
    held: &mut Option<Held>,
) -> Result<Response, ApiError> {
    let (url, volume) = match find_volume(state, request).await? {
        Located::Here(url, volume) => (url, volume),
        Located::Elsewhere(response) => return Ok(response),
    };
    let stored = read_needle(state, request, &url, &volume, held).await?;
    let (needle, whole_data) = stored.parts();
    let mut builder = match validators(&needle, stored.etag_crc(), request.headers()) {
        ControlFlow::Continue(builder) => with_pairs(builder, &needle),
        ControlFlow::Break(not_modified) => return Ok(not_modified),
    };
    // Gzip and chunk manifests are never streamed: their data is here whole.
    if let Some(manifest) = whole_data.and_then(|data| manifest::to_expand(needle.flags, data, request)) {
        return manifest::serve(state, request, builder, manifest, url.filename.clone()).await;
    }
    let filename = match &url.filename {
        Some(name) => name.clone(),
        None => String::from_utf8_lossy(needle.name).into_owned(),
    };
    let ext = if url.ext.is_empty() { mime::extension(&filename).to_owned() } else { url.ext.clone() };
    let content_type = content_type_for(&String::from_utf8_lossy(needle.mime), &ext);

    // Gzip as stored only to clients that accept it; everyone else gets plain bytes.
    let plain = match whole_data {
        Some(data) if needle.flags.contains(Flags::COMPRESSED) => {
            if accepts_gzip(request.headers()) && data.starts_with(&[0x1f, 0x8b]) {
                builder = builder.header(header::CONTENT_ENCODING, "gzip");
                None
            } else {
                Some(inflate(state, request, url.fid, Bytes::copy_from_slice(data), held).await?)
            }
        }
        _ => None,
    };
    // The bytes to send: the record's buffer when they are stored as sent, or a stream.
    let data = match plain {
        Some(plain) => Payload::Bytes(plain.into()),
        None => stored.into_payload(volume, url.fid),
    };

    builder = with_disposition(builder.header(header::ACCEPT_RANGES, "bytes"), request, &filename);
    if *request.method() == Method::HEAD {
        return Ok(headers_only(builder, &content_type, data.len()));
    }
    whole_or_ranges(builder, request.headers(), &content_type, data)
}

/// Where a file's volume is.
enum Located {
    Here(FileUrl, Arc<Volume>),
    /// Not here: the reply of the server holding it (see [`replicate::read_elsewhere`]).
    Elsewhere(Response),
}

/// The URL's ids and the volume they name. The read token is checked first: weed
/// checks it before it validates the ids.
async fn find_volume(state: &AppState, request: &axum::http::Request<()>) -> Result<Located, ApiError> {
    let bad_path = |e: path::PathError| ApiError::text(StatusCode::BAD_REQUEST, format!("{e}\n"));
    let raw = path::split(request.uri().path()).map_err(bad_path)?;
    if !state.security.allows(Access::Read, request.uri().query(), request.headers(), raw.vid, raw.fid) {
        return Err(ApiError::wrong_jwt());
    }
    let url = raw.parse().map_err(bad_path)?;
    match state.store.volume(url.volume) {
        Ok(volume) => Ok(Located::Here(url, volume)),
        Err(e) => match replicate::read_elsewhere(state, request, url.volume, (raw.vid, raw.fid)).await {
            Some(response) => Ok(Located::Elsewhere(response)),
            None => Err(ApiError::for_read(e)),
        },
    }
}

/// The needle `url` names, checked (header, cookie, TTL; the CRC too when read whole),
/// once the download budget has room for what the read holds; `held` keeps that share.
async fn read_needle(
    state: &AppState,
    request: &axum::http::Request<()>,
    url: &FileUrl,
    volume: &Volume,
    held: &mut Option<Held>,
) -> Result<ReadNeedle, ApiError> {
    let id = url.fid.needle_id();
    // Most reads carry no query: look for the parameter before parsing it.
    let read_deleted = request.uri().query().is_some_and(|q| q.contains("readDeleted="))
        && query_params(request).get("readDeleted").is_some_and(|v| v == "true");
    let location = volume.locate_readable(id, read_deleted).map_err(ApiError::for_read)?;
    *held = Some(
        state
            .throttle
            .downloads
            .admit(ReadNeedle::bytes_held(&location))
            .await
            .map_err(|busy| too_many_requests(request, busy))?,
    );
    ReadNeedle::read(volume, id, url.fid.cookie, location).map_err(ApiError::for_read)
}

/// A conditional GET, as weed answers it: Last-Modified against If-Modified-Since, then
/// the ETag (the stored CRC) against If-None-Match. `Break` is the 304 to send,
/// `Continue` the builder carrying both headers.
fn validators(
    needle: &NeedleMeta<'_>,
    etag_crc: u32,
    headers_in: &HeaderMap,
) -> ControlFlow<Response, Builder> {
    let mut builder = Response::builder();
    if needle.last_modified != 0 {
        let last_modified = std::time::UNIX_EPOCH + std::time::Duration::from_secs(needle.last_modified);
        builder = builder.header(header::LAST_MODIFIED, http_date(needle.last_modified));
        let since = headers_in
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| httpdate::parse_http_date(v.to_str().ok()?).ok());
        if since.is_some_and(|since| since >= last_modified) {
            return ControlFlow::Break(not_modified(builder));
        }
    }
    let etag = format!("\"{}\"", needle::crc::etag(etag_crc));
    if headers_in.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return ControlFlow::Break(not_modified(builder));
    }
    ControlFlow::Continue(builder.header(header::ETAG, &etag))
}

/// The needle's stored pairs (a JSON object) as headers, those that make valid ones.
fn with_pairs(mut builder: Builder, needle: &NeedleMeta<'_>) -> Builder {
    if !needle.flags.contains(Flags::HAS_PAIRS) {
        return builder;
    }
    if let Ok(serde_json::Value::Object(pairs)) = serde_json::from_slice(needle.pairs) {
        for (k, v) in pairs {
            if let (Ok(name), Some(Ok(value))) =
                (axum::http::HeaderName::from_bytes(k.as_bytes()), v.as_str().map(HeaderValue::from_str))
            {
                builder = builder.header(name, value);
            }
        }
    }
    builder
}

fn accepts_gzip(headers_in: &HeaderMap) -> bool {
    headers_in.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("gzip"))
}

/// The body reply: all of `data` (200) without a `Range`, else what weed sends for it:
/// one range as a 206 with Content-Range, several as a multipart 206, a 416 for a
/// header it cannot parse, and nothing at all for ranges it ignores.
fn whole_or_ranges(
    mut builder: Builder,
    headers_in: &HeaderMap,
    content_type: &str,
    data: Payload,
) -> Result<Response, ApiError> {
    let total = data.len();
    let Some(range_header) = headers_in.get(header::RANGE) else {
        return body_response(builder, StatusCode::OK, content_type, data);
    };
    let ranges = match range::parse(range_header.to_str().unwrap_or(""), total) {
        Ok(ranges) => ranges,
        Err(e) => return Ok(range_not_satisfiable(builder, e, total)),
    };
    if ranges.is_empty() || range::exceeds(&ranges, total) {
        // weed ignores such a header and sends nothing at all.
        return Ok(headers_only(builder, content_type, 0));
    }
    if let [one] = ranges.as_slice() {
        builder = builder.header(header::CONTENT_RANGE, one.content_range(total));
        let part = data.slice(one.start, one.length);
        return body_response(builder, StatusCode::PARTIAL_CONTENT, content_type, part);
    }
    // Parts carry the type as it is, even empty: weed sniffs nothing here.
    let (multipart_type, length, body) = data.multipart(&ranges, content_type);
    let response = builder
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_TYPE, multipart_type)
        .header(header::CONTENT_LENGTH, length);
    Ok(finish(response, body))
}

/// A body reply; without a known type, Go's server sniffs one from the first 512 bytes
/// it sends.
fn body_response(
    builder: Builder,
    status: StatusCode,
    content_type: &str,
    body: Payload,
) -> Result<Response, ApiError> {
    let mut builder = builder.status(status).header(header::CONTENT_LENGTH, body.len());
    if !content_type.is_empty() {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    } else if body.len() > 0 {
        let head = body.head(512).map_err(ApiError::for_read)?;
        builder = builder.header(header::CONTENT_TYPE, mime::sniff(&head));
    }
    Ok(finish(builder, body.into_body()))
}

fn not_modified(builder: Builder) -> Response {
    finish(builder.status(StatusCode::NOT_MODIFIED), Body::empty())
}

/// A reply body holding its share of the download budget until it is dropped.
struct Holding {
    body: Body,
    _held: Held,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// An empty body of unknown length: with it, hyper adds no `Content-Length` to a HEAD
/// reply (it would add `0` for a body known to be empty).
struct UnsizedEmpty;

impl http_body::Body for UnsizedEmpty {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

/// weed's 429 when the download budget had no room within its timeout.
fn too_many_requests(request: &axum::http::Request<()>, busy: Busy) -> ApiError {
    let message = format!(
        "request {} because inflight download data {} > {}, and wait timeout",
        request.uri().path(),
        busy.in_flight,
        busy.limit
    );
    tracing::debug!("too many requests: {message}");
    ApiError::json(StatusCode::TOO_MANY_REQUESTS, message)
}

/// Inflates a stored gzip needle for a client that does not accept gzip: the size its
/// trailer declares is drawn from the download budget first (joining the read's draw in
/// `held`), must be within the file size limit (else 406: the client can still have it
/// as gzip), and bounds the inflation, which runs on the blocking pool. A trailer
/// declares only its own member's size, so gzip of several members (which a client may
/// upload with `Content-Encoding: gzip`) inflates past it: then the rest, up to the file
/// size limit, is drawn too and it is inflated again with that bound.
async fn inflate(
    state: &AppState,
    request: &axum::http::Request<()>,
    fid: FileId,
    data: Bytes,
    held: &mut Option<Held>,
) -> Result<Vec<u8>, ApiError> {
    let limit = state.file_size_limit;
    let declared = upload::declared_size(&data);
    if declared > limit {
        return Err(past_the_limit(fid, declared, limit));
    }
    draw(state, request, declared, held).await?;
    match gunzip_blocking(&data, declared).await? {
        Err(GunzipError::TooLarge(_)) => {
            draw(state, request, limit - declared, held).await?;
            match gunzip_blocking(&data, limit).await? {
                Err(GunzipError::TooLarge(_)) => Err(past_the_limit(fid, limit + 1, limit)),
                inflated => inflated.map_err(|e| corrupt_gzip(fid, e)),
            }
        }
        inflated => inflated.map_err(|e| corrupt_gzip(fid, e)),
    }
}

/// Draws `bytes` more from the download budget into `held`.
async fn draw(
    state: &AppState,
    request: &axum::http::Request<()>,
    bytes: u64,
    held: &mut Option<Held>,
) -> Result<(), ApiError> {
    let more =
        state.throttle.downloads.admit(bytes).await.map_err(|busy| too_many_requests(request, busy))?;
    *held = Some(match held.take() {
        Some(read) => read.merge(more),
        None => more,
    });
    Ok(())
}

/// [`gunzip`] on the blocking pool; the outer error is the pool's.
async fn gunzip_blocking(data: &Bytes, limit: u64) -> Result<Result<Vec<u8>, GunzipError>, ApiError> {
    let data = data.clone();
    tokio::task::spawn_blocking(move || gunzip(&data, limit))
        .await
        .map_err(|e| ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// 406 for gzip that inflates past the file size limit: the client can have it as stored.
fn past_the_limit(fid: FileId, size: u64, limit: u64) -> ApiError {
    ApiError::json(
        StatusCode::NOT_ACCEPTABLE,
        format!(
            "{fid} inflates to {size} bytes or more, past the {limit}-byte file size limit; ask with Accept-Encoding: gzip"
        ),
    )
}

fn corrupt_gzip(fid: FileId, error: GunzipError) -> ApiError {
    tracing::error!(%fid, %error, "stored gzip data does not decompress");
    ApiError::empty(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Go's `http.TimeFormat` of a Unix time, as weed writes `Last-Modified`: the year has
/// as many digits as it needs (`httpdate` stops at 9999, and a needle's five-byte
/// last-modified time reaches year 36812).
fn http_date(unix_seconds: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]; // 1970-01-01: a Thursday
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (days, seconds) = (unix_seconds / 86_400, unix_seconds % 86_400);
    // Days to a civil date, counted from 0000-03-01 in 400-year eras (Hinnant's method).
    let z = days + 719_468;
    let (era, day_of_era) = (z / 146_097, z % 146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[month as usize - 1],
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_match_httpdate_up_to_9999_and_go_past_it() {
        let mut t = 0u64;
        while t < 253_402_300_800 {
            let expected = httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
            assert_eq!(http_date(t), expected, "{t}");
            t = t * 3 + 86_399;
        }
        assert_eq!(http_date(253_402_300_799), "Fri, 31 Dec 9999 23:59:59 GMT");
        // What weed 4.48 answered for these `ts` values.
        assert_eq!(http_date(253_402_300_800), "Sat, 01 Jan 10000 00:00:00 GMT");
        assert_eq!(http_date(needle::MAX_LAST_MODIFIED), "Mon, 20 Feb 36812 00:36:15 GMT");
    }
}
