//! The one error type for malformed on-disk bytes and unrepresentable values.

/// Why bytes are not a valid SeaweedFS structure, or why a value cannot be encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{what} needs {needed} bytes, only {available} available")]
    Truncated { what: &'static str, needed: usize, available: usize },
    #[error("unsupported needle/volume version {0} (1, 2 or 3 expected)")]
    UnsupportedVersion(u8),
    #[error("needle body: {field} runs past the end of the {body_len}-byte body")]
    FieldOverrun { field: &'static str, body_len: usize },
    #[error("needle body has {count} bytes after its last field")]
    TrailingBodyBytes { count: usize },
    #[error(
        "needle header says id {found_id:#x} size {found_size}, expected id {expected_id:#x} size {expected_size}"
    )]
    HeaderMismatch { expected_id: u64, expected_size: u32, found_id: u64, found_size: u32 },
    #[error("needle cookie {found:08x} does not match the requested {expected:08x}")]
    CookieMismatch { expected: u32, found: u32 },
    #[error("CRC32-C mismatch: stored {stored:08x}, data has {computed:08x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("{field} is {len} bytes, at most {max} fit")]
    FieldTooLong { field: &'static str, len: usize, max: usize },
    #[error("version 1 needles carry no flags or metadata (flags {flags:#04x})")]
    MetadataInV1 { flags: u8 },
    #[error("TTL {0:?} is not <count>[m|h|d|w|M|y] (a bare count means minutes)")]
    BadTtl(String),
    #[error("unknown TTL unit {0} (0..=6 expected)")]
    BadTtlUnit(u8),
    #[error("replica placement {0:?} is not three digits 0..=2")]
    BadReplicaPlacement(String),
    #[error("offset {offset} does not fit a {width}-byte .idx offset")]
    OffsetTooLarge { offset: u64, width: u8 },
    #[error("offset {0} is not a multiple of 8")]
    UnalignedOffset(u64),
}

/// The first `len` bytes of `bytes`, or [`FormatError::Truncated`] naming `what`.
pub(crate) fn prefix<'a>(bytes: &'a [u8], len: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
    bytes.get(..len).ok_or(FormatError::Truncated { what, needed: len, available: bytes.len() })
}

/// The first `N` bytes of `bytes` as an array, or [`FormatError::Truncated`].
pub(crate) fn array_prefix<'a, const N: usize>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<&'a [u8; N], FormatError> {
    prefix(bytes, N, what).map(|b| b.try_into().expect("prefix returned N bytes"))
}
