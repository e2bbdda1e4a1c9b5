//! Control plane against the real dataplane, in network namespaces:
//! - hitless route updates under traffic: while a local pod pings a remote
//!   pod at a steady rate, the API moves the route for that pod's /32
//!   between the two remote nodes 1000 times (node 2 forwards to node 1
//!   itself, so both paths deliver). No packet may be lost, no packet may
//!   take the old path after the API acknowledged the change, and the time
//!   from the acknowledgement to the first packet forwarded on the new
//!   path is measured (per-peer TX counters polled tightly);
//! - latency histograms reflect real traffic: their count equals the
//!   number of packets the gateway forwarded.
//!
//! Needs root (fails under CI=true without it, skips loudly otherwise).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overpass::api::client::Client;
use overpass::api::observe::{Counters, LatencyReport};
use overpass::api::{ApiState, Auth, Server};
use overpass::control::rib::{NodeSpec, RouteSpec};
use overpass::control::store::Store;
use overpass::lifecycle::Gateway;
use overpass_dataplane::counters::{CounterKind, Event, PeerStat};
use overpass_dataplane::pipeline::RpFilter;
use overpass_testkit::testbed::{Ns, Testbed, TestbedSpec, require_root};

static SERIAL: Mutex<()> = Mutex::new(());

const TOKEN: &str = "hitless-test-token-0123456789";
const UPDATES: usize = 1000;
/// Probe rate: one echo request every 500 µs (2000/s).
const PING_INTERVAL: &str = "0.0005";
/// Pings per `ping` run; runs follow each other until the updates are done
/// (each run ends normally, waiting for its last replies, so a lost packet
/// is really lost and not cut off).
const PING_CHUNK: u32 = 2000;

/// Pings from `ns` to `dst` in back-to-back runs until `stop` is set;
/// returns (transmitted, received, runs).
fn ping_until(ns: String, dst: String, stop: Arc<AtomicBool>) -> (u64, u64, u32) {
    let (mut tx, mut rx, mut runs) = (0, 0, 0);
    while !stop.load(Ordering::Relaxed) {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "ping", "-n", "-q"])
            .args([
                "-i",
                PING_INTERVAL,
                "-c",
                &PING_CHUNK.to_string(),
                "-W",
                "2",
                &dst,
            ])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        let nums: Vec<u64> = summary
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .take(2)
            .map(|s| s.parse().unwrap())
            .collect();
        tx += nums[0];
        rx += nums[1];
        runs += 1;
    }
    (tx, rx, runs)
}

