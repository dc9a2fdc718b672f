//! `.vif`, the volume info file weed keeps next to each `.dat`: protobuf JSON
//! (`protojson`) of `volume_server_pb.VolumeInfo`. We parse it leniently (camelCase or
//! snake_case names, 64-bit integers as strings or numbers, unknown fields ignored) and
//! write the same fields weed writes, so either server can open the other's volumes.

use std::path::Path;

use needle::OffsetWidth;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// The fields of `VolumeInfo` this server reads or writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeInfo {
    /// Remote (tiered) copies of the `.dat`; non-empty means the data is not local.
    #[serde(default)]
    pub files: Vec<serde_json::Value>,
    #[serde(default)]
    pub version: u32,
    #[serde(default)]
    pub replication: String,
    /// 4 or 5: the `.idx` offset width the volume was written with.
    #[serde(default, alias = "bytes_offset")]
    pub bytes_offset: u32,
    #[serde(default, alias = "dat_file_size", with = "int64_string")]
    pub dat_file_size: i64,
    #[serde(default, alias = "expire_at_sec", with = "int64_string")]
    pub expire_at_sec: i64,
    #[serde(default, alias = "read_only")]
    pub read_only: bool,
    #[serde(default, alias = "ec_shard_config")]
    pub ec_shard_config: Option<serde_json::Value>,
    #[serde(default, alias = "read_only_can_delete")]
    pub read_only_can_delete: bool,
}

impl VolumeInfo {
    /// What weed writes for a volume it creates or loads without a `.vif`.
    pub fn new(version: u32, width: OffsetWidth, expire_at_sec: i64) -> Self {
        Self {
            files: Vec::new(),
            version,
            replication: String::new(),
            bytes_offset: u32::from(width.bytes()),
            dat_file_size: 0,
            expire_at_sec,
            read_only: false,
            ec_shard_config: None,
            read_only_can_delete: false,
        }
    }

    /// Reads `path`; `Ok(None)` when it does not exist or is empty (weed treats an
    /// empty `.vif` as absent).
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::io(path, source)),
        };
        Self::parse(&text).map_err(|e| Error::BadVolumeInfo { path: path.to_owned(), reason: e.to_string() })
    }

    /// The parser's entry point: a `.vif` file's bytes; `Ok(None)` when they are empty
    /// or blank (weed treats such a file as absent).
    pub fn parse(text: &[u8]) -> std::result::Result<Option<Self>, serde_json::Error> {
        if text.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(text).map(Some)
    }

    /// The bytes [`VolumeInfo::save`] writes: protojson, 2-space indented like weed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_vec_pretty(self).expect("VolumeInfo always serializes");
        text.push(b'\n');
        text
    }

    /// Writes `path` atomically (temp file + rename), 2-space indented like weed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self.to_bytes();
        // Synced, and its directory entry: a `.vif` lost or torn in a power loss would
        // forget a read-only mark, or fail the volume's load.
        crate::durable::replace_file(path, &text)
    }

    /// The offset width this file declares, checked against the server's flag: a
    /// mismatch would make every `.idx` entry decode wrongly.
    pub fn check_width(&self, path: &Path, width: OffsetWidth) -> Result<()> {
        // Very old weed wrote no bytesOffset; their volumes are 4-byte ones.
        let declared = if self.bytes_offset == 0 { 4 } else { self.bytes_offset };
        if declared == u32::from(width.bytes()) {
            Ok(())
        } else {
            Err(Error::OffsetWidthMismatch { path: path.to_owned(), declared, flag: width.bytes() })
        }
    }
}

/// protojson writes int64 as a JSON string; accept numbers as well.
mod int64_string {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Str(String),
            Num(i64),
        }
        match Either::deserialize(d)? {
            Either::Num(n) => Ok(n),
            Either::Str(s) if s.is_empty() => Ok(0),
            Either::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {

    /// Found by the vif_json fuzz target: a number in a field we keep without knowing it
    /// (here 1.07e50 in a `files` entry) must survive a save unchanged.
    #[test]
    fn unknown_numbers_survive_a_save_exactly() {
        let text = br#"{"version":3,"files":[{"dat_file_size":106666666666666666666666666666666666666666666666624}]}"#;
        let info = VolumeInfo::parse(text).unwrap().unwrap();
        let again = VolumeInfo::parse(&info.to_bytes()).unwrap().unwrap();
        assert_eq!(again, info);
    }
    use super::*;

    #[test]
    fn parses_what_weed_4_48_writes() {
        let text = r#"{
  "files":  [],
  "version":  3,
  "replication":  "",
  "bytesOffset":  5,
  "datFileSize":  "0",
  "expireAtSec":  "1795671783",
  "readOnly":  false,
  "ecShardConfig":  null,
  "readOnlyCanDelete":  false
}"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("8.vif");
        std::fs::write(&path, text).unwrap();
        let info = VolumeInfo::load(&path).unwrap().unwrap();
        assert_eq!(info.bytes_offset, 5);
        assert_eq!(info.expire_at_sec, 1_795_671_783);
        assert!(info.check_width(&path, OffsetWidth::Five).is_ok());
        let err = info.check_width(&path, OffsetWidth::Four).unwrap_err();
        assert!(err.to_string().contains("bytesOffset 5"), "{err}");
    }

    #[test]
    fn round_trips_and_tolerates_variants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.vif");
        let info = VolumeInfo::new(3, OffsetWidth::Four, 0);
        info.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"bytesOffset\": 4") && text.contains("\"datFileSize\": \"0\""), "{text}");
        assert_eq!(VolumeInfo::load(&path).unwrap(), Some(info));
        std::fs::write(&path, r#"{"bytes_offset": 4, "read_only": true, "expireAtSec": 7, "other": 1}"#)
            .unwrap();
        let info = VolumeInfo::load(&path).unwrap().unwrap();
        assert!(info.read_only && info.expire_at_sec == 7 && info.bytes_offset == 4);
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(VolumeInfo::load(&path).unwrap(), None);
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(VolumeInfo::load(&path), Err(Error::BadVolumeInfo { .. })));
        assert_eq!(VolumeInfo::load(&dir.path().join("missing.vif")).unwrap(), None);
    }
}
