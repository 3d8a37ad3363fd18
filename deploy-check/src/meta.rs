//! Object names and label values: the API server rejects invalid ones at apply time, long after
//! `helm template` rendered them without complaint.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::decode::Doc;

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// At most 63 characters of `[A-Za-z0-9_.-]`, starting and ending alphanumeric, or empty.
pub fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && (v.is_empty()
            || (v.as_bytes()[0].is_ascii_alphanumeric()
                && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric()))
}

/// The name (a DNS label for Services, whose name becomes one; a subdomain otherwise) and every
/// label value.
pub fn check_meta(errs: &mut Vec<String>, d: &Doc, meta: &ObjectMeta) {
    let name = meta.name.clone().unwrap_or_default();
    let ok = if d.kind == "Service" {
        is_dns1123_label(&name)
    } else {
        is_dns1123_subdomain(&name)
    };
    if !ok {
        errs.push(format!("{} {}: invalid name {name:?}", d.kind, d.origin));
    }
    for (k, v) in meta.labels.iter().flatten() {
        if !is_label_value(v) {
            errs.push(format!(
                "{} {}: label {k}={v:?} is not a valid label value",
                d.kind, d.name
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{errors, replace_once, GOOD};

    #[test]
    fn dns_names() {
        for ok in ["a", "keda-gpu-scaler", "a1", &"x".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("keda-gpu-scaler.inference"));
        assert!(!is_dns1123_subdomain("a..b"));
    }

    #[test]
    fn label_values() {
        for ok in ["", "a", "v1.2_3-x", &"x".repeat(63)] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["-a", "a.", "a b", "a/b", &"x".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }

    #[test]
    fn an_invalid_object_name_is_reported() {
        let bad = replace_once(
            GOOD,
            "name: llm\n  namespace",
            "name: LLM_server\n  namespace",
        );
        let errs = errors(&bad);
        assert!(
            errs.iter()
                .any(|e| e.contains("invalid name \"LLM_server\"")),
            "{errs:?}"
        );
    }

    #[test]
    fn a_dotted_service_name_is_reported() {
        let bad = replace_once(GOOD, "name: llm-svc", "name: llm.svc");
        let errs = errors(&bad);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("Service t.yaml#") && e.contains("invalid name")),
            "{errs:?}"
        );
    }

    #[test]
    fn an_invalid_label_value_is_reported() {
        let bad = replace_once(GOOD, "    team: ml\n", "    team: ml/infra\n");
        let errs = errors(&bad);
        assert!(
            errs.iter()
                .any(|e| e.contains("label team=\"ml/infra\" is not a valid label value")),
            "{errs:?}"
        );
    }
}
