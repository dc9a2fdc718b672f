//! Needle maps: needle id -> (offset, size) for one volume, rebuilt from (and always
//! agreeing with) the `.idx`, which stays the source of truth weed reads.
//!
//! Two kinds behind one trait: [`MemoryMap`] (the default; replays the whole `.idx`
//! at load) and [`RocksMap`] (persisted; replays only the `.idx` tail beyond the
//! watermark it stored). Both apply `.idx` entries with the same accounting
//! ([`MapStats::account`]), so they give the same answers and the same `/status`
//! counters as weed's compact map.

mod memory;
mod rocks;

pub use memory::MemoryMap;
pub use rocks::RocksMap;

use needle::{IdxEntry, NeedleId};

use crate::error::Result;

/// Where a needle's record is, as the map knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedleValue {
    /// Byte offset of the record in the `.dat`.
    pub offset: u64,
    /// The record header's `Size` (body length).
    pub size: u32,
    /// Deleted entries keep the offset and size of the data they deleted, as weed's
    /// map does (for `readDeleted`, and for the cookie check of a rewrite).
    pub deleted: bool,
}

/// weed's per-volume counters plus what loading needs to know about the `.idx`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    /// Puts ever applied (weed's `FileCounter`; overwrites count again).
    pub file_count: u64,
    /// Sum of the sizes of those puts (weed's `ContentSize`, `/status` `Size`).
    pub file_bytes: u64,
    pub deletion_count: u64,
    pub deletion_bytes: u64,
    /// Largest needle id seen, so assign never reissues a key.
    pub max_key: u64,
    /// Start of the record furthest into the `.dat` (0: none), and its `.idx` size.
    pub last_offset: u64,
    pub last_size: u32,
    /// Bytes of `.idx` applied: the watermark a persisted map restarts from.
    pub idx_applied: u64,
}

impl MapStats {
    /// Applies one `.idx` entry to the counters given the key's current value, and
    /// returns the key's new value (`None`: the entry changes nothing for the key).
    pub fn account(
        &mut self,
        old: Option<NeedleValue>,
        entry: &IdxEntry,
        idx_end: u64,
    ) -> Option<NeedleValue> {
        self.idx_applied = idx_end;
        self.max_key = self.max_key.max(entry.key.0);
        if entry.offset_units != 0 && entry.byte_offset() >= self.last_offset {
            self.last_offset = entry.byte_offset();
            self.last_size = entry.size;
        }
        let live_old = old.filter(|v| !v.deleted);
        if entry.is_deletion() {
            let old = live_old?;
            self.deletion_count += 1;
            self.deletion_bytes += u64::from(old.size);
            Some(NeedleValue { deleted: true, ..old })
        } else {
            if let Some(old) = live_old {
                self.deletion_count += 1;
                self.deletion_bytes += u64::from(old.size);
            }
            self.file_count += 1;
            self.file_bytes += u64::from(entry.size);
            Some(NeedleValue { offset: entry.byte_offset(), size: entry.size, deleted: false })
        }
    }
}

/// A needle map. Implementations are internally synchronized: many readers, and the
/// volume's single writer (which holds the volume's write mutex while applying).
pub trait NeedleMap: Send + Sync {
    fn get(&self, key: NeedleId) -> Result<Option<NeedleValue>>;
    /// Applies one `.idx` entry, the one ending at byte `idx_end` of the `.idx`:
    /// lookups answer with it from now on; a persisted map may hold it in memory until
    /// the next [`NeedleMap::commit`].
    fn apply(&self, entry: &IdxEntry, idx_end: u64) -> Result<()>;
    /// Hands what was applied (by any writer) to the map's storage, in one batch, if
    /// enough has gathered; called by a writer once it let the volume's writer lock
    /// go. A map kept only in memory has nothing to hand on.
    fn commit(&self) -> Result<()> {
        Ok(())
    }
    fn stats(&self) -> MapStats;
    /// Forgets everything (the `.idx` no longer extends what was applied).
    fn reset(&self) -> Result<()>;
    /// A clean stop: writes out what a persisted map holds only in memory, so the next
    /// load replays none of the `.idx`. Nothing is applied after it. A map kept only in
    /// memory has nothing to write.
    fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use needle::idx::TOMBSTONE_SIZE;

    #[test]
    fn accounting_matches_weeds_counters() {
        let mut s = MapStats::default();
        let put = |k, off, size| IdxEntry::new(NeedleId(k), off, size).unwrap();
        let v1 = s.account(None, &put(1, 8, 100), 17).unwrap();
        let v1b = s.account(Some(v1), &put(1, 160, 50), 34).unwrap();
        assert_eq!((s.file_count, s.file_bytes, s.deletion_count, s.deletion_bytes), (2, 150, 1, 100));
        let d = s.account(Some(v1b), &put(1, 240, TOMBSTONE_SIZE), 51).unwrap();
        assert_eq!(d, NeedleValue { offset: 160, size: 50, deleted: true });
        assert_eq!((s.deletion_count, s.deletion_bytes), (2, 150));
        assert_eq!(
            s.account(Some(d), &put(1, 280, TOMBSTONE_SIZE), 68),
            None,
            "deleting twice changes nothing"
        );
        assert_eq!(s.account(None, &put(9, 320, TOMBSTONE_SIZE), 85), None);
        assert_eq!((s.max_key, s.last_offset, s.last_size, s.idx_applied), (9, 320, TOMBSTONE_SIZE, 85));
    }
}
