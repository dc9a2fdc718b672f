//! A record's metadata without its data, for readers that stream the data rather than
//! hold the whole record: two small reads give everything but the data.
//!
//! ```text
//! record: Header(16) [DataSize(4)] | Data(DataSize) | Flags [Name] … [Pairs]  Checksum [AppendAtNs] | Padding
//!         <------ DataSpan prefix ->                 <----------------- tail ----------------------->
//! ```
//!
//! [`DataSpan::parse`] reads the prefix and says where the data and the tail lie;
//! [`NeedleMeta::parse`] reads the tail. Together they accept exactly the records
//! [`Needle::parse`](crate::Needle::parse) accepts and give the same fields.

use crate::needle::{Cursor, parse_metadata};
use crate::{Cookie, Flags, FormatError, HEADER_SIZE, Needle, NeedleHeader, NeedleId, Ttl, Version};

/// Bytes of the `DataSize` field that starts a v2/v3 body.
const DATA_SIZE_LEN: usize = 4;

/// Where a record's data lies, from the record's first [`DataSpan::prefix_len`] bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataSpan {
    pub header: NeedleHeader,
    /// Offset of the data from the start of the record.
    pub data_offset: u64,
    /// Length of the data (v2/v3 `DataSize`; the whole body for v1).
    pub data_size: u32,
    version: Version,
}

impl DataSpan {
    /// Bytes to read at the start of a record for [`DataSpan::parse`]: the header, and for
    /// v2/v3 the `DataSize` field (a record without a body is shorter than that, but its
    /// padding makes it at least this long on disk).
    pub fn prefix_len(version: Version) -> usize {
        match version {
            Version::V1 => HEADER_SIZE,
            Version::V2 | Version::V3 => HEADER_SIZE + DATA_SIZE_LEN,
        }
    }

    /// Parses the header and `DataSize`, checking that the data and the flags byte fit
    /// the body the header declares.
    pub fn parse(prefix: &[u8], version: Version) -> Result<Self, FormatError> {
        let header = NeedleHeader::parse(prefix)?;
        let body_len = header.size as usize;
        let (data_offset, data_size) = match version {
            Version::V1 => (HEADER_SIZE, header.size),
            Version::V2 | Version::V3 if header.size == 0 => (HEADER_SIZE, 0),
            Version::V2 | Version::V3 => {
                let field =
                    prefix.get(HEADER_SIZE..HEADER_SIZE + DATA_SIZE_LEN).ok_or(FormatError::Truncated {
                        what: "needle DataSize",
                        needed: HEADER_SIZE + DATA_SIZE_LEN,
                        available: prefix.len(),
                    })?;
                let data_size = u32::from_be_bytes(field.try_into().expect("4 bytes"));
                let data_end = DATA_SIZE_LEN as u64 + u64::from(data_size);
                if data_end > body_len as u64 {
                    return Err(FormatError::FieldOverrun { field: "Data", body_len });
                }
                if data_end == body_len as u64 {
                    return Err(FormatError::FieldOverrun { field: "Flags", body_len });
                }
                (HEADER_SIZE + DATA_SIZE_LEN, data_size)
            }
        };
        Ok(Self { header, data_offset: data_offset as u64, data_size, version })
    }

    /// Offset of the tail (the fields after the data, the checksum, `AppendAtNs`) from
    /// the start of the record.
    pub fn tail_offset(&self) -> u64 {
        self.data_offset + u64::from(self.data_size)
    }

    /// Length of the tail: the record without its padding ends there.
    pub fn tail_len(&self) -> usize {
        (self.version.unpadded_record_size(self.header.size) as u64 - self.tail_offset()) as usize
    }
}

/// Everything in a record but its data; the variable-length fields borrow from the tail.
/// Field meanings are those of [`Needle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NeedleMeta<'a> {
    pub cookie: Cookie,
    pub id: NeedleId,
    /// Length of the data, which is not here.
    pub data_size: u32,
    pub flags: Flags,
    pub name: &'a [u8],
    pub mime: &'a [u8],
    pub last_modified: u64,
    pub ttl: Ttl,
    pub pairs: &'a [u8],
    /// The checksum as stored (raw CRC32-C of the data, or its legacy masked form).
    pub checksum: u32,
    pub append_at_ns: u64,
}

