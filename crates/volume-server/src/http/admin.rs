//! `/status` (weed's JSON shape), `/healthz` and `/metrics`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;

use super::{SharedState, json_response};
use crate::disk_space::DiskUsage;

/// weed's `storage.VolumeInfo` as `/status` lists it, in its field order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeJson {
    collection: String,
    disk_type: &'static str,
    remote_storage_name: &'static str,
    replica_placement: serde_json::Value,
    ttl: serde_json::Value,
    size: u64,
    deleted_byte_count: u64,
    modified_at_second: u64,
    id: u32,
    disk_id: u32,
    compact_revision: u16,
    file_count: u64,
    delete_count: u64,
    version: u8,
    read_only: bool,
    read_only_can_delete: bool,
}

/// weed's `DiskStatus` (encoding/json of the protobuf struct: snake_case, omitempty).
#[derive(Serialize)]
struct DiskStatus {
    dir: String,
    #[serde(skip_serializing_if = "is_zero")]
    all: u64,
    #[serde(skip_serializing_if = "is_zero")]
    used: u64,
    #[serde(skip_serializing_if = "is_zero")]
    free: u64,
    #[serde(skip_serializing_if = "is_zero_f")]
    percent_free: f32,
    #[serde(skip_serializing_if = "is_zero_f")]
    percent_used: f32,
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f(n: &f32) -> bool {
    *n == 0.0
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct StatusJson<'a> {
    disk_statuses: Vec<DiskStatus>,
    version: &'a str,
    volumes: Vec<VolumeJson>,
    /// Not in weed's `/status`: the RDMA read path (mode, cache figures).
    rdma: rdma_transport::server::RdmaStatus,
    /// Not in weed's `/status` (weed only logs them): volumes found on disk that did
    /// not load; absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_volumes: Vec<FailedVolumeJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct FailedVolumeJson {
    id: u32,
    collection: String,
    dir: String,
    error: String,
}

/// Disk usage of a directory.
fn disk_status(dir: &std::path::Path) -> DiskStatus {
    let mut status = DiskStatus {
        dir: dir.display().to_string(),
        all: 0,
        used: 0,
        free: 0,
        percent_free: 0.0,
        percent_used: 0.0,
        error: String::new(),
    };
    match DiskUsage::of(dir) {
        Ok(usage) => {
            status.all = usage.all;
            status.free = usage.free;
            status.used = usage.used();
            status.percent_free = usage.percent_free();
            status.percent_used = usage.percent_used();
        }
        Err(e) => status.error = e.to_string(),
    }
    status
}

pub(super) async fn status(State(state): State<SharedState>, request: Request) -> Response {
    let query = super::query_params(&request);
    let volumes: Vec<VolumeJson> = state
        .store
        .volumes()
        .iter()
        .map(|v| {
            let s = v.status();
            let rp = s.replica_placement;
            let mut placement = serde_json::Map::new();
            for (key, n) in [("node", rp.same_rack), ("rack", rp.other_racks), ("dc", rp.other_data_centers)]
            {
                if n != 0 {
                    placement.insert(key.into(), json!(n));
                }
            }
            VolumeJson {
                collection: s.collection,
                disk_type: "",
                remote_storage_name: "",
                replica_placement: serde_json::Value::Object(placement),
                ttl: json!({ "Count": s.ttl.count, "Unit": s.ttl.unit as u8 }),
                size: s.stats.file_bytes,
                deleted_byte_count: s.stats.deletion_bytes,
                modified_at_second: s.modified_at_second,
                id: s.id.0,
                disk_id: 0,
                compact_revision: s.compaction_revision,
                file_count: s.stats.file_count,
                delete_count: s.stats.deletion_count,
                version: s.version as u8,
                read_only: s.read_only,
                read_only_can_delete: false,
            }
        })
        .collect();
    let disks: Vec<_> = state.store.config().dirs.iter().map(|d| disk_status(d)).collect();
    let rdma = state.rdma.status();
    let failed_volumes = state
        .store
        .load_failures()
        .into_iter()
        .map(|f| FailedVolumeJson {
            id: f.id.0,
            collection: f.collection,
            dir: f.dir.display().to_string(),
            error: f.error,
        })
        .collect();
    let body = StatusJson { disk_statuses: disks, version: &state.version, volumes, rdma, failed_volumes };
    let text = if query.contains_key("pretty") {
        serde_json::to_string_pretty(&body).expect("status serializes")
    } else {
        serde_json::to_string(&body).expect("status serializes")
    };
    json_response(StatusCode::OK, text)
}

pub(super) async fn healthz() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("static headers are valid")
}

pub(super) async fn metrics(State(state): State<SharedState>) -> Response {
    let mut text = state.metrics.render();
    text.push_str(&load_report_metrics(&state));
    text.push_str(&state.rdma.render_metrics());
    text.push_str(&state.throttle.render_metrics());
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .header(header::CONTENT_LENGTH, text.len())
        .body(Body::from(text))
        .expect("static headers are valid")
}

/// What loading did per volume: how much `.idx` was replayed into the needle map (0
/// for a persisted map that was current) and what crash recovery repaired.
fn load_report_metrics(state: &SharedState) -> String {
    use std::fmt::Write;
    let volumes = state.store.volumes();
    let mut out = String::new();
    for (metric, help, pick) in [
        ("volume_server_load_replayed_idx_entries", ".idx entries applied to the needle map at load.", 0),
        ("volume_server_load_recovered_records", "Unindexed .dat records re-indexed at load.", 1),
        ("volume_server_load_dropped_idx_entries", ".idx entries dropped at load (record not in .dat).", 2),
        ("volume_server_load_truncated_bytes", "Torn-tail bytes cut from .dat and .idx at load.", 3),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for v in &volumes {
            let r = v.load_report();
            let value = [
                r.replayed_entries,
                r.recovered_records,
                r.dropped_idx_entries,
                r.truncated_dat_bytes + r.truncated_idx_bytes,
            ][pick];
            let _ = writeln!(out, "{metric}{{volume=\"{}\"}} {value}", v.id());
        }
    }
    let metric = "volume_server_volume_load_failed";
    let _ = writeln!(
        out,
        "# HELP {metric} A volume found on disk that did not load (see /status).\n# TYPE {metric} gauge"
    );
    for failure in state.store.load_failures() {
        let _ = writeln!(out, "{metric}{{volume=\"{}\"}} 1", failure.id);
    }
    out
}
