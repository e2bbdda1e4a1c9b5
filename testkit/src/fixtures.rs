//! Packet fixtures: one table of {input frame, expected verdict, expected
//! output bytes, expected counter, expected XDP steering decision}, run
//! against the pipeline (`dataplane/tests/pipeline.rs`) and the XDP program
//! through BPF_PROG_TEST_RUN (`gateway/tests/xdp_fixtures.rs`). The fuzzer
//! and the micro-benchmarks keep worlds of their own, built from the
//! dataplane crate alone (fuzz/README.md says why).
//!
//! Frames are built with `etherparse` (headers, checksums), never with the
//! gateway's own `wire` code, so an expected output is an independent
//! statement of what the wire must carry.

use std::net::Ipv4Addr;

use etherparse::icmpv4::{DestUnreachableHeader, TimeExceededCode};
use etherparse::{
    EtherType, Ethernet2Header, Icmpv4Header, Icmpv4Type, IpDscp, IpEcn, IpFragOffset, IpNumber,
    Ipv4Header, UdpHeader,
};
use ipnet::Ipv4Net;

use overpass::control::rib::{NodeSpec, PodPort, PodSpec, RibContext, RouteSpec};
use overpass_dataplane::counters::{DropReason, Event};
use overpass_dataplane::fib::Encap;
use overpass_dataplane::fib::{LocalNode, PortId, RouteTable, UNDERLAY_PORT};
use overpass_dataplane::wire::ethernet::MacAddr;

// ---- The fixture world: this gateway, four remote nodes, two local pods.

pub const GW_UL_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x01, 0x01]);
pub const GW_UL_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const GW_VTEP_MAC: MacAddr = MacAddr([0x02, 0, 0xc6, 0x12, 0, 0x01]);
pub const LOCAL_CIDR: &str = "10.244.0.0/24";

/// A remote node of the fixture world.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub name: &'static str,
    pub ip: Ipv4Addr,
    /// Underlay next-hop MAC (what the kernel's neighbour table says);
    /// `None`: unresolved.
    pub mac: Option<MacAddr>,
    pub vtep: MacAddr,
    pub encap: Encap,
    pub vni: u32,
    pub port: u16,
    pub cidr: &'static str,
    /// An address of a pod behind it.
    pub pod: Ipv4Addr,
}

/// Flannel-style VXLAN node (VNI 1, port 8472).
pub const N1: Node = Node {
    name: "n1",
    ip: Ipv4Addr::new(198, 18, 0, 11),
    mac: Some(MacAddr([0x02, 0x01, 0xc6, 0x12, 0, 0x0b])),
    vtep: MacAddr([0x02, 0, 0xc6, 0x12, 0, 0x0b]),
    encap: Encap::Vxlan,
    vni: 1,
    port: 8472,
    cidr: "10.244.1.0/24",
    pod: Ipv4Addr::new(10, 244, 1, 2),
};
/// Calico-style VXLAN node (VNI 4096, port 4789).
pub const N2: Node = Node {
    name: "n2",
    ip: Ipv4Addr::new(198, 18, 0, 12),
    mac: Some(MacAddr([0x02, 0x01, 0xc6, 0x12, 0, 0x0c])),
    vtep: MacAddr([0x02, 0, 0xc6, 0x12, 0, 0x0c]),
    encap: Encap::Vxlan,
    vni: 4096,
    port: 4789,
    cidr: "10.244.2.0/24",
    pod: Ipv4Addr::new(10, 244, 2, 2),
};
/// Calico-style IP-in-IP node.
pub const N3: Node = Node {
    name: "n3",
    ip: Ipv4Addr::new(198, 18, 0, 13),
    mac: Some(MacAddr([0x02, 0x01, 0xc6, 0x12, 0, 0x0d])),
    vtep: MacAddr([0; 6]),
    encap: Encap::Ipip,
    vni: 1,
    port: 8472,
    cidr: "10.244.3.0/24",
    pod: Ipv4Addr::new(10, 244, 3, 2),
};
/// A VXLAN node whose underlay MAC is not resolved.
pub const N4: Node = Node {
    name: "n4",
    ip: Ipv4Addr::new(198, 18, 0, 14),
    mac: None,
    vtep: MacAddr([0x02, 0, 0xc6, 0x12, 0, 0x0e]),
    encap: Encap::Vxlan,
    vni: 1,
    port: 8472,
    cidr: "10.244.4.0/24",
    pod: Ipv4Addr::new(10, 244, 4, 2),
};
pub const NODES: [Node; 4] = [N1, N2, N3, N4];

/// A local pod of the fixture world.
#[derive(Debug, Clone, Copy)]
pub struct LocalPod {
    pub name: &'static str,
    pub port: PortId,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub host_mac: MacAddr,
}

/// The local pods' veth MTU (Flannel's default for a 1500-byte underlay).
pub const POD_MTU: u16 = 1450;

pub const PA: LocalPod = LocalPod {
    name: "a",
    port: 1,
    ip: Ipv4Addr::new(10, 244, 0, 2),
    mac: MacAddr([0x02, 0x0a, 0xf4, 0, 0, 0x02]),
    host_mac: MacAddr([0x02, 0x0b, 0xf4, 0, 0, 0x02]),
};
pub const PB: LocalPod = LocalPod {
    name: "b",
    port: 2,
    ip: Ipv4Addr::new(10, 244, 0, 3),
    mac: MacAddr([0x02, 0x0a, 0xf4, 0, 0, 0x03]),
    host_mac: MacAddr([0x02, 0x0b, 0xf4, 0, 0, 0x03]),
};

/// The RIB context of the fixture world.
pub fn context() -> RibContext {
    let mut pod_ports = std::collections::HashMap::new();
    for p in [PA, PB] {
        pod_ports.insert(
            format!("gwp-{}", p.name),
            PodPort {
                port: p.port,
                rx_ports: vec![p.port],
                host_mac: p.host_mac,
                mtu: POD_MTU,
            },
        );
    }
    RibContext {
        local: LocalNode {
            pod_cidr: LOCAL_CIDR.parse().expect("valid"),
            underlay_ip: GW_UL_IP,
            underlay_mac: GW_UL_MAC,
            vtep_mac: GW_VTEP_MAC,
            outer_ttl: 64,
        },
        underlay_mtu: 1500,
        pod_ports,
        max_routes: overpass::control::rib::DEFAULT_MAX_ROUTES,
    }
}

/// A smaller RIB context for control-plane tests (the RIB's unit tests,
/// the API tests): local podCIDR 10.244.0.0/24 and one pod port, `gwp-a`,
/// received on ports 1 and 2.
pub fn small_context() -> RibContext {
    let mut pod_ports = std::collections::HashMap::new();
    pod_ports.insert(
        "gwp-a".to_string(),
        PodPort {
            port: 1,
            rx_ports: vec![1, 2],
            host_mac: MacAddr([2, 0, 0, 0, 0, 0xa]),
            mtu: 1450,
        },
    );
    RibContext {
        local: LocalNode {
            pod_cidr: LOCAL_CIDR.parse().expect("valid"),
            underlay_ip: GW_UL_IP,
            underlay_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            vtep_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            outer_ttl: 64,
        },
        underlay_mtu: 1500,
        pod_ports,
        max_routes: overpass::control::rib::DEFAULT_MAX_ROUTES,
    }
}

