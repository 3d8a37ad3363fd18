//! What the window's samples say beyond their values: how much of their spread is counting
//! noise, and whether they move along a line.

use std::collections::VecDeque;

use super::MIN_SAMPLES;

/// The window's rates with their counting noise taken out, and the share of their variance it
/// was. Each rate was counted over `tau` seconds, so even a steady Poisson load reads with a
/// variance of its mean over `tau`: that much of the window's variance is noise, the rest the
/// demand's own movement. Each sample keeps its deviation from the window's mean scaled by the
/// square root of the share that is movement (the shrinkage of an estimate towards the mean by
/// its signal-to-noise ratio): a steady load's samples all read as its mean, a bursty load's
/// keep their bursts. Needs two samples; a window with no spread is returned as it is.
pub fn denoise(rates: &[f64], tau: f64) -> (Vec<f64>, f64) {
    let n = rates.len() as f64;
    if rates.len() < 2 || tau.is_nan() || tau <= 0.0 {
        return (rates.to_vec(), 0.0);
    }
    let mean = rates.iter().sum::<f64>() / n;
    let variance = rates.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    if !(variance > 0.0 && mean > 0.0) {
        return (rates.to_vec(), 0.0);
    }
    let noise = (mean / tau / variance).min(1.0);
    let keep = (1.0 - noise).sqrt();
    (
        rates.iter().map(|v| mean + keep * (v - mean)).collect(),
        noise,
    )
}

/// The least-squares line through the window's (time, rate) samples, fitted once per sample and
/// read three ways: the trend carried ahead (`positive_slope`), a load falling along a line
/// (`falling_slope`) and a load rising beyond its noise (`rising`).
pub struct Fit {
    mean_v: f64,
    /// Per second.
    slope: f64,
    /// The variance the line leaves unexplained, per degree of freedom (the line takes two).
    residual: f64,
    /// The standard error of the slope.
    standard_error: f64,
    /// Degrees of freedom: samples less two.
    dof: f64,
}

/// The window's line. None with fewer than `MIN_SAMPLES` samples or all at one time.
pub fn fit(samples: &VecDeque<(f64, f64)>) -> Option<Fit> {
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_v = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let (mut num, mut spread_t) = (0.0, 0.0);
    for &(t, v) in samples {
        num += (t - mean_t) * (v - mean_v);
        spread_t += (t - mean_t) * (t - mean_t);
    }
    if spread_t <= 0.0 {
        return None;
    }
    let slope = num / spread_t;
    let dof = n - 2.0;
    let residual = samples
        .iter()
        .map(|&(t, v)| (v - mean_v - slope * (t - mean_t)).powi(2))
        .sum::<f64>()
        / dof;
    Some(Fit {
        mean_v,
        slope,
        residual,
        standard_error: (residual / spread_t).sqrt(),
        dof,
    })
}

impl Fit {
    /// The slope, per second, or 0 when it is not positive.
    pub fn positive_slope(&self) -> f64 {
        self.slope.max(0.0)
    }

    /// How fast the window's demand falls, requests per second per second (positive), where it
    /// falls along a line; 0 otherwise. Each rate was counted over `tau` seconds, so a steady
    /// Poisson load reads with a variance of its mean over `tau` (`denoise`). The line is
    /// trusted when both hold:
    /// - its slope is negative by more than twice its standard error (a steady load's fitted
    ///   slope is noise about zero, and lowering old samples by noise would plan below the
    ///   load);
    /// - its residual variance is within the upper 95 % of what counting noise alone gives, the
    ///   chi-square over its degrees of freedom (normal approximation, `1 + 1.645 sqrt(2 /
    ///   dof)`): the line explains the window, so the samples are a level that moved, not
    ///   bursts that ended. A burst ending or a step down leaves residuals far above noise
    ///   around any line.
    pub fn falling_slope(&self, tau: f64) -> f64 {
        if tau.is_nan() || tau <= 0.0 || self.mean_v <= 0.0 {
            return 0.0;
        }
        let noise = self.mean_v / tau;
        let explained = self.residual <= noise * (1.0 + 1.645 * (2.0 / self.dof).sqrt());
        if self.slope < -2.0 * self.standard_error && explained {
            -self.slope
        } else {
            0.0
        }
    }

    /// Whether the window's demand rises: its slope is positive by more than twice its standard
    /// error, the same test `falling_slope` puts a fall to. No test of the residuals: a ramp and
    /// the front of a burst both rise, and either way the newest sample is the best evidence of
    /// what comes next. A steady load's slope is noise about zero and fails the test.
    pub fn rising(&self) -> bool {
        self.slope > 2.0 * self.standard_error
    }
}

