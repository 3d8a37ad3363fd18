//! Time-aware exponentially weighted moving average.
//!
//! Samples arrive at irregular times (slow scrapes, missed intervals), so the weight of the old value
//! is derived from the elapsed time and a half-life rather than from a fixed alpha. Rising and falling
//! inputs use separate half-lives so capacity is added quickly and given back slowly.

/// How a signal is smoothed. Half-lives are in seconds; zero means "no smoothing" in that direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Smoothing {
    pub up_half_life_s: f64,
    pub down_half_life_s: f64,
    /// A raw value above `panic_threshold` x the smoothed value replaces it at once (a surge must not
    /// wait for the average to catch up). Values <= 1 disable the pass-through.
    pub panic_threshold: f64,
}

impl Default for Smoothing {
    fn default() -> Self {
        Smoothing {
            up_half_life_s: 10.0,
            down_half_life_s: 60.0,
            panic_threshold: 2.0,
        }
    }
}

/// What one observation did to the average.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observed {
    pub value: f64,
    /// True when the panic rule let the raw value through unsmoothed.
    pub panicked: bool,
}

/// The smoothed value and the time it was last updated; empty until the first observation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    last: Option<(f64, f64)>,
}

impl Ewma {
    pub fn new() -> Self {
        Ewma::default()
    }

    /// Current smoothed value, if any observation was made.
    pub fn value(&self) -> Option<f64> {
        self.last.map(|(v, _)| v)
    }

    /// Folds `raw`, observed at time `t` (seconds on any monotonic clock), into the average.
    ///
    /// The result equals the closed form `raw + (prev - raw) * 2^(-dt / half_life)`, so splitting an
    /// interval into several steps with the same input gives the same value as one long step.
    /// Non-finite inputs are ignored; time going backwards counts as no elapsed time.
    pub fn observe(&mut self, raw: f64, t: f64, smoothing: &Smoothing) -> Observed {
        let Some((prev, prev_t)) = self.last else {
            if raw.is_finite() {
                self.last = Some((raw, t));
            }
            return Observed {
                value: self.value().unwrap_or(0.0),
                panicked: false,
            };
        };
        if !raw.is_finite() || !t.is_finite() {
            return Observed {
                value: prev,
                panicked: false,
            };
        }
        let dt = (t - prev_t).max(0.0);
        if smoothing.panic_threshold > 1.0 && raw > smoothing.panic_threshold * prev {
            self.last = Some((raw, t));
            return Observed {
                value: raw,
                panicked: true,
            };
        }
        let half_life = if raw > prev {
            smoothing.up_half_life_s
        } else {
            smoothing.down_half_life_s
        };
        let keep = decay(dt, half_life);
        let value = raw + (prev - raw) * keep;
        self.last = Some((value, t.max(prev_t)));
        Observed {
            value,
            panicked: false,
        }
    }
}

/// Fraction of the old value that survives `dt` seconds at the given half-life.
pub fn decay(dt: f64, half_life: f64) -> f64 {
    if half_life <= 0.0 {
        0.0
    } else {
        (-dt / half_life).exp2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smooth(up: f64, down: f64) -> Smoothing {
        Smoothing {
            up_half_life_s: up,
            down_half_life_s: down,
            panic_threshold: 0.0,
        }
    }

    #[test]
    fn first_observation_is_taken_as_is() {
        let mut e = Ewma::new();
        assert_eq!(e.value(), None);
        let o = e.observe(4.0, 100.0, &Smoothing::default());
        assert_eq!(o.value, 4.0);
        assert_eq!(e.value(), Some(4.0));
    }

    #[test]
    fn irregular_steps_match_the_closed_form() {
        let s = smooth(7.0, 7.0);
        let mut e = Ewma::new();
        e.observe(10.0, 0.0, &s);
        // Constant input 2.0 from t=0: value(t) = 2 + (10 - 2) * 2^(-t/7).
        let mut t = 0.0;
        for dt in [0.3, 5.0, 0.01, 12.5, 1.7, 3.3, 9.0] {
            t += dt;
            let got = e.observe(2.0, t, &s).value;
            let want = 2.0 + 8.0 * (-t / 7.0f64).exp2();
            assert!((got - want).abs() < 1e-9, "t={t}: got {got}, want {want}");
        }
    }

    #[test]
    fn one_half_life_moves_half_way() {
        let s = smooth(10.0, 10.0);
        let mut e = Ewma::new();
        e.observe(0.0, 0.0, &s);
        assert!((e.observe(8.0, 10.0, &s).value - 4.0).abs() < 1e-12);
    }

    #[test]
    fn up_and_down_use_their_own_half_lives() {
        let s = smooth(5.0, 50.0);
        let mut up = Ewma::new();
        up.observe(1.0, 0.0, &s);
        let rose = up.observe(1.5, 5.0, &s).value; // half of the 0.5 gap
        assert!((rose - 1.25).abs() < 1e-12);

        let mut down = Ewma::new();
        down.observe(1.5, 0.0, &s);
        let fell = down.observe(1.0, 5.0, &s).value; // 2^(-0.1) of the gap survives
        assert!((fell - (1.0 + 0.5 * (-0.1f64).exp2())).abs() < 1e-12);
        assert!(fell > 1.45, "falling must be slow, got {fell}");
    }

    #[test]
    fn panic_lets_a_surge_through_at_once() {
        let s = Smoothing {
            up_half_life_s: 60.0,
            down_half_life_s: 60.0,
            panic_threshold: 2.0,
        };
        let mut e = Ewma::new();
        e.observe(1.0, 0.0, &s);
        let o = e.observe(1.9, 1.0, &s);
        assert!(
            !o.panicked && o.value < 1.1,
            "below the threshold is smoothed: {o:?}"
        );
        let o = e.observe(5.0, 2.0, &s);
        assert!(o.panicked);
        assert_eq!(o.value, 5.0);
        // Panic never applies downwards.
        let o = e.observe(0.0, 3.0, &s);
        assert!(!o.panicked && o.value > 4.9);
    }

    #[test]
    fn zero_half_life_follows_the_input() {
        let s = smooth(0.0, 0.0);
        let mut e = Ewma::new();
        e.observe(3.0, 0.0, &s);
        assert_eq!(e.observe(7.0, 0.5, &s).value, 7.0);
    }

    #[test]
    fn bad_inputs_leave_the_average_alone() {
        let s = Smoothing::default();
        let mut e = Ewma::new();
        e.observe(f64::NAN, 0.0, &s);
        assert_eq!(e.value(), None);
        e.observe(2.0, 1.0, &s);
        e.observe(f64::INFINITY, 2.0, &s);
        e.observe(f64::NAN, 3.0, &s);
        assert_eq!(e.value(), Some(2.0));
        // Time going backwards is zero elapsed time, not growth.
        let v = e.observe(1.0, -50.0, &s).value;
        assert_eq!(v, 2.0);
    }
}
