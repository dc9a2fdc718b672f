//! What the control plane needs from the storage engine: where a needle's record is.
//! The volume server implements [`NeedleSource`]; this crate does not depend on it.

use std::path::PathBuf;

use needle::{NeedleId, Version, VolumeId};

/// Where a live needle's record is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLocation {
    /// The volume's `.dat` file.
    pub dat_path: PathBuf,
    /// Offset of the record (its header) in the `.dat`.
    pub offset: u64,
    /// The header's Size (body length).
    pub size: u32,
    pub version: Version,
    /// Bumped by every compaction: regions of an older revision are stale.
    pub compaction_revision: u16,
}

impl SourceLocation {
    /// Bytes a READ fetches: header, body, checksum and (v3) timestamp; not the padding.
    pub fn read_size(&self) -> u64 {
        self.version.unpadded_record_size(self.size) as u64
    }
}

/// The answer to "where is needle N of volume V".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(SourceLocation),
    NotFound,
    Deleted,
    VolumeNotHere,
    /// The lookup itself failed (an I/O error in the needle map, say).
    Failed(String),
}

/// Locates needles without reading them. Called from blocking threads.
pub trait NeedleSource: Send + Sync + 'static {
    fn locate(&self, volume: VolumeId, needle: NeedleId) -> Lookup;
}
