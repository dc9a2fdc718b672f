//! A POST/PUT as `upload::parse` (weed's `ParseUpload`) takes it: the multipart/form-data
//! parser, its parameter parser (Content-Disposition, Content-Type), gzip in and out,
//! Content-MD5, `Seaweed-*` pairs, the `ts`/`ttl`/`cm` query values.
//!
//! Input: lines `method`, `Content-Type`, `Content-Disposition`, `Content-Encoding`,
//! `Content-MD5`, query (`k=v&...`), one `Seaweed-*` header as `name: value`, then the
//! body. Whatever parses fits the limit and can be stored as a needle (the fields the
//! write handler flags encode), and its data inflates to the size reported.
#![no_main]

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use needle::{Cookie, Needle, NeedleId, Version};
use volume_server::http::upload::{self, Request};

const LIMIT: u64 = 1 << 20;

fuzz_target!(|input: &[u8]| {
    let mut lines = input.splitn(8, |&b| b == b'\n');
    let mut line = || std::str::from_utf8(lines.next().unwrap_or_default()).unwrap_or("");
    let method = if line() == "PUT" { Method::PUT } else { Method::POST };
    let mut headers = HeaderMap::new();
    for name in ["content-type", "content-disposition", "content-encoding", "content-md5"] {
        if let Ok(value) = HeaderValue::from_str(line()) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    let query: BTreeMap<String, String> = line()
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    if let Some((name, value)) = line().split_once(':') {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
        {
            headers.append(name, value);
        }
    }
    let body = bytes::Bytes::copy_from_slice(lines.next().unwrap_or_default());
    let request = Request {
        method: &method,
        headers: &headers,
        path: "/3,01637037d6",
        query: &query,
        body: &body,
        size_limit: LIMIT,
        now_seconds: 1_700_000_000,
    };
    let Ok(upload) = upload::parse(&request) else { return };
    assert!(upload.data.len() as u64 <= LIMIT && upload.original_size as u64 <= LIMIT);
    if upload.gzipped {
        if let Ok(plain) = upload::gunzip(&upload.data, LIMIT) {
            assert_eq!(plain.len(), upload.original_size);
        }
    } else {
        assert_eq!(upload.data.len(), upload.original_size);
    }
    if let Some(pairs) = &upload.pairs {
        let object: serde_json::Value = serde_json::from_slice(pairs).expect("pairs are JSON");
        assert!(object.is_object());
    }
    // As the write handler builds it.
    let needle = upload.to_needle(NeedleId(1), Cookie(2));
    let record = needle.to_bytes(Version::V3).expect("an accepted upload can be stored");
    assert_eq!(Needle::decode(&record, Version::V3).expect("and read back").data, &upload.data[..]);
});
