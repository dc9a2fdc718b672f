//! The operations on a file that only HTTP does, at one server: `HEAD` (its metadata)
//! and `DELETE`.

use crate::error::unreachable_server;
use crate::{Client, Error, FileId};

/// A file's metadata as a volume server reports it (a `HEAD`; no data is read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// The server that answered.
    pub server: String,
    /// Bytes as stored (gzip when `compressed`).
    pub stored_size: u64,
    pub compressed: bool,
    /// The server's ETag: raw CRC32-C of the stored bytes.
    pub etag: Option<String>,
    pub content_type: Option<String>,
    pub last_modified: Option<String>,
}

impl Client {
    pub(crate) async fn delete_at(&self, server: &str, fid: &FileId, jwt: Option<&str>) -> Result<(), Error> {
        let mut request = self.inner.http.delete(format!("http://{server}/{fid}"));
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        let response = request.send().await.map_err(|e| unreachable_server(server, fid, e))?;
        // Whatever the answer, a location an RDMA transport cached for the needle may no
        // longer hold it: it must not serve the needle's previous bytes.
        for transport in &self.inner.rdma {
            transport.forget_needle(server, fid);
        }
        match response.status().as_u16() {
            202 => Ok(()),
            404 => Err(Error::NotFound { fid: fid.to_string() }),
            status => {
                let message = response.text().await.unwrap_or_default();
                Err(Error::Server { server: server.to_owned(), status, message })
            }
        }
    }

    pub(crate) async fn stat_at(
        &self,
        server: &str,
        fid: &FileId,
        jwt: Option<&str>,
    ) -> Result<FileStat, Error> {
        let mut request = self
            .inner
            .http
            .head(format!("http://{server}/{fid}"))
            .header(reqwest::header::ACCEPT_ENCODING, "gzip");
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        let response = request.send().await.map_err(|e| unreachable_server(server, fid, e))?;
        match response.status().as_u16() {
            200 => {}
            404 => return Err(Error::NotFound { fid: fid.to_string() }),
            status => {
                return Err(Error::Server { server: server.to_owned(), status, message: String::new() });
            }
        }
        let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(FileStat {
            server: server.to_owned(),
            stored_size: header(reqwest::header::CONTENT_LENGTH).and_then(|l| l.parse().ok()).unwrap_or(0),
            compressed: header(reqwest::header::CONTENT_ENCODING)
                .is_some_and(|e| e.eq_ignore_ascii_case("gzip")),
            etag: header(reqwest::header::ETAG).map(|e| e.trim_matches('"').to_owned()),
            content_type: header(reqwest::header::CONTENT_TYPE),
            last_modified: header(reqwest::header::LAST_MODIFIED),
        })
    }
}
