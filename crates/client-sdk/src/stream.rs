//! Reads that do not keep a whole large needle in memory: ranged reads that keep only the
//! range, and streams that hold the needle in a temporary file until it verified. Both
//! consume the whole needle first, because its one CRC32-C covers all of it.

use crate::error::transport_error;
use crate::{Error, FileId, NeedleData};
use bytes::Bytes;
use fallback_http::NeedleBody;
use flate2::write::MultiGzDecoder;
use std::io::Write;
use std::ops::Range;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Size of the chunks a [`NeedleStream`] reads back from its temporary file.
const CHUNK: usize = 256 << 10;

/// Keeps the bytes of `range` out of everything written to it, and counts the rest.
struct RangeSink {
    range: Range<u64>,
    /// Plain bytes written so far.
    pos: u64,
    kept: Vec<u8>,
}

impl Write for RangeSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let end = self.pos + buf.len() as u64;
        let (from, to) = (self.range.start.max(self.pos), self.range.end.min(end));
        if from < to {
            self.kept.extend_from_slice(&buf[(from - self.pos) as usize..(to - self.pos) as usize]);
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Plain bytes out of stored ones: gunzip for compressed needles, a pass-through otherwise.
enum Plain<W: Write> {
    Stored(W),
    Gzip(MultiGzDecoder<W>),
}

impl<W: Write> Plain<W> {
    fn new(compressed: bool, sink: W) -> Self {
        if compressed { Plain::Gzip(MultiGzDecoder::new(sink)) } else { Plain::Stored(sink) }
    }

    fn write_all(&mut self, stored: &[u8]) -> std::io::Result<()> {
        match self {
            Plain::Stored(w) => w.write_all(stored),
            Plain::Gzip(d) => d.write_all(stored),
        }
    }

    fn finish(self) -> std::io::Result<W> {
        match self {
            Plain::Stored(w) => Ok(w),
            Plain::Gzip(d) => d.finish(),
        }
    }
}

/// Bytes `range` of the plain file behind `body`, returned only after the whole body's
/// CRC32-C matched. Memory: the range, plus one chunk.
pub(crate) async fn range_of(
    server: &str,
    fid: &FileId,
    mut body: NeedleBody,
    range: Range<u64>,
) -> Result<Bytes, Error> {
    let http_error = |e| transport_error(server, fid, "http", crate::transport::http_error(e));
    if let Some(len) = body.content_length.filter(|_| !body.compressed)
        && range.end > len
    {
        return Err(Error::range_not_satisfiable(fid, &range, len));
    }
    let capacity = (range.end - range.start).min(64 << 20) as usize;
    let mut plain =
        Plain::new(body.compressed, RangeSink { range, pos: 0, kept: Vec::with_capacity(capacity) });
    // A gzip error is reported only once the stored bytes verified: a corrupt transfer
    // is a checksum mismatch, not a decompression failure.
    let mut gzip_error = None;
    while let Some(chunk) = body.next_unverified_chunk().await.map_err(http_error)? {
        if gzip_error.is_none()
            && let Err(e) = plain.write_all(&chunk)
        {
            gzip_error = Some(e);
        }
    }
    let decompress = |source| Error::Decompress { fid: fid.to_string(), source };
    if let Some(source) = gzip_error {
        return Err(decompress(source));
    }
    let sink = plain.finish().map_err(decompress)?;
    if sink.range.end > sink.pos {
        return Err(Error::range_not_satisfiable(fid, &sink.range, sink.pos));
    }
    Ok(sink.kept.into())
}

/// A needle's stored bytes, or a chunked file's verified chunks, held whole before a
/// [`NeedleStream`] releases any of it: in memory up to the memory limit, else in an
/// unlinked temporary file.
pub(crate) struct Assembly {
    fid: FileId,
    sink: Sink,
}

enum Sink {
    Memory(Vec<u8>),
    File(tokio::fs::File),
}

impl Assembly {
    /// For `total` bytes; an unknown total goes to a file.
    pub(crate) async fn new(fid: &FileId, total: Option<u64>, memory_limit: u64) -> Result<Self, Error> {
        let sink = if let Some(total) = total.filter(|&total| total <= memory_limit) {
            Sink::Memory(Vec::with_capacity(total as usize))
        } else {
            let io_error = |source| Error::LocalIo { fid: fid.to_string(), source };
            let file = tokio::task::spawn_blocking(tempfile::tempfile)
                .await
                .map_err(|e| io_error(std::io::Error::other(e)))?
                .map_err(io_error)?;
            Sink::File(tokio::fs::File::from_std(file))
        };
        Ok(Self { fid: *fid, sink })
    }

    /// Appends bytes (none is released before [`Assembly::finish`]).
    pub(crate) async fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match &mut self.sink {
            Sink::Memory(held) => held.extend_from_slice(bytes),
            Sink::File(file) => file
                .write_all(bytes)
                .await
                .map_err(|source| Error::LocalIo { fid: self.fid.to_string(), source })?,
        }
        Ok(())
    }

    /// The stream of what was pushed, once all of it verified; `compressed`: it is gzip.
    pub(crate) async fn finish(
        self,
        compressed: bool,
        content_type: Option<String>,
    ) -> Result<NeedleStream, Error> {
        let held = match self.sink {
            Sink::Memory(bytes) => Held::Memory(bytes.into()),
            Sink::File(mut file) => {
                let io_error = |source| Error::LocalIo { fid: self.fid.to_string(), source };
                file.flush().await.map_err(io_error)?;
                file.rewind().await.map_err(io_error)?;
                Held::File(file)
            }
        };
        Ok(NeedleStream::new(&self.fid, held, compressed, content_type))
    }
}

