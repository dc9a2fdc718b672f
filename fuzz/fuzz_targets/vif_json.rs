//! A `.vif` file (weed's protojson `VolumeInfo`, read at every volume load): it parses
//! or is an error; what parses is written back as `save` writes it, which parses to
//! the same info.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volume_store::vif::VolumeInfo;

fuzz_target!(|text: &[u8]| {
    let Ok(Some(info)) = VolumeInfo::parse(text) else { return };
    let saved = info.to_bytes();
    let again =
        VolumeInfo::parse(&saved).unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&saved)));
    assert_eq!(again, Some(info));
});
