//! Where the scaler may fetch from: the operator's egress policy, checked on every URL a
//! ScaledObject names (at parse time, for a clear error) and again on every address a name
//! resolves to (at connect time, so DNS cannot point a tenant's endpoint somewhere refused).
//!
//! By default the scaler reaches cluster-local names and private pod/service ranges only: never
//! loopback, link-local or cloud metadata (169.254.169.254 in any spelling, and the metadata
//! services outside link-local: AWS's and GCP's IPv6 ones in the unique-local range, Alibaba
//! Cloud's 100.100.100.200), unspecified or multicast addresses, the Kubernetes API server or the
//! kubelet's ports. An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4) is judged
//! by the IPv4 address it reaches. URLs with credentials in them are refused everywhere:
//! credentials belong in server settings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::setting;

/// Ports of the kubelet's API (10250) and its old read-only port (10255).
const KUBELET_PORTS: &[u16] = &[10250, 10255];
/// Names that reach the Kubernetes API server from any pod.
const API_SERVER_NAMES: &[&str] = &["kubernetes", "kubernetes.default", "kubernetes.default.svc"];
/// Names of cloud metadata services, refused like their link-local addresses.
const METADATA_NAMES: &[&str] = &["metadata", "metadata.google.internal", "instance-data"];
/// Cloud metadata and platform services at IPv4 addresses outside link-local, refused with it:
/// Alibaba Cloud's metadata (in the shared 100.64.0.0/10 range, which pods may use, so only this
/// address) and Azure's WireServer (VM agent settings and certificates).
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];
/// Cloud metadata services at unique-local IPv6 addresses (fc00::/7, which pod and service
/// ranges use, so only these addresses): AWS's instance metadata and EKS Pod Identity agent
/// (credentials), GCP's metadata server, Oracle Cloud's and Scaleway's instance metadata.
const METADATA_V6: &[Ipv6Addr] = &[
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
    Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe),
    Ipv6Addr::new(0xfd00, 0x42, 0, 0, 0, 0, 0, 0x42),
];

/// The `[egress]` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressPolicy {
    /// Loopback (127.0.0.0/8, ::1, `localhost`): the scaler's own pod. Off by default; tests and the
    /// local demo turn it on.
    #[serde(deserialize_with = "setting::flag")]
    pub allow_loopback: bool,
    /// Link-local (169.254.0.0/16, fe80::/10) and the cloud metadata addresses outside it
    /// (`METADATA_V4`, `METADATA_V6`). Off by default.
    #[serde(deserialize_with = "setting::flag")]
    pub allow_link_local: bool,
    /// The Kubernetes API server (its service names and `KUBERNETES_SERVICE_HOST`) and the
    /// kubelet's ports. Off by default.
    #[serde(deserialize_with = "setting::flag")]
    pub allow_api_server: bool,
    /// The API server's address as the pod sees it (`KUBERNETES_SERVICE_HOST`), refused unless
    /// `allow_api_server`. Not a setting: read from the pod's environment when the settings are
    /// loaded.
    #[serde(skip)]
    pub api_server: Option<IpAddr>,
    /// Prometheus addresses a ScaledObject may name in `prometheusAddress`, besides the server's
    /// own `prometheus.address`. Empty: only the server's address.
    #[serde(
        serialize_with = "setting::redacted_url_list",
        deserialize_with = "prometheus_addresses"
    )]
    pub prometheus_addresses: Vec<String>,
    /// `source=prometheus`/`nvml` may read another namespace's pods (`namespace` key).
    #[serde(deserialize_with = "setting::flag")]
    pub allow_cross_namespace: bool,
    /// `source=prometheus` may run full PromQL from metadata (`*Query`, `extra.<name>.query`),
    /// which can read any series.
    #[serde(deserialize_with = "setting::flag")]
    pub allow_custom_queries: bool,
    /// PEM CA bundle trusted for https endpoints and Prometheus, in addition to the system roots.
    #[serde(
        deserialize_with = "setting::path",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_file: Option<PathBuf>,
    /// Send tenant fetches through the proxy the process's `HTTP_PROXY`, `HTTPS_PROXY` and
    /// `ALL_PROXY` name (minus `NO_PROXY`). Off by default, and the variables are ignored: the
    /// proxy resolves the names itself, so the check on every address a name resolves to never
    /// sees the real target and only the URL's literal host is checked.
    #[serde(deserialize_with = "setting::flag")]
    pub use_proxy_env: bool,
    /// The proxy variables, read when the settings are loaded and `use_proxy_env` is on. Not a
    /// setting.
    #[serde(skip)]
    pub proxy: ProxyEnv,
}

