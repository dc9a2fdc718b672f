//! The split parser (record prefix + tail, no data) against the whole-record parser on
//! every record of the volumes real `weed` 4.48 wrote (/work/shared/fixtures/weed-4.48):
//! the same metadata for every needle, and the data exactly where the span says.

use needle::scan;
use needle::{DataSpan, Needle, NeedleMeta, SuperBlock};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    let shared = Path::new("/work/shared/fixtures/weed-4.48");
    if shared.exists() {
        shared.to_owned()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/weed-4.48")
    }
}

#[test]
fn split_parse_matches_whole_parse_on_every_weed_record() {
    let mut checked = 0;
    let mut largest = 0;
    for entry in std::fs::read_dir(fixtures()).expect("the weed 4.48 fixtures") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("dat") {
            continue;
        }
        let dat = std::fs::read(&path).unwrap();
        let super_block = SuperBlock::parse(&dat).unwrap();
        let start = super_block.block_size() as u64;
        let version = super_block.version;
        for record in scan::records(&dat, version, start) {
            let record = record.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let bytes = &dat[record.offset as usize..(record.offset + record.record_size) as usize];
            let span = DataSpan::parse(&bytes[..DataSpan::prefix_len(version)], version).unwrap();
            let tail = &bytes[span.tail_offset() as usize..][..span.tail_len()];
            let meta = NeedleMeta::parse(&span, tail).unwrap();
            let whole = Needle::parse(bytes, version).unwrap();
            assert_eq!(meta, whole.meta(), "{} at {}", path.display(), record.offset);
            let data = &bytes[span.data_offset as usize..][..span.data_size as usize];
            assert_eq!(data, whole.data);
            largest = largest.max(span.data_size);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} records in the fixtures");
    assert!(largest >= 3 << 20, "the fixtures hold a 3 MiB needle (largest {largest})");
}
