//! Lists and checks every volume in a directory written by `weed volume` (or by ours):
//! the superblock, each record in `.dat` (CRC-verified), and whether `.idx` agrees.
//!
//! `cargo run -p needle --example inspect-volumes -- DIR`

use needle::idx::{self, OffsetWidth};
use needle::{SuperBlock, Version};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let mut volumes: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "dat"))
            .collect(),
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    volumes.sort();
    if volumes.is_empty() {
        println!("{}: no volumes (*.dat) yet", dir.display());
    }
    let mut healthy = true;
    for dat in &volumes {
        match inspect(dat) {
            Ok(summary) => println!("{summary}"),
            Err(problem) => {
                healthy = false;
                println!("{}: PROBLEM: {problem}", dat.display());
            }
        }
    }
    if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The `.idx` offset width a volume's `.vif` declares (weed writes 4 when absent).
fn offset_width(dat: &Path) -> Result<OffsetWidth, String> {
    let Ok(text) = std::fs::read_to_string(dat.with_extension("vif")) else {
        return Ok(OffsetWidth::Four);
    };
    let vif: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!(".vif: {e}"))?;
    let bytes_offset = vif.get("bytesOffset").and_then(|v| v.as_u64()).unwrap_or(4);
    OffsetWidth::from_bytes_offset(bytes_offset as u32).ok_or(format!(".vif: bytesOffset {bytes_offset}"))
}

fn inspect(dat_path: &Path) -> Result<String, String> {
    let dat = std::fs::read(dat_path).map_err(|e| e.to_string())?;
    let superblock = SuperBlock::parse(&dat).map_err(|e| e.to_string())?;
    let version: Version = superblock.version;
    let width = offset_width(dat_path)?;

    // Every record, in file order, CRC-checked; the last one seen per id wins.
    let mut records = HashMap::new();
    let mut end = superblock.block_size() as u64;
    let mut count = 0;
    for record in needle::scan::records(&dat, version, end) {
        let record = record.map_err(|e| e.to_string())?;
        record.needle.verify_checksum().map_err(|e| format!("record at {}: {e}", record.offset))?;
        records.insert(record.offset, record);
        end = record.offset + record.record_size;
        count += 1;
    }

    let idx_bytes = std::fs::read(dat_path.with_extension("idx")).map_err(|e| format!(".idx: {e}"))?;
    let mut live = HashMap::new();
    for entry in idx::entries(&idx_bytes, width) {
        let record = records.get(&entry.byte_offset()).ok_or(format!(
            ".idx entry for {} points at {}, where no record starts",
            entry.key,
            entry.byte_offset()
        ))?;
        if record.needle.id != entry.key {
            return Err(format!(
                ".idx entry for {} finds needle {} at {}",
                entry.key, record.needle.id, record.offset
            ));
        }
        if entry.is_deletion() {
            live.remove(&entry.key);
        } else {
            live.insert(entry.key, record.needle.data.len());
        }
    }
    Ok(format!(
        "{}: v{} replication {} ttl {:?} revision {}, {} records, {} live needles ({} data bytes), \
         {}-byte offsets, .dat ends {}",
        dat_path.display(),
        version as u8,
        superblock.replica_placement,
        superblock.ttl.to_string(),
        superblock.compaction_revision,
        count,
        live.len(),
        live.values().sum::<usize>(),
        width.bytes(),
        if end == dat.len() as u64 {
            "at the last record".to_owned()
        } else {
            format!("{} bytes past it", dat.len() as u64 - end)
        },
    ))
}
