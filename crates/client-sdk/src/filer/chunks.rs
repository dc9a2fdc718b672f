//! A filer file's chunks: from the entry's list to the data chunks (chunk manifests
//! resolved), and from one chunk to its plain bytes.
//!
//! A chunk is a needle, read through the SDK's read path (RDMA first, HTTP fallback) and
//! verified there (CRC32-C of the stored needle, and over RDMA its header) before
//! anything here looks at it. Then, in weed's order: a needle stored gzip is gunzipped;
//! a chunk with a `cipher_key` is opened with AES-256-GCM as weed's `util.Decrypt` seals
//! it (the 12-byte nonce first, then the ciphertext and its 16-byte tag); an encrypted
//! chunk flagged `is_compressed` was gzipped before encryption and is gunzipped after.
//! Its length must then be the `size` the entry lists.

use super::layout::Extent;
use super::pb;
use crate::{Client, Error, FileId};
use bytes::Bytes;
use prost::Message;
use std::ops::Range;

/// Manifests nest this deep at most: weed folds 10000 chunks into a manifest, so one
/// level covers 10^4 chunks and two levels 10^8 (400 TB at weed's 4 MiB default).
const MAX_MANIFEST_DEPTH: usize = 4;
/// Data chunks one read may resolve (a bound on memory for a hostile manifest).
const MAX_DATA_CHUNKS: usize = 1 << 20;

/// A needle holding file data, and how it is stored.
#[derive(Clone, Debug)]
pub(crate) struct StoredChunk {
    pub(crate) fid: FileId,
    /// AES-256-GCM key, when the filer encrypted the chunk.
    cipher_key: Vec<u8>,
    /// Gzipped before encryption (only meaningful with a cipher key: otherwise the
    /// needle itself carries the gzip flag).
    compressed: bool,
}

/// A data chunk of a file: its needle and its place in the file.
#[derive(Clone, Debug)]
pub(crate) struct DataChunk {
    pub(crate) stored: StoredChunk,
    pub(crate) extent: Extent,
}

/// Why a chunk is unreadable, as an error about the file at `path`.
fn bad(path: &str, detail: String) -> Error {
    Error::BadFileChunks { path: path.to_owned(), detail }
}

/// The S3 server-side encryption a chunk was stored with, if any.
pub(crate) fn sse_kind(chunk: &pb::FileChunk) -> Option<&'static str> {
    match pb::SseType::try_from(chunk.sse_type) {
        Ok(pb::SseType::None) => None,
        Ok(pb::SseType::SseC) => Some("SSE-C"),
        Ok(pb::SseType::SseKms) => Some("SSE-KMS"),
        Ok(pb::SseType::SseS3) => Some("SSE-S3"),
        Err(_) => Some("an SSE type this client does not know"),
    }
}

/// Where `chunk` is in the file.
fn extent(path: &str, chunk: &pb::FileChunk) -> Result<Extent, Error> {
    let offset =
        u64::try_from(chunk.offset).map_err(|_| bad(path, format!("a chunk at offset {}", chunk.offset)))?;
    if offset.checked_add(chunk.size).is_none() {
        return Err(bad(path, format!("a chunk of {} bytes at {offset} ends past 2^64", chunk.size)));
    }
    Ok(Extent { offset, size: chunk.size, modified_ts_ns: chunk.modified_ts_ns })
}

/// `chunk`'s needle: the structured `fid`, or the `file_id` text older entries carry.
fn stored(path: &str, chunk: &pb::FileChunk) -> Result<StoredChunk, Error> {
    if let Some(kind) = sse_kind(chunk) {
        return Err(Error::ServerSideEncrypted { path: path.to_owned(), kind });
    }
    let fid = match &chunk.fid {
        Some(fid) => FileId {
            volume: needle::VolumeId(fid.volume_id),
            key: needle::NeedleId(fid.file_key),
            cookie: needle::Cookie(fid.cookie),
            delta: None,
        },
        None => chunk.file_id.parse().map_err(|e| bad(path, format!("a chunk's file id: {e}")))?,
    };
    Ok(StoredChunk { fid, cipher_key: chunk.cipher_key.clone(), compressed: chunk.is_compressed })
}

/// The data chunks of `chunks` that overlap `range`, chunk manifests among them read
/// and resolved (recursively, to [`MAX_MANIFEST_DEPTH`]), as weed's
/// `ResolveChunkManifest` does. Chunks outside the range cannot show in it and are left
/// out, manifests included.
pub(crate) async fn resolve(
    client: &Client,
    path: &str,
    chunks: &[pb::FileChunk],
    range: Range<u64>,
) -> Result<Vec<DataChunk>, Error> {
    let mut data = Vec::new();
    // Depth-first, manifests in list order, so data chunks keep weed's order (which
    // breaks ties between equal timestamps).
    let mut pending: Vec<(Vec<pb::FileChunk>, usize, usize)> = vec![(chunks.to_vec(), 0, 0)];
    while let Some((list, next, depth)) = pending.pop() {
        let Some(chunk) = list.get(next) else { continue };
        let place = extent(path, chunk)?;
        let overlaps = place.offset.max(range.start) < (place.offset + place.size).min(range.end);
        let chunk = chunk.clone();
        pending.push((list, next + 1, depth));
        if !overlaps {
            continue;
        }
        let stored = stored(path, &chunk)?;
        if !chunk.is_chunk_manifest {
            if data.len() == MAX_DATA_CHUNKS {
                return Err(bad(path, format!("more than {MAX_DATA_CHUNKS} chunks in the range read")));
            }
            data.push(DataChunk { stored, extent: place });
            continue;
        }
        if depth == MAX_MANIFEST_DEPTH {
            return Err(bad(path, format!("chunk manifests nested deeper than {MAX_MANIFEST_DEPTH}")));
        }
        let bytes = plain_bytes(client, path, &stored, None).await?;
        let manifest = pb::FileChunkManifest::decode(bytes)
            .map_err(|e| bad(path, format!("chunk manifest {} does not parse: {e}", stored.fid)))?;
        pending.push((manifest.chunks, 0, depth + 1));
    }
    Ok(data)
}

