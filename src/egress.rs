//! Where the scaler may fetch from: the operator's egress policy, checked on every URL a
//! ScaledObject names (at parse time, for a clear error) and again on every address a name
//! resolves to (at connect time, so DNS cannot point a tenant's endpoint somewhere refused).
//!
//! By default the scaler reaches cluster-local names and private pod/service ranges only: never
//! loopback, link-local (cloud metadata at 169.254.169.254 in any spelling, IPv4-mapped IPv6
//! included), unspecified or multicast addresses, the Kubernetes API server or the kubelet's ports.
//! URLs with credentials in them are refused everywhere: credentials belong in server settings.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

/// Ports of the kubelet's API (10250) and its old read-only port (10255).
const KUBELET_PORTS: &[u16] = &[10250, 10255];
/// Names that reach the Kubernetes API server from any pod.
const API_SERVER_NAMES: &[&str] = &["kubernetes", "kubernetes.default", "kubernetes.default.svc"];
/// Names of cloud metadata services, refused like their link-local addresses.
const METADATA_NAMES: &[&str] = &["metadata", "metadata.google.internal", "instance-data"];

/// The `[egress]` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EgressPolicy {
    /// Loopback (127.0.0.0/8, ::1, `localhost`): the scaler's own pod. Off by default; tests and the
    /// local demo turn it on.
    pub allow_loopback: bool,
    /// Link-local (169.254.0.0/16, fe80::/10): cloud metadata services. Off by default.
    pub allow_link_local: bool,
    /// The Kubernetes API server (its service names and `KUBERNETES_SERVICE_HOST`) and the
    /// kubelet's ports. Off by default.
    pub allow_api_server: bool,
    /// The API server's address as the pod sees it (`KUBERNETES_SERVICE_HOST`), refused unless
    /// `allow_api_server`. Not a setting: read from the pod's environment.
    #[serde(skip)]
    pub api_server: Option<IpAddr>,
    /// Prometheus addresses a ScaledObject may name in `prometheusAddress`, besides the server's
    /// own `prometheus.address`. Empty: only the server's address.
    #[serde(serialize_with = "crate::config::file_text::redacted_url_list")]
    pub prometheus_addresses: Vec<String>,
    /// `source=prometheus`/`nvml` may read another namespace's pods (`namespace` key).
    pub allow_cross_namespace: bool,
    /// `source=prometheus` may run full PromQL from metadata (`*Query`, `extra.<name>.query`),
    /// which can read any series.
    pub allow_custom_queries: bool,
    /// PEM CA bundle trusted for https endpoints and Prometheus, in addition to the system roots.
    pub ca_file: Option<PathBuf>,
}

impl EgressPolicy {
    /// The default policy plus the API server address the pod's environment names.
    pub fn from_environment(mut self) -> Self {
        if self.api_server.is_none() {
            self.api_server = std::env::var("KUBERNETES_SERVICE_HOST")
                .ok()
                .and_then(|h| h.trim().parse().ok());
        }
        self
    }

    /// A policy that also allows loopback: for tests and the local demo, where every endpoint
    /// runs on this machine.
    pub fn loopback() -> Self {
        EgressPolicy {
            allow_loopback: true,
            prometheus_addresses: vec!["*".into()],
            ..EgressPolicy::default()
        }
    }

    /// Whether the scaler may fetch `url`; the reason when not. Names are checked again, by
    /// address, when they are resolved.
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err("only http and https URLs are fetched".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "credentials in URLs are not accepted (they would be logged and shown); the egress policy refuses userinfo"
                    .into(),
            );
        }
        let port = url.port_or_known_default().unwrap_or(0);
        if KUBELET_PORTS.contains(&port) && !self.allow_api_server {
            return Err(format!(
                "port {port} is the kubelet's, which the egress policy refuses (egress.allow_api_server)"
            ));
        }
        match url.host() {
            None => Err("has no host".into()),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => self.check_name(name),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), String> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if (name == "localhost" || name.ends_with(".localhost")) && !self.allow_loopback {
            return Err(refused("loopback", "egress.allow_loopback"));
        }
        if METADATA_NAMES.contains(&name.as_str()) && !self.allow_link_local {
            return Err(refused(
                "a cloud metadata service",
                "egress.allow_link_local",
            ));
        }
        let api = API_SERVER_NAMES.contains(&name.as_str())
            || name.starts_with("kubernetes.default.svc.");
        if api && !self.allow_api_server {
            return Err(refused(
                "the Kubernetes API server",
                "egress.allow_api_server",
            ));
        }
        Ok(())
    }

    /// Whether an address may be connected to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        // ::ffff:a.b.c.d reaches a.b.c.d: judge it as the IPv4 address it is.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() && !self.allow_loopback {
            return Err(refused("loopback", "egress.allow_loopback"));
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        };
        if link_local && !self.allow_link_local {
            return Err(refused(
                "link-local (cloud metadata)",
                "egress.allow_link_local",
            ));
        }
        let nowhere = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if nowhere {
            return Err(format!(
                "address {ip} is not a host the scaler fetches from"
            ));
        }
        if Some(ip) == self.api_server && !self.allow_api_server {
            return Err(refused(
                "the Kubernetes API server",
                "egress.allow_api_server",
            ));
        }
        Ok(())
    }

    /// Whether a ScaledObject may name this Prometheus address (already normalised, no trailing
    /// slash). The server's own address is always allowed.
    pub fn check_prometheus(
        &self,
        address: &str,
        server_default: Option<&str>,
    ) -> Result<(), String> {
        let listed = self
            .prometheus_addresses
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/') == address);
        if listed || server_default == Some(address) {
            Ok(())
        } else {
            Err(format!(
                "is not one of the Prometheus addresses the operator allows (egress.prometheus_addresses{}); leave it out to use the server's prometheus.address",
                if self.prometheus_addresses.is_empty() { ", empty" } else { "" }
            ))
        }
    }
}

