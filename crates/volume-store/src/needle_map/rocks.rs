//! A needle map persisted in RocksDB (`--index rocksdb`), in a `<volume>.rdb`
//! directory next to the `.idx`: the entries (8-byte big-endian needle id -> offset,
//! size, deleted) in the default column family and, in a `meta` column family, the
//! counters with the watermark (how many `.idx` bytes they and the entries account
//! for), written in the same batch as each entry. After a restart the volume replays
//! only the `.idx` tail beyond the watermark; if the `.idx` no longer reaches it, or
//! the volume was compacted since, the map is rebuilt from the `.idx`.
//!
//! Writes: [`NeedleMap::apply`] runs under the volume's writer lock and only records
//! the entry in memory, from where [`NeedleMap::get`] answers for it. Once
//! [`COMMIT_BATCH`] entries have gathered, the next [`NeedleMap::commit`] (which the
//! volume's writers call after letting the lock go) writes them, sorted by id, with
//! the counters as they are after the last of them, as one RocksDB write batch. So
//! the entries of many writes, concurrent ones included, share one batch, and
//! RocksDB's work is done outside the writer lock.
//!
//! Durability: the `.idx` is the log, so RocksDB keeps none. Batches are written
//! without its write-ahead log and without a sync: they live in the memtables until
//! RocksDB flushes them to table files, which it does when [`WRITE_BUFFER`] bytes of
//! entries have gathered, and when the map is closed at a clean stop
//! ([`NeedleMap::close`]), so a clean restart replays nothing. The two column
//! families are always flushed together (`atomic_flush`), so whatever survives a
//! crash is the map as it was after some earlier batch, entries and watermark alike,
//! and loading replays the `.idx` from that batch's watermark. Nothing acknowledged is
//! lost: a write reaches the `.idx` before the map and is acknowledged only after
//! both, and the replay after a crash is at most what was not yet flushed.
//!
//! Tuned for a key space that mostly grows (ids come from the master's sequence):
//! each batch inserts its ids in order next to the last ones in the memtable; the
//! map knows exactly which of the most recent ids have entries ([`RecentIds`]), so a
//! new needle's lookups (the write's, then the apply's) need no RocksDB read, and
//! bloom filters answer most other lookups of absent ids. The counters live apart from
//! the entries (one version per batch, not per write), so the entries' table files
//! hold nothing but ids.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use needle::{IdxEntry, NeedleId};
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions,
};

use super::{MapStats, NeedleMap, NeedleValue};
use crate::error::{Error, Result};

/// The column family of the counters and watermark.
const META_CF: &str = "meta";
const META_KEY: &[u8] = b"m";
const META_LEN: usize = 8 * 7 + 4 + 2;
/// Memtable size of the entries: a flush (and so the most a crash makes the load
/// replay) every ~90k writes.
const WRITE_BUFFER: usize = 4 << 20;
/// Memtable size of the meta family (~10k batches of counters).
const META_WRITE_BUFFER: usize = 1 << 20;
/// Entries that make a batch worth writing (see the module doc). Beyond that, a
/// commit takes a few tens of microseconds of a writer's time.
const COMMIT_BATCH: usize = 64;
/// Most entries held at all: an apply beyond it writes them at once (a load
/// replaying the `.idx` applies many with no commit in between).
const MAX_PENDING: usize = 4096;
/// How many of the latest ids [`RecentIds`] keeps at least: writes that arrive this
/// late (in id order) still skip the RocksDB read.
const RECENT_IDS: usize = 4096;

pub struct RocksMap {
    db: DB,
    /// The compaction revision of the volume the map was built for.
    revision: u16,
    /// Without RocksDB's write-ahead log (see the module doc).
    write_options: WriteOptions,
    pending: Mutex<Pending>,
    /// Held while a batch is written, so batches reach RocksDB in the order applied.
    committing: Mutex<()>,
}

/// What was applied and is not in RocksDB yet.
#[derive(Default)]
struct Pending {
    /// The counters after the last apply (what [`NeedleMap::stats`] answers).
    stats: MapStats,
    /// Whether `stats` changed since the last batch took them.
    dirty: bool,
    /// Entries applied since the last batch took them, in the order applied.
    entries: Vec<(u64, NeedleValue)>,
    /// The newest value of each id in a batch not yet written, with that batch's
    /// number: what lookups answer until RocksDB has it.
    values: HashMap<u64, (NeedleValue, u64), IdHasher>,
    /// The number of the batch now gathering entries.
    batch: u64,
    /// Which of the latest ids have entries.
    recent: RecentIds,
    /// A batch failed to reach RocksDB: no later one may go, or the watermark on
    /// disk would cover entries that are not there.
    failed: bool,
}

