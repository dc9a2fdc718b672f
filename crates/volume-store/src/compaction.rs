//! Vacuum: rewriting a volume without its deleted and overwritten records, in weed's
//! three steps and file names.
//!
//! 1. [`compact`] copies the live records as of a snapshot (the `.dat`/`.idx` ends at
//!    that moment) into `<base>.cpd` / `<base>.cpx`, with the superblock's compaction
//!    revision bumped. Writes continue meanwhile.
//! 2. [`catch_up`] (at commit: once without the volume's write lock, then under it for
//!    what came meanwhile) appends to the new files whatever was appended to the old
//!    ones since the snapshot, a piece at a time: the `.dat` tail as it is, its `.idx`
//!    entries moved by the distance between the old and new ends. Then
//!    [`install`] renames the new files over the old ones under a commit marker
//!    (`<base>.cpc`), so a crash at any step of the commit leaves files that
//!    [`finish_interrupted_commit`] completes at the next load.
//! 3. Cleanup removes the new files of a compaction that is not committed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use needle::{Flags, IdxEntry, Needle, NeedleHeader, OffsetWidth, SuperBlock, VolumeId};

use crate::durable::sync_parent;
use crate::error::{Error, Result};

/// Where the old files ended when compaction started.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    pub dat_end: u64,
    pub idx_end: u64,
}

/// A finished compaction, waiting for commit or cleanup.
#[derive(Clone, Copy, Debug)]
pub struct Compacted {
    pub snapshot: Snapshot,
    /// Ends of `.cpd` and `.cpx`.
    pub dat_end: u64,
    pub idx_end: u64,
}

/// The volume being compacted.
pub struct Source<'a> {
    pub id: VolumeId,
    pub dat: &'a File,
    pub dat_path: &'a Path,
    pub idx_path: &'a Path,
    pub super_block: &'a SuperBlock,
    pub width: OffsetWidth,
}

/// `<base>.cpd`: the compacted `.dat` before commit.
pub fn cpd_path(dat_path: &Path) -> PathBuf {
    dat_path.with_extension("cpd")
}

/// `<base>.cpx`: the compacted `.idx` before commit.
pub fn cpx_path(dat_path: &Path) -> PathBuf {
    dat_path.with_extension("cpx")
}

fn bad(source: &Source<'_>, reason: String) -> Error {
    Error::BadVolume { path: source.dat_path.to_owned(), reason }
}

/// Writes `.cpd`/`.cpx` holding the records live at `snapshot`, in their `.dat` order,
/// leaving out needles of a TTL volume whose TTL ran out (as weed does: last-modified
/// time plus the volume's TTL).
pub fn compact(source: &Source<'_>, snapshot: Snapshot) -> Result<Compacted> {
    let now = crate::clock::now_seconds();
    let volume_ttl = source.super_block.ttl.seconds();
    let idx_bytes = read_range(source.idx_path, 0, snapshot.idx_end)?;
    let mut live: HashMap<u64, IdxEntry> = HashMap::new();
    for entry in needle::idx::entries(&idx_bytes, source.width) {
        if entry.is_deletion() {
            live.remove(&entry.key.0);
        } else {
            live.insert(entry.key.0, entry);
        }
    }
    let mut live: Vec<IdxEntry> = live.into_values().collect();
    live.sort_by_key(IdxEntry::byte_offset);

    let version = source.super_block.version;
    let mut super_block = source.super_block.clone();
    super_block.compaction_revision = super_block.compaction_revision.wrapping_add(1);
    let head = super_block.to_bytes()?;
    let cpd = cpd_path(source.dat_path);
    let cpx = cpx_path(source.dat_path);
    let mut dat_out = BufWriter::new(File::create(&cpd).map_err(|e| Error::io(&cpd, e))?);
    let mut idx_out = BufWriter::new(File::create(&cpx).map_err(|e| Error::io(&cpx, e))?);
    dat_out.write_all(&head).map_err(|e| Error::io(&cpd, e))?;
    let mut dat_end = head.len() as u64;
    let mut record = Vec::new();
    let mut entry_bytes = Vec::new();
    for entry in live {
        let offset = entry.byte_offset();
        let record_size = version.record_size(entry.size);
        if offset + record_size > snapshot.dat_end {
            return Err(bad(
                source,
                format!("needle {} at {offset} runs past the end {}", entry.key, snapshot.dat_end),
            ));
        }
        record.resize(record_size as usize, 0);
        source.dat.read_exact_at(&mut record, offset).map_err(|e| Error::io(source.dat_path, e))?;
        // Copy only what the index says is there: a record whose header disagrees is
        // reported rather than carried into the new volume.
        NeedleHeader::parse(&record)
            .and_then(|h| h.expect(entry.key, entry.size))
            .map_err(|e| Error::Corrupt { id: entry.key, offset, source: e })?;
        if volume_ttl > 0 {
            let needle = Needle::parse(&record, version).map_err(|e| Error::Corrupt {
                id: entry.key,
                offset,
                source: e,
            })?;
            if needle.flags.contains(Flags::HAS_TTL) && now >= needle.last_modified.saturating_add(volume_ttl)
            {
                continue;
            }
        }
        dat_out.write_all(&record).map_err(|e| Error::io(&cpd, e))?;
        entry_bytes.clear();
        IdxEntry::new(entry.key, dat_end, entry.size)?.encode_into(source.width, &mut entry_bytes)?;
        idx_out.write_all(&entry_bytes).map_err(|e| Error::io(&cpx, e))?;
        dat_end += record_size;
    }
    dat_out.into_inner().map_err(|e| Error::io(&cpd, e.into_error()))?;
    let idx_file = idx_out.into_inner().map_err(|e| Error::io(&cpx, e.into_error()))?;
    let idx_end = idx_file.metadata().map_err(|e| Error::io(&cpx, e))?.len();
    // The old ends are 8-aligned and so is the new start, or `.idx` offsets (in units
    // of 8) could not express the catch-up's shifted records.
    if dat_end % 8 != 0 || snapshot.dat_end % 8 != 0 {
        return Err(bad(source, format!("unaligned end ({dat_end} or {})", snapshot.dat_end)));
    }
    tracing::info!(volume = source.id.0, old = snapshot.dat_end, new = dat_end, "compacted");
    Ok(Compacted { snapshot, dat_end, idx_end })
}

