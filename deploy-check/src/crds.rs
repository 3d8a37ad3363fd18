//! The parts of the Prometheus Operator and cert-manager APIs the charts use, as typed structs
//! that reject unknown keys. They are subsets of monitoring.coreos.com/v1 and cert-manager.io/v1
//! (field names as in those projects' Go API types): a field the charts do not use is not
//! listed, so adding one to a template means adding it here after checking the upstream type.

// Fields exist to be decoded (and so type-checked), not all are read.
#![allow(dead_code)]

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Decode with unknown keys rejected both in these structs (deny_unknown_fields) and in the
/// embedded k8s-openapi types (reported through serde_ignored).
pub fn strict<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T> {
    crate::decode::decode_strict(value)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitor {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: ServiceMonitorSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    pub selector: LabelSelector,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub namespace_selector: Option<NamespaceSelector>,
    #[serde(default)]
    pub job_label: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSelector {
    #[serde(default)]
    pub any: Option<bool>,
    #[serde(default)]
    pub match_names: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Endpoint {
    pub port: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub interval: Option<Duration>,
    #[serde(default)]
    pub scrape_timeout: Option<Duration>,
    #[serde(default)]
    pub honor_labels: Option<bool>,
}

/// Prometheus duration, e.g. 30s, 1m30s: checked by pattern like the CRD does.
#[derive(Debug)]
pub struct Duration(#[allow(dead_code)] pub String);

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !is_prom_duration(&s) {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not a Prometheus duration"
            )));
        }
        Ok(Duration(s))
    }
}

/// `^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$`
/// from the Prometheus Operator CRDs, without a regex engine.
pub fn is_prom_duration(s: &str) -> bool {
    if s == "0" {
        return true;
    }
    let units = ["y", "w", "d", "h", "m", "s", "ms"];
    let mut rest = s;
    let mut next_unit = 0;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = if rest.starts_with("ms") {
            "ms"
        } else {
            &rest[..rest.len().min(1)]
        };
        match units[next_unit..].iter().position(|u| *u == unit) {
            Some(p) => next_unit += p + 1,
            None => return false,
        }
        rest = &rest[unit.len()..];
    }
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusRule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: PrometheusRuleSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrometheusRuleSpec {
    pub groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleGroup {
    pub name: String,
    #[serde(default)]
    pub interval: Option<Duration>,
    pub rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub record: Option<String>,
    pub expr: String,
    #[serde(default, rename = "for")]
    pub for_: Option<Duration>,
    #[serde(default, rename = "keep_firing_for")]
    pub keep_firing_for: Option<Duration>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Certificate {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: CertificateSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CertificateSpec {
    pub secret_name: String,
    pub issuer_ref: IssuerRef,
    #[serde(default)]
    pub common_name: Option<String>,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub duration: Option<GoDuration>,
    #[serde(default)]
    pub renew_before: Option<GoDuration>,
    #[serde(default)]
    pub usages: Vec<KeyUsage>,
    #[serde(default)]
    pub is_ca: Option<bool>,
    #[serde(default)]
    pub private_key: Option<PrivateKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssuerRef {
    pub name: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PrivateKey {
    #[serde(default)]
    pub algorithm: Option<KeyAlgorithm>,
    #[serde(default)]
    pub size: Option<u32>,
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub rotation_policy: Option<RotationPolicy>,
}

// The variant names are cert-manager's wire values.
#[derive(Deserialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "RSA")]
    Rsa,
    #[serde(rename = "ECDSA")]
    Ecdsa,
    Ed25519,
}

#[derive(Deserialize)]
pub enum RotationPolicy {
    Never,
    Always,
}

/// cert-manager's KeyUsage enum (the values a server certificate may need).
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyUsage {
    #[serde(rename = "server auth")]
    ServerAuth,
    #[serde(rename = "client auth")]
    ClientAuth,
    #[serde(rename = "digital signature")]
    DigitalSignature,
    #[serde(rename = "key encipherment")]
    KeyEncipherment,
}

/// Go time.Duration string (cert-manager), e.g. 2160h, 1h30m.
#[derive(Debug)]
pub struct GoDuration(#[allow(dead_code)] pub String);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut rest = s.as_str();
        let mut ok = !rest.is_empty();
        while ok && !rest.is_empty() {
            let n = rest
                .bytes()
                .take_while(|b| b.is_ascii_digit() || *b == b'.')
                .count();
            rest = &rest[n..];
            let u = ["ns", "us", "ms", "h", "m", "s"]
                .iter()
                .find(|u| rest.starts_with(*u));
            ok = n > 0 && u.is_some();
            if let Some(u) = u {
                rest = &rest[u.len()..];
            }
        }
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not a Go duration"
            )));
        }
        Ok(GoDuration(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prom_durations() {
        for ok in ["0", "15s", "1m30s", "2h", "500ms", "1y2w"] {
            assert!(is_prom_duration(ok), "{ok}");
        }
        for bad in ["", "s", "15", "1s1m", "1.5s", "15 s", "5min"] {
            assert!(!is_prom_duration(bad), "{bad}");
        }
    }
}
