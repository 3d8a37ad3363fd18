//! The rules between rendered objects, in the order their messages are reported: workloads
//! (each with its own checks), bindings, the objects selecting pod templates, then the
//! monitoring objects selecting Services.

use std::collections::BTreeSet;

use crate::decode::{Doc, Obj};
use crate::meta::check_meta;
use crate::monitoring::{check_prometheus_rule, check_service_monitor};
use crate::rbac::check_bindings;
use crate::selectors::{check_network_policy, check_pdb, check_service};
use crate::workload::{check_workload, Workload};

/// Every problem found across `docs`; PromQL in rules is checked against `metrics` when given.
pub fn check(docs: &[Doc], metrics: Option<&BTreeSet<String>>) -> Vec<String> {
    let mut errs = Vec::new();
    let mut workloads = Vec::new();
    for d in docs {
        let (meta, spec) = match &d.obj {
            Obj::Deployment(x) => (
                &x.metadata,
                x.spec.as_ref().map(|s| (&s.template, &s.selector)),
            ),
            Obj::DaemonSet(x) => (
                &x.metadata,
                x.spec.as_ref().map(|s| (&s.template, &s.selector)),
            ),
            _ => continue,
        };
        check_meta(&mut errs, d, meta);
        if let Some((template, selector)) = spec {
            let w = Workload {
                id: format!("{} {}", d.kind, d.name),
                namespace: meta.namespace.clone(),
                template,
            };
            check_workload(&mut errs, &w, selector);
            workloads.push(w);
        }
    }
    check_bindings(&mut errs, docs, &workloads);
    let mut services = Vec::new();
    for d in docs {
        match &d.obj {
            Obj::Service(s) => {
                check_meta(&mut errs, d, &s.metadata);
                services.push(&**s);
                check_service(&mut errs, d, s, &workloads);
            }
            Obj::Pdb(p) => {
                check_meta(&mut errs, d, &p.metadata);
                check_pdb(&mut errs, d, p, &workloads);
            }
            Obj::NetPol(n) => {
                check_meta(&mut errs, d, &n.metadata);
                check_network_policy(&mut errs, d, n, &workloads);
            }
            _ => {}
        }
    }
    for d in docs {
        match &d.obj {
            Obj::ServiceMonitor(sm) => {
                check_meta(&mut errs, d, &sm.metadata);
                check_service_monitor(&mut errs, d, sm, &services);
            }
            Obj::PrometheusRule(pr) => {
                check_meta(&mut errs, d, &pr.metadata);
                check_prometheus_rule(&mut errs, d, pr, metrics);
            }
            _ => {}
        }
    }
    errs
}
