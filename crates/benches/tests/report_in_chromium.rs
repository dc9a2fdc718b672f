//! The benchmark report opened in a real browser (Debian's headless `chromium`, which
//! `scripts/install-deps` installs): every plot lays out with visible lines. A script
//! added to a copy of the page (the report itself has none) measures each plot's lines
//! once the page has loaded and writes the count into the DOM that chromium dumps.

use std::process::Command;
use std::time::Duration;

use benches::figures::{Figure, FigureSet, percentiles_us};

fn sample() -> FigureSet {
    let mut set = FigureSet::new("sdk-rdma-vs-http", "figures made up for the test".into());
    for (path, scale) in [("rdma-sideway", 1u64), ("http", 4)] {
        for size in [4096u64, 1 << 20] {
            let samples: Vec<Duration> = (1..=100).map(|i| Duration::from_micros(i * scale * 10)).collect();
            set.figures.push(Figure {
                p50_us: Some((scale * size) as f64 / 100.0),
                mb_per_s: Some(1000.0 / scale as f64),
                percentiles_us: percentiles_us(&samples),
                ..Figure::new(path, size)
            });
        }
    }
    set
}

const MEASURE: &str = "<script>addEventListener('load', () => {
  const plots = [...document.querySelectorAll('figure.plot svg')];
  const drawn = plots.filter(svg => [...svg.querySelectorAll('polyline')]
    .some(line => { const box = line.getBBox(); return box.width > 50; }));
  document.body.setAttribute('data-plots', plots.length);
  document.body.setAttribute('data-drawn', drawn.length);
});</script></body>";

#[test]
fn every_plot_of_the_report_renders_in_headless_chromium() {
    let html = benches::report::render(&[sample()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    std::fs::write(&page, html.replace("</body>", MEASURE)).unwrap();

    let output = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"])
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap_or_else(|e| panic!("running chromium (scripts/install-deps installs it): {e}"));
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    // p50, throughput, and a latency distribution at each of the two sizes.
    assert!(dom.contains("data-plots=\"4\""), "plots found: {}", &dom[..dom.len().min(300)]);
    assert!(dom.contains("data-drawn=\"4\""), "plots with a visible line: {}", &dom[..dom.len().min(300)]);
}
