//! The one-sided index's registered header: how a server lays it out and a client
//! READs it. One definition for both sides, so they cannot disagree about a byte.
//!
//! Per volume, one registered buffer of little-endian `u64` words:
//!
//! ```text
//! word 0          magic "SWRDIDX1"
//! word 1          entry size (16 or 17) | needle version << 8 | bucket bits << 16
//! word 2          generation: compaction revision | incarnation << 16 (each opening of
//!                 the volume's index counts one), bit 63 set once retired
//! word 3          idx length: bytes of the .idx mirror that are complete (published last)
//! word 4          extents in the table
//! word 5          extent size (bytes of the .dat per table entry)
//! words 6, 7      reserved (0)
//! words 8..72     .idx mirror chunks: 32 x (address, rkey); chunk i holds
//!                 4096 << i entries, so a mirror never moves and never re-registers
//! words 72..      .dat extent table: 2048 x (seq, address, rkey | len << 32, seq)
//! words ..+1024   bucket versions: needle id hashed into 2^10 counters
//! ```
//!
//! **Why the client can trust what it READs.** The server writes an entry's mirror
//! bytes, then the idx length, then bumps the entry's bucket, all before the write is
//! acknowledged. A client takes a replica by READing the buckets first and only then
//! the head and the mirror up to its idx length: a bump it saw implies the entry it
//! counts is in what it read next. A cold read then READs the needle's bucket together
//! with the record: an unchanged bucket means no write or delete of any needle in that
//! bucket was acknowledged since the replica, so the replica's location is current.
//! A retire (compaction, deletion) bumps every bucket and sets the retired bit.
//!
//! A table entry can be rewritten (the tail extent of a growing volume is registered
//! again, longer), so it carries a sequence number at both ends: odd while it is being
//! written, and a READ that sees two different or odd values READs it again. This
//! relies on a READ copying bytes in address order, as rxe does and as FaRM-style
//! systems assume of NICs; a torn entry that slipped through could only name the wrong
//! bytes, which the record's verification (id, cookie, size, CRC32-C) rejects.

/// `b"SWRDIDX1"` as a little-endian word.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SWRDIDX1");
/// Bit 63 of the generation word: the volume's files were retired.
pub const RETIRED: u64 = 1 << 63;

/// The generation word of an index opened for compaction revision `revision` over a
/// header whose generation word was `previous`: one more incarnation, so that no
/// replica of an earlier opening (same revision, say after an unmount and a mount of a
/// copied volume) is taken for this one.
pub fn next_generation(previous: u64, revision: u16) -> u64 {
    let incarnation = ((previous & !RETIRED) >> 16).wrapping_add(1) & 0xFFFF_FFFF;
    u64::from(revision) | incarnation << 16
}

pub const W_MAGIC: usize = 0;
pub const W_FORMAT: usize = 1;
pub const W_GENERATION: usize = 2;
pub const W_IDX_LEN: usize = 3;
pub const W_TABLE_LEN: usize = 4;
pub const W_EXTENT_SIZE: usize = 5;
pub const HEAD_WORDS: usize = 8;

/// Mirror chunks: chunk `i` holds `FIRST_CHUNK_ENTRIES << i` entries.
pub const MAX_CHUNKS: usize = 32;
pub const FIRST_CHUNK_ENTRIES: u64 = 4096;
pub const W_CHUNKS: usize = HEAD_WORDS;

/// `.dat` extents the table can name; a record past them is located over gRPC.
pub const TABLE_CAPACITY: usize = 2048;
pub const TABLE_ENTRY_WORDS: usize = 4;
pub const W_TABLE: usize = W_CHUNKS + 2 * MAX_CHUNKS;

pub const BUCKET_BITS: u32 = 10;
pub const BUCKETS: usize = 1 << BUCKET_BITS;
pub const W_BUCKETS: usize = W_TABLE + TABLE_CAPACITY * TABLE_ENTRY_WORDS;

/// Words in a header.
pub const WORDS: usize = W_BUCKETS + BUCKETS;
/// Bytes the client READs for the head and the chunk descriptors, in one READ.
pub const HEAD_AND_CHUNKS_BYTES: usize = W_TABLE * 8;

/// Byte offset of word `w` in the header.
pub const fn byte_of(word: usize) -> u64 {
    (word * 8) as u64
}

/// The bucket a needle's changes bump: a multiplicative hash, since needle ids are
/// mostly sequential.
pub fn bucket_of(needle: u64) -> usize {
    (needle.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - BUCKET_BITS)) as usize
}

/// Entries mirror chunk `chunk` holds.
pub fn chunk_entries(chunk: usize) -> u64 {
    FIRST_CHUNK_ENTRIES << chunk
}

