//! Small helpers the simulator's and the demo's SVG charts share: axis ceilings, text escaping
//! and peak-keeping downsampling.

/// The smallest of 1, 2, 2.5, 5 x 10^k at or above `x` (an axis maximum); 1 for anything not
/// positive and finite.
pub fn nice_ceiling(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let mag = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&v| v >= x)
        .unwrap_or(10.0 * mag)
}

/// Text made safe for SVG element content.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Reduces a series to at most `n` points, keeping each bucket's maximum (peaks stay visible).
pub fn downsample(xs: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    if xs.len() <= n || n == 0 {
        return xs.to_vec();
    }
    let per = xs.len().div_ceil(n);
    xs.chunks(per)
        .map(|c| (c[0].0, c.iter().map(|p| p.1).fold(f64::MIN, f64::max)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axes() {
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(6.0), 10.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }

    #[test]
    fn escaping_and_peak_keeping_downsampling() {
        assert_eq!(escape("a<b & c>"), "a&lt;b &amp; c&gt;");
        let xs: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (i % 4) as f64)).collect();
        assert_eq!(
            downsample(&xs, 5),
            vec![(0.0, 1.0), (2.0, 3.0), (4.0, 1.0), (6.0, 3.0), (8.0, 1.0)]
        );
        assert_eq!(downsample(&xs, 20), xs);
    }
}
