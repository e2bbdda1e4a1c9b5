//! The gateway every target runs against: one realistic route table, built
//! once with `overpass_dataplane::fib::RouteTable::build` from the node and
//! pod definitions below, as the control plane's RIB would build it from
//! the same routes (peers in order of first use, each with the next
//! counter slot; tunnel MTU = underlay MTU − encapsulation overhead unless
//! the route sets one; pods with their port, RX queues, host-end MAC and
//! veth MTU). The fuzz crate builds from the dataplane alone, so it does
//! not go through the RIB itself; [`build_table`] asserts the few rules the
//! RIB would check that the FIB does not (MTU range, VNI width, VTEP MACs).
//!
//! ```text
//! local    podCIDR 10.244.0.0/24, underlay 198.18.0.1 (02:00:00:00:00:01), VTEP MAC 02:00:00:00:00:02
//! ports    0 underlay; pod a = port 1 (RX queues 1, 2); pod b = port 3 (RX queues 3, 4); 5 serves nothing
//! pods     10.244.0.2 (a, veth MTU 1500), 10.244.0.3 (b, veth MTU 1480)
//! node1    198.18.0.11 VXLAN VNI 1    port 8472  ← 10.244.1.0/24, 10.245.0.0/16      (Flannel-like)
//! node2    198.18.0.12 VXLAN VNI 4096 port 4789  ← 10.244.2.0/24, 172.16.0.0/12      (Calico-like)
//! node3    198.18.0.13 IP-in-IP, MTU 1400        ← 10.244.3.0/24, 172.16.5.0/24 (inside node2's /12)
//! node4    198.18.0.14 VXLAN VNI 1 port 8472, next-hop MAC unresolved ← 10.244.4.0/24
//! node5    198.18.0.15 VXLAN VNI 5 port 4789, MTU 576 (the least a route may set) ← 10.244.5.0/24
//! ```
//!
//! Tunnel MTUs are 1450 (VXLAN over the 1500-byte underlay), 1400 and 576;
//! pod MTUs 1500 and 1480. Frames up to the 2048-byte buffer exceed every
//! one of them, so a packet without DF is cut into 2 fragments for the
//! large MTUs and up to 4 for node5 (whose small MTU also gives fragments
//! in the middle, which carry only the copied options).
//!
//! Pods have two RX queues each (one worker port per veth queue, which the
//! FIB's `Pod::rx_ports` allows though the gateway today gives each veth a
//! single RX port), so the hairpin and anti-spoofing rules are exercised
//! with RX port ≠ TX port.

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use ipnet::Ipv4Net;
use overpass_dataplane::fib::{Encap, LocalNode, NextHop, Peer, Pod, PortId, Route, RouteTable};
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_dataplane::wire::vxlan::VNI_MAX;

pub const GW_UNDERLAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const GW_UNDERLAY_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
pub const GW_VTEP_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
pub const OUTER_TTL: u8 = 64;
pub const UNDERLAY_MTU: u16 = 1500;

/// Frame capacity the pipeline gets (an AF_XDP frame of 2048 bytes).
pub const BUF_LEN: usize = 2048;
/// What the buffer holds past the received frame, so a byte the pipeline
/// forgets to write shows up in the output (as `io::MemIo` does).
pub const FILL: u8 = 0xa5;

/// Every port a frame can arrive on: the underlay, both queues of both
/// pods, and a port no pod is attached to.
pub const RX_PORTS: [PortId; 6] = [0, 1, 2, 3, 4, 5];

/// A local pod as the fixture defines it.
#[derive(Debug, Clone, Copy)]
pub struct PodDef {
    pub name: &'static str,
    pub iface: &'static str,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub host_mac: MacAddr,
    pub port: PortId,
    pub rx_ports: &'static [PortId],
    /// The veth's MTU (the largest IPv4 packet the pod is sent).
    pub mtu: u16,
}

pub const PODS: [PodDef; 2] = [
    PodDef {
        name: "a",
        iface: "gwp-a",
        ip: Ipv4Addr::new(10, 244, 0, 2),
        mac: MacAddr([2, 0, 0, 0, 0, 0x22]),
        host_mac: MacAddr([2, 0, 0, 0, 0, 0x0a]),
        port: 1,
        rx_ports: &[1, 2],
        mtu: 1500,
    },
    PodDef {
        name: "b",
        iface: "gwp-b",
        ip: Ipv4Addr::new(10, 244, 0, 3),
        mac: MacAddr([2, 0, 0, 0, 0, 0x33]),
        host_mac: MacAddr([2, 0, 0, 0, 0, 0x0b]),
        port: 3,
        rx_ports: &[3, 4],
        mtu: 1480,
    },
];

/// A remote node as the fixture defines it.
#[derive(Debug, Clone, Copy)]
pub struct NodeDef {
    pub name: &'static str,
    pub ip: Ipv4Addr,
    pub encap: Encap,
    pub vni: u32,
    pub port: u16,
    pub vtep_mac: MacAddr,
    pub mtu: Option<u16>,
    /// Underlay next-hop MAC (`None`: not resolved yet).
    pub next_hop_mac: Option<MacAddr>,
    pub prefixes: &'static [&'static str],
}

