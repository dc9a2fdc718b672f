//! An operation on one file at the servers holding its volume: locate (cached), retry
//! once at fresh locations when the cached ones look stale, at each server RDMA per
//! the [`RdmaPolicy`](crate::RdmaPolicy) and then HTTP, and once more with the file's
//! own token after an HTTP 401.

use crate::chunked::whole_manifest;
use crate::error::transport_error;
use crate::http_ops::FileStat;
use crate::master::Source;
use crate::plain::{plain_bytes, slice_range};
use crate::{
    Client, Error, FallbackReason, FileId, NeedleData, NeedleStream, RdmaPolicy, ReadTransport,
    TransportError, TransportErrorKind, stream, transport,
};
use bytes::Bytes;
use std::ops::Range;

/// An operation on one file, done at a server holding its volume.
pub(crate) enum Op {
    /// Reads: the whole stored needle, a plain range, a verified stream.
    Stored,
    Range(Range<u64>),
    Stream,
    /// HTTP only: a `HEAD`, a `DELETE`.
    Stat,
    Delete,
}

/// What it gave.
pub(crate) enum Done {
    Stored(NeedleData),
    Range(Bytes),
    Stream(Box<NeedleStream>),
    /// A range or stream read met a chunk manifest: its verified stored data.
    Manifest(NeedleData),
    Stat(FileStat),
    Deleted,
}

impl Client {
    pub(crate) async fn locate(&self, volume: needle::VolumeId) -> Result<(Vec<String>, Source), Error> {
        let located = self.inner.master.lookup(volume).await?;
        if located.1 == Source::Master {
            self.inner.policy.counted_lookup();
        }
        Ok(located)
    }

    /// `op` at the volume's servers, retried once at fresh locations when the cached
    /// ones look stale (see the crate docs).
    pub(crate) async fn at_volume(&self, fid: &FileId, op: &Op) -> Result<Done, Error> {
        let (servers, source) = self.locate(fid.volume).await?;
        let result = self.at_servers(&servers, fid, op).await;
        let looks_moved = matches!(result, Err(Error::TransportUnavailable { .. } | Error::NotFound { .. }));
        if !looks_moved || source != Source::Cache || !self.inner.master.forget(fid.volume).await {
            return result;
        }
        self.inner.policy.counted_refresh();
        let (fresh, _) = self.locate(fid.volume).await?;
        if fresh == servers && matches!(result, Err(Error::NotFound { .. })) {
            return result;
        }
        tracing::debug!(%fid, ?servers, ?fresh, "retrying at fresh locations");
        self.at_servers(&fresh, fid, op).await
    }

    /// `op` at the first server that answers; "not found" is final.
    async fn at_servers(&self, servers: &[String], fid: &FileId, op: &Op) -> Result<Done, Error> {
        let mut last = Error::TransportUnavailable { fid: fid.to_string(), detail: "no server".into() };
        for server in servers {
            match self.at_server(server, fid, op).await {
                Ok(done) => return Ok(done),
                Err(e @ Error::NotFound { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Reads: RDMA per the policy, then HTTP. Stat and delete: HTTP. An HTTP 401 means
    /// the cluster signs this access: the request is made once more with the file's
    /// token from the master, as weed clients do.
    async fn at_server(&self, server: &str, fid: &FileId, op: &Op) -> Result<Done, Error> {
        if let Op::Stored | Op::Range(_) | Op::Stream = op
            && let Some(result) = self.try_rdma(server, fid).await
        {
            let data = result?;
            return match op {
                Op::Range(_) | Op::Stream if data.chunk_manifest => Ok(Done::Manifest(data)),
                Op::Range(range) => slice_range(fid, plain_bytes(fid, data)?, range.clone()).map(Done::Range),
                Op::Stream => Ok(Done::Stream(Box::new(NeedleStream::in_memory(fid, data)))),
                _ => Ok(Done::Stored(data)),
            };
        }
        let result = self.over_http(server, fid, op, self.inner.jwt.as_deref()).await;
        if let Err(Error::Server { status: 401, .. }) = &result {
            let read = !matches!(op, Op::Delete);
            if let Some(token) = self.inner.master.file_token(fid, read).await? {
                return self.over_http(server, fid, op, Some(&token)).await;
            }
        }
        result
    }

    /// `op` over HTTP, presenting `jwt`.
    async fn over_http(&self, server: &str, fid: &FileId, op: &Op, jwt: Option<&str>) -> Result<Done, Error> {
        match op {
            Op::Stat => return self.stat_at(server, fid, jwt).await.map(Done::Stat),
            Op::Delete => return self.delete_at(server, fid, jwt).await.map(|()| Done::Deleted),
            Op::Stored | Op::Range(_) | Op::Stream => {}
        }
        let http = &self.inner.http_transport;
        let done = if let Op::Stored = op {
            Done::Stored(
                http.read_needle(server, fid, jwt)
                    .await
                    .map_err(|e| transport_error(server, fid, "http", e))?,
            )
        } else {
            let body = http
                .reader()
                .open_needle(server, fid, jwt)
                .await
                .map_err(|e| transport_error(server, fid, "http", transport::http_error(e)))?;
            match op {
                _ if body.chunk_manifest => Done::Manifest(whole_manifest(server, fid, body).await?),
                Op::Range(range) => Done::Range(stream::range_of(server, fid, body, range.clone()).await?),
                _ => Done::Stream(Box::new(
                    NeedleStream::receive(server, fid, body, self.inner.stream_memory_limit).await?,
                )),
            }
        };
        self.inner.policy.succeeded("http", server);
        Ok(done)
    }

    /// The RDMA attempt: `None` to go on to HTTP (the fallback already counted),
    /// `Some` with the answer otherwise.
    async fn try_rdma(&self, server: &str, fid: &FileId) -> Option<Result<NeedleData, Error>> {
        let inner = &self.inner;
        let prefer = inner.rdma_policy == RdmaPolicy::Prefer;
        match inner.rdma_policy {
            RdmaPolicy::Off => return None,
            RdmaPolicy::Prefer if inner.rdma.is_empty() => {
                inner.policy.fell_back("rdma", FallbackReason::NoRdmaTransport, server, &fid.to_string());
                return None;
            }
            _ => {}
        }
        let mut last = None;
        for transport in &inner.rdma {
            let name = transport.name();
            if prefer && !inner.policy.may_try(name, server, inner.rdma_timeout) {
                inner.policy.fell_back(name, FallbackReason::Backoff, server, &fid.to_string());
                continue;
            }
            let attempt = tokio::time::timeout(
                inner.rdma_timeout,
                transport.read_needle(server, fid, inner.jwt.as_deref()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(TransportError {
                    kind: TransportErrorKind::Timeout,
                    message: format!("no answer within {:?}", inner.rdma_timeout),
                })
            });
            match attempt {
                Ok(data) => {
                    inner.policy.succeeded(name, server);
                    return Some(Ok(data));
                }
                Err(e) => {
                    let Some(reason) = FallbackReason::of(e.kind) else {
                        return Some(Err(Error::NotFound { fid: fid.to_string() }));
                    };
                    inner.policy.failed(name, server, reason);
                    if prefer {
                        inner.policy.fell_back(name, reason, server, &fid.to_string());
                    }
                    last = Some(transport_error(server, fid, name, e));
                }
            }
        }
        if prefer {
            return None;
        }
        Some(Err(last.unwrap_or_else(|| Error::TransportUnavailable {
            fid: fid.to_string(),
            detail: "no RDMA transport".into(),
        })))
    }
}
