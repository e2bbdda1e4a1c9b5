//! Crash safety of the persisted route set: `overpass api-only` (the same
//! RIB, store and API code as `overpass run`, without a dataplane) is
//! killed with SIGKILL at random points during a stream of route-set
//! replacements, a hundred times. After every restart the gateway must
//! serve exactly the last acknowledged set, or the one whose request was
//! in flight when it died: never a torn file, never an older set.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Proc, Scratch};
use overpass::control::rib::RouteSpec;
use serde_json::json;

const ITERATIONS: usize = 100;

/// Route set number `k`: 1 to 8 routes, contents depending on `k`.
fn set(k: u64) -> Vec<RouteSpec> {
    let n = (k % 8 + 1) as u8;
    let routes: Vec<_> = (0..n)
        .map(|j| {
            let node = 11 + (k as u8).wrapping_add(j) % 20;
            json!({"prefix": format!("10.{}.{}.0/24", 100 + j, k % 256),
                   "node": {"name": format!("set{k}-n{node}"), "underlay_ip": format!("198.18.0.{node}"),
                            "vtep_mac": format!("02:00:00:00:01:{node:02x}")}})
        })
        .collect();
    serde_json::from_value(json!(routes)).unwrap()
}

/// Starts `overpass api-only` on `cfg` (log in `log`); returns it and its API URL.
fn spawn(cfg: &Path, log: &Path) -> (Proc, String) {
    let mut proc = Proc::spawn(&["api-only"], cfg, log, &[("RUST_LOG", "warn")]);
    let url = proc.url(Duration::from_secs(30));
    (proc, url)
}

/// A tiny xorshift: reproducible kill points without a rand dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug, Default, Clone)]
struct Progress {
    /// (set number, generation) of the last acknowledged replacement.
    acked: Option<(u64, u64)>,
    /// Set number whose request was sent but not answered.
    in_flight: Option<u64>,
    writes: u64,
}

#[test]
fn sigkill_during_writes_never_loses_or_tears_the_route_set() {
    let scratch = Scratch::new("crash");
    let cfg = scratch.path("overpass.toml");
    let log = scratch.path("overpass.log");
    let state = scratch.path("state");
    std::fs::write(&cfg, scratch.config(false, Some((&state, "")))).unwrap();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next_set = 1u64;
    let mut expect: Option<Progress> = None;
    let mut total_writes = 0;
    let mut in_flight_won = 0;
    let started = Instant::now();
    for iteration in 0..ITERATIONS {
        let (mut proc, url) = spawn(&cfg, &log);
        let client = common::client(&url);
        let now = client
            .routes()
            .expect("reading the route set after restart");
        // What must be there: the last acknowledged set, or the in-flight one.
        let mut generation = now.generation;
        if let Some(p) = &expect {
            let (acked_set, acked_gen) = p.acked.expect("every iteration acknowledges a write");
            if now.routes == set(acked_set) {
                assert_eq!(
                    now.generation, acked_gen,
                    "iteration {iteration}: generation"
                );
            } else if p.in_flight.is_some_and(|k| now.routes == set(k)) {
                assert_eq!(
                    now.generation,
                    acked_gen + 1,
                    "iteration {iteration}: generation"
                );
                in_flight_won += 1;
            } else {
                panic!(
                    "iteration {iteration}: after SIGKILL the gateway serves generation {} with {:?}, \
                     expected set {acked_set} (generation {acked_gen}) or the in-flight {:?}",
                    now.generation, now.routes, p.in_flight
                );
            }
        }
        // Stream whole-set replacements until killed.
        let progress = Arc::new(Mutex::new(Progress::default()));
        let writer = {
            let progress = progress.clone();
            let client = client.clone();
            let first = next_set;
            std::thread::spawn(move || {
                let mut k = first;
                loop {
                    progress.lock().unwrap().in_flight = Some(k);
                    match client.replace_routes(&set(k), Some(generation), false) {
                        Ok(r) => {
                            generation = r.generation;
                            let mut p = progress.lock().unwrap();
                            p.acked = Some((k, r.generation));
                            p.in_flight = None;
                            p.writes += 1;
                        }
                        Err(_) => return k, // the gateway is gone
                    }
                    k += 1;
                }
            })
        };
        // Let at least one write through, then kill at a random point.
        let deadline = Instant::now() + Duration::from_secs(10);
        while progress.lock().unwrap().acked.is_none() {
            assert!(Instant::now() < deadline, "no write acknowledged");
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(rng.below(30_000)));
        proc.child.0.kill().unwrap(); // SIGKILL
        proc.child.0.wait().unwrap();
        next_set = writer.join().unwrap() + 1;
        let p = progress.lock().unwrap().clone();
        total_writes += p.writes;
        expect = Some(p);
    }
    // The final restart is checked too.
    let (mut proc, url) = spawn(&cfg, &log);
    let now = common::client(&url).routes().unwrap();
    let p = expect.unwrap();
    let (acked_set, _) = p.acked.unwrap();
    assert!(
        now.routes == set(acked_set) || p.in_flight.is_some_and(|k| now.routes == set(k)),
        "final restart: {now:?}"
    );
    proc.child.0.kill().unwrap();
    proc.child.0.wait().unwrap();
    eprintln!(
        "crash test: {ITERATIONS} SIGKILLs, {total_writes} acknowledged writes, \
         in-flight write found durable {in_flight_won} times, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
