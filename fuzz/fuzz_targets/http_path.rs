//! A request target as the HTTP API sees it, `path[?query]`: the path splitter and file
//! id parser behind every GET/HEAD/POST/PUT/DELETE, and the query decoder.
//!
//! - whatever parses names the volume and key+cookie the path spells (the parsed id
//!   printed back is the path's id in weed's canonical form);
//! - percent-decoding never panics, and a text without `%` or `+` decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volume_server::http::path;
use volume_server::http::percent_decode;

fuzz_target!(|target: &str| {
    let (url_path, query) = target.split_once('?').unwrap_or((target, ""));
    if let Ok(raw) = path::split(url_path) {
        if let Ok(url) = raw.parse() {
            assert_eq!(raw.volume().ok(), Some(url.volume));
            assert_eq!(url.fid.volume, url.volume);
            if url.fid.key.0 != 0 {
                let canonical = url.fid.to_string();
                let reparsed = path::split(&format!("/{canonical}")).and_then(|r| r.parse());
                assert_eq!(reparsed.map(|u| u.fid), Ok(url.fid), "{canonical}");
            }
        }
    }
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        for text in [key, value] {
            let decoded = percent_decode(text);
            if !text.contains(['%', '+']) {
                assert_eq!(decoded, text);
            }
            assert!(decoded.len() <= text.len() * 3, "decoding only shrinks, but for U+FFFD");
        }
    }
});
