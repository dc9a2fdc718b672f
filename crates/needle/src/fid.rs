//! File ids: `<volumeId>,<needleIdHex><cookieHex8>[_<delta>]`, parsed and printed
//! exactly as SeaweedFS does (`weed/storage/needle/file_id.go`, `needle.go`).
//!
//! Parsing is strict: decimal volume ids without sign or whitespace, hex keys without
//! `0x`, `+` or `_`, a key+cookie string of 9..=24 hex digits whose last 8 are the
//! cookie, and an optional decimal `_N` delta that must not overflow the needle id.
//! The one place we are stricter than Go: a volume id of 2^32 or more is an error,
//! where Go silently wraps it.

use std::fmt;
use std::str::FromStr;

/// A volume number (`uint32` in SeaweedFS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VolumeId(pub u32);

/// A needle key, unique within a volume (`uint64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NeedleId(pub u64);

/// The random per-needle secret that makes file ids unguessable (`uint32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Cookie(pub u32);

/// A parsed file id. `key` is the id as written before the `_N` suffix; the needle it
/// names is [`FileId::needle_id`] (`key + delta`), and all `_N` siblings share the cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    pub volume: VolumeId,
    pub key: NeedleId,
    pub cookie: Cookie,
    /// The `_N` suffix, if present (`Some(0)` prints as `_0`, so it round-trips).
    pub delta: Option<u64>,
}

/// Why a string is not a file id. Every variant carries the offending input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FidError {
    #[error("file id {input:?} has no ',' between volume id and needle key")]
    MissingComma { input: String },
    #[error("volume id {input:?} is not a decimal number below 2^32")]
    BadVolumeId { input: String },
    #[error("needle key+cookie {input:?} is too short: more than 8 hex digits are needed")]
    KeyTooShort { input: String },
    #[error("needle key+cookie {input:?} is too long: at most 24 hex digits")]
    KeyTooLong { input: String },
    #[error("needle key+cookie {input:?} is not hexadecimal")]
    NotHex { input: String },
    #[error("delta {input:?} after '_' is not a decimal number")]
    BadDelta { input: String },
    #[error("delta {delta} overflows needle id {key:#x}")]
    DeltaOverflow { key: u64, delta: u64 },
}

impl FileId {
    pub fn new(volume: VolumeId, key: NeedleId, cookie: Cookie) -> Self {
        Self { volume, key, cookie, delta: None }
    }

    /// Parses the part after the comma, `<key><cookie>[_<delta>]`, for a volume already
    /// known (URLs carry the volume in their own segment: `/3/01637037d6_1`).
    pub fn parse_in_volume(volume: VolumeId, key_cookie_delta: &str) -> Result<Self, FidError> {
        let (key_cookie, delta) = split_delta(key_cookie_delta)?;
        let (key, cookie) = parse_key_cookie(key_cookie)?;
        if let Some(delta) = delta {
            key.0.checked_add(delta).ok_or(FidError::DeltaOverflow { key: key.0, delta })?;
        }
        Ok(FileId { volume, key, cookie, delta })
    }

    /// The needle this id names: `key + delta`. Parsing guarantees no overflow;
    /// for a hand-built id with an overflowing delta this saturates.
    pub fn needle_id(&self) -> NeedleId {
        NeedleId(self.key.0.saturating_add(self.delta.unwrap_or(0)))
    }

    /// The `_N`-th sibling of this id (what a client does with `count=N` from assign).
    pub fn with_delta(self, delta: u64) -> Self {
        Self { delta: Some(delta), ..self }
    }

    /// The part after the comma, without the delta: the key and cookie in weed's form.
    pub fn key_cookie_hex(&self) -> String {
        format_key_cookie(self.key, self.cookie)
    }
}

impl FromStr for VolumeId {
    type Err = FidError;
    fn from_str(s: &str) -> Result<Self, FidError> {
        parse_decimal(s)
            .and_then(|v| u32::try_from(v).ok())
            .map(VolumeId)
            .ok_or_else(|| FidError::BadVolumeId { input: s.to_owned() })
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for NeedleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl FromStr for FileId {
    type Err = FidError;

    fn from_str(s: &str) -> Result<Self, FidError> {
        let (volume, rest) =
            s.split_once(',').ok_or_else(|| FidError::MissingComma { input: s.to_owned() })?;
        FileId::parse_in_volume(volume.parse()?, rest)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{}", self.volume, self.key_cookie_hex())?;
        if let Some(delta) = self.delta {
            write!(f, "_{delta}")?;
        }
        Ok(())
    }
}

/// Splits `key_cookie[_delta]` at the last `_`, as `Needle.ParsePath` does.
fn split_delta(s: &str) -> Result<(&str, Option<u64>), FidError> {
    match s.rfind('_') {
        Some(at) if at > 0 => {
            let delta = &s[at + 1..];
            let value = parse_decimal(delta).ok_or_else(|| FidError::BadDelta { input: delta.to_owned() })?;
            Ok((&s[..at], Some(value)))
        }
        _ => Ok((s, None)),
    }
}

/// Parses the key+cookie hex string (no delta): the last 8 digits are the cookie.
fn parse_key_cookie(s: &str) -> Result<(NeedleId, Cookie), FidError> {
    if s.len() <= 8 {
        return Err(FidError::KeyTooShort { input: s.to_owned() });
    }
    if s.len() > 24 {
        return Err(FidError::KeyTooLong { input: s.to_owned() });
    }
    // Checked explicitly: from_str_radix would accept a leading '+'.
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FidError::NotHex { input: s.to_owned() });
    }
    let split = s.len() - 8;
    let key = u64::from_str_radix(&s[..split], 16).map_err(|_| FidError::NotHex { input: s.to_owned() })?;
    let cookie =
        u32::from_str_radix(&s[split..], 16).map_err(|_| FidError::NotHex { input: s.to_owned() })?;
    Ok((NeedleId(key), Cookie(cookie)))
}

