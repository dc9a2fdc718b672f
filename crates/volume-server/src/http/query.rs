//! Query strings as weed reads them (Go's `FormValue` and `url.QueryUnescape`): the
//! handlers' parameters, and the `?jwt=` token security checks.

use std::collections::BTreeMap;

/// Query parameters, first value of each (Go's `FormValue`).
pub(crate) fn query_params<B>(request: &axum::http::Request<B>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(query) = request.uri().query() {
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.entry(percent_decode(k)).or_insert_with(|| percent_decode(v));
        }
    }
    out
}

/// Decodes a query component as Go's `url.QueryUnescape` does for the values weed reads
/// (`+` is a space; a `%` not followed by two hex digits is kept as it is; bytes that are
/// not UTF-8 become U+FFFD). The entry point of every query value and `?jwt=` token.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(percent_decode("a%2Cb+c%zz%4"), "a,b c%zz%4");
    }
}
