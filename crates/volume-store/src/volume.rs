//! One volume: `<collection_><vid>.dat` (superblock + needle records), `.idx` (one
//! entry per write and delete) and `.vif`, plus its needle map.
//!
//! Writes are serialized by the volume's write mutex: the record goes to `.dat`, then
//! its entry to `.idx` (fsynced when `--fsync`), then into the map, and only then is
//! the write acknowledged. Reads take no volume lock: a map lookup, then one
//! positioned read (`pread`) of the record, which the map only names once it is
//! completely written (or, for a large needle sent as a stream, preads of its metadata
//! and then of its data, piece by piece: [`Volume::read_meta_at`], [`Volume::read_data`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::UNIX_EPOCH;

use needle::idx::TOMBSTONE_SIZE;
use needle::{
    Cookie, DataSpan, FormatError, HEADER_SIZE, IdxEntry, Needle, NeedleHeader, NeedleId, NeedleMeta,
    OffsetWidth, ReplicaPlacement, SUPER_BLOCK_SIZE, SuperBlock, Ttl, Version, VolumeId,
};

use crate::clock::{now_ns, now_seconds};
use crate::compaction;
use crate::error::{Error, Result};
use crate::needle_map::{MapStats, MemoryMap, NeedleMap, NeedleValue, RocksMap};
use crate::recovery::{self, LoadReport};
use crate::vif::VolumeInfo;

/// Which needle map a volume keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    /// A hash map rebuilt from `.idx` at load.
    Memory,
    /// RocksDB in `<volume>.rdb`, persisted with an `.idx` watermark.
    Rocksdb,
}

/// Settings shared by every volume of a store.
#[derive(Clone, Copy, Debug)]
pub struct VolumeOptions {
    pub width: OffsetWidth,
    pub index: IndexKind,
    /// fsync `.dat` and `.idx` before acknowledging a write.
    pub fsync: bool,
}

/// Where a needle's record lies in the `.dat`: what a one-sided RDMA READ (or any
/// reader of the file) needs, without reading the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedleLocation {
    /// Byte offset of the record (its header) in the `.dat`.
    pub offset: u64,
    /// The header's `Size` (body length).
    pub size: u32,
    /// Record format, needed to decode it.
    pub version: Version,
}

impl NeedleLocation {
    /// Bytes the record occupies, padding included.
    pub fn record_size(&self) -> u64 {
        self.version.record_size(self.size)
    }
}

/// A needle read and verified (header, CRC, cookie, TTL): the record's bytes.
#[derive(Debug)]
pub struct StoredNeedle {
    record: Vec<u8>,
    version: Version,
    /// The raw CRC32-C of the data: the ETag.
    pub crc: u32,
}

impl StoredNeedle {
    /// The decoded needle, borrowing from the record.
    pub fn needle(&self) -> Needle<'_> {
        // The same bytes decoded successfully when the needle was read.
        Needle::parse(&self.record, self.version).expect("record was verified at read time")
    }

    /// The record's bytes and where the data lies in them, so a reply can send the
    /// data without copying it.
    pub fn into_record(self) -> (Vec<u8>, std::ops::Range<usize>) {
        let data = self.needle().data;
        // An empty slice need not point into the record at all.
        let start = if data.is_empty() { 0 } else { data.as_ptr() as usize - self.record.as_ptr() as usize };
        let range = start..start + data.len();
        (self.record, range)
    }
}

/// A needle whose metadata was read and checked (header, cookie, TTL) while its data
/// stays in the `.dat`, for a reader that sends the data in pieces
/// ([`Volume::read_data`]). Its CRC is not checked here: only a reader of all the data can.
#[derive(Debug)]
pub struct StoredMeta {
    span: DataSpan,
    tail: Vec<u8>,
    /// Where the data starts in the `.dat`.
    pub data_at: u64,
}

impl StoredMeta {
    /// The needle's metadata, borrowing from the tail read.
    pub fn meta(&self) -> NeedleMeta<'_> {
        // The same bytes parsed successfully when the metadata was read.
        NeedleMeta::parse(&self.span, &self.tail).expect("tail was parsed at read time")
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// A record was appended.
    Written(NeedleLocation),
    /// The same key, cookie and bytes were already stored: nothing appended.
    Unchanged,
}

/// See [`Volume::file_status`].
#[derive(Clone, Copy, Debug)]
pub struct FileStatus {
    pub dat_size: u64,
    pub idx_size: u64,
    /// AppendAtNs of the last record below `dat_size` (0 before version 3).
    pub last_append_ns: u64,
    pub modified_at_second: u64,
    pub file_count: u64,
}

/// A snapshot of a volume for `/status` and assign.
#[derive(Clone, Debug)]
pub struct VolumeStatus {
    pub id: VolumeId,
    pub collection: String,
    pub version: Version,
    pub replica_placement: ReplicaPlacement,
    pub ttl: Ttl,
    pub compaction_revision: u16,
    pub read_only: bool,
    pub dat_size: u64,
    pub modified_at_second: u64,
    pub stats: MapStats,
}

struct Writer {
    idx: File,
    dat_end: u64,
    idx_end: u64,
    last_append_ns: u64,
    /// Set when this volume's files were replaced (compaction commit) or deleted: a
    /// writer that was waiting for the lock must not append to the old files.
    retired: bool,
    /// Told of every `.idx` entry appended from when it was installed
    /// ([`Volume::observe_index`]).
    index_observer: Option<IndexObserver>,
}

/// Told of each `.idx` entry a write or delete appends: called under the volume's
/// writer lock (so in `.idx` order), after the record and its entry are in the files
/// and before the write is acknowledged. It must be quick and must not touch the volume.
pub type IndexObserver = Arc<dyn Fn(&IndexAppend<'_>) + Send + Sync>;

/// One appended `.idx` entry, as an [`IndexObserver`] sees it.
#[derive(Debug)]
pub struct IndexAppend<'a> {
    /// Where the entry starts in the `.idx`.
    pub position: u64,
    /// The entry's bytes, as in the file.
    pub entry: &'a [u8],
    pub needle: NeedleId,
    /// The `.dat`'s committed length after this write.
    pub dat_end: u64,
}