/// `egress.prometheus_addresses`: comma-separated http(s) URLs, or `*`.
fn prometheus_addresses<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    setting::parsed(
        d,
        "comma-separated http(s) URLs of Prometheus servers tenants may name, or * for any",
        |text| {
            setting::comma_items(text)
                .map(|a| match url::Url::parse(a) {
                    _ if a == "*" => Some(a.to_string()),
                    // Normalised as a ScaledObject's prometheusAddress is, to compare the two.
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                        Some(u.to_string().trim_end_matches('/').to_string())
                    }
                    _ => None,
                })
                .collect()
        },
    )
}

/// The standard proxy variables, as curl reads them (the upper-case name first).
#[derive(Clone, Default, PartialEq)]
pub struct ProxyEnv {
    /// For http URLs: `HTTP_PROXY`, else `ALL_PROXY`.
    pub http: Option<String>,
    /// For https URLs: `HTTPS_PROXY`, else `ALL_PROXY`.
    pub https: Option<String>,
    /// Hosts fetched directly: `NO_PROXY`, comma-separated names, IPs and CIDRs.
    pub no_proxy: Option<String>,
}

/// The variables `ProxyEnv` reads, each upper case then lower case.
pub const PROXY_VARS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

impl ProxyEnv {
    /// Reads the variables from `vars` (name, value); a blank value counts as unset. Proxy URLs
    /// without a scheme are taken as http, as curl does; anything but an http(s) URL with a host
    /// is refused with the variable's name.
    pub fn from_vars(vars: &[(String, String)]) -> Result<ProxyEnv, (&'static str, String)> {
        let get = |upper: &'static str| {
            vars.iter()
                .filter(|(k, _)| k == upper)
                .chain(vars.iter().filter(|(k, _)| k.eq_ignore_ascii_case(upper)))
                .map(|(_, v)| v.trim())
                .find(|v| !v.is_empty())
                .map(|v| (upper, v))
        };
        let url = |found: Option<(&'static str, &str)>| -> Result<Option<String>, _> {
            let Some((name, value)) = found else {
                return Ok(None);
            };
            let text = if value.contains("://") {
                value.to_string()
            } else {
                format!("http://{value}")
            };
            match reqwest::Url::parse(&text) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Ok(Some(text))
                }
                _ => Err((name, redact(value))),
            }
        };
        let all = url(get("ALL_PROXY"))?;
        Ok(ProxyEnv {
            http: url(get("HTTP_PROXY"))?.or_else(|| all.clone()),
            https: url(get("HTTPS_PROXY"))?.or(all),
            no_proxy: get("NO_PROXY").map(|(_, v)| v.to_string()),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// Whether `host` is a proxy's own name: the operator's choice, resolved without the
    /// policy (a proxy beside the scaler on loopback must not need `allow_loopback`, which
    /// tenants would get too).
    fn names(&self, host: &str) -> bool {
        [&self.http, &self.https].into_iter().flatten().any(|u| {
            reqwest::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(|h| h.eq_ignore_ascii_case(host)))
                .unwrap_or(false)
        })
    }
}

/// Proxy URLs may carry a password: shown without it.
impl std::fmt::Debug for ProxyEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyEnv")
            .field("http", &self.http.as_deref().map(redact))
            .field("https", &self.https.as_deref().map(redact))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

use crate::text::redact_url as redact;

impl EgressPolicy {
    /// A policy that also allows loopback: for tests and the local demo, where every endpoint
    /// runs on this machine.
    pub fn loopback() -> Self {
        EgressPolicy {
            allow_loopback: true,
            prometheus_addresses: vec!["*".into()],
            ..EgressPolicy::default()
        }
    }

