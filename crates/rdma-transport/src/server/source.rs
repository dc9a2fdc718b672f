//! What the control plane needs from the storage engine: where a needle's record is,
//! checked as an HTTP GET checks it (cookie, deletion, TTL). The volume server
//! implements [`NeedleSource`]; this crate does not depend on it.

use std::fs::File;
use std::sync::Arc;

use needle::{Cookie, NeedleId, Version, VolumeId};

/// A volume's open `.dat`: the very file the volume reads and appends, so a location
/// always maps into the file it was taken from, even when a vacuum commit has since
/// put another file under the same name.
pub trait DatFile: Send + Sync + 'static {
    /// The open `.dat` (opened read-write: registering a mapping of it needs that).
    fn dat(&self) -> &File;
    /// How many bytes of the `.dat` hold complete records. Registrations never reach
    /// past the page holding this end, so a failed append rolled back by truncation
    /// never cuts a registered page off the file.
    fn committed_len(&self) -> u64;
}

/// Where a live needle's record is.
#[derive(Clone)]
pub struct SourceLocation {
    /// The volume's open `.dat`.
    pub dat: Arc<dyn DatFile>,
    /// The volume's collection (empty for the default one): volume-read grants name it.
    pub collection: String,
    /// Offset of the record (its header) in the `.dat`.
    pub offset: u64,
    /// The header's Size (body length).
    pub size: u32,
    pub version: Version,
    /// Bumped by every compaction: regions of an older revision are stale.
    pub compaction_revision: u16,
}

impl std::fmt::Debug for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLocation")
            .field("collection", &self.collection)
            .field("offset", &self.offset)
            .field("size", &self.size)
            .field("version", &self.version)
            .field("compaction_revision", &self.compaction_revision)
            .finish_non_exhaustive()
    }
}

impl SourceLocation {
    /// Bytes a READ fetches: header, body, checksum and (v3) timestamp; not the padding.
    pub fn read_size(&self) -> u64 {
        self.version.unpadded_record_size(self.size) as u64
    }
}

/// The answer to "where is needle N of volume V, with cookie C".
#[derive(Clone, Debug)]
pub enum Lookup {
    Found(SourceLocation),
    NotFound,
    Deleted,
    /// The stored cookie is another: HTTP answers 404, and so does Locate.
    WrongCookie,
    /// Past its TTL: HTTP answers 404, and so does Locate.
    Expired,
    VolumeNotHere,
    /// The lookup itself failed (an I/O error in the needle map, say).
    Failed(String),
}

/// Told of each `.idx` entry appended to a volume (its position in the `.idx` and its
/// bytes), before the write is acknowledged, in `.idx` order.
pub type IndexAppendFn = Arc<dyn Fn(u64, &[u8]) + Send + Sync>;

/// A volume's `.idx` as it was when [`NeedleSource::open_index`] installed its
/// observer; every later entry goes to the observer.
pub struct IndexSource {
    pub dat: Arc<dyn DatFile>,
    pub collection: String,
    pub version: Version,
    /// Bytes per `.idx` entry (16 with 4-byte offsets, 17 with 5).
    pub entry_size: usize,
    pub compaction_revision: u16,
    /// The `.idx` bytes up to where the observer takes over.
    pub entries: Vec<u8>,
}

/// Locates needles without reading their data: the record's header and metadata are
/// read to check the cookie and the TTL against the record itself. Called from
/// blocking threads.
pub trait NeedleSource: Send + Sync + 'static {
    fn locate(&self, volume: VolumeId, needle: NeedleId, cookie: Cookie) -> Lookup;

    /// Starts telling `on_append` about every `.idx` entry `volume` appends, and returns
    /// its `.idx` until then: the one-sided index's start ([`super::index`]). The
    /// observer lasts until the volume is retired or [`NeedleSource::close_index`].
    fn open_index(&self, volume: VolumeId, on_append: IndexAppendFn) -> Result<IndexSource, String>;

    /// Stops the observer [`NeedleSource::open_index`] installed.
    fn close_index(&self, volume: VolumeId);
}
