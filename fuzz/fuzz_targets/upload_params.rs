//! Header parameters (`form-data; name="file"; filename*=utf-8''a%20b.txt`), as the
//! upload parser reads Content-Disposition and Content-Type: never a panic, keys come
//! lower-cased, and any value quoted as a client quotes it reads back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volume_server::http::upload::params;

fuzz_target!(|text: &str| {
    for key in params(text).keys() {
        assert_eq!(*key, key.to_ascii_lowercase());
    }
    let quoted: String =
        text.chars().flat_map(|c| [(c == '"' || c == '\\').then_some('\\'), Some(c)]).flatten().collect();
    let header = format!("form-data; name=\"{quoted}\"; filename=\"x\"");
    let parsed = params(&header);
    assert_eq!(parsed.get("name").map(String::as_str), Some(text), "{header}");
    assert_eq!(parsed.get("filename").map(String::as_str), Some("x"), "{header}");
});
