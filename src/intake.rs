//! What a request costs before it is parsed: the ScaledObject's name and namespace held to
//! Kubernetes' own rules, size and key-count limits on the metadata checked first (ignored keys
//! included; the key count on the wire, before the map is even decoded: `crate::codec`), and a
//! bounded memory of maps already rejected, so a bad map sent on every call is refused for the
//! price of a hash lookup instead of a parse.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::Mutex;

use crate::spec::{Problem, SpecError};

/// Most keys in one map. The scaler reads 36 keys plus 4 per extra signal; KEDA adds a few.
pub const MAX_KEYS: usize = 128;
/// Most bytes in one map, keys and values together: 1,000 endpoint URLs and five full PromQL
/// queries fit.
pub const MAX_BYTES: usize = 128 << 10;
/// Rejected maps remembered; the memory is cleared when full.
const REMEMBERED: usize = 4096;

/// Longest ScaledObject name: Kubernetes object names are DNS subdomains (RFC 1123).
pub const MAX_NAME: usize = 253;
/// Longest namespace: Kubernetes namespaces are DNS labels (RFC 1123).
pub const MAX_NAMESPACE: usize = 63;

/// Refuses a map over the limits, in time proportional to its number of keys (no value is
/// read, copied or echoed).
pub fn check(metadata: &HashMap<String, String>) -> Result<(), SpecError> {
    check_key_count(metadata.len())?;
    let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_BYTES {
        return Err(metadata_problem(format!(
            "{bytes} bytes of keys and values; at most {MAX_BYTES} are accepted (KEDA's own keys such as caCert count too)"
        )));
    }
    Ok(())
}

/// Refuses more than `MAX_KEYS` keys; `keys` may be counted on the wire, before decoding.
pub fn check_key_count(keys: usize) -> Result<(), SpecError> {
    if keys > MAX_KEYS {
        return Err(metadata_problem(format!(
            "{keys} keys given; at most {MAX_KEYS} are accepted (unknown and ignored keys count too)"
        )));
    }
    Ok(())
}

fn metadata_problem(message: String) -> SpecError {
    SpecError {
        problems: vec![Problem {
            key: "scalerMetadata".into(),
            message,
        }],
    }
}

/// A ScaledObject reference whose name or namespace Kubernetes would not accept. Only KEDA
/// should call the scaler, and it sends real objects' names; anything else is refused before
/// it becomes an entry, a log field or a metric label.
#[derive(Debug, thiserror::Error)]
#[error("scaledObjectRef.{field} {problem}; accepted: {accepted}")]
pub struct RefError {
    pub field: &'static str,
    problem: String,
    accepted: &'static str,
}

/// Checks the name (a DNS subdomain: at most 253 characters of a-z, 0-9, '-' and '.', each
/// dot-separated part starting and ending with a letter or digit) and the namespace (a DNS
/// label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or
/// digit), as the Kubernetes API server does.
pub fn check_object(namespace: &str, name: &str) -> Result<(), RefError> {
    check_dns(
        "namespace",
        namespace,
        MAX_NAMESPACE,
        false,
        "a Kubernetes namespace: 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
    )?;
    check_dns(
        "name",
        name,
        MAX_NAME,
        true,
        "a Kubernetes object name: 1 to 253 characters of a-z, 0-9, '-' and '.', each '.'-separated part starting and ending with a letter or digit",
    )
}

fn check_dns(
    field: &'static str,
    value: &str,
    max: usize,
    dots: bool,
    accepted: &'static str,
) -> Result<(), RefError> {
    let refuse = |problem: String| {
        Err(RefError {
            field,
            problem,
            accepted,
        })
    };
    if value.is_empty() {
        return refuse("is empty".into());
    }
    if value.len() > max {
        // Not echoed: it could be megabytes.
        return refuse(format!("is {} bytes long", value.len()));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let ok = if dots {
        value.split('.').all(label_ok)
    } else {
        label_ok(value)
    };
    if !ok {
        // Short enough to show, escaped so it cannot forge log lines or hide characters.
        return refuse(format!(
            "'{}' is not one",
            crate::text::bounded(value, 2 * MAX_NAME)
        ));
    }
    Ok(())
}

/// Maps already rejected, by a keyed hash of what identifies them (the keys are random per
/// process, so colliding maps cannot be crafted).
pub struct Rejections {
    hasher: RandomState,
    seen: Mutex<HashMap<u64, SpecError>>,
}

impl Default for Rejections {
    fn default() -> Self {
        Rejections {
            hasher: RandomState::new(),
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl Rejections {
    pub fn hash(&self, key: &impl Hash) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn get(&self, hash: u64) -> Option<SpecError> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            .cloned()
    }

    pub fn remember(&self, hash: u64, error: &SpecError) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(hash, error.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_keys_or_bytes_are_refused_without_echoing_values() {
        let many: HashMap<String, String> = (0..10_000)
            .map(|i| (format!("unknown{i}"), "x".into()))
            .collect();
        let e = check(&many).unwrap_err().to_string();
        assert!(e.starts_with("scalerMetadata: 10000 keys given"), "{e}");
        let big: HashMap<String, String> = [("caCert".to_string(), "A".repeat(1 << 20))]
            .into_iter()
            .collect();
        let e = check(&big).unwrap_err().to_string();
        assert!(e.contains("caCert count too") && !e.contains("AAAA"), "{e}");
        let ok: HashMap<String, String> = [("queueTarget".to_string(), "5".to_string())]
            .into_iter()
            .collect();
        assert!(check(&ok).is_ok());
    }

    #[test]
    fn names_and_namespaces_follow_kubernetes_rules() {
        for (ns, name) in [
            ("default", "llm"),
            ("team-a", "inference-0"),
            ("a", "x.y-z.0"),
            (&*"n".repeat(63), &*"m".repeat(253)),
        ] {
            check_object(ns, name).unwrap_or_else(|e| panic!("{ns}/{name}: {e}"));
        }
        for (ns, name, field, needle) in [
            ("default", "", "name", "is empty"),
            ("", "llm", "namespace", "is empty"),
            ("default", &*"m".repeat(254), "name", "is 254 bytes long"),
            (&*"n".repeat(64), "llm", "namespace", "is 64 bytes long"),
            (
                "default",
                &*"m".repeat(1 << 20),
                "name",
                "is 1048576 bytes long",
            ),
            ("default", "LLM", "name", "'LLM' is not one"),
            ("default", "-llm", "name", "is not one"),
            ("default", "llm.", "name", "is not one"),
            ("default", "a..b", "name", "is not one"),
            ("team.a", "llm", "namespace", "is not one"),
            ("default", "llm\n\u{1b}[31m", "name", "is not one"),
        ] {
            let e = check_object(ns, name).unwrap_err();
            assert_eq!(e.field, field, "{ns}/{name}");
            let text = e.to_string();
            assert!(text.contains(needle), "{text}");
            assert!(
                text.starts_with(&format!("scaledObjectRef.{field} ")),
                "{text}"
            );
            assert!(text.contains("accepted: a Kubernetes"), "{text}");
            assert!(text.len() < 1200, "{} bytes", text.len());
        }
        // Control and bidirectional characters are escaped where the name is shown.
        let e = check_object("default", "llm\n\u{202e}x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && !e.contains('\u{202e}'), "{e}");
        assert!(e.contains("\\n") && e.contains("\\u{202e}"), "{e}");
    }
}