#[cfg(test)]
mod tests {
    use super::super::series;
    use super::*;

    fn falling_slope(samples: &VecDeque<(f64, f64)>, tau: f64) -> f64 {
        fit(samples).map_or(0.0, |f| f.falling_slope(tau))
    }

    fn rising(samples: &VecDeque<(f64, f64)>) -> bool {
        fit(samples).is_some_and(|f| f.rising())
    }

    #[test]
    fn only_a_load_falling_along_a_line_is_read_as_falling() {
        // 20 req/s falling by 0.3 per sample (0.02 req/s per second), scattered by 1 req/s:
        // a count over 15 s at 15 req/s scatters by sqrt(15 / 15) = 1, so the line explains it.
        let falling = series(20, 1.0, |i| 20.0 - 0.3 * i as f64);
        let slope = falling_slope(&falling, 15.0);
        assert!((slope - 0.02).abs() < 0.002, "{slope}");
        // Rising, or level: nothing falls.
        assert_eq!(
            falling_slope(&series(20, 1.0, |i| 5.0 + 0.3 * i as f64), 15.0),
            0.0
        );
        assert_eq!(falling_slope(&series(20, 1.0, |_| 15.0), 15.0), 0.0);
        // A burst ending (40 req/s for 10 samples, then 2): the slope is negative and far
        // beyond its standard error, but the residuals around the line are far beyond counting
        // noise, so the window is not lowered: the burst may come back.
        let ended = series(20, 1.0, |i| if i < 10 { 40.0 } else { 2.0 });
        assert_eq!(falling_slope(&ended, 15.0), 0.0);
        // The same fall, scattered far more than counting noise (a bursty load drifting down):
        // not a line either.
        assert_eq!(
            falling_slope(&series(20, 6.0, |i| 20.0 - 0.3 * i as f64), 15.0),
            0.0
        );
        // Too few samples, or no counting span: no reading.
        assert_eq!(
            falling_slope(&series(3, 0.0, |i| 9.0 - i as f64), 15.0),
            0.0
        );
        assert_eq!(falling_slope(&falling, 0.0), 0.0);
        assert_eq!(falling_slope(&falling, f64::NAN), 0.0);
    }

    #[test]
    fn a_rise_beyond_its_noise_is_rising_and_a_level_is_not() {
        // 5 req/s rising by 0.3 per sample, scattered by 1 req/s: rising.
        assert!(rising(&series(20, 1.0, |i| 5.0 + 0.3 * i as f64)));
        // The front of a burst rises too (the residuals are not judged).
        assert!(rising(&series(20, 1.0, |i| if i < 15 {
            2.0
        } else {
            40.0
        })));
        // A level scattered by its noise, a fall, and too few samples: not rising.
        assert!(!rising(&series(20, 1.0, |_| 15.0)));
        assert!(!rising(&series(20, 1.0, |i| 20.0 - 0.3 * i as f64)));
        assert!(!rising(&series(3, 0.0, |i| 5.0 + i as f64)));
        // A level scattered far more than a rise of 0.02 per sample: the slope is within its
        // noise.
        assert!(!rising(&series(20, 3.0, |i| 15.0 + 0.02 * i as f64)));
    }

    #[test]
    fn counting_noise_is_taken_out_of_the_window_and_movement_is_kept() {
        // A steady 20 req/s counted over 15 s reads with a variance of 20 / 15: samples spread
        // by no more than that are all the mean.
        let steady = [20.0, 21.2, 18.8, 20.0, 21.0, 19.0];
        let (rates, noise) = denoise(&steady, 15.0);
        assert_eq!(noise, 1.0);
        assert!(rates.iter().all(|r| (r - 20.0).abs() < 1e-9), "{rates:?}");
        // A burst is movement: a spread far beyond the noise is kept almost whole.
        let bursty = [2.0, 2.0, 30.0, 2.0, 2.0, 2.0];
        let (rates, noise) = denoise(&bursty, 15.0);
        assert!(noise < 0.01, "{noise}");
        assert!(rates[2] > 29.0 && rates[2] < 30.0, "{rates:?}");
        // The mean is kept either way, and what cannot be judged is left alone.
        let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
        assert!((mean(&rates) - mean(&bursty)).abs() < 1e-9);
        assert_eq!(denoise(&[5.0], 15.0), (vec![5.0], 0.0));
        assert_eq!(denoise(&[0.0, 0.0], 15.0), (vec![0.0, 0.0], 0.0));
        assert_eq!(denoise(&[1.0, 3.0], 0.0), (vec![1.0, 3.0], 0.0));
    }
}
