//! Load-time integrity check and crash recovery of one volume.
//!
//! weed appends a record to `.dat`, then its entry to `.idx`, and a crash can stop it
//! anywhere in between. On load we restore the invariant weed itself checks before it
//! opens a volume read-write: every record in `.dat` has its `.idx` entry, and `.dat`
//! ends exactly at the end of the last indexed record. In order:
//!
//! 1. a partial entry at the end of `.idx` (an entry write cut short) is dropped;
//! 2. trailing `.idx` entries whose record is not in `.dat` (beyond its end, or
//!    another record there) are dropped: only possible after a power loss without
//!    `--fsync`, when the page cache wrote `.idx` out before `.dat`;
//! 3. the needle map catches up with `.idx` (all of it, or beyond its watermark);
//! 4. records after the last indexed one are walked: each complete, CRC-valid record
//!    is re-indexed (its `.idx` entry appended); the first torn or invalid one and
//!    everything after it is cut off.
//!
//! Acknowledged writes are never lost: the server acknowledges only after both files
//! were written, so their records are complete and indexed, or complete and re-indexed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use needle::idx::TOMBSTONE_SIZE;
use needle::{HEADER_SIZE, IdxEntry, Needle, NeedleHeader, NeedleId, OffsetWidth, Version};

use crate::error::{Error, Result};
use crate::needle_map::NeedleMap;

/// What loading found and did; kept for logs, `/status` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// `.idx` entries applied to the needle map while loading (0 for a persisted map
    /// that was up to date).
    pub replayed_entries: u64,
    /// Records found in `.dat` without an `.idx` entry, and re-indexed.
    pub recovered_records: u64,
    /// `.idx` entries dropped because their record is not in `.dat`.
    pub dropped_idx_entries: u64,
    pub truncated_idx_bytes: u64,
    pub truncated_dat_bytes: u64,
}

impl LoadReport {
    pub fn repaired(&self) -> bool {
        self.recovered_records
            + self.dropped_idx_entries
            + self.truncated_idx_bytes
            + self.truncated_dat_bytes
            > 0
    }
}

/// The state a loaded volume continues from.
pub(crate) struct Recovered {
    pub dat_end: u64,
    pub idx_end: u64,
    pub last_append_ns: u64,
    pub report: LoadReport,
}

pub(crate) struct Files<'a> {
    pub dat: &'a File,
    pub dat_path: &'a Path,
    pub idx: &'a File,
    pub idx_path: &'a Path,
    /// Where the first record starts (the superblock's size).
    pub data_start: u64,
    pub version: Version,
    pub width: OffsetWidth,
}

impl Files<'_> {
    fn dat_len(&self) -> Result<u64> {
        self.dat.metadata().map(|m| m.len()).map_err(|e| Error::io(self.dat_path, e))
    }

    fn read_dat(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.dat.read_exact_at(buf, offset).map_err(|e| Error::io(self.dat_path, e))
    }

    fn read_idx_entry(&self, at: u64) -> Result<IdxEntry> {
        let mut buf = vec![0u8; self.width.entry_size()];
        self.idx.read_exact_at(&mut buf, at).map_err(|e| Error::io(self.idx_path, e))?;
        Ok(IdxEntry::parse(&buf, self.width)?)
    }

    /// Whether the record an entry points at is in `.dat` (same id and size).
    fn entry_matches_dat(&self, entry: &IdxEntry, dat_len: u64) -> Result<bool> {
        if entry.offset_units == 0 {
            return Ok(true); // a deletion without a tombstone record; nothing to check
        }
        let size = if entry.size == TOMBSTONE_SIZE { 0 } else { entry.size };
        if entry.byte_offset() + self.version.record_size(size) > dat_len {
            return Ok(false);
        }
        let mut header = [0u8; HEADER_SIZE];
        self.read_dat(&mut header, entry.byte_offset())?;
        Ok(NeedleHeader::parse(&header)?.expect(entry.key, size).is_ok())
    }

    fn truncate_idx(&self, len: u64) -> Result<()> {
        self.idx.set_len(len).map_err(|e| Error::io(self.idx_path, e))
    }
}

