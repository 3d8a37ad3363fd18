//! `keda-gpu-demo` as users run it: the binary starts the scaler, plays KEDA + HPA over
//! gRPC and runs real replica processes under real load. The assertions read the scaler's answers
//! and the replicas' own metrics from the summary JSON, and /proc for leftover processes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_keda-gpu-demo");

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive(pid: u64) -> bool {
    // A zombie is gone for our purposes only once reaped; /proc/<pid> disappears then.
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Children of `parent` according to /proc (the demo's replica processes).
fn children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Runs a 45 s demo (idle, burst, idle at 30x time) with `extra` flags; returns its stdout, its
/// summary JSON and the output folder (kept alive for the caller).
fn run_short_demo(extra: &[&str]) -> (String, serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--plain"])
        .args(extra)
        .args([
            "--duration",
            "45",
            "--phases",
            "idle:5:1,burst:15:30,idle:25:1",
            "--time-scale",
            "30",
            "--cold-start",
            "1",
            "--max-replicas",
            "5",
            "--out",
        ])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("demo-composite.json")).unwrap(),
    )
    .unwrap();
    (stdout, json, dir)
}

#[test]
fn a_short_demo_scales_up_under_the_burst_and_back_down_and_leaves_no_process() {
    let (stdout, json, dir) = run_short_demo(&[]);
    assert!(stdout.contains("| pods min / max / mean |"), "{stdout}");
    assert!(dir.path().join("demo-composite.svg").exists());
    let timeline = json["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 40, "one sample a second");
    let during = |phase_start: f64, phase_end: f64| {
        timeline
            .iter()
            .filter(move |s| (phase_start..phase_end).contains(&s["t"].as_f64().unwrap()))
    };
    let f = |s: &serde_json::Value, k: &str| s[k].as_f64();

    // The scaler's GetMetrics answers: more than one replica asked for under the burst...
    let burst_answer = during(5.0, 20.0)
        .filter_map(|s| f(s, "scaler_desired"))
        .fold(0.0, f64::max);
    assert!(
        burst_answer >= 2.0,
        "scaler asked for {burst_answer} at most during the burst"
    );
    // ...and at most half of that by the end of the quiet phase.
    let end_answer = during(40.0, 46.0)
        .filter_map(|s| f(s, "scaler_desired"))
        .fold(f64::MAX, f64::min);
    assert!(
        end_answer <= burst_answer / 2.0,
        "scaler still asks for {end_answer} at the end (burst {burst_answer})"
    );
    // Replicas followed: up during the burst, down after it.
    let replicas = |s: &serde_json::Value| s["replicas"].as_u64().unwrap();
    let peak = during(5.0, 25.0).map(replicas).max().unwrap();
    let last = replicas(timeline.last().unwrap());
    assert!(peak >= 2, "peak {peak} replicas");
    assert!(
        last < peak,
        "still {last} replicas at the end (peak {peak})"
    );
    let events = json["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["to"].as_u64() > e["from"].as_u64()));
    assert!(events.iter().any(|e| e["to"].as_u64() < e["from"].as_u64()));

    // The replicas' own metrics: the load was served by more than one process, and they were
    // busy during the burst.
    let served = json["served_by_replica"].as_object().unwrap();
    let serving = served.values().filter(|v| v.as_f64() > Some(0.0)).count();
    assert!(serving >= 2, "served by {serving} replicas: {served:?}");
    let busiest = during(5.0, 20.0)
        .filter_map(|s| f(s, "util_max"))
        .fold(0.0, f64::max);
    assert!(
        busiest > 50.0,
        "replicas at most {busiest}% busy during the burst"
    );
    assert!(json["ok"].as_u64().unwrap() > 100);

    // Drains finished within their timeout: nothing was cut, the newest replica went first.
    assert_eq!(json["requests_cut"].as_f64(), Some(0.0));
    assert_eq!(json["pod_deletion_cost"], false);
    assert!(
        stdout.contains("| requests cut on scale-down | 0 (newest removed first) |"),
        "{stdout}"
    );

    // No child process left.
    assert_eq!(json["children_left"], 0);
    let pids: Vec<u64> = json["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(pids.len() as u64 >= peak);
    let left: Vec<u64> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "replica processes still alive: {left:?}");
}

#[test]
fn with_pod_deletion_cost_the_least_busy_replica_goes_and_the_summary_says_so() {
    let (stdout, json, _dir) = run_short_demo(&["--pod-deletion-cost"]);
    let events = json["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["to"].as_u64() < e["from"].as_u64()),
        "{stdout}"
    );
    assert_eq!(json["pod_deletion_cost"], true);
    assert!(
        stdout.contains("| requests cut on scale-down | 0 (least busy removed first) |"),
        "{stdout}"
    );
    assert_eq!(json["children_left"], 0);
}

#[test]
fn with_prometheus_the_scaler_reads_the_replicas_through_a_real_prometheus() {
    // CI installs Debian's prometheus package; without it this test fails rather than skips.
    let path = std::env::var_os("PATH").unwrap_or_default();
    assert!(
        std::env::split_paths(&path).any(|d| d.join("prometheus").is_file()),
        "the `prometheus` binary is not on PATH; this test runs the demo with a real Prometheus \
         (Debian/Ubuntu: apt-get install -y prometheus)"
    );
    let (stdout, json, _dir) = run_short_demo(&["--prometheus"]);
    assert!(
        stdout.contains("| scaler source | prometheus ("),
        "{stdout}"
    );
    let timeline = json["timeline"].as_array().unwrap();
    let during = |a: f64, b: f64| {
        timeline
            .iter()
            .filter(move |s| (a..b).contains(&s["t"].as_f64().unwrap()))
    };

    // Every decision the scaler made came from the prometheus source, and Prometheus served
    // the scaler's queries.
    assert_eq!(json["source"], "prometheus");
    let sources: Vec<&str> = timeline
        .iter()
        .filter_map(|s| s["source"].as_str())
        .collect();
    assert!(
        sources.len() >= 30,
        "decisions in {} samples",
        sources.len()
    );
    assert!(sources.iter().all(|s| *s == "prometheus"), "{sources:?}");
    let queries = json["prometheus_queries"].as_f64().unwrap();
    assert!(queries >= 20.0, "prometheus served {queries} queries");
    // The pod selector is stable: the trigger was built once.
    assert_eq!(json["trigger_rebuilds"], 1);

    // Up under the burst, down after it.
    let burst_answer = during(5.0, 22.0)
        .filter_map(|s| s["scaler_desired"].as_f64())
        .fold(0.0, f64::max);
    assert!(
        burst_answer >= 2.0,
        "scaler asked for {burst_answer} at most"
    );
    let replicas = |s: &serde_json::Value| s["replicas"].as_u64().unwrap();
    let peak = during(5.0, 28.0).map(replicas).max().unwrap();
    let last = replicas(timeline.last().unwrap());
    assert!(peak >= 2, "peak {peak} replicas");
    assert!(
        last < peak,
        "still {last} replicas at the end (peak {peak})"
    );
    let events = json["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["to"].as_u64() > e["from"].as_u64()));
    assert!(events.iter().any(|e| e["to"].as_u64() < e["from"].as_u64()));

    // No child process left: the replicas and Prometheus.
    assert_eq!(json["children_left"], 0);
    let prometheus = json["prometheus_pid"].as_u64().unwrap();
    let mut pids: Vec<u64> = json["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert!(pids.len() as u64 >= peak);
    pids.push(prometheus);
    let left: Vec<u64> = pids.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes still alive: {left:?}");
}

#[test]
fn ctrl_c_stops_the_demo_and_every_replica() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .args(["--plain", "--duration", "120", "--cold-start", "0", "--out"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let replicas = loop {
        let c = children(pid);
        if !c.is_empty() {
            // Give the replica a moment to serve, so the interrupt lands mid-run.
            std::thread::sleep(Duration::from_secs(2));
            break children(pid);
        }
        assert!(Instant::now() < deadline, "no replica process started");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!replicas.is_empty());
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "demo did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "an interrupted demo reports it");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<u32> = replicas
        .into_iter()
        .filter(|p| alive(u64::from(*p)))
        .collect();
    assert!(left.is_empty(), "replicas left after Ctrl-C: {left:?}");
}

#[test]
fn policies_that_cannot_run_live_are_refused_with_the_accepted_ones() {
    let out = Command::new(BIN)
        .args(["--policy", "oracle"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("composite and cpu-hpa"), "{err}");
    let out = Command::new(BIN)
        .args(["--min-replicas", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--min-replicas"));
}

/// The fidelity check on the default plan: both policies live (about 6.5 minutes), then
/// replayed through the simulator; the command fails when the demo-host model misses either run
/// by more than 15 % of replica-seconds or 5 points of SLO attainment. Too slow and too
/// dependent on the machine for the default suite: `cargo nextest run -p keda-gpu-demo
/// --run-ignored only fidelity`.
#[test]
#[ignore]
fn fidelity_the_simulator_predicts_the_default_live_runs_within_the_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--compare", "--plain", "--fidelity", "--out"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| cpu-hpa | demo-host |"), "{stdout}");
}
