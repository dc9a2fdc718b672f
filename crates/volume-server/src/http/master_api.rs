//! The minimal master API a standalone server offers (no `--mserver`): `/dir/assign`
//! and `/dir/lookup` over its own volumes, in weed master's JSON shapes, so curl and
//! HTTP SDKs can use one process as a complete store.
//!
//! Keys come from one sequence for the whole server, started above the largest key
//! any volume holds, so an assigned fid never names an existing needle; cookies are
//! random. A `count` that would run the sequence past the largest key is refused
//! (406, weed master's assign error), never wrapped around to keys in use. Assign picks a writable volume of the requested collection, replication
//! and TTL, and creates one when there is none and `--max` allows.
//!
//! With JWT keys configured it issues tokens as weed master does (`Authorization:
//! BEARER <jwt>`): a write token for the assigned fid, and for a `/dir/lookup` with a
//! `fileId`, a write token (deletes) or, with `read=yes`, a read token.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use needle::{Cookie, FileId, NeedleId, ReplicaPlacement, Ttl};
use rand::Rng;
use serde::Serialize;

use super::upload::go_json;
use super::{SharedState, json_response, query_params};
use crate::security::Access;
use volume_store::store::Store;

pub struct MasterApi {
    /// `ip:port` clients should send reads and writes to.
    public_url: String,
    /// The largest key handed out or held by a volume: the next assign starts above it.
    last_key: AtomicU64,
}

impl MasterApi {
    pub fn new(store: &Store, public_url: String) -> Self {
        let max_key = store.volumes().iter().map(|v| v.max_key()).max().unwrap_or(0);
        Self { public_url, last_key: AtomicU64::new(max_key) }
    }
}

#[derive(Serialize, Default)]
struct AssignReply {
    #[serde(skip_serializing_if = "String::is_empty")]
    fid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    url: String,
    #[serde(rename = "publicUrl", skip_serializing_if = "String::is_empty")]
    public_url: String,
    #[serde(skip_serializing_if = "is_zero")]
    count: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn reply<T: Serialize>(status: StatusCode, body: &T) -> Response {
    json_response(status, go_json(&serde_json::to_string(body).expect("replies serialize")))
}

fn not_acceptable(error: String) -> Response {
    reply(StatusCode::NOT_ACCEPTABLE, &AssignReply { error, ..AssignReply::default() })
}

pub async fn assign(State(state): State<SharedState>, request: Request) -> Response {
    let Some(master) = &state.master else { return not_acceptable("no master API".into()) };
    let query = query_params(&request);
    let count = query.get("count").and_then(|c| c.parse::<u64>().ok()).filter(|&c| c > 0).unwrap_or(1);
    let collection = query.get("collection").cloned().unwrap_or_default();
    if let Err(e) = volume_store::volume::check_collection(&collection) {
        return reply(
            StatusCode::BAD_REQUEST,
            &AssignReply { error: e.to_string(), ..AssignReply::default() },
        );
    }
    let replication = query.get("replication").filter(|r| !r.is_empty()).map_or("000", String::as_str);
    let Ok(replica) = replication.parse::<ReplicaPlacement>() else {
        return not_acceptable(format!("invalid replication {replication:?}"));
    };
    if replica.copy_count() > 1 {
        return not_acceptable(format!("replication {replication} needs more than this one volume server"));
    }
    let ttl = match query.get("ttl").filter(|t| !t.is_empty()).map(|t| t.parse::<Ttl>()) {
        None => Ttl::EMPTY,
        Some(Ok(ttl)) => ttl,
        Some(Err(e)) => return not_acceptable(e.to_string()),
    };
    let Ok(last_key) =
        master.last_key.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| last.checked_add(count))
    else {
        return not_acceptable(format!("no file keys left for count {count}"));
    };
    let store = &state.store;
    let mut candidates: Vec<_> = store
        .volumes()
        .into_iter()
        .filter(|v| {
            v.collection() == collection
                && v.replica_placement() == replica
                && v.ttl() == ttl
                && store.is_writable(v)
        })
        .collect();
    let volume = if candidates.is_empty() {
        match store.create_volume(&collection, replica, ttl) {
            Ok(v) => v,
            Err(e) => {
                return not_acceptable(format!(
                    "failed to find writable volumes for collection:{collection} replication:{replication} ttl:{ttl} error: {e}"
                ));
            }
        }
    } else {
        let i = rand::rng().random_range(0..candidates.len());
        candidates.swap_remove(i)
    };
    let fid = FileId::new(volume.id(), NeedleId(last_key + 1), Cookie(rand::rng().random())).to_string();
    let token = state.security.issue(Access::Write, &fid);
    let response = reply(
        StatusCode::OK,
        &AssignReply {
            fid,
            url: master.public_url.clone(),
            public_url: master.public_url.clone(),
            count,
            error: String::new(),
        },
    );
    with_token(response, token)
}

/// weed master's `maybeAddJwtAuthorization`: the token in `Authorization: BEARER <jwt>`.
fn with_token(mut response: Response, token: Option<String>) -> Response {
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&format!("BEARER {t}")).ok()) {
        response.headers_mut().insert(header::AUTHORIZATION, value);
    }
    response
}

#[derive(Serialize)]
struct Location<'a> {
    url: &'a str,
    #[serde(rename = "publicUrl")]
    public_url: &'a str,
    #[serde(rename = "dataCenter")]
    data_center: &'static str,
}

#[derive(Serialize)]
struct LookupReply<'a> {
    #[serde(rename = "volumeOrFileId")]
    volume_or_file_id: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locations: Vec<Location<'a>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

pub async fn lookup(State(state): State<SharedState>, request: Request) -> Response {
    let Some(master) = &state.master else { return not_acceptable("no master API".into()) };
    let query = query_params(&request);
    let file_id = query.get("fileId").filter(|f| !f.is_empty());
    // weed takes the volume from a fileId with a comma over a volumeId.
    let asked = file_id
        .filter(|f| f.contains(','))
        .or(query.get("volumeId"))
        .or(file_id)
        .cloned()
        .unwrap_or_default();
    // A full fid works too: the volume id is what precedes the comma.
    let vid = asked.split(',').next().unwrap_or("");
    let (status, reply_body) = match vid.parse::<needle::VolumeId>() {
        Err(_) => (
            StatusCode::NOT_FOUND,
            LookupReply {
                volume_or_file_id: vid,
                locations: vec![],
                error: format!("unknown volume id {vid}"),
            },
        ),
        Ok(id) if state.store.volume(id).is_err() => (
            StatusCode::NOT_FOUND,
            LookupReply {
                volume_or_file_id: vid,
                locations: vec![],
                error: format!("volume id {id} not found"),
            },
        ),
        Ok(_) => (
            StatusCode::OK,
            LookupReply {
                volume_or_file_id: vid,
                locations: vec![Location {
                    url: &master.public_url,
                    public_url: &master.public_url,
                    data_center: "DefaultDataCenter",
                }],
                error: String::new(),
            },
        ),
    };
    // Like weed master: a token only for a file id that was found; a write token (for
    // deletes) unless `read=yes` asks for a read one.
    let token = match file_id {
        Some(fid) if status == StatusCode::OK => {
            let access =
                if query.get("read").is_some_and(|r| r == "yes") { Access::Read } else { Access::Write };
            state.security.issue(access, fid)
        }
        _ => None,
    };
    with_token(reply(status, &reply_body), token)
}
