//! The RIB: whole-set validation with field paths, FIB building, the
//! single-writer update paths (unit tests of `overpass::control::rib`, here
//! because they share the fixture world's small context).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use overpass::afxdp::latency::LatencyShared;
use overpass::control::rib::*;
use overpass::lifecycle::DataplaneView;
use overpass_dataplane::counters::{PeerStat, WorkerCounters};
use overpass_dataplane::fib::{Encap, NextHop, RoundEpoch};
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_dataplane::wire::vxlan::VNI_MAX;

fn ctx() -> RibContext {
    overpass_testkit::fixtures::small_context()
}

fn node_route(prefix: &str, ip: [u8; 4]) -> RouteSpec {
    RouteSpec {
        prefix: prefix.parse().unwrap(),
        node: Some(NodeSpec {
            name: format!("n{}", ip[3]),
            underlay_ip: Ipv4Addr::from(ip),
            encap: Encap::Vxlan,
            vni: 1,
            port: 8472,
            vtep_mac: Some(MacAddr([2, 0, 0, 0, 1, ip[3]])),
            mtu: None,
        }),
        pod: None,
    }
}

fn pod_route() -> RouteSpec {
    RouteSpec {
        prefix: "10.244.0.2/32".parse().unwrap(),
        node: None,
        pod: Some(PodSpec {
            name: "a".into(),
            interface: "gwp-a".into(),
            mac: MacAddr([2, 0, 0, 0, 0, 0x22]),
        }),
    }
}

#[test]
fn builds_and_groups_nodes() {
    let routes = vec![
        node_route("10.244.1.0/24", [198, 18, 0, 11]),
        node_route("10.245.0.0/26", [198, 18, 0, 11]),
        node_route("10.244.2.0/24", [198, 18, 0, 12]),
        pod_route(),
    ];
    let t = build_fib(
        &ctx(),
        &routes,
        &HashMap::new(),
        &mut PeerSlots::default(),
        1,
    )
    .unwrap();
    assert_eq!(t.peers.len(), 2, "two routes to one node share a peer");
    assert_eq!(t.peers[0].mtu, 1450);
    assert_eq!(
        t.lookup(u32::from(Ipv4Addr::new(10, 245, 0, 9))),
        Some(NextHop::Peer(0))
    );
    assert_eq!(
        t.lookup(u32::from(Ipv4Addr::new(10, 244, 0, 2))),
        Some(NextHop::Pod(0))
    );
    assert_eq!(t.pods[0].host_mac, MacAddr([2, 0, 0, 0, 0, 0xa]));
}

#[test]
fn errors_name_the_field() {
    let c = ctx();
    let check = |routes: Vec<RouteSpec>| {
        build_fib(&c, &routes, &HashMap::new(), &mut PeerSlots::default(), 1)
            .unwrap_err()
            .field
    };
    let mut r = node_route("10.244.1.0/24", [198, 18, 0, 11]);
    r.prefix = "10.244.1.1/24".parse().unwrap();
    assert_eq!(check(vec![r]), "routes[0].prefix");
    let mut r = node_route("10.244.1.0/24", [198, 18, 0, 11]);
    r.node.as_mut().unwrap().vni = VNI_MAX + 1;
    assert_eq!(check(vec![pod_route(), r]), "routes[1].node.vni");
    let mut r = node_route("10.244.1.0/24", [198, 18, 0, 11]);
    r.node.as_mut().unwrap().vtep_mac = None;
    assert_eq!(check(vec![r]), "routes[0].node.vtep_mac");
    let mut r = node_route("10.244.1.0/24", [198, 18, 0, 11]);
    r.node.as_mut().unwrap().mtu = Some(1480);
    assert_eq!(check(vec![r]), "routes[0].node.mtu");
    assert_eq!(
        check(vec![
            node_route("10.244.1.0/24", [198, 18, 0, 11]),
            node_route("10.244.1.0/24", [198, 18, 0, 12])
        ]),
        "routes[1].prefix"
    );
    assert_eq!(
        check(vec![node_route("10.244.0.0/16", [198, 18, 0, 11])]),
        "routes[0].prefix"
    );
    let mut other = node_route("10.244.2.0/24", [198, 18, 0, 11]);
    other.node.as_mut().unwrap().vni = 2;
    assert_eq!(
        check(vec![node_route("10.244.1.0/24", [198, 18, 0, 11]), other]),
        "routes[1].node"
    );
    let mut p = pod_route();
    p.pod.as_mut().unwrap().interface = "eth9".into();
    assert_eq!(check(vec![p]), "routes[0].pod.interface");
    let mut p = pod_route();
    p.prefix = "10.244.1.2/32".parse().unwrap();
    assert_eq!(check(vec![p]), "routes[0].prefix");
    let mut both = pod_route();
    both.node = node_route("10.244.1.0/24", [198, 18, 0, 11]).node;
    assert_eq!(check(vec![both]), "routes[0].node");
}

