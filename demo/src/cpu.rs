//! CPU use of a replica process from `/proc/<pid>/stat` (utime + stime), what metrics-server
//! reports to a CPU HPA; percent of one core over a window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub struct CpuMeter {
    pid: u32,
    /// (when, CPU seconds used so far), oldest first, at most a minute.
    samples: VecDeque<(Instant, f64)>,
}

impl CpuMeter {
    pub fn new(pid: u32) -> Self {
        let mut m = CpuMeter {
            pid,
            samples: VecDeque::new(),
        };
        m.sample();
        m
    }

    pub fn sample(&mut self) {
        if let Some(s) = cpu_seconds(self.pid) {
            let now = Instant::now();
            self.samples.push_back((now, s));
            while self
                .samples
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(60))
            {
                self.samples.pop_front();
            }
        }
    }

    /// Percent of one core over (about) the last `window`; None until two samples exist.
    pub fn percent(&self, window: Duration) -> Option<f64> {
        let &(t1, s1) = self.samples.back()?;
        let &(t0, s0) = self
            .samples
            .iter()
            .find(|(t, _)| t1.duration_since(*t) <= window)
            .filter(|(t, _)| *t < t1)
            .or_else(|| self.samples.iter().rev().nth(1))?;
        let dt = t1.duration_since(t0).as_secs_f64();
        (dt > 0.0).then(|| 100.0 * (s1 - s0).max(0.0) / dt)
    }
}

/// utime + stime of a process, seconds; None when it is gone or /proc is unavailable.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|ticks| ticks as f64 / clock_ticks())
}

/// Ticks of utime + stime from a `/proc/<pid>/stat` line (fields 14 and 15; the command name in
/// field 2 may contain spaces and parentheses, so counting starts after the last ')').
fn parse_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field 14 is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            return t as f64;
        }
    }
    100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat(line), Some(300));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_busy_thread_shows_up_in_this_process_cpu() {
        let pid = std::process::id();
        let mut m = CpuMeter::new(pid);
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        m.sample();
        let pct = m.percent(Duration::from_secs(10)).expect("two samples");
        // One thread spinning for the whole window reads close to one core on an idle machine;
        // on a loaded shared one it may get a fraction of a core, but never nothing.
        assert!(pct > 5.0, "{pct}");
    }
}
