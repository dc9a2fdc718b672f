//! SeaweedFS on-disk formats, shared by the volume server and the client.
//!
//! - [`FileId`] and its parts: `3,01637037d6_2`, parsed and printed exactly as weed does;
//! - [`Needle`]: records v1/v2/v3, decoded without copying the payload and encoded
//!   byte-identical to weed's writer (padding included); [`DataSpan`] and [`NeedleMeta`]
//!   give a record's metadata from its prefix and tail alone, for streamed reads;
//!   [`Needle::verify`] is the one check of a record fetched from a location, the
//!   server's reads and the RDMA client's alike;
//! - [`SuperBlock`], [`idx`] entries with 4- or 5-byte offsets, [`Ttl`],
//!   [`ReplicaPlacement`];
//! - [`ChunkManifest`]: the JSON of a chunk-manifest needle (`weed upload -maxMB`);
//! - [`crc`]: CRC32-C in its raw and legacy masked forms, and the ETag.
//!
//! The crate is pure: no network, no files; everything works on byte slices. Every
//! malformed input is a typed error ([`FidError`], [`FormatError`]), never a panic.
//!
//! ```
//! use needle::{FileId, Needle, Version};
//!
//! let fid: FileId = "3,01637037d6".parse()?;
//! let record = Needle::new(fid.needle_id(), fid.cookie, b"hello")
//!     .with_name(b"hello.txt")
//!     .to_bytes(Version::V3)?;
//! let needle = Needle::decode(&record, Version::V3)?; // checks the CRC32-C
//! assert_eq!(needle.data, b"hello");
//! assert_eq!(needle::crc::etag(needle.verify_checksum()?), "9a71bb4c");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// Nothing here needs unsafe: the verbs live in rdma-transport.
#![forbid(unsafe_code)]

pub mod crc;
mod error;
mod fid;
pub mod idx;
mod manifest;
mod meta;
mod needle;
mod replica;
pub mod scan;
mod superblock;
mod ttl;

pub use error::FormatError;
pub use fid::{Cookie, FidError, FileId, NeedleId, VolumeId, format_key_cookie};
pub use idx::{IdxEntry, OffsetWidth};
pub use manifest::{Chunk, ChunkManifest, ManifestError};
pub use meta::{DataSpan, NeedleMeta};
pub use needle::{
    CHECKSUM_SIZE, Flags, HEADER_SIZE, MAX_BODY_SIZE, MAX_LAST_MODIFIED, MAX_NAME_LEN, MAX_PAIRS_LEN, Needle,
    NeedleHeader, TIMESTAMP_SIZE, Version,
};
pub use replica::ReplicaPlacement;
pub use superblock::{SUPER_BLOCK_SIZE, SuperBlock};
pub use ttl::{Ttl, TtlUnit};