#[test]
fn replace_is_all_or_nothing_and_generation_guarded() {
    let rib = Rib::new(
        ctx(),
        vec![node_route("10.244.1.0/24", [198, 18, 0, 11])],
        1,
    )
    .unwrap();
    let bad = vec![
        node_route("10.244.2.0/24", [198, 18, 0, 12]),
        node_route("10.244.2.0/24", [198, 18, 0, 13]),
    ];
    assert!(rib.replace(bad, None).is_err());
    assert_eq!(rib.routes().0, 1);
    assert_eq!(
        rib.fib().load().routes.len(),
        1,
        "a refused set changes nothing"
    );
    let good = vec![node_route("10.244.2.0/24", [198, 18, 0, 12])];
    assert_eq!(
        rib.replace(good.clone(), Some(0)).unwrap_err(),
        ChangeError::Stale {
            expected: 0,
            current: 1
        }
    );
    /// A store whose disk is full.
    #[derive(Debug)]
    struct DiskFull;
    impl RouteStore for DiskFull {
        fn save_routes(&self, _: u64, _: &[RouteSpec]) -> anyhow::Result<()> {
            anyhow::bail!("disk full")
        }
    }
    let failing_commit = rib
        .clone()
        .with_store(Some(Arc::new(DiskFull)))
        .replace(good.clone(), Some(1));
    assert_eq!(
        failing_commit.unwrap_err(),
        ChangeError::Persist("disk full".into())
    );
    assert_eq!(rib.routes().0, 1, "a failed commit changes nothing");
    assert_eq!(rib.fib().load().generation, 1, "nor the FIB");
    assert_eq!(rib.replace(good, Some(1)).unwrap(), 2);
    assert_eq!(rib.fib().load().generation, 2);
    assert!(rib.set_neighbours(HashMap::from([(
        Ipv4Addr::new(198, 18, 0, 12),
        MacAddr([2, 1, 1, 1, 1, 1])
    )])));
    assert_eq!(
        rib.fib().load().peers[0].next_hop_mac,
        Some(MacAddr([2, 1, 1, 1, 1, 1]))
    );
    assert_eq!(
        rib.routes().0,
        2,
        "neighbour changes keep the route generation"
    );
}

/// Issue 15, finding 2: counter slots of removed nodes are reused. 2000
/// distinct node addresses go through the route set, at most five at a
/// time besides n11, which stays through every change: every change
/// succeeds (with slots kept for the life of the process, the 1024th new
/// address was refused), and n11 keeps its slot throughout.
#[test]
fn slots_of_removed_nodes_are_reused() {
    let n11 = node_route("10.244.1.0/24", [198, 18, 0, 11]);
    let rib = Rib::new(ctx(), vec![n11.clone()], 1).unwrap();
    let ip11 = Ipv4Addr::new(198, 18, 0, 11);
    let slot11 = rib.peer_slot(ip11).unwrap();
    let mut live: std::collections::VecDeque<RouteSpec> = Default::default();
    let mut highest_slot = 0;
    for i in 0..2000u32 {
        let [_, _, hi, lo] = i.to_be_bytes();
        live.push_back(node_route(
            &format!("10.{}.{lo}.0/24", 100 + hi),
            [198, 19, hi, lo],
        ));
        if live.len() > 5 {
            live.pop_front();
        }
        let set: Vec<RouteSpec> = std::iter::once(n11.clone())
            .chain(live.iter().cloned())
            .collect();
        rib.replace(set, None)
            .unwrap_or_else(|e| panic!("change {i} (node 198.19.{hi}.{lo}): {e}"));
        assert_eq!(rib.peer_slot(ip11), Some(slot11), "change {i}");
        for p in rib.fib().load().peers.iter() {
            highest_slot = highest_slot.max(p.slot);
        }
    }
    // Six live nodes, plus the slot retiring during each change.
    assert!(highest_slot < 8, "slots used up to {highest_slot}");
}