/// Which ids above a bound have an entry, exactly: a lookup of an id above it that
/// is not in the set needs no RocksDB read. Ids mostly grow, so a new needle's id is
/// almost always above the bound, which rises to keep the set short.
#[derive(Default)]
struct RecentIds {
    /// No id above it has an entry unless it is in `ids`.
    above: u64,
    ids: BTreeSet<u64>,
}

impl RecentIds {
    /// No id above `max_key` has an entry.
    fn above(max_key: u64) -> Self {
        Self { above: max_key, ids: BTreeSet::new() }
    }

    /// Whether `id` certainly has no entry.
    fn lacks(&self, id: u64) -> bool {
        id > self.above && !self.ids.contains(&id)
    }

    /// `id` has an entry now.
    fn insert(&mut self, id: u64) {
        if id <= self.above {
            return;
        }
        self.ids.insert(id);
        if self.ids.len() > 2 * RECENT_IDS {
            // Keep the latest RECENT_IDS; the bound becomes the next one down.
            let cut = *self.ids.iter().rev().nth(RECENT_IDS).expect("the set is longer");
            let mut kept = self.ids.split_off(&cut);
            kept.remove(&cut);
            *self = Self { above: cut, ids: kept };
        }
    }
}

/// Hashes needle ids for [`Pending::values`] with splitmix64's finalizer, a few
/// instructions instead of SipHash's hundreds. Ids are chosen by clients, but at most
/// [`MAX_PENDING`] are held, which bounds what colliding ones can cost.
#[derive(Clone, Copy, Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        let mut z = id.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl std::hash::BuildHasher for IdHasher {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher::default()
    }
}

fn map_err(e: rocksdb::Error) -> Error {
    Error::Map(e.to_string())
}

fn entry_key(key: NeedleId) -> [u8; 8] {
    key.0.to_be_bytes()
}

fn encode_value(v: &NeedleValue) -> [u8; 13] {
    let mut out = [0u8; 13];
    out[..8].copy_from_slice(&v.offset.to_be_bytes());
    out[8..12].copy_from_slice(&v.size.to_be_bytes());
    out[12] = u8::from(v.deleted);
    out
}

fn decode_value(b: &[u8]) -> Result<NeedleValue> {
    let b: &[u8; 13] = b.try_into().map_err(|_| Error::Map(format!("entry of {} bytes", b.len())))?;
    Ok(NeedleValue {
        offset: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
        size: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
        deleted: b[12] != 0,
    })
}

fn encode_meta(s: &MapStats, revision: u16) -> [u8; META_LEN] {
    let mut out = [0u8; META_LEN];
    let counters = [
        s.file_count,
        s.file_bytes,
        s.deletion_count,
        s.deletion_bytes,
        s.max_key,
        s.last_offset,
        s.idx_applied,
    ];
    for (i, n) in counters.into_iter().enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
    }
    out[56..60].copy_from_slice(&s.last_size.to_be_bytes());
    out[60..].copy_from_slice(&revision.to_be_bytes());
    out
}

fn decode_meta(b: &[u8]) -> Option<(MapStats, u16)> {
    if b.len() != META_LEN {
        return None;
    }
    let u = |i: usize| u64::from_be_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let stats = MapStats {
        file_count: u(0),
        file_bytes: u(1),
        deletion_count: u(2),
        deletion_bytes: u(3),
        max_key: u(4),
        last_offset: u(5),
        idx_applied: u(6),
        last_size: u32::from_be_bytes(b[56..60].try_into().expect("4 bytes")),
    };
    Some((stats, u16::from_be_bytes([b[60], b[61]])))
}

/// The database's options.
fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // With no write-ahead log, only a flush of both families at once keeps the
    // watermark on disk true to the entries on disk: RocksDB then switches and
    // flushes every family's memtable together, between two write batches.
    opts.set_atomic_flush(true);
    opts.set_max_open_files(64);
    opts
}

/// The entries' column family (the default one).
fn entries_options() -> Options {
    let mut opts = Options::default();
    // One database per volume: keep each one's memory modest.
    opts.set_write_buffer_size(WRITE_BUFFER);
    // Lookups of absent ids that `RecentIds` cannot answer (a needle written long
    // after its id was assigned) stop at filters: in the memtable, and in every level
    // but the last (which holds the oldest ids).
    opts.set_memtable_prefix_bloom_ratio(0.05);
    opts.set_memtable_whole_key_filtering(true);
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    opts.set_block_based_table_factory(&table);
    opts.set_optimize_filters_for_hits(true);
    opts
}

/// The meta family: one key, rewritten by every batch. Its memtable stays small:
/// every flush of the entries flushes it too.
fn meta_options() -> Options {
    let mut opts = Options::default();
    opts.set_write_buffer_size(META_WRITE_BUFFER);
    opts
}

