use super::*;
use crate::egress::EgressPolicy;
use crate::score::{Context, Fleet};
use crate::sources::{SignalReading, Source};
use futures_util::future::BoxFuture;

/// What the engine asked of a source in one `sample` call.
#[derive(Clone, Debug)]
struct Call {
    /// The specs' metric names (the tests name each object's metric after it), sorted.
    objects: Vec<String>,
    /// Newest scored source time per object, by metric name.
    last: HashMap<String, Option<f64>>,
}

type Script = dyn Fn(&ScalerSpec, u64) -> Readings + Send + Sync;

/// A source that answers from a script instead of the network: `script(spec, round)` gives
/// each spec's readings, `round` counting this source's calls from 1. It records what the
/// engine asked, so tests check the batching as well as the answers.
struct Scripted {
    script: Box<Script>,
    deadline: Duration,
    /// Time each call takes, like a slow endpoint.
    delay: Duration,
    calls: Mutex<Vec<Call>>,
    retained: Mutex<Vec<Vec<String>>>,
}

impl Scripted {
    fn new(script: impl Fn(&ScalerSpec, u64) -> Readings + Send + Sync + 'static) -> Arc<Self> {
        Scripted::slow(Duration::ZERO, Duration::from_secs(1), script)
    }

    fn slow(
        delay: Duration,
        deadline: Duration,
        script: impl Fn(&ScalerSpec, u64) -> Readings + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Scripted {
            script: Box::new(script),
            deadline,
            delay,
            calls: Mutex::new(Vec::new()),
            retained: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn retained(&self) -> Vec<Vec<String>> {
        self.retained.lock().unwrap().clone()
    }
}

fn names(specs: &[Arc<ScalerSpec>]) -> Vec<String> {
    let mut v: Vec<String> = specs.iter().map(|s| s.metric_name.clone()).collect();
    v.sort();
    v
}

impl Source for Scripted {
    fn sample<'a>(
        &'a self,
        requests: &'a [SampleRequest],
        _t: f64,
    ) -> BoxFuture<'a, Vec<Readings>> {
        Box::pin(async move {
            let round = {
                let mut calls = self.calls.lock().unwrap();
                let mut objects: Vec<String> = requests
                    .iter()
                    .map(|r| r.spec.metric_name.clone())
                    .collect();
                objects.sort();
                calls.push(Call {
                    objects,
                    last: requests
                        .iter()
                        .map(|r| (r.spec.metric_name.clone(), r.last))
                        .collect(),
                });
                calls.len() as u64
            };
            tokio::time::sleep(self.delay).await;
            requests
                .iter()
                .map(|r| (self.script)(&r.spec, round))
                .collect()
        })
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn retain(&self, specs: &[Arc<ScalerSpec>]) {
        self.retained.lock().unwrap().push(names(specs));
    }
}

fn test_settings() -> EngineSettings {
    EngineSettings::default()
}

/// No sources yet; the tests' endpoints are on loopback, which the default egress policy
/// refuses.
fn test_sources() -> Sources {
    Sources::default().with_egress(EgressPolicy::loopback())
}

/// An engine whose scrape-kind objects read `scrape`, and nothing else.
fn engine_on(settings: EngineSettings, scrape: &Arc<Scripted>) -> Arc<Engine> {
    Engine::with_sources(
        settings,
        test_sources().with(SourceKind::Scrape, scrape.clone()),
    )
}

/// A scrape-kind object with one queue signal (target 5), its metric named after it.
fn key(name: &str) -> EntryKey {
    key_with(name, &[])
}

fn key_with(name: &str, extra: &[(&str, &str)]) -> EntryKey {
    let mut metadata = crate::fixtures::meta(&[
        ("endpoints", "http://127.0.0.1:9/metrics"),
        ("queueTarget", "5"),
        ("metricName", name),
    ]);
    metadata.extend(crate::fixtures::meta(extra));
    EntryKey::new("ns".into(), name.into(), metadata)
}

/// A prometheus-kind object with one queue signal (target 5).
fn prometheus_key(name: &str) -> EntryKey {
    let mut m = key(name).metadata();
    m.remove("endpoints");
    for (k, v) in [
        ("source", "prometheus"),
        ("prometheusAddress", "http://127.0.0.1:9"),
        ("podSelector", "llm-.+"),
    ] {
        m.insert(k.into(), v.into());
    }
    EntryKey::new("ns".into(), name.into(), m)
}

/// Queue lengths, one per pod (None: that pod gave nothing).
fn queue(pods: &[Option<f64>]) -> Readings {
    Readings {
        signals: vec![SignalReading {
            pods: pods.to_vec(),
            note: None,
        }],
        ..Default::default()
    }
}

/// Queue lengths at a time on the source's clock.
fn queue_at(at: f64, pods: &[Option<f64>]) -> Readings {
    Readings {
        at: Some(at),
        ..queue(pods)
    }
}

/// A read that failed with nothing in it.
fn failed(note: &str) -> Readings {
    Readings {
        signals: vec![SignalReading::default()],
        notes: vec![note.to_string()],
        failed: true,
        ..Default::default()
    }
}

fn desired(engine: &Engine, entry: &Entry) -> f64 {
    engine.current(entry).unwrap().desired
}

#[tokio::test]
async fn each_source_kind_reads_its_objects_in_one_batch_and_each_answer_lands_on_its_object() {
    let by_name = |s: &ScalerSpec, _| match s.metric_name.as_str() {
        "a" => queue(&[Some(10.0)]),
        "b" => queue(&[Some(10.0), Some(10.0)]),
        "c" => queue(&[Some(30.0)]),
        other => panic!("unexpected object {other}"),
    };
    let scrape = Scripted::new(by_name);
    let prometheus = Scripted::new(by_name);
    let engine = Engine::with_sources(
        test_settings(),
        test_sources()
            .with(SourceKind::Scrape, scrape.clone())
            .with(SourceKind::Prometheus, prometheus.clone()),
    );
    let a = engine.entry(key("a")).unwrap();
    let b = engine.entry(key("b")).unwrap();
    let c = engine.entry(prometheus_key("c")).unwrap();
    engine.sample(false).await;

    let objects = |s: &Scripted| s.calls().into_iter().map(|c| c.objects).collect::<Vec<_>>();
    assert_eq!(objects(&scrape), [vec!["a", "b"]]);
    assert_eq!(objects(&prometheus), [vec!["c"]]);
    assert_eq!(desired(&engine, &a), 2.0);
    assert_eq!(desired(&engine, &b), 4.0);
    assert_eq!(desired(&engine, &c), 6.0);
}

#[tokio::test]
async fn an_object_whose_source_kind_has_no_source_gets_no_data_and_says_so() {
    let prometheus = Scripted::new(|_, _| queue(&[Some(10.0)]));
    let engine = Engine::with_sources(
        test_settings(),
        test_sources().with(SourceKind::Prometheus, prometheus.clone()),
    );
    let entry = engine.entry(key("scraped")).unwrap();
    engine.sample(false).await;
    assert!(prometheus.calls().is_empty(), "no object of its kind");
    assert_eq!(entry.state().samples, 1);
    let err = engine.current(&entry).unwrap_err();
    assert!(matches!(err, EngineError::Pending { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("this scaler reads no source=scrape ScaledObjects"),
        "{err}"
    );
}

#[tokio::test]
async fn the_last_good_decision_is_served_through_failed_rounds_and_they_are_explained() {
    let source = Scripted::new(|_, round| match round {
        1 => queue(&[Some(50.0)]),
        _ => failed("http://127.0.0.1:9/metrics: connection refused"),
    });
    let engine = engine_on(test_settings(), &source);
    let entry = engine.entry(key("llm")).unwrap();
    engine.sample(false).await;
    let first = engine.current(&entry).unwrap();
    let fresh_at = entry.state().fresh_at;
    assert_eq!(first.desired, 10.0);

    engine.sample(false).await;
    engine.sample(false).await;
    let state = entry.state();
    assert_eq!(state.samples, 3);
    assert_eq!(state.fresh_at, fresh_at, "a failed round is not fresh data");
    assert_eq!(
        state.notes,
        ["http://127.0.0.1:9/metrics: connection refused"]
    );
    assert!(Arc::ptr_eq(&engine.current(&entry).unwrap(), &first));
}

#[tokio::test]
async fn a_source_still_syncing_says_so_in_the_state_until_it_has_listed() {
    let source = Scripted::new(|_, round| match round {
        1 => Readings {
            syncing: true,
            ..failed("waiting for the first EndpointSlice list of namespace ns")
        },
        _ => queue(&[Some(10.0)]),
    });
    let engine = engine_on(test_settings(), &source);
    let entry = engine.entry(key("llm")).unwrap();
    engine.sample(false).await;
    assert!(entry.state().syncing, "explain waits while this holds");
    engine.sample(false).await;
    assert!(!entry.state().syncing);
    assert_eq!(desired(&engine, &entry), 2.0);
}

#[tokio::test]
async fn a_decision_older_than_max_staleness_is_refused_naming_the_problem() {
    let source = Scripted::new(|_, round| match round {
        1 => queue(&[Some(50.0)]),
        _ => failed("http://127.0.0.1:9/metrics: timed out"),
    });
    let engine = engine_on(
        EngineSettings {
            max_staleness: Duration::from_millis(50),
            ..test_settings()
        },
        &source,
    );
    let entry = engine.entry(key("llm")).unwrap();
    engine.sample(false).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    engine.sample(false).await;
    match engine.current(&entry) {
        Err(e @ EngineError::Stale { age_s, .. }) => {
            assert!(age_s >= 0.15, "{e}");
            assert!(e.to_string().contains("timed out"), "{e}");
            assert!(e.to_string().contains("ns/llm"), "{e}");
        }
        other => panic!("expected stale, got {other:?}"),
    }
}

#[tokio::test]
async fn a_round_where_no_pod_reported_neither_replaces_nor_refreshes_the_decision() {
    let source = Scripted::new(|_, round| match round {
        1 => queue_at(100.0, &[Some(50.0)]),
        // Both pods silent (NaN is no reading either): nothing says the demand fell.
        _ => queue_at(100.0 + round as f64, &[None, Some(f64::NAN)]),
    });
    let engine = engine_on(test_settings(), &source);
    let entry = engine.entry(key("llm")).unwrap();
    engine.sample(false).await;
    let fresh_at = entry.state().fresh_at;
    engine.sample(false).await;
    engine.sample(false).await;
    let state = entry.state();
    assert_eq!(state.fresh_at, fresh_at);
    let d = state.decision.unwrap();
    assert_eq!((d.desired, d.at), (10.0, 100.0));
}

#[tokio::test]
async fn a_reading_that_is_not_finite_asks_for_max_replicas_and_says_so() {
    for value in [f64::INFINITY, 1e308] {
        let source = Scripted::new(move |_, _| queue(&[Some(value), Some(value)]));
        let engine = engine_on(test_settings(), &source);
        let entry = engine
            .entry(key_with("llm", &[("maxReplicas", "7")]))
            .unwrap();
        engine.sample(false).await;
        let d = engine.current(&entry).unwrap();
        assert_eq!((d.desired, d.active), (7.0, true), "{value}: {d:?}");
        let notes = entry.state().notes;
        assert!(
            notes.iter().any(|n| n.contains("asking for maxReplicas")),
            "{value}: {notes:?}"
        );
    }
}

#[tokio::test]
async fn activation_flips_reach_every_subscriber() {
    let source = Scripted::new(|_, round| match round {
        1 => queue_at(1000.0, &[Some(50.0)]),
        // An hour later and idle: far past any smoothing.
        _ => queue_at(1000.0 + 3600.0 * round as f64, &[Some(0.0)]),
    });
    let engine = engine_on(test_settings(), &source);
    let entry = engine.entry(key("llm")).unwrap();
    let mut streams = [entry.subscribe(), entry.subscribe()];
    let active = |rx: &mut watch::Receiver<EntryState>| {
        assert!(rx.has_changed().unwrap(), "every sampling is published");
        rx.borrow_and_update().decision.as_ref().map(|d| d.active)
    };
    engine.sample(false).await;
    for rx in &mut streams {
        assert_eq!(active(rx), Some(true));
    }
    engine.sample(false).await;
    for rx in &mut streams {
        assert_eq!(active(rx), Some(false));
    }
}

#[tokio::test]
async fn history_is_scored_once_and_a_failed_gap_is_asked_for_again() {
    let at = |t: f64, v: f64| (t, vec![vec![Some(v)]]);
    let source = Scripted::new(move |_, round| match round {
        1 => Readings {
            earlier: vec![at(90.0, 5.0)],
            ..queue_at(100.0, &[Some(10.0)])
        },
        // The source failed: the gap after 100 must be asked for again.
        2 => Readings {
            at: Some(110.0),
            ..failed("timed out")
        },
        // The gap read back, with a point already scored.
        3 => Readings {
            earlier: vec![at(95.0, 5.0), at(105.0, 20.0)],
            ..queue_at(110.0, &[Some(30.0)])
        },
        // Nothing new, and an old point that must not be scored again.
        _ => Readings {
            earlier: vec![at(105.0, 20.0)],
            ..failed("timed out")
        },
    });
    let engine = engine_on(test_settings(), &source);
    let entry = engine.entry(key("llm")).unwrap();
    let mut decided_at = Vec::new();
    for _ in 0..5 {
        engine.sample(false).await;
        decided_at.push(entry.state().decision.map(|d| d.at));
    }
    let asked: Vec<Option<f64>> = source.calls().iter().map(|c| c.last["llm"]).collect();
    assert_eq!(
        asked,
        [None, Some(100.0), Some(100.0), Some(110.0), Some(110.0)]
    );
    assert_eq!(
        decided_at,
        [
            Some(100.0),
            Some(100.0),
            Some(110.0),
            Some(110.0),
            Some(110.0)
        ]
    );
}

#[tokio::test]
async fn replicas_starting_and_terminating_are_published() {
    let source = Scripted::new(|_, _| Readings {
        context: Context {
            fleet: Fleet {
                starting: Some(2),
                terminating: Some(1),
            },
            ..Context::default()
        },
        ..queue(&[Some(5.0)])
    });
    let engine = engine_on(test_settings(), &source);
    let entry = engine.entry(key("llm")).unwrap();
    engine.sample(false).await;
    let state = entry.state();
    assert_eq!((state.starting, state.terminating), (Some(2), Some(1)));
}

#[tokio::test]
async fn notes_are_bounded_in_number_and_length() {
    let source = Scripted::new(|_, _| Readings {
        notes: (0..30)
            .map(|i| format!("{i}: {}", "x".repeat(1000)))
            .collect(),
        signals: vec![SignalReading {
            pods: vec![Some(1.0)],
            note: Some("series absent everywhere".into()),
        }],
        ..Default::default()
    });
    let engine = engine_on(test_settings(), &source);
    let entry = engine.entry(key("llm")).unwrap();
    engine.sample(false).await;
    let notes = entry.state().notes;
    assert_eq!(notes.len(), MAX_NOTES + 1);
    assert_eq!(notes[MAX_NOTES], "... and 11 more");
    assert!(notes.iter().all(|n| n.len() <= NOTE_BYTES), "{notes:?}");
}

#[tokio::test]
async fn a_new_object_is_sampled_alone_without_counting_a_round() {
    let source = Scripted::new(|_, _| queue(&[Some(5.0)]));
    let engine = engine_on(test_settings(), &source);
    engine.entry(key("old")).unwrap();
    engine.sample(false).await;
    let new = engine.entry(key("new")).unwrap();
    engine.sample(true).await;
    let objects: Vec<Vec<String>> = source.calls().into_iter().map(|c| c.objects).collect();
    assert_eq!(objects, [vec!["old"], vec!["new"]]);
    assert_eq!(new.state().samples, 1);
    assert_eq!(engine.rounds.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_first_answer_waits_for_the_sampler_but_no_longer_than_the_sources_allow() {
    // The running sampler samples a new object at once; the answer waits for it.
    let slow = Scripted::slow(
        Duration::from_millis(200),
        Duration::from_secs(5),
        |_, _| queue(&[Some(50.0)]),
    );
    let engine = engine_on(test_settings(), &slow);
    let (stop, shutdown) = watch::channel(false);
    let sampler = tokio::spawn(engine.clone().run(shutdown));
    let entry = engine.entry(key("llm")).unwrap();
    assert_eq!(engine.current_or_wait(&entry).await.unwrap().desired, 10.0);
    stop.send(true).unwrap();
    sampler.await.unwrap();

    // Without a sampler the wait ends after the sources' deadline and a margin.
    let idle = Scripted::slow(Duration::ZERO, Duration::from_millis(100), |_, _| {
        queue(&[Some(50.0)])
    });
    let engine = engine_on(test_settings(), &idle);
    let entry = engine.entry(key("llm")).unwrap();
    let started = Instant::now();
    let err = engine.current_or_wait(&entry).await.unwrap_err();
    assert!(matches!(err, EngineError::Pending { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[test]
fn expiry_tells_every_source_which_objects_remain() {
    let scrape = Scripted::new(|_, _| queue(&[]));
    let prometheus = Scripted::new(|_, _| queue(&[]));
    let engine = Engine::with_sources(
        EngineSettings {
            entry_ttl: Duration::from_millis(50),
            ..test_settings()
        },
        test_sources()
            .with(SourceKind::Scrape, scrape.clone())
            .with(SourceKind::Prometheus, prometheus.clone()),
    );
    let watched = engine.entry(key("watched")).unwrap();
    let _stream = watched.subscribe();
    engine.entry(key("idle")).unwrap();
    engine.entry(prometheus_key("queried")).unwrap();
    std::thread::sleep(Duration::from_millis(120));
    engine.expire();
    assert_eq!(scrape.retained(), [vec!["watched"]]);
    assert_eq!(prometheus.retained(), [Vec::<String>::new()]);
}

#[test]
fn the_same_object_and_metadata_is_one_entry_and_new_metadata_another() {
    let engine = engine_on(test_settings(), &Scripted::new(|_, _| queue(&[])));
    let a = engine.entry(key("a")).unwrap();
    let again = engine.entry(key("a")).unwrap();
    assert!(Arc::ptr_eq(&a, &again));
    engine
        .entry(key_with("a", &[("queueTarget", "6")]))
        .unwrap();
    assert_eq!(engine.len(), 2);
}

#[test]
fn unused_entries_expire_unless_a_stream_watches_them() {
    let engine = engine_on(
        EngineSettings {
            entry_ttl: Duration::from_millis(50),
            ..test_settings()
        },
        &Scripted::new(|_, _| queue(&[])),
    );
    let watched = engine.entry(key("watched")).unwrap();
    let _stream = watched.subscribe();
    engine.entry(key("idle")).unwrap();
    std::thread::sleep(Duration::from_millis(120));
    engine.expire();
    let names: Vec<String> = engine
        .entries()
        .iter()
        .map(|e| e.key.name.clone())
        .collect();
    assert_eq!(names, ["watched"]);
}

#[test]
fn an_endpoint_list_change_continues_the_smoothing_and_other_changes_start_afresh() {
    // The production scrape source decides what continues; nothing here does IO.
    let engine = Engine::new(
        test_settings(),
        &SourceSettings {
            egress: EgressPolicy::loopback(),
            ..SourceSettings::default()
        },
    );
    let first = engine.entry(key("llm")).unwrap();
    engine.score(&first, &queue(&[Some(50.0)]), 1.0);
    assert_eq!(engine.current(&first).unwrap().desired, 10.0);

    let with_endpoints = |endpoints: &str, target: &str| {
        key_with("llm", &[("endpoints", endpoints), ("queueTarget", target)])
    };
    // A pod came: the new entry's first idle reading decays from 10, not from nothing.
    let grown = engine
        .entry(with_endpoints(
            "http://127.0.0.1:9/metrics,http://127.0.0.1:10/metrics",
            "5",
        ))
        .unwrap();
    let idle = queue(&[Some(0.0), Some(0.0)]);
    engine.score(&grown, &idle, 2.0);
    let d = engine.current(&grown).unwrap();
    assert!(d.desired > 9.0 && d.active, "smoothing continued: {d:?}");

    // A new target is a new spec: it starts from the reading alone.
    let retargeted = engine
        .entry(with_endpoints("http://127.0.0.1:9/metrics", "6"))
        .unwrap();
    engine.score(&retargeted, &idle, 3.0);
    assert_eq!(engine.current(&retargeted).unwrap().desired, 0.0);
}

#[test]
fn a_source_that_does_not_continue_state_starts_every_edit_afresh() {
    // The same edit as above, on a source that keeps the default: whether state carries
    // over is the source's call, not the engine's.
    let engine = engine_on(test_settings(), &Scripted::new(|_, _| queue(&[])));
    let first = engine.entry(key("llm")).unwrap();
    engine.score(&first, &queue(&[Some(50.0)]), 1.0);
    let grown = engine
        .entry(key_with(
            "llm",
            &[(
                "endpoints",
                "http://127.0.0.1:9/metrics,http://127.0.0.1:10/metrics",
            )],
        ))
        .unwrap();
    engine.score(&grown, &queue(&[Some(0.0), Some(0.0)]), 2.0);
    assert_eq!(engine.current(&grown).unwrap().desired, 0.0);
}

#[test]
fn registrations_are_bounded() {
    let engine = engine_on(
        EngineSettings {
            max_entries: 2,
            ..test_settings()
        },
        &Scripted::new(|_, _| queue(&[])),
    );
    engine.entry(key("a")).unwrap();
    engine.entry(key("b")).unwrap();
    assert!(matches!(
        engine.entry(key("c")),
        Err(EngineError::TooManyEntries { count: 2, limit: 2 })
    ));
    assert!(engine.entry(key("a")).is_ok(), "known objects still answer");
}

#[test]
fn bad_metadata_is_refused_naming_the_key_and_registers_nothing() {
    let engine = engine_on(test_settings(), &Scripted::new(|_, _| queue(&[])));
    for _ in 0..2 {
        let Err(err) = engine.entry(key_with("llm", &[("queueTarget", "lots")])) else {
            panic!("bad metadata registered");
        };
        assert!(matches!(err, EngineError::Spec(_)), "{err}");
        assert!(err.to_string().contains("queueTarget"), "{err}");
    }
    assert!(engine.is_empty());
}

#[test]
fn an_unsampled_entry_is_pending_and_says_so() {
    let engine = engine_on(test_settings(), &Scripted::new(|_, _| queue(&[])));
    let entry = engine.entry(key("new")).unwrap();
    let err = engine.current(&entry).unwrap_err();
    assert!(matches!(err, EngineError::Pending { .. }));
    assert!(err.to_string().contains("ns/new"), "{err}");
}