/// Checks and repairs one volume's files, bringing `map` up to date with `.idx`: the
/// steps of the module documentation, in order.
pub(crate) fn recover(files: &Files<'_>, map: &dyn NeedleMap) -> Result<Recovered> {
    let mut report = LoadReport::default();
    let dat_len = files.dat_len()?;
    if dat_len < files.data_start {
        return Err(Error::BadVolume {
            path: files.dat_path.to_owned(),
            reason: format!("{dat_len} bytes, shorter than its superblock"),
        });
    }
    let idx_end = trim_idx(files, dat_len, &mut report)?;
    report.replayed_entries = catch_up(files, map, idx_end)?;
    let recovered = reindex_tail(files, map, idx_end, dat_len, report)?;
    if recovered.report.repaired() {
        files.dat.sync_all().map_err(|e| Error::io(files.dat_path, e))?;
        files.idx.sync_all().map_err(|e| Error::io(files.idx_path, e))?;
    }
    Ok(recovered)
}

/// Steps 1 and 2: `.idx` cut to its last whole entry whose record is in `.dat`
/// (`dat_len` bytes); returns its new length.
fn trim_idx(files: &Files<'_>, dat_len: u64, report: &mut LoadReport) -> Result<u64> {
    let entry_size = files.width.entry_size() as u64;
    // 1. A partial trailing entry.
    let mut idx_end = files.idx.metadata().map(|m| m.len()).map_err(|e| Error::io(files.idx_path, e))?;
    let partial = idx_end % entry_size;
    if partial != 0 {
        idx_end -= partial;
        files.truncate_idx(idx_end)?;
        report.truncated_idx_bytes = partial;
    }

    // 2. Trailing entries whose record never reached `.dat`.
    while idx_end > 0 {
        let entry = files.read_idx_entry(idx_end - entry_size)?;
        if files.entry_matches_dat(&entry, dat_len)? {
            break;
        }
        idx_end -= entry_size;
        report.dropped_idx_entries += 1;
    }
    if report.dropped_idx_entries > 0 {
        files.truncate_idx(idx_end)?;
    }
    Ok(idx_end)
}

/// Step 3: the map brought up to `.idx`'s first `idx_end` bytes, from its watermark
/// when that is an entry boundary within them, else from scratch; returns how many
/// entries it applied.
fn catch_up(files: &Files<'_>, map: &dyn NeedleMap, idx_end: u64) -> Result<u64> {
    let entry_size = files.width.entry_size() as u64;
    let applied = map.stats().idx_applied;
    let mut from = applied;
    if applied > idx_end || applied % entry_size != 0 {
        map.reset()?;
        from = 0;
    }
    replay(files, map, from, idx_end)
}

/// Step 4: complete, valid records after the last indexed one re-indexed, and `.dat`
/// cut where they stop.
fn reindex_tail(
    files: &Files<'_>,
    map: &dyn NeedleMap,
    mut idx_end: u64,
    dat_len: u64,
    mut report: LoadReport,
) -> Result<Recovered> {
    let entry_size = files.width.entry_size() as u64;
    let stats = map.stats();
    let mut end = if stats.last_offset == 0 {
        files.data_start
    } else {
        let size = if stats.last_size == TOMBSTONE_SIZE { 0 } else { stats.last_size };
        stats.last_offset + files.version.record_size(size)
    };
    if end > dat_len {
        return Err(Error::BadVolume {
            path: files.dat_path.to_owned(),
            reason: format!("the index points at a record ending at {end}, past the {dat_len}-byte end"),
        });
    }
    let mut last_append_ns =
        if stats.last_offset == 0 { 0 } else { append_at_ns_at(files, stats.last_offset)? };
    while end < dat_len {
        let Some((entry, record_size, append_ns)) =
            valid_record_at(files, map, end, dat_len, last_append_ns)?
        else {
            break;
        };
        let bytes = entry.to_bytes(files.width)?;
        files.idx.write_all_at(&bytes, idx_end).map_err(|e| Error::io(files.idx_path, e))?;
        idx_end += entry_size;
        map.apply(&entry, idx_end)?;
        report.recovered_records += 1;
        end += record_size;
        last_append_ns = append_ns;
    }
    if end < dat_len {
        files.dat.set_len(end).map_err(|e| Error::io(files.dat_path, e))?;
        report.truncated_dat_bytes = dat_len - end;
    }
    Ok(Recovered { dat_end: end, idx_end, last_append_ns, report })
}