impl RocksMap {
    /// Opens (or creates) the map at `path` for a volume at compaction `revision`.
    /// A map built for another revision (or in an older layout) is emptied: its
    /// offsets mean nothing now.
    pub fn open(path: &Path, revision: u16) -> Result<Self> {
        let families = [
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, entries_options()),
            ColumnFamilyDescriptor::new(META_CF, meta_options()),
        ];
        let db = DB::open_cf_descriptors(&db_options(), path, families).map_err(map_err)?;
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        let map =
            Self { db, revision, write_options, pending: Mutex::default(), committing: Mutex::default() };
        let stored = map.db.get_cf(map.meta()?, META_KEY).map_err(map_err)?.and_then(|m| decode_meta(&m));
        match stored {
            Some((stats, r)) if r == revision => {
                let mut pending = map.pending();
                pending.recent = RecentIds::above(stats.max_key);
                pending.stats = stats;
            }
            _ => map.reset()?,
        }
        Ok(map)
    }

    fn meta(&self) -> Result<&ColumnFamily> {
        self.db.cf_handle(META_CF).ok_or_else(|| Error::Map(format!("no {META_CF} column family")))
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value RocksDB holds for `key` (committed batches only).
    fn stored(&self, key: NeedleId) -> Result<Option<NeedleValue>> {
        self.db.get_pinned(entry_key(key)).map_err(map_err)?.map(|v| decode_value(&v)).transpose()
    }

    fn write(&self, batch: WriteBatch) -> Result<()> {
        self.db.write_opt(batch, &self.write_options).map_err(map_err)
    }
}

impl RocksMap {
    /// Writes every entry applied and not yet written, as one batch.
    fn write_pending(&self) -> Result<()> {
        let meta = self.meta()?;
        let _order = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        let (mut entries, stats, number) = {
            let mut pending = self.pending();
            if pending.failed {
                return Err(Error::Map("an earlier batch failed: the map takes no more".to_owned()));
            }
            if !pending.dirty {
                return Ok(()); // another writer took ours
            }
            pending.dirty = false;
            let number = pending.batch;
            pending.batch += 1;
            (std::mem::take(&mut pending.entries), pending.stats, number)
        };
        // In id order, which RocksDB's memtable inserts fastest; the sort is stable, so
        // of two values of one id the later one still comes last and wins.
        entries.sort_by_key(|(id, _)| *id);
        let mut batch = WriteBatch::default();
        for (id, value) in &entries {
            batch.put(id.to_be_bytes(), encode_value(value));
        }
        batch.put_cf(meta, META_KEY, encode_meta(&stats, self.revision));
        let written = self.write(batch);
        let mut pending = self.pending();
        match written {
            // RocksDB answers for these now (later batches keep their own values).
            Ok(()) => pending.values.retain(|_, (_, batch)| *batch > number),
            Err(_) => pending.failed = true,
        }
        written
    }
}

impl NeedleMap for RocksMap {
    fn get(&self, key: NeedleId) -> Result<Option<NeedleValue>> {
        {
            let pending = self.pending();
            if let Some((value, _)) = pending.values.get(&key.0) {
                return Ok(Some(*value));
            }
            if pending.recent.lacks(key.0) {
                return Ok(None);
            }
        }
        // A batch is written to RocksDB before its values leave `values`.
        self.stored(key)
    }

    fn apply(&self, entry: &IdxEntry, idx_end: u64) -> Result<()> {
        let mut pending = self.pending();
        let id = entry.key.0;
        let old = match pending.values.get(&id) {
            Some((value, _)) => Some(*value),
            None if pending.recent.lacks(id) => None,
            None => self.stored(entry.key)?,
        };
        let mut stats = pending.stats;
        if let Some(new) = stats.account(old, entry, idx_end) {
            let batch = pending.batch;
            pending.values.insert(id, (new, batch));
            pending.entries.push((id, new));
            pending.recent.insert(id);
        }
        pending.stats = stats;
        pending.dirty = true;
        let full = pending.entries.len() >= MAX_PENDING;
        drop(pending);
        if full { self.write_pending() } else { Ok(()) }
    }

    fn commit(&self) -> Result<()> {
        if self.pending().entries.len() < COMMIT_BATCH {
            return Ok(());
        }
        self.write_pending()
    }

    fn stats(&self) -> MapStats {
        self.pending().stats
    }

    fn reset(&self) -> Result<()> {
        let _order = self.committing.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = self.pending();
        let mut batch = WriteBatch::default();
        // Every entry's key (8 bytes), and those of the layout before the meta family
        // (b"m" and b"n" + id, all in the default family).
        batch.delete_range(&[][..], &[0xff; 9][..]);
        batch.put_cf(self.meta()?, META_KEY, encode_meta(&MapStats::default(), self.revision));
        self.write(batch)?;
        *pending = Pending { batch: pending.batch, ..Pending::default() };
        Ok(())
    }

