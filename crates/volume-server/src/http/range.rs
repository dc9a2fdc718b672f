//! HTTP `Range` handling as weed does it (`ProcessRangeRequest`, which follows Go's
//! `net/http` range parser): suffix lengths are clamped, a start at or past the end
//! does not overlap, ranges whose lengths add up to more than the content are ignored,
//! several ranges become a `multipart/byteranges` body.

use rand::RngCore;

/// One satisfiable range: `length` bytes from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub length: u64,
}

impl ByteRange {
    /// The `Content-Range` value, exactly as Go formats it (so an empty range of an
    /// empty body is `bytes 0--1/0`).
    pub fn content_range(&self, total: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.start as i128 + self.length as i128 - 1, total)
    }
}

/// Why a `Range` header cannot be served (both are 416).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// Malformed: the reply has no `Content-Range`.
    Invalid,
    /// Well-formed, but every range starts past the end.
    NoOverlap,
}

impl RangeError {
    /// The text body weed sends (Go's error text plus a newline).
    pub fn body(self) -> &'static str {
        match self {
            RangeError::Invalid => "invalid range\n",
            RangeError::NoOverlap => "invalid range: failed to overlap\n",
        }
    }
}

/// Parses a `Range` header value against a body of `size` bytes.
pub fn parse(header: &str, size: u64) -> Result<Vec<ByteRange>, RangeError> {
    let spec = header.strip_prefix("bytes=").ok_or(RangeError::Invalid)?;
    let mut ranges = Vec::new();
    let mut no_overlap = false;
    for part in spec.split(',') {
        let part = part.trim_matches([' ', '\t']);
        if part.is_empty() {
            continue;
        }
        let (start, end) = part.split_once('-').ok_or(RangeError::Invalid)?;
        let (start, end) = (start.trim_matches([' ', '\t']), end.trim_matches([' ', '\t']));
        if start.is_empty() {
            let suffix = parse_number(end).ok_or(RangeError::Invalid)?.min(size);
            ranges.push(ByteRange { start: size - suffix, length: suffix });
            continue;
        }
        let start = parse_number(start).ok_or(RangeError::Invalid)?;
        if start >= size {
            no_overlap = true;
            continue;
        }
        let length = if end.is_empty() {
            size - start
        } else {
            let end = parse_number(end).filter(|&e| e >= start).ok_or(RangeError::Invalid)?;
            end.min(size - 1) - start + 1
        };
        ranges.push(ByteRange { start, length });
    }
    if no_overlap && ranges.is_empty() {
        return Err(RangeError::NoOverlap);
    }
    Ok(ranges)
}

/// Go's `strconv.ParseInt(s, 10, 64)` for non-negative values: an optional `+` sign,
/// then digits.
fn parse_number(s: &str) -> Option<u64> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok().map(|n| n as u64)
}

/// Whether the ranges ask for more bytes than the body has: weed then ignores the
/// header and sends an empty 200.
pub fn exceeds(ranges: &[ByteRange], size: u64) -> bool {
    // Checked: a chunk manifest's file can claim a size near 2^64, and two ranges of it
    // add up past u64 (found by the http_range fuzz target).
    ranges.iter().try_fold(0u64, |sum, r| sum.checked_add(r.length)).is_none_or(|total| total > size)
}

/// A `multipart/byteranges` body for several ranges of `data`, laid out as Go's
/// `mime/multipart` writer does (60 hex digits of boundary, sorted part headers).
pub fn multipart(data: &[u8], ranges: &[ByteRange], content_type: &str) -> (String, Vec<u8>) {
    let layout = MultipartLayout::new(data.len() as u64, ranges, content_type);
    let mut body = Vec::new();
    for (head, r) in layout.heads.iter().zip(ranges) {
        body.extend_from_slice(head.as_bytes());
        body.extend_from_slice(&data[r.start as usize..(r.start + r.length) as usize]);
    }
    body.extend_from_slice(layout.closing.as_bytes());
    (layout.content_type, body)
}

