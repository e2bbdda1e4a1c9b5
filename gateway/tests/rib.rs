//! The RIB: whole-set validation with field paths, FIB building, the
//! single-writer update paths (unit tests of `overpass::control::rib`, here
//! because they share the fixture world's small context).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use overpass::control::rib::*;
use overpass_dataplane::fib::{Encap, NextHop};
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
