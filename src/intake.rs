//! What a metadata map costs before it is parsed: size and key-count limits checked first (ignored
//! keys included), and a bounded memory of maps already rejected, so a bad map sent on every
//! call is refused for the price of a hash lookup instead of a parse.

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

/// Refuses a map over the limits, in time proportional to its number of keys (no value is
/// read, copied or echoed).
pub fn check(metadata: &HashMap<String, String>) -> Result<(), SpecError> {
    let refuse = |message: String| {
        Err(SpecError {
            problems: vec![Problem {
                key: "scalerMetadata".into(),
                message,
            }],
        })
    };
    if metadata.len() > MAX_KEYS {
        return refuse(format!(
            "{} keys given; at most {MAX_KEYS} are accepted (unknown and ignored keys count too)",
            metadata.len()
        ));
    }
    let bytes: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_BYTES {
        return refuse(format!(
            "{bytes} bytes of keys and values; at most {MAX_BYTES} are accepted (KEDA's own keys such as caCert count too)"
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
}
