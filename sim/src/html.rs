//! `report.html`: the report as one self-contained page a person reads (no script, no external
//! file): the trace, a table of policies, the replicas chart and, when the run made them, the
//! cost-attainment curves and sections such as `--from-prometheus`'s fit. Every number of the
//! policy table carries its exact value in `data-value` (`data-policy` and `data-field` name it,
//! as in `report.json`), so tools can check the page against the JSON. Pure: a string out.

use std::fmt::Write;

use super::report::{self, Report};
use super::sweep::Sweep;

/// A section the caller adds after the report's own: its anchor, heading and HTML body.
#[derive(Clone, Debug, PartialEq)]
pub struct Section {
    pub id: String,
    pub title: String,
    pub html: String,
}

/// Text made safe for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A plain cell holding `html` (already escaped).
pub fn td(html: &str) -> String {
    format!("<td>{html}</td>")
}

/// A table: header cells as text, body cells as whole `<td>` elements (see `td`).
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = String::from("<table>\n<thead><tr>");
    for h in headers {
        let _ = write!(t, "<th>{}</th>", escape(h));
    }
    t.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        t.push_str("<tr>");
        for c in row {
            t.push_str(c);
        }
        t.push_str("</tr>\n");
    }
    t.push_str("</tbody>\n</table>\n");
    t
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .5em}td{white-space:nowrap}\
th{background:#f4f4f4}td[data-value]{text-align:right;font-variant-numeric:tabular-nums}\
.note{color:#555;font-size:.9em}.warn{color:#8a4b00}svg{max-width:100%;height:auto;display:block;margin:1em 0}\
code{background:#f4f4f4;padding:0 .2em}";

/// A numeric cell of the policy table.
fn num(policy: &str, field: &str, value: f64, digits: usize, suffix: &str) -> String {
    format!(
        "<td data-policy=\"{}\" data-field=\"{field}\" data-value=\"{value}\">{value:.digits$}{suffix}</td>",
        escape(policy)
    )
}

fn pct(policy: &str, field: &str, share: f64) -> String {
    format!(
        "<td data-policy=\"{}\" data-field=\"{field}\" data-value=\"{share}\">{:.2} %</td>",
        escape(policy),
        100.0 * share
    )
}

fn opt(policy: &str, field: &str, value: Option<f64>, digits: usize) -> String {
    match value {
        Some(v) => num(policy, field, v, digits, ""),
        None => td("-"),
    }
}

/// The page: the report, the sweep's curves when given, then `sections`.
pub fn page(report: &Report, sweep: Option<&Sweep>, sections: &[Section]) -> String {
    let t = &report.trace;
    let s = &report.settings;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>keda-gpu-sim: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&t.source)
    );
    let _ = writeln!(h, "<h1>Simulation report</h1>");
    let _ = writeln!(
        h,
        "<p>Trace <code>{}</code>: <span data-field=\"requests\" data-value=\"{}\">{}</span> requests over {:.0} s (mean {:.2} req/s, peak {:.2} req/s; rate x{}, time x{}).</p>",
        escape(&t.source),
        t.requests,
        t.requests,
        t.duration_s,
        t.mean_rps,
        t.peak_rps,
        t.rate_scale,
        t.time_scale
    );
    let _ = writeln!(
        h,
        "<p class=\"note\">SLO: time to first token &le; {:.0} ms and time per output token &le; {:.0} ms for requests with tokens, end-to-end &le; {:.0} ms otherwise. Cold start {:.0} s, queue timeout {:.0} s, grace period {:.0} s, scrape {:.0} s, batch {}, at most {} replicas, seed {}. Cost profile: overhead {} s, prefill {} s/token, decode {} s/token, full-batch slowdown {}.</p>",
        s.ttft_slo_s * 1000.0,
        s.tpot_slo_s * 1000.0,
        s.slo_s * 1000.0,
        s.cold_start_s,
        s.timeout_s,
        s.grace_s,
        s.scrape_s,
        s.cost.batch,
        s.max_replicas,
        s.seed,
        s.cost.overhead_s,
        s.cost.prefill_s_per_token,
        s.cost.decode_s_per_token,
        s.cost.full_batch_slowdown
    );
    let _ = writeln!(h, "<h2 id=\"policies\">Policies</h2>");
    let headers = [
        "policy",
        "GPU-h",
        "vs oracle",
        "vs composite",
        "SLO met",
        "e2e SLO met",
        "p50 s",
        "p95 s",
        "p99 s",
        "timed out",
        "cut on scale-down",
        "replicas min",
        "replicas mean",
        "replicas max",
        "scaling events",
    ];
    let rows: Vec<Vec<String>> = report
        .policies
        .iter()
        .map(|p| {
            let n = p.name.as_str();
            vec![
                format!("<td data-policy=\"{0}\">{0}</td>", escape(n)),
                num(n, "gpu_hours", p.gpu_hours, 2, ""),
                opt(n, "gpu_hours_vs_oracle", p.gpu_hours_vs_oracle, 2),
                opt(n, "gpu_hours_vs_composite", p.gpu_hours_vs_composite, 2),
                pct(n, "slo_attainment", p.slo_attainment),
                pct(n, "e2e_slo_attainment", p.e2e_slo_attainment),
                num(n, "latency_p50_s", p.latency_p50_s, 2, ""),
                num(n, "latency_p95_s", p.latency_p95_s, 2, ""),
                num(n, "latency_p99_s", p.latency_p99_s, 2, ""),
                num(n, "timed_out", p.timed_out as f64, 0, ""),
                num(n, "cut_on_scale_down", p.cut_on_scale_down as f64, 0, ""),
                num(n, "replicas_min", p.replicas_min as f64, 0, ""),
                num(n, "replicas_mean", p.replicas_mean, 1, ""),
                num(n, "replicas_max", p.replicas_max as f64, 0, ""),
                num(n, "scaling_events", p.scaling_events as f64, 0, ""),
            ]
        })
        .collect();
    h.push_str(&table(&headers, &rows));
    let _ = writeln!(
        h,
        "<p class=\"note\">SLO met: share of all requests completed within the SLO (timeouts and requests cut on scale-down count as misses). GPU-h counts every replica holding a GPU (starting, ready, draining). Vs oracle: GPU-hours over the oracle's, which knows the load in advance.</p>"
    );
    let _ = writeln!(h, "<h2 id=\"replicas\">Load and replicas over time</h2>");
    h.push_str(&report::svg(report));
    if let Some(sweep) = sweep {
        let _ = writeln!(h, "<h2 id=\"sweep\">Cost against SLO attainment</h2>");
        let _ = writeln!(
            h,
            "<p class=\"note\">Each real policy replayed at capacity factors {}: the GPU-hours its curve needs to reach 90, 95 and 99 % SLO attainment (\"unreachable\": no factor reaches it).</p>",
            sweep
                .factors
                .iter()
                .map(|f| format!("{f}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for sc in &sweep.scenarios {
            let rows: Vec<Vec<String>> = sc
                .curves
                .iter()
                .map(|c| {
                    let at = |v: Option<f64>| v.map_or("unreachable".into(), |g| format!("{g:.2}"));
                    vec![
                        td(&escape(&c.policy)),
                        td(&at(c.gpu_hours_at_90)),
                        td(&at(c.gpu_hours_at_95)),
                        td(&at(c.gpu_hours_at_99)),
                    ]
                })
                .collect();
            h.push_str(&table(
                &["policy", "GPU-h at 90 %", "GPU-h at 95 %", "GPU-h at 99 %"],
                &rows,
            ));
            h.push_str(&crate::sweep::svg(sc));
        }
    }
    for sec in sections {
        let _ = writeln!(
            h,
            "<h2 id=\"{}\">{}</h2>\n{}",
            escape(&sec.id),
            escape(&sec.title),
            sec.html
        );
    }
    let _ = writeln!(
        h,
        "<p class=\"note\">Written by keda-gpu-sim {}; report.json beside this page holds every number.</p>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_escape_headers_and_keep_cells() {
        let t = table(&["a<b"], &[vec![td("<b>x</b>")]]);
        assert!(t.contains("<th>a&lt;b</th>"));
        assert!(t.contains("<td><b>x</b></td>"));
        assert_eq!(escape("\"&"), "&quot;&amp;");
        assert!(num("p", "f", 1.23456, 2, "").contains("data-value=\"1.23456\">1.23</td>"));
    }
}