    fn close(&self) {
        if let Err(e) = self.write_pending() {
            tracing::warn!(error = %e, "needle map: the last entries stay unwritten; the next load replays them");
        }
        // RocksDB's shutdown: it flushes both families as one (the C API this links
        // has no flush of several families) and stops its background work. A flush
        // that fails leaves the next load to replay the .idx tail, as after a crash.
        self.db.cancel_all_background_work(true);
    }
}

impl Drop for RocksMap {
    /// A map let go without [`NeedleMap::close`] (a volume unmounted, deleted or
    /// replaced by a vacuum) still writes what it holds; RocksDB flushes at its close.
    fn drop(&mut self) {
        if let Err(e) = self.write_pending() {
            tracing::warn!(error = %e, "needle map: the last entries stay unwritten; the next load replays them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_entries_counters_and_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.rdb");
        {
            let map = RocksMap::open(&path, 0).unwrap();
            map.apply(&IdxEntry::new(NeedleId(1), 8, 10).unwrap(), 17).unwrap();
            map.apply(&IdxEntry::new(NeedleId(u64::MAX), 48, 20).unwrap(), 34).unwrap();
            map.apply(&IdxEntry::new(NeedleId(1), 96, u32::MAX).unwrap(), 51).unwrap();
        }
        let map = RocksMap::open(&path, 0).unwrap();
        assert_eq!(map.get(NeedleId(1)).unwrap(), Some(NeedleValue { offset: 8, size: 10, deleted: true }));
        assert_eq!(
            map.get(NeedleId(u64::MAX)).unwrap(),
            Some(NeedleValue { offset: 48, size: 20, deleted: false })
        );
        assert_eq!(map.get(NeedleId(2)).unwrap(), None);
        let s = map.stats();
        assert_eq!((s.file_count, s.deletion_count, s.idx_applied, s.max_key), (2, 1, 51, u64::MAX));
        drop(map);
        let map = RocksMap::open(&path, 1).unwrap();
        assert_eq!(map.get(NeedleId(u64::MAX)).unwrap(), None, "another revision starts empty");
        assert_eq!(map.stats(), MapStats::default());
    }

    fn int_property(map: &RocksMap, name: &str) -> u64 {
        map.db.property_int_value(name).unwrap().unwrap_or_else(|| panic!("no {name}"))
    }

    /// What a crash leaves: RocksDB keeps no log, so only the table files it flushed
    /// are left (copied here while the map is open, between two flushes). The map they
    /// hold must be the map as it was after one batch: entries exactly up to the
    /// watermark stored with them, from which the load replays the `.idx`.
    #[test]
    fn a_crash_leaves_entries_that_match_the_watermark() {
        const ENTRY: u64 = 17;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.rdb");
        let map = RocksMap::open(&path, 0).unwrap();
        let mut applied = 0u64;
        let apply_more = |applied: &mut u64, n: u64| {
            for _ in 0..n {
                *applied += 1;
                let entry = IdxEntry::new(NeedleId(*applied), *applied * 8, 10).unwrap();
                map.apply(&entry, *applied * ENTRY).unwrap();
                map.commit().unwrap();
            }
        };
        // Until RocksDB flushed a memtable on its own (it fills after ~90k entries).
        while int_property(&map, "rocksdb.num-files-at-level0") == 0 {
            apply_more(&mut applied, 1000);
            assert!(applied < 1_000_000, "no flush after {applied} entries");
        }
        while int_property(&map, "rocksdb.num-running-flushes") > 0 {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Entries written after that flush, in the memtable only.
        apply_more(&mut applied, 1000);
        let crashed = dir.path().join("crashed.rdb");
        std::fs::create_dir(&crashed).unwrap();
        for file in std::fs::read_dir(&path).unwrap() {
            let file = file.unwrap();
            if file.file_name() != "LOCK" {
                std::fs::copy(file.path(), crashed.join(file.file_name())).unwrap();
            }
        }

        let after = RocksMap::open(&crashed, 0).unwrap();
        let stats = after.stats();
        let kept = stats.idx_applied / ENTRY;
        assert_eq!(stats.idx_applied % ENTRY, 0);
        assert!(kept > 0 && kept < applied, "kept {kept} of {applied} entries");
        assert_eq!((stats.file_count, stats.max_key), (kept, kept));
        for id in 1..=applied {
            let expected = (id <= kept).then_some(NeedleValue { offset: id * 8, size: 10, deleted: false });
            assert_eq!(after.stored(NeedleId(id)).unwrap(), expected, "id {id}, watermark at {kept}");
        }
    }
}