/// The chunk holding entry number `entry`, and the entry's index in it.
pub fn chunk_of(entry: u64) -> (usize, u64) {
    // Chunk i starts at entry FIRST * (2^i - 1).
    let i = (entry / FIRST_CHUNK_ENTRIES + 1).ilog2() as usize;
    (i, entry - FIRST_CHUNK_ENTRIES * ((1u64 << i) - 1))
}

/// `word`-th little-endian word of `bytes`.
pub fn word(bytes: &[u8], word: usize) -> u64 {
    let at = word * 8;
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// What the first words say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub entry_size: usize,
    pub version: u8,
    /// Compaction revision and incarnation (a client's replica is of one generation).
    pub generation: u64,
    pub retired: bool,
    pub idx_len: u64,
    pub table_len: usize,
    pub extent_size: u64,
}

impl Head {
    pub fn format_word(entry_size: usize, version: u8) -> u64 {
        entry_size as u64 | u64::from(version) << 8 | u64::from(BUCKET_BITS) << 16
    }

    /// Parses the head from the first [`HEAD_WORDS`] words; `None` when the magic or the
    /// layout is not this one.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < HEAD_WORDS * 8 || word(bytes, W_MAGIC) != MAGIC {
            return None;
        }
        let format = word(bytes, W_FORMAT);
        if (format >> 16) & 0xff != u64::from(BUCKET_BITS) {
            return None;
        }
        let generation = word(bytes, W_GENERATION);
        Some(Self {
            entry_size: (format & 0xff) as usize,
            version: ((format >> 8) & 0xff) as u8,
            generation: generation & !RETIRED,
            retired: generation & RETIRED != 0,
            idx_len: word(bytes, W_IDX_LEN),
            table_len: (word(bytes, W_TABLE_LEN) as usize).min(TABLE_CAPACITY),
            extent_size: word(bytes, W_EXTENT_SIZE),
        })
    }
}

/// A registered piece of remote memory: where, its token, how many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteSpan {
    pub addr: u64,
    pub rkey: u32,
    pub len: u32,
}

/// Mirror chunk `chunk`'s address and rkey (`None` while it does not exist yet).
pub fn chunk(head_and_chunks: &[u8], chunk: usize) -> Option<(u64, u32)> {
    let addr = word(head_and_chunks, W_CHUNKS + 2 * chunk);
    let rkey = word(head_and_chunks, W_CHUNKS + 2 * chunk + 1) as u32;
    (addr != 0).then_some((addr, rkey))
}

/// The words of a table entry: `[seq, addr, rkey | len << 32, seq]`.
pub fn table_entry_words(seq: u64, span: RemoteSpan) -> [u64; TABLE_ENTRY_WORDS] {
    [seq, span.addr, u64::from(span.rkey) | u64::from(span.len) << 32, seq]
}

/// A table entry from its words: `None` while it is being written (odd or torn
/// sequence) or empty.
pub fn parse_table_entry(words: &[u8]) -> Option<RemoteSpan> {
    let (begin, addr, key_len, end) = (word(words, 0), word(words, 1), word(words, 2), word(words, 3));
    (begin == end && begin % 2 == 0 && addr != 0).then_some(RemoteSpan {
        addr,
        rkey: key_len as u32,
        len: (key_len >> 32) as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_tile_the_entries_without_gaps() {
        let mut start = 0;
        for i in 0..6 {
            assert_eq!(chunk_of(start), (i, 0));
            assert_eq!(chunk_of(start + chunk_entries(i) - 1), (i, chunk_entries(i) - 1));
            start += chunk_entries(i);
        }
    }

    #[test]
    fn every_opening_is_a_new_generation() {
        let first = next_generation(RETIRED, 3);
        let second = next_generation(first | RETIRED, 3);
        assert_ne!(first, second);
        assert_eq!(second & 0xFFFF, 3, "the revision is kept");
    }

    #[test]
    fn a_torn_or_odd_table_entry_is_refused() {
        let span = RemoteSpan { addr: 0x1000, rkey: 7, len: 4096 };
        let bytes = |w: [u64; 4]| w.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(parse_table_entry(&bytes(table_entry_words(2, span))), Some(span));
        assert_eq!(parse_table_entry(&bytes(table_entry_words(3, span))), None);
        let mut torn = table_entry_words(2, span);
        torn[3] = 4;
        assert_eq!(parse_table_entry(&bytes(torn)), None);
    }

    #[test]
    fn buckets_spread_sequential_ids() {
        let mut seen = vec![0u32; BUCKETS];
        for id in 1..=(BUCKETS as u64 * 4) {
            seen[bucket_of(id)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "every bucket takes some of 4096 sequential ids");
    }
}