/// What [`Volume::observe_index`] returns: the `.idx` up to where the observer takes over.
pub struct IndexSnapshot {
    /// The `.idx` bytes below `len`: complete entries, each naming a complete record.
    pub entries: Vec<u8>,
    pub width: OffsetWidth,
}

pub struct Volume {
    id: VolumeId,
    collection: String,
    dat_path: PathBuf,
    idx_path: PathBuf,
    super_block: SuperBlock,
    options: VolumeOptions,
    dat: File,
    map: Box<dyn NeedleMap>,
    writer: Mutex<Writer>,
    /// Marked read-only (by the master or an operator, or in the `.vif`).
    read_only: AtomicBool,
    /// Its directory's free space is below the minimum (see [`crate::disk_space`]).
    disk_space_low: Arc<AtomicBool>,
    modified_at: AtomicU64,
    dat_size: AtomicU64,
    load_report: LoadReport,
    /// A compaction waiting for commit or cleanup; held while compacting.
    compaction: Mutex<Option<compaction::Compacted>>,
    /// With `--fsync`: the group commit writers wait on before they are acknowledged.
    durability: Option<Durability>,
}

/// Group commit (`--fsync`): a writer appends under the writer lock, lets it go, then
/// waits until `.dat` and `.idx` are synced past its record. One writer at a time
/// syncs, for every record appended so far, while the others wait for it: concurrent
/// writers share one fdatasync pair instead of each holding the writer lock through
/// its own (which serialized every write behind a disk flush).
struct Durability {
    /// A second handle on the `.idx` (the writer's is under the writer lock).
    idx: File,
    state: Mutex<SyncState>,
    synced: Condvar,
}

struct SyncState {
    /// `.dat` bytes known to be on disk, with their `.idx` entries.
    synced_to: u64,
    /// Someone is syncing right now; the others wait on `synced`.
    syncing: bool,
    /// An fdatasync failed. The kernel may have dropped the dirty pages it could not
    /// write and report success next time, so nothing later is acknowledged either.
    failed: bool,
}

/// `<collection>_<vid>` or `<vid>`: the file name of a volume without extension.
pub fn base_name(collection: &str, id: VolumeId) -> String {
    if collection.is_empty() { id.to_string() } else { format!("{collection}_{id}") }
}

/// `<dir>/<collection_><vid>.dat`; the volume's other files replace its extension. (Not
/// `with_extension` on the base name: a collection may hold dots, as `a.b_16.dat`.)
fn dat_path(dir: &Path, collection: &str, id: VolumeId) -> PathBuf {
    dir.join(format!("{}.dat", base_name(collection, id)))
}

/// Removes the RocksDB needle map (`<base>.rdb`) of volume `id` in `dir`, for files
/// that did not build it: a new volume, or one copied in. A crash while deleting an
/// earlier volume of that id can leave its map behind, whose watermark and revision
/// could pass for the new files'.
pub fn discard_stale_map(dir: &Path, collection: &str, id: VolumeId) -> Result<()> {
    let map = dat_path(dir, collection, id).with_extension("rdb");
    match std::fs::remove_dir_all(&map) {
        Ok(()) => {
            tracing::warn!(volume = id.0, map = %map.display(), "removed a needle map no volume owned");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&map, e)),
    }
}

/// Refuses a collection name that would not stay one file name in the volume's
/// directory: `base_name` puts it into every file name of the volume. (weed 4.48 does
/// not check, and `/dir/assign?collection=../../x` writes outside its directory; later
/// SeaweedFS refuses such names too.)
pub fn check_collection(collection: &str) -> Result<()> {
    if matches!(collection, "." | "..") || collection.contains(['/', '\\', '\0']) {
        return Err(Error::BadCollection(collection.to_owned()));
    }
    Ok(())
}

/// Splits a `.dat` file name into (collection, volume id), if it names a volume.
pub fn parse_dat_name(file_name: &str) -> Option<(String, VolumeId)> {
    let base = file_name.strip_suffix(".dat")?;
    let (collection, vid) = match base.rsplit_once('_') {
        Some((collection, vid)) => (collection, vid),
        None => ("", base),
    };
    Some((collection.to_owned(), vid.parse().ok()?))
}

/// A volume's `.dat` (which must exist) and `.idx` (created when missing), both
/// read-write.
fn open_dat_and_idx(dat_path: &Path, idx_path: &Path) -> Result<(File, File)> {
    let dat = OpenOptions::new().read(true).write(true).open(dat_path).map_err(|e| Error::io(dat_path, e))?;
    let idx = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(idx_path)
        .map_err(|e| Error::io(idx_path, e))?;
    Ok((dat, idx))
}

/// The needle map `index` names; a RocksDB one lives in `<base>.rdb` and belongs to
/// the `.dat` of `compaction_revision`.
fn open_map(index: IndexKind, dat_path: &Path, compaction_revision: u16) -> Result<Box<dyn NeedleMap>> {
    Ok(match index {
        IndexKind::Memory => Box::new(MemoryMap::new()),
        IndexKind::Rocksdb => Box::new(RocksMap::open(&dat_path.with_extension("rdb"), compaction_revision)?),
    })
}

