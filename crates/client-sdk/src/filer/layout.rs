//! Where a file's bytes come from, as weed decides it: a file is a list of chunks, each
//! holding `size` bytes at `offset`; where chunks overlap (a range written again), the
//! chunk with the newer `modified_ts_ns` wins. This module turns the (manifest-resolved)
//! chunk list into visible intervals, and a byte range of the file into the pieces that
//! make it: slices of chunks, and holes (no chunk: zeros).
//!
//! Chunks with equal timestamps overlap only when a writer gave two of them the same
//! nanosecond; the one listed later wins then (weed's own sweep keeps whichever it met
//! first, which depends on its sort).

use std::collections::BinaryHeap;
use std::ops::Range;

/// A chunk's place in the file, as the layout needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) modified_ts_ns: i64,
}

/// A stretch of the file served by one chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Visible {
    /// File offsets.
    pub(crate) range: Range<u64>,
    /// Index of the chunk in the list the layout was made from.
    pub(crate) chunk: usize,
    /// Where `range.start` is in the chunk's data.
    pub(crate) offset_in_chunk: u64,
}

/// What makes one stretch of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Piece {
    /// These bytes of chunk `chunk`'s data.
    Chunk { chunk: usize, bytes: Range<u64> },
    /// This many zeros: no chunk covers them.
    Hole(u64),
}

impl Piece {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Piece::Chunk { bytes, .. } => bytes.end - bytes.start,
            Piece::Hole(len) => *len,
        }
    }
}

/// The visible intervals of `extents`, in file order, adjacent stretches of one chunk
/// merged. Empty chunks are ignored. `O(n log n)`: a sweep over the chunks' boundaries
/// with the chunks covering the current position in a heap, newest on top.
pub(crate) fn visible_intervals(extents: &[Extent]) -> Vec<Visible> {
    let end = |e: &Extent| e.offset + e.size;
    let mut by_start: Vec<usize> = (0..extents.len()).filter(|&i| extents[i].size > 0).collect();
    by_start.sort_by_key(|&i| extents[i].offset);
    let mut boundaries: Vec<u64> =
        by_start.iter().flat_map(|&i| [extents[i].offset, end(&extents[i])]).collect();
    boundaries.sort_unstable();
    boundaries.dedup();

    // (timestamp, list index): the newest, then the one listed last, on top.
    let mut covering: BinaryHeap<(i64, usize)> = BinaryHeap::new();
    let mut next = 0;
    let mut visibles: Vec<Visible> = Vec::new();
    for pair in boundaries.windows(2) {
        let (from, to) = (pair[0], pair[1]);
        while next < by_start.len() && extents[by_start[next]].offset == from {
            let i = by_start[next];
            covering.push((extents[i].modified_ts_ns, i));
            next += 1;
        }
        // Chunks that ended are dropped when they surface: only the top matters.
        while covering.peek().is_some_and(|&(_, i)| end(&extents[i]) <= from) {
            covering.pop();
        }
        let Some(&(_, chunk)) = covering.peek() else { continue };
        match visibles.last_mut() {
            Some(last) if last.chunk == chunk && last.range.end == from => last.range.end = to,
            _ => visibles.push(Visible {
                range: from..to,
                chunk,
                offset_in_chunk: from - extents[chunk].offset,
            }),
        }
    }
    visibles
}

