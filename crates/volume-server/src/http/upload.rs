//! Turning a POST/PUT into the needle weed would store (`needle.ParseUpload` and
//! `CreateNeedleFromRequest`):
//! - multipart only for POST with an empty or `form-data` content type; everything
//!   else (PUT included) is a raw body, named after `Content-Disposition` or the URL;
//! - a urlencoded body is consumed by Go's form parsing before weed reads it, so it
//!   stores an empty needle: we do the same;
//! - the mime type from the part or request, unless it is what the extension says;
//! - `Seaweed-*` request headers become the pairs JSON;
//! - text is gzipped when that saves at least 10% (not on a replica write: stored as
//!   sent); `Content-Encoding: gzip` uploads are stored as sent;
//! - `Content-MD5` is checked against the uncompressed data.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use axum::http::{HeaderMap, Method};
use base64::Engine;
use md5::{Digest, Md5};
use needle::{Cookie, Flags, Needle, NeedleId, Ttl};

use super::mime;

/// What a write request asks to store.
#[derive(Debug, Default)]
pub struct Upload {
    /// The data as it will be stored (gzip when `gzipped`); shares the request body's
    /// buffer when it is stored as sent.
    pub data: bytes::Bytes,
    /// Length of the data before compression: what the reply reports.
    pub original_size: usize,
    pub name: String,
    pub mime: String,
    pub gzipped: bool,
    /// The pairs JSON (`{"Key":"value"}`), if any `Seaweed-*` header was sent.
    pub pairs: Option<Vec<u8>>,
    /// The `Content-MD5` the client sent (checked), echoed in the reply.
    pub content_md5: Option<String>,
    pub last_modified: u64,
    pub ttl: Ttl,
    pub chunk_manifest: bool,
}

impl Upload {
    /// The needle this upload stores as `id` with `cookie`, as weed's
    /// CreateNeedleFromRequest builds it: name and mime flagged even when empty (when
    /// they fit the one-byte length), TTL, pairs, and the gzip and manifest flags.
    pub fn to_needle(&self, id: NeedleId, cookie: Cookie) -> Needle<'_> {
        let mut needle = Needle::new(id, cookie, &self.data).with_last_modified(self.last_modified);
        if self.name.len() < 256 {
            needle = needle.with_name(self.name.as_bytes());
        }
        if self.mime.len() < 256 {
            needle = needle.with_mime(self.mime.as_bytes());
        }
        if !self.ttl.is_empty() {
            needle = needle.with_ttl(self.ttl);
        }
        if let Some(pairs) = &self.pairs {
            needle = needle.with_pairs(pairs);
        }
        if self.gzipped {
            needle = needle.with_flags(Flags::COMPRESSED);
        }
        if self.chunk_manifest {
            needle = needle.with_flags(Flags::CHUNK_MANIFEST);
        }
        needle
    }
}

/// Why a write request is malformed (400), or too large (413).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    Bad(String),
    #[error("file over the limited {0} bytes")]
    TooLarge(u64),
}

/// The request parts `parse` needs.
pub struct Request<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The URL path, for the default name.
    pub path: &'a str,
    pub query: &'a BTreeMap<String, String>,
    pub body: &'a bytes::Bytes,
    pub size_limit: u64,
    pub now_seconds: u64,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// weed's `ParseUpload`: the data and its headers from the body (a multipart part, or
