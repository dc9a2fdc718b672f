//! The verify step: the bytes a READ brought back are returned only if they are the
//! record that was asked for (header id, size and cookie) and intact (CRC32-C). The
//! checks are [`Needle::verify`], the same the volume server makes on its own reads.

use needle::{FileId, FormatError, Needle, Version};

/// Checks `record` (header, body, checksum, v3 timestamp; no padding needed) against the
/// fid and the body size Locate reported. Returns the parsed needle (borrowing the
/// record, for the checks after verification) and the raw CRC32-C of its data.
pub fn verify_record<'r>(
    fid: &FileId,
    needle_size: u32,
    version: Version,
    record: &'r [u8],
) -> Result<(Needle<'r>, u32), FormatError> {
    Needle::verify(record, version, fid.needle_id(), fid.cookie, needle_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use needle::{Cookie, NeedleHeader, NeedleId, VolumeId};

    fn record(fid: &FileId, data: &[u8]) -> Vec<u8> {
        Needle::new(fid.needle_id(), fid.cookie, data).with_name(b"a.txt").to_bytes(Version::V3).unwrap()
    }

    #[test]
    fn accepts_the_record_asked_for() {
        let fid = FileId::new(VolumeId(3), NeedleId(0x0163), Cookie(0x7037d6));
        let data = b"hello, rdma".as_slice();
        let bytes = record(&fid, data);
        let size = NeedleHeader::parse(&bytes).unwrap().size;
        let unpadded = Version::V3.unpadded_record_size(size);
        let verified = verify_record(&fid, size, Version::V3, &bytes[..unpadded]).map(|(_, crc)| crc);
        assert_eq!(verified, Ok(needle::crc::crc32c(data)));
    }

    #[test]
    fn rejects_wrong_id_cookie_size_and_crc() {
        let fid = FileId::new(VolumeId(3), NeedleId(0x0163), Cookie(0x7037d6));
        let bytes = record(&fid, &[5u8; 300]);
        let size = NeedleHeader::parse(&bytes).unwrap().size;

        let other_id = FileId::new(VolumeId(3), NeedleId(0x0164), Cookie(0x7037d6));
        assert!(matches!(
            verify_record(&other_id, size, Version::V3, &bytes),
            Err(FormatError::HeaderMismatch { .. })
        ));
        let other_cookie = FileId::new(VolumeId(3), NeedleId(0x0163), Cookie(1));
        assert!(matches!(
            verify_record(&other_cookie, size, Version::V3, &bytes),
            Err(FormatError::CookieMismatch { .. })
        ));
        assert!(matches!(
            verify_record(&fid, size + 8, Version::V3, &bytes),
            Err(FormatError::HeaderMismatch { .. })
        ));
        let mut flipped = bytes.clone();
        flipped[100] ^= 0x40;
        assert!(matches!(
            verify_record(&fid, size, Version::V3, &flipped),
            Err(FormatError::ChecksumMismatch { .. })
        ));
        // A torn READ (record cut short) is an error, not a panic.
        assert!(verify_record(&fid, size, Version::V3, &bytes[..40]).is_err());
    }
}
