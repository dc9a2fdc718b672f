//! CRC32-C (Castagnoli) as SeaweedFS stores it: over the needle's stored `Data` only
//! (the gzip bytes when the needle is compressed), written raw since weed 3.09 and in a
//! "masked" form before that. Readers accept both; the ETag is always the raw value.
//!
//! The `crc32c` crate uses the SSE4.2 `crc32` instruction when the CPU has it.

/// The raw CRC32-C of `data`, as weed >= 3.09 writes it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Extends a running CRC32-C with more bytes (for streamed data).
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The legacy stored form (weed < 3.09): `rotr32(crc, 15) + 0xa282ead8`.
pub fn legacy_masked(raw: u32) -> u32 {
    raw.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Whether a stored checksum matches data whose raw CRC is `raw`, in either form.
pub fn stored_checksum_matches(stored: u32, raw: u32) -> bool {
    stored == raw || stored == legacy_masked(raw)
}

/// The ETag weed serves: the raw CRC as exactly 8 lower-case hex digits (unquoted).
pub fn etag(raw: u32) -> String {
    format!("{raw:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b"hello"), 0x9a71_bb4c);
        assert_eq!(legacy_masked(0x9a71_bb4c), 0x191c_1fbb);
        // weed/storage/needle/43.dat stores the masked form of raw 3ce556c7.
        assert_eq!(legacy_masked(0x3ce5_56c7), 0x5011_64a2);
        assert_eq!(etag(0x9a71_bb4c), "9a71bb4c");
        assert_eq!(etag(0), "00000000");
        assert_eq!(crc32c_append(crc32c(b"hel"), b"lo"), crc32c(b"hello"));
    }

    #[test]
    fn both_stored_forms_are_accepted_and_nothing_else() {
        let raw = crc32c(b"hello seaweed");
        assert!(stored_checksum_matches(raw, raw));
        assert!(stored_checksum_matches(legacy_masked(raw), raw));
        assert!(!stored_checksum_matches(raw ^ 1, raw));
    }
}
