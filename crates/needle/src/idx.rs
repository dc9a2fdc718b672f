//! `.idx` entries: one per write and per delete, appended in write order.
//!
//! ```text
//! 4-byte offsets (16 bytes): key u64 BE | offset u32 BE            | size u32 BE
//! 5-byte offsets (17 bytes): key u64 BE | offset low u32 BE, high u8 | size u32 BE
//! ```
//! Offsets count 8-byte units. Size `0xFFFFFFFF` marks a deletion (the offset then
//! points at the tombstone record), and offset 0 is never a live needle (the superblock
//! is there).

use crate::error::prefix;
use crate::{FormatError, NeedleId};

/// The size an `.idx` entry records for a deletion (weed's `TombstoneFileSize`, -1).
pub const TOMBSTONE_SIZE: u32 = u32::MAX;

/// How many bytes an `.idx` offset takes: 4 (weed's default build, volumes up to
/// 32 GiB) or 5 (the `5BytesOffset` "large disk" build, up to 8 TiB; what the `weed`
/// on PyPI writes). A volume's `.vif` records it as `bytesOffset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OffsetWidth {
    Four,
    Five,
}

impl OffsetWidth {
    pub fn from_bytes_offset(n: u32) -> Option<Self> {
        match n {
            4 => Some(OffsetWidth::Four),
            5 => Some(OffsetWidth::Five),
            _ => None,
        }
    }

    /// The `bytesOffset` value of `.vif`.
    pub fn bytes(self) -> u8 {
        match self {
            OffsetWidth::Four => 4,
            OffsetWidth::Five => 5,
        }
    }

    pub fn entry_size(self) -> usize {
        8 + self.bytes() as usize + 4
    }

    /// The largest byte offset a needle may start at.
    pub fn max_byte_offset(self) -> u64 {
        ((1u64 << (8 * self.bytes() as u32)) - 1) * 8
    }
}

/// One `.idx` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdxEntry {
    pub key: NeedleId,
    /// Offset in 8-byte units.
    pub offset_units: u64,
    /// The needle header's `Size`, or [`TOMBSTONE_SIZE`].
    pub size: u32,
}

impl IdxEntry {
    /// An entry for a record at `byte_offset` (must be 8-aligned).
    pub fn new(key: NeedleId, byte_offset: u64, size: u32) -> Result<Self, FormatError> {
        if byte_offset % 8 != 0 {
            return Err(FormatError::UnalignedOffset(byte_offset));
        }
        Ok(Self { key, offset_units: byte_offset / 8, size })
    }

    pub fn byte_offset(&self) -> u64 {
        self.offset_units * 8
    }

    /// Whether this entry records a deletion (weed also treats offset 0 so).
    pub fn is_deletion(&self) -> bool {
        self.size == TOMBSTONE_SIZE || self.offset_units == 0
    }

    pub fn parse(bytes: &[u8], width: OffsetWidth) -> Result<Self, FormatError> {
        let e = prefix(bytes, width.entry_size(), ".idx entry")?;
        let key = NeedleId(u64::from_be_bytes(e[..8].try_into().expect("8 bytes")));
        let low = u64::from(u32::from_be_bytes(e[8..12].try_into().expect("4 bytes")));
        let (offset_units, size_at) = match width {
            OffsetWidth::Four => (low, 12),
            OffsetWidth::Five => (low | (u64::from(e[12]) << 32), 13),
        };
        let size = u32::from_be_bytes(e[size_at..size_at + 4].try_into().expect("4 bytes"));
        Ok(Self { key, offset_units, size })
    }

    /// Appends the entry's bytes to `out`.
    pub fn encode_into(&self, width: OffsetWidth, out: &mut Vec<u8>) -> Result<(), FormatError> {
        if self.offset_units > width.max_byte_offset() / 8 {
            return Err(FormatError::OffsetTooLarge { offset: self.byte_offset(), width: width.bytes() });
        }
        out.extend_from_slice(&self.key.0.to_be_bytes());
        out.extend_from_slice(&(self.offset_units as u32).to_be_bytes());
        if width == OffsetWidth::Five {
            out.push((self.offset_units >> 32) as u8);
        }
        out.extend_from_slice(&self.size.to_be_bytes());
        Ok(())
    }

    pub fn to_bytes(&self, width: OffsetWidth) -> Result<Vec<u8>, FormatError> {
        let mut out = Vec::with_capacity(width.entry_size());
        self.encode_into(width, &mut out)?;
        Ok(out)
    }
}

/// The entries of an `.idx` file's bytes, in file order. A partial entry at the end
/// (a write cut short by a crash) is not yielded; [`trailing_bytes`] tells its length.
pub fn entries(idx: &[u8], width: OffsetWidth) -> impl Iterator<Item = IdxEntry> + '_ {
    idx.chunks_exact(width.entry_size())
        .map(move |chunk| IdxEntry::parse(chunk, width).expect("chunks_exact yields whole entries"))
}

/// Bytes after the last whole entry.
pub fn trailing_bytes(idx_len: usize, width: OffsetWidth) -> usize {
    idx_len % width.entry_size()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_byte_offsets_put_the_high_byte_last() {
        // weed test/data/187.idx: key 0x671b905 at offset units 12884911892.
        let raw = [0, 0, 0, 0, 0x06, 0x71, 0xb9, 0x05, 0x00, 0x00, 0x27, 0x14, 0x03, 0x00, 0x40, 0x00, 0x5b];
        let e = IdxEntry::parse(&raw, OffsetWidth::Five).unwrap();
        assert_eq!(e.key, NeedleId(0x671b905));
        assert_eq!(e.offset_units, 12_884_911_892);
        assert_eq!(e.size, 0x0040005b);
        assert_eq!(e.to_bytes(OffsetWidth::Five).unwrap(), raw);
    }

    #[test]
    fn worked_example_index() {
        let idx = [
            0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x27, //
            0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x99,
        ];
        let all: Vec<_> = entries(&idx, OffsetWidth::Four).collect();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].byte_offset(), all[0].size, all[0].is_deletion()), (8, 39, false));
        assert_eq!((all[1].byte_offset(), all[1].is_deletion()), (80, true));
        assert_eq!(trailing_bytes(idx.len(), OffsetWidth::Four), 1);
        assert_eq!(
            IdxEntry::new(NeedleId(1), 8, 39).unwrap().to_bytes(OffsetWidth::Five).unwrap(),
            vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0x27]
        );
    }

    #[test]
    fn offsets_beyond_the_width_are_rejected() {
        let e = IdxEntry::new(NeedleId(1), 32 << 30, 1).unwrap();
        assert!(matches!(e.to_bytes(OffsetWidth::Four), Err(FormatError::OffsetTooLarge { width: 4, .. })));
        assert!(e.to_bytes(OffsetWidth::Five).is_ok());
        assert_eq!(IdxEntry::new(NeedleId(1), 12, 1), Err(FormatError::UnalignedOffset(12)));
        assert_eq!(OffsetWidth::Four.max_byte_offset(), (u32::MAX as u64) * 8);
    }
}
