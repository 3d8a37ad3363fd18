//! Bursts beyond the window: the gap after which a recurring burst comes back, and what a burst
//! seen once holds until it recurs.

use std::collections::VecDeque;

use super::{median, MAX_WINDOW_S};

/// A sample is part of a burst when its demand is at least this many times the hour's median.
/// Not noise: a Poisson arrival count over a 15 s sample at 1 request/s or more has a coefficient
/// of variation of at most `1 / sqrt(15) = 0.26`, so twice the median is more than three
/// standard deviations above it; and not a slow cycle, whose gaps are longer than the longest
/// window and so never count (`recurrence_s`).
pub const BURST_FACTOR: f64 = 2.0;

/// ... and at least this share of the hour's peak demand: a stretch between bursts is quiet when
/// it needs less than half the capacity the bursts did, which is when releasing capacity saves
/// anything worth a cold start.
pub const PEAK_SHARE: f64 = 0.5;

/// The longest quiet gap, seconds, between two bursts among `history` (oldest first): samples
/// at `BURST_FACTOR` times the median demand or more, separated by at least one quieter
/// sample. None unless a gap ended in a burst, or when every gap is too long to hold through
/// (it would not fit in `MAX_WINDOW_S` with one horizon).
pub fn recurrence_s(
    history: &VecDeque<(f64, f64)>,
    interval_s: f64,
    horizon_s: f64,
) -> Option<f64> {
    let median = median(history.iter().map(|&(_, v)| v).collect())?;
    // The hour's peak as its 90th percentile: one sample inflated by a backlog's drain term
    // must not hide every later burst.
    let mut sorted: Vec<f64> = history.iter().map(|&(_, v)| v).collect();
    sorted.sort_by(f64::total_cmp);
    let peak = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
    // Well above the typical level (not noise), and a burst the window would hold capacity for
    // (at least half the hour's peak: lesser blips in a quiet stretch do not split it).
    let threshold = (BURST_FACTOR * median).max(PEAK_SHARE * peak);
    if threshold <= 0.0 {
        return None;
    }
    gaps(history, threshold, interval_s, horizon_s)
}

fn gaps(
    history: &VecDeque<(f64, f64)>,
    threshold: f64,
    interval_s: f64,
    horizon_s: f64,
) -> Option<f64> {
    let mut last_high: Option<f64> = None;
    let mut longest: Option<f64> = None;
    for &(t, v) in history {
        if v < threshold {
            continue;
        }
        if let Some(prev) = last_high {
            let gap = t - prev;
            // Consecutive burst samples are one burst, not a gap.
            if gap > 1.5 * interval_s && gap + horizon_s <= MAX_WINDOW_S {
                longest = Some(longest.map_or(gap, |l: f64| l.max(gap)));
            }
        }
        last_high = Some(t);
    }
    longest
}

/// The least arrival rate to hold so that any stretch of one horizon in `history` (the last
/// hour's arrival rates, oldest first, one per `interval_s`), if it came again, would miss no
/// more requests than the budget: `share` of the hour's requests.
///
/// Capacity asked for when a burst starts is ready one horizon later, so a burst met with less
/// than it needs misses what it brings beyond the capacity held for that horizon. A burst seen
/// once may come again before the window has seen it recur (`recurrence_s` needs two), and one
/// whose excess alone is more than the hour's budget would break the promise on its own: enough
/// is held that its excess fits. The budget grows with the requests the hour has served, so the
/// floor falls as the evidence that the burst was rare grows, and it goes when the burst leaves
/// the hour. A stretch whose excess over nothing fits in the budget (smooth load, small bursts)
/// holds nothing.
pub fn burst_floor(history: &[f64], share: f64, horizon_s: f64, interval_s: f64) -> f64 {
    if history.is_empty() || interval_s.is_nan() || interval_s <= 0.0 {
        return 0.0;
    }
    let budget = share.max(0.0) * history.iter().sum::<f64>() * interval_s;
    let span = ((horizon_s / interval_s).ceil() as usize).clamp(1, history.len());
    // The requests the worst stretch brings beyond `floor`: one pass with a sliding sum.
    let excess = |floor: f64| {
        let over = |d: f64| (d - floor).max(0.0) * interval_s;
        let mut sum: f64 = history[..span].iter().map(|&d| over(d)).sum();
        let mut worst = sum;
        for i in span..history.len() {
            sum += over(history[i]) - over(history[i - span]);
            worst = worst.max(sum);
        }
        worst
    };
    if excess(0.0) <= budget {
        return 0.0;
    }
    // Bisection on a decreasing function, to a thousandth of the highest rate.
    let (mut lo, mut hi) = (0.0, history.iter().copied().fold(0.0, f64::max));
    while hi - lo > 1e-3 * hi.max(1e-9) {
        let mid = 0.5 * (lo + hi);
        if excess(mid) > budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}
