//! Quantiles from classic Prometheus histograms, with Prometheus's own interpolation, and the
//! per-window difference of two cumulative snapshots. Pure: the scrape source keeps the snapshots.
//! Also the nearest-rank rule for raw samples, which the simulator, the demo and the benchmarks
//! report latencies by, so that they all count alike.

/// Cumulative bucket counts, sorted by upper bound (`le`), the last one being +Inf.
pub type Buckets = Vec<(f64, f64)>;

/// Seconds per unit of a histogram, from its name's unit suffix as Prometheus naming asks for:
/// `_ms` milliseconds (Triton), `_us` microseconds, anything else seconds.
pub fn unit_seconds(base: &str) -> f64 {
    if base.ends_with("_ms") || base.ends_with("_milliseconds") {
        1e-3
    } else if base.ends_with("_us") || base.ends_with("_microseconds") {
        1e-6
    } else {
        1.0
    }
}

/// Index of the q-quantile in `n` sorted samples by nearest rank (the smallest value with at
/// least q of the values at or below it); None for no samples.
pub fn nearest_rank(n: usize, q: f64) -> Option<usize> {
    (n > 0).then(|| ((q * n as f64).ceil() as usize).clamp(1, n) - 1)
}

/// Sums `_bucket` series that share an upper bound (one histogram per endpoint label, say).
pub fn merge(series: impl IntoIterator<Item = (f64, f64)>) -> Buckets {
    let mut all: Buckets = series
        .into_iter()
        .filter(|(le, count)| !le.is_nan() && count.is_finite())
        .collect();
    // Sorted first, so that merging is one pass however many series there are.
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut buckets: Buckets = Vec::new();
    for (le, count) in all {
        match buckets.last_mut() {
            Some((b, c)) if *b == le => *c += count,
            _ => buckets.push((le, count)),
        }
    }
    buckets.shrink_to_fit();
    buckets
}

/// Counts observed between `old` and `new`. A counter reset (any count going down, or a change in
/// the bucket layout) means the process restarted: everything in `new` is then new.
pub fn delta(old: &Buckets, new: &Buckets) -> Buckets {
    let same_layout = old.len() == new.len() && old.iter().zip(new).all(|(o, n)| o.0 == n.0);
    if !same_layout || old.iter().zip(new).any(|(o, n)| n.1 < o.1) {
        return new.clone();
    }
    old.iter().zip(new).map(|(o, n)| (n.0, n.1 - o.1)).collect()
}

/// The q-quantile (0..=1) the way PromQL's `histogram_quantile` computes it: linear interpolation
/// inside the bucket holding the rank, the lowest bucket starting at 0, and the +Inf bucket
/// answered with the highest finite bound. None when there were no observations.
pub fn quantile(q: f64, buckets: &Buckets) -> Option<f64> {
    let total = buckets.last().filter(|(le, _)| le.is_infinite())?.1;
    if total <= 0.0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for (i, &(le, count)) in buckets.iter().enumerate() {
        if count >= rank {
            if le.is_infinite() {
                return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
            }
            if i == 0 && le <= 0.0 {
                return Some(le);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(lower + (le - lower) * (rank - below) / in_bucket);
        }
        lower = le;
        below = count;
    }
    None
}

/// Observations at or below `bound` and all observations, the way `quantile` reads a bucket:
/// linear inside the bucket holding the bound (from 0 for the lowest), everything in the +Inf
/// bucket above it. None when there were no observations or no +Inf bucket.
pub fn within(bound: f64, buckets: &Buckets) -> Option<(f64, f64)> {
    let total = buckets.last().filter(|(le, _)| le.is_infinite())?.1;
    if total <= 0.0 || bound.is_nan() {
        return None;
    }
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if le.is_infinite() {
            break;
        }
        if bound <= le {
            let share = if le > lower {
                ((bound - lower) / (le - lower)).clamp(0.0, 1.0)
            } else {
                1.0
            };
            return Some((below + (count - below) * share, total));
        }
        lower = le;
        below = count;
    }
    Some((below, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(v: &[(f64, f64)]) -> Buckets {
        v.to_vec()
    }

    #[test]
    fn interpolates_like_promql() {
        // 100 observations: 50 <= 0.1 s, 40 in (0.1, 0.5], 10 in (0.5, 1].
        let h = b(&[
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ]);
        // rank 95 lies halfway through the (0.5, 1] bucket.
        assert!((quantile(0.95, &h).unwrap() - 0.75).abs() < 1e-12);
        // rank 50 is the top of the first bucket, interpolated from 0.
        assert!((quantile(0.5, &h).unwrap() - 0.1).abs() < 1e-12);
        assert!((quantile(0.25, &h).unwrap() - 0.05).abs() < 1e-12);
    }

    #[test]
    fn within_reads_a_bound_the_way_quantile_reads_a_rank() {
        let h = b(&[
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ]);
        // 0.75 s is halfway through (0.5, 1]: 90 + 5; the inverse of quantile(0.95) = 0.75.
        assert_eq!(within(0.75, &h), Some((95.0, 100.0)));
        assert_eq!(within(0.05, &h), Some((25.0, 100.0)));
        assert_eq!(within(0.5, &h), Some((90.0, 100.0)));
        // Past the highest finite bound: what the +Inf bucket holds beyond it is over.
        let tail = b(&[(1.0, 80.0), (f64::INFINITY, 100.0)]);
        assert_eq!(within(5.0, &tail), Some((80.0, 100.0)));
        assert_eq!(within(1.0, &b(&[(f64::INFINITY, 0.0)])), None);
        assert_eq!(within(1.0, &b(&[(1.0, 3.0)])), None, "no +Inf bucket");
    }

    #[test]
    fn inf_bucket_answers_with_the_highest_finite_bound() {
        let h = b(&[(0.1, 1.0), (1.0, 2.0), (f64::INFINITY, 100.0)]);
        assert_eq!(quantile(0.95, &h), Some(1.0));
    }

    #[test]
    fn empty_or_malformed_histograms_have_no_quantile() {
        assert_eq!(
            quantile(0.95, &b(&[(0.1, 0.0), (f64::INFINITY, 0.0)])),
            None
        );
        assert_eq!(quantile(0.95, &b(&[(0.1, 5.0)])), None, "no +Inf bucket");
        assert_eq!(quantile(0.95, &Vec::new()), None);
        assert_eq!(quantile(1.5, &b(&[(f64::INFINITY, 1.0)])), None);
    }

    #[test]
    fn merge_sums_matching_bounds() {
        let m = merge([
            (1.0, 2.0),
            (f64::INFINITY, 3.0),
            (1.0, 5.0),
            (f64::INFINITY, 6.0),
            (f64::NAN, 9.0),
        ]);
        assert_eq!(m, b(&[(1.0, 7.0), (f64::INFINITY, 9.0)]));
    }

    #[test]
    fn delta_subtracts_and_detects_resets() {
        let old = b(&[(1.0, 10.0), (f64::INFINITY, 12.0)]);
        let new = b(&[(1.0, 15.0), (f64::INFINITY, 20.0)]);
        assert_eq!(delta(&old, &new), b(&[(1.0, 5.0), (f64::INFINITY, 8.0)]));
        let restarted = b(&[(1.0, 1.0), (f64::INFINITY, 1.0)]);
        assert_eq!(delta(&new, &restarted), restarted);
        let relaid = b(&[(2.0, 30.0), (f64::INFINITY, 30.0)]);
        assert_eq!(delta(&new, &relaid), relaid);
    }
}
