//! Crash-recovery scenarios on real files: each one damages a volume the way a crash
//! can, reloads it, and checks what survives and that the files are consistent again.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use needle::{Cookie, Needle, NeedleId, OffsetWidth, ReplicaPlacement, Ttl, Version, VolumeId};

use crate::volume::{IndexKind, Volume, VolumeOptions, WriteOutcome};

const OPTS: VolumeOptions =
    VolumeOptions { width: OffsetWidth::Five, index: IndexKind::Memory, fsync: false };

fn needle(id: u64, data: &[u8]) -> Needle<'_> {
    Needle::new(NeedleId(id), Cookie(0xabc), data).with_name(b"n").with_mime(b"").with_last_modified(1)
}

/// A volume with needles 1..=n, returned closed; gives the `.dat` and `.idx` lengths.
fn volume_with(dir: &Path, n: u64) -> (u64, u64) {
    let v = Volume::create(dir, "", VolumeId(1), ReplicaPlacement::default(), Ttl::EMPTY, OPTS).unwrap();
    for i in 1..=n {
        v.write(&needle(i, &vec![i as u8; 100 * i as usize])).unwrap();
    }
    (len(&dir.join("1.dat")), len(&dir.join("1.idx")))
}

fn len(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn append(p: &Path, bytes: &[u8]) {
    OpenOptions::new().append(true).open(p).unwrap().write_all(bytes).unwrap();
}

fn reload(dir: &Path) -> Volume {
    Volume::load(dir, "", VolumeId(1), OPTS).unwrap()
}

fn assert_all_readable(v: &Volume, n: u64) {
    for i in 1..=n {
        assert_eq!(
            v.read(NeedleId(i), Cookie(0xabc)).unwrap().needle().data,
            vec![i as u8; 100 * i as usize]
        );
    }
}

#[test]
fn torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let (dat_len, idx_len) = volume_with(dir.path(), 3);
    let record = needle(4, &[4u8; 400]).to_bytes(Version::V3).unwrap();
    append(&dir.path().join("1.dat"), &record[..record.len() / 2]);
    let v = reload(dir.path());
    assert_eq!(v.load_report().truncated_dat_bytes, (record.len() / 2) as u64);
    assert_eq!((len(&dir.path().join("1.dat")), len(&dir.path().join("1.idx"))), (dat_len, idx_len));
    assert_all_readable(&v, 3);
    assert!(
        matches!(v.write(&needle(5, b"after")).unwrap(), WriteOutcome::Written(l) if l.offset == dat_len)
    );
}

#[test]
fn unindexed_records_are_reindexed_and_a_partial_entry_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (dat_len, idx_len) = volume_with(dir.path(), 4);
    let entry = OPTS.width.entry_size() as u64;
    // The last two writes reached .dat, their .idx entries did not (one only partly).
    let idx = OpenOptions::new().write(true).open(dir.path().join("1.idx")).unwrap();
    idx.set_len(idx_len - 2 * entry + 5).unwrap();
    let v = reload(dir.path());
    let report = v.load_report();
    assert_eq!((report.truncated_idx_bytes, report.recovered_records), (5, 2));
    assert_eq!((len(&dir.path().join("1.dat")), len(&dir.path().join("1.idx"))), (dat_len, idx_len));
    assert_all_readable(&v, 4);
    assert_eq!(v.status().stats.file_count, 4);
}

#[test]
fn unindexed_tombstone_is_recovered_as_a_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let (_, idx_len) = volume_with(dir.path(), 2);
    let v = reload(dir.path());
    v.delete(NeedleId(2), Cookie(0xabc)).unwrap();
    v.write(&Needle::new(NeedleId(3), Cookie(1), b"")).unwrap(); // an empty file: also a size-0 record
    drop(v);
    OpenOptions::new().write(true).open(dir.path().join("1.idx")).unwrap().set_len(idx_len).unwrap();
    let v = reload(dir.path());
    assert_eq!(v.load_report().recovered_records, 2);
    assert!(matches!(v.read(NeedleId(2), Cookie(0xabc)), Err(crate::Error::AlreadyDeleted(_))));
    assert_eq!(v.read(NeedleId(3), Cookie(1)).unwrap().needle().data, b"");
    assert_all_readable(&v, 1);
}

