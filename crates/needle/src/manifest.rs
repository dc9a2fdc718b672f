//! Chunk manifests: the JSON a needle flagged [`Flags::CHUNK_MANIFEST`](crate::Flags)
//! holds instead of file data (`weed upload -maxMB`, `weed submit`). It lists the needles
//! ("chunks") whose data, concatenated in offset order, is the file:
//!
//! ```json
//! {"name":"big.bin","mime":"application/octet-stream","size":3670016,
//!  "chunks":[{"fid":"3,01637037d6","offset":0,"size":1048576}, ...]}
//! ```
//!
//! weed stores the JSON gzip-compressed when the needle is flagged compressed; callers
//! gunzip first (this crate does no I/O). Every key is optional in weed's encoder
//! (`omitempty`), so a missing one reads as empty or zero.

use crate::{FidError, FileId};
use serde::{Deserialize, Serialize};

/// A parsed chunk manifest, its chunks sorted by offset and checked to tile the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkManifest {
    /// The file's name, empty when not given.
    pub name: String,
    /// The file's MIME type, empty when not given.
    pub mime: String,
    /// The size the uploader declared (weed reports it on DELETE). The bytes served are
    /// [`ChunkManifest::total_size`], which weed computes the same way.
    pub size: u64,
    pub chunks: Vec<Chunk>,
}

/// One chunk: the needle `fid` holds bytes `offset..offset + size` of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub fid: FileId,
    pub offset: u64,
    pub size: u64,
}

/// Why manifest bytes are not a usable manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("chunk manifest is not valid JSON of weed's shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("chunk manifest lists a bad file id: {0}")]
    BadFid(#[from] FidError),
    #[error("chunk manifest has a negative offset or size in chunk {fid}")]
    Negative { fid: String },
    /// Chunks that overlap or leave a gap: the file they describe is ambiguous.
    #[error("chunk {fid} starts at {offset}, but the chunks before it end at {expected}")]
    NotContiguous { fid: String, offset: u64, expected: u64 },
}

/// weed's `operation.ChunkManifest` field names.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    mime: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    size: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    chunks: Vec<WireChunk>,
}

#[derive(Serialize, Deserialize)]
struct WireChunk {
    #[serde(default)]
    fid: String,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    size: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl ChunkManifest {
    /// Parses plain (not gzip) manifest JSON; chunks are sorted by offset, as weed does,
    /// and must then follow each other without gap or overlap from offset 0.
    pub fn parse(json: &[u8]) -> Result<Self, ManifestError> {
        let wire: Wire = serde_json::from_slice(json)?;
        let mut chunks = Vec::with_capacity(wire.chunks.len());
        for c in wire.chunks {
            let fid: FileId = c.fid.parse()?;
            if c.offset < 0 || c.size < 0 {
                return Err(ManifestError::Negative { fid: c.fid });
            }
            chunks.push(Chunk { fid, offset: c.offset as u64, size: c.size as u64 });
        }
        chunks.sort_by_key(|c| c.offset);
        let mut expected = 0u64;
        for c in &chunks {
            if c.offset != expected {
                return Err(ManifestError::NotContiguous {
                    fid: c.fid.to_string(),
                    offset: c.offset,
                    expected,
                });
            }
            expected = expected.saturating_add(c.size);
        }
        Ok(Self { name: wire.name, mime: wire.mime, size: wire.size.max(0) as u64, chunks })
    }

    /// The JSON weed's uploader writes (keys in its order, empty ones left out).
    pub fn to_json(&self) -> String {
        let wire = Wire {
            name: self.name.clone(),
            mime: self.mime.clone(),
            size: self.size as i64,
            chunks: self
                .chunks
                .iter()
                .map(|c| WireChunk { fid: c.fid.to_string(), offset: c.offset as i64, size: c.size as i64 })
                .collect(),
        };
        serde_json::to_string(&wire).expect("a manifest serializes")
    }

    /// The file's length: the chunks' sizes added up.
    pub fn total_size(&self) -> u64 {
        self.chunks.iter().map(|c| c.size).sum()
    }

    /// The chunks holding bytes `start..end` of the file, each with the part of its own
    /// data that falls in the range.
    pub fn chunks_in(&self, start: u64, end: u64) -> impl Iterator<Item = (&Chunk, std::ops::Range<u64>)> {
        self.chunks.iter().filter_map(move |c| {
            let (from, to) = (start.max(c.offset), end.min(c.offset + c.size));
            (from < to).then(|| (c, from - c.offset..to - c.offset))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEED: &str = r#"{"name":"big.bin","mime":"application/octet-stream","size":5,"chunks":[{"fid":"3,02a1b2c3d4","offset":2,"size":3},{"fid":"3,01637037d6","offset":0,"size":2}]}"#;

    #[test]
    fn parses_weeds_json_and_sorts_by_offset() {
        let m = ChunkManifest::parse(WEED.as_bytes()).unwrap();
        assert_eq!(
            (m.name.as_str(), m.mime.as_str(), m.size, m.total_size()),
            ("big.bin", "application/octet-stream", 5, 5)
        );
        assert_eq!(m.chunks[0].fid.to_string(), "3,01637037d6");
        assert_eq!(m.chunks[1].offset, 2);
        let again = ChunkManifest::parse(m.to_json().as_bytes()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn ranges_map_to_chunk_parts() {
        let m = ChunkManifest::parse(WEED.as_bytes()).unwrap();
        let parts: Vec<_> = m.chunks_in(1, 4).map(|(c, r)| (c.offset, r)).collect();
        assert_eq!(parts, vec![(0, 1..2), (2, 0..2)]);
        assert_eq!(m.chunks_in(5, 9).count(), 0);
        assert_eq!(m.chunks_in(2, 2).count(), 0);
    }

    #[test]
    fn rejects_what_is_not_a_file() {
        let bad = [
            r#"{"chunks":[{"fid":"nope","offset":0,"size":1}]}"#,
            r#"{"chunks":[{"fid":"3,01637037d6","offset":-1,"size":1}]}"#,
            r#"{"chunks":[{"fid":"3,01637037d6","offset":1,"size":1}]}"#,
            r#"{"chunks":[{"fid":"3,01637037d6","offset":0,"size":2},{"fid":"3,02a1b2c3d4","offset":1,"size":1}]}"#,
            "[1,2]",
            "",
        ];
        for json in bad {
            assert!(ChunkManifest::parse(json.as_bytes()).is_err(), "{json}");
        }
        let empty = ChunkManifest::parse(b"{}").unwrap();
        assert_eq!((empty.total_size(), empty.chunks.len()), (0, 0));
    }
}
