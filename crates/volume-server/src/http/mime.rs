//! Content types the way weed (a Go program) computes them:
//! - [`type_by_extension`]: Go's `mime.TypeByExtension`: a small built-in table, then
//!   the host's shared-mime-info `globs2` (or, without it, `mime.types`), loaded once,
//!   then the entries `weed` itself registers; `text/*` types get `; charset=utf-8`;
//! - [`sniff`]: Go's `http.DetectContentType`, which `net/http` applies to a reply that
//!   has a body but no `Content-Type`;
//! - [`content_disposition`]: Go's `mime.FormatMediaType` for `inline; filename=…`.
//!
//! Reading the same host tables as weed makes both servers agree on the same machine.

use std::collections::HashMap;
use std::sync::OnceLock;

const BUILTIN: &[(&str, &str)] = &[
    (".avif", "image/avif"),
    (".css", "text/css; charset=utf-8"),
    (".gif", "image/gif"),
    (".htm", "text/html; charset=utf-8"),
    (".html", "text/html; charset=utf-8"),
    (".jpeg", "image/jpeg"),
    (".jpg", "image/jpeg"),
    (".js", "text/javascript; charset=utf-8"),
    (".json", "application/json"),
    (".mjs", "text/javascript; charset=utf-8"),
    (".pdf", "application/pdf"),
    (".png", "image/png"),
    (".svg", "image/svg+xml"),
    (".wasm", "application/wasm"),
    (".webp", "image/webp"),
    (".xml", "text/xml; charset=utf-8"),
];

/// Entries the `weed` 4.48 binary registers on top of Go's and the host's tables
/// (measured: a HEAD of `/<vid>/<fid>/x<ext>` for every extension the host knows).
const WEED_OVERRIDES: &[(&str, &str)] = &[
    (".%", "text/plain; charset=utf-8"),
    (".ai", "application/postscript"),
    (".apng", "image/apng"),
    (".bin", "application/octet-stream"),
    (".bz2", "application/x-bzip2"),
    (".c", "text/x-c; charset=utf-8"),
    (".c++", "text/x-c++; charset=utf-8"),
    (".cc", "text/x-c++; charset=utf-8"),
    (".com", "application/octet-stream"),
    (".cpp", "text/x-c++; charset=utf-8"),
    (".cxx", "text/x-c++; charset=utf-8"),
    (".eps", "application/postscript"),
    (".exe", "application/octet-stream"),
    (".h", "text/x-c-header; charset=utf-8"),
    (".hpp", "text/x-c-header; charset=utf-8"),
    (".ico", "image/x-icon"),
    (".ime", "text/x-imelody; charset=utf-8"),
    (".imy", "text/x-imelody; charset=utf-8"),
    (".jfif", "image/jpeg"),
    (".js", "application/javascript"),
    (".log", "text/plain; charset=utf-8"),
    (".mjs", "application/javascript"),
    (".php", "text/x-php; charset=utf-8"),
    (".pl", "text/x-perl; charset=utf-8"),
    (".rar", "application/x-rar-compressed"),
    (".rb", "text/x-ruby; charset=utf-8"),
    (".rs", "text/x-rust; charset=utf-8"),
    (".sh", "text/x-shellscript; charset=utf-8"),
    (".shtml", "text/html; charset=utf-8"),
    (".sql", "text/sql; charset=utf-8"),
    (".text", "text/plain; charset=utf-8"),
    (".ts", "text/typescript; charset=utf-8"),
    (".wav", "audio/wav"),
    (".xbl", "text/xml; charset=utf-8"),
    (".xml", "application/xml"),
    (".xsl", "text/xml; charset=utf-8"),
    (".yaml", "text/yaml; charset=utf-8"),
    (".yml", "text/yaml; charset=utf-8"),
];

const GLOBS: &[&str] = &["/usr/local/share/mime/globs2", "/usr/share/mime/globs2"];
const MIME_TYPES: &[&str] =
    &["/etc/mime.types", "/etc/apache2/mime.types", "/etc/apache/mime.types", "/etc/httpd/conf/mime.types"];

fn with_charset(mime: &str) -> String {
    if mime.starts_with("text/") && !mime.contains("charset=") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

fn table() -> &'static HashMap<String, String> {
    static TABLE: OnceLock<HashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut map: HashMap<String, String> =
            BUILTIN.iter().map(|(e, m)| ((*e).to_owned(), (*m).to_owned())).collect();
        match GLOBS.iter().find_map(|path| std::fs::read_to_string(path).ok()) {
            // The first mime database found is the only one used.
            Some(text) => load_globs(&mut map, &text),
            None => {
                for text in MIME_TYPES.iter().filter_map(|path| std::fs::read_to_string(path).ok()) {
                    load_mime_types(&mut map, &text);
                }
            }
        }
        for (ext, mime) in WEED_OVERRIDES {
            map.insert((*ext).to_owned(), (*mime).to_owned());
        }
        map
    })
}

