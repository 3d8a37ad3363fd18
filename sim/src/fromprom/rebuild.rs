//! The request trace rebuilt from per-step numbers: each step's measured completions become
//! arrivals spread uniformly at random over the step (a Poisson process conditioned on its count),
//! moved earlier by the step's mean end-to-end latency (the counter counts a request when it
//! finishes), and each request's prompt and output lengths are drawn from that step's histograms.
//! Pure and seeded.

use gpu_workload::rng::SplitMix64;

use super::series::{Grid, HistSteps};

/// A length distribution drawn from a histogram's buckets: bucket by its share of observations,
/// then `lo + (hi - lo) * U^a` inside it, with one exponent `a` chosen so the draws' mean is the
/// histogram's own mean (`_sum / _count`); the open top bucket gets an exponential tail whose
/// mean carries what the finite buckets cannot.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketDist {
    /// (lower, upper, cumulative probability) of each finite bucket.
    finite: Vec<(f64, f64, f64)>,
    a: f64,
    /// The top bucket's lower bound and the mean of the excess over it.
    tail: Option<(f64, f64)>,
}

/// How far inside its buckets the mean may pull the draws (0.5: uniform).
const W_MIN: f64 = 0.02;
const W_MAX: f64 = 0.98;

impl BucketDist {
    /// The distribution of one step's buckets (`counts` per bound of `bounds`, the last +Inf),
    /// matched to `mean` when given. `integer`: values are whole numbers >= 1 (token counts),
    /// drawn as the ceiling of the continuous draw. None without observations.
    pub fn new(bounds: &[f64], counts: &[f64], mean: Option<f64>, integer: bool) -> Option<Self> {
        let total: f64 = counts.iter().sum();
        if total <= 0.0 || bounds.len() != counts.len() {
            return None;
        }
        let mut finite = Vec::new();
        let mut cum = 0.0;
        let (mut base, mut width) = (0.0, 0.0);
        let mut tail = None;
        for (j, (&hi, &n)) in bounds.iter().zip(counts).enumerate() {
            let lo = if j == 0 { 0.0 } else { bounds[j - 1] };
            let p = n / total;
            if hi.is_infinite() {
                if p > 0.0 {
                    tail = Some((lo, p));
                }
                continue;
            }
            if p > 0.0 {
                cum += p;
                base += p * lo;
                width += p * (hi - lo);
                finite.push((lo, hi, cum));
            }
        }
        // The ceiling adds half a unit on average.
        let target = mean.map(|m| if integer { m - 0.5 } else { m });
        let (w, excess) = match (target, tail) {
            (None, Some((lo, _))) => (0.5, (0.5 * lo).max(1.0)),
            (None, None) => (0.5, 0.0),
            (Some(m), Some((lo, p))) => {
                let rem = m - base - 0.5 * width - p * lo;
                if rem > 0.0 {
                    (0.5, rem / p)
                } else {
                    let excess = (0.05 * lo).max(1e-9);
                    let w = if width > 0.0 {
                        (m - base - p * (lo + excess)) / width
                    } else {
                        0.5
                    };
                    (w, excess)
                }
            }
            (Some(m), None) => (if width > 0.0 { (m - base) / width } else { 0.5 }, 0.0),
        };
        let w = w.clamp(W_MIN, W_MAX);
        Some(BucketDist {
            finite,
            a: 1.0 / w - 1.0,
            tail: tail.map(|(lo, _)| (lo, excess)),
        })
    }

    pub fn draw(&self, rng: &mut SplitMix64) -> f64 {
        let u = rng.uniform();
        match self.finite.iter().find(|b| u < b.2) {
            Some(&(lo, hi, _)) => lo + (hi - lo) * rng.uniform().powf(self.a),
            None => match self.tail {
                Some((lo, excess)) if excess > 0.0 => lo + rng.exponential(1.0 / excess),
                Some((lo, _)) => lo,
                None => self.finite.last().map_or(0.0, |b| b.1),
            },
        }
    }

    /// Share of draws from the open top bucket.
    pub fn tail_share(&self) -> f64 {
        1.0 - self.finite.last().map_or(0.0, |b| b.2)
    }
}

/// Where one length (prompt or output tokens) comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Lengths {
    /// Per-step buckets; steps without observations use the whole range's.
    Buckets {
        steps: Vec<Option<BucketDist>>,
        overall: BucketDist,
        means: Vec<Option<f64>>,
        overall_mean: f64,
    },
    /// Per-step means only: log-normal around them with this log-space deviation.
    Means {
        means: Vec<Option<f64>>,
        overall_mean: f64,
        sigma: f64,
    },
    /// Nothing measured: every request gets this.
    Fixed(f64),
}

fn overall(values: &[f64], weights: &[f64]) -> Option<f64> {
    let w: f64 = weights.iter().sum();
    (w > 0.0).then(|| values.iter().sum::<f64>() / w)
}

