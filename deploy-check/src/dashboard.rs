//! The Grafana dashboard: every panel query and templating query parses and reads exported
//! metrics, and panel ids are unique.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::promql;

/// Checks a dashboard file; the number of panel expressions checked.
pub fn check_file(path: &Path, known: &BTreeSet<String>) -> Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    match check(&json, known) {
        Ok(n) => Ok(n),
        Err(Problems::NoExpressions) => bail!("{}: no PromQL expressions found", path.display()),
        Err(Problems::Found(errs)) => bail!("{}:\n  {}", path.display(), errs.join("\n  ")),
    }
}

#[derive(Debug, PartialEq)]
pub enum Problems {
    /// No panel holds an `expr`: the file is not the dashboard, or its layout changed.
    NoExpressions,
    Found(Vec<String>),
}

/// Checks a parsed dashboard; the number of panel expressions checked.
pub fn check(json: &serde_json::Value, known: &BTreeSet<String>) -> Result<usize, Problems> {
    let mut exprs = Vec::new();
    collect_exprs(&json["panels"], &mut exprs);
    if exprs.is_empty() {
        return Err(Problems::NoExpressions);
    }
    let mut errs = Vec::new();
    for e in &exprs {
        if let Err(msg) = promql::check(&promql::expand_grafana(e), Some(known)) {
            errs.push(msg);
        }
    }
    // Templating queries: label_values(metric{...}, label) must name a known metric.
    for v in json["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            if let Some(inner) = q.strip_prefix("label_values(") {
                let selector = inner.rsplit_once(',').map(|(a, _)| a).unwrap_or(inner);
                if let Err(msg) = promql::check(&promql::expand_grafana(selector), Some(known)) {
                    errs.push(format!("variable {}: {msg}", v["name"]));
                }
            }
        }
    }
    // Panel ids must be unique or Grafana mixes up panel state.
    let mut ids = BTreeSet::new();
    for p in json["panels"].as_array().into_iter().flatten() {
        if let Some(id) = p["id"].as_i64() {
            if !ids.insert(id) {
                errs.push(format!("duplicate panel id {id}"));
            }
        }
    }
    if !errs.is_empty() {
        return Err(Problems::Found(errs));
    }
    Ok(exprs.len())
}

/// Every `expr` string under `v`, at any depth (rows nest panels).
fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    if let Some(s) = v.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    collect_exprs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known() -> BTreeSet<String> {
        ["up", "keda_gpu_scaler_active"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn dashboard(exprs: &[&str], ids: &[i64], variable: &str) -> serde_json::Value {
        let panels: Vec<_> = exprs
            .iter()
            .zip(ids)
            .map(|(e, id)| json!({"id": id, "targets": [{"expr": e}]}))
            .collect();
        json!({
            "panels": panels,
            "templating": {"list": [{"name": "namespace", "query": {"query": variable}}]},
        })
    }

    #[test]
    fn a_good_dashboard_counts_its_expressions() {
        let d = dashboard(
            &[
                "sum(up)",
                "max(keda_gpu_scaler_active{namespace=~\"$namespace\"})",
            ],
            &[1, 2],
            "label_values(up{job=\"x\"}, namespace)",
        );
        assert_eq!(check(&d, &known()), Ok(2));
    }

    #[test]
    fn an_unknown_metric_a_bad_variable_and_a_duplicate_id_are_all_reported() {
        let d = dashboard(
            &["sum(upp)", "sum(up"],
            &[1, 1],
            "label_values(nope{job=\"x\"}, namespace)",
        );
        let Err(Problems::Found(errs)) = check(&d, &known()) else {
            panic!("accepted");
        };
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("nobody exports: [\"upp\"]"), "{errs:?}");
        assert!(errs[1].starts_with("PromQL does not parse"), "{errs:?}");
        assert!(errs[2].starts_with("variable \"namespace\": "), "{errs:?}");
        assert_eq!(errs[3], "duplicate panel id 1");
    }

    #[test]
    fn nested_panels_are_read_and_an_empty_dashboard_is_rejected() {
        let d = json!({"panels": [{"id": 1, "panels": [{"targets": [{"expr": "up"}]}]}]});
        assert_eq!(check(&d, &known()), Ok(1));
        assert_eq!(
            check(&json!({"panels": []}), &known()),
            Err(Problems::NoExpressions)
        );
    }
}
