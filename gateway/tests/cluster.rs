//! Joining the cluster from its datastore: a real etcd (Debian's
//! etcd-server, started and stopped by `overpass_testkit::etcd`), Flannel
//! nodes that learn every route from it (`overpass_testkit::flannel`, in
//! the bed's node namespaces: the bed writes no route), and the gateway
//! with no `[[peer]]` at all: its own subnet lease, every other node's
//! lease as a route (`overpass::cluster`).
//!
//! The tests run one at a time (two cores; zero-loss assertions). The bed
//! tests (tags `cl*`) need root; under CI=true they fail rather than skip.
//! The datastore-only tests need etcd but no namespaces.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use overpass::cluster::{self, ClusterConfig, MemberHandle};
use overpass::config::{Config, StateConfig, unset_pod_cidr};
use overpass::control::store::{Store, resolve_vtep_mac};
use overpass::lifecycle::Gateway;
use overpass_dataplane::counters::DropReason;
use overpass_dataplane::fib::{Encap, NextHop};
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_testkit::etcd::{Etcd, Kv};
use overpass_testkit::flannel::{AgentSpec, FlannelNode, network_config};
use overpass_testkit::testbed::{
    Ns, PingOpts, Testbed, TestbedOptions, TestbedSpec, require_root, wait_until,
};

mod common;

static SERIAL: Mutex<()> = Mutex::new(());

const PREFIX: &str = "/coreos.com/network";

fn subnets_key(name: &str) -> String {
    format!("{PREFIX}/subnets/{name}")
}

fn cluster_config(etcd: &Etcd) -> ClusterConfig {
    ClusterConfig {
        prefix: PREFIX.into(),
        ..ClusterConfig::new(vec![etcd.endpoint()])
    }
}

/// etcd for a test that needs nothing else (no namespaces): skipped, loudly,
/// where etcd cannot run, except under CI, where that fails the test.
fn etcd_or_skip(tag: &str) -> Option<Etcd> {
    match Etcd::start(tag) {
        Ok(e) => Some(e),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "etcd is needed under CI: {e:#}"
            );
            eprintln!("SKIPPED (needs etcd): {e:#}");
            None
        }
    }
}

