//! Seasonal pre-warm floor: what the ScaledObject's own demand was one season ago, a lead time
//! ahead, so capacity for a recurring peak is started before the peak instead of after it.
//!
//! Pure and clock-free like the rest of `score/`. Off unless a period is configured: a
//! reactive scaler meets every recurring burst with a cold start, but only the operator knows
//! whether the traffic has a season (a day, a week, a batch job every 15 minutes).

use std::collections::VecDeque;

/// Buckets kept per season at most; longer periods get wider buckets.
const MAX_BUCKETS: f64 = 1440.0;

/// A seasonal floor's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForecastConfig {
    /// Length of a season, seconds (86400 for a day).
    pub period_s: f64,
    /// How far ahead of a recurring peak capacity is asked for: at least one replica start.
    pub lead_s: f64,
}

impl ForecastConfig {
    /// Width of the buckets the history is kept in, seconds.
    pub fn bucket_s(&self) -> f64 {
        (self.period_s / MAX_BUCKETS).max(15.0)
    }
}

/// The demand history of one ScaledObject: the highest demand seen in each bucket of the last
/// season (and the lead beyond it).
#[derive(Clone, Debug)]
pub struct Seasonal {
    config: ForecastConfig,
    /// (bucket start, highest demand in it), oldest first.
    history: VecDeque<(f64, f64)>,
}

impl Seasonal {
    pub fn new(config: ForecastConfig) -> Self {
        Seasonal {
            config,
            history: VecDeque::new(),
        }
    }

    /// Records the demand observed at `t` (non-finite values are ignored).
    pub fn record(&mut self, t: f64, demand: f64) {
        if !demand.is_finite() || !t.is_finite() {
            return;
        }
        let bucket = self.config.bucket_s();
        let start = (t / bucket).floor() * bucket;
        match self.history.back_mut() {
            Some((b, v)) if *b == start => *v = v.max(demand),
            Some((b, _)) if *b > start => {} // time went backwards: keep what we have
            _ => self.history.push_back((start, demand.max(0.0))),
        }
        // One season back plus the lead is all the floor ever reads.
        let keep_from = t - self.config.period_s - bucket;
        while self
            .history
            .front()
            .is_some_and(|(b, _)| *b + bucket < keep_from)
        {
            self.history.pop_front();
        }
    }

    /// The floor at `t`: the highest demand of the last season between `t` and `t + lead`, one
    /// period back. None until a full season of history exists, so a new object is not held
    /// by a floor it has no evidence for.
    pub fn floor(&self, t: f64) -> Option<f64> {
        let oldest = self.history.front()?.0;
        let from = t - self.config.period_s;
        if oldest > from {
            return None;
        }
        let to = from + self.config.lead_s;
        let bucket = self.config.bucket_s();
        self.history
            .iter()
            .filter(|(b, _)| *b + bucket > from && *b <= to)
            .map(|&(_, v)| v)
            .reduce(f64::max)
    }

    /// Buckets held (for the documented memory cost).
    pub fn len(&self) -> usize {
        self.history.len()
    }

    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ForecastConfig {
        ForecastConfig {
            period_s: 900.0,
            lead_s: 120.0,
        }
    }

    #[test]
    fn the_floor_is_last_seasons_demand_a_lead_ahead() {
        let mut s = Seasonal::new(cfg());
        // A burst needing 10 replicas from 300 s to 600 s of every 900 s season.
        for t in (0..900).step_by(15) {
            let d = if (300..600).contains(&t) { 10.0 } else { 1.0 };
            s.record(t as f64, d);
        }
        assert_eq!(s.floor(850.0), None, "no full season of history yet");
        // One season later, 120 s before the burst recurs: ask for it now.
        assert_eq!(s.floor(900.0 + 170.0), Some(1.0));
        assert_eq!(
            s.floor(900.0 + 190.0),
            Some(10.0),
            "the burst is within the lead"
        );
        assert_eq!(s.floor(900.0 + 450.0), Some(10.0));
        assert_eq!(
            s.floor(900.0 + 615.0),
            Some(1.0),
            "the burst ended last season"
        );
    }

    #[test]
    fn history_is_bounded_to_one_season() {
        let mut s = Seasonal::new(ForecastConfig {
            period_s: 86_400.0,
            lead_s: 300.0,
        });
        for t in 0..(3 * 86_400 / 15) {
            s.record(t as f64 * 15.0, 1.0);
        }
        assert!(s.len() <= 1442, "{}", s.len());
        assert_eq!(s.config.bucket_s(), 60.0);
        s.record(f64::NAN, 5.0);
        s.record(3.0 * 86_400.0, f64::INFINITY);
        assert_eq!(s.floor(3.0 * 86_400.0), Some(1.0));
    }
}