fn probe_route(bed: &Testbed, via: u8) -> RouteSpec {
    RouteSpec {
        prefix: format!("{}/32", bed.remote_pod_ip(1)).parse().unwrap(),
        node: Some(NodeSpec {
            name: format!("node{via}"),
            underlay_ip: bed.node_underlay_ip(via),
            encap: overpass_dataplane::fib::Encap::Vxlan,
            vni: 1,
            port: 8472,
            vtep_mac: Some(bed.node_vtep_mac(via)),
            mtu: None,
        }),
        pod: None,
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn hitless_updates_under_traffic_and_latency_matches_forwarded() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("hitless route updates under traffic (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = Testbed::create(&TestbedSpec {
        tag: "ap1".to_string(),
        underlay_queues: 1,
    })
    .expect("building the test bed");
    let dir = std::env::temp_dir().join(format!("overpass-ap1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::open(&dir).unwrap());
    // The probe routes send node 1's pod via node 2 while its replies come
    // straight from node 1: asymmetric on purpose, which the strict
    // reverse-path filter (the default) refuses, so it is off here.
    let mut config = bed.gateway_config();
    config.gateway.rp_filter = RpFilter::Off;
    let gw = Gateway::start(&config).expect("starting the gateway");
    assert!(
        gw.wait_resolved(Duration::from_secs(5)),
        "next hops resolved"
    );
    // The API from the host namespace, as `overpass run` does.
    let state = ApiState::new(
        gw.rib().clone().with_store(Some(store)),
        gw.view(),
        Auth::new(Some(TOKEN.to_string()), false),
        1 << 20,
        "dataplane",
    );
    let server = Server::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    let client = Client::new(&format!("http://{}", server.addr), Some(TOKEN.to_string()));
    let view = gw.view();
    let slots = [0, 1, 2].map(|n: u8| gw.rib().peer_slot(bed.node_underlay_ip(n.max(1))).unwrap());
    let tx = |n: u8| view.peer_stat(slots[n as usize], PeerStat::TxPackets);

    // Both paths work before we start.
    for via in [2, 1] {
        client.put_route(&probe_route(&bed, via)).unwrap();
        let r = bed
            .ping(
                &bed.ns(Ns::LocalPod('a')),
                bed.remote_pod_ip(1),
                3,
                &Default::default(),
            )
            .unwrap();
        assert!(r.all_received(), "path via node {via}: {}", r.raw);
    }
    // Let the worker merge what it recorded (every ~100 ms): values not
    // merged yet when the histograms are reset land in the new interval.
    std::thread::sleep(Duration::from_millis(300));
    let before = view.snapshot();
    let latency_reset = client
        .request("POST", "/api/v1/latency/reset", None, None)
        .unwrap();
    assert_eq!(latency_reset.status, 200);

    // Steady traffic: local pod a -> remote pod 1 (10.244.1.2).
    let stop = Arc::new(AtomicBool::new(false));
    let ping = {
        let (ns, dst, stop) = (
            bed.ns(Ns::LocalPod('a')),
            bed.remote_pod_ip(1).to_string(),
            stop.clone(),
        );
        std::thread::spawn(move || ping_until(ns, dst, stop))
    };
    let ping_started = Instant::now();
    std::thread::sleep(Duration::from_millis(500));

    // 1000 updates, alternating the probe route between node 2 and node 1.
    let mut update_to_forward_us: Vec<f64> = Vec::with_capacity(UPDATES);
    let mut request_ms: Vec<f64> = Vec::with_capacity(UPDATES);
    let mut forwarded_before_ack = 0;
    let mut stale_after_ack = 0u64;
    let mut timeouts = 0;
    let mut stale_updates = vec![];
    for i in 0..UPDATES {
        let (new, old) = if i % 2 == 0 { (2, 1) } else { (1, 2) };
        let new_before = tx(new);
        let sent = Instant::now();
        let r = client.put_route(&probe_route(&bed, new)).unwrap();
        let acked = Instant::now();
        assert_eq!(
            r.route.node.as_ref().unwrap().underlay_ip,
            bed.node_underlay_ip(new)
        );
        request_ms.push((acked - sent).as_secs_f64() * 1e3);
        let old_at_ack = tx(old);
        if tx(new) > new_before {
            // The first packet on the new path left before the response
            // even reached us.
            forwarded_before_ack += 1;
            update_to_forward_us.push(0.0);
        } else {
            // Generous: the ping's next packet comes within milliseconds on
            // a quiet machine; a loaded one (CI, parallel builds) can hold
            // the pinger off the CPU for a while. What must never happen is
            // a route that does not take effect at all.
            let deadline = acked + Duration::from_secs(2);
            loop {
                if tx(new) > new_before {
                    update_to_forward_us.push(acked.elapsed().as_secs_f64() * 1e6);
                    break;
                }
                if Instant::now() > deadline {
                    timeouts += 1;
                    break;
                }
                // Two cores: let ping and the kernel run while we poll.
                std::thread::yield_now();
            }
        }
        // Packets that took the old path after the acknowledgement.
        let stale = tx(old) - old_at_ack;
        if stale > 0 {
            stale_updates.push((i, stale));
        }
        stale_after_ack += stale;
    }
    let updates_took = ping_started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (transmitted, received, runs) = ping.join().unwrap();

    update_to_forward_us.sort_by(f64::total_cmp);
    request_ms.sort_by(f64::total_cmp);
    let after = view.snapshot();
    eprintln!(
        "hitless: {UPDATES} route updates in {:.1} s during ping -i {PING_INTERVAL} ({runs} runs: {transmitted} sent, {received} received, {} lost)\n  \
         API request (PUT, validate, fsync, publish): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms\n  \
         ack -> first packet on the new path: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us \
         ({forwarded_before_ack} already before the ack arrived, {timeouts} timeouts)\n  \
         packets on the old path after the ack: {stale_after_ack}\n  \
         gateway: encap {} decap {} drops {}",
        updates_took.as_secs_f64() - 0.5,
        transmitted - received,
        percentile(&request_ms, 0.5),
        percentile(&request_ms, 0.99),
        request_ms.last().unwrap(),
        percentile(&update_to_forward_us, 0.5),
        percentile(&update_to_forward_us, 0.9),
        percentile(&update_to_forward_us, 0.99),
        update_to_forward_us.last().unwrap(),
        after.since(&before).event_count(Event::EncapToPeer),
        after.since(&before).event_count(Event::DecapToPod),
        after.total_drops() - before.total_drops(),
    );
    assert_eq!(received, transmitted, "packets lost during route updates");
    assert_eq!(
        after.total_drops(),
        before.total_drops(),
        "{}",
        after.render()
    );
    assert_eq!(
        timeouts, 0,
        "some updates never saw traffic on the new path"
    );
    assert_eq!(
        stale_after_ack, 0,
        "packets forwarded by a route after it was replaced: (update, packets) {stale_updates:?}"
    );
    assert_eq!(client.routes().unwrap().generation, 1 + 2 + UPDATES as u64);

    // Latency histograms: merged within ~100 ms of the last packet.
    std::thread::sleep(Duration::from_millis(400));
    let counters: Counters = client.get("/api/v1/counters").unwrap();
    let ev = |name: &str| {
        counters
            .events
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .value
    };
    let lat: LatencyReport = client.get("/api/v1/latency").unwrap();
    // Every packet the gateway transmitted since the reset (everything
    // after `before`): each Tx verdict is queued or dropped for a full ring.
    // That includes ICMP errors the gateway generates, so it is compared to
    // the histograms; the four forwarding events are reported beside it.
    let dropped = |name: &str| {
        counters
            .drops
            .iter()
            .find(|e| e.name == name)
            .unwrap()
            .value
    };
    let forwarded = ev("tx_queued") + dropped("tx_ring_full")
        - before.event_count(Event::TxQueued)
        - before.drop_count(overpass_dataplane::counters::DropReason::TxRingFull);
    let forwarding_events = ["decap_to_pod", "encap_to_peer", "pod_to_pod", "transit"]
        .iter()
        .map(|n| ev(n))
        .sum::<u64>()
        - [
            Event::DecapToPod,
            Event::EncapToPeer,
            Event::PodToPod,
            Event::Transit,
        ]
        .iter()
        .map(|e| before.event_count(*e))
        .sum::<u64>();
    let changed: Vec<(String, u64)> = counters
        .events
        .iter()
        .filter_map(|e| {
            let k = Event::all().find(|k| k.name() == e.name).unwrap();
            let d = e.value - before.event_count(k);
            (d > 0).then(|| (e.name.clone(), d))
        })
        .collect();
    eprintln!("events since the reset: {changed:?}; forwarding events {forwarding_events}");
    let by_dir = |d: &str| {
        lat.directions
            .iter()
            .find(|x| x.direction == d)
            .unwrap()
            .summary
            .clone()
    };
    eprintln!(
        "latency since reset: {} packets; encap p50 {} ns p99 {} ns p99.99 {} ns max {} ns; decap p50 {} ns p99 {} ns max {} ns",
        lat.total.count,
        by_dir("encap").p50_ns,
        by_dir("encap").p99_ns,
        by_dir("encap").p99_99_ns,
        by_dir("encap").max_ns,
        by_dir("decap").p50_ns,
        by_dir("decap").p99_ns,
        by_dir("decap").max_ns
    );
    assert!(forwarded >= 2 * transmitted, "{forwarded}");
    assert_eq!(
        lat.total.count, forwarded,
        "histogram count = forwarded packets"
    );
    assert_eq!(
        by_dir("encap").count,
        ev("encap_to_peer") - before.event_count(Event::EncapToPeer)
    );
    assert!(by_dir("decap").count >= ev("decap_to_pod") - before.event_count(Event::DecapToPod));
    assert!(by_dir("encap").p50_ns > 0 && by_dir("encap").max_ns >= by_dir("encap").p99_ns);
    // Per peer: node 1 and node 2 both carried traffic.
    let peer_count: u64 = lat.peers.iter().map(|p| p.summary.count).sum();
    assert!(lat.peers.len() >= 2 && peer_count > 0, "{:?}", lat.peers);
    let log = client
        .request("GET", "/api/v1/latency/log", None, None)
        .unwrap();
    assert!(log.body.contains("Tag=direction=encap"), "{}", log.body);

    server.stop();
    gw.stop();
    drop(bed);
    let _ = std::fs::remove_dir_all(&dir);
}
