//! What the user watches: on a terminal a panel redrawn once a second (replicas, each signal's
//! demand, composite, activation, p95 latency, load); otherwise one log line per second. Scaling
//! and replica events are printed as they happen.

use std::io::{IsTerminal, Write};

use super::replicas::{Pool, PoolEvent, ReplicaPhase};
use super::summary::{Sample, ScaleEvent};
use keda_gpu_sim::policy::PolicyName;

pub struct View {
    live: bool,
    policy: PolicyName,
    duration: f64,
    /// Recent events, newest last (shown under the live panel).
    recent: Vec<String>,
}

impl View {
    pub fn new(plain: bool, policy: PolicyName, duration: f64) -> View {
        View {
            live: !plain && std::io::stdout().is_terminal(),
            policy,
            duration,
            recent: Vec::new(),
        }
    }

    fn note(&mut self, line: String) {
        if self.live {
            self.recent.push(line);
            let n = self.recent.len();
            if n > 6 {
                self.recent.drain(..n - 6);
            }
        } else {
            println!("{line}");
        }
    }

    pub fn event(&mut self, t: f64, e: &PoolEvent) {
        self.note(format!("[{t:6.1}s] {e}"));
    }

    pub fn scaled(&mut self, e: &ScaleEvent) {
        let by = match e.by {
            super::control::Writer::Hpa => "HPA",
            super::control::Writer::Keda => "KEDA",
            super::control::Writer::KedaPush => "KEDA (pushed activation)",
        };
        self.note(format!(
            "[{:6.1}s] {by} scaled {} -> {} replicas",
            e.t, e.from, e.to
        ));
    }

    pub fn render(&mut self, s: &Sample, pool: &Pool) {
        let opt = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |x| format!("{x:.d$}"));
        let signals: Vec<String> = s
            .signals
            .iter()
            .map(|g| format!("{}={}", g.name, opt(g.demand, 2)))
            .collect();
        let active = match s.active {
            Some(true) => "active",
            Some(false) => "inactive",
            None => "-",
        };
        if !self.live {
            println!(
                "t={:5.1}s phase={} load={:.0}/s replicas={} ready={} scaler={} composite={} [{}] {} p95={}ms ok={:.1}/s util={}% cpu={}%",
                s.t,
                s.phase,
                s.rate,
                s.replicas,
                s.ready,
                opt(s.scaler_desired, 2),
                opt(s.composite_smoothed, 2),
                signals.join(" "),
                active,
                opt(s.p95_ms, 0),
                s.ok_per_s,
                opt(s.util_mean, 0),
                opt(s.cpu_mean, 0),
            );
            return;
        }
        let mut out = String::new();
        out.push_str("\x1b[H\x1b[2J");
        out.push_str(&format!(
            "keda-gpu-demo  policy {}  t {:.0}/{:.0} s  phase {}  offered {:.0} req/s   (Ctrl-C stops and cleans up)\n\n",
            self.policy, s.t, self.duration, s.phase, s.rate
        ));
        let bars: String = pool
            .replicas
            .iter()
            .map(|r| match r.phase {
                ReplicaPhase::Pending => '.',
                ReplicaPhase::Starting => 'o',
                ReplicaPhase::Ready => '#',
                ReplicaPhase::Draining => 'x',
            })
            .collect();
        out.push_str(&format!(
            "replicas   {:<12} {} live, {} ready   (# ready, o starting, . cold start, x draining)\n",
            bars, s.replicas, s.ready
        ));
        out.push_str(&format!(
            "scaler     desired {}  composite raw {} smoothed {}  limiting {}  {}\n",
            opt(s.scaler_desired, 2),
            opt(s.composite_raw, 2),
            opt(s.composite_smoothed, 2),
            s.limiting.as_deref().unwrap_or("-"),
            active
        ));
        for g in &s.signals {
            out.push_str(&format!(
                "  {:<10} reading {:>8}  demand {:>6} replicas\n",
                g.name,
                opt(g.value, 3),
                opt(g.demand, 2)
            ));
        }
        out.push_str(&format!(
            "HPA        recommended {}\n",
            s.hpa_recommended.map_or("-".into(), |v| v.to_string())
        ));
        out.push_str(&format!(
            "traffic    {:.1} ok/s of {:.1} done/s  p95 {} ms  open {}  queue {:.0}  in flight {:.0}\n",
            s.ok_per_s,
            s.completed_per_s,
            opt(s.p95_ms, 0),
            s.outstanding,
            s.queue,
            s.inflight
        ));
        out.push_str(&format!(
            "replicas'  accelerator util mean {}% max {}%   CPU mean {}%\n\n",
            opt(s.util_mean, 0),
            opt(s.util_max, 0),
            opt(s.cpu_mean, 0)
        ));
        for line in &self.recent {
            out.push_str(line);
            out.push('\n');
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}
