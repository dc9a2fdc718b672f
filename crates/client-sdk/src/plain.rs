//! Verified stored data to the plain bytes a caller gets: gunzip when stored
//! compressed, and a range of them.

use crate::{Error, FileId, NeedleData};
use bytes::Bytes;
use std::ops::Range;

/// `range` of verified plain bytes.
pub(crate) fn slice_range(fid: &FileId, plain: Bytes, range: Range<u64>) -> Result<Bytes, Error> {
    let len = plain.len() as u64;
    if range.start > range.end || range.end > len {
        return Err(Error::range_not_satisfiable(fid, &range, len));
    }
    Ok(plain.slice(range.start as usize..range.end as usize))
}

/// Decompresses verified stored data when it is gzip.
pub(crate) fn plain_bytes(fid: &FileId, stored: NeedleData) -> Result<Bytes, Error> {
    if !stored.compressed {
        return Ok(stored.bytes);
    }
    gunzip(fid, &stored.bytes)
}

/// Decompresses verified gzip data of `fid`.
pub(crate) fn gunzip(fid: &FileId, gzip: &[u8]) -> Result<Bytes, Error> {
    use std::io::Read;
    let mut plain = Vec::with_capacity(gzip.len() * 4);
    flate2::read::MultiGzDecoder::new(gzip)
        .read_to_end(&mut plain)
        .map_err(|source| Error::Decompress { fid: fid.to_string(), source })?;
    Ok(plain.into())
}

#[cfg(test)]
mod tests {
    use super::plain_bytes;
    use crate::NeedleData;

    /// gzip reader (weed's) inflates it, not only its first member.
    #[test]
    fn gzip_of_several_members_inflates_whole() {
        use std::io::Write;
        let mut stored = Vec::new();
        for member in [&b"first member, "[..], b"second member"] {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(member).unwrap();
            stored.extend(encoder.finish().unwrap());
        }
        let data = NeedleData {
            bytes: stored.into(),
            compressed: true,
            chunk_manifest: false,
            crc: 0,
            content_type: None,
        };
        let plain = plain_bytes(&"3,01637037d6".parse().unwrap(), data).unwrap();
        assert_eq!(&plain[..], b"first member, second member");
    }
}