/// The route set of the fixture world.
pub fn routes() -> Vec<RouteSpec> {
    let mut v: Vec<RouteSpec> = NODES
        .iter()
        .map(|n| RouteSpec {
            prefix: n.cidr.parse().expect("valid"),
            node: Some(NodeSpec {
                name: n.name.into(),
                underlay_ip: n.ip,
                encap: n.encap,
                vni: n.vni,
                port: n.port,
                vtep_mac: (n.encap == Encap::Vxlan).then_some(n.vtep),
                mtu: None,
            }),
            pod: None,
        })
        .collect();
    v.extend([PA, PB].iter().map(|p| RouteSpec {
        prefix: Ipv4Net::new(p.ip, 32).expect("valid"),
        node: None,
        pod: Some(PodSpec {
            name: p.name.into(),
            interface: format!("gwp-{}", p.name),
            mac: p.mac,
        }),
    }));
    v
}

/// The FIB of the fixture world, neighbours resolved as [`NODES`] say.
pub fn table() -> RouteTable {
    table_of(&routes())
}

/// The FIB of the fixture world with another route set.
pub fn table_of(routes: &[RouteSpec]) -> RouteTable {
    let neigh = NODES
        .iter()
        .filter_map(|n| n.mac.map(|m| (n.ip, m)))
        .collect();
    overpass::control::rib::build_fib(&context(), routes, &neigh, &mut Default::default(), 1)
        .expect("the fixture world is valid")
}

// ---- Frame builders (etherparse).

/// Fields of an IPv4 header a fixture sets.
#[derive(Debug, Clone, Copy)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub tos: u8,
    pub df: bool,
    pub ident: u16,
}

impl Ip {
    /// A UDP packet between pods, TTL 64, DF set, TOS 0.
    pub fn pods(src: Ipv4Addr, dst: Ipv4Addr) -> Ip {
        Ip {
            src,
            dst,
            proto: 17,
            ttl: 64,
            tos: 0,
            df: true,
            ident: 0x1234,
        }
    }

    pub fn ttl(self, ttl: u8) -> Ip {
        Ip { ttl, ..self }
    }

    pub fn tos(self, tos: u8) -> Ip {
        Ip { tos, ..self }
    }

    pub fn df(self, df: bool) -> Ip {
        Ip { df, ..self }
    }

    pub fn header(&self, payload_len: usize) -> Ipv4Header {
        let mut h = Ipv4Header::new(
            payload_len as u16,
            self.ttl,
            IpNumber(self.proto),
            self.src.octets(),
            self.dst.octets(),
        )
        .expect("payload fits");
        h.dscp = IpDscp::try_new(self.tos >> 2).expect("6 bits");
        h.ecn = IpEcn::try_new(self.tos & 3).expect("2 bits");
        h.dont_fragment = self.df;
        h.identification = self.ident;
        h.header_checksum = h.calc_header_checksum();
        h
    }

    /// Header + payload.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut v = self.header(payload.len()).to_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }
}

/// A UDP datagram (ports 40000 → 7777) with a recognisable payload: what
/// pods send each other in the fixtures.
pub fn pod_payload(len: usize) -> Vec<u8> {
    let body: Vec<u8> = (0..len.saturating_sub(8))
        .map(|i| (i * 7 + 3) as u8)
        .collect();
    let mut v = UdpHeader::without_ipv4_checksum(40000, 7777, body.len())
        .expect("fits")
        .to_bytes()
        .to_vec();
    v.extend(body);
    v
}

pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Ethernet2Header {
        source: src.0,
        destination: dst.0,
        ether_type: EtherType(ethertype),
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

pub fn vxlan_header(flags: u8, vni: u32) -> [u8; 8] {
    let v = vni.to_be_bytes();
    [flags, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// UDP header + payload, checksum 0 or computed over `csum_ips`.
pub fn udp(
    sport: u16,
    dport: u16,
    payload: &[u8],
    csum_ips: Option<(Ipv4Addr, Ipv4Addr)>,
) -> Vec<u8> {
    let mut h = UdpHeader::without_ipv4_checksum(sport, dport, payload.len()).expect("fits");
    if let Some((s, d)) = csum_ips {
        h.checksum = h
            .calc_checksum_ipv4_raw(s.octets(), d.octets(), payload)
            .expect("fits");
    }
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A VXLAN frame from `node` to this gateway carrying `inner` (an
/// Ethernet frame).
pub fn vxlan_from(node: &Node, vni: u32, flags: u8, inner: &[u8]) -> Vec<u8> {
    vxlan_from_tos(node, vni, flags, 0, inner)
}

/// [`vxlan_from`] with an outer TOS byte (DSCP + ECN).
pub fn vxlan_from_tos(node: &Node, vni: u32, flags: u8, tos: u8, inner: &[u8]) -> Vec<u8> {
    let mut vx = vxlan_header(flags, vni).to_vec();
    vx.extend_from_slice(inner);
    let u = udp(50123, node.port, &vx, None);
    let outer = Ip {
        src: node.ip,
        dst: GW_UL_IP,
        proto: 17,
        ttl: 64,
        tos,
        df: false,
        ident: 7,
    };
    eth(
        GW_UL_MAC,
        node.mac.unwrap_or(MacAddr([2, 9, 9, 9, 9, 9])),
        0x0800,
        &outer.packet(&u),
    )
}

/// The inner Ethernet frame a Flannel node sends us.
pub fn inner_eth_from(node: &Node, ip_packet: &[u8]) -> Vec<u8> {
    eth(GW_VTEP_MAC, node.vtep, 0x0800, ip_packet)
}

/// An IP-in-IP frame from `node`.
pub fn ipip_from(node: &Node, inner: &[u8]) -> Vec<u8> {
    let outer = Ip {
        src: node.ip,
        dst: GW_UL_IP,
        proto: 4,
        ttl: 64,
        tos: 0,
        df: false,
        ident: 9,
    };
    eth(
        GW_UL_MAC,
        node.mac.unwrap_or(MacAddr([2, 9, 9, 9, 9, 9])),
        0x0800,
        &outer.packet(inner),
    )
}

/// A frame a local pod sends (to its default gateway's MAC, the host end).
pub fn from_pod(pod: &LocalPod, ip_packet: &[u8]) -> Vec<u8> {
    eth(pod.host_mac, pod.mac, 0x0800, ip_packet)
}

/// What the gateway delivers to a local pod.
pub fn to_pod(pod: &LocalPod, ip_packet: &[u8]) -> Vec<u8> {
    eth(pod.mac, pod.host_mac, 0x0800, ip_packet)
}

/// What the gateway sends to `node`: outer headers per the encapsulation
/// rules (outer TOS and DF copied from the inner header, TTL 64, ident 1
/// for a fresh pipeline); the UDP source port is written as 0 (it is a
/// flow hash: [`Expect::Tx::sport_is_hash`] makes the comparison accept
/// any value in 49152–65535).
pub fn to_node(node: &Node, inner: &Ip, inner_packet: &[u8]) -> Vec<u8> {
    to_node_ident(node, inner, inner_packet, 1)
}

/// [`to_node`] with the outer identification the pipeline will use.
pub fn to_node_ident(node: &Node, inner: &Ip, inner_packet: &[u8], ident: u16) -> Vec<u8> {
    let (proto, payload) = match node.encap {
        Encap::Vxlan => {
            let mut vx = vxlan_header(0x08, node.vni).to_vec();
            vx.extend(eth(node.vtep, GW_VTEP_MAC, 0x0800, inner_packet));
            (17, udp(0, node.port, &vx, None))
        }
        Encap::Ipip => (4, inner_packet.to_vec()),
    };
    let outer = Ip {
        src: GW_UL_IP,
        dst: node.ip,
        proto,
        ttl: 64,
        tos: inner.tos,
        df: inner.df,
        ident,
    };
    eth(
        node.mac.expect("resolved"),
        GW_UL_MAC,
        0x0800,
        &outer.packet(&payload),
    )
}

/// The IPv4 packet of an ICMP error this gateway sends to `dst` about
/// `offending` (quoted up to 548 bytes), with identification `ident`.
pub fn icmp_error(
    icmp_type: Icmpv4Type,
    dst: Ipv4Addr,
    offending: &[u8],
    ident: u16,
) -> (Ip, Vec<u8>) {
    let quote = &offending[..offending.len().min(548)];
    let mut msg = Icmpv4Header::with_checksum(icmp_type, quote)
        .to_bytes()
        .to_vec();
    msg.extend_from_slice(quote);
    let ip = Ip {
        src: LOCAL_CIDR.parse::<Ipv4Net>().expect("valid").network(),
        dst,
        proto: 1,
        ttl: 64,
        tos: 0xc0,
        df: false,
        ident,
    };
    let packet = ip.packet(&msg);
    (ip, packet)
}

/// How a datagram is cut into fragments (RFC 791 §3.2), written out here
/// independently of the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Largest fragment (the next hop's MTU).
    pub mtu: usize,
    /// Offset of the datagram being cut, in bytes (non-zero when it is
    /// itself a fragment).
    pub base: usize,
    /// MF of the datagram being cut: the last piece keeps it.
    pub mf: bool,
}

impl Cut {
    pub fn mtu(mtu: usize) -> Cut {
        Cut {
            mtu,
            base: 0,
            mf: false,
        }
    }
}

/// The IPv4 fragments of `ip` carrying `payload` with header `options`,
/// cut per `cut`: data in multiples of 8 bytes, MF on all but the last
/// (which keeps the datagram's own MF), and after the first fragment only
/// the options with the copied flag (the others NOP'd). Headers by
/// etherparse.
pub fn fragments(ip: &Ip, options: &[u8], payload: &[u8], cut: Cut) -> Vec<Vec<u8>> {
    let ihl = 20 + options.len();
    let chunk = (cut.mtu - ihl) / 8 * 8;
    let mut later = options.to_vec();
    let mut i = 0;
    while i < later.len() {
        match later[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let len = later[i + 1] as usize;
                if kind & 0x80 == 0 {
                    later[i..i + len].fill(1);
                }
                i += len;
            }
        }
    }
    payload
        .chunks(chunk)
        .enumerate()
        .map(|(k, part)| {
            let mut h = ip.header(part.len());
            let opts = if k == 0 { options } else { &later[..] };
            h.options = opts.try_into().expect("valid options");
            h.set_payload_len(part.len()).expect("fits");
            h.more_fragments = cut.mf || (k + 1) * chunk < payload.len();
            h.fragment_offset =
                IpFragOffset::try_new(((cut.base + k * chunk) / 8) as u16).expect("13 bits");
            h.header_checksum = h.calc_header_checksum();
            let mut v = h.to_bytes().to_vec();
            v.extend_from_slice(part);
            v
        })
        .collect()
}

pub fn time_exceeded() -> Icmpv4Type {
    Icmpv4Type::TimeExceeded(TimeExceededCode::TtlExceededInTransit)
}

pub fn frag_needed(mtu: u16) -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: mtu,
    })
}

