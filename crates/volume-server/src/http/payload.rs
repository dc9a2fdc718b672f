//! What a GET sends: a needle's data held in memory, or, for a large needle stored
//! plain, streamed from the `.dat` a piece at a time.
//!
//! A needle whose data is over [`LARGE_READ`] and which is neither gzip nor a chunk
//! manifest (weed's `PagedReadLimit` rule) is not read whole: only its metadata is
//! (two small preads), and the body is a stream of [`CHUNK`]-sized preads run on the
//! blocking pool, one ahead of what hyper is sending (hyper asks for the next piece
//! only when it has written the last), so a request holds about two chunks however
//! large the needle and however slow the client.
//!
//! Verification: a whole needle read at once has its CRC32-C checked before anything
//! is sent. A streamed one is checked as it goes out when all its data is sent (a GET
//! without `Range`, or with a range covering everything): the last chunk is held back
//! until the CRC is known, and on a mismatch (or a short read, an I/O error) the body
//! ends with an error, so hyper aborts the connection and the client sees fewer bytes
//! than `Content-Length`, never a clean reply of bad bytes. Ranges of a streamed needle
//! are not verified, as in weed (its `ReadNeedleData` path checks no CRC on partial
//! reads); our SDK reads whole needles and checks the CRC itself.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use needle::crc::{crc32c_append, stored_checksum_matches};
use needle::{Cookie, FileId, NeedleId, NeedleMeta};
use tokio::task::JoinHandle;

use super::range::{ByteRange, MultipartLayout};
use volume_store::volume::{NeedleLocation, StoredMeta, StoredNeedle, Volume};

/// Needles with more data than this are streamed (weed's `PagedReadLimit`, 1 MiB).
const LARGE_READ: u64 = 1 << 20;
/// Bytes per pread of a streamed body.
const CHUNK: u64 = 1 << 20;

/// A needle read for a reply: whole, or its metadata only with the data left on disk.
pub(super) enum ReadNeedle {
    Whole(StoredNeedle),
    Streamed(StoredMeta),
}

impl ReadNeedle {
    /// The bytes a read of the record at `location` holds in memory (the download
    /// budget's charge): the record when it is read whole, two chunks when it is
    /// streamed. A large record read whole because it is gzip or a chunk manifest (rare:
    /// weed gzips only compressible types, manifests are small) is counted as streamed,
    /// and gunzipped data is not counted.
    pub(super) fn bytes_held(location: &NeedleLocation) -> u64 {
        let record = location.record_size();
        if record <= LARGE_READ { record } else { record.min(2 * CHUNK) }
    }

    /// Reads needle `id` at `location` whole, or, when it is large and stored plain, its
    /// metadata only. Either way the header, cookie and TTL are checked; a whole read
    /// also checks the CRC.
    pub(super) fn read(
        volume: &Volume,
        id: NeedleId,
        cookie: Cookie,
        location: NeedleLocation,
    ) -> volume_store::Result<Self> {
        if location.record_size() <= LARGE_READ {
            return volume.read_at(id, cookie, location).map(ReadNeedle::Whole);
        }
        // Large records may come from disk rather than the page cache: let the runtime
        // move other connections off this worker meanwhile.
        tokio::task::block_in_place(|| {
            let stored = volume.read_meta_at(id, cookie, location)?;
            let meta = stored.meta();
            if u64::from(meta.data_size) > LARGE_READ && !meta.is_compressed() && !meta.is_chunk_manifest() {
                Ok(ReadNeedle::Streamed(stored))
            } else {
                volume.read_at(id, cookie, location).map(ReadNeedle::Whole)
            }
        })
    }

    /// The needle's metadata, and its data when it was read whole (one parse of the
    /// record). Streamed needles are never gzip or manifests, so nothing needs their data
    /// at once.
    pub(super) fn parts(&self) -> (NeedleMeta<'_>, Option<&[u8]>) {
        match self {
            ReadNeedle::Whole(stored) => {
                let needle = stored.needle();
                (needle.meta(), Some(needle.data))
            }
            ReadNeedle::Streamed(stored) => (stored.meta(), None),
        }
    }

