//! The Grafana dashboard in `dashboards/` against a running server's `/metrics`: every
//! metric a panel queries is exported, and every metric family the server exports is on
//! some panel, so neither a renamed metric nor a new one goes unnoticed.

mod common;

use std::collections::BTreeSet;

use common::*;

const DASHBOARD: &str = include_str!("../../../dashboards/grafana-volume-server.json");

/// The metric names in a PromQL expression (ours all start with `volume_server_`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("volume_server_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every `expr` of every panel target, and the `instance` variable's query.
fn expressions(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => expressions(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| expressions(item, out)),
        _ => {}
    }
}

/// Metric families in Prometheus text, with their types.
fn exported_families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_owned(), kind.to_owned()))
        .collect()
}

/// The family a queried series belongs to (`x_bucket` of histogram `x` is `x`).
fn family_of(name: &str, families: &[(String, String)]) -> Option<String> {
    if families.iter().any(|(family, _)| family == name) {
        return Some(name.to_owned());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        families.iter().any(|(family, kind)| family == base && kind == "histogram").then(|| base.to_owned())
    })
}

#[test]
fn every_panel_queries_exported_metrics_and_every_exported_metric_has_a_panel() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {:?} queries nothing", panel["title"]);
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "panel {:?}", panel["title"]);
    }

    let scratch = tempfile::tempdir().unwrap();
    let ours = OurServer::start(scratch.path(), &[]);
    let fid = ours.assign("");
    let stored =
        request(&ours.addr, "PUT", &format!("/{fid}"), &[("Content-Type", "text/plain")], b"dashboard")
            .unwrap();
    assert_eq!(stored.status, 201, "{}", stored.text());
    let metrics = get(&ours.addr, "/metrics");
    assert_eq!(metrics.status, 200);
    let families = exported_families(&metrics.text());

    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    let mut queried = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            let family = family_of(&name, &families).unwrap_or_else(|| {
                panic!("the dashboard queries `{name}`, which /metrics does not export ({expr})")
            });
            queried.insert(family);
        }
    }
    let unshown: Vec<_> =
        families.iter().map(|(family, _)| family).filter(|f| !queried.contains(*f)).collect();
    assert!(unshown.is_empty(), "exported but on no panel of the dashboard: {unshown:?}");
    ours.stop();
}