// ---- The table.

/// What a fixture expects of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Transmitted on `port` as exactly `frame`; `event` counted once.
    Tx {
        port: PortId,
        frame: Vec<u8>,
        event: Event,
        /// Bytes 34..36 (outer UDP source port) are a flow hash: any value
        /// in 49152–65535 is accepted there.
        sport_is_hash: bool,
        /// An ICMP error answers a dropped packet: its drop reason is
        /// counted too.
        also_dropped: Option<DropReason>,
    },
    /// Fragmented (DF clear, over the next hop's MTU): `frames` are sent on
    /// `port` in order, the last one as the verdict; `event` counted once
    /// per fragment.
    Fragments {
        port: PortId,
        frames: Vec<Vec<u8>>,
        event: Event,
        /// As for [`Expect::Tx`], per frame.
        sport_is_hash: bool,
    },
    /// Dropped, counted once under this reason.
    Drop(DropReason),
}

/// One case.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: &'static str,
    pub port: PortId,
    pub input: Vec<u8>,
    pub expect: Expect,
    /// The XDP counter the steering program increments for this frame on
    /// this port's role (`steer_*` or `pass_*`).
    pub xdp: &'static str,
}

fn tx_pod(pod: &LocalPod, frame: Vec<u8>, event: Event) -> Expect {
    Expect::Tx {
        port: pod.port,
        frame,
        event,
        sport_is_hash: false,
        also_dropped: None,
    }
}

fn tx_node(node: &Node, frame: Vec<u8>, event: Event) -> Expect {
    Expect::Tx {
        port: UNDERLAY_PORT,
        frame,
        event,
        sport_is_hash: node.encap == Encap::Vxlan,
        also_dropped: None,
    }
}