impl Lengths {
    /// From a token histogram; None when it observed nothing. A histogram with no finite bucket
    /// gives means only.
    pub fn from_histogram(h: &HistSteps, sigma: f64) -> Option<Lengths> {
        let overall_mean = overall(&h.sum, &h.count)?;
        let means: Vec<Option<f64>> = (0..h.count.len()).map(|k| h.mean(k)).collect();
        if h.bounds.iter().all(|b| b.is_infinite()) {
            return Some(Lengths::Means {
                means,
                overall_mean,
                sigma,
            });
        }
        let overall = BucketDist::new(&h.bounds, &h.total(), Some(overall_mean), true)?;
        let steps = h
            .counts
            .iter()
            .zip(&means)
            .map(|(row, m)| BucketDist::new(&h.bounds, row, *m, true))
            .collect();
        Some(Lengths::Buckets {
            steps,
            overall,
            means,
            overall_mean,
        })
    }

    /// From per-step increases of a total counter and of the completions.
    pub fn from_counter(total: &[f64], completions: &[f64], sigma: f64) -> Option<Lengths> {
        let overall_mean = overall(total, completions)?;
        let means = total
            .iter()
            .zip(completions)
            .map(|(t, c)| (*c > 0.0).then(|| t / c))
            .collect();
        Some(Lengths::Means {
            means,
            overall_mean,
            sigma,
        })
    }

    /// The measured mean in step `k`.
    pub fn mean_at(&self, k: usize) -> Option<f64> {
        match self {
            Lengths::Buckets { means, .. } | Lengths::Means { means, .. } => {
                means.get(k).copied().flatten()
            }
            Lengths::Fixed(_) => None,
        }
    }

    pub fn overall_mean(&self) -> f64 {
        match self {
            Lengths::Buckets { overall_mean, .. } | Lengths::Means { overall_mean, .. } => {
                *overall_mean
            }
            Lengths::Fixed(v) => *v,
        }
    }

    /// Share of requests drawn from an open top bucket over the range (0 without buckets).
    pub fn tail_share(&self) -> f64 {
        match self {
            Lengths::Buckets { overall, .. } => overall.tail_share(),
            _ => 0.0,
        }
    }

    /// One request's length in step `k`: a whole number >= 1.
    pub fn draw(&self, k: usize, rng: &mut SplitMix64) -> u32 {
        let x = match self {
            Lengths::Buckets { steps, overall, .. } => steps
                .get(k)
                .and_then(Option::as_ref)
                .unwrap_or(overall)
                .draw(rng)
                .ceil(),
            Lengths::Means {
                means,
                overall_mean,
                sigma,
            } => {
                let m = means.get(k).copied().flatten().unwrap_or(*overall_mean);
                rng.log_normal(m.max(1.0), *sigma).round()
            }
            Lengths::Fixed(v) => v.round(),
        };
        x.clamp(1.0, u32::MAX as f64) as u32
    }
}

/// One rebuilt request: arrival (unix seconds) and its token counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rebuilt {
    pub at: f64,
    pub prompt: u32,
    pub generated: u32,
}

/// The trace: per step, `completions[k]` requests (fractions carried to the next step so the
/// total is kept) at uniform random times in the step, each moved earlier by `shift_s[k]` (not
/// before the range's start), with lengths drawn for step k. Sorted by arrival.
pub fn build(
    grid: &Grid,
    completions: &[f64],
    shift_s: &[f64],
    prompt: &Lengths,
    generated: &Lengths,
    seed: u64,
) -> Vec<Rebuilt> {
    let mut rng = SplitMix64::new(seed ^ 0xF00D_5EED);
    let mut out = Vec::with_capacity(completions.iter().sum::<f64>().max(0.0) as usize + 1);
    let mut acc = 0.0;
    let mut emitted = 0i64;
    let step = grid.step as f64;
    for (k, &c) in completions.iter().enumerate() {
        acc += c.max(0.0);
        let target = acc.round() as i64;
        let n = target - emitted;
        emitted = target;
        let from = grid.t(k) as f64;
        let shift = shift_s.get(k).copied().unwrap_or(0.0).max(0.0);
        for _ in 0..n {
            let at = (from + rng.uniform() * step - shift).max(grid.start as f64);
            out.push(Rebuilt {
                at,
                prompt: prompt.draw(k, &mut rng),
                generated: generated.draw(k, &mut rng),
            });
        }
    }
    out.sort_by(|a, b| a.at.total_cmp(&b.at));
    out
}