    /// The CRC the ETag shows: the verified raw CRC of a whole read, the stored checksum
    /// of a streamed one (weed's too, which reads only the metadata then; the two differ
    /// only for needles weed < 3.09 stored with a masked checksum).
    pub(super) fn etag_crc(&self) -> u32 {
        match self {
            ReadNeedle::Whole(stored) => stored.crc,
            ReadNeedle::Streamed(stored) => stored.meta().checksum,
        }
    }

    /// The data to send, sharing the record's buffer for a whole read.
    pub(super) fn into_payload(self, volume: Arc<Volume>, fid: FileId) -> Payload {
        match self {
            ReadNeedle::Whole(stored) => {
                let (record, range) = stored.into_record();
                Payload::Bytes(Bytes::from(record).slice(range))
            }
            ReadNeedle::Streamed(stored) => {
                let meta = stored.meta();
                Payload::Dat(DatSpan {
                    volume,
                    fid,
                    at: stored.data_at,
                    len: u64::from(meta.data_size),
                    verify: Some(meta.checksum),
                })
            }
        }
    }
}

/// The bytes a reply sends.
pub(super) enum Payload {
    Bytes(Bytes),
    Dat(DatSpan),
}

/// Part of a needle's data in the `.dat`.
pub(super) struct DatSpan {
    volume: Arc<Volume>,
    fid: FileId,
    /// Offset in the `.dat`.
    at: u64,
    len: u64,
    /// The stored checksum, when the span is all of the needle's data.
    verify: Option<u32>,
}

impl Payload {
    pub(super) fn len(&self) -> u64 {
        match self {
            Payload::Bytes(bytes) => bytes.len() as u64,
            Payload::Dat(span) => span.len,
        }
    }

    /// `length` bytes from `start` (within [`Payload::len`]). A part of a streamed needle
    /// is sent unverified; all of it still is verified.
    pub(super) fn slice(self, start: u64, length: u64) -> Payload {
        match self {
            Payload::Bytes(bytes) => Payload::Bytes(bytes.slice(start as usize..(start + length) as usize)),
            Payload::Dat(span) => {
                let whole = start == 0 && length == span.len;
                Payload::Dat(DatSpan {
                    at: span.at + start,
                    len: length,
                    verify: span.verify.filter(|_| whole),
                    ..span
                })
            }
        }
    }

    /// Up to `n` bytes from the start, for sniffing a content type (a pread when
    /// streamed).
    pub(super) fn head(&self, n: usize) -> volume_store::Result<Bytes> {
        match self {
            Payload::Bytes(bytes) => Ok(bytes.slice(..n.min(bytes.len()))),
            Payload::Dat(span) => {
                let mut buf = vec![0u8; (n as u64).min(span.len) as usize];
                tokio::task::block_in_place(|| span.volume.read_data(span.at, &mut buf))?;
                Ok(buf.into())
            }
        }
    }

    pub(super) fn into_body(self) -> Body {
        match self {
            Payload::Bytes(bytes) => Body::from(bytes),
            Payload::Dat(span) => {
                let segments = [Segment::Dat { at: span.at, len: span.len }].into();
                Body::new(DatBody::new(span.volume, span.fid, segments, span.verify))
            }
        }
    }