fn set(frame: &mut [u8], at: usize, bytes: &[u8]) {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Recomputes the IPv4 header checksum of the header at `at`.
fn fix_ip_checksum(frame: &mut [u8], at: usize) {
    let ihl = ((frame[at] & 0x0f) as usize) * 4;
    frame[at + 10..at + 12].copy_from_slice(&[0, 0]);
    let mut sum = 0u32;
    for c in frame[at..at + ihl].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[at + 10..at + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Every fixture.
pub fn all() -> Vec<Fixture> {
    let payload = pod_payload(40);
    let mut v = vec![];
    let drop = |name, port, input, reason, xdp| Fixture {
        name,
        port,
        input,
        expect: Expect::Drop(reason),
        xdp,
    };

    // -- Decapsulation to local pods.
    let ip = Ip::pods(N1.pod, PA.ip);
    let inner = ip.packet(&payload);
    v.push(Fixture {
        name: "vxlan n1 (vni 1, 8472) decap to pod a",
        port: UNDERLAY_PORT,
        input: vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &inner)),
        expect: tx_pod(
            &PA,
            to_pod(&PA, &ip.ttl(63).packet(&payload)),
            Event::DecapToPod,
        ),
        xdp: "steer_vxlan",
    });
    let ip = Ip::pods(N2.pod, PB.ip).tos(0xb8).ttl(9);
    v.push(Fixture {
        name: "vxlan n2 (vni 4096, 4789) decap to pod b, TOS kept",
        port: UNDERLAY_PORT,
        input: vxlan_from(&N2, 4096, 0x08, &inner_eth_from(&N2, &ip.packet(&payload))),
        expect: tx_pod(
            &PB,
            to_pod(&PB, &ip.ttl(8).packet(&payload)),
            Event::DecapToPod,
        ),
        xdp: "steer_vxlan",
    });
    // A Linux VTEP fills the outer UDP checksum by default: it must verify.
    let ip = Ip::pods(N1.pod, PA.ip);
    let mut input = vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &ip.packet(&payload)));
    {
        let udp_end = input.len();
        let dgram = udp(50123, 8472, &input[42..udp_end], Some((N1.ip, GW_UL_IP)));
        set(&mut input, 34, &dgram[..8]);
    }
    let good_csum = input.clone();
    v.push(Fixture {
        name: "vxlan with a valid outer UDP checksum",
        port: UNDERLAY_PORT,
        input: good_csum.clone(),
        expect: tx_pod(
            &PA,
            to_pod(&PA, &ip.ttl(63).packet(&payload)),
            Event::DecapToPod,
        ),
        xdp: "steer_vxlan",
    });
    let mut bad_csum = good_csum;
    bad_csum[40] ^= 0x55;
    v.push(drop(
        "vxlan with a wrong outer UDP checksum",
        UNDERLAY_PORT,
        bad_csum,
        DropReason::UdpChecksum,
        "steer_vxlan",
    ));
    v.push(Fixture {
        name: "vxlan reserved bits set are ignored (RFC 7348)",
        port: UNDERLAY_PORT,
        input: vxlan_from(
            &N1,
            1,
            0x08 | 0x40,
            &inner_eth_from(&N1, &ip.packet(&payload)),
        ),
        expect: tx_pod(
            &PA,
            to_pod(&PA, &ip.ttl(63).packet(&payload)),
            Event::DecapToPod,
        ),
        xdp: "steer_vxlan",
    });
    // Ethernet padding after a short outer packet is not part of the inner.
    let mut padded = vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &ip.packet(&payload)));
    padded.extend_from_slice(&[0xee; 6]);
    v.push(Fixture {
        name: "vxlan frame with trailing Ethernet padding",
        port: UNDERLAY_PORT,
        input: padded,
        expect: tx_pod(
            &PA,
            to_pod(&PA, &ip.ttl(63).packet(&payload)),
            Event::DecapToPod,
        ),
        xdp: "steer_vxlan",
    });

    // -- Encapsulation toward remote nodes.
    let ip = Ip::pods(PA.ip, N1.pod);
    v.push(Fixture {
        name: "pod a encap to n1 (flannel vxlan)",
        port: PA.port,
        input: from_pod(&PA, &ip.packet(&payload)),
        expect: tx_node(
            &N1,
            to_node(&N1, &ip, &ip.ttl(63).packet(&payload)),
            Event::EncapToPeer,
        ),
        xdp: "steer_pod",
    });
    let ip = Ip::pods(PB.ip, N2.pod).tos(0xb9).df(false);
    v.push(Fixture {
        name: "pod b encap to n2 (calico vxlan), DSCP+ECN copied, DF clear",
        port: PB.port,
        input: from_pod(&PB, &ip.packet(&payload)),
        expect: tx_node(
            &N2,
            to_node(&N2, &ip, &ip.ttl(63).packet(&payload)),
            Event::EncapToPeer,
        ),
        xdp: "steer_pod",
    });
    let ip = Ip::pods(PA.ip, N1.pod);
    let big = pod_payload(1450 - 20);
    v.push(Fixture {
        name: "pod a encap to n1 at exactly the tunnel MTU (1450)",
        port: PA.port,
        input: from_pod(&PA, &ip.packet(&big)),
        expect: tx_node(
            &N1,
            to_node(&N1, &ip, &ip.ttl(63).packet(&big)),
            Event::EncapToPeer,
        ),
        xdp: "steer_pod",
    });
    let ip = Ip::pods(PA.ip, PB.ip);
    v.push(Fixture {
        name: "pod a to pod b on this node",
        port: PA.port,
        input: from_pod(&PA, &ip.packet(&payload)),
        expect: tx_pod(
            &PB,
            to_pod(&PB, &ip.ttl(63).packet(&payload)),
            Event::PodToPod,
        ),
        xdp: "steer_pod",
    });

    // -- Drops: outer headers.
    let good = vxlan_from(
        &N1,
        1,
        0x08,
        &inner_eth_from(&N1, &Ip::pods(N1.pod, PA.ip).packet(&payload)),
    );
    v.push(drop(
        "truncated outer Ethernet",
        UNDERLAY_PORT,
        good[..10].to_vec(),
        DropReason::EthTruncated,
        "pass_malformed",
    ));
    v.push(drop(
        "truncated outer IPv4",
        UNDERLAY_PORT,
        good[..24].to_vec(),
        DropReason::Ipv4Malformed,
        "pass_malformed",
    ));
    let mut t = good.clone();
    let too_long = (t.len() - 14 + 40) as u16;
    set(&mut t, 16, &too_long.to_be_bytes());
    fix_ip_checksum(&mut t, 14);
    v.push(drop(
        "outer IPv4 total length past the frame",
        UNDERLAY_PORT,
        t,
        DropReason::Ipv4Malformed,
        "steer_vxlan",
    ));
    let mut t = good.clone();
    t[24] ^= 1;
    v.push(drop(
        "outer IPv4 bad header checksum",
        UNDERLAY_PORT,
        t,
        DropReason::Ipv4Checksum,
        "steer_vxlan",
    ));
    // Outer header with 4 bytes of options (NOP NOP NOP EOL).
    let mut t = good[..34].to_vec();
    t.extend_from_slice(&[1, 1, 1, 0]);
    t.extend_from_slice(&good[34..]);
    t[14] = 0x46;
    let tl = u16::from_be_bytes([t[16], t[17]]) + 4;
    set(&mut t, 16, &tl.to_be_bytes());
    fix_ip_checksum(&mut t, 14);
    v.push(drop(
        "outer IPv4 with options",
        UNDERLAY_PORT,
        t,
        DropReason::OuterIpv4Options,
        "steer_vxlan",
    ));
    let mut t = good.clone();
    t[20] |= 0x20; // MF
    fix_ip_checksum(&mut t, 14);
    v.push(drop(
        "outer first fragment (MF)",
        UNDERLAY_PORT,
        t,
        DropReason::OuterFragment,
        "steer_vxlan",
    ));
    let mut t = good.clone();
    set(&mut t, 20, &[0x00, 0x10]); // offset 128 bytes
    fix_ip_checksum(&mut t, 14);
    v.push(drop(
        "outer non-first fragment",
        UNDERLAY_PORT,
        t,
        DropReason::OuterFragment,
        "pass_fragment",
    ));
    let mut t = good.clone();
    set(&mut t, 30, &[198, 18, 0, 2]);
    fix_ip_checksum(&mut t, 14);
    v.push(drop(
        "outer destination is not this gateway",
        UNDERLAY_PORT,
        t,
        DropReason::OuterNotLocal,
        "steer_vxlan",
    ));
    let mut t = good.clone();
    set(&mut t, 26, &[198, 18, 0, 99]);
    fix_ip_checksum(&mut t, 14);
    v.push(drop(
        "tunnel from an unknown underlay address",
        UNDERLAY_PORT,
        t,
        DropReason::UnknownPeer,
        "steer_vxlan",
    ));
    let mut t = good.clone();
    t[23] = 6; // TCP
    fix_ip_checksum(&mut t, 14);
    v.push(drop(
        "outer TCP from a peer",
        UNDERLAY_PORT,
        t,
        DropReason::NotTunnel,
        "pass_not_tunnel",
    ));
    let mut t = good.clone();
    t[23] = 4; // IP-in-IP from a VXLAN node
    fix_ip_checksum(&mut t, 14);
    v.push(drop(
        "ip-in-ip from a vxlan node",
        UNDERLAY_PORT,
        t,
        DropReason::EncapMismatch,
        "steer_ipip",
    ));
    let mut t = good.clone();
    set(&mut t, 38, &[0, 4]); // UDP length 4 < 8
    v.push(drop(
        "outer UDP length below its header",
        UNDERLAY_PORT,
        t,
        DropReason::UdpMalformed,
        "steer_vxlan",
    ));
    let mut t = good.clone();
    set(&mut t, 36, &4789u16.to_be_bytes());
    v.push(drop(
        "vxlan to 4789 from an 8472 node",
        UNDERLAY_PORT,
        t,
        DropReason::UnknownVni,
        "steer_vxlan",
    ));
    v.push(drop(
        "vxlan without the I flag",
        UNDERLAY_PORT,
        {
            let mut t = good.clone();
            t[42] = 0x00;
            t
        },
        DropReason::VxlanNoIFlag,
        "steer_vxlan",
    ));
    v.push(drop(
        "vxlan with an unknown VNI",
        UNDERLAY_PORT,
        {
            let mut t = good.clone();
            set(&mut t, 46, &[0, 0, 2]);
            t
        },
        DropReason::UnknownVni,
        "steer_vxlan",
    ));
    // UDP payload of 4 bytes: shorter than a VXLAN header.
    let short = {
        let u = udp(50123, 8472, &[0x08, 0, 0, 0], None);
        let outer = Ip {
            src: N1.ip,
            dst: GW_UL_IP,
            proto: 17,
            ttl: 64,
            tos: 0,
            df: false,
            ident: 7,
        };
        eth(GW_UL_MAC, N1.mac.unwrap(), 0x0800, &outer.packet(&u))
    };
    // The UDP datagram ends before the inner packet does, the outer IPv4
    // length covering the rest: the inner packet is bounded by UDP (as the
    // kernel trims to it), so it is truncated (found by the fuzzer).
    let mut t = good.clone();
    let udp_len = u16::from_be_bytes([t[38], t[39]]) - 10;
    set(&mut t, 38, &udp_len.to_be_bytes());
    v.push(drop(
        "vxlan whose UDP length ends inside the inner packet",
        UNDERLAY_PORT,
        t,
        DropReason::Ipv4Malformed,
        "steer_vxlan",
    ));
    v.push(drop(
        "truncated VXLAN header",
        UNDERLAY_PORT,
        short,
        DropReason::VxlanTruncated,
        "steer_vxlan",
    ));
    v.push(drop(
        "non-IPv4 on the underlay",
        UNDERLAY_PORT,
        eth(GW_UL_MAC, N1.mac.unwrap(), 0x86dd, &[0u8; 60]),
        DropReason::NotIpv4,
        "pass_non_ipv4",
    ));

    // -- Drops: inner headers.
    let inner_ok = Ip::pods(N1.pod, PA.ip).packet(&payload);
    v.push(drop(
        "truncated inner Ethernet",
        UNDERLAY_PORT,
        vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &inner_ok)[..10]),
        DropReason::InnerTruncated,
        "steer_vxlan",
    ));
    v.push(drop(
        "inner destination MAC is not our VTEP",
        UNDERLAY_PORT,
        vxlan_from(
            &N1,
            1,
            0x08,
            &eth(MacAddr([2, 3, 4, 5, 6, 7]), N1.vtep, 0x0800, &inner_ok),
        ),
        DropReason::InnerDstMac,
        "steer_vxlan",
    ));
    let mut tagged = eth(GW_VTEP_MAC, N1.vtep, 0x8100, &[0, 5, 0x08, 0x00]);
    tagged.extend_from_slice(&inner_ok);
    v.push(drop(
        "inner VLAN tag",
        UNDERLAY_PORT,
        vxlan_from(&N1, 1, 0x08, &tagged),
        DropReason::InnerVlan,
        "steer_vxlan",
    ));
    v.push(drop(
        "inner IPv6",
        UNDERLAY_PORT,
        vxlan_from(
            &N1,
            1,
            0x08,
            &eth(GW_VTEP_MAC, N1.vtep, 0x86dd, &[0x60; 48]),
        ),
        DropReason::InnerNotIpv4,
        "steer_vxlan",
    ));
    v.push(drop(
        "inner ARP",
        UNDERLAY_PORT,
        vxlan_from(&N1, 1, 0x08, &eth(GW_VTEP_MAC, N1.vtep, 0x0806, &[0; 28])),
        DropReason::InnerNotIpv4,
        "steer_vxlan",
    ));
    v.push(drop(
        "truncated inner IPv4",
        UNDERLAY_PORT,
        vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &inner_ok[..12])),
        DropReason::Ipv4Malformed,
        "steer_vxlan",
    ));
    let mut bad_inner = inner_ok.clone();
    bad_inner[10] ^= 0xff;
    v.push(drop(
        "inner IPv4 bad header checksum",
        UNDERLAY_PORT,
        vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &bad_inner)),
        DropReason::Ipv4Checksum,
        "steer_vxlan",
    ));

    // -- Drops: routing.
    v.push(drop(
        "no route for the inner destination",
        PA.port,
        from_pod(
            &PA,
            &Ip::pods(PA.ip, Ipv4Addr::new(10, 244, 9, 9)).packet(&payload),
        ),
        DropReason::NoRoute,
        "steer_pod",
    ));
    v.push(drop(
        "unused address in the local podCIDR",
        UNDERLAY_PORT,
        vxlan_from(
            &N1,
            1,
            0x08,
            &inner_eth_from(
                &N1,
                &Ip::pods(N1.pod, Ipv4Addr::new(10, 244, 0, 77)).packet(&payload),
            ),
        ),
        DropReason::NoRoute,
        "steer_vxlan",
    ));
    v.push(drop(
        "pod sends from an address not its own",
        PA.port,
        from_pod(
            &PA,
            &Ip::pods(Ipv4Addr::new(10, 244, 0, 66), N1.pod).packet(&payload),
        ),
        DropReason::PodSourceMismatch,
        "steer_pod",
    ));
    v.push(drop(
        "remote node's packet routed back to it",
        UNDERLAY_PORT,
        vxlan_from(
            &N1,
            1,
            0x08,
            &inner_eth_from(
                &N1,
                &Ip::pods(N1.pod, Ipv4Addr::new(10, 244, 1, 9)).packet(&payload),
            ),
        ),
        DropReason::Hairpin,
        "steer_vxlan",
    ));
    v.push(drop(
        "next hop MAC unresolved",
        PA.port,
        from_pod(&PA, &Ip::pods(PA.ip, N4.pod).packet(&payload)),
        DropReason::NeighUnresolved,
        "steer_pod",
    ));
    v.push(drop(
        "ARP from a pod reaching the pipeline",
        PA.port,
        eth(PA.host_mac, PA.mac, 0x0806, &[0; 28]),
        DropReason::NotIpv4,
        "pass_arp",
    ));
    v.extend(issue3(&payload));
    v.extend(reverse_path(&payload));
    v
}

