//! From range-query answers to per-step numbers: counter increases (resets and absent samples
//! handled), scrape gaps, and classic histograms as per-step bucket counts. Pure.

use std::collections::{BTreeMap, BTreeSet};

/// The evaluation grid: points `start + k * step` for k in 0..=steps. Step k (1-based) covers
/// `(t(k-1), t(k)]`; per-step vectors hold steps 1..=steps at indices 0..steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub start: i64,
    pub step: i64,
    pub steps: usize,
}

impl Grid {
    pub fn t(&self, k: usize) -> i64 {
        self.start + k as i64 * self.step
    }

    pub fn end(&self) -> i64 {
        self.t(self.steps)
    }

    /// The grid point index of `t`, if `t` is one.
    pub fn index(&self, t: i64) -> Option<usize> {
        let d = t - self.start;
        (d >= 0 && d % self.step == 0 && (d / self.step) as usize <= self.steps)
            .then_some((d / self.step) as usize)
    }
}

/// One series of an answer: its labels and its points, sorted by time, one per grid point.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawSeries {
    pub labels: BTreeMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// Merges chunked answers: series with the same labels are joined, points sorted and deduplicated.
pub fn merge(parts: impl IntoIterator<Item = RawSeries>) -> Vec<RawSeries> {
    let mut by: BTreeMap<BTreeMap<String, String>, BTreeMap<i64, f64>> = BTreeMap::new();
    for s in parts {
        by.entry(s.labels).or_default().extend(s.points);
    }
    by.into_iter()
        .map(|(labels, points)| RawSeries {
            labels,
            points: points.into_iter().collect(),
        })
        .collect()
}

/// The value of a series at each grid point (None where it has none).
fn on_grid(points: &[(i64, f64)], grid: &Grid) -> Vec<Option<f64>> {
    let mut v = vec![None; grid.steps + 1];
    for &(t, x) in points {
        if let Some(k) = grid.index(t) {
            if x.is_finite() {
                v[k] = Some(x);
            }
        }
    }
    v
}

/// Per step, how much one counter series grew. A drop is a reset (the counter restarted from
/// zero, so the new value is the growth); a series that first appears after the range's start
/// is a new process whose counter started at zero; growth across grid points where the series
/// had no sample is spread evenly over them.
pub fn counter_steps(points: &[(i64, f64)], grid: &Grid) -> Vec<f64> {
    let v = on_grid(points, grid);
    let mut out = vec![0.0; grid.steps];
    let mut last: Option<(usize, f64)> = None;
    for (k, x) in v.iter().enumerate() {
        let Some(x) = *x else { continue };
        match last {
            None if k == 0 => {}
            None => out[k - 1] += x,
            Some((kl, lv)) => {
                let inc = if x >= lv { x - lv } else { x };
                let n = (k - kl) as f64;
                for o in &mut out[kl..k] {
                    *o += inc / n;
                }
            }
        }
        last = Some((k, x));
    }
    out
}

/// `counter_steps` summed over series.
pub fn counter_total(series: &[RawSeries], grid: &Grid) -> Vec<f64> {
    let mut out = vec![0.0; grid.steps];
    for s in series {
        for (o, x) in out.iter_mut().zip(counter_steps(&s.points, grid)) {
            *o += x;
        }
    }
    out
}

/// Steps in which no series had a fresh sample, from the answer to `timestamp(counter)`: a
/// step is fresh when some series' newest sample at its end lies inside it.
pub fn stale_steps(timestamps: &[RawSeries], grid: &Grid) -> Vec<bool> {
    let mut fresh = vec![false; grid.steps];
    for s in timestamps {
        for &(t, ts) in &s.points {
            if let Some(k) = grid.index(t).filter(|&k| k > 0) {
                if ts > grid.t(k - 1) as f64 + 1e-6 {
                    fresh[k - 1] = true;
                }
            }
        }
    }
    fresh.into_iter().map(|f| !f).collect()
}

/// A run of stale steps, as step indices `first..=last` (0-based per-step indices).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub first: usize,
    pub last: usize,
}