#[test]
fn index_entries_without_their_record_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (dat_len, idx_len) = volume_with(dir.path(), 3);
    // Power loss without fsync: the .idx entry of needle 3 reached the disk, its record did not.
    let third = Version::V3.record_size(needle(3, &[3u8; 300]).body_size(Version::V3).unwrap());
    OpenOptions::new().write(true).open(dir.path().join("1.dat")).unwrap().set_len(dat_len - third).unwrap();
    let v = reload(dir.path());
    assert_eq!(v.load_report().dropped_idx_entries, 1);
    assert_eq!(len(&dir.path().join("1.idx")), idx_len - OPTS.width.entry_size() as u64);
    assert_all_readable(&v, 2);
    assert!(matches!(v.read(NeedleId(3), Cookie(0xabc)), Err(crate::Error::NeedleNotFound(_))));
}

#[test]
fn missing_idx_is_rebuilt_from_the_dat_and_zero_holes_are_not_records() {
    let dir = tempfile::tempdir().unwrap();
    let (dat_len, idx_len) = volume_with(dir.path(), 3);
    std::fs::remove_file(dir.path().join("1.idx")).unwrap();
    append(&dir.path().join("1.dat"), &[0u8; 64]);
    let v = reload(dir.path());
    assert_eq!(v.load_report().recovered_records, 3);
    assert_eq!(v.load_report().truncated_dat_bytes, 64);
    assert_eq!((len(&dir.path().join("1.dat")), len(&dir.path().join("1.idx"))), (dat_len, idx_len));
    assert_all_readable(&v, 3);
}

#[test]
fn rocksdb_map_catches_up_with_an_idx_written_while_it_was_away() {
    let dir = tempfile::tempdir().unwrap();
    let rocks = VolumeOptions { index: IndexKind::Rocksdb, ..OPTS };
    let v =
        Volume::create(dir.path(), "", VolumeId(1), ReplicaPlacement::default(), Ttl::EMPTY, rocks).unwrap();
    v.write(&needle(1, b"one")).unwrap();
    drop(v);
    // Another server (the memory map here, weed in real life) appends two writes.
    let v = reload(dir.path());
    v.write(&needle(2, b"two")).unwrap();
    v.delete(NeedleId(1), Cookie(0xabc)).unwrap();
    drop(v);
    let v = Volume::load(dir.path(), "", VolumeId(1), rocks).unwrap();
    assert_eq!(v.load_report().replayed_entries, 2, "only the tail beyond the watermark");
    assert_eq!(v.read(NeedleId(2), Cookie(0xabc)).unwrap().needle().data, b"two");
    assert!(v.read(NeedleId(1), Cookie(0xabc)).is_err());
    // The .idx shrank below the watermark (a dropped entry): the map is rebuilt.
    drop(v);
    let idx = dir.path().join("1.idx");
    let entry = OPTS.width.entry_size() as u64;
    OpenOptions::new().write(true).open(&idx).unwrap().set_len(len(&idx) - entry).unwrap();
    let v = Volume::load(dir.path(), "", VolumeId(1), rocks).unwrap();
    let report = v.load_report();
    assert_eq!((report.replayed_entries, report.recovered_records), (2, 1), "rebuilt, tombstone re-indexed");
    assert!(matches!(v.read(NeedleId(1), Cookie(0xabc)), Err(crate::Error::AlreadyDeleted(_))));
}

#[test]
fn version_2_volumes_load_read_and_append_in_their_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let mut dat = needle::SuperBlock {
        version: Version::V2,
        ..needle::SuperBlock::new(ReplicaPlacement::default(), Ttl::EMPTY)
    }
    .to_bytes()
    .unwrap();
    let old = needle(1, b"written by an old weed");
    let offset = dat.len() as u64;
    old.encode_into(Version::V2, &mut dat).unwrap();
    std::fs::write(dir.path().join("1.dat"), &dat).unwrap();
    let entry = needle::IdxEntry::new(NeedleId(1), offset, old.body_size(Version::V2).unwrap()).unwrap();
    std::fs::write(dir.path().join("1.idx"), entry.to_bytes(OPTS.width).unwrap()).unwrap();
    let v = reload(dir.path());
    assert_eq!(v.version(), Version::V2);
    assert_eq!(v.read(NeedleId(1), Cookie(0xabc)).unwrap().needle().data, b"written by an old weed");
    let WriteOutcome::Written(loc) = v.write(&needle(2, b"appended")).unwrap() else { panic!("not written") };
    assert_eq!((loc.version, loc.offset), (Version::V2, dat.len() as u64));
    drop(v);
    let v = reload(dir.path());
    assert!(!v.load_report().repaired());
    assert_eq!(v.read(NeedleId(2), Cookie(0xabc)).unwrap().needle().data, b"appended");
}