/// A node's address as its VTEP carries it: the network address of its
/// podCIDR (Flannel's `flannel.1`, the source of its host's own traffic and
/// of the ICMP errors its kernel sends us).
pub fn vtep_ip(node: &Node) -> Ipv4Addr {
    node.cidr.parse::<Ipv4Net>().expect("valid").network()
}

/// Strict reverse-path filtering of tunnel traffic (`gateway.rp_filter`,
/// on by default): the inner source must route back to the node the packet
/// came from.
fn reverse_path(payload: &[u8]) -> Vec<Fixture> {
    let mut v = vec![];
    let spoofed = |name, input, xdp| Fixture {
        name,
        port: UNDERLAY_PORT,
        input,
        expect: Expect::Drop(DropReason::InnerSourceSpoofed),
        xdp,
    };
    let from_n1 = |src: Ipv4Addr, dst: Ipv4Addr| {
        let inner = Ip::pods(src, dst).packet(payload);
        vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &inner))
    };
    let from_n3 =
        |src: Ipv4Addr, dst: Ipv4Addr| ipip_from(&N3, &Ip::pods(src, dst).packet(payload));
    let outside = Ipv4Addr::new(192, 0, 2, 1);
    v.push(spoofed(
        "vxlan n1 with an inner source in n2's podCIDR",
        from_n1(N2.pod, PA.ip),
        "steer_vxlan",
    ));
    v.push(spoofed(
        "vxlan n1 with an inner source outside every route",
        from_n1(outside, PA.ip),
        "steer_vxlan",
    ));
    v.push(spoofed(
        "vxlan n1 with a local pod's address as inner source",
        from_n1(PB.ip, PA.ip),
        "steer_vxlan",
    ));
    v.push(spoofed(
        "vxlan n1 in transit to n3 with an inner source in n2's podCIDR",
        from_n1(N2.pod, N3.pod),
        "steer_vxlan",
    ));
    v.push(spoofed(
        "ip-in-ip n3 with an inner source in n1's podCIDR",
        from_n3(N1.pod, PA.ip),
        "steer_ipip",
    ));
    v.push(spoofed(
        "ip-in-ip n3 with an inner source outside every route",
        from_n3(outside, PA.ip),
        "steer_ipip",
    ));
    // What a Flannel node really sends from outside its pods: its host's
    // traffic and its kernel's ICMP errors, from its flannel.1 address.
    let ip = Ip::pods(vtep_ip(&N1), PA.ip);
    v.push(Fixture {
        name: "vxlan n1 host traffic from its flannel.1 address (10.244.1.0) to pod a",
        port: UNDERLAY_PORT,
        input: vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &ip.packet(payload))),
        expect: tx_pod(
            &PA,
            to_pod(&PA, &ip.ttl(63).packet(payload)),
            Event::DecapToPod,
        ),
        xdp: "steer_vxlan",
    });
    let quoted = Ip::pods(PA.ip, N1.pod).ttl(1).packet(payload);
    let mut msg = Icmpv4Header::with_checksum(time_exceeded(), &quoted[..28])
        .to_bytes()
        .to_vec();
    msg.extend_from_slice(&quoted[..28]);
    let ip = Ip {
        proto: 1,
        tos: 0xc0,
        df: false,
        ..Ip::pods(vtep_ip(&N1), PA.ip)
    };
    v.push(Fixture {
        name: "vxlan n1 kernel's time exceeded from its flannel.1 address to pod a",
        port: UNDERLAY_PORT,
        input: vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &ip.packet(&msg))),
        expect: tx_pod(
            &PA,
            to_pod(&PA, &ip.ttl(63).packet(&msg)),
            Event::DecapToPod,
        ),
        xdp: "steer_vxlan",
    });
    let ip = Ip::pods(vtep_ip(&N3), N1.pod);
    v.push(Fixture {
        name: "transit ip-in-ip n3 -> vxlan n1 from n3's tunnel address",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, &ip.packet(payload)),
        expect: tx_node(
            &N1,
            to_node(&N1, &ip, &ip.ttl(63).packet(payload)),
            Event::Transit,
        ),
        xdp: "steer_ipip",
    });
    v
}