/// Applies `.idx` bytes `from..to` to the map; returns how many entries that was.
fn replay(files: &Files<'_>, map: &dyn NeedleMap, from: u64, to: u64) -> Result<u64> {
    let entry_size = files.width.entry_size() as u64;
    let chunk = entry_size * 64 * 1024;
    let mut at = from;
    let mut count = 0;
    let mut buf = Vec::new();
    while at < to {
        let len = chunk.min(to - at);
        buf.resize(len as usize, 0);
        files.idx.read_exact_at(&mut buf, at).map_err(|e| Error::io(files.idx_path, e))?;
        for entry in needle::idx::entries(&buf, files.width) {
            at += entry_size;
            map.apply(&entry, at)?;
            count += 1;
        }
    }
    Ok(count)
}

/// The v3 `AppendAtNs` of the record at `offset` (0 for older versions).
fn append_at_ns_at(files: &Files<'_>, offset: u64) -> Result<u64> {
    if files.version != Version::V3 {
        return Ok(0);
    }
    let mut header = [0u8; HEADER_SIZE];
    files.read_dat(&mut header, offset)?;
    let size = NeedleHeader::parse(&header)?.size;
    let mut ts = [0u8; 8];
    files.read_dat(&mut ts, offset + (HEADER_SIZE + size as usize + needle::CHECKSUM_SIZE) as u64)?;
    Ok(u64::from_be_bytes(ts))
}

/// The `.idx` entry for a complete, valid, unindexed record at `offset`, its size on
/// disk and its `AppendAtNs`; `None` if what is there is not such a record.
fn valid_record_at(
    files: &Files<'_>,
    map: &dyn NeedleMap,
    offset: u64,
    dat_len: u64,
    prev_append_ns: u64,
) -> Result<Option<(IdxEntry, u64, u64)>> {
    if dat_len - offset < HEADER_SIZE as u64 {
        return Ok(None);
    }
    let mut header = [0u8; HEADER_SIZE];
    files.read_dat(&mut header, offset)?;
    let header = NeedleHeader::parse(&header)?;
    let record_size = files.version.record_size(header.size);
    // Key 0 is never issued: zeros here are a hole, not a record.
    if header.id == NeedleId(0) || offset + record_size > dat_len {
        return Ok(None);
    }
    let mut record = vec![0u8; files.version.unpadded_record_size(header.size)];
    files.read_dat(&mut record, offset)?;
    let Ok(needle) = Needle::decode(&record, files.version) else { return Ok(None) };
    if files.version == Version::V3 && needle.append_at_ns <= prev_append_ns {
        return Ok(None); // AppendAtNs only grows within a volume
    }
    // An empty record is either an empty file or a tombstone; a tombstone repeats the
    // cookie and checksum of the live needle it deletes.
    let is_tombstone = header.size == 0
        && match map.get(header.id)? {
            Some(v) if !v.deleted => {
                let mut old = vec![0u8; files.version.unpadded_record_size(v.size)];
                files.read_dat(&mut old, v.offset)?;
                Needle::parse(&old, files.version).is_ok_and(|old| {
                    old.cookie == needle.cookie && old.verify_checksum() == Ok(needle.checksum)
                })
            }
            _ => false,
        };
    let size = if is_tombstone { TOMBSTONE_SIZE } else { header.size };
    Ok(Some((IdxEntry::new(header.id, offset, size)?, record_size, needle.append_at_ns)))
}
