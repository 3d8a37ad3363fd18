//! Test-only checker for what the Helm charts render and what `keda/` ships.
//!
//! `deploy-check k8s [--metrics FILE] FILE...` decodes every YAML document into the typed
//! Kubernetes API struct for its apiVersion/kind (k8s-openapi) and fails on any key the struct
//! does not know: the API server would silently drop such a key (a misspelt `readinessProbe`
//! field, a probe nested one level too deep), so a typo would ship as a missing setting.
//! It then checks the references between objects that the API server does not check but a
//! working install needs (Service selectors and named ports, probes, volume mounts, PDB and
//! NetworkPolicy selectors, ServiceMonitor ports) and the restricted Pod Security profile.
//!
//! `deploy-check promql --metrics FILE DASHBOARD.json...` parses every PromQL expression of a
//! Grafana dashboard and checks each metric it reads is one the project exports.
//!
//! KEDA objects (keda.sh) are validated against KEDA's CRD schemas by the Python test; this tool
//! only accepts them as known kinds.

//! Modules by what they check: `decode` (typed decoding, unknown fields), `meta` (names and
//! labels), `workload` and `pod_security` (pod templates), `rbac`, `selectors` (Services, PDBs,
//! NetworkPolicies), `monitoring` (ServiceMonitor, PrometheusRule), `promql` and `dashboard`;
//! `cross` runs the rules between objects.

use std::path::Path;

use anyhow::{bail, Context, Result};

mod crds;
mod cross;
mod dashboard;
mod decode;
#[cfg(test)]
mod fixtures;
mod meta;
mod monitoring;
mod pod_security;
mod promql;
mod rbac;
mod selectors;
mod workload;

fn run() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        bail!("usage: deploy-check k8s [--metrics FILE] FILE... | deploy-check promql --metrics FILE DASHBOARD.json...");
    }
    let cmd = args.remove(0);
    let mut metrics = None;
    if let Some(i) = args.iter().position(|a| a == "--metrics") {
        let path = args.get(i + 1).context("--metrics needs a file")?.clone();
        metrics = Some(promql::read_metrics(&path)?);
        args.drain(i..=i + 1);
    }
    if args.is_empty() {
        bail!("no input files");
    }
    match cmd.as_str() {
        "k8s" => {
            let mut all = Vec::new();
            let mut errs = Vec::new();
            for f in &args {
                match decode::load(f) {
                    Ok(d) => all.extend(d),
                    Err(e) => errs.push(format!("{e:#}")),
                }
            }
            errs.extend(cross::check(&all, metrics.as_ref()));
            if !errs.is_empty() {
                bail!("{}", errs.join("\n"));
            }
            println!("ok: {} objects", all.len());
        }
        "promql" => {
            let known = metrics.context("promql needs --metrics")?;
            for f in &args {
                let n = dashboard::check_file(Path::new(f), &known)?;
                println!("ok: {f}: {n} expressions");
            }
        }
        other => bail!("unknown command {other:?}"),
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}
