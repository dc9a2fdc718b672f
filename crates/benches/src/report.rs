//! One self-contained HTML page (inline SVG, no scripts, no network) with plots of the
//! figures the harnesses saved ([`crate::figures`]): per harness, each measured quantity
//! by request size with one line per path (RDMA per engine, HTTP, perftest; ours and
//! weed), the latency distributions, and the numbers in a table.

use std::collections::BTreeSet;
use std::fmt::Write;

use plotters::prelude::*;

use crate::figures::{Figure, FigureSet};

/// A quantity a figure may carry, and how it is labelled.
struct Quantity {
    title: &'static str,
    unit: &'static str,
    value: fn(&Figure) -> Option<f64>,
    /// Drawn on a log scale: latencies span orders of magnitude across sizes and paths.
    log: bool,
}

const QUANTITIES: &[Quantity] = &[
    Quantity { title: "latency p50", unit: "us", value: |f| f.p50_us, log: true },
    Quantity { title: "latency p99", unit: "us", value: |f| f.p99_us, log: true },
    Quantity { title: "throughput", unit: "MB/s", value: |f| f.mb_per_s, log: false },
    Quantity { title: "request rate", unit: "req/s", value: |f| f.req_per_s, log: false },
    Quantity { title: "server CPU per GiB", unit: "s", value: |f| f.cpu_s_per_gib, log: false },
];

/// The HTML page for `sets`.
pub fn render(sets: &[FigureSet]) -> Result<String, String> {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>seaweed-rdma benchmarks</title>\
         <style>body{font-family:sans-serif;margin:2em}figure{display:inline-block;margin:0 1em 1em 0}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style>\
         </head><body>\n<h1>seaweed-rdma benchmarks</h1>\n",
    );
    if sets.is_empty() {
        html.push_str("<p>No figures were saved.</p>\n");
    }
    for set in sets {
        let _ = writeln!(
            html,
            "<section class=\"harness\"><h2>{}</h2>\n<p>{} &middot; taken at {} (Unix seconds) &middot; {}</p>",
            escape(&set.harness),
            escape(&set.machine),
            set.taken_at,
            escape(&set.method)
        );
        for quantity in QUANTITIES {
            if let Some(svg) = by_size_chart(set, quantity)? {
                let _ = writeln!(html, "<figure class=\"plot\">{svg}</figure>");
            }
        }
        for size in sizes(set) {
            if let Some(svg) = distribution_chart(set, size)? {
                let _ = writeln!(html, "<figure class=\"plot\">{svg}</figure>");
            }
        }
        html.push_str(&table(set));
        html.push_str("</section>\n");
    }
    html.push_str("</body></html>\n");
    Ok(html)
}

fn sizes(set: &FigureSet) -> Vec<u64> {
    set.figures.iter().map(|f| f.size).collect::<BTreeSet<_>>().into_iter().collect()
}

/// `path` with its operation, as a legend names a line.
fn series_name(f: &Figure) -> String {
    if f.op.is_empty() { f.path.clone() } else { format!("{} {}", f.path, f.op) }
}

