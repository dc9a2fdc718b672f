//! The master's HTTP API (`/dir/assign`, `/dir/lookup`), spoken by a real `weed master`
//! and by our standalone volume server alike, and a cache of volume locations (which
//! may come from another [`VolumeLocator`] instead, such as a filer's LookupVolume).

use crate::{BoxFuture, Error};
use needle::{FileId, VolumeId};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// Where volume locations come from when not from the master's `/dir/lookup` (a filer
/// client reads them from the filer, which may be all it can reach besides the volume
/// servers). The answers are cached like the master's.
pub(crate) trait VolumeLocator: Send + Sync + fmt::Debug {
    /// The volume servers (`host:port`) holding `volume`; none is
    /// [`Error::VolumeNotFound`].
    fn locate(&self, volume: VolumeId) -> BoxFuture<'_, Result<Vec<String>, Error>>;
}

/// What the master assigned for an upload.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub fid: FileId,
    /// The volume server to write to, `host:port`.
    pub server: String,
    /// JWT to present on the write, when the cluster signs writes.
    pub jwt: Option<String>,
}

/// Options of `/dir/assign` that an upload may set.
#[derive(Clone, Debug, Default)]
pub struct AssignOptions {
    pub collection: Option<String>,
    pub replication: Option<String>,
    pub ttl: Option<String>,
}

#[derive(Deserialize)]
struct AssignReply {
    #[serde(default)]
    fid: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct LookupReply {
    #[serde(default)]
    locations: Vec<Location>,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct Location {
    url: String,
}

/// Where a volume's servers came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Asked the master just now.
    Master,
    /// From the cache (or the one configured volume server): may be stale.
    Cache,
}

#[derive(Debug)]
pub(crate) struct MasterApi {
    http: reqwest::Client,
    /// `host:port` of the master (or of a standalone volume server).
    master: String,
    /// Single-server mode: every volume is on the master address itself, never looked up.
    single_server: bool,
    cache_ttl: Duration,
    locations: RwLock<HashMap<VolumeId, (Vec<String>, Instant)>>,
    /// Asked instead of `/dir/lookup` when set.
    locator: Option<Arc<dyn VolumeLocator>>,
}

impl MasterApi {
    pub(crate) fn new(
        http: reqwest::Client,
        master: String,
        single_server: bool,
        cache_ttl: Duration,
    ) -> Self {
        Self { http, master, single_server, cache_ttl, locations: RwLock::new(HashMap::new()), locator: None }
    }

    /// Locations come from `locator` instead of the master's `/dir/lookup`.
    pub(crate) fn with_locator(self, locator: Option<Arc<dyn VolumeLocator>>) -> Self {
        Self { locator, ..self }
    }

    fn error(&self, message: impl ToString) -> Error {
        Error::Master { master: self.master.clone(), message: message.to_string() }
    }

    /// A GET of the master's `path` (`/dir/...`) with `query`.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<reqwest::Response, Error> {
        let url = format!("http://{}{path}", self.master);
        self.http.get(url).query(query).send().await.map_err(|e| self.error(e))
    }

    pub(crate) async fn assign(&self, options: &AssignOptions) -> Result<Assignment, Error> {
        let mut query = vec![("count", "1".to_owned())];
        for (key, value) in [
            ("collection", &options.collection),
            ("replication", &options.replication),
            ("ttl", &options.ttl),
        ] {
            if let Some(value) = value {
                query.push((key, value.clone()));
            }
        }
        let response = self.get("/dir/assign", &query).await?;
        let jwt = bearer_token(response.headers());
        let status = response.status();
        let reply: AssignReply =
            response.json().await.map_err(|e| self.error(format!("assign reply: {e}")))?;
        if !status.is_success() || !reply.error.is_empty() {
            return Err(self.error(format!("assign refused ({status}): {}", reply.error)));
        }
        let fid = reply.fid.parse().map_err(|e| self.error(format!("assign returned a bad fid: {e}")))?;
        Ok(Assignment { fid, server: reply.url, jwt })
    }

    /// The servers holding `volume`, from the cache while fresh.
    pub(crate) async fn lookup(&self, volume: VolumeId) -> Result<(Vec<String>, Source), Error> {
        if self.single_server {
            return Ok((vec![self.master.clone()], Source::Cache));
        }
        if let Some((servers, at)) = self.locations.read().await.get(&volume)
            && at.elapsed() < self.cache_ttl
        {
            return Ok((servers.clone(), Source::Cache));
        }
        let servers = match &self.locator {
            Some(locator) => locator.locate(volume).await?,
            None => self.master_lookup(volume).await?,
        };
        self.locations.write().await.insert(volume, (servers.clone(), Instant::now()));
        Ok((servers, Source::Master))
    }

    /// The servers the master's `/dir/lookup` lists for `volume`.
    async fn master_lookup(&self, volume: VolumeId) -> Result<Vec<String>, Error> {
        let response = self.get("/dir/lookup", &[("volumeId", volume.to_string())]).await?;
        let reply: LookupReply =
            response.json().await.map_err(|e| self.error(format!("lookup reply: {e}")))?;
        if reply.locations.is_empty() {
            return Err(Error::VolumeNotFound { volume: volume.0, message: reply.error });
        }
        Ok(reply.locations.into_iter().map(|l| l.url).collect())
    }

    /// The master's token for one file, as weed clients get one in a cluster that signs
    /// reads or deletes: `/dir/lookup?fileId=<vid>,<key+cookie>` answers with a write
    /// token, or with `read=yes` a read token, in `Authorization: Bearer`. The `_N`
    /// delta is left out: volume servers check the base fid. None when no token comes.
    pub(crate) async fn file_token(&self, fid: &FileId, read: bool) -> Result<Option<String>, Error> {
        let mut query = vec![("fileId", format!("{},{}", fid.volume, fid.key_cookie_hex()))];
        if read {
            query.push(("read", "yes".to_owned()));
        }
        let response = self.get("/dir/lookup", &query).await?;
        Ok(bearer_token(response.headers()))
    }

    /// Drops a cached location after an error suggesting the volume moved. Whether
    /// there was one to drop (never in single-server mode).
    pub(crate) async fn forget(&self, volume: VolumeId) -> bool {
        self.locations.write().await.remove(&volume).is_some()
    }
}

/// The token in an `Authorization: Bearer …` response header.
fn bearer_token(headers: &reqwest::header::HeaderMap) -> Option<String> {
    let value = headers.get(reqwest::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}
