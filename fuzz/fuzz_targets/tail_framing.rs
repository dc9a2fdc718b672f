//! The volume-move tail's framing (`VolumeTailReceiver`): records arrive as messages of
//! header + body piece, the last one marked. Input: a bound selector, then messages
//! `flags(1) header_len(1) body_len(2 BE) header body`.
//!
//! Nothing longer than its header says is ever returned, nor buffered past the bound;
//! what is returned is the first header followed by the pieces, in order; and a valid
//! record cut into pieces comes back whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use needle::{HEADER_SIZE, NeedleHeader, Version};
use volume_server::cluster::volume_move::TailRecord;

fuzz_target!(|input: &[u8]| {
    let Some((&bound, mut rest)) = input.split_first() else { return };
    let most = 64u64 << (bound % 16);
    let version = Version::V3;
    let mut tail = TailRecord::new(most);
    let mut expected: Vec<u8> = Vec::new();
    while let Some((frame, after)) = rest.split_first_chunk::<4>() {
        let [flags, header_len, body_hi, body_lo] = *frame;
        let (header_len, body_len) =
            (usize::from(header_len), usize::from(u16::from_be_bytes([body_hi, body_lo])));
        let Some(header) = after.get(..header_len) else { return };
        let Some(body) = after.get(header_len..header_len + body_len) else { return };
        rest = &after[header_len + body_len..];
        if expected.is_empty() {
            expected.extend_from_slice(header.get(..HEADER_SIZE).unwrap_or(header));
        }
        let last = flags & 1 == 1;
        match tail.push(header, body, version, last) {
            Ok(Some(record)) => {
                expected.extend_from_slice(body);
                assert_eq!(record, expected);
                let declared = NeedleHeader::parse(&record).expect("a record starts with its header").size;
                assert!(record.len() as u64 <= version.record_size(declared).min(most));
                expected.clear();
                assert!(tail.is_empty());
            }
            Ok(None) => expected.extend_from_slice(body),
            Err(_) => return,
        }
    }

    // A record (the rest of the input taken as one) cut into pieces of `bound + 1` bytes.
    let whole = input;
    let Ok(header) = NeedleHeader::parse(whole) else { return };
    if version.record_size(header.size) != whole.len() as u64 || whole.len() as u64 > most {
        return;
    }
    let mut tail = TailRecord::new(most);
    let pieces: Vec<&[u8]> = whole[HEADER_SIZE..].chunks(usize::from(bound) + 1).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let got =
            tail.push(&whole[..HEADER_SIZE], piece, version, i + 1 == pieces.len()).expect("a valid record");
        assert_eq!(got.is_some(), i + 1 == pieces.len());
        if let Some(record) = got {
            assert_eq!(record, whole);
        }
    }
});