    /// How tenant fetches leave the pod, for `check-config` and the startup log: directly, with
    /// every resolved address checked, or through a proxy, where only URLs' hosts are.
    pub fn proxy_mode(&self) -> String {
        if !self.use_proxy_env {
            return "direct: HTTP_PROXY, HTTPS_PROXY and ALL_PROXY are ignored for tenant fetches, \
                    and every address a tenant's host resolves to is checked \
                    (egress.use_proxy_env = false)"
                .into();
        }
        if self.proxy.is_empty() {
            return "direct: egress.use_proxy_env = true, but none of HTTP_PROXY, HTTPS_PROXY \
                    and ALL_PROXY is set"
                .into();
        }
        let shown = |u: &Option<String>| u.as_deref().map_or("none".into(), redact);
        format!(
            "through a proxy (http: {}, https: {}, no_proxy: {}): the proxy resolves tenants' \
             hosts, so the egress policy checks only each URL's literal host, never the address \
             the proxy connects to (egress.use_proxy_env = true)",
            shown(&self.proxy.http),
            shown(&self.proxy.https),
            self.proxy.no_proxy.as_deref().unwrap_or("none"),
        )
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
        match ip {
            IpAddr::V6(v6) => match embedded_ipv4(v6) {
                // ::ffff:a.b.c.d is a.b.c.d to the kernel: judge it as that address.
                Some((v4, Embedding::Mapped)) => self.check_one(IpAddr::V4(v4)),
                // A translator or tunnel would carry the connection to a.b.c.d: the IPv4 rules
                // apply to that address, and the IPv6 ones to the address itself.
                Some((v4, via)) => {
                    self.check_one(IpAddr::V4(v4))
                        .map_err(|why| format!("reaches {v4} through {} and {why}", via.name()))?;
                    self.check_one(ip)
                }
                None => self.check_one(ip),
            },
            v4 => self.check_one(v4),
        }
    }