/// `weight:type:*.ext` lines; the first entry for an extension wins (weight order),
/// and built-in entries are never replaced.
fn load_globs(map: &mut HashMap<String, String>, text: &str) {
    for line in text.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 3 || fields[0].is_empty() || fields[2].len() < 3 || fields[0].starts_with('#') {
            continue;
        }
        let Some(ext) = fields[2].strip_prefix('*').filter(|e| e.starts_with('.')) else { continue };
        if ext.contains(['?', '*', '[']) || map.contains_key(ext) {
            continue;
        }
        map.insert(ext.to_owned(), with_charset(fields[1]));
    }
}

/// `type ext ext…` lines; later files override.
fn load_mime_types(map: &mut HashMap<String, String>, text: &str) {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(mime) = fields.next().filter(|m| !m.starts_with('#')) else { continue };
        for ext in fields {
            if ext.starts_with('#') {
                break;
            }
            map.insert(format!(".{ext}"), with_charset(mime));
        }
    }
}

/// The type for an extension such as `.txt` ("" when unknown), as Go's
/// `mime.TypeByExtension`: an exact match first, then a lower-case one.
pub fn type_by_extension(ext: &str) -> String {
    if ext.is_empty() {
        return String::new();
    }
    let map = table();
    map.get(ext).or_else(|| map.get(&ext.to_ascii_lowercase())).cloned().unwrap_or_default()
}

/// The extension of a file name, from its last dot (Go's `filepath.Ext`).
pub fn extension(name: &str) -> &str {
    let base = name.rsplit('/').next().unwrap_or(name);
    base.rfind('.').map_or("", |i| &base[i..])
}

/// Go's `http.DetectContentType` over the first 512 bytes of a body: markup after any
/// leading white space, then signatures at the start, then text or binary.
pub fn sniff(data: &[u8]) -> &'static str {
    let data = &data[..data.len().min(512)];
    let first_non_ws =
        data.iter().position(|b| !matches!(b, b'\t' | b'\n' | 0x0c | b'\r' | b' ')).unwrap_or(data.len());
    if let Some(mime) = markup_type(&data[first_non_ws..]).or_else(|| signature_type(data)) {
        return mime;
    }
    if data.iter().any(|&b| matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F)) {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// The tags Go takes for HTML at the start of a body, any case, then a space or `>`.
const HTML_TAGS: &[&[u8]] = &[
    b"<!DOCTYPE HTML",
    b"<HTML",
    b"<HEAD",
    b"<SCRIPT",
    b"<IFRAME",
    b"<H1",
    b"<DIV",
    b"<FONT",
    b"<TABLE",
    b"<A",
    b"<STYLE",
    b"<TITLE",
    b"<B",
    b"<BODY",
    b"<BR",
    b"<P",
    b"<!--",
];

/// HTML or XML by their opening tag (`trimmed`: the body from its first non-space).
fn markup_type(trimmed: &[u8]) -> Option<&'static str> {
    for tag in HTML_TAGS {
        if trimmed.len() > tag.len()
            && trimmed[..tag.len()].eq_ignore_ascii_case(tag)
            && matches!(trimmed[tag.len()], b' ' | b'>')
        {
            return Some("text/html; charset=utf-8");
        }
    }
    if trimmed.len() >= 5 && trimmed[..5].eq_ignore_ascii_case(b"<?xml") {
        return Some("text/xml; charset=utf-8");
    }
    None
}