/// The text of a `multipart/byteranges` body around its parts, for a writer that sends
/// the parts' bytes from elsewhere: `heads[i]`, part `i`, …, then `closing`.
pub struct MultipartLayout {
    /// The reply's `Content-Type`, with the boundary.
    pub content_type: String,
    /// What precedes each part: separator, boundary line, part headers.
    pub heads: Vec<String>,
    pub closing: String,
}

impl MultipartLayout {
    /// The layout for `ranges` of a body of `total` bytes whose parts have `content_type`.
    pub fn new(total: u64, ranges: &[ByteRange], content_type: &str) -> Self {
        let mut raw = [0u8; 30];
        rand::rng().fill_bytes(&mut raw);
        let boundary: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let heads = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let sep = if i == 0 { "" } else { "\r\n" };
                format!(
                    "{sep}--{boundary}\r\nContent-Range: {}\r\nContent-Type: {content_type}\r\n\r\n",
                    r.content_range(total)
                )
            })
            .collect();
        Self {
            content_type: format!("multipart/byteranges; boundary={boundary}"),
            heads,
            closing: format!("\r\n--{boundary}--\r\n"),
        }
    }

    /// Bytes of the whole body when the parts are `ranges`.
    pub fn body_len(&self, ranges: &[ByteRange]) -> u64 {
        let text: usize = self.heads.iter().map(String::len).sum::<usize>() + self.closing.len();
        ranges.iter().fold(text as u64, |sum, r| sum.saturating_add(r.length))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, length: u64) -> ByteRange {
        ByteRange { start, length }
    }

    #[test]
    fn go_semantics() {
        assert_eq!(parse("bytes=0-99", 5), Ok(vec![r(0, 5)]));
        assert_eq!(parse("bytes=-10", 5), Ok(vec![r(0, 5)]));
        assert_eq!(parse("bytes=100-", 5), Err(RangeError::NoOverlap));
        assert_eq!(parse("bytes=5-5", 5), Err(RangeError::NoOverlap));
        assert_eq!(parse("bytes=0-99", 0), Err(RangeError::NoOverlap));
        assert_eq!(parse("bytes=-10", 0), Ok(vec![r(0, 0)]));
        assert_eq!(r(0, 0).content_range(0), "bytes 0--1/0");
        assert_eq!(parse("bytes=5-2", 10), Err(RangeError::Invalid));
        assert_eq!(parse("foo", 10), Err(RangeError::Invalid));
        assert_eq!(parse("bytes=x-", 10), Err(RangeError::Invalid));
        assert_eq!(parse("bytes=--1", 10), Err(RangeError::Invalid));
        assert_eq!(parse("bytes=", 10), Ok(vec![]));
        assert_eq!(parse("bytes=0-1, -2", 1000), Ok(vec![r(0, 2), r(998, 2)]));
        assert_eq!(parse("bytes=100-,0-1", 5), Ok(vec![r(0, 2)]), "one overlapping range is enough");
        assert!(exceeds(&parse("bytes=0-600,500-999", 1000).unwrap(), 1000));
        assert_eq!(r(5, 1).content_range(777), "bytes 5-5/777");
    }

    #[test]
    fn multipart_layout() {
        let (ct, body) = multipart(b"abcdefghij", &[r(0, 2), r(8, 2)], "text/plain");
        let boundary = ct.strip_prefix("multipart/byteranges; boundary=").unwrap();
        assert_eq!(boundary.len(), 60);
        let expected = format!(
            "--{boundary}\r\nContent-Range: bytes 0-1/10\r\nContent-Type: text/plain\r\n\r\nab\r\n--{boundary}\r\nContent-Range: bytes 8-9/10\r\nContent-Type: text/plain\r\n\r\nij\r\n--{boundary}--\r\n"
        );
        assert_eq!(String::from_utf8(body).unwrap(), expected);
        let layout = MultipartLayout::new(10, &[r(0, 2), r(8, 2)], "text/plain");
        assert_eq!(layout.body_len(&[r(0, 2), r(8, 2)]), expected.len() as u64);
    }
}
