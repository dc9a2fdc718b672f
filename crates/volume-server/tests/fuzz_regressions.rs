//! Inputs the fuzz targets (`fuzz/`, `scripts/fuzz`) found to crash the server's
//! parsers, each kept as a test of the fix.

use volume_server::http::range::{self, ByteRange, MultipartLayout};

/// http_range: `exceeds` added the ranges' lengths in a u64 that overflowed (a panic in
/// debug builds, a wrong sum otherwise). A chunk manifest may declare a file this large.
#[test]
fn ranges_adding_up_past_u64_exceed_the_body_instead_of_overflowing() {
    let size = u64::MAX;
    let ranges = range::parse("bytes=0-,-5", size).unwrap();
    assert_eq!(ranges, vec![ByteRange { start: 0, length: size }, ByteRange { start: size - 5, length: 5 }]);
    assert!(range::exceeds(&ranges, size));
    assert_eq!(MultipartLayout::new(size, &ranges, "text/plain").body_len(&ranges), u64::MAX);
}