/// The runs of stale steps: those before the first fresh step (`leading`), after the last one
/// (`trailing`) and between (`inner`). None when no step is fresh.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gaps {
    pub leading: Option<Gap>,
    pub inner: Vec<Gap>,
    pub trailing: Option<Gap>,
}

pub fn gaps(stale: &[bool]) -> Option<Gaps> {
    let first = stale.iter().position(|s| !s)?;
    let last = stale.iter().rposition(|s| !s)?;
    let mut g = Gaps {
        leading: (first > 0).then(|| Gap {
            first: 0,
            last: first - 1,
        }),
        trailing: (last + 1 < stale.len()).then(|| Gap {
            first: last + 1,
            last: stale.len() - 1,
        }),
        inner: Vec::new(),
    };
    let mut k = first;
    while k <= last {
        if stale[k] {
            let s = k;
            while stale[k] {
                k += 1;
            }
            g.inner.push(Gap {
                first: s,
                last: k - 1,
            });
        }
        k += 1;
    }
    Some(g)
}

/// Spreads what was counted at the first fresh step after each inner gap evenly over the gap
/// and that step: nothing was scraped in the gap, so its requests show up all at once after it.
pub fn spread_over_gaps(per_step: &mut [f64], gaps: &Gaps) {
    for g in &gaps.inner {
        let end = (g.last + 1).min(per_step.len() - 1);
        let total: f64 = per_step[g.first..=end].iter().sum();
        let n = (end + 1 - g.first) as f64;
        for x in &mut per_step[g.first..=end] {
            *x = total / n;
        }
    }
}

/// A classic histogram per step: bucket upper bounds (the last is +Inf), per step the
/// observations in each bucket (not cumulative), and per step the increase of `_sum` and `_count`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistSteps {
    pub bounds: Vec<f64>,
    pub counts: Vec<Vec<f64>>,
    pub sum: Vec<f64>,
    pub count: Vec<f64>,
}

impl HistSteps {
    /// Per-step mean of the observations (`_sum` / `_count`), None where nothing was observed.
    pub fn mean(&self, k: usize) -> Option<f64> {
        let c = *self.count.get(k)?;
        (c > 0.0).then(|| self.sum[k] / c)
    }

    /// Observations over all steps, per bucket.
    pub fn total(&self) -> Vec<f64> {
        let mut t = vec![0.0; self.bounds.len()];
        for row in &self.counts {
            for (a, b) in t.iter_mut().zip(row) {
                *a += b;
            }
        }
        t
    }
}

fn le_of(s: &RawSeries) -> Option<f64> {
    let le = s.labels.get("le")?;
    match le.as_str() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        v => v.parse::<f64>().ok().filter(|x| x.is_finite()),
    }
}

fn without(labels: &BTreeMap<String, String>, name: &str) -> BTreeMap<String, String> {
    let mut l = labels.clone();
    l.remove(name);
    l
}