/// A client of `etcd` with Flannel's network configuration put at
/// `<PREFIX>/config`.
fn with_network(etcd: &Etcd) -> Kv {
    let kv = etcd.kv().unwrap();
    kv.put(&format!("{PREFIX}/config"), &network_config(), None)
        .unwrap();
    kv
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("overpass-cl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A bed whose nodes learn everything from etcd, and the gateway in it.
struct Bed {
    bed: Testbed,
    etcd: Etcd,
    kv: Kv,
    state: PathBuf,
    agents: Vec<Option<FlannelNode>>,
    gw: Option<Gateway>,
    member: Option<MemberHandle>,
    store: Option<Store>,
}

impl Bed {
    fn new(tag: &str) -> Bed {
        let bed = Testbed::create_with(
            &TestbedSpec {
                tag: tag.into(),
                underlay_queues: 1,
            },
            &TestbedOptions {
                flannel_entries: false,
                ..TestbedOptions::default()
            },
        )
        .expect("building the test bed");
        let etcd = Etcd::start(tag).expect("starting etcd");
        let kv = with_network(&etcd);
        let mut b = Bed {
            bed,
            etcd,
            kv,
            state: scratch(tag),
            agents: vec![],
            gw: None,
            member: None,
            store: None,
        };
        b.start_gateway();
        for n in [1u8, 2] {
            let a = b.agent(n, b.bed.node_underlay_ip(n), b.bed.node_vtep_mac(n));
            b.agents.push(Some(a));
        }
        b
    }

    fn agent(&self, n: u8, public_ip: Ipv4Addr, vtep: MacAddr) -> FlannelNode {
        FlannelNode::start(AgentSpec {
            etcd: self.etcd.endpoint(),
            prefix: PREFIX.into(),
            netns: self.bed.ns(Ns::Node(n)),
            public_ip,
            vtep_mac: vtep.to_string(),
            subnet: self.bed.node_pod_cidr(n).parse().unwrap(),
            ttl: 86_400,
        })
        .expect("starting the node agent")
    }

    /// The bed's gateway configuration without a single `[[peer]]`, its
    /// VtepMAC generated and kept in the state dir, and the cluster.
    fn config(&mut self) -> Config {
        let mut c = self.bed.gateway_config();
        c.peer.clear();
        c.gateway.vtep_mac = MacAddr([0; 6]);
        c.state = Some(StateConfig::new(&self.state));
        c.cluster = vec![cluster_config(&self.etcd)];
        let store = Store::open(&self.state).unwrap();
        resolve_vtep_mac(&mut c, Some(&store)).unwrap();
        self.store = Some(store);
        c
    }

    fn start_gateway(&mut self) {
        let mut c = self.config();
        let member = cluster::join(&mut c, Some(&self.state))
            .expect("joining the cluster")
            .expect("a [[cluster]] is configured");
        assert_eq!(c.gateway.pod_cidr.to_string(), "10.244.0.0/24");
        let gw = Gateway::start(&c).expect("starting the gateway");
        self.member = Some(member.run(gw.rib().clone()).unwrap());
        self.gw = Some(gw);
    }

    fn stop_gateway(&mut self) {
        if let Some(m) = self.member.take() {
            m.stop();
        }
        if let Some(g) = self.gw.take() {
            g.stop();
        }
        self.store = None;
    }

    fn gw(&self) -> &Gateway {
        self.gw.as_ref().unwrap()
    }

    fn status(&self) -> &cluster::Status {
        self.member.as_ref().unwrap().status()
    }

    /// The node route for `prefix` in the FIB in force: (underlay IP, VtepMAC).
    fn route(&self, prefix: &str) -> Option<(Ipv4Addr, MacAddr, Encap)> {
        let net: Ipv4Net = prefix.parse().unwrap();
        let t = self.gw().rib().fib().load();
        let r = t.routes.iter().find(|r| r.prefix == net)?;
        match r.next_hop {
            NextHop::Peer(i) => {
                let p = &t.peers[i as usize];
                Some((p.underlay_ip, p.vtep_mac, p.encap))
            }
            _ => None,
        }
    }

    fn wait_route(&self, prefix: &str, want: Option<Ipv4Addr>) {
        wait_until(
            &format!("route {prefix} -> {want:?}"),
            Duration::from_secs(15),
            || self.route(prefix).map(|r| r.0) == want,
        );
    }

    /// Node `n`'s Flannel entries as the kernel has them (route, neighbours,
    /// FDB of flannel.1).
    fn node_entries(&self, n: u8) -> String {
        let ns = self.bed.ns(Ns::Node(n));
        let mut s = String::new();
        for args in [
            vec!["ip", "route", "show", "dev", "flannel.1"],
            vec!["ip", "neigh", "show", "dev", "flannel.1"],
            vec!["bridge", "fdb", "show", "dev", "flannel.1"],
        ] {
            let out = self.bed.exec(&ns, &args).unwrap();
            s.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        s
    }

    fn ping_ok(&self, from: &str, to: Ipv4Addr, n: u32) {
        let r = self.bed.ping(from, to, n, &PingOpts::default()).unwrap();
        assert!(
            r.all_received(),
            "{from} -> {to}: {}\ngateway:\n{}",
            r.raw,
            self.gw().counters().render()
        );
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        self.agents.clear();
        self.stop_gateway();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// Every route comes from etcd, both ways: the gateway holds the
/// 10.244.0.0/24 lease with its generated VtepMAC; the Flannel nodes
/// install route, neighbour and FDB for it from that lease alone (the bed
/// wrote none); the gateway routes to each node from the node's lease.
/// Ping and iperf3 TCP between local and remote pods both ways, no TCP
/// checksum error anywhere. Then bad datastore input is ignored, counted
/// and changes nothing, and an ipip lease becomes an IP-in-IP node.
#[test]
fn both_directions_through_etcd_alone() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("cluster datastore end to end (network namespaces, etcd, XDP)") {
        return;
    }
    let b = Bed::new("cl1");
    // The gateway's lease, as Flannel writes one.
    let (value, lease) = b.kv.get(&subnets_key("10.244.0.0-24")).unwrap().unwrap();
    let mac = b.gw().rib().context().local.vtep_mac;
    assert_eq!(
        value,
        format!(
            r#"{{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
        )
    );
    assert_ne!(lease, 0, "held under an etcd lease");
    let ttl = b.kv.lease_ttl(lease).unwrap();
    assert!(ttl > 86_000 && ttl <= 86_400, "lease TTL {ttl}");
    // Each node learned the gateway from etcd, as Flannel installs it.
    for n in [1u8, 2] {
        let e = b.node_entries(n);
        assert!(
            e.contains("10.244.0.0/24 via 10.244.0.0 onlink"),
            "node {n}: {e}"
        );
        assert!(
            e.contains(&format!("10.244.0.0 lladdr {mac} PERMANENT")),
            "node {n}: {e}"
        );
        assert!(
            e.contains(&format!("{mac} dst 198.18.0.1")),
            "node {n}: {e}"
        );
    }
    // The gateway learned the nodes.
    b.wait_route("10.244.1.0/24", Some(b.bed.node_underlay_ip(1)));
    b.wait_route("10.244.2.0/24", Some(b.bed.node_underlay_ip(2)));
    assert_eq!(b.route("10.244.1.0/24").unwrap().1, b.bed.node_vtep_mac(1));
    assert!(b.gw().wait_resolved(Duration::from_secs(5)));
    let (_, routes) = b.gw().rib().routes();
    let names: Vec<&str> = routes
        .iter()
        .filter_map(|r| r.node.as_ref().map(|n| n.name.as_str()))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for n in &names {
        assert_eq!(cluster::owner_of(n), Some("flannel"), "{n}");
    }

    let csum = |ns: &str| b.bed.nstat(ns, "TcpInCsumErrors").unwrap();
    let nss: Vec<String> = [
        Ns::LocalPod('a'),
        Ns::LocalPod('b'),
        Ns::NodePod(1),
        Ns::NodePod(2),
    ]
    .iter()
    .map(|r| b.bed.ns(*r))
    .collect();
    let csum0: Vec<u64> = nss.iter().map(|n| csum(n)).collect();
    let before = b.gw().counters();
    for n in [1u8, 2] {
        b.ping_ok(&b.bed.ns(Ns::LocalPod('a')), b.bed.remote_pod_ip(n), 5);
        b.ping_ok(&b.bed.ns(Ns::NodePod(n)), b.bed.local_pod_ip('b'), 5);
    }
    let after = b.gw().counters();
    assert_eq!(
        after.since(&before).total_drops(),
        0,
        "{}",
        after.since(&before).render()
    );
    for (server, ip, client) in [
        (Ns::NodePod(1), b.bed.remote_pod_ip(1), Ns::LocalPod('a')),
        (Ns::LocalPod('b'), b.bed.local_pod_ip('b'), Ns::NodePod(2)),
    ] {
        let r = b
            .bed
            .iperf3(&b.bed.ns(server), ip, &b.bed.ns(client), 2, false)
            .expect("iperf3 runs");
        println!(
            "iperf3 {:?} -> {ip}: {:.1} Mbit/s, {} retransmits",
            client,
            r.bits_per_second / 1e6,
            r.retransmits
        );
        assert!(r.bytes_received > 0, "{}", r.raw);
    }
    let csum1: Vec<u64> = nss.iter().map(|n| csum(n)).collect();
    assert_eq!(csum0, csum1, "TcpInCsumErrors moved ({nss:?})");
    let after = b.gw().counters();
    println!(
        "gateway counters over pings and iperf3:\n{}",
        after.since(&before).render()
    );
    for reason in [
        DropReason::NoRoute,
        DropReason::UnknownPeer,
        DropReason::InnerSourceSpoofed,
    ] {
        assert_eq!(
            after.since(&before).drop_count(reason),
            0,
            "{reason:?}\n{}",
            after.since(&before).render()
        );
    }

    // Bad datastore input: each ignored with a counter (and a log naming
    // the key); the route set does not move.
    let generation = b.gw().rib().routes().0;
    let bad0 = b.status().bad_leases.load(Ordering::Relaxed);
    let other0 = b.status().ignored_type.load(Ordering::Relaxed);
    for (key, value) in [
        ("10.244.7.0-24", "{not json"),
        (
            "10.244.8.0-23",
            r#"{"PublicIP":"198.18.0.88","BackendType":"ipip"}"#,
        ),
        (
            "10.9.9.0-24",
            r#"{"PublicIP":"198.18.0.89","BackendType":"ipip"}"#,
        ),
        (
            "10.244.9.0-24",
            r#"{"PublicIP":"198.18.0.90","BackendType":"vxlan","BackendData":{"VNI":16777216,"VtepMAC":"02:00:00:00:00:90"}}"#,
        ),
    ] {
        b.kv.put(&subnets_key(key), value, None).unwrap();
    }
    b.kv.put(
        &subnets_key("10.244.10.0-24"),
        r#"{"PublicIP":"198.18.0.91","BackendType":"wireguard","BackendData":{}}"#,
        None,
    )
    .unwrap();
    wait_until("bad leases counted", Duration::from_secs(10), || {
        b.status().bad_leases.load(Ordering::Relaxed) == bad0 + 4
            && b.status().ignored_type.load(Ordering::Relaxed) == other0 + 1
    });
    assert_eq!(b.gw().rib().routes().0, generation, "nothing applied");
    assert_eq!(b.gw().rib().routes().1.len(), routes.len());

    // An ipip lease is an IP-in-IP node (the bed's user-space node 3).
    let _peer = b.bed.start_ipip_peer().expect("IP-in-IP endpoint");
    b.kv.put(
        &subnets_key("10.244.3.0-24"),
        r#"{"PublicIP":"198.18.0.13","BackendType":"ipip"}"#,
        None,
    )
    .unwrap();
    b.wait_route("10.244.3.0/24", Some(b.bed.node_underlay_ip(3)));
    assert_eq!(b.route("10.244.3.0/24").unwrap().2, Encap::Ipip);
    assert!(b.gw().wait_resolved(Duration::from_secs(5)));
    b.ping_ok(&b.bed.ns(Ns::LocalPod('a')), b.bed.remote_pod_ip(3), 5);
}

/// Churn under traffic. A node's lease goes: traffic to it is dropped as
/// no route (counted). It comes back renumbered (new PublicIP and VtepMAC):
/// traffic resumes to the new address. Then 200 lease puts and deletes of
/// other nodes while a steady ping between unaffected pods loses nothing;
/// the time from each etcd write to the route in force is reported.
#[test]
fn churn_under_traffic() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("cluster datastore churn (network namespaces, etcd, XDP)") {
        return;
    }
    let mut b = Bed::new("cl2");
    b.wait_route("10.244.2.0/24", Some(b.bed.node_underlay_ip(2)));
    assert!(b.gw().wait_resolved(Duration::from_secs(5)));
    let pod_a = b.bed.ns(Ns::LocalPod('a'));
    let n2_pod = b.bed.remote_pod_ip(2);
    b.ping_ok(&pod_a, n2_pod, 3);

    // Node 2 leaves: its agent dies, its lease is deleted.
    b.agents[1].take().unwrap().kill();
    assert_eq!(b.kv.delete(&subnets_key("10.244.2.0-24")).unwrap(), 1);
    b.wait_route("10.244.2.0/24", None);
    let before = b.gw().counters();
    let r = b
        .bed
        .ping(
            &pod_a,
            n2_pod,
            5,
            &PingOpts {
                interval: 0.05,
                timeout_s: 1,
                ..PingOpts::default()
            },
        )
        .unwrap();
    assert_eq!(r.received, 0, "{}", r.raw);
    let dropped = b
        .gw()
        .counters()
        .since(&before)
        .drop_count(DropReason::NoRoute);
    assert!(dropped >= 5, "no_route drops {dropped}");
    println!("node 2 gone: {dropped} packets dropped as no_route");

    // It comes back renumbered: new PublicIP, new VtepMAC.
    let ns2 = b.bed.ns(Ns::Node(2));
    let new_ip = Ipv4Addr::new(198, 18, 0, 22);
    let new_mac = MacAddr([0x02, 0x0f, 0x1a, 0x22, 0x00, 0x02]);
    b.bed
        .exec(&ns2, &["ip", "addr", "flush", "dev", "eth0"])
        .unwrap();
    b.bed
        .exec(
            &ns2,
            &["ip", "addr", "add", "198.18.0.22/24", "dev", "eth0"],
        )
        .unwrap();
    let a2 = b.agent(2, new_ip, new_mac);
    b.agents[1] = Some(a2);
    b.wait_route("10.244.2.0/24", Some(new_ip));
    assert_eq!(b.route("10.244.2.0/24").unwrap().1, new_mac);
    assert!(b.gw().wait_resolved(Duration::from_secs(5)));
    b.ping_ok(&pod_a, n2_pod, 5);

    // 200 lease writes of other nodes under a steady ping a -> node 1's pod.
    let n1_pod = b.bed.remote_pod_ip(1);
    let mut latencies: Vec<Duration> = vec![];
    let (ping, writes) = std::thread::scope(|s| {
        let pinger = s.spawn(|| {
            b.bed
                .ping(
                    &pod_a,
                    n1_pod,
                    1500,
                    &PingOpts {
                        interval: 0.005,
                        timeout_s: 2,
                        ..PingOpts::default()
                    },
                )
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(200));
        let mut writes = 0;
        for i in 0..100u8 {
            let name = format!("10.244.{}.0-24", 100 + i);
            let prefix = format!("10.244.{}.0/24", 100 + i);
            let ip = Ipv4Addr::new(198, 18, 1, i);
            let value = format!(
                r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:77:00:00:00:{i:02x}"}}}}"#
            );
            let t0 = Instant::now();
            b.kv.put(&subnets_key(&name), &value, None).unwrap();
            wait_fast(|| b.route(&prefix).is_some());
            latencies.push(t0.elapsed());
            let t0 = Instant::now();
            b.kv.delete(&subnets_key(&name)).unwrap();
            wait_fast(|| b.route(&prefix).is_none());
            latencies.push(t0.elapsed());
            writes += 2;
        }
        (pinger.join().unwrap(), writes)
    });
    assert_eq!(writes, 200);
    assert!(
        ping.all_received(),
        "steady ping lost {} of {} during churn: {}",
        ping.transmitted - ping.received,
        ping.transmitted,
        ping.raw.lines().last().unwrap_or("")
    );
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "etcd write -> route in force (FIB), {} writes: p50 {:?}, p99 {:?}, max {:?}; \
         steady ping {}/{} received",
        latencies.len(),
        p(0.50),
        p(0.99),
        latencies.last().unwrap(),
        ping.received,
        ping.transmitted
    );
    let events = b.status().events.load(Ordering::Relaxed);
    assert!(events >= 200, "events {events}");
}

/// Polls `f` with a short sleep (for latency measurements), up to 10 s.
fn wait_fast(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Restart: the gateway keeps its subnet and VtepMAC, its lease stays
/// valid, the nodes see no change. Then etcd goes away under traffic:
/// forwarding continues, the membership says degraded, and once etcd is
/// back (reconnection with backoff, re-list) a lease added meanwhile is
/// learned.
#[test]
fn restart_and_losing_etcd() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("cluster datastore restart and etcd loss (network namespaces, etcd, XDP)") {
        return;
    }
    let mut b = Bed::new("cl3");
    b.wait_route("10.244.1.0/24", Some(b.bed.node_underlay_ip(1)));
    let key = subnets_key("10.244.0.0-24");
    let (value0, lease0) = b.kv.get(&key).unwrap().unwrap();
    let mac0 = b.gw().rib().context().local.vtep_mac;
    wait_until(
        "each node has the other's entries",
        Duration::from_secs(10),
        || {
            b.node_entries(1).contains("10.244.2.0/24 via")
                && b.node_entries(2).contains("10.244.1.0/24 via")
        },
    );
    let entries0 = [b.node_entries(1), b.node_entries(2)];

    b.stop_gateway();
    let (value1, lease1) = b.kv.get(&key).unwrap().unwrap();
    assert_eq!(
        (&value1, lease1),
        (&value0, lease0),
        "lease untouched by a stop"
    );
    b.start_gateway();
    let mac1 = b.gw().rib().context().local.vtep_mac;
    assert_eq!(mac1, mac0, "VtepMAC kept across the restart");
    let (value2, lease2) = b.kv.get(&key).unwrap().unwrap();
    assert_eq!(value2, value0, "same subnet, PublicIP, VtepMAC");
    assert!(b.kv.lease_ttl(lease2).unwrap() > 86_000, "lease valid");
    wait_until(
        "the previous run's etcd lease revoked",
        Duration::from_secs(10),
        || lease2 != lease0 && b.kv.lease_ttl(lease0).unwrap_or(0) == -1,
    );
    b.wait_route("10.244.1.0/24", Some(b.bed.node_underlay_ip(1)));
    b.wait_route("10.244.2.0/24", Some(b.bed.node_underlay_ip(2)));
    assert_eq!(
        [b.node_entries(1), b.node_entries(2)],
        entries0,
        "the nodes' entries did not change"
    );
    assert!(b.gw().wait_resolved(Duration::from_secs(5)));
    wait_until("traffic after the restart", Duration::from_secs(10), || {
        b.bed
            .ping(
                &b.bed.ns(Ns::LocalPod('a')),
                b.bed.remote_pod_ip(1),
                1,
                &PingOpts::default(),
            )
            .is_ok_and(|r| r.all_received())
    });
    b.ping_ok(&b.bed.ns(Ns::LocalPod('a')), b.bed.remote_pod_ip(1), 3);

    // Losing etcd under traffic.
    wait_until("in sync", Duration::from_secs(10), || {
        b.status().is_synced()
    });
    let pod_a = b.bed.ns(Ns::LocalPod('a'));
    let n1_pod = b.bed.remote_pod_ip(1);
    let disconnects0 = b.status().disconnects.load(Ordering::Relaxed);
    let ping = std::thread::scope(|s| {
        let pinger = s.spawn(|| {
            b.bed
                .ping(
                    &pod_a,
                    n1_pod,
                    400,
                    &PingOpts {
                        interval: 0.01,
                        timeout_s: 2,
                        ..PingOpts::default()
                    },
                )
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        b.etcd.stop();
        wait_until("degraded", Duration::from_secs(10), || {
            !b.status().is_synced()
        });
        pinger.join().unwrap()
    });
    assert!(
        ping.all_received(),
        "forwarding stopped while etcd was away: {}",
        ping.raw.lines().last().unwrap_or("")
    );
    assert!(b.status().disconnects.load(Ordering::Relaxed) > disconnects0);
    let t0 = Instant::now();
    b.etcd.start_again().expect("etcd back");
    let kv = b.etcd.kv().unwrap();
    kv.put(
        &subnets_key("10.244.50.0-24"),
        r#"{"PublicIP":"198.18.0.50","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:50:00:00:00:50"}}"#,
        None,
    )
    .unwrap();
    b.wait_route("10.244.50.0/24", Some(Ipv4Addr::new(198, 18, 0, 50)));
    wait_until("in sync again", Duration::from_secs(15), || {
        b.status().is_synced()
    });
    println!(
        "etcd back: resynchronised and the new lease in force {:?} after etcd restarted",
        t0.elapsed()
    );
    b.ping_ok(&pod_a, n1_pod, 3);
}

/// Datastore only (no namespaces): a network the gateway cannot serve is
/// refused with the key and the reason; two gateways racing for subnets
/// at once end with distinct leases and neither gives up; a gateway's
/// subnet survives a restart, and when its lease is gone the state dir
/// brings the same subnet back.
#[test]
fn leases_races_and_refusals() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(etcd) = etcd_or_skip("cl4") else {
        return;
    };
    let kv = etcd.kv().unwrap();
    let config_for = |ip: &str, state: Option<&PathBuf>| {
        let mut c = Config::from_toml(&format!(
            r#"
[gateway]
underlay_ip = "{ip}"
vtep_mac = "02:00:00:00:{:02x}:01"

[[underlay]]
interface = "ul0"

[[cluster]]
endpoints = ["{}"]
"#,
            ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() % 100,
            etcd.endpoint()
        ))
        .unwrap();
        if let Some(s) = state {
            c.state = Some(StateConfig::new(s));
        }
        c
    };
    // No config yet: the join waits; a network it cannot serve is refused.
    kv.put(
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.50.0.0/16","Backend":{"Type":"host-gw"}}"#,
        None,
    )
    .unwrap();
    let e = cluster::join(&mut config_for("192.0.2.1", None), None).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("/coreos.com/network/config") && e.contains("host-gw"),
        "{e}"
    );
    assert!(kv.list(&format!("{PREFIX}/subnets/")).unwrap().is_empty());

    kv.put(
        &format!("{PREFIX}/config"),
        r#"{"Network":"10.50.0.0/16","SubnetLen":24,"SubnetMin":"10.50.1.0","SubnetMax":"10.50.2.0","Backend":{"Type":"vxlan"}}"#,
        None,
    )
    .unwrap();
    // Two gateways race for the two subnets there are.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            let mut c = config_for("192.0.2.1", None);
            cluster::join(&mut c, None).unwrap().unwrap().subnet()
        });
        let b = s.spawn(|| {
            let mut c = config_for("192.0.2.2", None);
            cluster::join(&mut c, None).unwrap().unwrap().subnet()
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a, b, "distinct leases");
    let leases = kv.list(&format!("{PREFIX}/subnets/")).unwrap();
    assert_eq!(leases.len(), 2, "{leases:?}");
    println!("race: 192.0.2.1 got {a}, 192.0.2.2 got {b}");

    // A third finds none free and waits (retrying, never exiting); it gets
    // one as soon as one is deleted.
    let state = scratch("cl4");
    let third = std::thread::scope(|s| {
        let t = s.spawn(|| {
            let mut c = config_for("192.0.2.3", Some(&state));
            let m = cluster::join(&mut c, Some(&state)).unwrap().unwrap();
            (m.subnet(), c.gateway.pod_cidr)
        });
        std::thread::sleep(Duration::from_millis(1500));
        assert!(!t.is_finished(), "the third gateway must wait, not give up");
        kv.delete(&subnets_key(&format!("{}-24", a.network())))
            .unwrap();
        t.join().unwrap()
    });
    assert_eq!(third.0, a, "the freed subnet");
    assert_eq!(third.1, a, "the lease is the podCIDR");

    // Restart: the lease carrying our PublicIP is reused.
    let mut c = config_for("192.0.2.3", Some(&state));
    assert_eq!(
        cluster::join(&mut c, Some(&state))
            .unwrap()
            .unwrap()
            .subnet(),
        a
    );
    // Its lease gone (expired) and b's freed too: the state dir brings the
    // same subnet back, not merely any free one.
    kv.delete(&subnets_key(&format!("{}-24", a.network())))
        .unwrap();
    kv.delete(&subnets_key(&format!("{}-24", b.network())))
        .unwrap();
    for _ in 0..3 {
        let mut c = config_for("192.0.2.3", Some(&state));
        let m = cluster::join(&mut c, Some(&state)).unwrap().unwrap();
        assert_eq!(m.subnet(), a);
        drop(m);
        kv.delete(&subnets_key(&format!("{}-24", a.network())))
            .unwrap();
    }
    // Config checks name the key.
    let mut c = config_for("192.0.2.4", None);
    c.gateway.pod_cidr = unset_pod_cidr();
    c.cluster[0].lease_ttl = 1;
    assert_eq!(c.validate().unwrap_err().key, "cluster[0].lease_ttl");
    let _ = std::fs::remove_dir_all(&state);
}

/// The datastore as a route source beside the configuration and the API,
/// through the real binary (`overpass api-only`: same RIB, store, cluster
/// and API code as `run`, no dataplane): every route says its source; the
/// API refuses to edit or delete a lease's route (409 naming the owner) and
/// a whole-set replace keeps them; a [[peer]] for a lease's prefix wins and
/// the lease is reported as a conflict; losing etcd turns /readyz to
/// `degraded` and `overpass_cluster_synced` to 0, and both come back after
/// the resync.
#[test]
fn sources_api_and_health_through_the_binary() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut etcd) = etcd_or_skip("cl5") else {
        return;
    };
    let kv = with_network(&etcd);
    let lease = |ip: u8, mac: u8| {
        format!(
            r#"{{"PublicIP":"198.18.0.{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:00:{mac:02x}"}}}}"#
        )
    };
    kv.put(&subnets_key("10.244.1.0-24"), &lease(11, 0x11), None)
        .unwrap();
    // Owned by node1 in the configuration too: the [[peer]] wins.
    kv.put(&subnets_key("10.244.2.0-24"), &lease(12, 0x12), None)
        .unwrap();
    let s = common::Scratch::new("cl5");
    let state = s.path("state");
    let config = format!(
        r#"[gateway]
underlay_ip = "198.18.0.1"

[[underlay]]
interface = "ul0"

[[peer]]
name = "node2"
pod_cidr = "10.244.2.0/24"
underlay_ip = "198.18.0.12"
vtep_mac = "02:0b:00:00:00:02"

[state]
dir = "{}"

[api]
listen = "127.0.0.1:0"
token_file = "{}"

[[cluster]]
endpoints = ["{}"]
lease_ttl = 2
"#,
        state.display(),
        s.path("token").display(),
        etcd.endpoint()
    );
    std::fs::write(s.path("overpass.toml"), &config).unwrap();
    let mut p = common::Proc::spawn(&["api-only"], &s.path("overpass.toml"), &s.path("log"), &[]);
    let url = p.url(Duration::from_secs(30));
    let c = common::client(&url);
    let sources = |c: &overpass::api::client::Client| -> Vec<(String, String)> {
        let set = c.routes().unwrap();
        set.routes
            .iter()
            .zip(&set.sources)
            .map(|(r, s)| (r.prefix.to_string(), s.clone()))
            .collect()
    };
    wait_until("the lease's route", Duration::from_secs(10), || {
        sources(&c).contains(&("10.244.1.0/24".into(), "flannel".into()))
    });
    let mut got = sources(&c);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("10.244.1.0/24".to_string(), "flannel".to_string()),
            ("10.244.2.0/24".to_string(), "config".to_string()),
        ],
        "log:\n{}",
        p.log_text()
    );
    // The gateway's own lease is its podCIDR (the first free subnet is
    // random among the free ones: any /24 of the network but 1 and 2).
    let own: Vec<(String, String)> = kv
        .list(&format!("{PREFIX}/subnets/"))
        .unwrap()
        .into_iter()
        .filter(|(_, v)| v.contains("198.18.0.1\""))
        .collect();
    assert_eq!(own.len(), 1, "{own:?}");
    // The API may not touch the lease's route.
    let r = c
        .request("DELETE", "/api/v1/routes/10.244.1.0/24", None, None)
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body.contains("cluster flannel") && r.body.contains("10.244.1.0-24"),
        "{}",
        r.body
    );
    let body = r#"{"prefix":"10.244.1.0/24","node":{"name":"mine","underlay_ip":"198.18.0.99","vtep_mac":"02:00:00:00:00:99"}}"#;
    let r = c
        .request("PUT", "/api/v1/routes/10.244.1.0/24", Some(body), None)
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    // A whole-set replace of the rest keeps it.
    let r = c
        .request(
            "PUT",
            "/api/v1/routes",
            Some(r#"{"routes":[{"prefix":"10.244.9.0/24","node":{"name":"api9","underlay_ip":"198.18.0.90","vtep_mac":"02:00:00:00:00:90"}}]}"#),
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let mut got = sources(&c);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("10.244.1.0/24".to_string(), "flannel".to_string()),
            ("10.244.9.0/24".to_string(), "api".to_string()),
        ]
    );
    // The set as listed, sent back whole: accepted (the lease's route is
    // the one in force); with that route altered: 409.
    let set = c.routes().unwrap();
    let body = serde_json::json!({ "routes": set.routes }).to_string();
    let r = c
        .request("PUT", "/api/v1/routes", Some(&body), None)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let mut altered = set.routes.clone();
    for r in &mut altered {
        if let Some(n) = r.node.as_mut().filter(|n| n.name.starts_with("flannel/")) {
            n.underlay_ip = Ipv4Addr::new(198, 18, 0, 77);
        }
    }
    let body = serde_json::json!({ "routes": altered }).to_string();
    let r = c
        .request("PUT", "/api/v1/routes", Some(&body), None)
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    // A reload (SIGHUP) replaces the file's routes and keeps the lease's.
    p.signal(libc::SIGHUP);
    wait_until("the reload", Duration::from_secs(10), || {
        p.log_text().contains("configuration reloaded")
    });
    let mut got = sources(&c);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("10.244.1.0/24".to_string(), "flannel".to_string()),
            ("10.244.2.0/24".to_string(), "config".to_string()),
        ],
        "log:\n{}",
        p.log_text()
    );
    assert!(
        !p.log_text().contains("take effect only after a restart"),
        "the lease's podCIDR is not a change: {}",
        p.log_text()
    );
    // Health: ready and in sync; then etcd goes away.
    let readyz = || c.request("GET", "/readyz", None, None).unwrap().body;
    let synced = || {
        c.request("GET", "/metrics", None, None)
            .unwrap()
            .body
            .lines()
            .find(|l| l.starts_with("overpass_cluster_synced{"))
            .map(str::to_string)
            .unwrap_or_default()
    };
    assert!(readyz().contains("\"ready\""), "{}", readyz());
    assert_eq!(synced(), "overpass_cluster_synced{cluster=\"flannel\"} 1");
    let m = c.request("GET", "/metrics", None, None).unwrap().body;
    assert!(
        m.contains("overpass_cluster_conflicts_total{cluster=\"flannel\"} 1"),
        "the lease for the configured prefix is a conflict:\n{m}"
    );
    etcd.stop();
    wait_until("degraded", Duration::from_secs(15), || {
        readyz().contains("\"degraded\"")
    });
    assert_eq!(synced(), "overpass_cluster_synced{cluster=\"flannel\"} 0");
    assert_eq!(sources(&c).len(), 2, "the routes stay");
    etcd.start_again().unwrap();
    wait_until("ready again", Duration::from_secs(20), || {
        readyz().contains("\"ready\"")
    });
    assert_eq!(synced(), "overpass_cluster_synced{cluster=\"flannel\"} 1");
    let log = p.log_text();
    assert!(log.contains("lease not applied"), "{log}");
    // Its own lease: renewed before it lapses (2 s here), and put back
    // when deleted.
    let metric = |name: &str| -> u64 {
        c.request("GET", "/metrics", None, None)
            .unwrap()
            .body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}{{cluster=\"flannel\"}} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let renewals = metric("overpass_cluster_renewals_total");
    wait_until("two more renewals", Duration::from_secs(10), || {
        metric("overpass_cluster_renewals_total") >= renewals + 2
    });
    let (own_key, _) = own[0].clone();
    let kv = etcd.kv().unwrap();
    let (_, lease) = kv.get(&own_key).unwrap().unwrap();
    assert!(kv.lease_ttl(lease).unwrap() > 0, "the lease is alive");
    assert_eq!(kv.delete(&own_key).unwrap(), 1);
    wait_until("our lease put back", Duration::from_secs(10), || {
        kv.get(&own_key).unwrap().is_some()
    });
    assert!(metric("overpass_cluster_reregistrations_total") >= 1);
    assert!(
        p.log_text().contains("registered it again"),
        "{}",
        p.log_text()
    );
    let status = p.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

/// The watch forced past a compaction, through the binary: the gateway is
/// frozen (SIGSTOP) and its connections to etcd are cut (`ss -K`); leases
/// change and etcd compacts its history; thawed, the gateway resumes its
/// watch where it stopped, etcd answers that the revision is compacted, and
/// the gateway re-lists: its table is then exactly what the leases say.
#[test]
fn watch_past_compaction_relists_the_same_table() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("cutting the gateway's etcd connections (ss -K)") {
        return;
    }
    let mut etcd = Etcd::start("cl6").expect("starting etcd");
    let kv = with_network(&etcd);
    let lease = |n: u8| {
        format!(
            r#"{{"PublicIP":"198.18.0.{n}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"02:00:00:00:00:{n:02x}"}}}}"#
        )
    };
    for n in [11u8, 12, 13] {
        kv.put(&subnets_key(&format!("10.244.{n}.0-24")), &lease(n), None)
            .unwrap();
    }
    let s = common::Scratch::new("cl6");
    let config = format!(
        r#"[gateway]
underlay_ip = "198.18.0.1"
vtep_mac = "02:00:00:00:00:01"

[[underlay]]
interface = "ul0"

[api]
listen = "127.0.0.1:0"
token_file = "{}"

[[cluster]]
endpoints = ["{}"]
"#,
        s.path("token").display(),
        etcd.endpoint()
    );
    std::fs::write(s.path("overpass.toml"), &config).unwrap();
    let mut p = common::Proc::spawn(&["api-only"], &s.path("overpass.toml"), &s.path("log"), &[]);
    let url = p.url(Duration::from_secs(30));
    let c = common::client(&url);
    let cluster_prefixes = || -> Vec<String> {
        let set = c.routes().unwrap();
        let mut v: Vec<String> = set
            .routes
            .iter()
            .zip(&set.sources)
            .filter(|(_, s)| *s == "flannel")
            .map(|(r, _)| r.prefix.to_string())
            .collect();
        v.sort();
        v
    };
    wait_until("three lease routes", Duration::from_secs(10), || {
        cluster_prefixes().len() == 3
    });

    p.signal(libc::SIGSTOP);
    // Cut the frozen gateway's connections to etcd (and only its).
    let port = etcd.endpoint().rsplit(':').next().unwrap().to_string();
    let out = std::process::Command::new("ss")
        .args([
            "-Htnp",
            "dst",
            "127.0.0.1",
            "dport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .unwrap();
    let mine = format!("pid={},", p.pid());
    let mut cut = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.contains(&mine) {
            continue;
        }
        let local = line.split_whitespace().nth(3).unwrap();
        let sport = local.rsplit(':').next().unwrap();
        let k = std::process::Command::new("ss")
            .args([
                "-K",
                "src",
                "127.0.0.1",
                "sport",
                "=",
                &format!(":{sport}"),
                "dst",
                "127.0.0.1",
                "dport",
                "=",
                &format!(":{port}"),
            ])
            .output()
            .unwrap();
        assert!(k.status.success(), "{k:?}");
        cut += 1;
    }
    assert!(
        cut >= 1,
        "no connection of the gateway to etcd found:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Meanwhile: one node leaves, two come, one of them leaves again, a
    // lease changes; then the history is compacted away.
    let kv = etcd.kv().unwrap();
    kv.delete(&subnets_key("10.244.11.0-24")).unwrap();
    kv.put(&subnets_key("10.244.14.0-24"), &lease(14), None)
        .unwrap();
    kv.put(&subnets_key("10.244.15.0-24"), &lease(15), None)
        .unwrap();
    kv.delete(&subnets_key("10.244.15.0-24")).unwrap();
    kv.put(&subnets_key("10.244.12.0-24"), &lease(22), None)
        .unwrap();
    let compacted = kv.compact_all().unwrap();
    p.signal(libc::SIGCONT);

    let expected = vec![
        "10.244.12.0/24".to_string(),
        "10.244.13.0/24".to_string(),
        "10.244.14.0/24".to_string(),
    ];
    wait_until("the re-listed table", Duration::from_secs(20), || {
        cluster_prefixes() == expected
    });
    let set = c.routes().unwrap();
    let n12 = set
        .routes
        .iter()
        .find(|r| r.prefix.to_string() == "10.244.12.0/24")
        .unwrap();
    assert_eq!(
        n12.node.as_ref().unwrap().underlay_ip,
        Ipv4Addr::new(198, 18, 0, 22),
        "the changed lease"
    );
    let log = p.log_text();
    assert!(
        log.contains("fell behind compaction"),
        "the watch must have met the compaction (at {compacted}):\n{log}"
    );
    // The same table a fresh list gives.
    let mut listed: Vec<String> = kv
        .list(&format!("{PREFIX}/subnets/"))
        .unwrap()
        .into_iter()
        .filter(|(_, v)| !v.contains("\"198.18.0.1\""))
        .map(|(k, _)| {
            let name = k.rsplit('/').next().unwrap();
            let (a, l) = name.split_once('-').unwrap();
            format!("{a}/{l}")
        })
        .collect();
    listed.sort();
    assert_eq!(listed, expected);
    let status = p.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    drop(etcd.kv());
    etcd.stop();
}

fn sh(args: &[&str]) {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A second gateway node on the bed's switch for the standby: namespace
/// `{P}-g2` (`ul0` 198.18.0.2) with a replica of local pod a (10.244.0.2,
/// same MAC) in `{P}-q2`, wired as the bed wires the first gateway's. The
/// bed's clean-up removes both (`ovp-{tag}-*`).
fn standby_node(bed: &Testbed) -> (String, String) {
    let g2 = format!("{}-g2", bed.prefix());
    let q2 = format!("{}-q2", bed.prefix());
    let ul = bed.ns(Ns::Underlay);
    for ns in [&g2, &q2] {
        sh(&["ip", "netns", "add", ns]);
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv4.ip_forward=0",
        ]);
    }
    sh(&[
        "ip",
        "-n",
        &g2,
        "link",
        "add",
        "ul0",
        "address",
        "02:01:c6:12:00:02",
        "type",
        "veth",
        "peer",
        "name",
        "sw-g2",
        "netns",
        &ul,
        "address",
        "02:02:c6:12:00:02",
    ]);
    sh(&[
        "ip", "-n", &ul, "link", "set", "sw-g2", "master", "br0", "up",
    ]);
    sh(&[
        "ip",
        "-n",
        &g2,
        "addr",
        "add",
        "198.18.0.2/24",
        "dev",
        "ul0",
    ]);
    sh(&["ip", "-n", &g2, "link", "set", "ul0", "up"]);
    let pod_mac = bed.local_pod_mac('a').to_string();
    let host_mac = bed.local_host_end_mac('a').to_string();
    sh(&[
        "ip", "-n", &g2, "link", "add", "gwp-a", "address", &host_mac, "mtu", "1450", "type",
        "veth", "peer", "name", "eth0", "netns", &q2, "address", &pod_mac, "mtu", "1450",
    ]);
    sh(&[
        "ip",
        "-n",
        &g2,
        "addr",
        "add",
        "169.254.1.1/32",
        "dev",
        "gwp-a",
    ]);
    sh(&["ip", "-n", &g2, "link", "set", "gwp-a", "up"]);
    sh(&[
        "ip",
        "-n",
        &g2,
        "route",
        "add",
        "10.244.0.2/32",
        "dev",
        "gwp-a",
        "scope",
        "link",
    ]);
    sh(&[
        "ip",
        "-n",
        &q2,
        "addr",
        "add",
        "10.244.0.2/32",
        "dev",
        "eth0",
    ]);
    sh(&["ip", "-n", &q2, "link", "set", "eth0", "up"]);
    sh(&[
        "ip",
        "-n",
        &q2,
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    sh(&[
        "ip",
        "-n",
        &q2,
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    sh(&[
        "ip", "netns", "exec", &q2, "ethtool", "-K", "eth0", "tx", "off",
    ]);
    (g2, q2)
}

/// An active/standby pair through etcd: both gateways pin the same subnet
/// (10.244.0.0/24) under a 2 s etcd lease. The first holds it; the second
/// waits for it. SIGKILL of the active one under a steady ping from node 1's
/// pod to 10.244.0.2: its lease lapses, the standby takes the subnet with
/// its own PublicIP and VtepMAC, node 1's agent repoints its entries, and
/// the ping resumes, answered by the standby's replica of the pod. The
/// failover time and the loss are reported (goal: under 3 s).
#[test]
fn active_standby_failover_after_sigkill() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("active/standby failover (network namespaces, etcd, XDP)") {
        return;
    }
    let bed = Testbed::create_with(
        &TestbedSpec {
            tag: "cl7".into(),
            underlay_queues: 1,
        },
        &TestbedOptions {
            flannel_entries: false,
            ..TestbedOptions::default()
        },
    )
    .expect("building the test bed");
    let (g2, _q2) = standby_node(&bed);
    let etcd = Etcd::start("cl7").expect("starting etcd");
    let kv = with_network(&etcd);
    let s = common::Scratch::new("cl7");
    let config = |ns: &str, ip: &str, mac: &str, pods: &[char], state: &str| {
        let mut c = format!(
            r#"[gateway]
netns = "{ns}"
pod_cidr = "10.244.0.0/24"
underlay_ip = "{ip}"
vtep_mac = "{mac}"

[[underlay]]
interface = "ul0"

[state]
dir = "{}"

[api]
listen = "127.0.0.1:0"
token_file = "{}"

[[cluster]]
endpoints = ["{}"]
lease_ttl = 2
"#,
            s.path(state).display(),
            s.path("token").display(),
            etcd.endpoint()
        );
        for &p in pods {
            c += &format!(
                "\n[[pod]]\nname = \"{p}\"\ninterface = \"gwp-{p}\"\nip = \"{}\"\nmac = \"{}\"\n",
                bed.local_pod_ip(p),
                bed.local_pod_mac(p)
            );
        }
        c
    };
    let active_mac = "02:00:c6:12:00:01";
    let standby_mac = "02:00:c6:12:00:02";
    std::fs::write(
        s.path("active.toml"),
        config(
            &bed.ns(Ns::Gateway),
            "198.18.0.1",
            active_mac,
            &['a', 'b'],
            "a",
        ),
    )
    .unwrap();
    std::fs::write(
        s.path("standby.toml"),
        config(&g2, "198.18.0.2", standby_mac, &['a'], "b"),
    )
    .unwrap();
    let mut active = common::Proc::spawn(&["run"], &s.path("active.toml"), &s.path("a.log"), &[]);
    active.url(Duration::from_secs(30));
    let key = subnets_key("10.244.0.0-24");
    assert!(kv.get(&key).unwrap().unwrap().0.contains("198.18.0.1\""));
    // A standby waiting for the lease stops cleanly on SIGTERM.
    let waiting = common::Proc::spawn(&["run"], &s.path("standby.toml"), &s.path("w.log"), &[]);
    wait_until("a standby waits", Duration::from_secs(15), || {
        waiting.log_text().contains("leased by another node")
    });
    let t = Instant::now();
    let status = waiting.terminate(Duration::from_secs(5));
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(s.path("w.log")).unwrap_or_default()
    );
    println!("a waiting standby stopped {:?} after SIGTERM", t.elapsed());
    let mut standby = common::Proc::spawn(&["run"], &s.path("standby.toml"), &s.path("b.log"), &[]);
    wait_until(
        "the standby waits for the lease",
        Duration::from_secs(15),
        || standby.log_text().contains("leased by another node"),
    );
    let _n1 = FlannelNode::start(AgentSpec {
        etcd: etcd.endpoint(),
        prefix: PREFIX.into(),
        netns: bed.ns(Ns::Node(1)),
        public_ip: bed.node_underlay_ip(1),
        vtep_mac: bed.node_vtep_mac(1).to_string(),
        subnet: bed.node_pod_cidr(1).parse().unwrap(),
        ttl: 86_400,
    })
    .unwrap();
    let n1 = bed.ns(Ns::Node(1));
    let fdb = || {
        String::from_utf8_lossy(
            &bed.exec(&n1, &["bridge", "fdb", "show", "dev", "flannel.1"])
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert!(
        fdb().contains(&format!("{active_mac} dst 198.18.0.1")),
        "{}",
        fdb()
    );
    let pod = bed.ns(Ns::NodePod(1));
    let target = bed.local_pod_ip('a');
    // Until the active gateway has learned node 1 (its route back).
    wait_until(
        "the active gateway answers",
        Duration::from_secs(10),
        || {
            bed.ping(&pod, target, 1, &PingOpts::default())
                .is_ok_and(|r| r.all_received())
        },
    );

    const PROBES: u32 = 800;
    const INTERVAL: f64 = 0.01;
    let (ping, failover) = std::thread::scope(|sc| {
        let pinger = sc.spawn(|| {
            bed.ping(
                &pod,
                target,
                PROBES,
                &PingOpts {
                    interval: INTERVAL,
                    timeout_s: 2,
                    ..PingOpts::default()
                },
            )
            .unwrap()
        });
        std::thread::sleep(Duration::from_millis(1000));
        active.signal(libc::SIGKILL);
        let killed = Instant::now();
        let mut repointed = None;
        while killed.elapsed() < Duration::from_secs(15) {
            if fdb().contains(&format!("{standby_mac} dst 198.18.0.2")) {
                repointed = Some(killed.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (pinger.join().unwrap(), repointed)
    });
    let failover = failover.unwrap_or_else(|| {
        panic!(
            "the standby never took over; standby log:\n{}",
            standby.log_text()
        )
    });
    let lost = ping.transmitted - ping.received;
    println!(
        "failover: SIGKILL -> node 1 repointed to the standby in {failover:?}; steady ping \
         (every {INTERVAL} s) {}/{} received, {lost} lost",
        ping.received, ping.transmitted,
    );
    let value = kv.get(&key).unwrap().unwrap().0;
    assert!(
        value.contains("198.18.0.2\"") && value.contains(standby_mac),
        "{value}"
    );
    // The ping resumed: answered after the takeover (the last probes).
    let tail: Vec<&str> = ping
        .raw
        .lines()
        .filter(|l| l.contains("icmp_seq="))
        .collect();
    let last_seq = tail
        .last()
        .and_then(|l| l.split("icmp_seq=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    assert!(
        last_seq + 20 >= PROBES,
        "the ping did not resume (last reply {last_seq} of {PROBES}):\n{}",
        ping.raw.lines().last().unwrap_or("")
    );
    assert!(lost > 0, "the active gateway answered until it died");
    let url = standby.url(Duration::from_secs(5));
    let counters: serde_json::Value = common::client(&url).get("/api/v1/counters").unwrap();
    let decap = counters["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "decap_to_pod")
        .and_then(|e| e["value"].as_u64())
        .unwrap_or(0);
    assert!(decap > 0, "the standby forwarded the ping: {counters}");
    let status = standby.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

/// Two clusters at once, no hand-written route: cluster `a` (prefix /a,
/// Flannel vxlan VNI 1, port 8472) with node 1, cluster `b` (prefix /b,
/// Flannel vxlan VNI 2, port 4789) with node 2. The gateway holds a lease
/// in each (the same subnet, its pods reachable from both) and a transit
/// lease in each for the other's nodes, so node 1 routes node 2's subnet
/// through the gateway and the reverse. A ping from node 1's pod to node
/// 2's pod crosses the gateway, converted between the overlays: scapy
/// dissects the outer headers captured on the switch.
#[test]
fn two_clusters_transit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("two clusters and transit (network namespaces, etcd, XDP)") {
        return;
    }
    let bed = Testbed::create_with(
        &TestbedSpec {
            tag: "cl8".into(),
            underlay_queues: 1,
        },
        &TestbedOptions {
            flannel_entries: false,
            ..TestbedOptions::default()
        },
    )
    .expect("building the test bed");
    let etcd = Etcd::start("cl8").expect("starting etcd");
    let kv = etcd.kv().unwrap();
    kv.put(
        "/a/config",
        r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":0}}"#,
        None,
    )
    .unwrap();
    kv.put(
        "/b/config",
        r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":2,"Port":4789}}"#,
        None,
    )
    .unwrap();
    let mut config = bed.gateway_config();
    config.peer.clear();
    let cluster = |name: &str, subnet: Option<&str>| ClusterConfig {
        name: name.into(),
        prefix: format!("/{name}"),
        subnet: subnet.map(|s| s.parse().unwrap()),
        ..cluster_config(&etcd)
    };
    config.cluster = vec![cluster("a", None), cluster("b", Some("10.244.0.0/24"))];
    config.validate().unwrap();
    let members = cluster::join_all(&mut config, None).unwrap();
    assert_eq!(members.len(), 2);
    let gw = Gateway::start(&config).unwrap();
    let handles = cluster::run_all(members, gw.rib().clone()).unwrap();
    let agent = |n: u8, prefix: &str| {
        FlannelNode::start(AgentSpec {
            etcd: etcd.endpoint(),
            prefix: prefix.into(),
            netns: bed.ns(Ns::Node(n)),
            public_ip: bed.node_underlay_ip(n),
            vtep_mac: bed.node_vtep_mac(n).to_string(),
            subnet: bed.node_pod_cidr(n).parse().unwrap(),
            ttl: 86_400,
        })
        .unwrap()
    };
    let _n1 = agent(1, "/a");
    let _n2 = agent(2, "/b");
    let owner = |prefix: &str| {
        gw.rib()
            .routes()
            .1
            .iter()
            .find(|r| r.prefix.to_string() == prefix)
            .and_then(|r| r.node.as_ref())
            .and_then(|n| cluster::owner_of(&n.name).map(str::to_string))
    };
    wait_until("both clusters' routes", Duration::from_secs(15), || {
        owner("10.244.1.0/24").as_deref() == Some("a")
            && owner("10.244.2.0/24").as_deref() == Some("b")
    });
    let route_on = |n: u8, prefix: &str| {
        String::from_utf8_lossy(
            &bed.exec(&bed.ns(Ns::Node(n)), &["ip", "route", "show", prefix])
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    wait_until(
        "the transit leases installed",
        Duration::from_secs(15),
        || {
            route_on(1, "10.244.2.0/24").contains("flannel.1")
                && route_on(2, "10.244.1.0/24").contains("flannel.1")
        },
    );
    // The transit leases, as node 1 and node 2 read them.
    for (prefix, key, vni) in [("/a", "10.244.2.0-24", 1), ("/b", "10.244.1.0-24", 2)] {
        let (v, lease) = kv.get(&format!("{prefix}/subnets/{key}")).unwrap().unwrap();
        assert!(
            v.contains("\"PublicIP\":\"198.18.0.1\"") && v.contains(&format!("\"VNI\":{vni}")),
            "{prefix}/subnets/{key} = {v}"
        );
        assert_ne!(lease, 0);
    }
    assert!(gw.wait_resolved(Duration::from_secs(5)));

    // Transit under capture on the switch.
    let pcap = std::env::temp_dir().join(format!("overpass-cl8-{}.pcap", std::process::id()));
    let mut cap = overpass_testkit::testbed::KillOnDrop(
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &bed.ns(Ns::Underlay),
                "tcpdump",
                "-i",
                "any",
                "-U",
                "-n",
                "-w",
            ])
            .arg(&pcap)
            .arg("udp")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let from = bed.ns(Ns::NodePod(1));
    let r = bed
        .ping(&from, bed.remote_pod_ip(2), 5, &PingOpts::default())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    terminate_child(&mut cap);
    assert!(r.all_received(), "node 1's pod -> node 2's pod: {}", r.raw);
    // Both clusters' pods reach the local pods too.
    for n in [1u8, 2] {
        let r = bed
            .ping(
                &bed.ns(Ns::NodePod(n)),
                bed.local_pod_ip('a'),
                3,
                &PingOpts::default(),
            )
            .unwrap();
        assert!(r.all_received(), "node {n}'s pod -> local pod: {}", r.raw);
    }
    let script = r#"
import sys
from scapy.all import rdpcap, IP, UDP, ICMP, bind_layers
from scapy.layers.vxlan import VXLAN
bind_layers(UDP, VXLAN, dport=8472)
seen = set()
for p in rdpcap(sys.argv[1]):
    if IP not in p or UDP not in p or VXLAN not in p:
        continue
    o = p[IP]
    if o.src != "198.18.0.1":
        continue
    i = p[VXLAN].payload
    if IP not in i or ICMP not in i:
        continue
    seen.add((o.dst, p[UDP].dport, p[VXLAN].vni, i[IP].src, i[IP].dst, i[ICMP].type))
for s in sorted(seen):
    print(*s)
"#;
    let out = std::process::Command::new(overpass_testkit::testbed::PYTHON)
        .args(["-c", script])
        .arg(&pcap)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&pcap);
    let text = String::from_utf8_lossy(&out.stdout);
    println!(
        "gateway's transit frames (outer dst, UDP dport, VNI, inner src, inner dst, ICMP type):\n{text}"
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines()
            .any(|l| l == "198.18.0.12 4789 2 10.244.1.2 10.244.2.2 8"),
        "echo requests into cluster b (VNI 2, port 4789):\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "198.18.0.11 8472 1 10.244.2.2 10.244.1.2 0"),
        "echo replies into cluster a (VNI 1, port 8472):\n{text}"
    );
    for h in handles {
        h.stop();
    }
    gw.stop();
}

/// SIGTERM to a child (tcpdump flushes its capture file on it).
fn terminate_child(child: &mut overpass_testkit::testbed::KillOnDrop) {
    use nix::sys::signal::{Signal, kill};
    let _ = kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    );
    let _ = child.wait();
}
