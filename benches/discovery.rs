//! Cost of resolving a discovered Service to the URLs to scrape, per sampling round, against the
//! baseline of a fixed `endpoints:` list (cloned each round), measured in the same run.
//!
//! A namespace of 200 Services (dual-stack: an IPv4 and an IPv6 slice each, 50 pods apiece) plus
//! the scaled Service with 1,000 pods over 10 slices. Prints ns per round for the fixed list, the
//! indexed store and a scan of every slice in the namespace, and their ratios; asserts nothing.
//! Run with `cargo bench --bench discovery`.

use std::hint::black_box;
use std::time::Instant;

use keda_gpu_scaler::sources::scrape::discovery::{resolve, Endpoint, Slice, Store};
use keda_gpu_scaler::spec::ServiceSpec;

const PODS: usize = 1000;
const ROUNDS: usize = 2000;

fn slice(service: &str, ipv6: bool, first: usize, n: usize) -> Slice {
    Slice {
        service: service.into(),
        ipv6,
        ports: vec![("http".into(), 8000)],
        endpoints: (first..first + n)
            .map(|i| Endpoint {
                address: if ipv6 {
                    format!("fd00::{:x}", i)
                } else {
                    format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255)
                },
                pod: Some(format!("{service}-{i}")),
                ready: i % 10 != 0,
                terminating: false,
            })
            .collect(),
    }
}

fn time(label: &str, mut f: impl FnMut() -> usize) -> f64 {
    for _ in 0..ROUNDS / 10 {
        black_box(f());
    }
    let start = Instant::now();
    let mut n = 0;
    for _ in 0..ROUNDS {
        n += black_box(f());
    }
    let ns = start.elapsed().as_nanos() as f64 / ROUNDS as f64;
    println!("{label:<40} {ns:>12.0} ns/round  ({} URLs)", n / ROUNDS);
    ns
}

fn main() {
    let mut store = Store::default();
    let mut all = Vec::new();
    for s in 0..200 {
        let name = format!("svc-{s}");
        for (k, ipv6) in [(0, false), (1, true)] {
            let sl = slice(&name, ipv6, s * 50, 50);
            store.apply(format!("{name}-{k}"), Some(sl.clone()));
            all.push(sl);
        }
    }
    for k in 0..10 {
        let sl = slice("llm", false, 100_000 + k * 100, 100);
        store.apply(format!("llm-{k}"), Some(sl.clone()));
        all.push(sl);
    }
    let svc = ServiceSpec {
        namespace: "inference".into(),
        name: "llm".into(),
        port: None,
        path: "/metrics".into(),
        deletion_cost: false,
        drain: None,
    };
    let fixed: Vec<String> = resolve(&svc, store.service("llm"), &Default::default())
        .unwrap()
        .urls;
    assert_eq!(fixed.len(), PODS * 9 / 10);

    println!(
        "{} slices in the namespace, {PODS} pods behind the Service (90 % ready)",
        store.len()
    );
    let base = time("fixed endpoints (clone of the list)", || {
        fixed.clone().len()
    });
    let indexed = time("discovered, indexed by Service", || {
        resolve(&svc, store.service("llm"), &Default::default())
            .unwrap()
            .urls
            .len()
    });
    let scan = time("discovered, scanning every slice", || {
        resolve(&svc, &all, &Default::default()).unwrap().urls.len()
    });
    println!(
        "ratio indexed / fixed: {:.1}x, scan / indexed: {:.1}x",
        indexed / base,
        scan / indexed
    );
}