fn show(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

fn show_le(le: f64) -> String {
    if le.is_infinite() {
        "+Inf".into()
    } else {
        format!("{le}")
    }
}

/// Builds a histogram's per-step buckets from its `_bucket`, `_sum` and `_count` series. Every
/// replica's series must have the same buckets: where they differ only the bounds all share are
/// kept; a series without `+Inf` takes it from its `_count`. Returns the warnings, each naming
/// the histogram (`name`) and what it lacks.
pub fn histogram_steps(
    name: &str,
    buckets: &[RawSeries],
    sums: &[RawSeries],
    counts: &[RawSeries],
    grid: &Grid,
) -> (HistSteps, Vec<String>) {
    let mut warnings = Vec::new();
    let mut groups: BTreeMap<BTreeMap<String, String>, BTreeMap<u64, &RawSeries>> = BTreeMap::new();
    let mut bad_le = 0;
    for s in buckets {
        match le_of(s) {
            Some(le) => {
                groups
                    .entry(without(&s.labels, "le"))
                    .or_default()
                    .insert(le.to_bits(), s);
            }
            None => bad_le += 1,
        }
    }
    if bad_le > 0 {
        warnings.push(format!(
            "{name}: {bad_le} bucket series without a readable le label were left out"
        ));
    }
    let count_of: BTreeMap<BTreeMap<String, String>, &RawSeries> =
        counts.iter().map(|s| (s.labels.clone(), s)).collect();
    // A group without +Inf borrows its _count (the same number by definition).
    let inf = f64::INFINITY.to_bits();
    let mut named = 0;
    for (labels, g) in groups.iter_mut() {
        if let std::collections::btree_map::Entry::Vacant(slot) = g.entry(inf) {
            if let Some(c) = count_of.get(labels) {
                slot.insert(c);
            }
            named += 1;
            if named <= 3 {
                warnings.push(format!(
                    "{name}: series {} has no le=\"+Inf\" bucket{}",
                    show(labels),
                    if count_of.contains_key(labels) {
                        "; its _count stands in"
                    } else {
                        " and no _count: observations above its top bucket are lost"
                    }
                ));
            }
        }
    }
    let sets: Vec<BTreeSet<u64>> = groups
        .values()
        .map(|g| g.keys().copied().collect())
        .collect();
    let common: BTreeSet<u64> = sets
        .iter()
        .skip(1)
        .fold(sets.first().cloned().unwrap_or_default(), |a, b| {
            a.intersection(b).copied().collect()
        });
    let all: BTreeSet<u64> = sets.iter().flatten().copied().collect();
    if common.len() < all.len() {
        let dropped: Vec<String> = all
            .difference(&common)
            .map(|b| show_le(f64::from_bits(*b)))
            .take(8)
            .collect();
        warnings.push(format!(
            "{name}: the series do not all have the same buckets; le={} missing from some are left out, so those observations count in the next bucket up",
            dropped.join(",")
        ));
    }
    let mut bounds: Vec<f64> = common.iter().map(|b| f64::from_bits(*b)).collect();
    bounds.sort_by(f64::total_cmp);
    // Cumulative counts per step and bound, summed over groups.
    let mut cum = vec![vec![0.0; bounds.len()]; grid.steps];
    for g in groups.values() {
        for (j, b) in bounds.iter().enumerate() {
            if let Some(s) = g.get(&b.to_bits()) {
                for (k, x) in counter_steps(&s.points, grid).into_iter().enumerate() {
                    cum[k][j] += x;
                }
            }
        }
    }
    let mut decreasing = 0;
    let per_step: Vec<Vec<f64>> = cum
        .iter()
        .map(|row| {
            let mut prev = 0.0;
            row.iter()
                .map(|&c| {
                    let n = c - prev;
                    if n < -1e-6 {
                        decreasing += 1;
                    }
                    prev = c.max(prev);
                    n.max(0.0)
                })
                .collect()
        })
        .collect();
    if decreasing > 0 {
        warnings.push(format!(
            "{name}: in {decreasing} step(s) a bucket counted fewer observations than the bucket below it (buckets missing or scraped apart); the difference is taken as zero"
        ));
    }
    let hist = HistSteps {
        bounds,
        counts: per_step,
        sum: counter_total(sums, grid),
        count: counter_total(counts, grid),
    };
    (hist, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(steps: usize) -> Grid {
        Grid {
            start: 1000,
            step: 60,
            steps,
        }
    }

    fn series(labels: &[(&str, &str)], values: &[Option<f64>]) -> RawSeries {
        RawSeries {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            points: values
                .iter()
                .enumerate()
                .filter_map(|(k, v)| v.map(|v| (1000 + 60 * k as i64, v)))
                .collect(),
        }
    }

    #[test]
    fn counters_handle_resets_new_series_and_absent_samples() {
        let g = grid(5);
        // Steady growth, then a reset to 0 and growth from there.
        let s = series(
            &[],
            &[
                Some(10.0),
                Some(15.0),
                Some(20.0),
                Some(3.0),
                Some(8.0),
                Some(9.0),
            ],
        );
        assert_eq!(counter_steps(&s.points, &g), vec![5.0, 5.0, 3.0, 5.0, 1.0]);
        // A series appearing mid-range started at zero; a hole is spread over its steps.
        let s = series(&[], &[None, None, Some(4.0), None, None, Some(10.0)]);
        assert_eq!(counter_steps(&s.points, &g), vec![0.0, 4.0, 2.0, 2.0, 2.0]);
        let a = series(
            &[("pod", "a")],
            &[
                Some(0.0),
                Some(1.0),
                Some(2.0),
                Some(3.0),
                Some(4.0),
                Some(5.0),
            ],
        );
        assert_eq!(counter_total(&[a.clone(), a], &g), vec![2.0; 5]);
        let merged = merge([
            series(
                &[("pod", "a")],
                &[Some(0.0), Some(1.0), None, None, None, None],
            ),
            series(
                &[("pod", "a")],
                &[None, Some(1.0), Some(2.0), None, None, None],
            ),
        ]);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].points.len(), 3);
    }

    #[test]
    fn stale_steps_make_gaps_and_their_counts_are_spread() {
        let g = grid(6);
        // Sample timestamps: fresh, fresh, stale (same sample), stale, fresh, none, none.
        let ts = series(
            &[],
            &[
                Some(1000.0),
                Some(1050.0),
                Some(1110.0),
                Some(1110.0),
                Some(1110.0),
                Some(1290.0),
                None,
            ],
        );
        let stale = stale_steps(&[ts], &g);
        assert_eq!(stale, vec![false, false, true, true, false, true]);
        let gaps = gaps(&stale).unwrap();
        assert_eq!(gaps.leading, None);
        assert_eq!(gaps.inner, vec![Gap { first: 2, last: 3 }]);
        assert_eq!(gaps.trailing, Some(Gap { first: 5, last: 5 }));
        let mut counts = vec![10.0, 10.0, 0.0, 0.0, 30.0, 0.0];
        spread_over_gaps(&mut counts, &gaps);
        assert_eq!(counts, vec![10.0, 10.0, 10.0, 10.0, 10.0, 0.0]);
        assert_eq!(super::gaps(&[true, true]), None);
    }

    #[test]
    fn histograms_become_per_step_buckets_and_name_what_is_missing() {
        let g = grid(2);
        let b =
            |pod: &str, le: &str, v: [f64; 3]| series(&[("pod", pod), ("le", le)], &v.map(Some));
        let buckets = vec![
            b("a", "1.0", [0.0, 2.0, 3.0]),
            b("a", "5.0", [0.0, 5.0, 6.0]),
            b("a", "+Inf", [0.0, 6.0, 8.0]),
            // Pod b lacks le=5 and +Inf.
            b("b", "1.0", [0.0, 1.0, 1.0]),
        ];
        let counts = vec![
            series(&[("pod", "a")], &[Some(0.0), Some(6.0), Some(8.0)]),
            series(&[("pod", "b")], &[Some(0.0), Some(4.0), Some(4.0)]),
        ];
        let sums = vec![series(
            &[("pod", "a")],
            &[Some(0.0), Some(30.0), Some(40.0)],
        )];
        let (h, warnings) = histogram_steps("x", &buckets, &sums, &counts, &g);
        assert_eq!(h.bounds, vec![1.0, f64::INFINITY]);
        // Step 1: pod a 2 in le=1, 4 above; pod b 1 in le=1, 3 above (its _count as +Inf).
        assert_eq!(h.counts, vec![vec![3.0, 7.0], vec![1.0, 1.0]]);
        assert_eq!(h.count, vec![10.0, 2.0]);
        assert_eq!(h.mean(0), Some(3.0));
        assert_eq!(h.total(), vec![4.0, 8.0]);
        let all = warnings.join("\n");
        assert!(
            all.contains("no le=\"+Inf\" bucket; its _count stands in"),
            "{all}"
        );
        assert!(all.contains("le=5"), "{all}");
    }
}