/// How much of the tail one catch-up read holds: the copy is bounded however much was
/// written since the snapshot.
const COPY_CHUNK: u64 = 1 << 20;

/// Appends to `.cpd`/`.cpx` what the volume appended since `done`'s snapshot: `dat_end`
/// and `idx_end` are a consistent cut of the old files (taken under the volume's write
/// lock; every record below it is complete). The `.dat` tail is copied as it is and its
/// `.idx` entries moved by the distance between the old and new ends, a piece at a
/// time. Returns the compaction as of the new cut, so a commit can catch up once
/// without the write lock and then, under it, only with what came meanwhile.
pub fn catch_up(source: &Source<'_>, done: &Compacted, dat_end: u64, idx_end: u64) -> Result<Compacted> {
    let cpd = cpd_path(source.dat_path);
    let cpx = cpx_path(source.dat_path);
    let open = |path: &Path| OpenOptions::new().write(true).open(path).map_err(|e| Error::io(path, e));
    let dat_out = open(&cpd)?;
    let idx_out = open(&cpx)?;
    let old_idx = File::open(source.idx_path).map_err(|e| Error::io(source.idx_path, e))?;
    let mut buf = Vec::new();

    let mut at = done.snapshot.dat_end;
    while at < dat_end {
        buf.resize(COPY_CHUNK.min(dat_end - at) as usize, 0);
        source.dat.read_exact_at(&mut buf, at).map_err(|e| Error::io(source.dat_path, e))?;
        let to = done.dat_end + (at - done.snapshot.dat_end);
        dat_out.write_all_at(&buf, to).map_err(|e| Error::io(&cpd, e))?;
        at += buf.len() as u64;
    }

    let entry_size = source.width.entry_size() as u64;
    let entries_chunk = COPY_CHUNK / entry_size * entry_size;
    let (mut at, mut out_at) = (done.snapshot.idx_end, done.idx_end);
    let mut moved = Vec::new();
    while at < idx_end {
        buf.resize(entries_chunk.min(idx_end - at) as usize, 0);
        old_idx.read_exact_at(&mut buf, at).map_err(|e| Error::io(source.idx_path, e))?;
        moved.clear();
        for entry in needle::idx::entries(&buf, source.width) {
            let entry = if entry.offset_units == 0 {
                entry
            } else {
                let since = entry.byte_offset().checked_sub(done.snapshot.dat_end).ok_or_else(|| {
                    bad(
                        source,
                        format!(
                            "index entry of {} at {} is older than the cut",
                            entry.key,
                            entry.byte_offset()
                        ),
                    )
                })?;
                IdxEntry::new(entry.key, done.dat_end + since, entry.size)?
            };
            entry.encode_into(source.width, &mut moved)?;
        }
        idx_out.write_all_at(&moved, out_at).map_err(|e| Error::io(&cpx, e))?;
        out_at += moved.len() as u64;
        at += buf.len() as u64;
    }
    dat_out.sync_all().map_err(|e| Error::io(&cpd, e))?;
    idx_out.sync_all().map_err(|e| Error::io(&cpx, e))?;
    Ok(Compacted {
        snapshot: Snapshot { dat_end, idx_end },
        dat_end: done.dat_end + (dat_end - done.snapshot.dat_end),
        idx_end: out_at,
    })
}

