//! Bursts beyond the window: the gap after which a recurring burst comes back, what a burst
//! seen once holds until it recurs, and the period bursts that keep time come back at.

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
/// at `threshold` (`burst_threshold`) or more, separated by at least one quieter sample. None
/// unless a gap ended in a burst, or when every gap is too long to hold through (it would not
/// fit in `MAX_WINDOW_S` with one horizon).
pub fn recurrence_s(
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

/// The demand at or above which a sample of `history` is part of a burst: well above the
/// typical level (`BURST_FACTOR` times the median: not noise), and a burst the window would
/// hold capacity for (`PEAK_SHARE` of the hour's peak: lesser blips in a quiet stretch do not
/// split it). None for an empty or idle hour. Read once per sample, for `recurrence_s` and
/// `cycle` alike.
pub fn burst_threshold(history: &VecDeque<(f64, f64)>) -> Option<f64> {
    let median = median(history.iter().map(|&(_, v)| v).collect())?;
    // The hour's peak as its 90th percentile: one sample inflated by a backlog's drain term
    // must not hide every later burst.
    let mut sorted: Vec<f64> = history.iter().map(|&(_, v)| v).collect();
    sorted.sort_by(f64::total_cmp);
    let peak = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
    let threshold = (BURST_FACTOR * median).max(PEAK_SHARE * peak);
    (threshold > 0.0).then_some(threshold)
}

/// Bursts that keep time: the period their starts and ends repeat at, and how early or late
/// the next start may come.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cycle {
    pub period_s: f64,
    /// How early or late a start may come: the tolerance the intervals were accepted with (not
    /// the largest distance seen: with three intervals seen, the next falls outside their
    /// range half the time), plus one sampling interval (a start is seen only at the first
    /// sample after it).
    pub margin_s: f64,
}

/// The period of the bursts in `history` (the last hour's arrival rates, oldest first, one per
/// `interval_s`; a burst sample is one at `threshold` or more, `burst_threshold`) at time
/// `now`, when they keep one. A start is a burst sample after a quiet one,
/// an end a quiet sample after a burst one (the first sample is neither: what came before it is
/// unknown). The bursts keep a period when at least three intervals were seen (start to start
/// or end to end, at least one of them start to start: two could agree by chance, where a
/// noisy load crosses the threshold now and then), every one of them is within
/// `2 x interval_s` of their median (a start is seen up to one interval late, so two starts on
/// time differ by at most that much either way; anything wider is traffic that does not keep
/// time), and the next start is not overdue (`now` is within one period and that tolerance of
/// the last start). Irregular bursts, a single one or a smooth load keep none.
pub fn cycle(
    history: &VecDeque<(f64, f64)>,
    threshold: f64,
    interval_s: f64,
    now: f64,
) -> Option<Cycle> {
    let (mut starts, mut ends) = (Vec::new(), Vec::new());
    let mut was_high: Option<bool> = None;
    for &(t, v) in history {
        let high = v >= threshold;
        match (was_high, high) {
            (Some(false), true) => starts.push(t),
            (Some(true), false) => ends.push(t),
            _ => {}
        }
        was_high = Some(high);
    }
    let intervals: Vec<f64> = [&starts, &ends]
        .iter()
        .flat_map(|ts| ts.windows(2).map(|w| w[1] - w[0]))
        .collect();
    if starts.len() < 2 || intervals.len() < 3 {
        return None;
    }
    let period_s = median(intervals.clone())?;
    let tolerance = 2.0 * interval_s;
    let jitter = intervals
        .iter()
        .map(|d| (d - period_s).abs())
        .fold(0.0, f64::max);
    let last_start = *starts.last()?;
    if jitter > tolerance || now - last_start > period_s + tolerance {
        return None;
    }
    Some(Cycle {
        period_s,
        margin_s: tolerance + interval_s,
    })
}

