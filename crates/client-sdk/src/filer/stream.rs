//! A filer file as a stream of verified pieces: the chunks ahead are fetched
//! concurrently, the pieces come out in file order, and each comes out only once its own
//! chunk verified (unlike a needle's stream, which must hold the whole needle: a filer
//! file has one checksum per chunk).

use super::layout::Piece;
use super::{ChunkReport, FileInfo, Plan};
use crate::policy::{ReadTrace, traced};
use crate::{Client, Error};
use bytes::Bytes;
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use std::sync::Arc;

/// Holes come out as zeros in pieces of at most this many bytes.
const HOLE_PIECE: u64 = 1 << 20;

/// A file being read by [`FilerClient::read_stream`](super::FilerClient::read_stream).
pub struct FileStream {
    info: FileInfo,
    pieces: BoxStream<'static, Result<(Bytes, ReadTrace), Error>>,
    report: ChunkReport,
    finished: bool,
}

impl std::fmt::Debug for FileStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStream").field("info", &self.info).field("report", &self.report).finish()
    }
}

impl FileStream {
    pub(super) fn new(client: Client, plan: Plan, report: ChunkReport, concurrency: usize) -> Self {
        let Plan { info, source, pieces, .. } = plan;
        let path: Arc<str> = info.path.clone().into();
        let pieces = pieces.into_iter().flat_map(|piece| match piece {
            Piece::Hole(len) => {
                let holes = (0..len.div_ceil(HOLE_PIECE))
                    .map(move |i| Piece::Hole(HOLE_PIECE.min(len - i * HOLE_PIECE)));
                holes.collect::<Vec<_>>()
            }
            chunk => vec![chunk],
        });
        let pieces = futures_util::stream::iter(pieces)
            .map(move |piece| {
                let (client, source, path) = (client.clone(), source.clone(), Arc::clone(&path));
                async move {
                    match piece {
                        Piece::Hole(len) => Ok((Bytes::from(vec![0; len as usize]), ReadTrace::default())),
                        Piece::Chunk { chunk, bytes } => {
                            let (data, trace) = traced(source.fetch(&client, &path, chunk)).await;
                            Ok((data?.slice(bytes.start as usize..bytes.end as usize), trace))
                        }
                    }
                }
            })
            .buffered(concurrency)
            .boxed();
        Self { info, pieces, report, finished: false }
    }

    /// The entry being read.
    pub fn info(&self) -> &FileInfo {
        &self.info
    }

    /// How the needles read so far were served (RDMA or HTTP) and why any fell back:
    /// complete once the stream has ended.
    pub fn report(&self) -> &ChunkReport {
        &self.report
    }

    /// The next verified piece, in file order; `None` at the end. After an error the
    /// stream ends.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, Error>> {
        if self.finished {
            return None;
        }
        match self.pieces.next().await {
            Some(Ok((bytes, trace))) => {
                self.report.add(trace);
                Some(Ok(bytes))
            }
            Some(Err(e)) => {
                self.finished = true;
                Some(Err(e))
            }
            None => {
                self.finished = true;
                None
            }
        }
    }

    /// The pieces as a [`futures_core::Stream`].
    pub fn into_stream(self) -> impl futures_core::Stream<Item = Result<Bytes, Error>> + Send {
        futures_util::stream::unfold(self, |mut stream| async move {
            let item = stream.next_chunk().await?;
            Some((item, stream))
        })
    }
}
