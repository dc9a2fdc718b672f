//! The RDMA verify step: bytes a READ brought back, checked against the file id asked
//! for. Input: a version selector byte, the file id's key and cookie (12 bytes,
//! big-endian), the record.
//!
//! Nothing is accepted unless it decodes (CRC32-C included) as the needle with that id,
//! cookie and header size; the returned CRC is the data's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle::{Cookie, FileId, Needle, NeedleHeader, NeedleId, Version, VolumeId};
use rdma_transport::verify::verify_record;

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else { return };
    let Some((ids, record)) = rest.split_first_chunk::<12>() else { return };
    let version = [Version::V1, Version::V2, Version::V3][usize::from(selector % 3)];
    let key = u64::from_be_bytes(ids[..8].try_into().unwrap());
    let cookie = u32::from_be_bytes(ids[8..].try_into().unwrap());
    let fid = FileId::new(VolumeId(1), NeedleId(key), Cookie(cookie));
    // The size Locate reported: what the header says, or (low bit set) one off.
    let Ok(header) = NeedleHeader::parse(record) else { return };
    let size = header.size ^ u32::from(selector >> 7);
    let Ok((needle, crc)) = verify_record(&fid, size, version, record) else { return };
    assert_eq!((needle.id, needle.cookie), (fid.needle_id(), fid.cookie));
    assert_eq!(header.size, size);
    assert_eq!(Needle::decode(record, version), Ok(needle));
    if !needle.data.is_empty() {
        assert_eq!(crc, needle::crc::crc32c(needle.data));
    }
});