/// The samples of `history` at the phase of the cycle the next `ahead_s` seconds will be at,
/// in every earlier cycle the history holds: those within `margin_s` before and `ahead_s` plus
/// `margin_s` after `now` less a whole number of periods. What the bursts brought at that phase
/// before is the forecast of what they bring next.
pub fn same_phase(
    history: &VecDeque<(f64, f64)>,
    cycle: Cycle,
    now: f64,
    ahead_s: f64,
) -> Vec<f64> {
    let Some(&(oldest, _)) = history.front() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut back = now - cycle.period_s;
    while back + ahead_s + cycle.margin_s >= oldest && cycle.period_s > 0.0 {
        let (from, to) = (back - cycle.margin_s, back + ahead_s + cycle.margin_s);
        out.extend(
            history
                .iter()
                .filter(|&&(t, _)| t >= from && t <= to)
                .map(|&(_, v)| v),
        );
        back -= cycle.period_s;
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One hour-long history of 15 s samples to `until` (exclusive): 40 requests per second for
    /// 300 s from each start in `starts`, 2 otherwise.
    fn on_off(starts: &[f64], until: f64) -> VecDeque<(f64, f64)> {
        (0..)
            .map(|i| i as f64 * 15.0)
            .take_while(|&t| t < until)
            .map(|t| {
                let on = starts.iter().any(|&s| t >= s && t < s + 300.0);
                (t, if on { 40.0 } else { 2.0 })
            })
            .collect()
    }

    /// `cycle` at `now`, with the threshold the planner reads from the same history.
    fn cycle_at(history: &VecDeque<(f64, f64)>, now: f64) -> Option<Cycle> {
        cycle(history, burst_threshold(history)?, 15.0, now)
    }

    #[test]
    fn bursts_keep_a_period_only_when_every_start_and_end_keeps_it() {
        let every_900 = [0.0, 900.0, 1800.0, 2700.0];
        // One start seen (the first sample's burst has no quiet sample before it): no period.
        assert_eq!(cycle_at(&on_off(&every_900, 1500.0), 1500.0), None);
        // Two starts and two ends, two intervals: not yet (two can agree by chance) ...
        assert_eq!(cycle_at(&on_off(&every_900, 1830.0), 1830.0), None);
        // ... and three, once the third burst ended: a period, with the tolerance and one
        // interval as its margin.
        let c = cycle_at(&on_off(&every_900, 2115.0), 2115.0).expect("kept");
        assert_eq!(
            c,
            Cycle {
                period_s: 900.0,
                margin_s: 45.0
            }
        );
        // Still kept just before the next start is due, not once it is overdue.
        assert!(cycle_at(&on_off(&every_900[..3], 2715.0), 2715.0).is_some());
        assert_eq!(cycle_at(&on_off(&every_900[..3], 2745.0), 2745.0), None);
        // Starts a sample late keep it (a start is seen at the first sample after it) ...
        let late = cycle_at(&on_off(&[0.0, 900.0, 1815.0], 2200.0), 2200.0).expect("kept");
        assert_eq!(late.period_s, 915.0);
        // ... starts a minute off do not, nor does a single irregular gap among regular ones.
        assert_eq!(
            cycle_at(&on_off(&[0.0, 900.0, 1860.0], 2200.0), 2200.0),
            None
        );
        let uneven = [0.0, 900.0, 1800.0, 2400.0];
        assert_eq!(cycle_at(&on_off(&uneven, 2500.0), 2500.0), None);
        // A steady load has no bursts at all.
        let steady: VecDeque<(f64, f64)> = (0..240).map(|i| (i as f64 * 15.0, 10.0)).collect();
        assert_eq!(cycle_at(&steady, 3600.0), None);
    }

    #[test]
    fn the_same_phase_of_earlier_cycles_is_the_forecast() {
        let history = on_off(&[0.0, 900.0, 1800.0], 2700.0);
        let c = Cycle {
            period_s: 900.0,
            margin_s: 15.0,
        };
        // 180 s before the next start, the next 75 s were quiet in both earlier cycles.
        let quiet = same_phase(&history, c, 2520.0, 75.0);
        assert_eq!(quiet.len(), 2 * 8);
        assert!(quiet.iter().all(|&v| v == 2.0), "{quiet:?}");
        // 75 s before it, the earlier cycles' starts fall in the forecast.
        let soon = same_phase(&history, c, 2625.0, 75.0);
        assert!(soon.iter().filter(|&&v| v == 40.0).count() >= 2, "{soon:?}");
        // No earlier cycle in the history, no forecast.
        assert!(same_phase(&on_off(&[0.0], 600.0), c, 600.0, 75.0).is_empty());
    }
}