fn refused(what: &str, setting: &str) -> String {
    format!("is {what}, which the egress policy refuses (setting {setting})")
}

/// Resolves names for the HTTP clients and drops every address the policy refuses, so a name
/// cannot be pointed (or rebound) at loopback, link-local or the API server.
pub struct PolicyResolver {
    policy: Arc<EgressPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<EgressPolicy>) -> Self {
        PolicyResolver { policy }
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            policy.check_name(&host).map_err(boxed)?;
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| boxed(format!("cannot resolve {host}: {e}")))?
                .collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.check_ip(a.ip()).is_ok())
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                let why = policy.check_ip(found[0].ip()).err().unwrap_or_default();
                return Err(boxed(format!(
                    "{host} resolves only to refused addresses: {} {why}",
                    found[0].ip()
                )));
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

fn boxed(message: String) -> Box<dyn std::error::Error + Send + Sync> {
    message.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &EgressPolicy, url: &str) -> Result<(), String> {
        policy.check_url(&reqwest::Url::parse(url).unwrap())
    }

    #[test]
    fn metadata_addresses_are_refused_in_every_spelling() {
        let p = EgressPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://0251.0376.0251.0376/",
            "http://169.254.43518/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fe80::1]/",
            "http://metadata.google.internal/computeMetadata/v1/",
        ] {
            let e = check(&p, url).expect_err(url);
            assert!(
                e.contains("link-local") || e.contains("metadata"),
                "{url}: {e}"
            );
        }
        let open = EgressPolicy {
            allow_link_local: true,
            ..EgressPolicy::default()
        };
        assert!(check(&open, "http://169.254.169.254/").is_ok());
    }

    #[test]
    fn loopback_api_server_kubelet_and_credentials_are_refused_by_default() {
        let p = EgressPolicy {
            api_server: Some("10.96.0.1".parse().unwrap()),
            ..EgressPolicy::default()
        };
        for (url, needle) in [
            ("http://127.0.0.1:9000/metrics", "loopback"),
            ("http://2130706433:9000/metrics", "loopback"),
            ("http://[::1]:9000/metrics", "loopback"),
            ("http://[::ffff:127.0.0.1]:9000/metrics", "loopback"),
            ("http://localhost:9000/metrics", "loopback"),
            ("https://kubernetes.default.svc/api", "API server"),
            (
                "https://kubernetes.default.svc.cluster.local/api",
                "API server",
            ),
            ("https://10.96.0.1/api", "API server"),
            ("https://10.0.0.7:10250/metrics", "kubelet"),
            ("http://user:secret@10.0.0.7:8000/metrics", "credentials"),
            ("http://0.0.0.0:8000/metrics", "not a host"),
        ] {
            let e = check(&p, url).expect_err(url);
            assert!(e.contains(needle), "{url}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
        for ok in [
            "http://10.0.0.7:8000/metrics",
            "http://llm.inference.svc:8000/metrics",
            "https://[fd00::7]:8000/metrics",
        ] {
            assert!(check(&p, ok).is_ok(), "{ok}");
        }
        assert!(check(&EgressPolicy::loopback(), "http://127.0.0.1:9000/metrics").is_ok());
    }

    #[test]
    fn prometheus_addresses_come_from_a_list() {
        let p = EgressPolicy {
            prometheus_addresses: vec!["http://prom-a:9090/".into()],
            ..EgressPolicy::default()
        };
        assert!(p.check_prometheus("http://prom-a:9090", None).is_ok());
        assert!(p
            .check_prometheus("http://prom-b:9090", Some("http://prom-b:9090"))
            .is_ok());
        let e = p.check_prometheus("http://evil:9090", None).unwrap_err();
        assert!(e.contains("egress.prometheus_addresses"), "{e}");
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_are_dropped_at_connect_time() {
        use reqwest::dns::Resolve;
        let resolver = PolicyResolver::new(Arc::new(EgressPolicy::default()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(resolver.resolve(name).await.is_err());
        let open = PolicyResolver::new(Arc::new(EgressPolicy::loopback()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(open.resolve(name).await.unwrap().next().is_some());
    }
}
