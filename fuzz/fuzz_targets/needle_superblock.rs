//! The start of a `.dat`: a superblock parses or is a typed error, and one that parses
//! encodes back to the bytes it came from (version 1 has no extra: its bytes 6-7 are
//! ignored and written as zeros).
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle::{SUPER_BLOCK_SIZE, SuperBlock, Version};

fuzz_target!(|bytes: &[u8]| {
    let Ok(block) = SuperBlock::parse(bytes) else { return };
    let fixed: &[u8; SUPER_BLOCK_SIZE] = bytes[..SUPER_BLOCK_SIZE].try_into().unwrap();
    assert_eq!(SuperBlock::extra_len(fixed), Ok(block.extra.len()));
    let encoded = block.to_bytes().expect("a parsed superblock encodes");
    assert_eq!(encoded.len(), block.block_size());
    if block.version == Version::V1 {
        assert_eq!(&encoded[..6], &bytes[..6]);
        assert_eq!(&encoded[6..], &[0, 0]);
    } else {
        assert_eq!(&encoded[..], &bytes[..block.block_size()]);
    }
    assert_eq!(SuperBlock::parse(&encoded), Ok(block));
});