impl<'a> NeedleMeta<'a> {
    /// Parses the tail of the record `span` describes: `tail` holds the
    /// [`DataSpan::tail_len`] bytes at [`DataSpan::tail_offset`] (more are ignored).
    pub fn parse(span: &DataSpan, tail: &'a [u8]) -> Result<Self, FormatError> {
        let tail_len = span.tail_len();
        let tail = tail.get(..tail_len).ok_or(FormatError::Truncated {
            what: "needle tail",
            needed: tail_len,
            available: tail.len(),
        })?;
        let (metadata, trailer) = tail.split_at(tail_len - span.version.tail_size());
        let mut fields = Needle::default();
        // Empty for v1 and for bodiless records; DataSpan::parse saw to the flags byte
        // of every other one.
        if !metadata.is_empty() {
            parse_metadata(&mut Cursor { body: metadata, at: 0 }, &mut fields)?;
        }
        let append_at_ns = match span.version {
            Version::V3 => u64::from_be_bytes(trailer[4..12].try_into().expect("v3 trailer is 12 bytes")),
            Version::V1 | Version::V2 => 0,
        };
        Ok(Self {
            cookie: span.header.cookie,
            id: span.header.id,
            data_size: span.data_size,
            checksum: u32::from_be_bytes(trailer[..4].try_into().expect("trailer starts with 4 bytes")),
            append_at_ns,
            ..fields.meta()
        })
    }

    pub fn is_compressed(&self) -> bool {
        self.flags.contains(Flags::COMPRESSED)
    }

    pub fn is_chunk_manifest(&self) -> bool {
        self.flags.contains(Flags::CHUNK_MANIFEST)
    }

    /// Whether the needle's TTL has run out at `now_ns` (Unix nanoseconds), counted from
    /// its append time as weed does. Needles without a TTL or a last-modified time never
    /// expire. An expired needle reads as not found.
    pub fn is_expired_at(&self, now_ns: u64) -> bool {
        let ttl_seconds = self.ttl.seconds();
        if !self.flags.contains(Flags::HAS_TTL)
            || !self.flags.contains(Flags::HAS_LAST_MODIFIED)
            || ttl_seconds == 0
        {
            return false;
        }
        now_ns >= self.append_at_ns.saturating_add(ttl_seconds.saturating_mul(1_000_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `record` as a streaming reader would and parses both parts.
    fn split_parse(record: &[u8], version: Version) -> Result<NeedleMeta<'_>, FormatError> {
        let prefix = &record[..DataSpan::prefix_len(version).min(record.len())];
        let span = DataSpan::parse(prefix, version)?;
        NeedleMeta::parse(&span, &record[span.tail_offset() as usize..])
    }

    #[test]
    fn every_shape_gives_what_the_whole_record_parser_gives() {
        let ttl: Ttl = "3d".parse().unwrap();
        let data = vec![7u8; 3000];
        let full = Needle::new(NeedleId(9), Cookie(0xabcd), &data)
            .with_name(b"a.bin")
            .with_mime(b"application/x-thing")
            .with_last_modified(1_700_000_000)
            .with_ttl(ttl)
            .with_pairs(br#"{"Seaweed-A":"b"}"#)
            .with_append_at_ns(1_700_000_000_000_000_001);
        let shapes = [
            (full, Version::V3),
            (full, Version::V2),
            (Needle::new(NeedleId(1), Cookie(2), &data), Version::V3),
            (Needle::new(NeedleId(1), Cookie(2), &data), Version::V1),
            (Needle::new(NeedleId(1), Cookie(2), b"x").with_name(b""), Version::V3),
            (Needle::tombstone(NeedleId(3), Cookie(4), 0x1234, 5), Version::V3),
            (Needle::tombstone(NeedleId(3), Cookie(4), 0x1234, 0), Version::V2),
        ];
        for (needle, version) in shapes {
            let record = needle.to_bytes(version).unwrap();
            let meta = split_parse(&record, version).unwrap();
            assert_eq!(meta, Needle::parse(&record, version).unwrap().meta(), "{version:?} {needle:?}");
            let span = DataSpan::parse(&record, version).unwrap();
            let data_at = span.data_offset as usize;
            assert_eq!(&record[data_at..data_at + span.data_size as usize], needle.data);
        }
    }

    #[test]
    fn inconsistent_sizes_are_typed_errors() {
        let record =
            Needle::new(NeedleId(1), Cookie(2), b"payload").with_name(b"n").to_bytes(Version::V3).unwrap();
        let mut past_body = record.clone();
        past_body[16..20].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(
            split_parse(&past_body, Version::V3),
            Err(FormatError::FieldOverrun { field: "Data", body_len: 14 })
        );
        let mut no_flags = record.clone();
        no_flags[16..20].copy_from_slice(&10u32.to_be_bytes()); // DataSize + 4 == Size
        assert_eq!(
            split_parse(&no_flags, Version::V3),
            Err(FormatError::FieldOverrun { field: "Flags", body_len: 14 })
        );
        let mut shorter = record.clone();
        shorter[16..20].copy_from_slice(&6u32.to_be_bytes()); // the name now overruns
        assert!(matches!(split_parse(&shorter, Version::V3), Err(FormatError::FieldOverrun { .. })));
        let span = DataSpan::parse(&record, Version::V3).unwrap();
        assert!(matches!(
            NeedleMeta::parse(&span, &record[span.tail_offset() as usize..record.len() - 8]),
            Err(FormatError::Truncated { what: "needle tail", .. })
        ));
        assert!(matches!(DataSpan::parse(&record[..18], Version::V3), Err(FormatError::Truncated { .. })));
    }
}
