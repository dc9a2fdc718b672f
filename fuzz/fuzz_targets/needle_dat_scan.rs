//! A `.dat` walked record by record, as recovery and the volume-move tail do it: the
//! first byte picks the version, the rest is the file after its superblock.
//!
//! Records come back in file order, back to back, each within the data; the walk stops
//! at the first error, and everything before it parses on its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle::{Needle, Version};

fuzz_target!(|input: &[u8]| {
    let Some((&selector, dat)) = input.split_first() else { return };
    let version = [Version::V1, Version::V2, Version::V3][usize::from(selector % 3)];
    let mut expected_offset = 0u64;
    let mut failed = false;
    for item in needle::scan::records(dat, version, 0) {
        assert!(!failed, "a record after an error");
        match item {
            Ok(record) => {
                assert_eq!(record.offset, expected_offset, "records are back to back");
                let end = record.offset + record.record_size;
                assert!(end <= dat.len() as u64, "a record past the end of the data");
                assert_eq!(record.record_size % 8, 0);
                let alone = Needle::parse(&dat[record.offset as usize..end as usize], version).unwrap();
                assert_eq!(alone, record.needle);
                expected_offset = end;
            }
            Err(e) => {
                assert_eq!(e.offset, expected_offset, "the error is where the walk stood");
                failed = true;
            }
        }
    }
    assert!(failed || expected_offset == dat.len() as u64, "the walk stopped early without an error");
});