pub const NODES: [NodeDef; 5] = [
    NodeDef {
        name: "node1",
        ip: Ipv4Addr::new(198, 18, 0, 11),
        encap: Encap::Vxlan,
        vni: 1,
        port: 8472,
        vtep_mac: MacAddr([2, 0, 0, 0, 1, 11]),
        mtu: None,
        next_hop_mac: Some(MacAddr([2, 0, 0, 0, 0xaa, 11])),
        prefixes: &["10.244.1.0/24", "10.245.0.0/16"],
    },
    NodeDef {
        name: "node2",
        ip: Ipv4Addr::new(198, 18, 0, 12),
        encap: Encap::Vxlan,
        vni: 4096,
        port: 4789,
        vtep_mac: MacAddr([2, 0, 0, 0, 1, 12]),
        mtu: None,
        next_hop_mac: Some(MacAddr([2, 0, 0, 0, 0xaa, 12])),
        prefixes: &["10.244.2.0/24", "172.16.0.0/12"],
    },
    NodeDef {
        name: "node3",
        ip: Ipv4Addr::new(198, 18, 0, 13),
        encap: Encap::Ipip,
        vni: 1,
        port: 8472,
        vtep_mac: MacAddr([0; 6]),
        mtu: Some(1400),
        next_hop_mac: Some(MacAddr([2, 0, 0, 0, 0xaa, 13])),
        prefixes: &["10.244.3.0/24", "172.16.5.0/24"],
    },
    NodeDef {
        name: "node4",
        ip: Ipv4Addr::new(198, 18, 0, 14),
        encap: Encap::Vxlan,
        vni: 1,
        port: 8472,
        vtep_mac: MacAddr([2, 0, 0, 0, 1, 14]),
        mtu: None,
        next_hop_mac: None,
        prefixes: &["10.244.4.0/24"],
    },
    NodeDef {
        name: "node5",
        ip: Ipv4Addr::new(198, 18, 0, 15),
        encap: Encap::Vxlan,
        vni: 5,
        port: 4789,
        vtep_mac: MacAddr([2, 0, 0, 0, 1, 15]),
        mtu: Some(576),
        next_hop_mac: Some(MacAddr([2, 0, 0, 0, 0xaa, 15])),
        prefixes: &["10.244.5.0/24"],
    },
];

/// The route table every target uses.
#[derive(Debug)]
pub struct Fixture {
    pub table: RouteTable,
}

/// The shared fixture (built on first use).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        table: build_table(),
    })
}

/// Builds the table: node `i` of [`NODES`] is peer `i` with counter slot
/// `i`, pod `j` of [`PODS`] is pod `j`; generation 1.
pub fn build_table() -> RouteTable {
    let local = LocalNode {
        pod_cidr: "10.244.0.0/24".parse().unwrap(),
        underlay_ip: GW_UNDERLAY_IP,
        underlay_mac: GW_UNDERLAY_MAC,
        vtep_mac: GW_VTEP_MAC,
        outer_ttl: OUTER_TTL,
    };
    let mut peers = vec![];
    let mut routes = vec![];
    for (i, n) in NODES.iter().enumerate() {
        // What the RIB refuses and the FIB does not check.
        let max_mtu = UNDERLAY_MTU - n.encap.overhead();
        assert!(
            n.mtu.is_none_or(|m| (576..=max_mtu).contains(&m)),
            "{}: MTU outside 576..={max_mtu}",
            n.name
        );
        assert!(n.vni <= VNI_MAX, "{}: VNI wider than 24 bits", n.name);
        assert!(
            n.encap != Encap::Vxlan || (n.vtep_mac.is_unicast() && n.vtep_mac != MacAddr([0; 6])),
            "{}: a VXLAN node needs a unicast VTEP MAC",
            n.name
        );
        peers.push(Peer {
            name: n.name.into(),
            underlay_ip: n.ip,
            encap: n.encap,
            vni: n.vni,
            port: n.port,
            // The RIB keeps a VTEP MAC for VXLAN nodes only.
            vtep_mac: if n.encap == Encap::Vxlan {
                n.vtep_mac
            } else {
                MacAddr::default()
            },
            mtu: n.mtu.unwrap_or(max_mtu),
            next_hop_mac: n.next_hop_mac,
            slot: i as u16,
            counter_base: Default::default(),
        });
        for prefix in n.prefixes {
            routes.push(Route {
                prefix: prefix.parse().unwrap(),
                next_hop: NextHop::Peer(i as u32),
            });
        }
    }
    let mut pods = vec![];
    for (j, p) in PODS.iter().enumerate() {
        pods.push(Pod {
            name: p.name.into(),
            ip: p.ip,
            mac: p.mac,
            host_mac: p.host_mac,
            port: p.port,
            rx_ports: p.rx_ports.to_vec(),
            mtu: p.mtu,
        });
        routes.push(Route {
            prefix: Ipv4Net::new(p.ip, 32).unwrap(),
            next_hop: NextHop::Pod(j as u32),
        });
    }
    let table = RouteTable::build(local, peers, pods, routes, 1)
        .expect("the fuzz fixture's route set is valid");
    assert_eq!(table.peers.len(), NODES.len());
    assert_eq!(table.pods.len(), PODS.len());
    table
}

/// Reference longest-prefix match: a linear scan of the table's routes.
/// The oracle for the DIR-16-8-8 trie the pipeline uses.
pub fn naive_lookup(t: &RouteTable, dst: Ipv4Addr) -> Option<NextHop> {
    t.routes
        .iter()
        .filter(|r| r.prefix.contains(&dst))
        .max_by_key(|r| r.prefix.prefix_len())
        .map(|r| r.next_hop)
}

/// Index into `t.peers` of the node with underlay address `ip`.
pub fn peer_index(t: &RouteTable, ip: Ipv4Addr) -> Option<usize> {
    t.peers.iter().position(|p| p.underlay_ip == ip)
}

/// The pod a frame arriving on `port` comes from.
pub fn pod_by_rx_port(port: PortId) -> Option<&'static PodDef> {
    PODS.iter().find(|p| p.rx_ports.contains(&port))
}
