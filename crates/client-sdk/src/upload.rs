//! Uploads: one needle (assign, multipart POST, then the stored form checked against
//! what was sent), and chunked files as `weed upload -maxMB` writes them.

use crate::error::unreachable_server;
use crate::plain::plain_bytes;
use crate::{AssignOptions, Client, Error, FileId};
use bytes::Bytes;
use needle::{Chunk, ChunkManifest};

/// What to store with an upload.
#[derive(Clone, Debug, Default)]
pub struct UploadOptions {
    pub name: Option<String>,
    pub mime: Option<String>,
    /// Stored as `Seaweed-<key>` pairs and served back as `<key>` headers.
    pub pairs: Vec<(String, String)>,
    /// e.g. `"5d"`; also asks the master for a volume with that TTL.
    pub ttl: Option<String>,
    pub assign: AssignOptions,
}

impl UploadOptions {
    pub fn named(name: impl Into<String>) -> Self {
        Self { name: Some(name.into()), ..Self::default() }
    }
}

/// An acknowledged upload.
#[derive(Clone, Debug)]
pub struct Uploaded {
    pub fid: FileId,
    pub server: String,
    /// Bytes sent (before any server-side compression).
    pub size: u64,
    /// The server's ETag: raw CRC32-C of the data as it stored it.
    pub etag: String,
}

impl Client {
    /// Assigns a file id through the master and writes `data` to it.
    pub async fn upload(&self, data: impl Into<Bytes>, options: &UploadOptions) -> Result<Uploaded, Error> {
        self.upload_needle(data.into(), options, false).await
    }

    /// Uploads `data` as `weed upload -maxMB` does: in chunks of at most `chunk_size`
    /// bytes, each a needle of its own, then a chunk manifest listing them (JSON,
    /// uploaded with `cm=true`), whose fid is the file's. Chunks already stored are
    /// deleted again (best effort) when a later upload fails. Reads of the returned fid
    /// give the whole file (see the crate docs).
    pub async fn upload_chunked(
        &self,
        data: impl Into<Bytes>,
        options: &UploadOptions,
        chunk_size: u64,
    ) -> Result<Uploaded, Error> {
        let data: Bytes = data.into();
        if chunk_size == 0 {
            return Err(Error::Config("chunk_size must be above zero".into()));
        }
        let name = options.name.clone().unwrap_or_default();
        let mut chunks = Vec::new();
        let mut offset = 0u64;
        for (i, piece) in data.chunks(chunk_size as usize).enumerate() {
            let chunk_options = UploadOptions {
                name: Some(format!("{name}-{}", i + 1)),
                mime: None,
                pairs: Vec::new(),
                ..options.clone()
            };
            match self.upload_needle(data.slice_ref(piece), &chunk_options, false).await {
                Ok(stored) => {
                    chunks.push(Chunk { fid: stored.fid, offset, size: stored.size });
                    offset += stored.size;
                }
                Err(e) => {
                    self.delete_chunks(&chunks).await;
                    return Err(e);
                }
            }
        }
        let manifest = ChunkManifest {
            name,
            mime: options.mime.clone().unwrap_or_else(|| "application/octet-stream".into()),
            size: data.len() as u64,
            chunks,
        };
        let json = Bytes::from(manifest.to_json());
        let manifest_options = UploadOptions { mime: Some("application/json".into()), ..options.clone() };
        match self.upload_needle(json, &manifest_options, true).await {
            Ok(stored) => Ok(Uploaded { size: data.len() as u64, ..stored }),
            Err(e) => {
                self.delete_chunks(&manifest.chunks).await;
                Err(e)
            }
        }
    }

    async fn delete_chunks(&self, chunks: &[Chunk]) {
        for chunk in chunks {
            if let Err(e) = self.delete(&chunk.fid).await {
                tracing::warn!(fid = %chunk.fid, error = %e, "left behind a chunk of a failed upload");
            }
        }
    }

    /// One needle's upload; `chunk_manifest` flags it as a manifest (`cm=true`).
    async fn upload_needle(
        &self,
        data: Bytes,
        options: &UploadOptions,
        chunk_manifest: bool,
    ) -> Result<Uploaded, Error> {
        let mut assign = options.assign.clone();
        assign.ttl = assign.ttl.or_else(|| options.ttl.clone());
        let assignment = self.inner.master.assign(&assign).await?;
        let fid = assignment.fid;
        let server = assignment.server;
        let boundary = multipart_boundary(&data);
        let filename = options.name.as_deref().unwrap_or("");
        let mime = options.mime.as_deref().unwrap_or("application/octet-stream");
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: {mime}\r\n\r\n",
            filename.replace(['"', '\r', '\n'], "_")
        )
        .into_bytes();
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

        let mut request = self
            .inner
            .http
            .post(format!("http://{server}/{fid}"))
            .header(reqwest::header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(body);
        if let Some(ttl) = &options.ttl {
            request = request.query(&[("ttl", ttl)]);
        }
        if chunk_manifest {
            request = request.query(&[("cm", "true")]);
        }
        for (key, value) in &options.pairs {
            request = request.header(format!("Seaweed-{key}"), value);
        }
        if let Some(jwt) = &assignment.jwt {
            request = request.bearer_auth(jwt);
        }
        let response = request.send().await.map_err(|e| unreachable_server(&server, &fid, e))?;
        let status = response.status();
        let reply: serde_json::Value = response.json().await.map_err(|e| Error::Server {
            server: server.clone(),
            status: status.as_u16(),
            message: format!("unreadable reply: {e}"),
        })?;
        if status.as_u16() != 201 || reply.get("error").is_some_and(|e| !e.is_null()) {
            let message = reply.get("error").and_then(|e| e.as_str()).unwrap_or("").to_owned();
            return Err(Error::Server { server, status: status.as_u16(), message });
        }
        let etag = reply.get("eTag").and_then(|e| e.as_str()).unwrap_or("").to_owned();
        let sent = needle::crc::etag(needle::crc::crc32c(&data));
        // The server may have stored gzip (weed decides from the mime type and the file
        // name's extension), and then its CRC is over the gzip bytes: read the stored
        // form back, verified, and check that it decompresses to what we sent.
        if etag != sent {
            let stored = self.read_stored(&fid).await?;
            if !stored.compressed || plain_bytes(&fid, stored)? != data {
                return Err(Error::UploadCorrupted { fid: fid.to_string(), stored: etag, sent });
            }
        }
        Ok(Uploaded { fid, server, size: data.len() as u64, etag })
    }
}

/// A multipart boundary that does not occur in `data` (else the server would cut the
/// file short there).
fn multipart_boundary(data: &[u8]) -> String {
    first_boundary_not_in(data, &format!("seaweed-sdk-{:08x}", needle::crc::crc32c(data)))
}

fn first_boundary_not_in(data: &[u8], stem: &str) -> String {
    (0u32..)
        .map(|n| format!("{stem}-{n}"))
        .find(|b| !data.windows(b.len()).any(|w| w == b.as_bytes()))
        .expect("some boundary is not in the data")
}

#[cfg(test)]
mod tests {
    use super::{first_boundary_not_in, multipart_boundary};

    #[test]
    fn the_multipart_boundary_never_occurs_in_the_data() {
        assert_eq!(first_boundary_not_in(b"hello", "b"), "b-0");
        assert_eq!(first_boundary_not_in(b"xx b-0 b-1 yy", "b"), "b-2");
        let data = b"payload";
        assert!(multipart_boundary(data).starts_with("seaweed-sdk-"));
    }
}
