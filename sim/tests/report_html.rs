//! `report.html` in a real browser: Debian's Chromium, headless, loads the page the simulator
//! writes (and the page with the sweep's curves that `--from-prometheus --sweep` writes); a probe
//! script the test adds measures every chart as laid out and drawn, and reads back every number
//! of the policy table, which must be `report.json`'s.
//!
//! Chromium is installed by scripts/tools.sh in CI (apt package `chromium`); elsewhere, without
//! it, the test says so and passes.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keda_gpu_sim::{self as sim, html, SimulateArgs};

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM").map(PathBuf::from) {
        return Some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|d| [d.join("chromium"), d.join("chromium-browser")])
        .find(|p| p.is_file())
}

/// Appended before `</body>`: lays out every chart and records its size and how many of its
/// shapes have length (the background rectangle and at least two drawn marks), and every
/// numeric cell's field, exact value and text.
const PROBE: &str = r#"<script>
(function () {
  var out = { title: document.title, svgs: [], cells: [] };
  document.querySelectorAll("svg").forEach(function (s) {
    var r = s.getBoundingClientRect();
    var drawn = 0;
    s.querySelectorAll("path, polyline, polygon, line, circle, rect").forEach(function (p) {
      if (p.getTotalLength() > 0) { drawn += 1; }
    });
    out.svgs.push({ w: r.width, h: r.height, drawn: drawn, texts: s.querySelectorAll("text").length });
  });
  document.querySelectorAll("[data-field]").forEach(function (c) {
    out.cells.push({ policy: c.dataset.policy || "", field: c.dataset.field, value: c.dataset.value, text: c.textContent });
  });
  var pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"#;

/// The probe's findings for `page`, from Chromium's dump of the DOM after load.
fn probe(browser: &Path, page: &Path, dir: &Path) -> serde_json::Value {
    let html = std::fs::read_to_string(page).unwrap();
    let probed = dir.join(format!(
        "probed-{}",
        page.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&probed, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();
    let dump = dir.join("dom.html");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", probed.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&dump).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish in 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "chromium exited with {status}");
    let dom = std::fs::read_to_string(&dump).unwrap();
    let start = dom
        .find("<pre id=\"probe\">")
        .unwrap_or_else(|| panic!("the probe did not run; the page did not load: {dom:.2000}"))
        + "<pre id=\"probe\">".len();
    let end = start + dom[start..].find("</pre>").unwrap();
    let json = dom[start..end]
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    serde_json::from_str(&json).unwrap()
}

/// Equal up to the last bit serde_json's default float parser may get wrong.
fn same(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

/// Every number of the policy table against `report.json`, and each chart drawn.
fn check(found: &serde_json::Value, report_json: &Path, charts: usize) {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report_json).unwrap()).unwrap();
    let svgs = found["svgs"].as_array().unwrap();
    assert_eq!(svgs.len(), charts, "{svgs:?}");
    for s in svgs {
        assert!(
            s["w"].as_f64().unwrap() > 300.0 && s["h"].as_f64().unwrap() > 200.0,
            "a chart laid out too small: {s}"
        );
        assert!(
            s["drawn"].as_u64().unwrap() >= 3 && s["texts"].as_u64().unwrap() >= 3,
            "a chart with nothing drawn: {s}"
        );
    }
    let cells = found["cells"].as_array().unwrap();
    let cell = |policy: &str, field: &str| {
        cells
            .iter()
            .find(|c| c["policy"] == policy && c["field"] == field)
            .unwrap_or_else(|| panic!("no cell {policy}/{field}"))
    };
    let requests = cells.iter().find(|c| c["field"] == "requests").unwrap();
    assert_eq!(
        requests["value"].as_str().unwrap(),
        report["trace"]["requests"].to_string()
    );
    let policies = report["policies"].as_array().unwrap();
    assert!(policies.len() >= 7);
    let mut checked = 0;
    for p in policies {
        let name = p["name"].as_str().unwrap();
        for (field, digits, percent) in [
            ("gpu_hours", 2, false),
            ("slo_attainment", 2, true),
            ("e2e_slo_attainment", 2, true),
            ("latency_p50_s", 2, false),
            ("latency_p95_s", 2, false),
            ("latency_p99_s", 2, false),
            ("replicas_max", 0, false),
            ("replicas_mean", 1, false),
            ("scaling_events", 0, false),
            ("timed_out", 0, false),
        ] {
            let want = p[field].as_f64().unwrap();
            let c = cell(name, field);
            let got: f64 = c["value"].as_str().unwrap().parse().unwrap();
            assert!(same(got, want), "{name}/{field}: {got} vs {want}");
            let text = c["text"].as_str().unwrap();
            let shown = if percent {
                format!("{:.digits$} %", 100.0 * want)
            } else {
                format!("{want:.digits$}")
            };
            assert_eq!(text, shown, "{name}/{field}");
            checked += 1;
        }
        if let Some(v) = p["gpu_hours_vs_oracle"].as_f64() {
            let got: f64 = cell(name, "gpu_hours_vs_oracle")["value"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(same(got, v), "{name}/gpu_hours_vs_oracle: {got} vs {v}");
        }
    }
    assert_eq!(checked, policies.len() * 10);
}

#[test]
fn report_html_loads_in_chromium_with_its_charts_drawn_and_report_json_numbers() {
    let Some(browser) = chromium() else {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(
            !ci,
            "chromium is not on PATH in CI; scripts/tools.sh installs it (apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED report_html: no chromium on PATH (apt-get install chromium, or set CHROMIUM); CI installs it"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The page the command line writes.
    let status = Command::new(env!("CARGO_BIN_EXE_keda-gpu-sim"))
        .args([
            "--generator",
            "step:low=2,high=12,at=600",
            "--duration-s",
            "1800",
            "--seed",
            "7",
            "--out",
        ])
        .arg(&out)
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(status.status.success());
    let stdout = String::from_utf8_lossy(&status.stdout);
    let page = out.join("report.html");
    assert!(
        stdout.contains(&format!("open {}", page.display())),
        "{stdout}"
    );
    let found = probe(&browser, &page, dir.path());
    assert!(
        found["title"].as_str().unwrap().starts_with("keda-gpu-sim"),
        "{found}"
    );
    check(&found, &out.join("report.json"), 1);

    // The page with the sweep's curves and an extra section, as --from-prometheus --sweep
    // writes it.
    let args = SimulateArgs {
        generator: Some("step:low=2,high=12,at=600".into()),
        duration_s: 1800.0,
        seed: 7,
        ..SimulateArgs::with_defaults(dir.path().join("sweep"))
    };
    let sweep = sim::run_sweep(&args).unwrap();
    let summary = sim::run(&args).unwrap();
    let section = html::Section {
        id: "extra".into(),
        title: "Extra <section>".into(),
        html: html::table(&["a"], &[vec![html::td("1")]]),
    };
    let page = html::page(&summary.report, Some(&sweep), &[section]);
    assert!(page.contains("Extra &lt;section&gt;"));
    std::fs::write(&summary.report_html, page).unwrap();
    let found = probe(&browser, &summary.report_html, dir.path());
    check(&found, &summary.report_json, 1 + sweep.scenarios.len());
}