/// the raw body), the size limit, the type, then gzip: a gzip upload is inflated to
/// check its size and MD5, a compressible plain one may be stored gzipped.
pub fn parse(req: &Request<'_>) -> Result<Upload, UploadError> {
    let content_type = header(req.headers, "content-type");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let mut upload = Upload::default();
    let sent =
        if *req.method == Method::POST && (content_type.is_empty() || content_type.contains("form-data")) {
            multipart_body(req, &media_type, content_type, &mut upload)?
        } else {
            raw_body(req, &media_type, content_type, &mut upload)
        };
    let SentHeaders { part_type, encoding, md5_header } = sent;
    if upload.data.len() as u64 > req.size_limit {
        return Err(UploadError::TooLarge(req.size_limit));
    }
    upload.gzipped = encoding == "gzip";
    upload.chunk_manifest = req.query.get("cm").and_then(|v| parse_bool(v)).unwrap_or(false);
    if !upload.chunk_manifest {
        let by_ext = mime::type_by_extension(&mime::extension(&upload.name).to_ascii_lowercase());
        if !part_type.is_empty() && part_type != "application/octet-stream" && by_ext != part_type {
            upload.mime = part_type;
        } else if !by_ext.is_empty() && upload.mime.is_empty() && by_ext != "application/octet-stream" {
            upload.mime = by_ext;
        }
    }
    upload.original_size = upload.data.len();
    let uncompressed = if upload.gzipped {
        match gunzip(&upload.data, req.size_limit) {
            Ok(plain) => {
                upload.original_size = plain.len();
                Some(plain)
            }
            // What the client sent is larger than the limit, only compressed.
            Err(GunzipError::TooLarge(limit)) => return Err(UploadError::TooLarge(limit)),
            Err(GunzipError::Invalid(_)) => None,
        }
    } else {
        // A replica stores what the first server stored: compressed or not, as sent.
        let replica = req.query.get("type").is_some_and(|t| t == "replicate");
        if !upload.chunk_manifest && !replica && is_compressible(&upload.mime) {
            let compressed = gzip(&upload.data);
            if compressed.len() * 10 < upload.data.len() * 9 {
                let plain = std::mem::replace(&mut upload.data, compressed.into());
                upload.gzipped = true;
                return finish(upload, Some(plain.to_vec()), &md5_header, req);
            }
        }
        None
    };
    finish(upload, uncompressed, &md5_header, req)
}

/// The headers of the data an upload sent, from its part or from the request.
struct SentHeaders {
    /// The Content-Type sent with the data (the first part's, in a multipart body).
    part_type: String,
    encoding: String,
    md5_header: String,
}

/// A multipart POST (weed's `parseMultipart`): the first part, or the first later one
/// with a file name, gives the data, the name, the encoding and the MD5.
fn multipart_body(
    req: &Request<'_>,
    media_type: &str,
    content_type: &str,
    upload: &mut Upload,
) -> Result<SentHeaders, UploadError> {
    let boundary = params(content_type)
        .get("boundary")
        .cloned()
        .filter(|_| media_type.starts_with("multipart/"))
        .ok_or_else(|| UploadError::Bad("request Content-Type isn't multipart/form-data".into()))?;
    let mut parts = multipart_parts(req.body, &boundary);
    let first = parts.next().ok_or_else(|| UploadError::Bad("multipart: no parts".into()))??;
    // The first part, or the first later one that carries a file name; parts are
    // read only until it is found (one at a time, none kept), as weed reads them.
    let later = match first.file_name.is_empty() {
        true => parts.find(|p| p.as_ref().map_or(true, |p| !p.file_name.is_empty())).transpose()?,
        false => None,
    };
    let chosen = later.as_ref().unwrap_or(&first);
    upload.data = req.body.slice_ref(chosen.data);
    upload.name = clean_base(&chosen.file_name);
    Ok(SentHeaders {
        part_type: first.header("content-type").to_owned(),
        encoding: chosen.header("content-encoding").to_owned(),
        md5_header: chosen.header("content-md5").to_owned(),
    })
}

/// Any other body is the data itself (nothing for a urlencoded form); its name comes
/// from Content-Disposition, else the URL's last segment.
fn raw_body(req: &Request<'_>, media_type: &str, content_type: &str, upload: &mut Upload) -> SentHeaders {
    upload.data = if media_type == "application/x-www-form-urlencoded" {
        bytes::Bytes::new()
    } else {
        req.body.clone()
    };
    let disposition = params(header(req.headers, "content-disposition"));
    upload.name = disposition
        .get("filename")
        .filter(|n| !n.is_empty())
        .or_else(|| disposition.get("name"))
        .cloned()
        .unwrap_or_default();
    if upload.name.is_empty() {
        upload.name = req.path.rsplit('/').next().unwrap_or("").to_owned();
    }
    upload.mime = content_type.to_owned();
    SentHeaders {
        part_type: content_type.to_owned(),
        encoding: header(req.headers, "content-encoding").to_owned(),
        md5_header: header(req.headers, "content-md5").to_owned(),
    }
}