/// The plain bytes of a chunk, verified (see the module docs); `expected_len`: the size
/// the entry lists (manifests list the extent they cover, not their own size).
pub(crate) async fn plain_bytes(
    client: &Client,
    path: &str,
    chunk: &StoredChunk,
    expected_len: Option<u64>,
) -> Result<Bytes, Error> {
    let fid = &chunk.fid;
    let stored = client.read_stored(fid).await?;
    if stored.chunk_manifest {
        return Err(bad(
            path,
            format!("chunk {fid} is a volume-level chunk manifest, which a filer never writes"),
        ));
    }
    let mut data = crate::plain::plain_bytes(fid, stored)?;
    if !chunk.cipher_key.is_empty() {
        let plain = decrypt(&chunk.cipher_key, &data)
            .map_err(|why| bad(path, format!("chunk {fid} does not decrypt with its cipher key: {why}")))?;
        data = if chunk.compressed && is_gzip(&plain) {
            crate::plain::gunzip(fid, &plain)?
        } else {
            plain.into()
        };
    }
    if let Some(expected) = expected_len
        && data.len() as u64 != expected
    {
        return Err(bad(path, format!("chunk {fid} holds {} bytes, the entry lists {expected}", data.len())));
    }
    Ok(data)
}

/// weed's test for gzip data (its `IsGzippedContent`): the magic bytes.
fn is_gzip(data: &[u8]) -> bool {
    data.starts_with(&[0x1f, 0x8b])
}

/// Opens weed's AES-256-GCM layout: `nonce (12) || ciphertext || tag (16)`, no AAD.
fn decrypt(key: &[u8], sealed: &[u8]) -> Result<Vec<u8>, &'static str> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
    let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| "the key is not 32 bytes")?;
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err("shorter than a nonce and a tag");
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce")?;
    let mut buffer = ciphertext.to_vec();
    let plain_len = LessSafeKey::new(key)
        .open_in_place(nonce, Aad::empty(), &mut buffer)
        .map_err(|_| "authentication failed")?
        .len();
    buffer.truncate(plain_len);
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals as weed's `util.Encrypt` does: `gcm.Seal(nonce, nonce, plaintext, nil)`.
    fn seal_like_weed(key: &[u8; 32], nonce: [u8; 12], plain: &[u8]) -> Vec<u8> {
        use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
        let mut sealed = plain.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut sealed).unwrap();
        [&nonce[..], &sealed].concat()
    }

    #[test]
    fn weeds_sealed_layout_opens_and_tampering_fails() {
        let key = [7u8; 32];
        let sealed = seal_like_weed(&key, [3; 12], b"chunk data");
        assert_eq!(sealed.len(), 12 + 10 + 16);
        assert_eq!(decrypt(&key, &sealed).unwrap(), b"chunk data");
        let mut flipped = sealed.clone();
        flipped[15] ^= 1;
        assert_eq!(decrypt(&key, &flipped), Err("authentication failed"));
        assert_eq!(decrypt(&[7u8; 31], &sealed), Err("the key is not 32 bytes"));
        assert_eq!(decrypt(&key, &sealed[..27]), Err("shorter than a nonce and a tag"));
        assert_eq!(decrypt(&key, &seal_like_weed(&key, [0; 12], b"")).unwrap(), b"");
    }

    #[test]
    fn chunks_name_their_needle_and_place() {
        let mut chunk = pb::FileChunk {
            file_id: "3,01637037d6".into(),
            offset: 10,
            size: 5,
            modified_ts_ns: 9,
            ..Default::default()
        };
        assert_eq!(stored("/f", &chunk).unwrap().fid.to_string(), "3,01637037d6");
        chunk.fid = Some(pb::FileId { volume_id: 4, file_key: 0x01, cookie: 0x637037d6 });
        assert_eq!(stored("/f", &chunk).unwrap().fid.to_string(), "4,01637037d6", "fid wins");
        assert_eq!(extent("/f", &chunk).unwrap(), Extent { offset: 10, size: 5, modified_ts_ns: 9 });

        chunk.offset = -1;
        assert!(matches!(extent("/f", &chunk), Err(Error::BadFileChunks { .. })));
        chunk.offset = 1;
        chunk.size = u64::MAX;
        assert!(matches!(extent("/f", &chunk), Err(Error::BadFileChunks { .. })));
        chunk.sse_type = pb::SseType::SseKms as i32;
        assert!(matches!(stored("/f", &chunk), Err(Error::ServerSideEncrypted { kind: "SSE-KMS", .. })));
        chunk.sse_type = 42;
        assert!(matches!(stored("/f", &chunk), Err(Error::ServerSideEncrypted { .. })));
    }
}
