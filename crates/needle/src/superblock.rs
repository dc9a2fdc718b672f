//! The volume superblock: the first 8 bytes of every `.dat`, plus an optional extra
//! (a protobuf `SuperBlockExtra` that no weed version writes; we keep its bytes).

use crate::error::{array_prefix, prefix};
use crate::{FormatError, ReplicaPlacement, Ttl, Version};

/// Size of the fixed part of the superblock.
pub const SUPER_BLOCK_SIZE: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperBlock {
    pub version: Version,
    pub replica_placement: ReplicaPlacement,
    pub ttl: Ttl,
    /// Incremented by each compaction (vacuum).
    pub compaction_revision: u16,
    /// Raw `SuperBlockExtra` bytes (v2/v3 only); empty in every file weed writes.
    pub extra: Vec<u8>,
}

impl SuperBlock {
    /// A superblock for a new volume of the current version (3).
    pub fn new(replica_placement: ReplicaPlacement, ttl: Ttl) -> Self {
        Self { version: Version::V3, replica_placement, ttl, compaction_revision: 0, extra: Vec::new() }
    }

    /// Parses a superblock from the start of a `.dat`. `bytes` must hold the extra too
    /// when its size is non-zero; [`SuperBlock::extra_len`] tells how much that is.
    pub fn parse(bytes: &[u8]) -> Result<Self, FormatError> {
        let fixed: &[u8; SUPER_BLOCK_SIZE] = array_prefix(bytes, "superblock")?;
        let version = Version::from_byte(fixed[0])?;
        let extra_len = Self::extra_len(fixed)?;
        let extra =
            prefix(bytes, SUPER_BLOCK_SIZE + extra_len, "superblock extra")?[SUPER_BLOCK_SIZE..].to_vec();
        Ok(Self {
            version,
            replica_placement: ReplicaPlacement::from_byte(fixed[1])?,
            ttl: Ttl::from_bytes([fixed[2], fixed[3]])?,
            compaction_revision: u16::from_be_bytes([fixed[4], fixed[5]]),
            extra,
        })
    }

    /// How many extra bytes follow the fixed 8 (always 0 for version 1).
    pub fn extra_len(fixed: &[u8; SUPER_BLOCK_SIZE]) -> Result<usize, FormatError> {
        Ok(match Version::from_byte(fixed[0])? {
            Version::V1 => 0,
            Version::V2 | Version::V3 => usize::from(u16::from_be_bytes([fixed[6], fixed[7]])),
        })
    }

    /// Where the first needle starts.
    pub fn block_size(&self) -> usize {
        SUPER_BLOCK_SIZE + self.extra.len()
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FormatError> {
        let extra_len = match self.version {
            Version::V1 if !self.extra.is_empty() => {
                return Err(FormatError::FieldTooLong {
                    field: "v1 superblock extra",
                    len: self.extra.len(),
                    max: 0,
                });
            }
            _ => u16::try_from(self.extra.len()).map_err(|_| FormatError::FieldTooLong {
                field: "superblock extra",
                len: self.extra.len(),
                max: usize::from(u16::MAX),
            })?,
        };
        let mut out = Vec::with_capacity(self.block_size());
        out.push(self.version as u8);
        out.push(self.replica_placement.to_byte());
        out.extend_from_slice(&self.ttl.to_bytes());
        out.extend_from_slice(&self.compaction_revision.to_be_bytes());
        out.extend_from_slice(&extra_len.to_be_bytes());
        out.extend_from_slice(&self.extra);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_superblocks() {
        let sb = SuperBlock::parse(&[3, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(sb, SuperBlock::new(ReplicaPlacement::default(), Ttl::EMPTY));
        assert_eq!(sb.block_size(), 8);
        // weed 4.48, volume created for ttl=5d
        let sb = SuperBlock::parse(&[3, 0, 5, 3, 0, 0, 0, 0]).unwrap();
        assert_eq!(sb.ttl.to_string(), "5d");
        // weed/storage/test_files/empty_volume.dat: replication 002
        let sb = SuperBlock::parse(&[3, 2, 0, 0, 0, 7, 0, 0]).unwrap();
        assert_eq!(sb.replica_placement.to_string(), "002");
        assert_eq!(sb.compaction_revision, 7);
        assert_eq!(sb.to_bytes().unwrap(), vec![3, 2, 0, 0, 0, 7, 0, 0]);
    }

    #[test]
    fn extra_round_trips_and_truncation_is_an_error() {
        let bytes = [2, 0, 0, 0, 0, 1, 0, 3, 0xaa, 0xbb, 0xcc];
        let sb = SuperBlock::parse(&bytes).unwrap();
        assert_eq!(sb.extra, vec![0xaa, 0xbb, 0xcc]);
        assert_eq!(sb.block_size(), 11);
        assert_eq!(sb.to_bytes().unwrap(), bytes.to_vec());
        assert!(matches!(SuperBlock::parse(&bytes[..10]), Err(FormatError::Truncated { .. })));
        assert_eq!(SuperBlock::parse(&[4, 0, 0, 0, 0, 0, 0, 0]), Err(FormatError::UnsupportedVersion(4)));
        // v1 has no extra: bytes 6-7 are ignored.
        assert_eq!(SuperBlock::parse(&[1, 0, 0, 0, 0, 0, 0, 9]).unwrap().block_size(), 8);
    }
}
