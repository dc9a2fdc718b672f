//! A needle map persisted in RocksDB (`--index rocksdb`), in a `<volume>.rdb`
//! directory next to the `.idx`. Besides the entries it stores the counters and the
//! watermark (how many `.idx` bytes it has applied) in the same write batch as each
//! entry, so after a restart the volume replays only the `.idx` tail beyond the
//! watermark. The `.idx` stays the source of truth: if it no longer reaches the
//! watermark, or the volume was compacted since, the map is rebuilt from it.

use std::path::Path;
use std::sync::Mutex;

use needle::{IdxEntry, NeedleId};
use rocksdb::{DB, Options, WriteBatch};

use super::{MapStats, NeedleMap, NeedleValue};
use crate::error::{Error, Result};

const META_KEY: &[u8] = b"m";
const ENTRY_PREFIX: u8 = b'n';
const META_LEN: usize = 8 * 7 + 4 + 2;

pub struct RocksMap {
    db: DB,
    /// The compaction revision of the volume the map was built for.
    revision: u16,
    /// Serializes applies so counters and entries stay consistent in each batch.
    stats: Mutex<MapStats>,
}

fn map_err(e: rocksdb::Error) -> Error {
    Error::Map(e.to_string())
}

fn entry_key(key: NeedleId) -> [u8; 9] {
    let mut k = [ENTRY_PREFIX; 9];
    k[1..].copy_from_slice(&key.0.to_be_bytes());
    k
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

fn encode_meta(s: &MapStats, revision: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_LEN);
    for n in [
        s.file_count,
        s.file_bytes,
        s.deletion_count,
        s.deletion_bytes,
        s.max_key,
        s.last_offset,
        s.idx_applied,
    ] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out.extend_from_slice(&s.last_size.to_be_bytes());
    out.extend_from_slice(&revision.to_be_bytes());
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

impl RocksMap {
    /// Opens (or creates) the map at `path` for a volume at compaction `revision`.
    /// A map built for another revision is emptied: its offsets mean nothing now.
    pub fn open(path: &Path, revision: u16) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // One database per volume: keep each one's memory modest.
        opts.set_write_buffer_size(4 << 20);
        opts.set_max_open_files(64);
        let db = DB::open(&opts, path).map_err(map_err)?;
        let stored = db.get(META_KEY).map_err(map_err)?.and_then(|m| decode_meta(&m));
        let map = match stored {
            Some((stats, r)) if r == revision => Self { db, revision, stats: Mutex::new(stats) },
            _ => {
                let map = Self { db, revision, stats: Mutex::new(MapStats::default()) };
                map.reset()?;
                map
            }
        };
        Ok(map)
    }
}

impl NeedleMap for RocksMap {
    fn get(&self, key: NeedleId) -> Result<Option<NeedleValue>> {
        self.db.get_pinned(entry_key(key)).map_err(map_err)?.map(|v| decode_value(&v)).transpose()
    }

    fn apply(&self, entry: &IdxEntry, idx_end: u64) -> Result<()> {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.get(entry.key)?;
        let mut next = *stats;
        let new = next.account(old, entry, idx_end);
        let mut batch = WriteBatch::default();
        if let Some(new) = new {
            batch.put(entry_key(entry.key), encode_value(&new));
        }
        batch.put(META_KEY, encode_meta(&next, self.revision));
        self.db.write(batch).map_err(map_err)?;
        *stats = next;
        Ok(())
    }

    fn stats(&self) -> MapStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reset(&self) -> Result<()> {
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = WriteBatch::default();
        batch.delete_range(&[ENTRY_PREFIX][..], &[ENTRY_PREFIX + 1][..]);
        *stats = MapStats::default();
        batch.put(META_KEY, encode_meta(&stats, self.revision));
        self.db.write(batch).map_err(map_err)
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
}