fn finish(
    mut upload: Upload,
    uncompressed: Option<Vec<u8>>,
    md5_header: &str,
    req: &Request<'_>,
) -> Result<Upload, UploadError> {
    if !md5_header.is_empty() {
        let plain = uncompressed.as_deref().unwrap_or(&upload.data);
        let actual = base64::engine::general_purpose::STANDARD.encode(Md5::digest(plain));
        if actual != md5_header {
            return Err(UploadError::Bad(format!(
                "Content-MD5 did not match md5 of file data expected [{md5_header}] received [{actual}] size {}",
                plain.len()
            )));
        }
        upload.content_md5 = Some(md5_header.to_owned());
    }
    upload.pairs = pairs_json(req.headers);
    upload.last_modified = req.query.get("ts").and_then(|t| t.parse().ok()).unwrap_or(req.now_seconds);
    if upload.last_modified > needle::MAX_LAST_MODIFIED {
        return Err(UploadError::Bad(format!(
            "ts {} is past the largest last-modified time a needle holds ({})",
            upload.last_modified,
            needle::MAX_LAST_MODIFIED
        )));
    }
    if let Some(ttl) = req.query.get("ttl").filter(|t| !t.is_empty()) {
        upload.ttl = ttl.parse().map_err(|e: needle::FormatError| UploadError::Bad(e.to_string()))?;
    }
    Ok(upload)
}

/// weed's `IsCompressableFileType`, which only ever decides by mime type because it
/// is handed a whole file name where it expects an extension.
fn is_compressible(mime: &str) -> bool {
    if mime.starts_with("text/") {
        return true;
    }
    if let Some(app) = mime.strip_prefix("application/") {
        return app.ends_with("xml") || app.ends_with("script");
    }
    matches!(mime, "audio/wave" | "audio/wav" | "audio/x-wav" | "audio/x-pn-wav")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

/// Why gzip data was not inflated.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    /// It inflates to more than the bound the caller set.
    #[error("it inflates past {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Invalid(#[from] std::io::Error),
}

/// Inflates gzip `data` to at most `limit` bytes: a few KiB of gzip can inflate to
/// GiBs, so every caller bounds it (by the file size limit, or a size it already knows)
/// and runs it on the blocking pool.
pub fn gunzip(data: &[u8], limit: u64) -> Result<Vec<u8>, GunzipError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data).take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(GunzipError::TooLarge(limit));
    }
    Ok(out)
}

/// The size gzip `data` says it inflates to (its trailer's ISIZE, the size mod 2^32);
/// 0 for data too short to be gzip. Only an estimate to reserve memory by: [`gunzip`]
/// with it as the bound refuses data that inflates to more.
pub fn declared_size(data: &[u8]) -> u64 {
    match data.len().checked_sub(4) {
        Some(at) if data.len() >= 18 => {
            u64::from(u32::from_le_bytes(data[at..].try_into().expect("4 bytes")))
        }
        _ => 0,
    }
}

/// Go's `http.CanonicalHeaderKey`: `seaweed-foo-bar` -> `Seaweed-Foo-Bar`.
fn canonical_header(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() };
            upper = c == '-';
            out
        })
        .collect()
}

/// `Seaweed-*` headers as weed stores them: a JSON object with sorted keys (Go's
/// `json.Marshal` of a map), first value of each header.
fn pairs_json(headers: &HeaderMap) -> Option<Vec<u8>> {
    let mut pairs = BTreeMap::new();
    for (name, value) in headers {
        let name = canonical_header(name.as_str());
        if let Some(key) = name.strip_prefix("Seaweed-") {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            pairs.entry(key.to_owned()).or_insert(value);
        }
    }
    if pairs.is_empty() {
        return None;
    }
    let json = go_json(&serde_json::to_string(&pairs).expect("a string map serializes"));
    (json.len() < 65536).then(|| json.into_bytes())
}

/// Go's `encoding/json` escapes `<`, `>`, `&`, U+2028 and U+2029; these can only occur
/// inside strings, so escaping them in the whole text is safe.
pub fn go_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The base name of an uploaded file name, with Windows separators too.
fn clean_base(name: &str) -> String {
    let name = name.replace('\\', "/");
    let trimmed = name.trim_end_matches('/');
    if trimmed.is_empty() {
        return if name.is_empty() { String::new() } else { "/".into() };
    }
    trimmed.rsplit('/').next().unwrap_or("").to_owned()
}

