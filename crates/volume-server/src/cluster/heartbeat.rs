//! Membership in a real `weed master` cluster: the `SendHeartbeat` stream.
//!
//! Like `weed volume`, the server opens one bidirectional stream to the master and
//! sends a full heartbeat (address, capacity, every volume) at once and then every
//! pulse, plus a delta (volumes created or deleted) as soon as the store changes. The
//! master answers with its volume size limit, or with the leader's address when it
//! is not the leader, and we then talk to the leader instead. When the stream
//! breaks (the master restarted, or was never up) we reconnect with a backoff,
//! trying the configured masters in turn, and re-register by sending the full list.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use super::pb::grpc_address;
use super::pb::master_pb::seaweed_client::SeaweedClient;
use super::pb::master_pb::{Heartbeat, VolumeInformationMessage, VolumeShortInformationMessage};
use volume_store::store::Store;
use volume_store::volume::VolumeStatus;

/// First and longest wait between reconnection attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// Most heartbeats queued for a master that is not reading them before the stream is
/// declared dead.
const QUEUE: usize = 8;

/// Who we are, as the master should list us.
#[derive(Clone, Debug)]
pub struct HeartbeatConfig {
    /// Masters' HTTP addresses (`host:port` or `host:port.grpcPort`), tried in turn.
    pub masters: Vec<String>,
    pub ip: String,
    pub port: u16,
    pub grpc_port: u16,
    pub public_url: String,
    pub data_center: String,
    pub rack: String,
    /// Interval between full heartbeats (weed's default pulse is 5 s).
    pub pulse: Duration,
    /// How the masters' gRPC ports are dialed (TLS when security.toml says so).
    pub dialer: rdma_transport::grpc_tls::Dialer,
    /// Where the stream's state is kept for `/metrics`.
    pub status: Arc<HeartbeatStatus>,
}

/// The heartbeat stream's state, as `/metrics` shows it: whether a master has accepted
/// us now, and how often a stream ended (a master restart, a network cut, a leader
/// change all show up here before volumes go missing from lookups).
#[derive(Debug, Default)]
pub struct HeartbeatStatus {
    registered: AtomicBool,
    streams_ended: AtomicU64,
}

impl HeartbeatStatus {
    fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Relaxed);
    }

    fn stream_ended(&self) {
        self.set_registered(false);
        self.streams_ended.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text: `volume_server_heartbeat_registered` (0 as well when the server
    /// runs standalone) and `volume_server_heartbeat_streams_ended_total`.
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP volume_server_heartbeat_registered 1 while a master accepts this server's heartbeats.\n\
             # TYPE volume_server_heartbeat_registered gauge\n\
             volume_server_heartbeat_registered {}",
            u8::from(self.registered.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            out,
            "# HELP volume_server_heartbeat_streams_ended_total Heartbeat streams to a master that ended (then reconnected).\n\
             # TYPE volume_server_heartbeat_streams_ended_total counter\n\
             volume_server_heartbeat_streams_ended_total {}",
            self.streams_ended.load(Ordering::Relaxed)
        );
        out
    }
}

/// How one connection to a master ended.
enum Ended {
    /// The master named another leader: talk to it next, at once.
    Redirect(String),
    /// The stream failed; `registered` says whether the master had accepted us.
    Failed { registered: bool, error: String },
}

