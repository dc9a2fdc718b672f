//! Walking the records of a `.dat` in file order, from the end of the superblock.
//!
//! This is how a volume is checked or recovered without its `.idx`: each record's
//! header gives its size, so the next record starts `record_size` bytes later. The
//! scanner stops at the first record it cannot parse and reports where, which is what
//! crash recovery needs (a torn tail is cut off at that offset).

use crate::{FormatError, Needle, NeedleHeader, Version};

/// One record found by [`Records`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Byte offset of the record in the `.dat`.
    pub offset: u64,
    pub needle: Needle<'a>,
    /// Bytes the record occupies, padding included.
    pub record_size: u64,
}

/// Why scanning stopped before the end of the data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("record at offset {offset}: {source}")]
pub struct ScanError {
    pub offset: u64,
    pub source: FormatError,
}

/// Iterates over the records in `dat[start..]`, parsing (not verifying) each one.
/// After the first error it yields nothing more. A record cut short, even in its padding,
/// is an error: weed always writes the padding.
pub fn records(dat: &[u8], version: Version, start: u64) -> Records<'_> {
    Records { dat, version, offset: start, failed: false }
}

pub struct Records<'a> {
    dat: &'a [u8],
    version: Version,
    offset: u64,
    failed: bool,
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, ScanError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.dat.len() as u64 {
            return None;
        }
        let rest = &self.dat[self.offset as usize..];
        let result = NeedleHeader::parse(rest).and_then(|header| {
            let record_size = self.version.record_size(header.size);
            let available = rest.len().min(record_size as usize);
            if (available as u64) < record_size {
                return Err(FormatError::Truncated {
                    what: "needle record",
                    needed: record_size as usize,
                    available,
                });
            }
            let needle = Needle::parse(&rest[..available], self.version)?;
            Ok(Record { offset: self.offset, needle, record_size })
        });
        match result {
            Ok(record) => {
                self.offset += record.record_size;
                Some(Ok(record))
            }
            Err(source) => {
                self.failed = true;
                Some(Err(ScanError { offset: self.offset, source }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cookie, NeedleId};

    #[test]
    fn walks_records_and_stops_at_a_torn_tail() {
        let mut dat = vec![3, 0, 0, 0, 0, 0, 0, 0];
        for i in 1..=3u64 {
            let data = vec![i as u8; 100 * i as usize];
            Needle::new(NeedleId(i), Cookie(7), &data).encode_into(Version::V3, &mut dat).unwrap();
        }
        let whole: Vec<_> = records(&dat, Version::V3, 8).collect::<Result<_, _>>().unwrap();
        assert_eq!(whole.iter().map(|r| r.needle.id.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(whole[1].offset, 8 + whole[0].record_size);

        let torn = &dat[..dat.len() - 5];
        let scanned: Vec<_> = records(torn, Version::V3, 8).collect();
        assert_eq!(scanned.len(), 3);
        let err = scanned[2].clone().unwrap_err();
        assert_eq!(err.offset, whole[2].offset);
        assert!(matches!(err.source, FormatError::Truncated { .. }));
    }
}