/// One line per path of `quantity` against the size (sizes evenly spaced, in order); None
/// if no figure has it.
fn by_size_chart(set: &FigureSet, quantity: &Quantity) -> Result<Option<String>, String> {
    let sizes = sizes(set);
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for f in &set.figures {
        let Some(value) = (quantity.value)(f) else { continue };
        let x = sizes.iter().position(|&s| s == f.size).unwrap_or(0) as f64;
        let name = series_name(f);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push((x, value)),
            None => series.push((name, vec![(x, value)])),
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    let labels: Vec<String> = sizes.iter().map(|&s| human(s)).collect();
    let title = format!("{}: {} ({})", set.harness, quantity.title, quantity.unit);
    line_chart(&title, "request size", quantity.unit, &labels, &series, quantity.log).map(Some)
}

/// The latency distribution at `size`, one line per path; None without percentiles.
fn distribution_chart(set: &FigureSet, size: u64) -> Result<Option<String>, String> {
    let with: Vec<&Figure> =
        set.figures.iter().filter(|f| f.size == size && !f.percentiles_us.is_empty()).collect();
    let Some(first) = with.first() else { return Ok(None) };
    let labels: Vec<String> = first.percentiles_us.iter().map(|(p, _)| format!("p{p}")).collect();
    let series: Vec<(String, Vec<(f64, f64)>)> = with
        .iter()
        .map(|f| {
            (
                series_name(f),
                f.percentiles_us.iter().enumerate().map(|(i, &(_, us))| (i as f64, us)).collect(),
            )
        })
        .collect();
    let title = format!("{}: latency distribution at {}", set.harness, human(size));
    line_chart(&title, "percentile", "us", &labels, &series, true).map(Some)
}

/// An SVG line chart of `series` over the categories `labels` (x = index); with `log`,
/// values are drawn as their log10 (non-positive ones left out) and labelled as values.
fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    labels: &[String],
    series: &[(String, Vec<(f64, f64)>)],
    log: bool,
) -> Result<String, String> {
    let fail = |e: &dyn std::fmt::Display| format!("drawing `{title}`: {e}");
    let scaled: Vec<(&String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, points)| {
            let points = match log {
                true => points.iter().filter(|p| p.1 > 0.0).map(|&(x, y)| (x, y.log10())).collect(),
                false => points.clone(),
            };
            (name, points)
        })
        .collect();
    let ys = || scaled.iter().flat_map(|(_, points)| points.iter().map(|p| p.1));
    let (y_bottom, y_top) = match log {
        true => (ys().fold(f64::INFINITY, f64::min).floor().min(0.0), ys().fold(0.0, f64::max).ceil() + 0.2),
        false => (0.0, ys().fold(0.0, f64::max) * 1.15),
    };
    let y_top = if y_top > y_bottom { y_top } else { y_bottom + 1.0 };
    let y_label = |y: &f64| match log {
        true => format!("{}", 10f64.powf(*y)),
        false => format!("{y}"),
    };
    let x_top = (labels.len().max(2) - 1) as f64;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (560, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.3..x_top + 0.3, y_bottom..y_top)
            .map_err(|e| fail(&e))?;
        let label_of = |x: &f64| {
            let index = x.round();
            match labels.get(index as usize) {
                Some(label) if (x - index).abs() < 1e-6 && index >= 0.0 => label.clone(),
                _ => String::new(),
            }
        };
        chart
            .configure_mesh()
            .x_labels(labels.len().max(2) * 4)
            .x_label_formatter(&label_of)
            .y_labels(if log { (y_top - y_bottom) as usize + 1 } else { 10 })
            .y_label_formatter(&y_label)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(|e| fail(&e))?;
        for (i, (name, points)) in scaled.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .map_err(|e| fail(&e))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart
                .draw_series(points.iter().map(|&point| Circle::new(point, 3, color.filled())))
                .map_err(|e| fail(&e))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    Ok(svg)
}

fn table(set: &FigureSet) -> String {
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}"));
    let mut out = String::from(
        "<table><tr><th>path</th><th>size</th><th>p50 us</th><th>p99 us</th><th>MB/s</th>\
         <th>req/s</th><th>CPU s/GiB</th></tr>\n",
    );
    for f in &set.figures {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&series_name(f)),
            human(f.size),
            cell(f.p50_us),
            cell(f.p99_us),
            cell(f.mb_per_s),
            cell(f.req_per_s),
            cell(f.cpu_s_per_gib)
        );
    }
    out.push_str("</table>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// 4096 -> `4 KiB`.
pub fn human(size: u64) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> FigureSet {
        let mut set = FigureSet::new("sdk-rdma-vs-http", "test figures".into());
        for (path, scale) in [("rdma-sideway", 1.0), ("http", 4.0)] {
            for size in [4096u64, 65536, 1 << 20] {
                set.figures.push(Figure {
                    p50_us: Some(scale * size as f64 / 100.0),
                    p99_us: Some(scale * size as f64 / 50.0),
                    mb_per_s: Some(1000.0 / scale),
                    percentiles_us: vec![(50.0, scale * 10.0), (99.0, scale * 30.0)],
                    ..Figure::new(path, size)
                });
            }
        }
        set
    }

    #[test]
    fn every_quantity_measured_gets_a_plot_and_the_table_every_figure() {
        let html = render(&[sample()]).unwrap();
        // p50, p99, throughput, and a distribution per size.
        assert_eq!(html.matches("<figure class=\"plot\"><svg").count(), 3 + 3);
        assert!(html.contains("rdma-sideway") && html.contains("1 MiB"));
        assert_eq!(html.matches("<tr><td>").count(), 6);
        assert!(!html.contains("request rate"), "no req/s was measured");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human(4096), "4 KiB");
        assert_eq!(human(1 << 20), "1 MiB");
        assert_eq!(human(1000), "1000 B");
    }
}