/// Keeps the server registered with the cluster until `stop` turns true.
pub async fn run(store: Arc<Store>, config: HeartbeatConfig, mut stop: watch::Receiver<bool>) {
    let mut backoff = MIN_BACKOFF;
    let mut turn = 0usize;
    let mut leader: Option<String> = None;
    loop {
        let master = leader.take().unwrap_or_else(|| {
            turn += 1;
            config.masters[(turn - 1) % config.masters.len()].clone()
        });
        let ended = tokio::select! {
            ended = session(&store, &config, &master) => ended,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        config.status.stream_ended();
        match ended {
            Ended::Redirect(new_leader) => {
                tracing::info!(from = %master, to = %new_leader, "master names another leader; following");
                // No wait before trying the leader, and no backoff reset either: a
                // stale redirect to a dead leader must not turn into a tight loop.
                leader = Some(new_leader);
                continue;
            }
            Ended::Failed { registered, error } => {
                if registered {
                    backoff = MIN_BACKOFF;
                }
                tracing::warn!(%master, %error, retry_in = ?backoff, "heartbeat stream ended");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(store: &Store, config: &HeartbeatConfig, master: &str) -> Ended {
    let failed = |registered, error: String| Ended::Failed { registered, error };
    let address = match grpc_address(master) {
        Ok(a) => a,
        Err(e) => return failed(false, e),
    };
    let endpoint = match Endpoint::from_shared(format!("http://{address}")) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(5))
            // Notice a master that vanished without closing the connection. weed's gRPC
            // servers allow a client ping every 20 s at most (their keepalive
            // enforcement's MinTime): pinging more often gets the connection closed
            // (GOAWAY "too_many_pings") after the third ping, and the master then drops
            // this server and its volumes until it registers again.
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(5)),
        Err(e) => return failed(false, e.to_string()),
    };
    let channel = match config.dialer.connect(endpoint).await {
        Ok(c) => c,
        Err(e) => return failed(false, format!("connecting to {address}: {e}")),
    };
    let mut client = SeaweedClient::new(channel);
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut reported = BTreeMap::new();
    let send = |heartbeat: Heartbeat| {
        tx.try_send(heartbeat).map_err(|_| "the master is not reading heartbeats".to_owned())
    };
    if let Err(e) = send(full_heartbeat(store, config, &mut reported)) {
        return failed(false, e);
    }
    let mut responses = match client.send_heartbeat(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return failed(false, status.to_string()),
    };
    let mut pulse = tokio::time::interval(config.pulse);
    pulse.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pulse.tick().await;
    let mut registered = false;
    loop {
        let sent = tokio::select! {
            response = responses.message() => match response {
                Ok(Some(response)) => {
                    if !response.leader.is_empty() && response.leader != master {
                        return Ended::Redirect(response.leader);
                    }
                    if !response.duplicated_uuids.is_empty() {
                        return failed(registered, format!("master reports duplicated directories {:?}", response.duplicated_uuids));
                    }
                    if !registered {
                        tracing::info!(%master, volume_size_limit = response.volume_size_limit, "registered with master");
                        registered = true;
                        config.status.set_registered(true);
                    }
                    if response.resend_full_volume_list {
                        send(full_heartbeat(store, config, &mut reported))
                    } else {
                        Ok(())
                    }
                }
                Ok(None) => return failed(registered, "the master closed the stream".into()),
                Err(status) => return failed(registered, status.to_string()),
            },
            _ = pulse.tick() => send(full_heartbeat(store, config, &mut reported)),
            _ = store.changed().notified() => {
                let delta = delta_heartbeat(store, config, &mut reported);
                send(delta).and_then(|()| send(full_heartbeat(store, config, &mut reported)))
            }
        };
        if let Err(e) = sent {
            return failed(registered, e);
        }
    }
}

/// The fields every heartbeat carries: who we are and what we can hold.
fn identity(store: &Store, config: &HeartbeatConfig) -> Heartbeat {
    let max = store.max_volume_count();
    Heartbeat {
        ip: config.ip.clone(),
        port: u32::from(config.port),
        grpc_port: u32::from(config.grpc_port),
        public_url: config.public_url.clone(),
        data_center: config.data_center.clone(),
        rack: config.rack.clone(),
        // "" is weed's name for the default (hdd) disk type.
        max_volume_counts: [(String::new(), u32::try_from(max).unwrap_or(u32::MAX))].into(),
        ..Default::default()
    }
}

fn ttl_u32(ttl: needle::Ttl) -> u32 {
    let [count, unit] = ttl.to_bytes();
    u32::from(count) << 8 | u32::from(unit)
}

fn volume_information(s: &VolumeStatus) -> VolumeInformationMessage {
    VolumeInformationMessage {
        id: s.id.0,
        size: s.dat_size,
        collection: s.collection.clone(),
        file_count: s.stats.file_count,
        delete_count: s.stats.deletion_count,
        deleted_byte_count: s.stats.deletion_bytes,
        read_only: s.read_only,
        replica_placement: u32::from(s.replica_placement.to_byte()),
        version: s.version as u32,
        ttl: ttl_u32(s.ttl),
        compact_revision: u32::from(s.compaction_revision),
        modified_at_second: s.modified_at_second as i64,
        ..Default::default()
    }
}

fn short_information(s: &VolumeStatus) -> VolumeShortInformationMessage {
    VolumeShortInformationMessage {
        id: s.id.0,
        collection: s.collection.clone(),
        replica_placement: u32::from(s.replica_placement.to_byte()),
        version: s.version as u32,
        ttl: ttl_u32(s.ttl),
        ..Default::default()
    }
}

fn current(store: &Store) -> Vec<(VolumeStatus, u64)> {
    store.volumes().iter().map(|v| (v.status(), v.max_key())).collect()
}

/// Every volume; `reported` becomes what the master now knows.
fn full_heartbeat(
    store: &Store,
    config: &HeartbeatConfig,
    reported: &mut BTreeMap<u32, VolumeShortInformationMessage>,
) -> Heartbeat {
    let volumes = current(store);
    *reported = volumes.iter().map(|(s, _)| (s.id.0, short_information(s))).collect();
    Heartbeat {
        max_file_key: volumes.iter().map(|(_, max_key)| *max_key).max().unwrap_or(0),
        has_no_volumes: volumes.is_empty(),
        volumes: volumes.iter().map(|(s, _)| volume_information(s)).collect(),
        ..identity(store, config)
    }
}

/// The volumes created and deleted since the last heartbeat.
fn delta_heartbeat(
    store: &Store,
    config: &HeartbeatConfig,
    reported: &mut BTreeMap<u32, VolumeShortInformationMessage>,
) -> Heartbeat {
    let now: BTreeMap<u32, VolumeShortInformationMessage> =
        current(store).iter().map(|(s, _)| (s.id.0, short_information(s))).collect();
    let new_volumes =
        now.iter().filter(|(id, _)| !reported.contains_key(id)).map(|(_, v)| v.clone()).collect();
    let deleted_volumes =
        reported.iter().filter(|(id, _)| !now.contains_key(id)).map(|(_, v)| v.clone()).collect();
    *reported = now;
    Heartbeat { new_volumes, deleted_volumes, ..identity(store, config) }
}
