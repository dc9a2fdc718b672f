//! The reads and file operations by file id: each goes down to [`route`](crate::route)
//! (locate, RDMA per the policy, HTTP), and a chunked file on to
//! [`chunked`](crate::chunked).

use crate::chunked::manifest_of;
use crate::plain::plain_bytes;
use crate::route::{Done, Op};
use crate::{Client, Error, FileId, FileStat, NeedleData, NeedleStream};
use bytes::Bytes;
use std::ops::Range;

impl Client {
    /// The whole file, verified and decompressed; a chunked file put together from its
    /// verified chunks.
    pub async fn download(&self, fid: &FileId) -> Result<Bytes, Error> {
        let stored = self.read_stored(fid).await?;
        if !stored.chunk_manifest {
            return plain_bytes(fid, stored);
        }
        let manifest = manifest_of(fid, stored)?;
        // The manifest's sizes are not trusted before the chunks verify: reserve at most 64 MiB.
        let mut file = Vec::with_capacity(manifest.total_size().min(64 << 20) as usize);
        for chunk in &manifest.chunks {
            file.extend_from_slice(&self.chunk_data(fid, chunk).await?);
        }
        Ok(file.into())
    }

    /// Bytes `range` of the file (after decompression), verified: see the crate docs for
    /// how. A range past the end is [`Error::RangeNotSatisfiable`].
    pub async fn read_range(&self, fid: &FileId, range: Range<u64>) -> Result<Bytes, Error> {
        if range.start > range.end {
            return Err(Error::range_not_satisfiable(fid, &range, 0));
        }
        match self.at_volume(fid, &Op::Range(range.clone())).await? {
            Done::Range(bytes) => Ok(bytes),
            Done::Manifest(stored) => self.chunked_range(fid, stored, range).await,
            _ => unreachable!("a range read gives a range"),
        }
    }

    /// The whole file as a stream of chunks, for large needles: see [`NeedleStream`] for
    /// what is guaranteed. Resolves once the needle has arrived and verified.
    ///
    /// ```no_run
    /// # async fn demo(client: client_sdk::Client, fid: client_sdk::FileId) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::io::Write;
    /// let mut out = std::fs::File::create("copy.bin")?;
    /// let mut stream = client.download_stream(&fid).await?;
    /// while let Some(chunk) = stream.next_chunk().await {
    ///     out.write_all(&chunk?)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn download_stream(&self, fid: &FileId) -> Result<NeedleStream, Error> {
        match self.at_volume(fid, &Op::Stream).await? {
            Done::Stream(stream) => Ok(*stream),
            Done::Manifest(stored) => self.chunked_stream(fid, stored).await,
            _ => unreachable!("a streaming read gives a stream"),
        }
    }

    /// The whole needle's stored data (gzip stays gzip), verified.
    pub async fn read_stored(&self, fid: &FileId) -> Result<NeedleData, Error> {
        match self.at_volume(fid, &Op::Stored).await? {
            Done::Stored(data) => Ok(data),
            _ => unreachable!("a whole read gives stored data"),
        }
    }

    /// Deletes the file. A missing file is [`Error::NotFound`].
    pub async fn delete(&self, fid: &FileId) -> Result<(), Error> {
        self.at_volume(fid, &Op::Delete).await.map(|_| ())
    }

    /// The file's metadata from a server holding it (a `HEAD`: no data read, nothing
    /// verified).
    pub async fn stat(&self, fid: &FileId) -> Result<FileStat, Error> {
        match self.at_volume(fid, &Op::Stat).await? {
            Done::Stat(stat) => Ok(stat),
            _ => unreachable!("a stat gives a stat"),
        }
    }

    /// The servers (`host:port`) holding a volume.
    pub async fn lookup(&self, volume: needle::VolumeId) -> Result<Vec<String>, Error> {
        Ok(self.locate(volume).await?.0)
    }
}