/// Parameters of a header value such as `form-data; name="file"; filename="a.txt"`,
/// keys lower-cased, quoted values unescaped, RFC 2231 `key*=utf-8''…` decoded.
pub fn params(value: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = match value.find(';') {
        Some(i) => &value[i + 1..],
        None => return out,
    };
    loop {
        rest = rest.trim_start_matches([' ', '\t', ';']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            v.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => v.push(c),
                }
            }
            value = v;
            rest = &quoted[end.min(quoted.len())..];
        } else {
            let end = rest.find(';').unwrap_or(rest.len());
            value = rest[..end].trim().to_owned();
            rest = &rest[end..];
        }
        if let Some(base) = key.strip_suffix('*') {
            if let Some(decoded) = decode_rfc2231(&value) {
                out.insert(base.to_owned(), decoded);
            }
        } else {
            out.entry(key).or_insert(value);
        }
    }
    out
}

fn decode_rfc2231(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let charset = parts.next()?.to_ascii_lowercase();
    let _lang = parts.next()?;
    let encoded = parts.next()?;
    if charset != "utf-8" && charset != "us-ascii" {
        return None;
    }
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

struct Part<'a> {
    headers: Vec<(String, String)>,
    file_name: String,
    data: &'a [u8],
}

impl Part<'_> {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    memchr::memmem::find(haystack.get(from..)?, needle).map(|p| p + from)
}

/// The parts of a `multipart/form-data` body, parsed one at a time as they are asked
/// for: a caller that stops early never looks at the rest.
fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> MultipartParts<'a> {
    let delimiter = format!("--{boundary}");
    let at = find(body, delimiter.as_bytes(), 0);
    MultipartParts { body, delimiter, at }
}

struct MultipartParts<'a> {
    body: &'a [u8],
    delimiter: String,
    /// Where the next delimiter starts; `None` once done (or none was found).
    at: Option<usize>,
}

impl<'a> MultipartParts<'a> {
    fn bad(&mut self, what: &str) -> UploadError {
        self.at = None;
        UploadError::Bad(format!("multipart: {what}"))
    }
}

impl<'a> Iterator for MultipartParts<'a> {
    type Item = Result<Part<'a>, UploadError>;

