//! Chunked files: a chunk manifest's chunks read as needles of their own, each
//! verified and of the size the manifest lists.

use crate::error::transport_error;
use crate::plain::plain_bytes;
use crate::{Client, Error, FileId, NeedleData, NeedleStream, stream, transport};
use bytes::Bytes;
use fallback_http::NeedleBody;
use needle::{Chunk, ChunkManifest};
use std::ops::Range;

impl Client {
    /// A chunk of the chunked file `fid`: its plain data, verified, of the listed size.
    pub(crate) async fn chunk_data(&self, fid: &FileId, chunk: &Chunk) -> Result<Bytes, Error> {
        let stored = self.read_stored(&chunk.fid).await?;
        let bad = |detail: String| Error::BadManifest { fid: fid.to_string(), detail };
        if stored.chunk_manifest {
            return Err(bad(format!("chunk {} is itself a chunk manifest", chunk.fid)));
        }
        let data = plain_bytes(&chunk.fid, stored)?;
        if data.len() as u64 != chunk.size {
            return Err(bad(format!("chunk {} holds {} bytes, not {}", chunk.fid, data.len(), chunk.size)));
        }
        Ok(data)
    }

    /// Bytes `range` of a chunked file: only the chunks the range touches are read.
    pub(crate) async fn chunked_range(
        &self,
        fid: &FileId,
        stored: NeedleData,
        range: Range<u64>,
    ) -> Result<Bytes, Error> {
        let manifest = manifest_of(fid, stored)?;
        let len = manifest.total_size();
        if range.end > len {
            return Err(Error::range_not_satisfiable(fid, &range, len));
        }
        let mut out = Vec::with_capacity((range.end - range.start).min(64 << 20) as usize);
        for (chunk, part) in manifest.chunks_in(range.start, range.end) {
            let data = self.chunk_data(fid, chunk).await?;
            out.extend_from_slice(&data[part.start as usize..part.end as usize]);
        }
        Ok(out.into())
    }

    /// A chunked file as a stream, released once every chunk verified.
    pub(crate) async fn chunked_stream(
        &self,
        fid: &FileId,
        stored: NeedleData,
    ) -> Result<NeedleStream, Error> {
        let manifest = manifest_of(fid, stored)?;
        let mut assembly =
            stream::Assembly::new(fid, Some(manifest.total_size()), self.inner.stream_memory_limit).await?;
        for chunk in &manifest.chunks {
            assembly.push(&self.chunk_data(fid, chunk).await?).await?;
        }
        assembly.finish(false, (!manifest.mime.is_empty()).then_some(manifest.mime)).await
    }
}

/// A chunk manifest's whole body, verified (manifests are small).
pub(crate) async fn whole_manifest(
    server: &str,
    fid: &FileId,
    body: NeedleBody,
) -> Result<NeedleData, Error> {
    let stored = body.read_to_end().await;
    stored.map(NeedleData::from).map_err(|e| transport_error(server, fid, "http", transport::http_error(e)))
}

/// The manifest in a chunk manifest's verified stored data.
pub(crate) fn manifest_of(fid: &FileId, stored: NeedleData) -> Result<ChunkManifest, Error> {
    let json = plain_bytes(fid, stored)?;
    ChunkManifest::parse(&json)
        .map_err(|e| Error::BadManifest { fid: fid.to_string(), detail: e.to_string() })
}