/// `<base>.cpc`: the commit marker. It exists from the moment `.cpd`/`.cpx` are complete
/// and on disk until both have replaced `.dat`/`.idx`; while it does, the new files
/// are the volume, wherever they are (see [`finish_interrupted_commit`]).
pub fn commit_marker_path(dat_path: &Path) -> PathBuf {
    dat_path.with_extension("cpc")
}

/// Renames `.cpd`/`.cpx` over `.dat`/`.idx` (both synced by [`catch_up`]), under the
/// commit marker: written and synced first, removed once both renames are on disk. A
/// crash at any step leaves either the old pair without a marker, or a marker with
/// the new files each renamed or not yet, which the next load completes.
pub fn install(dat_path: &Path, idx_path: &Path) -> Result<()> {
    let cpd = cpd_path(dat_path);
    let cpx = cpx_path(dat_path);
    let marker = commit_marker_path(dat_path);
    crash_point("caught up")?;
    File::create(&marker).and_then(|f| f.sync_all()).map_err(|e| Error::io(&marker, e))?;
    sync_parent(dat_path)?;
    crash_point("commit marked")?;
    std::fs::rename(&cpx, idx_path).map_err(|e| Error::io(&cpx, e))?;
    crash_point(".idx replaced")?;
    std::fs::rename(&cpd, dat_path).map_err(|e| Error::io(&cpd, e))?;
    crash_point(".dat replaced")?;
    sync_parent(dat_path)?;
    crash_point("directory synced")?;
    remove_marker(&marker, dat_path)
}

/// Brings a volume's files to one consistent pair before it is loaded. With the commit
/// marker, a crash stopped a commit after `.cpd`/`.cpx` were complete: the renames not
/// yet done are done now (the old `.dat` must not be read against the new `.idx`, nor
/// the reverse). Without it, `.cpd`/`.cpx` are a compaction that never committed and
/// are removed. Returns whether a commit was finished.
pub fn finish_interrupted_commit(dat_path: &Path, idx_path: &Path) -> Result<bool> {
    let marker = commit_marker_path(dat_path);
    if !marker.exists() {
        remove_files(dat_path)?;
        return Ok(false);
    }
    for (new, old) in [(cpx_path(dat_path), idx_path), (cpd_path(dat_path), dat_path)] {
        if new.exists() {
            std::fs::rename(&new, old).map_err(|e| Error::io(&new, e))?;
        }
    }
    sync_parent(dat_path)?;
    remove_marker(&marker, dat_path)?;
    Ok(true)
}

/// Removes the commit marker durably: a marker that came back after a crash would
/// make the next compaction's unfinished files the volume.
fn remove_marker(marker: &Path, dat_path: &Path) -> Result<()> {
    std::fs::remove_file(marker).map_err(|e| Error::io(marker, e))?;
    sync_parent(dat_path)
}

#[cfg(test)]
thread_local! {
    /// The commit step at which a test makes this thread's commit stop, as if the
    /// process died there: nothing after it is written (a SIGKILL leaves the page
    /// cache, so the files are as the steps before left them).
    pub static CRASH_AT: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// A failpoint between two steps of a commit (only tests set one, see [`CRASH_AT`]).
fn crash_point(step: &'static str) -> Result<()> {
    #[cfg(test)]
    if CRASH_AT.get() == Some(step) {
        return Err(Error::io(Path::new(step), std::io::Error::other("crash point")));
    }
    let _ = step;
    Ok(())
}

/// Removes `.cpd`/`.cpx` if they exist.
pub fn remove_files(dat_path: &Path) -> Result<()> {
    for path in [cpd_path(dat_path), cpx_path(dat_path)] {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    Ok(())
}

fn read_range(path: &Path, start: u64, end: u64) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = vec![0u8; end.saturating_sub(start) as usize];
    file.read_exact_at(&mut bytes, start).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// The garbage ratio weed's vacuum check compares with its threshold: bytes of
/// deleted or overwritten needles over bytes of all needles written.
pub fn garbage_ratio(deleted_bytes: u64, written_bytes: u64) -> f64 {
    if written_bytes == 0 { 0.0 } else { deleted_bytes as f64 / written_bytes as f64 }
}