    fn next(&mut self) -> Option<Self::Item> {
        let body = self.body;
        let at = self.at? + self.delimiter.len();
        if body[at..].starts_with(b"--") {
            self.at = None;
            return None;
        }
        let Some(line_end) = find(body, b"\n", at) else { return Some(Err(self.bad("truncated part"))) };
        let at = line_end + 1;
        let Some(header_end) = find(body, b"\r\n\r\n", at)
            .map(|h| (h, h + 4))
            .or_else(|| (body[at..].starts_with(b"\r\n")).then_some((at, at + 2)))
        else {
            return Some(Err(self.bad("part headers not terminated")));
        };
        let mut headers = Vec::new();
        for line in String::from_utf8_lossy(&body[at..header_end.0]).split("\r\n") {
            if let Some((name, value)) = line.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        let data_start = header_end.1;
        let Some(next) = find(body, format!("\r\n{}", self.delimiter).as_bytes(), data_start) else {
            return Some(Err(self.bad("closing boundary missing")));
        };
        let disposition = headers.iter().find(|(n, _)| n == "content-disposition").map_or("", |(_, v)| v);
        let file_name = params(disposition).remove("filename").unwrap_or_default();
        self.at = Some(next + 2);
        Some(Ok(Part { headers, file_name, data: &body[data_start..next] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn run(
        method: Method,
        headers: &[(&str, &str)],
        path: &str,
        query: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Upload, UploadError> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let query = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let body = bytes::Bytes::copy_from_slice(body);
        parse(&Request {
            method: &method,
            headers: &map,
            path,
            query: &query,
            body: &body,
            size_limit: 1000,
            now_seconds: 42,
        })
    }

    /// Parts are read only up to the one the upload takes, as weed's multipart reader
    /// does: whatever follows it (many tiny parts, or garbage, as weed 4.48 accepts)
    /// is neither parsed nor held.
    #[test]
    fn multipart_stops_at_the_part_it_takes() {
        let form = [("Content-Type", "multipart/form-data; boundary=B")];
        let first_with_name = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n--B\r\nContent-Disposition: form-data; name=\"x\"\r\ngarbage-without-end";
        let u = run(Method::POST, &form, "/1,01", &[], first_with_name.as_bytes()).unwrap();
        assert_eq!((u.name.as_str(), &u.data[..]), ("a.txt", &b"hello"[..]));
        let later_with_name = "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.txt\"\r\n\r\nworld\r\n--B\r\ngarbage";
        let u = run(Method::POST, &form, "/1,01", &[], later_with_name.as_bytes()).unwrap();
        assert_eq!((u.name.as_str(), &u.data[..]), ("b.txt", &b"world"[..]));
        let mut parts = multipart_parts(first_with_name.as_bytes(), "B");
        assert!(parts.next().unwrap().is_ok());
        assert!(parts.next().unwrap().is_err(), "the garbage is only found when asked for");
    }

    #[test]
    fn raw_upload_named_after_the_url() {
        let u = run(
            Method::POST,
            &[("content-type", "application/octet-stream")],
            "/3,01637037d6",
            &[("ts", "7")],
            b"hello",
        )
        .unwrap();
        assert_eq!(
            (u.name.as_str(), u.mime.as_str(), &u.data[..], u.last_modified),
            ("3,01637037d6", "application/octet-stream", &b"hello"[..], 7)
        );
        let u = run(
            Method::PUT,
            &[("content-type", "text/plain"), ("content-disposition", "attachment; filename=\"x.txt\"")],
            "/3,01",
            &[],
            b"hi",
        )
        .unwrap();
        assert_eq!((u.name.as_str(), u.mime.as_str(), u.last_modified), ("x.txt", "text/plain", 42));
        let u =
            run(Method::POST, &[("content-type", "application/x-www-form-urlencoded")], "/3,01", &[], b"a=b")
                .unwrap();
        assert!(u.data.is_empty(), "Go's form parsing consumed the body");
    }

    #[test]
    fn multipart_picks_the_first_part_with_a_file_name() {
        let body = b"--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nignored\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"C:\\\\dir\\\\a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\nDATA\r\n--XX--\r\n";
        let u =
            run(Method::POST, &[("content-type", "multipart/form-data; boundary=XX")], "/3,01", &[], body)
                .unwrap();
        assert_eq!((u.name.as_str(), &u.data[..], u.mime.as_str()), ("a.bin", &b"DATA"[..], ""));
        let err = run(Method::POST, &[], "/3,01", &[], b"raw").unwrap_err();
        assert!(err.to_string().contains("multipart/form-data"));
    }

    #[test]
    fn text_is_gzipped_when_it_pays_and_md5_is_checked() {
        let text = "abcdefghij".repeat(100);
        let u = run(Method::PUT, &[("content-type", "text/plain")], "/3,01", &[], text.as_bytes()).unwrap();
        assert!(u.gzipped && u.data.len() < 100 && u.original_size == 1000);
        assert_eq!(gunzip(&u.data, text.len() as u64).unwrap(), text.as_bytes());
        assert!(matches!(gunzip(&u.data, text.len() as u64 - 1), Err(GunzipError::TooLarge(_))));
        assert_eq!(declared_size(&u.data), text.len() as u64);
        let u = run(Method::PUT, &[("content-type", "text/plain")], "/3,01", &[], b"short").unwrap();
        assert!(!u.gzipped);
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(text.as_bytes()));
        let u = run(
            Method::PUT,
            &[("content-type", "text/plain"), ("content-md5", &md5)],
            "/3,01",
            &[],
            text.as_bytes(),
        )
        .unwrap();
        assert_eq!(u.content_md5.as_deref(), Some(md5.as_str()));
        let err = run(Method::PUT, &[("content-md5", "AAAA")], "/3,01", &[], b"x").unwrap_err();
        assert!(err.to_string().starts_with("Content-MD5 did not match"));
        assert_eq!(
            run(Method::PUT, &[], "/3,01", &[], &[0u8; 1001]).unwrap_err(),
            UploadError::TooLarge(1000)
        );
    }

    #[test]
    fn pairs_are_canonical_sorted_and_go_escaped() {
        let u = run(
            Method::PUT,
            &[("seaweed-foo-bar", "b&z"), ("Seaweed-a", "1"), ("other", "x")],
            "/3,01",
            &[("ttl", "5d")],
            b"x",
        )
        .unwrap();
        assert_eq!(u.pairs.unwrap(), br#"{"A":"1","Foo-Bar":"b\u0026z"}"#);
        assert_eq!(u.ttl.to_string(), "5d");
    }

    #[test]
    fn header_params() {
        let p = params("form-data; name=\"file\"; filename=\"a \\\"q\\\".txt\"; x=y");
        assert_eq!(p["filename"], "a \"q\".txt");
        assert_eq!(p["x"], "y");
        assert_eq!(params("attachment; filename*=UTF-8''%C3%A9.txt")["filename"], "é.txt");
        assert_eq!(clean_base("a/b/c.txt"), "c.txt");
    }
}