/// Go's exact signatures: the type of a body starting with the bytes.
const SIGNATURES: &[(&[u8], &str)] = &[
    (b"%PDF-", "application/pdf"),
    (b"%!PS-Adobe-", "application/postscript"),
    (b"\xFE\xFF", "text/plain; charset=utf-16be"),
    (b"\xFF\xFE", "text/plain; charset=utf-16le"),
    (b"\xEF\xBB\xBF", "text/plain; charset=utf-8"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\x00\x00\x02\x00", "image/x-icon"),
    (b"BM", "image/bmp"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x89PNG\x0D\x0A\x1A\x0A", "image/png"),
    (b"\xFF\xD8\xFF", "image/jpeg"),
    (b"ID3", "audio/mpeg"),
    (b"OggS\x00", "application/ogg"),
    (b"MThd\x00\x00\x00\x06", "audio/midi"),
    (b"\x1A\x45\xDF\xA3", "video/webm"),
    (b"\x00\x01\x00\x00", "font/ttf"),
    (b"OTTO", "font/otf"),
    (b"ttcf", "font/collection"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
    (b"\x1F\x8B\x08", "application/x-gzip"),
    (b"PK\x03\x04", "application/zip"),
    (b"Rar!\x1A\x07\x00", "application/x-rar-compressed"),
    (b"Rar!\x1A\x07\x01\x00", "application/x-rar-compressed"),
    (b"\x00asm", "application/wasm"),
];

/// The types of RIFF containers by the form type at byte 8.
const RIFF_FORMS: &[(&[u8], &str)] =
    &[(b"WEBPVP", "image/webp"), (b"AVI ", "video/avi"), (b"WAVE", "audio/wave")];

/// A type by the body's leading signature, in Go's order.
fn signature_type(data: &[u8]) -> Option<&'static str> {
    if let Some((_, mime)) = SIGNATURES.iter().find(|(magic, _)| data.starts_with(magic)) {
        return Some(mime);
    }
    if data.len() >= 12
        && data.starts_with(b"RIFF")
        && let Some((_, mime)) = RIFF_FORMS.iter().find(|(form, _)| data[8..].starts_with(form))
    {
        return Some(mime);
    }
    if data.len() >= 12 && data.starts_with(b"FORM") && &data[8..12] == b"AIFF" {
        return Some("audio/aiff");
    }
    is_mp4(data).then_some("video/mp4")
}

fn is_mp4(data: &[u8]) -> bool {
    if data.len() < 12 {
        return false;
    }
    let box_size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if data.len() < box_size || box_size % 4 != 0 || box_size < 12 || &data[4..8] != b"ftyp" {
        return false;
    }
    (8..box_size).step_by(4).any(|st| st != 12 && data.get(st..st + 3) == Some(b"mp4"))
}

fn is_token_char(c: char) -> bool {
    c.is_ascii() && c > ' ' && c != '\x7f' && !"()<>@,;:\\\"/[]?=".contains(c)
}

/// `<disposition>; filename=<name>`, quoted only when needed and RFC 2231-encoded
/// when not ASCII (Go's `mime.FormatMediaType`).
pub fn content_disposition(disposition: &str, filename: &str) -> String {
    if !filename.is_ascii() {
        let mut encoded = String::new();
        for b in filename.bytes() {
            if b.is_ascii() && is_token_char(b as char) && !matches!(b, b'*' | b'\'' | b'%') {
                encoded.push(b as char);
            } else {
                encoded.push_str(&format!("%{b:02X}"));
            }
        }
        return format!("{disposition}; filename*=utf-8''{encoded}");
    }
    if !filename.is_empty() && filename.chars().all(is_token_char) {
        return format!("{disposition}; filename={filename}");
    }
    let mut quoted = String::from("\"");
    for c in filename.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    format!("{disposition}; filename={quoted}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_types_win() {
        assert_eq!(type_by_extension(".json"), "application/json");
        assert_eq!(type_by_extension(".bin"), "application/octet-stream");
        assert_eq!(type_by_extension(".js"), "application/javascript");
        assert_eq!(type_by_extension(".HTML"), "text/html; charset=utf-8");
        assert_eq!(type_by_extension(""), "");
        assert_eq!(extension("a/b.c/notes.TXT"), ".TXT");
        assert_eq!(extension("7,03c47b5814"), "");
    }

    #[test]
    fn globs_and_mime_types_files() {
        let mut map = HashMap::new();
        map.insert(".json".to_owned(), "application/json".to_owned());
        load_globs(
            &mut map,
            "# comment\n50:text/plain:*.txt\n40:text/x-other:*.txt\n50:application/x-foo:*.json\n50:a/b:*.[ch]\n",
        );
        assert_eq!(map[".txt"], "text/plain; charset=utf-8");
        assert_eq!(map[".json"], "application/json");
        assert!(!map.contains_key(".[ch]"));
        load_mime_types(&mut map, "# c\napplication/x-bar\tbar baz\n");
        assert_eq!(map[".baz"], "application/x-bar");
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"hello"), "text/plain; charset=utf-8");
        assert_eq!(sniff(b""), "text/plain; charset=utf-8");
        assert_eq!(sniff(b"\x00\x01binary"), "application/octet-stream");
        assert_eq!(sniff(b"  <html><body>"), "text/html; charset=utf-8");
        assert_eq!(sniff(b"\x89PNG\x0D\x0A\x1A\x0Arest"), "image/png");
        assert_eq!(sniff(b"\x1f\x8b\x08\x00"), "application/x-gzip");
    }

    #[test]
    fn disposition_quoting() {
        assert_eq!(content_disposition("inline", "hello.txt"), "inline; filename=hello.txt");
        assert_eq!(content_disposition("inline", "7,03c47b5814"), "inline; filename=\"7,03c47b5814\"");
        assert_eq!(
            content_disposition("attachment", "a \"b\".txt"),
            "attachment; filename=\"a \\\"b\\\".txt\""
        );
        assert_eq!(content_disposition("inline", "é.txt"), "inline; filename*=utf-8''%C3%A9.txt");
    }
}
