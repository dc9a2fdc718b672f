//! A needle record from a `.dat` (or an RDMA READ, or a tail message): the first byte
//! picks the version, the rest is the record.
//!
//! - `Needle::parse` never panics; `Needle::decode` accepts exactly what `parse`
//!   accepts with a matching CRC32-C;
//! - the streaming parsers (`DataSpan` over the prefix, `NeedleMeta` over the tail)
//!   accept exactly the records `Needle::parse` accepts and give the same fields;
//! - a parsed record re-encodes to the same bytes (up to the padding, which readers
//!   skip), unless it is one weed's writer never produces (see below).
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle::{DataSpan, Needle, NeedleHeader, NeedleMeta, Version};

fuzz_target!(|input: &[u8]| {
    let Some((&selector, record)) = input.split_first() else { return };
    let version = [Version::V1, Version::V2, Version::V3][usize::from(selector % 3)];

    let parsed = Needle::parse(record, version);
    let split = DataSpan::parse(record, version).and_then(|span| {
        let tail = record.get(span.tail_offset() as usize..).unwrap_or(&[]);
        NeedleMeta::parse(&span, tail)
    });
    match (&parsed, &split) {
        (Ok(needle), Ok(meta)) => assert_eq!(needle.meta(), *meta, "streamed parse differs"),
        (Err(_), Err(_)) => {}
        _ => panic!("Needle::parse {parsed:?} but DataSpan + NeedleMeta {split:?}"),
    }
    let Ok(needle) = parsed else {
        assert!(Needle::decode(record, version).is_err());
        return;
    };
    assert_eq!(Needle::decode(record, version).is_ok(), needle.verify_checksum().is_ok());

    let size = NeedleHeader::parse(record).expect("parsed").size;
    // weed writes no body at all when the data is empty (an empty file, a tombstone),
    // but its reader, and ours, accept a body with DataSize 0 followed by metadata:
    // such a record parses, and re-encodes as the bodiless record weed would write.
    let weed_writes_it = version == Version::V1 || size == 0 || !needle.data.is_empty();
    let encoded = needle.to_bytes(version).expect("a parsed needle encodes");
    let unpadded = version.unpadded_record_size(size);
    if weed_writes_it {
        assert_eq!(&encoded[..unpadded], &record[..unpadded], "re-encoding changed the record");
        assert_eq!(encoded.len() as u64, version.record_size(size));
    } else {
        let again = Needle::parse(&encoded, version).expect("the re-encoded record parses");
        assert_eq!((again.id, again.cookie, again.checksum), (needle.id, needle.cookie, needle.checksum));
        assert!(again.data.is_empty());
    }
});
