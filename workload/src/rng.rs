//! SplitMix64: one small, well-known seeded generator for the whole workspace (GEMM inputs and
//! weights here, the load generator, the simulator's traces, the demo's arrivals). Everything only
//! needs to be reproducible from a seed on every platform, not cryptographic, so no RNG crate is
//! pulled in.

/// SplitMix64: 64 bits of state, passes BigCrush, and is trivially reproducible.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [-1, 1) as f32 (GEMM operands).
    pub fn next_signed(&mut self) -> f32 {
        // 24 random mantissa bits map exactly onto f32.
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        2.0 * unit - 1.0
    }

    pub fn fill_signed(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.next_signed()).collect()
    }

    /// Exponential with the given rate (events per second).
    pub fn exponential(&mut self, rate: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -(1.0 - self.uniform()).ln() / rate
    }

    /// Standard normal by Box-Muller (one of the pair is discarded: simplicity over speed).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Log-normal with the given mean and log-space standard deviation.
    pub fn log_normal(&mut self, mean: f64, sigma: f64) -> f64 {
        let mu = mean.ln() - sigma * sigma / 2.0;
        (mu + sigma * self.normal()).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_sane_moments() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SplitMix64::new(8).next_u64(), xs[0]);
        let n = 200_000;
        let mean_u: f64 = (0..n).map(|_| a.uniform()).sum::<f64>() / n as f64;
        assert!((mean_u - 0.5).abs() < 0.01, "{mean_u}");
        let mean_e: f64 = (0..n).map(|_| a.exponential(4.0)).sum::<f64>() / n as f64;
        assert!((mean_e - 0.25).abs() < 0.01, "{mean_e}");
        let mean_l: f64 = (0..n).map(|_| a.log_normal(100.0, 0.8)).sum::<f64>() / n as f64;
        assert!((mean_l - 100.0).abs() < 3.0, "{mean_l}");
    }
}