/// The `.dat`'s modification time in Unix seconds (0 when the file system has none).
fn modified_seconds(dat: &File) -> u64 {
    dat.metadata()
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

impl Volume {
    /// Creates a new, empty volume in `dir` (superblock, empty `.idx`, `.vif`).
    pub fn create(
        dir: &Path,
        collection: &str,
        id: VolumeId,
        replica_placement: ReplicaPlacement,
        ttl: Ttl,
        options: VolumeOptions,
    ) -> Result<Self> {
        check_collection(collection)?;
        let dat_path = dat_path(dir, collection, id);
        if dat_path.exists() {
            return Err(Error::VolumeExists(id));
        }
        discard_stale_map(dir, collection, id)?;
        let super_block = SuperBlock::new(replica_placement, ttl);
        std::fs::write(&dat_path, super_block.to_bytes()?).map_err(|e| Error::io(&dat_path, e))?;
        let idx_path = dat_path.with_extension("idx");
        File::create(&idx_path).map_err(|e| Error::io(&idx_path, e))?;
        let expire_at = if ttl.is_empty() { 0 } else { (now_seconds() + ttl.seconds()) as i64 };
        VolumeInfo::new(Version::CURRENT as u32, options.width, expire_at)
            .save(&dat_path.with_extension("vif"))?;
        Self::load(dir, collection, id, options)
    }

    /// Opens an existing volume, checking and repairing it (see [`crate::recovery`]),
    /// in weed's order (weed/storage/volume_loading.go): an interrupted vacuum commit
    /// finished, `.vif`, `.dat` and its superblock, `.idx`, the map, then the check.
    pub fn load(dir: &Path, collection: &str, id: VolumeId, options: VolumeOptions) -> Result<Self> {
        let dat_path = dat_path(dir, collection, id);
        let idx_path = dat_path.with_extension("idx");
        let vif_path = dat_path.with_extension("vif");
        if compaction::finish_interrupted_commit(&dat_path, &idx_path)? {
            tracing::warn!(volume = id.0, "finished a vacuum commit that a crash interrupted");
        }
        let info = VolumeInfo::load(&vif_path)?;
        if let Some(info) = &info {
            info.check_width(&vif_path, options.width)?;
        }
        let (dat, idx) = open_dat_and_idx(&dat_path, &idx_path)?;
        let super_block = read_super_block(&dat, &dat_path)?;
        let map = open_map(options.index, &dat_path, super_block.compaction_revision)?;
        let files = recovery::Files {
            dat: &dat,
            dat_path: &dat_path,
            idx: &idx,
            idx_path: &idx_path,
            data_start: super_block.block_size() as u64,
            version: super_block.version,
            width: options.width,
        };
        let recovered = recovery::recover(&files, map.as_ref())?;
        if recovered.report.repaired() {
            tracing::warn!(volume = id.0, report = ?recovered.report, "volume repaired at load");
        }
        if info.is_none() {
            VolumeInfo::new(super_block.version as u32, options.width, 0).save(&vif_path)?;
        }
        let modified_at = modified_seconds(&dat);
        let durability = match options.fsync {
            true => Some(Durability {
                idx: idx.try_clone().map_err(|e| Error::io(&idx_path, e))?,
                state: Mutex::new(SyncState { synced_to: recovered.dat_end, syncing: false, failed: false }),
                synced: Condvar::new(),
            }),
            false => None,
        };
        Ok(Self {
            id,
            collection: collection.to_owned(),
            dat_path,
            idx_path,
            super_block,
            options,
            dat,
            map,
            writer: Mutex::new(Writer {
                idx,
                dat_end: recovered.dat_end,
                idx_end: recovered.idx_end,
                last_append_ns: recovered.last_append_ns,
                retired: false,
                index_observer: None,
            }),
            read_only: AtomicBool::new(info.is_some_and(|i| i.read_only)),
            disk_space_low: Arc::default(),
            modified_at: AtomicU64::new(modified_at),
            dat_size: AtomicU64::new(recovered.dat_end),
            load_report: recovered.report,
            compaction: Mutex::new(None),
            durability,
        })
    }

    pub fn id(&self) -> VolumeId {
        self.id
    }

    pub fn collection(&self) -> &str {
        &self.collection
    }

    pub fn version(&self) -> Version {
        self.super_block.version
    }

    pub fn ttl(&self) -> Ttl {
        self.super_block.ttl
    }

    /// Bumped by every vacuum commit: records are elsewhere in a file of another revision.
    pub fn compaction_revision(&self) -> u16 {
        self.super_block.compaction_revision
    }

    pub fn replica_placement(&self) -> ReplicaPlacement {
        self.super_block.replica_placement
    }

    pub fn dat_path(&self) -> &Path {
        &self.dat_path
    }

    /// The open `.dat` this volume reads and appends (the RDMA read path maps it, so a
    /// location never lands in another file put under the same name by a vacuum).
    pub fn dat_file(&self) -> &File {
        &self.dat
    }

    pub fn idx_path(&self) -> &Path {
        &self.idx_path
    }

    /// What loading found and repaired (and how many `.idx` entries it replayed).
    pub fn load_report(&self) -> LoadReport {
        self.load_report
    }

    /// Shares its directory's low-free-space flag (the store's); until then the
    /// volume never counts its disk as low.
    pub fn on_disk(mut self, disk_space_low: Arc<AtomicBool>) -> Self {
        self.disk_space_low = disk_space_low;
        self
    }

    /// Whether the volume takes no writes: marked read-only, or its disk is low on free
    /// space. This is what the master and `/status` are told (weed's `IsReadOnly`).
    pub fn is_read_only(&self) -> bool {
        self.is_marked_read_only() || self.disk_space_low.load(Ordering::Relaxed)
    }

    /// Marked read-only, which also stops deletes; a low disk does not (as in weed:
    /// deletes are how space is won back, through a vacuum).
    pub fn is_marked_read_only(&self) -> bool {
        self.read_only.load(Ordering::Relaxed)
    }

    /// Bytes in the `.dat` (superblock included).
    pub fn dat_size(&self) -> u64 {
        self.dat_size.load(Ordering::Relaxed)
    }

    /// A consistent cut of the volume's files, for copying them to another server:
    /// taken under the writer lock, so every `.idx` entry below `idx_size` points at
    /// a record that ends at or below `dat_size`. Appends after the cut only add bytes
    /// past both sizes; the copy's tail catches up with them.
    pub fn file_status(&self) -> FileStatus {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        FileStatus {
            dat_size: writer.dat_end,
            idx_size: writer.idx_end,
            last_append_ns: writer.last_append_ns,
            modified_at_second: self.modified_at.load(Ordering::Relaxed),
            file_count: self.map.stats().file_count,
        }
    }

    /// Installs `observer` (replacing any earlier one) and returns the `.idx` as it was
    /// at that moment: every entry is then either in the snapshot or told to the
    /// observer (an entry appended while the snapshot is read may be both, with the
    /// same bytes at the same position). The file is read outside the writer lock,
    /// through a handle on the open `.idx`, so writers wait only for the install.
    pub fn observe_index(&self, observer: IndexObserver) -> Result<IndexSnapshot> {
        let (idx, len) = {
            let mut writer = self.lock_writer()?;
            let idx = writer.idx.try_clone().map_err(|e| Error::io(&self.idx_path, e))?;
            writer.index_observer = Some(observer);
            (idx, writer.idx_end)
        };
        let len = usize::try_from(len)
            .map_err(|_| Error::io(&self.idx_path, std::io::Error::other("too large")))?;
        let mut entries = vec![0u8; len];
        idx.read_exact_at(&mut entries, 0).map_err(|e| Error::io(&self.idx_path, e))?;
        Ok(IndexSnapshot { entries, width: self.options.width })
    }

    /// Removes the observer [`Volume::observe_index`] installed, if any.
    pub fn stop_observing_index(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).index_observer = None;
    }

    /// Where the first record starts (the end of the superblock).
    pub fn data_start(&self) -> u64 {
        self.super_block.block_size() as u64
    }

    /// The largest needle id this volume has seen.
    pub fn max_key(&self) -> u64 {
        self.map.stats().max_key
    }

    pub fn status(&self) -> VolumeStatus {
        VolumeStatus {
            id: self.id,
            collection: self.collection.clone(),
            version: self.version(),
            replica_placement: self.replica_placement(),
            ttl: self.ttl(),
            compaction_revision: self.compaction_revision(),
            read_only: self.is_read_only(),
            dat_size: self.dat_size(),
            modified_at_second: self.modified_at.load(Ordering::Relaxed),
            stats: self.map.stats(),
        }
    }

    fn location(&self, v: NeedleValue) -> NeedleLocation {
        NeedleLocation { offset: v.offset, size: v.size, version: self.version() }
    }

    fn read_record(&self, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut record = vec![0u8; self.version().unpadded_record_size(size)];
        self.read_data(offset, &mut record)?;
        Ok(record)
    }

    /// Reads needle `id`: map lookup, one positioned read of the record, header check
    /// (id and size must be what the map says), CRC check, cookie check, then TTL
    /// expiry.
    pub fn read(&self, id: NeedleId, cookie: Cookie) -> Result<StoredNeedle> {
        self.read_maybe_deleted(id, cookie, false)
    }

    /// [`Volume::read`], optionally of a deleted needle whose data is still in the
    /// `.dat` (weed's `readDeleted=true`; an empty deleted needle stays unreadable).
    pub fn read_maybe_deleted(
        &self,
        id: NeedleId,
        cookie: Cookie,
        include_deleted: bool,
    ) -> Result<StoredNeedle> {
        self.read_at(id, cookie, self.locate_readable(id, include_deleted)?)
    }

    /// Where the record of needle `id` is, if it can be read: a live needle, or with
    /// `include_deleted` a deleted one whose data is still in the `.dat`. A caller that
    /// needs the record's size before reading it (to choose how to read) looks it up
    /// here once and passes the location to [`Volume::read_at`].
    pub fn locate_readable(&self, id: NeedleId, include_deleted: bool) -> Result<NeedleLocation> {
        let v = self.map.get(id)?.ok_or(Error::NeedleNotFound(id))?;
        if v.deleted && !(include_deleted && v.size > 0) {
            return Err(Error::AlreadyDeleted(id));
        }
        Ok(self.location(v))
    }

    /// Reads and verifies the record of needle `id` at `location`: one positioned read,
    /// then [`Needle::verify`] (header id and size, one CRC pass, which also yields the
    /// ETag's CRC, then the cookie), then TTL expiry.
    pub fn read_at(&self, id: NeedleId, cookie: Cookie, location: NeedleLocation) -> Result<StoredNeedle> {
        let record = self.read_record(location.offset, location.size)?;
        let (needle, crc) =
            Needle::verify(&record, self.version(), id, cookie, location.size).map_err(|e| match e {
                FormatError::CookieMismatch { .. } => Error::CookieMismatch { id },
                source => Error::Corrupt { id, offset: location.offset, source },
            })?;
        if is_expired(&needle) {
            return Err(Error::NeedleNotFound(id));
        }
        Ok(StoredNeedle { record, version: self.version(), crc })
    }

    /// Reads and checks the metadata of needle `id` at `location` without its data: a
    /// positioned read of the header and `DataSize`, then one of the fields after the
    /// data; header check (id and size), cookie check, TTL expiry as in
    /// [`Volume::read_at`], but no CRC check (the caller streams the data and checks it).
    pub fn read_meta_at(&self, id: NeedleId, cookie: Cookie, location: NeedleLocation) -> Result<StoredMeta> {
        let version = self.version();
        let corrupt = |source| Error::Corrupt { id, offset: location.offset, source };
        let mut prefix = [0u8; HEADER_SIZE + 4];
        let prefix = &mut prefix[..DataSpan::prefix_len(version)];
        self.read_data(location.offset, prefix)?;
        NeedleHeader::parse(prefix).and_then(|h| h.expect(id, location.size)).map_err(corrupt)?;
        let span = DataSpan::parse(prefix, version).map_err(corrupt)?;
        let mut tail = vec![0u8; span.tail_len()];
        self.read_data(location.offset + span.tail_offset(), &mut tail)?;
        let meta = NeedleMeta::parse(&span, &tail).map_err(corrupt)?;
        if meta.cookie != cookie {
            return Err(Error::CookieMismatch { id });
        }
        if meta.is_expired_at(now_ns()) {
            return Err(Error::NeedleNotFound(id));
        }
        Ok(StoredMeta { data_at: location.offset + span.data_offset, span, tail })
    }

    /// Fills `buf` from the `.dat` at offset `at` (one positioned read); a file that ends
    /// first is an I/O error.
    pub fn read_data(&self, at: u64, buf: &mut [u8]) -> Result<()> {
        self.dat.read_exact_at(buf, at).map_err(|e| Error::io(&self.dat_path, e))
    }

    /// Appends `needle` (its `append_at_ns` is set here). Identical rewrites of a
    /// live needle append nothing; a rewrite with another cookie is refused.
    pub fn write(&self, needle: &Needle<'_>) -> Result<WriteOutcome> {
        if self.is_read_only() {
            return Err(Error::ReadOnly(self.id));
        }
        let mut needle = *needle;
        if !needle.flags.contains(needle::Flags::HAS_TTL) && !self.ttl().is_empty() {
            needle = needle.with_ttl(self.ttl());
        }
        let version = self.version();
        let mut record = needle.to_bytes(version)?;
        let size = needle.body_size(version)?;
        let mut writer = self.lock_writer()?;
        if let Some(existing) = self.map.get(needle.id)? {
            let old = self.read_record(existing.offset, existing.size)?;
            let old = Needle::parse(&old, version).map_err(|source| Error::Corrupt {
                id: needle.id,
                offset: existing.offset,
                source,
            })?;
            if old.cookie != needle.cookie {
                return Err(Error::WriteCookieMismatch { cookie: needle.cookie.0 });
            }
            // Same bytes, and the old record's checksum intact (`needle.checksum` is
            // the CRC of these bytes): weed's "same CRC and same data".
            if !existing.deleted
                && self.ttl().is_empty()
                && old.data == needle.data
                && needle::crc::stored_checksum_matches(old.checksum, needle.checksum)
            {
                return Ok(WriteOutcome::Unchanged);
            }
        }
        let append_at_ns = now_ns().max(writer.last_append_ns + 1);
        if version == Version::V3 {
            // Patch the timestamp into the encoded record (encoded outside the lock).
            let at = HEADER_SIZE + size as usize + needle::CHECKSUM_SIZE;
            record[at..at + 8].copy_from_slice(&append_at_ns.to_be_bytes());
        }
        let offset = self.append(&mut writer, &record, needle.id, size)?;
        writer.last_append_ns = append_at_ns;
        drop(writer);
        self.commit_map()?;
        self.wait_durable(offset + record.len() as u64)?;
        Ok(WriteOutcome::Written(self.location(NeedleValue { offset, size, deleted: false })))
    }

    /// Deletes needle `id` if `cookie` matches: appends a tombstone record and a
    /// tombstone `.idx` entry. Returns the deleted needle's header `Size`.
    pub fn delete(&self, id: NeedleId, cookie: Cookie) -> Result<u32> {
        self.delete_checked(id, Some(cookie))
    }

    /// [`Volume::delete`] with the cookie check optional (`None`: weed's
    /// `skip_cookie_check`, used by the filer's batch deletes).
    pub fn delete_checked(&self, id: NeedleId, cookie: Option<Cookie>) -> Result<u32> {
        let version = self.version();
        let mut writer = self.lock_writer()?;
        let v = self.map.get(id)?.filter(|v| !v.deleted).ok_or(Error::NeedleNotFound(id))?;
        let old = self.read_record(v.offset, v.size)?;
        let old =
            Needle::parse(&old, version).map_err(|source| Error::Corrupt { id, offset: v.offset, source })?;
        if cookie.is_some_and(|cookie| old.cookie != cookie) {
            return Err(Error::CookieMismatch { id });
        }
        if self.is_marked_read_only() {
            return Err(Error::ReadOnly(self.id));
        }
        let append_at_ns = now_ns().max(writer.last_append_ns + 1);
        let raw_crc = needle::crc::crc32c(old.data);
        let record = Needle::tombstone(id, old.cookie, raw_crc, append_at_ns).to_bytes(version)?;
        let offset = self.append(&mut writer, &record, id, TOMBSTONE_SIZE)?;
        writer.last_append_ns = append_at_ns;
        drop(writer);
        self.commit_map()?;
        self.wait_durable(offset + record.len() as u64)?;
        Ok(v.size)
    }

    /// Outside the writer lock: hands the needle map what this writer, and those that
    /// appended meanwhile, applied (one batch for all of them; see
    /// [`NeedleMap::commit`]).
    fn commit_map(&self) -> Result<()> {
        self.map.commit().inspect_err(|_| {
            // As when an apply fails: the files hold the write, the map's storage may
            // not; stop writing until a restart replays `.idx` into the map.
            self.read_only.store(true, Ordering::Relaxed);
        })
    }

    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, Writer>> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if writer.retired {
            return Err(Error::VolumeRetired(self.id));
        }
        Ok(writer)
    }

    /// Marks the volume read-only (`true`) or writable; `persist` also records it in
    /// the `.vif`, so it survives a restart (marking writable always does).
    pub fn set_read_only(&self, read_only: bool, persist: bool) -> Result<()> {
        let _writer = self.lock_writer()?;
        if persist || !read_only {
            let vif = self.dat_path.with_extension("vif");
            let mut info = VolumeInfo::load(&vif)?
                .unwrap_or_else(|| VolumeInfo::new(self.version() as u32, self.options.width, 0));
            if info.read_only != read_only {
                info.read_only = read_only;
                info.save(&vif)?;
            }
        }
        self.read_only.store(read_only, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes of deleted or overwritten needles over bytes of all needles written:
    /// what weed's vacuum check compares with its garbage threshold.
    pub fn garbage_ratio(&self) -> f64 {
        let stats = self.map.stats();
        compaction::garbage_ratio(stats.deletion_bytes, stats.file_bytes)
    }

    fn compaction_source(&self) -> compaction::Source<'_> {
        compaction::Source {
            id: self.id,
            dat: &self.dat,
            dat_path: &self.dat_path,
            idx_path: &self.idx_path,
            super_block: &self.super_block,
            width: self.options.width,
        }
    }

    /// Vacuum step 1: writes `.cpd`/`.cpx` with the records live now, while writes go
    /// on. Returns the compacted size.
    pub fn compact(&self) -> Result<u64> {
        let snapshot = {
            let writer = self.lock_writer()?;
            compaction::Snapshot { dat_end: writer.dat_end, idx_end: writer.idx_end }
        };
        let mut pending = self.compaction.lock().unwrap_or_else(|e| e.into_inner());
        *pending = None;
        let done = compaction::compact(&self.compaction_source(), snapshot)?;
        *pending = Some(done);
        Ok(done.dat_end)
    }

    /// Vacuum step 2: under the write lock, appends what was written since
    /// [`Volume::compact`] to the new files and renames them over the old ones. This
    /// `Volume` is then retired (its open `.dat` still serves reads already under way;
    /// writes fail with [`Error::VolumeRetired`]), and `then` runs, still under the
    /// lock: the store loads the new files as a new `Volume` and installs it there
    /// (see `Store::commit_compaction`), so a writer that waited for the lock finds
    /// the new volume when it looks again.
    pub fn commit_compaction<T>(&self, then: impl FnOnce() -> Result<T>) -> Result<T> {
        // Held to the end: no compaction starts over the files being committed.
        let mut pending = self.compaction.lock().unwrap_or_else(|e| e.into_inner());
        let done = pending.take().ok_or(Error::NotCompacted(self.id))?;
        let source = self.compaction_source();
        // Most of the catch-up without the write lock (writes go on), then under it only
        // what was written meanwhile.
        let (dat_end, idx_end) = {
            let writer = self.lock_writer()?;
            (writer.dat_end, writer.idx_end)
        };
        let done = compaction::catch_up(&source, &done, dat_end, idx_end)?;
        let mut writer = self.lock_writer()?;
        compaction::catch_up(&source, &done, writer.dat_end, writer.idx_end)?;
        let installed = compaction::install(&self.dat_path, &self.idx_path);
        if installed.is_err() && compaction::commit_marker_path(&self.dat_path).exists() {
            // The files on disk may be half swapped: this volume's open files are no
            // longer the volume. The next load (restart or remount) finishes the commit.
            tracing::error!(
                volume = self.id.0,
                "vacuum commit stopped halfway: no writes until the volume is loaded again"
            );
            self.read_only.store(true, Ordering::Relaxed);
            writer.retired = true;
        }
        installed?;
        writer.retired = true;
        then()
    }

    /// Vacuum step 3 (when not committing): removes `.cpd`/`.cpx`.
    pub fn cleanup_compaction(&self) -> Result<()> {
        let mut pending = self.compaction.lock().unwrap_or_else(|e| e.into_inner());
        *pending = None;
        compaction::remove_files(&self.dat_path)
    }

    /// Stops all writes to this volume (it is being deleted): a writer waiting for
    /// the lock gets [`Error::VolumeRetired`].
    pub fn stop_writes(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).retired = true;
    }

    /// The files this volume consists of, in the order to delete them: leftovers of a
    /// compaction, `.vif`, `.idx`, and the `.dat` last (its name is what makes a volume,
    /// so a crash part way leaves a volume that loads, or nothing that names one).
    pub fn files(&self) -> Vec<PathBuf> {
        ["cpc", "cpd", "cpx", "vif", "idx", "dat"]
            .iter()
            .map(|ext| self.dat_path.with_extension(ext))
            .collect()
    }

    /// Writes out what the needle map holds only in memory (see [`NeedleMap::close`]):
    /// at a clean stop, when writes have ended, so the next load replays none of the
    /// `.idx`.
    pub fn close_map(&self) {
        self.map.close();
    }

    /// The RocksDB map directory (`--index rocksdb`), if the volume has one.
    pub fn map_dir(&self) -> Option<PathBuf> {
        (self.options.index == IndexKind::Rocksdb).then(|| self.dat_path.with_extension("rdb"))
    }

    /// Appends one record and its `.idx` entry, then updates the map. On failure both
    /// files are cut back to where they were, so no partial record stays behind.
    fn append(&self, writer: &mut Writer, record: &[u8], id: NeedleId, idx_size: u32) -> Result<u64> {
        let offset = writer.dat_end;
        let entry = IdxEntry::new(id, offset, idx_size)?;
        let entry_bytes = entry.to_bytes(self.options.width).map_err(|_| Error::VolumeFull {
            volume: self.id,
            end: offset,
            needed: record.len() as u64,
            limit: self.options.width.max_byte_offset(),
        })?;
        let idx_end = writer.idx_end;
        let rollback = |writer: &Writer| {
            let _ = self.dat.set_len(offset);
            let _ = writer.idx.set_len(idx_end);
        };
        let result = (|| {
            self.dat.write_all_at(record, offset).map_err(|e| Error::io(&self.dat_path, e))?;
            writer.idx.write_all_at(&entry_bytes, idx_end).map_err(|e| Error::io(&self.idx_path, e))
        })();
        if let Err(e) = result {
            rollback(writer);
            return Err(e);
        }
        let new_idx_end = idx_end + entry_bytes.len() as u64;
        if let Err(e) = self.map.apply(&entry, new_idx_end) {
            // The files hold the write, the map does not: stop writing until a restart
            // replays `.idx` into the map.
            self.read_only.store(true, Ordering::Relaxed);
            return Err(e);
        }
        writer.dat_end = offset + record.len() as u64;
        writer.idx_end = new_idx_end;
        // Release: a syncer that reads this end also sees the writes before it.
        self.dat_size.store(writer.dat_end, Ordering::Release);
        if let Some(observer) = &writer.index_observer {
            observer(&IndexAppend {
                position: idx_end,
                entry: &entry_bytes,
                needle: id,
                dat_end: writer.dat_end,
            });
        }
        self.modified_at.store(now_seconds(), Ordering::Relaxed);
        Ok(offset)
    }

    /// With `--fsync`, returns once `.dat` up to `end` and its `.idx` entries are on
    /// disk (see [`Durability`]); at once without it.
    fn wait_durable(&self, end: u64) -> Result<()> {
        let Some(durability) = &self.durability else { return Ok(()) };
        let lock = || durability.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = lock();
        while state.synced_to < end {
            if state.failed {
                let why = std::io::Error::other("an earlier fsync of this volume failed");
                return Err(Error::io(&self.dat_path, why));
            }
            if state.syncing {
                state = durability.synced.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.syncing = true;
            // Everything appended so far, not just this record: one sync for everyone
            // who appended meanwhile.
            let target = self.dat_size.load(Ordering::Acquire);
            drop(state);
            let synced = self
                .dat
                .sync_data()
                .map_err(|e| Error::io(&self.dat_path, e))
                .and_then(|()| durability.idx.sync_data().map_err(|e| Error::io(&self.idx_path, e)));
            state = lock();
            state.syncing = false;
            durability.synced.notify_all();
            match synced {
                Ok(()) => state.synced_to = state.synced_to.max(target),
                Err(e) => {
                    tracing::error!(volume = %self.id, error = %e, "fsync failed: the volume is now read-only");
                    state.failed = true;
                    self.read_only.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// TTL expiry as weed checks it: from the needle's `AppendAtNs`, only for needles
/// carrying both a TTL and a last-modified time.
fn is_expired(needle: &Needle<'_>) -> bool {
    needle.is_expired_at(now_ns())
}

fn read_super_block(dat: &File, path: &Path) -> Result<SuperBlock> {
    let mut fixed = [0u8; SUPER_BLOCK_SIZE];
    dat.read_exact_at(&mut fixed, 0).map_err(|e| Error::io(path, e))?;
    let extra = SuperBlock::extra_len(&fixed)?;
    let mut bytes = vec![0u8; SUPER_BLOCK_SIZE + extra];
    dat.read_exact_at(&mut bytes, 0).map_err(|e| Error::io(path, e))?;
    Ok(SuperBlock::parse(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(index: IndexKind) -> VolumeOptions {
        VolumeOptions { width: OffsetWidth::Five, index, fsync: false }
    }

    fn new_volume(dir: &Path, index: IndexKind) -> Volume {
        Volume::create(dir, "", VolumeId(1), ReplicaPlacement::default(), Ttl::EMPTY, opts(index)).unwrap()
    }

    fn put(v: &Volume, id: u64, cookie: u32, data: &[u8]) -> WriteOutcome {
        let n = Needle::new(NeedleId(id), Cookie(cookie), data)
            .with_name(b"f.bin")
            .with_last_modified(1_700_000_000);
        v.write(&n).unwrap()
    }

    #[test]
    fn write_read_overwrite_delete_and_reload() {
        for index in [IndexKind::Memory, IndexKind::Rocksdb] {
            let dir = tempfile::tempdir().unwrap();
            let v = new_volume(dir.path(), index);
            assert!(matches!(put(&v, 1, 7, b"hello"), WriteOutcome::Written(_)));
            assert_eq!(put(&v, 1, 7, b"hello"), WriteOutcome::Unchanged, "identical rewrite");
            let WriteOutcome::Written(loc) = put(&v, 2, 8, b"world!") else { panic!("not written") };
            assert_eq!(v.locate_readable(NeedleId(2), false).unwrap(), loc);
            assert_eq!(loc.record_size(), Version::V3.record_size(loc.size));
            let read = v.read(NeedleId(1), Cookie(7)).unwrap();
            assert_eq!(
                (read.needle().data, read.needle().name, read.crc),
                (&b"hello"[..], &b"f.bin"[..], 0x9a71bb4c)
            );
            assert!(matches!(v.read(NeedleId(1), Cookie(8)), Err(Error::CookieMismatch { .. })));
            assert!(matches!(v.read(NeedleId(3), Cookie(7)), Err(Error::NeedleNotFound(_))));
            let err = v.write(&Needle::new(NeedleId(1), Cookie(9), b"x")).unwrap_err();
            assert!(matches!(err, Error::WriteCookieMismatch { .. }), "{err}");
            put(&v, 1, 7, b"hello again");
            assert_eq!(v.read(NeedleId(1), Cookie(7)).unwrap().needle().data, b"hello again");
            assert!(matches!(v.delete(NeedleId(2), Cookie(9)), Err(Error::CookieMismatch { .. })));
            let size = v.delete(NeedleId(2), Cookie(8)).unwrap();
            assert_eq!(size, loc.size);
            assert!(matches!(v.read(NeedleId(2), Cookie(8)), Err(Error::AlreadyDeleted(_))));
            assert_eq!(v.read_maybe_deleted(NeedleId(2), Cookie(8), true).unwrap().needle().data, b"world!");
            assert!(matches!(v.delete(NeedleId(2), Cookie(8)), Err(Error::NeedleNotFound(_))));
            assert!(matches!(v.locate_readable(NeedleId(2), false), Err(Error::AlreadyDeleted(_))));
            let before = v.status();
            let last_ns = v.writer.lock().unwrap().last_append_ns;
            let dat_len = std::fs::metadata(v.dat_path()).unwrap().len();
            assert_eq!(dat_len, v.dat_size());
            drop(v);

            let v = Volume::load(dir.path(), "", VolumeId(1), opts(index)).unwrap();
            assert_eq!(v.read(NeedleId(1), Cookie(7)).unwrap().needle().data, b"hello again");
            assert!(matches!(v.read(NeedleId(2), Cookie(8)), Err(Error::AlreadyDeleted(_))));
            let after = v.status();
            assert_eq!(after.stats, before.stats);
            assert_eq!((after.stats.file_count, after.stats.deletion_count, after.stats.max_key), (3, 2, 2));
            assert_eq!(v.writer.lock().unwrap().last_append_ns, last_ns, "append clock seeded from the tail");
            assert!(!v.load_report().repaired());
            let expected_replay = if index == IndexKind::Memory { 4 } else { 0 };
            assert_eq!(v.load_report().replayed_entries, expected_replay, "{index:?}");
        }
    }

    #[test]
    fn fsync_group_commit_acknowledges_concurrent_writers_only_once_synced() {
        let dir = tempfile::tempdir().unwrap();
        let fsync = VolumeOptions { fsync: true, ..opts(IndexKind::Memory) };
        let v = Volume::create(dir.path(), "", VolumeId(1), ReplicaPlacement::default(), Ttl::EMPTY, fsync)
            .unwrap();
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let v = &v;
                scope.spawn(move || {
                    for i in 0..25u64 {
                        let id = t * 100 + i + 1;
                        assert!(matches!(put(v, id, 7, &id.to_be_bytes()), WriteOutcome::Written(_)));
                        let synced = v.durability.as_ref().unwrap().state.lock().unwrap().synced_to;
                        let end = v.locate_readable(NeedleId(id), false).unwrap();
                        assert!(synced >= end.offset + end.record_size(), "acknowledged before its sync");
                    }
                    v.delete(NeedleId(t * 100 + 1), Cookie(7)).unwrap();
                });
            }
        });
        let state = v.durability.as_ref().unwrap().state.lock().unwrap();
        assert_eq!((state.synced_to, state.syncing, state.failed), (v.dat_size(), false, false));
        drop(state);
        drop(v);
        let v = Volume::load(dir.path(), "", VolumeId(1), fsync).unwrap();
        for t in 0..8u64 {
            assert!(matches!(v.read(NeedleId(t * 100 + 1), Cookie(7)), Err(Error::AlreadyDeleted(_))));
            for i in 1..25u64 {
                let id = t * 100 + i + 1;
                assert_eq!(v.read(NeedleId(id), Cookie(7)).unwrap().needle().data, id.to_be_bytes());
            }
        }
    }

    #[test]
    fn four_byte_offsets_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let four = VolumeOptions { width: OffsetWidth::Four, ..opts(IndexKind::Memory) };
        let v = Volume::create(dir.path(), "", VolumeId(1), ReplicaPlacement::default(), Ttl::EMPTY, four)
            .unwrap();
        put(&v, 1, 1, b"four");
        drop(v);
        assert_eq!(std::fs::metadata(dir.path().join("1.idx")).unwrap().len(), 16, "16-byte entries");
        let vif = VolumeInfo::load(&dir.path().join("1.vif")).unwrap().unwrap();
        assert_eq!(vif.bytes_offset, 4);
        let v = Volume::load(dir.path(), "", VolumeId(1), four).unwrap();
        assert_eq!(v.read(NeedleId(1), Cookie(1)).unwrap().needle().data, b"four");
    }

    #[test]
    fn append_at_ns_is_strictly_monotonic() {
        let dir = tempfile::tempdir().unwrap();
        let v = new_volume(dir.path(), IndexKind::Memory);
        let mut last = 0;
        for i in 1..50u64 {
            put(&v, i, 1, &i.to_be_bytes());
            let ns = v.read(NeedleId(i), Cookie(1)).unwrap().needle().append_at_ns;
            assert!(ns > last);
            last = ns;
        }
    }

    #[test]
    fn volume_ttl_applies_and_expiry_uses_append_time() {
        let dir = tempfile::tempdir().unwrap();
        let ttl: Ttl = "5d".parse().unwrap();
        let v = Volume::create(
            dir.path(),
            "c",
            VolumeId(4),
            ReplicaPlacement::default(),
            ttl,
            opts(IndexKind::Memory),
        )
        .unwrap();
        assert!(dir.path().join("c_4.dat").exists());
        put(&v, 1, 1, b"data");
        let n = v.read(NeedleId(1), Cookie(1)).unwrap();
        assert_eq!(n.needle().ttl, ttl);
        assert!(!is_expired(&n.needle()));
        let old = Needle::new(NeedleId(1), Cookie(1), b"d")
            .with_last_modified(1)
            .with_ttl("1m".parse().unwrap())
            .with_append_at_ns(1_000_000_000);
        assert!(is_expired(&old));
        assert!(!is_expired(&old.with_append_at_ns(now_ns())));
    }

    #[test]
    fn read_only_and_width_come_from_the_vif() {
        let dir = tempfile::tempdir().unwrap();
        drop(new_volume(dir.path(), IndexKind::Memory));
        let vif = dir.path().join("1.vif");
        let err = Volume::load(
            dir.path(),
            "",
            VolumeId(1),
            VolumeOptions { width: OffsetWidth::Four, ..opts(IndexKind::Memory) },
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::OffsetWidthMismatch { declared: 5, flag: 4, .. }), "{err}");
        let mut info = VolumeInfo::load(&vif).unwrap().unwrap();
        info.read_only = true;
        info.save(&vif).unwrap();
        let v = Volume::load(dir.path(), "", VolumeId(1), opts(IndexKind::Memory)).unwrap();
        assert!(v.is_read_only());
        assert!(matches!(v.write(&Needle::new(NeedleId(1), Cookie(1), b"x")), Err(Error::ReadOnly(_))));
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let v = new_volume(dir.path(), IndexKind::Memory);
        let WriteOutcome::Written(loc) = put(&v, 1, 1, b"payload") else { panic!() };
        let f = OpenOptions::new().write(true).open(v.dat_path()).unwrap();
        f.write_all_at(b"X", loc.offset + HEADER_SIZE as u64 + 4).unwrap();
        assert!(matches!(v.read(NeedleId(1), Cookie(1)), Err(Error::Corrupt { .. })));
    }
}
