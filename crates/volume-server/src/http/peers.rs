//! The other servers of a weed cluster: where a volume lives (the master's HTTP
//! `/dir/lookup`, any of the `--mserver` masters answering) and the pooled HTTP client
//! that reaches them. Chunk reads and deletes of chunk manifests, replicated writes and
//! deletes, and proxied reads all go through here.
//!
//! Locations are remembered for [`CACHE_FOR`]: replication asks on every write to a
//! replicated volume, and the master's answer rarely changes. An entry is forgotten
//! as soon as a remote call through it fails, or it names fewer servers than the
//! volume's copy count, so a replica that left or came back is seen on the next write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fallback_http::{HttpReadConfig, HttpReader};

/// How long a master's answer is trusted.
const CACHE_FOR: Duration = Duration::from_secs(10);

/// The HTTP clients remote reads, writes, deletes and lookups share (pooled
/// connections; every request bounded by their timeouts).
pub(super) fn clients() -> &'static (HttpReader, reqwest::Client) {
    static CLIENTS: OnceLock<(HttpReader, reqwest::Client)> = OnceLock::new();
    CLIENTS.get_or_init(|| {
        let config = HttpReadConfig::default();
        let reader = HttpReader::new(&config).expect("an HTTP client without TLS builds");
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .build()
            .expect("an HTTP client without TLS builds");
        (reader, client)
    })
}

/// Volume locations from the masters, cached briefly; cheap to clone.
#[derive(Clone, Default)]
pub struct VolumeLocations {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    masters: Vec<String>,
    cache: Mutex<HashMap<u32, (Instant, Vec<String>)>>,
}

impl VolumeLocations {
    /// Locations known by `masters` (`host:port`); none for a standalone server.
    pub fn new(masters: Vec<String>) -> Self {
        Self { inner: Arc::new(Inner { masters, cache: Mutex::default() }) }
    }

    /// Whether there is a master to ask (a server joined to a cluster).
    pub fn clustered(&self) -> bool {
        !self.inner.masters.is_empty()
    }

    /// The servers (`host:port`, as the master lists them) holding `volume`.
    pub async fn lookup(&self, volume: u32) -> Result<Vec<String>, String> {
        if let Some((at, servers)) = self.cache().get(&volume)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(servers.clone());
        }
        if self.inner.masters.is_empty() {
            return Err(format!("volume {volume} is not on this server, and it has no master to ask"));
        }
        let mut last = String::new();
        for master in &self.inner.masters {
            let url = format!("http://{master}/dir/lookup?volumeId={volume}");
            let reply = match clients().1.get(url).send().await {
                Ok(reply) => reply.bytes().await,
                Err(e) => Err(e),
            };
            let json: serde_json::Value = match reply {
                Ok(body) => serde_json::from_slice(&body).unwrap_or_default(),
                Err(e) => {
                    last = format!("master {master}: {e}");
                    continue;
                }
            };
            let servers: Vec<String> = json["locations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l["url"].as_str().map(str::to_owned))
                .collect();
            if !servers.is_empty() {
                self.cache().insert(volume, (Instant::now(), servers.clone()));
                return Ok(servers);
            }
            last = format!("master {master}: {}", json["error"].as_str().unwrap_or("no locations"));
        }
        Err(format!("looking up volume {volume}: {last}"))
    }

    /// Drops what is known of `volume`: the next lookup asks a master.
    pub fn forget(&self, volume: u32) {
        self.cache().remove(&volume);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (Instant, Vec<String>)>> {
        // The map holds no invariant a panicking holder could break.
        self.inner.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
