//! `.idx` bytes: the first byte picks the offset width (4 or 5 bytes), the rest is the
//! index. Every whole entry re-encodes to its own bytes; a partial entry at the end is
//! left out and counted by `trailing_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle::{IdxEntry, OffsetWidth, idx};

fuzz_target!(|input: &[u8]| {
    let Some((&selector, index)) = input.split_first() else { return };
    let width = if selector & 1 == 0 { OffsetWidth::Four } else { OffsetWidth::Five };
    let size = width.entry_size();
    let mut count = 0;
    for (entry, bytes) in idx::entries(index, width).zip(index.chunks_exact(size)) {
        assert_eq!(entry.to_bytes(width).expect("a parsed entry encodes"), bytes);
        assert_eq!(IdxEntry::parse(bytes, width), Ok(entry));
        assert!(entry.byte_offset() <= width.max_byte_offset());
        assert_eq!(IdxEntry::new(entry.key, entry.byte_offset(), entry.size), Ok(entry));
        count += 1;
    }
    assert_eq!(count, index.len() / size);
    assert_eq!(idx::trailing_bytes(index.len(), width), index.len() - count * size);
    assert_eq!(IdxEntry::parse(index, width).is_ok(), index.len() >= size);
});