/// IP-in-IP, transit, ICMP and ECN cases.
fn issue3(payload: &[u8]) -> Vec<Fixture> {
    let mut v = vec![];
    let icmp_tx = |port, frame, event, reason, sport_is_hash| Expect::Tx {
        port,
        frame,
        event,
        sport_is_hash,
        also_dropped: Some(reason),
    };

    // -- IP-in-IP (RFC 2003, Calico's tunl0 conventions).
    let ip = Ip::pods(N3.pod, PA.ip).tos(0x28);
    v.push(Fixture {
        name: "ip-in-ip n3 decap to pod a",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, &ip.packet(payload)),
        expect: tx_pod(
            &PA,
            to_pod(&PA, &ip.ttl(63).packet(payload)),
            Event::DecapToPod,
        ),
        xdp: "steer_ipip",
    });
    let ip = Ip::pods(PB.ip, N3.pod).tos(0x2a);
    v.push(Fixture {
        name: "pod b encap to n3 (ip-in-ip): TOS and DF copied",
        port: PB.port,
        input: from_pod(&PB, &ip.packet(payload)),
        expect: tx_node(
            &N3,
            to_node(&N3, &ip, &ip.ttl(63).packet(payload)),
            Event::EncapToPeer,
        ),
        xdp: "steer_pod",
    });
    let ip = Ip::pods(PA.ip, N3.pod).df(false);
    v.push(Fixture {
        name: "pod a encap to n3 (ip-in-ip), DF clear stays clear",
        port: PA.port,
        input: from_pod(&PA, &ip.packet(payload)),
        expect: tx_node(
            &N3,
            to_node(&N3, &ip, &ip.ttl(63).packet(payload)),
            Event::EncapToPeer,
        ),
        xdp: "steer_pod",
    });
    v.push(Fixture {
        name: "vxlan packet from the ip-in-ip node",
        port: UNDERLAY_PORT,
        input: vxlan_from(
            &N3,
            1,
            0x08,
            &inner_eth_from(&N3, &Ip::pods(N3.pod, PA.ip).packet(payload)),
        ),
        expect: Expect::Drop(DropReason::EncapMismatch),
        xdp: "steer_vxlan",
    });
    v.push(Fixture {
        name: "truncated ip-in-ip inner header",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, &Ip::pods(N3.pod, PA.ip).packet(payload)[..12]),
        expect: Expect::Drop(DropReason::Ipv4Malformed),
        xdp: "steer_ipip",
    });

    // -- Transit: one remote node to another, re-encapsulated.
    let ip = Ip::pods(N1.pod, N3.pod);
    v.push(Fixture {
        name: "transit vxlan n1 -> ip-in-ip n3",
        port: UNDERLAY_PORT,
        input: vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &ip.packet(payload))),
        expect: tx_node(
            &N3,
            to_node(&N3, &ip, &ip.ttl(63).packet(payload)),
            Event::Transit,
        ),
        xdp: "steer_vxlan",
    });
    let ip = Ip::pods(N3.pod, N1.pod).tos(0x10);
    v.push(Fixture {
        name: "transit ip-in-ip n3 -> vxlan n1",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, &ip.packet(payload)),
        expect: tx_node(
            &N1,
            to_node(&N1, &ip, &ip.ttl(63).packet(payload)),
            Event::Transit,
        ),
        xdp: "steer_ipip",
    });
    let ip = Ip::pods(N1.pod, N2.pod);
    v.push(Fixture {
        name: "transit vxlan n1 (flannel vni 1) -> vxlan n2 (calico vni 4096)",
        port: UNDERLAY_PORT,
        input: vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &ip.packet(payload))),
        expect: tx_node(
            &N2,
            to_node(&N2, &ip, &ip.ttl(63).packet(payload)),
            Event::Transit,
        ),
        xdp: "steer_vxlan",
    });

    // -- TTL expiry answered with ICMP time exceeded (RFC 1812).
    let offending = Ip::pods(PA.ip, N1.pod).ttl(1).packet(payload);
    let (_, icmp) = icmp_error(time_exceeded(), PA.ip, &offending, 1);
    v.push(Fixture {
        name: "pod TTL 1 answered with time exceeded",
        port: PA.port,
        input: from_pod(&PA, &offending),
        expect: icmp_tx(
            PA.port,
            to_pod(&PA, &icmp),
            Event::IcmpTimeExceeded,
            DropReason::TtlExpired,
            false,
        ),
        xdp: "steer_pod",
    });
    let offending = Ip::pods(PA.ip, N1.pod).ttl(0).packet(payload);
    let (_, icmp) = icmp_error(time_exceeded(), PA.ip, &offending, 1);
    v.push(Fixture {
        name: "pod TTL 0 is never encapsulated: time exceeded",
        port: PA.port,
        input: from_pod(&PA, &offending),
        expect: icmp_tx(
            PA.port,
            to_pod(&PA, &icmp),
            Event::IcmpTimeExceeded,
            DropReason::TtlExpired,
            false,
        ),
        xdp: "steer_pod",
    });
    let offending = Ip::pods(N1.pod, PA.ip).ttl(1).packet(payload);
    let (icmp_ip, icmp) = icmp_error(time_exceeded(), N1.pod, &offending, 1);
    v.push(Fixture {
        name: "remote TTL 1: time exceeded encapsulated back to n1",
        port: UNDERLAY_PORT,
        input: vxlan_from(&N1, 1, 0x08, &inner_eth_from(&N1, &offending)),
        expect: icmp_tx(
            UNDERLAY_PORT,
            to_node_ident(&N1, &icmp_ip, &icmp, 2),
            Event::IcmpTimeExceeded,
            DropReason::TtlExpired,
            true,
        ),
        xdp: "steer_vxlan",
    });
    let offending = Ip::pods(N3.pod, N1.pod).ttl(1).packet(payload);
    let (icmp_ip, icmp) = icmp_error(time_exceeded(), N3.pod, &offending, 1);
    v.push(Fixture {
        name: "transit TTL 1 from ip-in-ip n3: time exceeded back over ip-in-ip",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, &offending),
        expect: icmp_tx(
            UNDERLAY_PORT,
            to_node_ident(&N3, &icmp_ip, &icmp, 2),
            Event::IcmpTimeExceeded,
            DropReason::TtlExpired,
            false,
        ),
        xdp: "steer_ipip",
    });
    // No ICMP error about an ICMP error.
    let mut err_msg = Icmpv4Header::with_checksum(time_exceeded(), &[0u8; 28])
        .to_bytes()
        .to_vec();
    err_msg.extend_from_slice(&[0u8; 28]);
    let offending = Ip {
        proto: 1,
        ..Ip::pods(PA.ip, N1.pod).ttl(1)
    }
    .packet(&err_msg);
    v.push(Fixture {
        name: "no time exceeded about an ICMP error",
        port: PA.port,
        input: from_pod(&PA, &offending),
        expect: Expect::Drop(DropReason::TtlExpired),
        xdp: "steer_pod",
    });
    let echo = Icmpv4Header::with_checksum(
        Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 7, seq: 1 }),
        &[1, 2, 3, 4],
    );
    let mut echo_msg = echo.to_bytes().to_vec();
    echo_msg.extend_from_slice(&[1, 2, 3, 4]);
    let offending = Ip {
        proto: 1,
        ..Ip::pods(PA.ip, N1.pod).ttl(1)
    }
    .packet(&echo_msg);
    let (_, icmp) = icmp_error(time_exceeded(), PA.ip, &offending, 1);
    v.push(Fixture {
        name: "echo request with TTL 1 gets time exceeded (traceroute -I)",
        port: PA.port,
        input: from_pod(&PA, &offending),
        expect: icmp_tx(
            PA.port,
            to_pod(&PA, &icmp),
            Event::IcmpTimeExceeded,
            DropReason::TtlExpired,
            false,
        ),
        xdp: "steer_pod",
    });

    // -- Path MTU: DF set and too big for the tunnel (RFC 1191).
    let offending = Ip::pods(PA.ip, N1.pod).packet(&pod_payload(1451 - 20));
    let (_, icmp) = icmp_error(frag_needed(1450), PA.ip, &offending, 1);
    v.push(Fixture {
        name: "pod DF packet over the vxlan tunnel MTU: frag needed, mtu 1450",
        port: PA.port,
        input: from_pod(&PA, &offending),
        expect: icmp_tx(
            PA.port,
            to_pod(&PA, &icmp),
            Event::IcmpFragNeeded,
            DropReason::TooBig,
            false,
        ),
        xdp: "steer_pod",
    });
    let offending = Ip::pods(PA.ip, N3.pod).packet(&pod_payload(1481 - 20));
    let (_, icmp) = icmp_error(frag_needed(1480), PA.ip, &offending, 1);
    v.push(Fixture {
        name: "pod DF packet over the ip-in-ip tunnel MTU: frag needed, mtu 1480",
        port: PA.port,
        input: from_pod(&PA, &offending),
        expect: icmp_tx(
            PA.port,
            to_pod(&PA, &icmp),
            Event::IcmpFragNeeded,
            DropReason::TooBig,
            false,
        ),
        xdp: "steer_pod",
    });
    let offending = Ip::pods(N3.pod, PA.ip).packet(&pod_payload(1480 - 20));
    let (icmp_ip, icmp) = icmp_error(frag_needed(POD_MTU), N3.pod, &offending, 1);
    v.push(Fixture {
        name: "ip-in-ip DF packet above the pod's MTU: frag needed back to n3",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, &offending),
        expect: icmp_tx(
            UNDERLAY_PORT,
            to_node_ident(&N3, &icmp_ip, &icmp, 2),
            Event::IcmpFragNeeded,
            DropReason::TooBig,
            false,
        ),
        xdp: "steer_ipip",
    });
    let ip = Ip::pods(PA.ip, N3.pod);
    let fits = pod_payload(1480 - 20);
    v.push(Fixture {
        name: "pod a to n3 at exactly the ip-in-ip MTU (1480)",
        port: PA.port,
        input: from_pod(&PA, &ip.packet(&fits)),
        expect: tx_node(
            &N3,
            to_node(&N3, &ip, &ip.ttl(63).packet(&fits)),
            Event::EncapToPeer,
        ),
        xdp: "steer_pod",
    });

    // -- Fragmentation: DF clear and too big for the next hop (RFC 791,
    // RFC 1812 §5.2.6): cut to fit, every fragment rewritten for the hop.
    let ip = Ip::pods(PA.ip, N1.pod).df(false);
    let data = pod_payload(1451 - 20);
    let frames = fragments(&ip.ttl(63), &[], &data, Cut::mtu(1450))
        .iter()
        .zip(1..)
        .map(|(f, ident)| to_node_ident(&N1, &ip, f, ident))
        .collect();
    v.push(Fixture {
        name: "pod a to n1 without DF, 1451 B over the 1450 vxlan MTU: 2 fragments",
        port: PA.port,
        input: from_pod(&PA, &ip.packet(&data)),
        expect: Expect::Fragments {
            port: UNDERLAY_PORT,
            frames,
            event: Event::EncapToPeer,
            sport_is_hash: true,
        },
        xdp: "steer_pod",
    });
    let ip = Ip::pods(N3.pod, PA.ip).df(false);
    let data = pod_payload(1480 - 20);
    let frames = fragments(&ip.ttl(63), &[], &data, Cut::mtu(POD_MTU as usize))
        .iter()
        .map(|f| to_pod(&PA, f))
        .collect();
    v.push(Fixture {
        name: "ip-in-ip n3 to pod a without DF, 1480 B over the pod's 1450 MTU: 2 fragments",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, &ip.packet(&data)),
        expect: Expect::Fragments {
            port: PA.port,
            frames,
            event: Event::DecapToPod,
            sport_is_hash: false,
        },
        xdp: "steer_ipip",
    });
    // Transit IP-in-IP (1480) → VXLAN (1450), the datagram itself a middle
    // fragment carrying a copied option (router alert) and an uncopied one
    // (record route): offsets continue from its own, MF stays set, and
    // only the copied option survives past the first piece.
    let ip = Ip::pods(N3.pod, N1.pod).df(false);
    let options = [0x94, 4, 0, 0, 0x07, 3, 4, 0];
    let data = pod_payload(1448);
    let cut = Cut {
        mtu: 1450,
        base: 2960,
        mf: true,
    };
    let input = &fragments(&ip, &options, &data, Cut { mtu: 1480, ..cut })[0];
    let frames = fragments(&ip.ttl(63), &options, &data, cut)
        .iter()
        .zip(1..)
        .map(|(f, ident)| to_node_ident(&N1, &ip, f, ident))
        .collect();
    v.push(Fixture {
        name: "transit ip-in-ip to vxlan of a fragment with options, over 1450: refragmented",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, input),
        expect: Expect::Fragments {
            port: UNDERLAY_PORT,
            frames,
            event: Event::Transit,
            sport_is_hash: true,
        },
        xdp: "steer_ipip",
    });
    // A fragment whose pieces would reach past 65535 bytes ("ping of
    // death") is not cut further.
    let data = pod_payload(1456);
    let huge = Cut {
        mtu: 1480,
        base: 65528 - 1448,
        mf: false,
    };
    let input = &fragments(&Ip::pods(N3.pod, N1.pod).df(false), &[], &data, huge)[0];
    // n4's underlay MAC is unresolved: frag needed cannot go back to it.
    let offending = Ip::pods(N4.pod, PA.ip).packet(&pod_payload(1451 - 20));
    v.push(Fixture {
        name: "vxlan n4 DF packet over the pod MTU, no way back to n4: dropped, no ICMP",
        port: UNDERLAY_PORT,
        input: vxlan_from(&N4, 1, 0x08, &inner_eth_from(&N4, &offending)),
        expect: Expect::Drop(DropReason::TooBig),
        xdp: "steer_vxlan",
    });
    // RFC 1812 forbids an ICMP error to 0.0.0.0; a node cannot send from it
    // anyway (it routes back to no node): the reverse-path filter drops it
    // first. (With `rp_filter = "off"` it is `too_big` without an error:
    // dataplane/tests/pipeline.rs, no_icmp_error_to_a_non_unicast_source.)
    let offending = Ip::pods(Ipv4Addr::UNSPECIFIED, PA.ip).packet(&pod_payload(1480 - 20));
    v.push(Fixture {
        name: "DF packet over the pod MTU from 0.0.0.0: spoofed inner source, no ICMP",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, &offending),
        expect: Expect::Drop(DropReason::InnerSourceSpoofed),
        xdp: "steer_ipip",
    });
    v.push(Fixture {
        name: "fragment reaching past 64 KiB, too big for the next hop: malformed",
        port: UNDERLAY_PORT,
        input: ipip_from(&N3, input),
        expect: Expect::Drop(DropReason::Ipv4Malformed),
        xdp: "steer_ipip",
    });

    // -- ECN on decapsulation (RFC 6040 §4.2).
    let ecn_case = |name, outer: u8, inner: u8, out: Option<u8>| {
        let ip = Ip::pods(N1.pod, PA.ip).tos(0x20 | inner);
        let input = vxlan_from_tos(
            &N1,
            1,
            0x08,
            0x20 | outer,
            &inner_eth_from(&N1, &ip.packet(payload)),
        );
        let expect = match out {
            Some(ecn) => tx_pod(
                &PA,
                to_pod(&PA, &ip.tos(0x20 | ecn).ttl(63).packet(payload)),
                Event::DecapToPod,
            ),
            None => Expect::Drop(DropReason::EcnCeNotEct),
        };
        Fixture {
            name,
            port: UNDERLAY_PORT,
            input,
            expect,
            xdp: "steer_vxlan",
        }
    };
    v.push(ecn_case(
        "ecn: outer CE + inner ECT(0) -> inner CE",
        3,
        2,
        Some(3),
    ));
    v.push(ecn_case(
        "ecn: outer CE + inner ECT(1) -> inner CE",
        3,
        1,
        Some(3),
    ));
    v.push(ecn_case("ecn: outer CE + inner CE stays CE", 3, 3, Some(3)));
    v.push(ecn_case(
        "ecn: outer CE + inner Not-ECT -> drop",
        3,
        0,
        None,
    ));
    v.push(ecn_case(
        "ecn: outer ECT(1) + inner ECT(0) -> inner ECT(1)",
        1,
        2,
        Some(1),
    ));
    v.push(ecn_case(
        "ecn: outer ECT(0) + inner Not-ECT unchanged",
        2,
        0,
        Some(0),
    ));
    v.push(ecn_case(
        "ecn: outer Not-ECT + inner ECT(0) unchanged",
        0,
        2,
        Some(2),
    ));
    v
}

/// Drop reasons no fixture can produce, with why.
pub const UNREACHABLE_IN_FIXTURES: &[(DropReason, &str)] = &[
    (
        DropReason::TxRingFull,
        "counted by the AF_XDP layer when a TX ring is full, not by the pipeline",
    ),
    (
        DropReason::UmemExhausted,
        "counted by the AF_XDP layer when a frame crossing between UMEM classes finds none free, not by the pipeline",
    ),
    (
        DropReason::XskRxDropped,
        "counted by the kernel before a frame reaches the worker (XDP_STATISTICS)",
    ),
    (
        DropReason::XskRxRingFull,
        "counted by the kernel before a frame reaches the worker (XDP_STATISTICS)",
    ),
    (
        DropReason::FragNoFrame,
        "needs an I/O layer out of free frames (fixtures run with plenty): \
         pipeline::tests::fragmentation_without_enough_spare_frames_sends_nothing",
    ),
];
