//! PromQL the project ships: it must parse, and (where the list of exported metrics is given) read
//! only metrics someone exports, or a dashboard panel or alert stays empty without an error.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{walk_expr, ExprVisitor};

struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;
    fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
        let vs = match e {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        match &vs.name {
            Some(n) => {
                self.0.insert(n.clone());
            }
            None => return Err("selector without a metric name".into()),
        }
        Ok(true)
    }
}

/// Metric names read by `expr`.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let ast = parser::parse(expr).map_err(|e| format!("PromQL does not parse: {e}: {expr}"))?;
    let mut v = Names(BTreeSet::new());
    walk_expr(&mut v, &ast)?;
    Ok(v.0)
}

/// `expr` parses and, when `known` is given, reads only metrics in it.
pub fn check(expr: &str, known: Option<&BTreeSet<String>>) -> Result<(), String> {
    let names = metric_names(expr)?;
    if let Some(known) = known {
        let unknown: Vec<_> = names.iter().filter(|n| !known.contains(*n)).collect();
        if !unknown.is_empty() {
            return Err(format!("reads metric(s) nobody exports: {unknown:?}"));
        }
    }
    Ok(())
}

/// The exported metric names, one a line (`#` starts a comment).
pub fn read_metrics(path: &str) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Trigger metadata keys holding full PromQL (`gpuUtilQuery`, `extra.<name>.query`, ...) must
/// parse: the scaler would otherwise fail the query at every sample. Their metrics are the
/// tenant's, so only parsing is checked.
pub fn check_scaledobject(value: &serde_yaml::Value) -> Result<()> {
    let triggers = value
        .get("spec")
        .and_then(|s| s.get("triggers"))
        .and_then(|t| t.as_sequence());
    let mut errs = Vec::new();
    for t in triggers.into_iter().flatten() {
        let ty = t.get("type").and_then(|v| v.as_str()).unwrap_or("");
        if !ty.starts_with("external") {
            continue;
        }
        let Some(meta) = t.get("metadata").and_then(|m| m.as_mapping()) else {
            continue;
        };
        for (k, v) in meta {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                continue;
            };
            if k.ends_with("Query") || (k.starts_with("extra.") && k.ends_with(".query")) {
                if let Err(e) = check(v, None) {
                    errs.push(format!("trigger metadata {k}: {e}"));
                }
            }
        }
    }
    if !errs.is_empty() {
        bail!("{}", errs.join("; "));
    }
    Ok(())
}

/// Replace Grafana's template variables by values of the right PromQL type.
pub fn expand_grafana(expr: &str) -> String {
    let mut s = expr
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for var in ["${datasource}", "$datasource"] {
        s = s.replace(var, "ds");
    }
    // Remaining $name / ${name} are label-value variables inside regex matchers.
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let mut j = i + 1;
            let braced = j < b.len() && b[j] == b'{';
            if braced {
                j += 1;
            }
            let start = j;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > start {
                if braced && j < b.len() && b[j] == b'}' {
                    j += 1;
                }
                out.push_str("var");
                i = j;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn names_every_metric_an_expression_reads() {
        let names = metric_names("sum(rate(a_total[5m])) / on() max(b{x=\"y\"})").unwrap();
        assert_eq!(names, known(&["a_total", "b"]));
    }

    #[test]
    fn an_expression_that_does_not_parse_is_rejected() {
        let e = check("sum(rate(a_total[5m])", None).unwrap_err();
        assert!(e.starts_with("PromQL does not parse"), "{e}");
    }

    #[test]
    fn a_selector_without_a_metric_name_is_rejected() {
        let e = check("{job=\"x\"}", None).unwrap_err();
        assert_eq!(e, "selector without a metric name");
    }

    #[test]
    fn a_metric_nobody_exports_is_rejected_only_against_a_list() {
        assert!(check("a + b", None).is_ok());
        assert!(check("a + b", Some(&known(&["a", "b"]))).is_ok());
        let e = check("a + c", Some(&known(&["a", "b"]))).unwrap_err();
        assert_eq!(e, "reads metric(s) nobody exports: [\"c\"]");
    }

    #[test]
    fn grafana_variables_become_valid_promql() {
        let expr =
            "sum(rate(a{namespace=~\"$namespace\", so=~\"${scaledobject}\"}[$__rate_interval]))";
        let expanded = expand_grafana(expr);
        assert_eq!(
            expanded,
            "sum(rate(a{namespace=~\"var\", so=~\"var\"}[5m]))"
        );
        assert!(check(&expanded, Some(&known(&["a"]))).is_ok());
        // A lone '$' is left as it is.
        assert_eq!(expand_grafana("a $ b"), "a $ b");
    }
}
