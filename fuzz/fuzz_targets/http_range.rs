//! A `Range` header against a body: the first 8 bytes are the body's size (big-endian),
//! the rest the header value.
//!
//! Every range it gives lies inside the body; `exceeds` (weed: ignore the header) and
//! the multipart layout work on whatever it gives, and the layout's length is the
//! length of the body `multipart` builds (small bodies, so it can be built).
#![no_main]

use libfuzzer_sys::fuzz_target;
use volume_server::http::range::{self, MultipartLayout};

fuzz_target!(|input: &[u8]| {
    let Some((size, header)) = input.split_first_chunk::<8>() else { return };
    let Ok(header) = std::str::from_utf8(header) else { return };
    let size = u64::from_be_bytes(*size);
    let Ok(ranges) = range::parse(header, size) else { return };
    for r in &ranges {
        assert!(r.start.checked_add(r.length).is_some_and(|end| end <= size), "{r:?} outside {size}");
        let _ = r.content_range(size);
    }
    if range::exceeds(&ranges, size) || ranges.len() < 2 {
        return;
    }
    let layout = MultipartLayout::new(size, &ranges, "text/plain");
    let small = size % 4096;
    if let Ok(ranges) = range::parse(header, small) {
        if !ranges.is_empty() && !range::exceeds(&ranges, small) {
            let data = vec![7u8; small as usize];
            let (_, body) = range::multipart(&data, &ranges, "text/plain");
            assert_eq!(
                body.len() as u64,
                MultipartLayout::new(small, &ranges, "text/plain").body_len(&ranges)
            );
        }
    }
    let _ = layout.body_len(&ranges);
});