/// The trace as the Azure CSV the simulator reads (`TIMESTAMP,ContextTokens,GeneratedTokens`).
pub fn azure_csv(requests: &[Rebuilt]) -> String {
    let mut s = String::with_capacity(requests.len() * 40 + 64);
    s.push_str("TIMESTAMP,ContextTokens,GeneratedTokens\n");
    for r in requests {
        s.push_str(&super::parse::azure_timestamp(r.at));
        s.push_str(&format!(",{},{}\n", r.prompt, r.generated));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_of(d: &BucketDist, n: usize, integer: bool) -> f64 {
        let mut rng = SplitMix64::new(3);
        (0..n)
            .map(|_| {
                let x = d.draw(&mut rng);
                if integer {
                    x.ceil()
                } else {
                    x
                }
            })
            .sum::<f64>()
            / n as f64
    }

    #[test]
    fn bucket_draws_stay_in_their_buckets_and_match_the_mean() {
        let bounds = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, f64::INFINITY];
        let counts = [0.0, 0.0, 10.0, 20.0, 40.0, 25.0, 5.0, 0.0];
        // The buckets allow means between 12.7 and 28 (all draws at the bottom or the top).
        for mean in [15.0, 20.0, 25.0] {
            let d = BucketDist::new(&bounds, &counts, Some(mean), false).unwrap();
            let got = mean_of(&d, 200_000, false);
            assert!((got - mean).abs() / mean < 0.01, "{mean}: {got}");
        }
        // Without a mean: uniform inside buckets.
        let d = BucketDist::new(&bounds, &counts, None, false).unwrap();
        let mut rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            let x = d.draw(&mut rng);
            assert!((2.0..=100.0).contains(&x), "{x}");
        }
        assert_eq!(d.tail_share(), 0.0);
        assert!(BucketDist::new(&bounds, &[0.0; 8], None, false).is_none());
    }

    #[test]
    fn an_open_top_bucket_carries_the_rest_of_the_mean() {
        // Half the requests above 1000 (Triton's top bucket), mean 1500.
        let bounds = [10.0, 50.0, 100.0, 500.0, 1000.0, f64::INFINITY];
        let counts = [0.0, 0.0, 10.0, 20.0, 20.0, 50.0];
        let d = BucketDist::new(&bounds, &counts, Some(1500.0), true).unwrap();
        let got = mean_of(&d, 200_000, true);
        assert!((got - 1500.0).abs() / 1500.0 < 0.01, "{got}");
        assert!((d.tail_share() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn traces_keep_each_steps_count_and_shift_by_latency() {
        let grid = Grid {
            start: 1_000_000,
            step: 60,
            steps: 3,
        };
        let fixed = Lengths::Fixed(100.0);
        let r = build(
            &grid,
            &[2.5, 2.5, 10.0],
            &[0.0, 30.0, 0.0],
            &fixed,
            &fixed,
            1,
        );
        assert_eq!(r.len(), 15);
        let in_step = |k: i64| {
            r.iter()
                .filter(|x| {
                    x.at >= (1_000_000 + 60 * k) as f64 && x.at < (1_000_060 + 60 * k) as f64
                })
                .count()
        };
        assert_eq!(in_step(2), 10);
        assert!(r.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(r.iter().all(|x| x.at >= 1_000_000.0 && x.prompt == 100));
        assert_eq!(
            r,
            build(
                &grid,
                &[2.5, 2.5, 10.0],
                &[0.0, 30.0, 0.0],
                &fixed,
                &fixed,
                1
            )
        );
        let csv = azure_csv(&r[..1]);
        assert!(
            csv.starts_with("TIMESTAMP,ContextTokens,GeneratedTokens\n1970-01-12 "),
            "{csv}"
        );
    }

    #[test]
    fn lengths_from_histograms_and_counters() {
        let h = HistSteps {
            bounds: vec![10.0, 100.0, f64::INFINITY],
            counts: vec![vec![0.0, 4.0, 0.0], vec![0.0, 0.0, 0.0]],
            sum: vec![200.0, 0.0],
            count: vec![4.0, 0.0],
        };
        let l = Lengths::from_histogram(&h, 1.0).unwrap();
        assert_eq!(l.mean_at(0), Some(50.0));
        assert_eq!(l.mean_at(1), None);
        let mut rng = SplitMix64::new(1);
        // The empty step draws from the whole range's buckets.
        for k in 0..2 {
            let x = l.draw(k, &mut rng);
            assert!((11..=100).contains(&x), "{x}");
        }
        let only_inf = HistSteps {
            bounds: vec![f64::INFINITY],
            ..h.clone()
        };
        assert!(matches!(
            Lengths::from_histogram(&only_inf, 1.0),
            Some(Lengths::Means { .. })
        ));
        let c = Lengths::from_counter(&[1000.0, 0.0], &[10.0, 0.0], 0.8).unwrap();
        assert_eq!(c.mean_at(0), Some(100.0));
        assert_eq!(c.overall_mean(), 100.0);
        assert!(Lengths::from_counter(&[0.0], &[0.0], 0.8).is_none());
    }
}