/// Formats key and cookie as weed does: 8 bytes of key and 4 of cookie, big-endian,
/// with leading zero *bytes* of the key stripped. Key 0 therefore prints as the cookie
/// alone, which no parser accepts: SeaweedFS never issues key 0.
pub fn format_key_cookie(key: NeedleId, cookie: Cookie) -> String {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&key.0.to_be_bytes());
    bytes[8..].copy_from_slice(&cookie.0.to_be_bytes());
    let first = bytes[..8].iter().position(|&b| b != 0).unwrap_or(8);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(24);
    for &b in &bytes[first..] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

/// A plain decimal `u64`: digits only (no sign, no whitespace), leading zeros allowed.
fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kc(s: &str) -> Result<(u64, u32), FidError> {
        parse_key_cookie(s).map(|(k, c)| (k.0, c.0))
    }

    #[test]
    fn weed_test_vectors() {
        assert_eq!(kc("4ed4c8116e41"), Ok((0x4ed4, 0xc8116e41)));
        assert_eq!(kc("4ed401116e41"), Ok((0x4ed4, 0x01116e41)));
        assert_eq!(kc("ed400116e41"), Ok((0xed4, 0x00116e41)));
        assert_eq!(kc("fed4c8114ed4c811f0116e41"), Ok((0xfed4c8114ed4c811, 0xf0116e41)));
        assert_eq!(kc("123456789"), Ok((0x1, 0x23456789)));
        assert_eq!(kc("abcd0000abcd"), Ok((0xabcd, 0x0000abcd)));
        assert_eq!(kc("ABCD0000ABCD"), Ok((0xabcd, 0x0000abcd)));
        assert!(matches!(kc("4ed4c811"), Err(FidError::KeyTooShort { .. })));
        assert!(matches!(kc("4ed4c8114ed4c8114ed4c8111"), Err(FidError::KeyTooLong { .. })));
        assert!(matches!(kc("helloworld"), Err(FidError::NotHex { .. })));
        assert!(matches!(kc("+12345678a"), Err(FidError::NotHex { .. })));
        assert!(matches!(kc("0x12345678"), Err(FidError::NotHex { .. })));
        // Key 0 parses from an explicit digit, but prints as the cookie alone (weed strips
        // every leading zero byte of the key), which is too short to parse back.
        let zero: FileId = "3,0aaa0a0aa".parse().unwrap();
        assert_eq!((zero.key.0, zero.to_string()), (0, "3,aaa0a0aa".to_owned()));
        assert!(matches!(zero.to_string().parse::<FileId>(), Err(FidError::KeyTooShort { .. })));
    }

    #[test]
    fn full_ids_with_delta() {
        let fid: FileId = "3,01637037d6".parse().unwrap();
        assert_eq!(fid, FileId::new(VolumeId(3), NeedleId(1), Cookie(0x637037d6)));
        assert_eq!(fid.to_string(), "3,01637037d6");

        let fid: FileId = "4,0b8faef8b2_2".parse().unwrap();
        assert_eq!(fid.key, NeedleId(0x0b));
        assert_eq!(fid.needle_id(), NeedleId(0x0d));
        assert_eq!(fid.cookie, Cookie(0x8faef8b2));
        assert_eq!(fid.to_string(), "4,0b8faef8b2_2");

        assert_eq!("003,01637037d6".parse::<FileId>().unwrap().volume, VolumeId(3));
        let overflow = "1,ffffffffffffffff00000000_1".parse::<FileId>();
        assert_eq!(overflow, Err(FidError::DeltaOverflow { key: u64::MAX, delta: 1 }));
        assert!(matches!("1,01637037d6_x".parse::<FileId>(), Err(FidError::BadDelta { .. })));
        assert!(matches!("1,01637037d6_".parse::<FileId>(), Err(FidError::BadDelta { .. })));
        assert!(matches!("1,01637037d6_+1".parse::<FileId>(), Err(FidError::BadDelta { .. })));
    }

    #[test]
    fn malformed_volume_ids_carry_the_input() {
        for bad in ["", "-3", "+3", " 3", "3 ", "x", "4294967296"] {
            let err = format!("{bad},01637037d6").parse::<FileId>().unwrap_err();
            assert_eq!(err, FidError::BadVolumeId { input: bad.to_owned() }, "{bad:?}");
        }
        assert_eq!(
            "301637037d6".parse::<FileId>(),
            Err(FidError::MissingComma { input: "301637037d6".into() })
        );
    }

    #[test]
    fn formatting_strips_zero_bytes_not_nibbles() {
        assert_eq!(format_key_cookie(NeedleId(0x123), Cookie(1)), "012300000001");
        assert_eq!(format_key_cookie(NeedleId(0), Cookie(0x637037d6)), "637037d6");
        assert_eq!(format_key_cookie(NeedleId(u64::MAX), Cookie(0)), "ffffffffffffffff00000000");
    }
}
