//! `/status` (weed's JSON shape), `/healthz` and `/metrics`.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;

use super::{SharedState, json_response};
use volume_store::disk_space::DiskUsage;

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
    text.push_str(&storage_metrics(&state));
    text.push_str(&state.heartbeat.render_metrics());
    text.push_str(&state.rdma.render_metrics());
    text.push_str(&state.throttle.render_metrics());
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; version=0.0.4")
        .header(header::CONTENT_LENGTH, text.len())
        .body(Body::from(text))
        .expect("static headers are valid")
}

/// Each data directory's file system (read now: a statvfs is cheap) and whether it is
/// below its minimum free space; each volume's size, live files and deletions.
fn storage_metrics(state: &SharedState) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let dirs = &state.store.config().dirs;
    let usage: Vec<_> = dirs.iter().map(|dir| DiskUsage::of(dir).ok()).collect();
    for (metric, help, pick) in [
        ("volume_server_disk_free_bytes", "Free bytes of a data directory's file system.", 0),
        ("volume_server_disk_total_bytes", "Size of a data directory's file system.", 1),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for (dir, usage) in dirs.iter().zip(&usage) {
            if let Some(usage) = usage {
                let value = [usage.free, usage.all][pick];
                let _ =
                    writeln!(out, "{metric}{{dir=\"{}\"}} {value}", label_value(&dir.display().to_string()));
            }
        }
    }
    let metric = "volume_server_disk_low";
    let _ = writeln!(
        out,
        "# HELP {metric} 1 while a data directory is below its minimum free space (its volumes read-only).\n# TYPE {metric} gauge"
    );
    for (index, dir) in dirs.iter().enumerate() {
        let low = u8::from(state.store.is_disk_space_low(index));
        let _ = writeln!(out, "{metric}{{dir=\"{}\"}} {low}", label_value(&dir.display().to_string()));
    }
    let volumes: Vec<_> = state.store.volumes().iter().map(|v| v.status()).collect();
    let _ = writeln!(out, "# HELP volume_server_volumes Volumes served.\n# TYPE volume_server_volumes gauge");
    let _ = writeln!(out, "volume_server_volumes {}", volumes.len());
    for (metric, help, pick) in [
        ("volume_server_volume_dat_bytes", "Size of a volume's .dat file.", 0),
        ("volume_server_volume_files", "Files put into a volume (overwrites count again).", 1),
        ("volume_server_volume_deleted_files", "Files deleted from a volume (space vacuum frees).", 2),
        ("volume_server_volume_read_only", "1 if a volume takes no writes.", 3),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} gauge");
        for v in &volumes {
            let value =
                [v.dat_size, v.stats.file_count, v.stats.deletion_count, u64::from(v.read_only)][pick];
            let collection = label_value(&v.collection);
            let _ = writeln!(out, "{metric}{{volume=\"{}\",collection=\"{collection}\"}} {value}", v.id);
        }
    }
    out
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
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