/// A verified file as a stream of plain chunks, from [`Client::download_stream`](crate::Client::download_stream).
///
/// **What is guaranteed:** the stream exists only once the *whole* needle has arrived and
/// its CRC32-C (and, over RDMA, its header) matched; no chunk is ever released before
/// that, so a consumer never sees a byte of a corrupt or truncated needle. The price is
/// latency to the first chunk (the whole transfer) and room for the needle: in memory up
/// to [`ClientBuilder::stream_memory_limit`](crate::ClientBuilder::stream_memory_limit),
/// above it in an unlinked temporary file that disappears with the stream. Chunks of a
/// gzip-stored needle are decompressed as they are read; the stored bytes being verified,
/// a decompression error (a server that stored bad gzip) ends the stream with
/// [`Error::Decompress`].
#[derive(Debug)]
pub struct NeedleStream {
    fid: String,
    held: Held,
    gunzip: Option<MultiGzDecoder<Vec<u8>>>,
    content_type: Option<String>,
    finished: bool,
}

#[derive(Debug)]
enum Held {
    Memory(Bytes),
    File(tokio::fs::File),
}

impl NeedleStream {
    pub(crate) fn in_memory(fid: &FileId, data: NeedleData) -> Self {
        Self::new(fid, Held::Memory(data.bytes), data.compressed, data.content_type)
    }

    fn new(fid: &FileId, held: Held, compressed: bool, content_type: Option<String>) -> Self {
        Self {
            fid: fid.to_string(),
            held,
            gunzip: compressed.then(|| MultiGzDecoder::new(Vec::new())),
            content_type,
            finished: false,
        }
    }

    /// Receives the whole `body`, verifies it, and holds it (in memory up to
    /// `memory_limit` stored bytes, else in a temporary file).
    pub(crate) async fn receive(
        server: &str,
        fid: &FileId,
        mut body: NeedleBody,
        memory_limit: u64,
    ) -> Result<Self, Error> {
        let http_error = |e| transport_error(server, fid, "http", crate::transport::http_error(e));
        let mut assembly = Assembly::new(fid, body.content_length, memory_limit).await?;
        while let Some(chunk) = body.next_unverified_chunk().await.map_err(http_error)? {
            assembly.push(&chunk).await?;
        }
        assembly.finish(body.compressed, body.content_type).await
    }

    /// The stored `Content-Type`, when the server sent one (for a chunked file, the
    /// manifest's MIME type).
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The next chunk of verified plain bytes, or `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, Error>> {
        while !self.finished {
            let stored = match self.next_stored().await {
                Ok(stored) => stored,
                Err(source) => {
                    self.finished = true;
                    return Some(Err(Error::LocalIo { fid: self.fid.clone(), source }));
                }
            };
            let Some(gunzip) = &mut self.gunzip else {
                if stored.is_empty() {
                    self.finished = true;
                    return None;
                }
                return Some(Ok(stored));
            };
            let written = if stored.is_empty() {
                self.finished = true;
                gunzip.try_finish()
            } else {
                gunzip.write_all(&stored)
            };
            if let Err(source) = written {
                self.finished = true;
                return Some(Err(Error::Decompress { fid: self.fid.clone(), source }));
            }
            let plain = std::mem::take(gunzip.get_mut());
            if !plain.is_empty() {
                return Some(Ok(plain.into()));
            }
        }
        None
    }

    /// The next piece of held stored bytes; empty at the end.
    async fn next_stored(&mut self) -> std::io::Result<Bytes> {
        match &mut self.held {
            Held::Memory(bytes) => Ok(bytes.split_to(bytes.len().min(CHUNK))),
            Held::File(file) => {
                let mut buf = vec![0; CHUNK];
                let n = file.read(&mut buf).await?;
                buf.truncate(n);
                Ok(buf.into())
            }
        }
    }

    /// The chunks as a [`futures_core::Stream`].
    pub fn into_stream(self) -> impl futures_core::Stream<Item = Result<Bytes, Error>> + Send {
        futures_util::stream::unfold(self, |mut stream| async move {
            let item = stream.next_chunk().await?;
            Some((item, stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSink;
    use std::io::Write;

    #[test]
    fn a_range_sink_keeps_exactly_its_range_across_writes() {
        let data: Vec<u8> = (0..=255).collect();
        for (start, end) in [(0, 0), (0, 256), (10, 11), (7, 200), (255, 256), (64, 64)] {
            let mut sink = RangeSink { range: start..end, pos: 0, kept: Vec::new() };
            for piece in data.chunks(7) {
                sink.write_all(piece).unwrap();
            }
            assert_eq!(sink.kept, &data[start as usize..end as usize], "{start}..{end}");
            assert_eq!(sink.pos, 256);
        }
    }
}