    fn check_one(&self, ip: IpAddr) -> Result<(), String> {
        if ip.is_loopback() && !self.allow_loopback {
            return Err(refused("loopback", "egress.allow_loopback"));
        }
        let link_local = match ip {
            IpAddr::V4(v4) => v4.is_link_local() || METADATA_V4.contains(&v4),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80 || METADATA_V6.contains(&v6),
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

/// How an IPv6 address carries an IPv4 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Embedding {
    /// `::ffff:0:0/96` (RFC 4291): the IPv4 address itself, on a dual-stack socket.
    Mapped,
    /// `64:ff9b::/96` (RFC 6052) and `64:ff9b:1::/48` (RFC 8215): a NAT64 translator's.
    Nat64,
    /// `2002::/16` (RFC 3056): a 6to4 relay's.
    SixToFour,
}

impl Embedding {
    fn name(self) -> &'static str {
        match self {
            Embedding::Mapped => "IPv4 mapping",
            Embedding::Nat64 => "NAT64",
            Embedding::SixToFour => "6to4",
        }
    }
}

/// The IPv4 address `v6` reaches, if it is one of the forms that carry one. For the local-use
/// NAT64 prefix the operator picks the prefix length; the last 32 bits are where a /96, the
/// common choice and the well-known prefix's, puts the address.
fn embedded_ipv4(v6: Ipv6Addr) -> Option<(Ipv4Addr, Embedding)> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some((v4, Embedding::Mapped));
    }
    let s = v6.segments();
    let o = v6.octets();
    let last32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1] {
        return Some((last32, Embedding::Nat64));
    }
    if s[0] == 0x2002 {
        // Bits 16..48.
        return Some((Ipv4Addr::new(o[2], o[3], o[4], o[5]), Embedding::SixToFour));
    }
    None
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
            if policy.use_proxy_env && policy.proxy.names(&host) {
                let found = tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map_err(|e| boxed(format!("cannot resolve proxy {host}: {e}")))?;
                let addrs: reqwest::dns::Addrs = Box::new(found.collect::<Vec<_>>().into_iter());
                return Ok(addrs);
            }
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
    fn metadata_services_outside_link_local_are_refused_with_it() {
        let p = EgressPolicy::default();
        for url in [
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[FD00:EC2:0:0::254]/",
            "http://[fd00:ec2::23]/v1/credentials",
            "http://[fd20:ce::254]/computeMetadata/v1/",
            "http://[fd00:c1::a9fe:a9fe]/opc/v2/instance/",
            "http://[fd00:42::42]/",
            "http://100.100.100.200/latest/meta-data/",
            "http://1684301000/",
            "http://[::ffff:100.100.100.200]/",
            "http://168.63.129.16/machine",
        ] {
            let e = check(&p, url).expect_err(url);
            assert!(
                e.contains("link-local (cloud metadata)") && e.contains("egress.allow_link_local"),
                "{url}: {e}"
            );
        }
        let open = EgressPolicy {
            allow_link_local: true,
            ..EgressPolicy::default()
        };
        assert!(check(&open, "http://[fd00:ec2::254]/").is_ok());
        assert!(check(&open, "http://100.100.100.200/").is_ok());
        // The ranges around them stay open: pods and services use unique-local and shared
        // address space.
        for ok in [
            "http://[fd00:ec2::253]/",
            "http://[fd00:10:244::7]:8000/metrics",
            "http://[fd20:ce::1]/",
            "http://100.100.100.201/",
            "http://100.64.0.7:8000/metrics",
        ] {
            assert!(check(&p, ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn ipv4_inside_nat64_and_6to4_is_judged_by_the_ipv4_rules() {
        let p = EgressPolicy {
            api_server: Some("10.96.0.1".parse().unwrap()),
            ..EgressPolicy::default()
        };
        for (url, needle, setting) in [
            (
                "http://[64:ff9b::a9fe:a9fe]/",
                "169.254.169.254 through NAT64",
                "egress.allow_link_local",
            ),
            (
                "http://[64:ff9b::169.254.169.254]/",
                "through NAT64",
                "egress.allow_link_local",
            ),
            (
                "http://[64:ff9b::7f00:1]:9100/",
                "127.0.0.1 through NAT64",
                "egress.allow_loopback",
            ),
            (
                "http://[64:ff9b:1::a9fe:a9fe]/",
                "169.254.169.254 through NAT64",
                "egress.allow_link_local",
            ),
            (
                "http://[64:ff9b:1:ffff::7f00:1]/",
                "127.0.0.1 through NAT64",
                "egress.allow_loopback",
            ),
            (
                "http://[64:ff9b::6464:64c8]/",
                "100.100.100.200 through NAT64",
                "egress.allow_link_local",
            ),
            (
                "https://[64:ff9b::a60:1]/api",
                "10.96.0.1 through NAT64",
                "egress.allow_api_server",
            ),
            (
                "http://[2002:a9fe:a9fe::1]/",
                "169.254.169.254 through 6to4",
                "egress.allow_link_local",
            ),
            (
                "http://[2002:7f00:1::]/",
                "127.0.0.1 through 6to4",
                "egress.allow_loopback",
            ),
            (
                "http://[2002:a60:1:5::9]/",
                "10.96.0.1 through 6to4",
                "egress.allow_api_server",
            ),
            ("http://[64:ff9b::]/", "0.0.0.0 through NAT64", "not a host"),
        ] {
            let e = check(&p, url).expect_err(url);
            assert!(e.contains(needle) && e.contains(setting), "{url}: {e}");
        }
        // Private and public IPv4 addresses behind the prefixes are as reachable as they are.
        for ok in [
            "http://[64:ff9b::a00:7]:8000/metrics",
            "http://[64:ff9b::808:808]/",
            "http://[64:ff9b:1::a00:7]/",
            "http://[2002:a00:7::1]/",
        ] {
            assert!(check(&p, ok).is_ok(), "{ok}");
        }
        let open = EgressPolicy {
            allow_loopback: true,
            allow_link_local: true,
            ..EgressPolicy::default()
        };
        assert!(check(&open, "http://[64:ff9b::7f00:1]/").is_ok());
        assert!(check(&open, "http://[2002:a9fe:a9fe::1]/").is_ok());
    }

    #[test]
    fn proxy_variables_are_read_upper_case_first_and_checked() {
        let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let env = ProxyEnv::from_vars(&vars(&[
            ("http_proxy", "http://lower:1"),
            ("HTTP_PROXY", "http://upper:1"),
            ("ALL_PROXY", "proxy.example:3128"),
            ("no_proxy", ".svc,10.0.0.0/8"),
        ]))
        .unwrap();
        assert_eq!(env.http.as_deref(), Some("http://upper:1"));
        assert_eq!(env.https.as_deref(), Some("http://proxy.example:3128"));
        assert_eq!(env.no_proxy.as_deref(), Some(".svc,10.0.0.0/8"));
        assert!(ProxyEnv::from_vars(&vars(&[("HTTP_PROXY", " ")]))
            .unwrap()
            .is_empty());
        let (name, shown) =
            ProxyEnv::from_vars(&vars(&[("https_proxy", "ftp://u:hunter2@proxy")])).unwrap_err();
        assert_eq!(name, "HTTPS_PROXY");
        assert!(!shown.contains("hunter2"), "{shown}");

        let mut p = EgressPolicy::default();
        assert!(
            p.proxy_mode().starts_with("direct: HTTP_PROXY"),
            "{}",
            p.proxy_mode()
        );
        p.use_proxy_env = true;
        assert!(p.proxy_mode().contains("none of"), "{}", p.proxy_mode());
        p.proxy =
            ProxyEnv::from_vars(&vars(&[("HTTP_PROXY", "http://u:hunter2@proxy:3128")])).unwrap();
        let mode = p.proxy_mode();
        assert!(mode.starts_with("through a proxy"), "{mode}");
        assert!(mode.contains("only each URL's literal host"), "{mode}");
        assert!(
            !mode.contains("hunter2") && !format!("{p:?}").contains("hunter2"),
            "{mode}"
        );
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
