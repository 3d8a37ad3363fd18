//! Decisions that survive a restart.
//!
//! A restarted scaler has lost its smoothing state; its first readings alone could answer a
//! lower desired count, or inactive, for a service that was busy a moment ago. So the scaler
//! writes each ScaledObject's last decision to a small file (`state_file`, on a volume that
//! outlives the container), and after a restart the published decision is never below that
//! decision decayed with the object's `downHalfLifeSeconds` over the time since: exactly what
//! the smoothing would have said had every reading since been zero. Once the fresh smoothing
//! reaches the floor, the floor is dropped. (The alternative, answering UNAVAILABLE during a
//! warm-up, would let KEDA's `fallback` replicas take over, which may well be fewer.)

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::score::Decision;

/// File format version; another version is ignored.
const VERSION: u32 = 1;
/// Floors older than this are not restored: a day-old decision says nothing about now.
const MAX_AGE_S: f64 = 3600.0;

/// One ScaledObject's last decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub namespace: String,
    pub name: String,
    /// Hash of the metadata, so an edited trigger does not inherit another spec's decision.
    pub metadata: u64,
    pub desired: f64,
    pub active: bool,
    /// Unix seconds of the decision.
    pub at: f64,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    objects: Vec<Saved>,
}

/// A stable hash of sorted metadata pairs (stable across runs of the same build).
pub fn metadata_hash(pairs: &[(String, String)]) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    pairs.hash(&mut h);
    h.finish()
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads the file; a missing, unreadable or foreign file restores nothing (and says why).
pub fn load(path: &Path) -> HashMap<(String, String, u64), Saved> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "state file unreadable; starting cold");
            return HashMap::new();
        }
    };
    match serde_json::from_slice::<File>(&text) {
        Ok(f) if f.version == VERSION => {
            let now = unix_now();
            f.objects
                .into_iter()
                .filter(|s| s.desired.is_finite() && now - s.at < MAX_AGE_S)
                .map(|s| ((s.namespace.clone(), s.name.clone(), s.metadata), s))
                .collect()
        }
        _ => {
            tracing::warn!(path = %path.display(), "state file is not this version's format; starting cold");
            HashMap::new()
        }
    }
}

/// Writes the file atomically (a temporary file renamed over it).
pub fn save(path: &Path, objects: Vec<Saved>) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let text = serde_json::to_vec(&File {
        version: VERSION,
        objects,
    })
    .map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The floor a restored decision puts under `now`'s decision: `desired` halved every
/// `down_half_life_s` since it was made; None once it has decayed to nothing.
pub fn floor(saved: &Saved, down_half_life_s: f64, now_unix: f64) -> Option<f64> {
    if down_half_life_s <= 0.0 {
        return None;
    }
    let age = (now_unix - saved.at).max(0.0);
    let v = saved.desired * 0.5f64.powf(age / down_half_life_s);
    (v >= 0.01).then_some(v)
}

/// Raises `decision` to the floor (and keeps it active while the floor is above
/// `deactivate_below`). Returns false when the decision is already at or above the floor, so the
/// floor can be dropped.
pub fn apply(
    decision: &mut Decision,
    floor: f64,
    saved_active: bool,
    deactivate_below: f64,
    max_replicas: f64,
) -> bool {
    let floor = floor.min(max_replicas);
    if decision.desired >= floor && (decision.active || !saved_active) {
        return false;
    }
    if decision.desired < floor {
        decision.desired = floor;
        decision.clamped = Some("the decision before the restart, decaying (state_file)");
    }
    if saved_active && floor >= deactivate_below {
        decision.active = true;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(desired: f64, age: f64) -> Saved {
        Saved {
            namespace: "ns".into(),
            name: "llm".into(),
            metadata: 7,
            desired,
            active: true,
            at: unix_now() - age,
        }
    }

    #[test]
    fn the_floor_decays_with_the_down_half_life() {
        let s = saved(17.8, 0.0);
        let now = s.at + 60.0;
        assert!((floor(&s, 60.0, now).unwrap() - 8.9).abs() < 1e-9);
        assert_eq!(floor(&s, 0.0, now), None);
        assert_eq!(floor(&s, 1.0, s.at + 3600.0), None);
    }

    #[test]
    fn files_round_trip_and_foreign_or_old_files_restore_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).is_empty());
        save(&path, vec![saved(5.0, 1.0), saved(9.0, 2.0 * MAX_AGE_S)]).unwrap();
        let back = load(&path);
        assert_eq!(back.len(), 1);
        assert_eq!(back[&("ns".into(), "llm".into(), 7)].desired, 5.0);
        std::fs::write(&path, b"{\"version\": 99, \"objects\": []}").unwrap();
        assert!(load(&path).is_empty());
    }
}