/// The pieces that make bytes `range` of a file laid out as `visibles`, in order; they
/// add up to the range's length exactly.
pub(crate) fn pieces(visibles: &[Visible], range: Range<u64>) -> Vec<Piece> {
    let mut pieces = Vec::new();
    if range.is_empty() {
        // Nothing to read: not a zero-length read of the chunk the range sits in.
        return pieces;
    }
    let mut at = range.start;
    let first = visibles.partition_point(|v| v.range.end <= range.start);
    for visible in visibles[first..].iter().take_while(|v| v.range.start < range.end) {
        let start = visible.range.start.max(range.start);
        let end = visible.range.end.min(range.end);
        if start > at {
            pieces.push(Piece::Hole(start - at));
        }
        let in_chunk = visible.offset_in_chunk + (start - visible.range.start);
        pieces.push(Piece::Chunk { chunk: visible.chunk, bytes: in_chunk..in_chunk + (end - start) });
        at = end;
    }
    if range.end > at {
        pieces.push(Piece::Hole(range.end - at));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn extent(offset: u64, size: u64, modified_ts_ns: i64) -> Extent {
        Extent { offset, size, modified_ts_ns }
    }

    /// The chunk serving each byte, by the rule itself: the newest chunk covering it.
    fn owner_of_each_byte(extents: &[Extent], len: u64) -> Vec<Option<usize>> {
        (0..len)
            .map(|p| {
                (0..extents.len())
                    .filter(|&i| extents[i].offset <= p && p < extents[i].offset + extents[i].size)
                    .max_by_key(|&i| (extents[i].modified_ts_ns, i))
            })
            .collect()
    }

    #[test]
    fn an_overwritten_middle_splits_the_older_chunk() {
        let extents = [extent(0, 100, 1), extent(30, 20, 2)];
        let visibles = visible_intervals(&extents);
        assert_eq!(
            visibles,
            [
                Visible { range: 0..30, chunk: 0, offset_in_chunk: 0 },
                Visible { range: 30..50, chunk: 1, offset_in_chunk: 0 },
                Visible { range: 50..100, chunk: 0, offset_in_chunk: 50 },
            ]
        );
        // An older chunk written over a newer one stays hidden.
        let hidden = visible_intervals(&[extent(0, 100, 5), extent(30, 20, 2)]);
        assert_eq!(hidden, [Visible { range: 0..100, chunk: 0, offset_in_chunk: 0 }]);
    }

    #[test]
    fn gaps_are_holes_and_pieces_cover_the_range_exactly() {
        let visibles = visible_intervals(&[extent(10, 10, 1), extent(40, 10, 1)]);
        assert_eq!(
            pieces(&visibles, 0..60),
            [
                Piece::Hole(10),
                Piece::Chunk { chunk: 0, bytes: 0..10 },
                Piece::Hole(20),
                Piece::Chunk { chunk: 1, bytes: 0..10 },
                Piece::Hole(10),
            ]
        );
        assert_eq!(
            pieces(&visibles, 15..42),
            [
                Piece::Chunk { chunk: 0, bytes: 5..10 },
                Piece::Hole(20),
                Piece::Chunk { chunk: 1, bytes: 0..2 }
            ]
        );
        assert_eq!(pieces(&visibles, 25..25), []);
        assert_eq!(pieces(&visibles, 12..12), [], "an empty range inside a chunk reads nothing");
        assert_eq!(pieces(&[], 0..5), [Piece::Hole(5)]);
    }

    #[test]
    fn equal_timestamps_go_to_the_chunk_listed_later() {
        let visibles = visible_intervals(&[extent(0, 10, 7), extent(0, 10, 7), extent(0, 0, 9)]);
        assert_eq!(visibles, [Visible { range: 0..10, chunk: 1, offset_in_chunk: 0 }]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Against the rule applied byte by byte, on random overlapping layouts.
        #[test]
        fn layouts_match_the_newest_chunk_at_every_byte(
            chunks in proptest::collection::vec((0u64..200, 0u64..80, 0i64..6), 0..12),
            (start, len) in (0u64..300, 0u64..300),
        ) {
            let extents: Vec<Extent> = chunks.iter().map(|&(o, s, t)| extent(o, s, t)).collect();
            let file_len = 300;
            let owners = owner_of_each_byte(&extents, file_len);
            let visibles = visible_intervals(&extents);
            for pair in visibles.windows(2) {
                prop_assert!(pair[0].range.end <= pair[1].range.start, "in order, disjoint");
            }
            let end = (start + len).min(file_len);
            let start = start.min(end);
            let mut at = start;
            for piece in pieces(&visibles, start..end) {
                let n = piece.len();
                prop_assert!(n > 0);
                for k in 0..n {
                    let expected = owners[(at + k) as usize];
                    match &piece {
                        Piece::Hole(_) => prop_assert_eq!(expected, None),
                        Piece::Chunk { chunk, bytes } => {
                            prop_assert_eq!(expected, Some(*chunk));
                            let e = extents[*chunk];
                            prop_assert_eq!(e.offset + bytes.start + k, at + k, "the right byte of it");
                            prop_assert!(bytes.end <= e.size);
                        }
                    }
                }
                at += n;
            }
            prop_assert_eq!(at, end);
        }
    }
}
