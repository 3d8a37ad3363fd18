//! Parsing the source keys: where a trigger's numbers come from, and which pods count.

use super::model::{DrainSpec, NvmlSpec, PodMatch, PrometheusSpec, ServiceSpec, SourceSpec};
use super::parser::Parser;
use super::registry::{
    self, DEFAULT_NAMESPACE_LABEL, DEFAULT_POD_LABEL, DEFAULT_SERVICE_PATH, DELETION_COST_KEY,
    DRAIN_TIMEOUT_KEY, HPA_WINDOW_KEY, MAX_ENDPOINTS, READINESS_GATE_KEY,
};
use super::validate::{self, is_dns_label};
use crate::text::redact_url as redact;

impl Parser<'_> {
    pub(super) fn source(&mut self) -> Option<SourceSpec> {
        let kind = self.kind;
        if !matches!(kind, "scrape" | "prometheus" | "nvml") {
            self.problem(
                "source",
                format!("'{kind}' is not accepted; expected scrape, prometheus or nvml"),
            );
            return None;
        }
        for (key, sources) in registry::source_keys() {
            if self.values.contains_key(key) && !sources.contains(&kind) {
                self.problem(
                    key,
                    format!(
                        "applies only to source={}; this trigger has source={kind}",
                        sources.join(" or source=")
                    ),
                );
            }
        }
        match kind {
            "prometheus" => self.prometheus_source(),
            "nvml" => self.nvml_source(),
            _ => self.scrape_source(),
        }
    }

    fn scrape_source(&mut self) -> Option<SourceSpec> {
        if self.values.contains_key("service") {
            if self.values.contains_key("endpoints") {
                self.problem(
                    "endpoints",
                    "set either service (discovered pods) or endpoints (fixed URLs), not both",
                );
                return None;
            }
            return self.service_source();
        }
        for key in [
            "port",
            "path",
            DELETION_COST_KEY,
            READINESS_GATE_KEY,
            DRAIN_TIMEOUT_KEY,
            HPA_WINDOW_KEY,
        ] {
            if self.values.contains_key(key) {
                self.problem(
                    key,
                    "applies only with service: the Service whose pods are scraped",
                );
            }
        }
        let Some(raw) = self.text("endpoints") else {
            self.problem(
                "endpoints",
                "required with source=scrape: service (a Service whose pods are scraped) or endpoints (comma-separated http(s) URLs of each replica's /metrics)",
            );
            return None;
        };
        let mut endpoints = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some(url) = validate::http_url(part) else {
                self.problem(
                    "endpoints",
                    format!(
                        "'{}' is not an http(s) URL like http://10.0.0.7:8000/metrics",
                        redact(part)
                    ),
                );
                return None;
            };
            if !self.egress_allows("endpoints", &url, part) {
                return None;
            }
            endpoints.push(url.to_string())
        }
        if endpoints.is_empty() {
            self.problem("endpoints", "is empty; expected at least one http(s) URL");
            return None;
        }
        if endpoints.len() > MAX_ENDPOINTS {
            self.problem(
                "endpoints",
                format!(
                    "{} URLs given; at most {MAX_ENDPOINTS} are accepted",
                    endpoints.len()
                ),
            );
            return None;
        }
        endpoints.sort();
        endpoints.dedup();
        Some(SourceSpec::Scrape { endpoints })
    }

    /// `service`, `port` and `path`: a Service in the ScaledObject's namespace, never another.
    fn service_source(&mut self) -> Option<SourceSpec> {
        let name = self.text("service").unwrap_or_default();
        let name_ok = is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase());
        if !name_ok {
            self.problem(
                "service",
                format!("'{name}' is not a Service name; expected 1-63 characters of a-z, 0-9 or '-', starting with a letter (a Service in the ScaledObject's namespace)"),
            );
        }
        let port = match self.text("port") {
            None => Some(None),
            Some(_) => self.read("port", validate::port).map(Some),
        };
        let path = self.text("path").unwrap_or(DEFAULT_SERVICE_PATH);
        let deletion_cost = match self.text(DELETION_COST_KEY) {
            None => Some(false),
            Some(_) => self.read(DELETION_COST_KEY, validate::boolean),
        };
        let readiness_gate = match self.text(READINESS_GATE_KEY) {
            None => Some(false),
            Some(_) => self.read(READINESS_GATE_KEY, validate::boolean),
        };
        let drain_timeout = match self.text(DRAIN_TIMEOUT_KEY) {
            None => Some(crate::deletion::DEFAULT_DRAIN_TIMEOUT_S as u32),
            Some(_) => self
                .read(DRAIN_TIMEOUT_KEY, |raw| {
                    validate::number(raw, 1.0, 3600.0, "whole seconds between 1 and 3600")
                })
                .map(|s| s.round() as u32),
        };
        let hpa_window = match self.text(HPA_WINDOW_KEY) {
            // The recommended ScaledObject's: no scale-down window in the HPA.
            None => Some(0),
            Some(_) => self
                .read(HPA_WINDOW_KEY, |raw| {
                    validate::number(raw, 0.0, 3600.0, "whole seconds between 0 and 3600 (the HPA's scaleDown.stabilizationWindowSeconds)")
                })
                .map(|s| s.round() as u32),
        };
        for key in [DRAIN_TIMEOUT_KEY, HPA_WINDOW_KEY] {
            if readiness_gate == Some(false) && self.values.contains_key(key) {
                self.problem(key, format!("applies only with {READINESS_GATE_KEY}: true"));
            }
        }
        let path_ok = match validate::url_path(path) {
            Ok(()) => true,
            Err(message) => {
                self.problem("path", message);
                false
            }
        };
        let namespace = match self.ctx.namespace {
            "" => "default",
            ns => ns,
        };
        // The namespace becomes part of an API path: only a real namespace name goes there.
        let namespace_ok = is_dns_label(namespace);
        if !namespace_ok {
            self.problem(
                "service",
                format!("the ScaledObject's namespace '{namespace}' is not a Kubernetes namespace name (a-z, 0-9, '-', up to 63 characters)"),
            );
        }
        (name_ok && path_ok && namespace_ok).then_some(())?;
        Some(SourceSpec::Service(ServiceSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port: port?,
            path: path.to_string(),
            // Draining ends with the marks that pick the drained pods, so it implies them.
            deletion_cost: deletion_cost? || readiness_gate?,
            drain: readiness_gate?.then_some(DrainSpec {
                timeout_s: drain_timeout?,
                hpa_window_s: hpa_window?,
            }),
        }))
    }

    fn prometheus_source(&mut self) -> Option<SourceSpec> {
        let address = self.prometheus_address();
        let namespace = self.namespace();
        let pods = self.pod_match(true);
        let namespace_label = self
            .read("namespaceLabel", validate::label_name)
            .unwrap_or(DEFAULT_NAMESPACE_LABEL.into());
        let pod_label = self
            .read("podLabel", validate::label_name)
            .unwrap_or(DEFAULT_POD_LABEL.into());
        Some(SourceSpec::Prometheus(PrometheusSpec {
            address: address?,
            namespace: namespace?,
            pods: pods?,
            namespace_label,
            pod_label,
        }))
    }

    /// `prometheusAddress`, else the server's default; either must be one the egress policy allows.
    fn prometheus_address(&mut self) -> Option<String> {
        let Some(raw) = self
            .text("prometheusAddress")
            .or(self.ctx.prometheus_address)
        else {
            self.problem(
                "prometheusAddress",
                "required with source=prometheus because the scaler has no default (setting prometheus.address): an http(s) URL such as http://prometheus-operated.monitoring.svc:9090",
            );
            return None;
        };
        let Some(url) = validate::http_url(raw) else {
            self.problem(
                "prometheusAddress",
                format!(
                    "'{}' is not an http(s) URL like http://prometheus:9090",
                    redact(raw)
                ),
            );
            return None;
        };
        let address = url.to_string().trim_end_matches('/').to_string();
        let listed = match self.ctx.egress {
            Some(policy) if self.values.contains_key("prometheusAddress") => {
                policy.check_prometheus(&address, self.ctx.prometheus_address)
            }
            _ => Ok(()),
        };
        if let Err(why) = listed {
            self.problem("prometheusAddress", format!("'{}' {why}", redact(raw)));
            return None;
        }
        self.egress_allows("prometheusAddress", &url, raw)
            .then_some(address)
    }

    fn nvml_source(&mut self) -> Option<SourceSpec> {
        let mut devices = Vec::new();
        if let Some(raw) = self.text("devices") {
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match validate::device(part) {
                    Ok(device) => devices.push(device),
                    Err(message) => {
                        self.problem("devices", message);
                        return None;
                    }
                }
            }
            if devices.is_empty() {
                self.problem("devices", "is empty; expected device indices or UUIDs");
                return None;
            }
        }
        let pods = if self.text("deployment").is_some() || self.text("podSelector").is_some() {
            let namespace = self.namespace();
            let pods = self.pod_match(false);
            Some((namespace?, pods?))
        } else {
            None
        };
        Some(SourceSpec::Nvml(NvmlSpec { devices, pods }))
    }

    /// `namespace`, else the ScaledObject's own namespace.
    fn namespace(&mut self) -> Option<String> {
        let ns = self
            .text("namespace")
            .unwrap_or(self.ctx.namespace)
            .to_string();
        if ns.is_empty() {
            self.problem(
                "namespace",
                "required: the namespace of the pods (defaults to the ScaledObject's namespace, which was not given)",
            );
            return None;
        }
        if ns.len() > 253 || ns.chars().any(char::is_control) {
            self.problem(
                "namespace",
                "is not accepted; expected a Kubernetes namespace name",
            );
            return None;
        }
        let own = self.ctx.namespace;
        if let Some(policy) = self.ctx.egress {
            if !policy.allow_cross_namespace && !own.is_empty() && ns != own {
                self.problem(
                    "namespace",
                    format!("'{ns}' is another namespace; a ScaledObject reads only its own namespace ('{own}') unless the operator allows cross-namespace reads (setting egress.allow_cross_namespace)"),
                );
                return None;
            }
        }
        // Not restricted further on purpose: it is escaped wherever it enters a query.
        Some(ns)
    }

    fn pod_match(&mut self, required: bool) -> Option<PodMatch> {
        match (self.text("deployment"), self.text("podSelector")) {
            (Some(_), Some(_)) => {
                self.problem(
                    "podSelector",
                    "set either deployment or podSelector, not both",
                );
                None
            }
            (Some(_), None) => self.read("deployment", validate::deployment),
            (None, Some(_)) => self.read("podSelector", validate::pod_selector),
            (None, None) => {
                if required {
                    self.problem(
                        "deployment",
                        "required with source=prometheus: the Deployment whose pods are read (or podSelector, a pod name regex)",
                    );
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{base, in_ns, in_ns_without_prometheus, meta, prom, rejects};
    use crate::spec::*;

    #[test]
    fn prometheus_source_defaults_to_the_scaled_object_namespace_and_server_address() {
        let spec = prom(&[]).unwrap();
        let SourceSpec::Prometheus(p) = &spec.source else {
            panic!("{:?}", spec.source)
        };
        assert_eq!(p.address, "http://prom.monitoring:9090");
        assert_eq!(p.namespace, "inference");
        assert_eq!(
            (p.namespace_label.as_str(), p.pod_label.as_str()),
            ("namespace", "pod")
        );
        let re = regex::Regex::new(&p.pods.pattern()).unwrap();
        assert!(re.is_match("llm-server-5d8f7c9b4-x2x9k"));
        assert!(!re.is_match("llm-server-canary-5d8f7c9b4-x2x9k"));
        assert!(!re.is_match("xllm-server-5d8f7c9b4-x2x9k"));

        let spec = prom(&[
            ("prometheusAddress", "http://other:9090/"),
            ("namespace", "team-a"),
            ("deployment", ""),
            ("podSelector", "vllm-.+"),
            ("namespaceLabel", "exported_namespace"),
            ("podLabel", "exported_pod"),
            ("gpuUtilTarget", "70"),
            ("gpuUtilQuery", "avg by (pod) (x)"),
            (
                "extra.cpu.query",
                "sum by (pod) (rate(container_cpu_usage_seconds_total[1m])) * 100",
            ),
            ("extra.cpu.target", "80"),
            ("extra.cpu.kind", "utilisation"),
        ]);
        // deployment="" counts as set: both given is a problem.
        assert!(spec.is_err());
        let spec = in_ns_without_prometheus(&meta(&[
            ("source", "prometheus"),
            ("prometheusAddress", "http://other:9090/"),
            ("namespace", "team-a"),
            ("podSelector", "vllm-.+"),
            ("namespaceLabel", "exported_namespace"),
            ("podLabel", "exported_pod"),
            ("gpuUtilTarget", "70"),
            ("gpuUtilQuery", "avg by (pod) (x)"),
            ("extra.cpu.query", "sum by (pod) (rate(c[1m])) * 100"),
            ("extra.cpu.target", "80"),
            ("extra.cpu.kind", "utilisation"),
        ]))
        .unwrap();
        let SourceSpec::Prometheus(p) = &spec.source else {
            panic!()
        };
        assert_eq!(p.address, "http://other:9090");
        assert_eq!(p.namespace, "team-a");
        assert_eq!(p.pods, PodMatch::Selector("vllm-.+".into()));
        assert_eq!(p.pod_label, "exported_pod");
        assert_eq!(
            spec.signals[0].metrics,
            MetricSource::Query("avg by (pod) (x)".into())
        );
        assert_eq!(
            spec.signals[1].metrics,
            MetricSource::Query("sum by (pod) (rate(c[1m])) * 100".into())
        );
    }

    #[test]
    fn source_specific_keys_are_checked() {
        let err = |r: Result<ScalerSpec, SpecError>| r.unwrap_err().to_string();
        assert!(err(prom(&[("podSelector", "x")])).contains("either deployment or podSelector"));
        assert!(err(prom(&[("deployment", "Bad_Name")])).contains("not a Deployment name"));
        assert!(err(prom(&[("deployment", "x"), ("podSelector", "(")])).contains("podSelector"));
        assert!(err(prom(&[("namespaceLabel", "exported-namespace")])).contains("label name"));
        assert!(err(prom(&[("prometheusAddress", "prom:9090")])).contains("http(s) URL"));
        assert!(err(prom(&[("endpoints", "http://a/m")])).contains("applies only to source=scrape"));
        assert!(err(prom(&[("devices", "0")])).contains("applies only to source=nvml"));
        assert!(err(prom(&[
            ("extra.u.metric", "m"),
            ("extra.u.query", "q"),
            ("extra.u.target", "1"),
            ("extra.u.kind", "quantity")
        ]))
        .contains("not both"));
        // No address anywhere.
        let none = in_ns_without_prometheus(&meta(&[
            ("source", "prometheus"),
            ("deployment", "x"),
            ("queueTarget", "1"),
        ]));
        assert!(err(none).contains("prometheusAddress: required"));
        // Scrape triggers cannot carry PromQL.
        rejects(
            base(&[("queueQuery", "sum(x)")]),
            "queueQuery",
            "applies only to source=prometheus",
        );
        rejects(
            base(&[
                ("extra.u.query", "sum(x)"),
                ("extra.u.target", "1"),
                ("extra.u.kind", "quantity"),
            ]),
            "extra.u.query",
            "applies only to source=prometheus",
        );
    }

    #[test]
    fn nvml_source_reads_devices_and_only_gpu_signals() {
        let nvml = |extra: &[(&str, &str)]| {
            let mut m = meta(&[("source", "nvml"), ("gpuUtilTarget", "60")]);
            m.extend(meta(extra));
            in_ns_without_prometheus(&m)
        };
        let spec = nvml(&[("devices", "0, GPU-20c56d28-0da5, MIG-1/2")]).unwrap();
        assert_eq!(
            spec.source,
            SourceSpec::Nvml(NvmlSpec {
                devices: vec![
                    DeviceRef::Index(0),
                    DeviceRef::Uuid("GPU-20c56d28-0da5".into()),
                    DeviceRef::Uuid("MIG-1/2".into())
                ],
                pods: None
            })
        );
        let spec = nvml(&[("deployment", "llm")]).unwrap();
        assert!(
            matches!(&spec.source, SourceSpec::Nvml(n) if n.pods.as_ref().is_some_and(|(ns, _)| ns == "inference"))
        );
        assert!(nvml(&[("devices", "gpu0")])
            .unwrap_err()
            .to_string()
            .contains("device indices"));
        assert!(nvml(&[("queueTarget", "3")])
            .unwrap_err()
            .to_string()
            .contains("reads only GPUs"));
    }

    #[test]
    fn a_service_is_looked_up_in_the_scaled_objects_own_namespace() {
        let spec = in_ns(&[("service", "llm"), ("queueTarget", "4")]).unwrap();
        assert_eq!(
            spec.source,
            SourceSpec::Service(ServiceSpec {
                namespace: "inference".into(),
                name: "llm".into(),
                port: None,
                path: "/metrics".into(),
                deletion_cost: false,
                drain: None,
            })
        );
        assert_eq!(spec.source.kind(), "scrape");
        let spec = in_ns(&[
            ("service", "llm"),
            ("port", "metrics"),
            ("path", "/v2/metrics"),
            ("queueTarget", "4"),
        ])
        .unwrap();
        let SourceSpec::Service(svc) = &spec.source else {
            panic!()
        };
        assert_eq!(svc.port, Some(PortRef::Name("metrics".into())));
        assert_eq!(svc.path, "/v2/metrics");
        let spec = in_ns(&[("service", "llm"), ("port", "8002"), ("queueTarget", "4")]).unwrap();
        assert!(
            matches!(&spec.source, SourceSpec::Service(s) if s.port == Some(PortRef::Number(8002)))
        );

        let err = |pairs: &[(&str, &str)]| in_ns(pairs).unwrap_err().to_string();
        assert!(err(&[("service", "LLM"), ("queueTarget", "4")])
            .contains("service: 'LLM' is not a Service name"));
        assert!(err(&[("service", "a.b"), ("queueTarget", "4")]).contains("not a Service name"));
        assert!(
            err(&[("service", "llm"), ("port", "0"), ("queueTarget", "4")])
                .contains("port: '0' is not accepted")
        );
        assert!(
            err(&[("service", "llm"), ("port", "http_1"), ("queueTarget", "4")])
                .contains("port number 1-65535")
        );
        assert!(err(&[
            ("service", "llm"),
            ("path", "metrics"),
            ("queueTarget", "4")
        ])
        .contains("path: 'metrics' is not accepted"));
        assert!(
            err(&[("service", "llm"), ("path", "/a b"), ("queueTarget", "4")]).contains("path:")
        );
        assert!(err(&[
            ("service", "llm"),
            ("endpoints", "http://a/m"),
            ("queueTarget", "4")
        ])
        .contains("either service"));
        assert!(err(&[
            ("endpoints", "http://a/m"),
            ("port", "80"),
            ("queueTarget", "4")
        ])
        .contains("port: applies only with service"));
        // Another namespace cannot be named: `namespace` is not a scrape key.
        assert!(err(&[
            ("service", "llm"),
            ("namespace", "team-b"),
            ("queueTarget", "4")
        ])
        .contains("namespace: applies only to source=prometheus"));
        assert!(err(&[
            ("source", "prometheus"),
            ("deployment", "x"),
            ("service", "llm"),
            ("queueTarget", "4")
        ])
        .contains("service: applies only to source=scrape"));
    }

    #[test]
    fn pod_deletion_cost_is_a_boolean_of_service_discovery() {
        let on = |v: &str| {
            in_ns(&[
                ("service", "llm"),
                ("podDeletionCost", v),
                ("queueTarget", "4"),
            ])
            .map(|s| matches!(s.source, SourceSpec::Service(svc) if svc.deletion_cost))
        };
        assert!(on("true").unwrap());
        assert!(!on("false").unwrap());
        assert!(on("yes")
            .unwrap_err()
            .to_string()
            .contains("podDeletionCost: 'yes' is not accepted; expected true or false"));
        let err = in_ns(&[
            ("endpoints", "http://a/m"),
            ("podDeletionCost", "true"),
            ("queueTarget", "4"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("podDeletionCost: applies only with service"),
            "{err}"
        );
        let err = in_ns(&[
            ("source", "prometheus"),
            ("deployment", "x"),
            ("podDeletionCost", "true"),
            ("queueTarget", "4"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("podDeletionCost: applies only to source=scrape"),
            "{err}"
        );
    }

    #[test]
    fn the_readiness_gate_drains_with_a_bounded_timeout_and_implies_the_marks() {
        let svc = |extra: &[(&str, &str)]| {
            let mut kv = vec![("service", "llm"), ("queueTarget", "4")];
            kv.extend_from_slice(extra);
            in_ns(&kv).map(|s| match s.source {
                SourceSpec::Service(svc) => (svc.deletion_cost, svc.drain.map(|d| d.timeout_s)),
                _ => panic!("a service source"),
            })
        };
        assert_eq!(svc(&[]).unwrap(), (false, None));
        let window = in_ns(&[
            ("service", "llm"),
            ("queueTarget", "4"),
            ("podReadinessGate", "true"),
            ("scaleDownWindowSeconds", "300"),
        ])
        .map(|s| match s.source {
            SourceSpec::Service(svc) => svc.drain.map(|d| d.hpa_window_s),
            _ => None,
        });
        assert_eq!(window.unwrap(), Some(300));
        assert_eq!(
            svc(&[("podReadinessGate", "true")]).unwrap(),
            (true, Some(300))
        );
        assert_eq!(
            svc(&[("podReadinessGate", "true"), ("drainTimeoutSeconds", "90")]).unwrap(),
            (true, Some(90))
        );
        for (kv, says) in [
            (
                vec![("podReadinessGate", "true"), ("drainTimeoutSeconds", "0")],
                "drainTimeoutSeconds: '0' is not accepted; expected whole seconds between 1 and 3600",
            ),
            (
                vec![("drainTimeoutSeconds", "60")],
                "drainTimeoutSeconds: applies only with podReadinessGate: true",
            ),
            (
                vec![("podReadinessGate", "on")],
                "podReadinessGate: 'on' is not accepted; expected true or false",
            ),
        ] {
            let err = svc(&kv).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
        let err = in_ns(&[
            ("endpoints", "http://a/m"),
            ("podReadinessGate", "true"),
            ("queueTarget", "4"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("podReadinessGate: applies only with service"),
            "{err}"
        );
    }
}