    /// A `multipart/byteranges` body of `ranges` (validated against [`Payload::len`]):
    /// its content type, length and body. Parts of a streamed needle are streamed too.
    pub(super) fn multipart(self, ranges: &[ByteRange], content_type: &str) -> (String, u64, Body) {
        match self {
            Payload::Bytes(bytes) => {
                let (content_type, body) = super::range::multipart(&bytes, ranges, content_type);
                (content_type, body.len() as u64, Body::from(body))
            }
            Payload::Dat(span) => {
                let layout = MultipartLayout::new(span.len, ranges, content_type);
                let length = layout.body_len(ranges);
                let mut segments = VecDeque::with_capacity(2 * ranges.len() + 1);
                for (head, r) in layout.heads.into_iter().zip(ranges) {
                    segments.push_back(Segment::Bytes(head.into()));
                    segments.push_back(Segment::Dat { at: span.at + r.start, len: r.length });
                }
                segments.push_back(Segment::Bytes(layout.closing.into()));
                let body = DatBody::new(span.volume, span.fid, segments, None);
                (layout.content_type, length, Body::new(body))
            }
        }
    }
}

/// One piece of a streamed body.
enum Segment {
    Bytes(Bytes),
    /// `len` bytes of the `.dat` from `at`, read [`CHUNK`] bytes at a time.
    Dat {
        at: u64,
        len: u64,
    },
}

/// A body read from the `.dat` as hyper asks for it; see the module docs for what is
/// verified.
struct DatBody {
    volume: Arc<Volume>,
    fid: FileId,
    segments: VecDeque<Segment>,
    /// The pread in flight.
    pending: Option<JoinHandle<volume_store::Result<Bytes>>>,
    /// For a body that is a needle's whole data: its stored checksum and the CRC so far.
    verify: Option<(u32, u32)>,
    remaining: u64,
}

impl DatBody {
    /// A body of `segments`; `verify` is the stored checksum when they are exactly one
    /// needle's whole data.
    fn new(volume: Arc<Volume>, fid: FileId, segments: VecDeque<Segment>, verify: Option<u32>) -> Self {
        let remaining = segments
            .iter()
            .map(|s| match s {
                Segment::Bytes(bytes) => bytes.len() as u64,
                Segment::Dat { len, .. } => *len,
            })
            .sum();
        Self { volume, fid, segments, pending: None, verify: verify.map(|stored| (stored, 0)), remaining }
    }

    /// Ends the body with `error`, logged with the file id; hyper then aborts the
    /// connection.
    fn fail(&mut self, error: String) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        tracing::error!(fid = %self.fid, %error, "streamed read aborted");
        self.segments.clear();
        self.remaining = 0;
        Poll::Ready(Some(Err(std::io::Error::other(error))))
    }
}

impl DatBody {
    /// Starts the pread of the next chunk if the next segment is in the `.dat`.
    fn start_read(&mut self) {
        let Some(Segment::Dat { at, len }) = self.segments.front_mut() else {
            return;
        };
        let (from, n) = (*at, (*len).min(CHUNK));
        *at += n;
        *len -= n;
        if *len == 0 {
            self.segments.pop_front();
        }
        let volume = Arc::clone(&self.volume);
        self.pending = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n as usize];
            volume.read_data(from, &mut buf)?;
            Ok(Bytes::from(buf))
        }));
    }
}

impl http_body::Body for DatBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(pending) = &mut this.pending {
                let read = ready!(Pin::new(pending).poll(cx));
                this.pending = None;
                let chunk = match read {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(e)) => return this.fail(e.to_string()),
                    Err(e) => return this.fail(format!("read task: {e}")),
                };
                this.remaining -= chunk.len() as u64;
                if let Some((stored, crc)) = &mut this.verify {
                    *crc = crc32c_append(*crc, &chunk);
                    // The last chunk goes out only if the whole data checks out.
                    if this.remaining == 0 && !stored_checksum_matches(*stored, *crc) {
                        let error =
                            format!("CRC32-C mismatch: stored {:08x}, data has {:08x}", *stored, *crc);
                        return this.fail(error);
                    }
                }
                // Read ahead while hyper sends this one.
                this.start_read();
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            match this.segments.front_mut() {
                None => return Poll::Ready(None),
                Some(Segment::Bytes(bytes)) => {
                    let bytes = std::mem::take(bytes);
                    this.segments.pop_front();
                    this.remaining -= bytes.len() as u64;
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Some(Segment::Dat { .. }) => this.start_read(),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0 && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