/// Issue 15, finding 5: the route set is bounded by `max_routes`, also at
/// start (a persisted or configured set over it is refused, naming the
/// key), and a change over it changes nothing.
#[test]
fn the_route_set_is_bounded() {
    let mut c = ctx();
    c.max_routes = 2;
    let three = vec![
        node_route("10.244.1.0/24", [198, 18, 0, 11]),
        node_route("10.244.2.0/24", [198, 18, 0, 12]),
        pod_route(),
    ];
    let e = Rib::new(c.clone(), three.clone(), 1).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        (
            "routes",
            "3 routes are more than the 2 this gateway accepts (gateway.max_routes)"
        )
    );
    let rib = Rib::new(c, three[..2].to_vec(), 1).unwrap();
    assert_eq!(
        rib.replace(three, None).unwrap_err(),
        ChangeError::Invalid(RibError::new(
            "routes",
            "3 routes are more than the 2 this gateway accepts (gateway.max_routes)"
        ))
    );
    assert_eq!(rib.routes().0, 1);
    assert_eq!(
        rib.fib().load().routes.len(),
        2,
        "a refused set changes nothing"
    );
}

/// A node's counters count from when it was given its slot: a reused slot
/// shows nothing of its previous node, and a node that stays keeps its
/// slot and counters (workers' counters written directly: no worker here).
#[test]
fn a_reused_slot_counts_from_zero_and_a_kept_node_keeps_its_counters() {
    let counters = Arc::new(WorkerCounters::default());
    let view = DataplaneView::new(vec![counters.clone()], Arc::new(LatencyShared::default()));
    let rib = Rib::new(
        ctx(),
        vec![
            node_route("10.244.1.0/24", [198, 18, 0, 11]),
            node_route("10.244.2.0/24", [198, 18, 0, 12]),
        ],
        1,
    )
    .unwrap()
    .with_peer_stats(Arc::new(view.clone()));
    let slot = |ip: u8| rib.peer_slot(Ipv4Addr::new(198, 18, 0, ip)).unwrap();
    let tx = |ip: u8| {
        let t = rib.fib().load();
        let p = t
            .peers
            .iter()
            .find(|p| p.underlay_ip == Ipv4Addr::new(198, 18, 0, ip))
            .unwrap();
        view.peer_counts(p)[PeerStat::TxPackets as usize]
    };
    let (s11, s12) = (slot(11), slot(12));
    counters.peer(s11, PeerStat::TxPackets, 7);
    counters.peer(s12, PeerStat::TxPackets, 100);
    // n12 leaves; n13 arrives in the same change: n12's slot is not free yet.
    rib.replace(
        vec![
            node_route("10.244.1.0/24", [198, 18, 0, 11]),
            node_route("10.244.3.0/24", [198, 18, 0, 13]),
        ],
        None,
    )
    .unwrap();
    assert_ne!(
        slot(13),
        s12,
        "a slot is not reused by the change that frees it"
    );
    rib.change(None, |r| {
        r.push(node_route("10.244.4.0/24", [198, 18, 0, 14]));
        Ok(())
    })
    .unwrap();
    assert_eq!(slot(14), s12, "the next change reuses it");
    assert_eq!(tx(14), 0, "n12's 100 packets are not n14's");
    counters.peer(s12, PeerStat::TxPackets, 4);
    assert_eq!(tx(14), 4);
    assert_eq!(
        (slot(11), tx(11)),
        (s11, 7),
        "n11 kept its slot and counters"
    );
}

/// A removed node's slot is reused only once the workers were seen past
/// every round that may still count for the old node: while a worker stays
/// in a round that loaded the old table (its round epoch odd), the change
/// gives up waiting after its grace period and the slot stays reserved.
#[test]
fn a_slot_stays_reserved_while_a_worker_may_still_count_for_its_node() {
    let epoch = Arc::new(RoundEpoch::default());
    let n = |prefix: &str, ip: u8| node_route(prefix, [198, 18, 0, ip]);
    let rib = Rib::new(
        ctx(),
        vec![n("10.244.1.0/24", 11), n("10.244.2.0/24", 12)],
        1,
    )
    .unwrap()
    .with_readers(vec![epoch.clone()]);
    let slot = |ip: u8| rib.peer_slot(Ipv4Addr::new(198, 18, 0, ip)).unwrap();
    let add = |prefix: &str, ip: u8| {
        rib.change(None, |r| {
            r.push(n(prefix, ip));
            Ok(())
        })
        .unwrap()
    };
    let s12 = slot(12);
    // A worker enters a round with generation 1's table and stays there.
    epoch.enter();
    rib.replace(vec![n("10.244.1.0/24", 11)], None).unwrap();
    add("10.244.3.0/24", 13);
    assert_ne!(slot(13), s12, "n12's packets may still be counted");
    epoch.leave();
    // Seen past it by this change's wait (after its build).
    add("10.244.4.0/24", 14);
    assert_ne!(slot(14), s12);
    add("10.244.5.0/24", 15);
    assert_eq!(slot(15), s12);
}
