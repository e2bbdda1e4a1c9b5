//! Fixtures shared by the criterion benches, the callgrind target and the
//! harness's in-process micro measurements: a route table shaped like the
//! test bed's, prepared frames for each pipeline direction, and random
//! prefix sets for the LPM comparison.

use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::Ipv4Net;
use overpass_dataplane::counters::Counters;
use overpass_dataplane::fib::{
    Encap as PeerEncap, LocalNode, NextHop, Peer, Pod, Route, RouteTable,
};
use overpass_dataplane::io::{NoSpare, Verdict};
use overpass_dataplane::pipeline::Pipeline;
use overpass_dataplane::wire::ethernet::MacAddr;

use crate::frames::{Encap, FrameSpec, Outer, Template};

pub const GW_UNDERLAY_MAC: MacAddr = MacAddr([0x02, 0x01, 0xc6, 0x12, 0x00, 0x01]);
pub const GW_VTEP_MAC: MacAddr = MacAddr([0x02, 0x00, 0xc6, 0x12, 0x00, 0x01]);
pub const GW_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

fn node_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + n)
}
fn node_mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0x01, 0xc6, 0x12, 0x00, 10 + n])
}
fn node_vtep(n: u8) -> MacAddr {
    MacAddr([0x02, 0x00, 0xc6, 0x12, 0x00, 10 + n])
}

/// The test bed's table: local podCIDR 10.244.0.0/24 with pod a
/// (10.244.0.2, port 1), nodes n1 (VXLAN, 10.244.1.0/24) and n2
/// (`n2_encap`, 10.244.2.0/24), next hops resolved; plus `extra` /24 routes
/// to n1 from 11.0.0.0 up. Built straight from the FIB's types (the RIB
/// that validates operator input sits above this crate).
pub fn table(n2_encap: PeerEncap, extra: usize) -> RouteTable {
    let local = LocalNode {
        pod_cidr: "10.244.0.0/24".parse().expect("valid"),
        underlay_ip: GW_IP,
        underlay_mac: GW_UNDERLAY_MAC,
        vtep_mac: GW_VTEP_MAC,
        outer_ttl: 64,
    };
    let peer = |n: u8, encap: PeerEncap| Peer {
        name: format!("n{n}"),
        underlay_ip: node_ip(n),
        encap,
        vni: 1,
        port: 8472,
        vtep_mac: node_vtep(n),
        mtu: 1500 - encap.overhead(),
        next_hop_mac: Some(node_mac(n)),
        slot: u16::from(n - 1),
        counter_base: Default::default(),
    };
    let pod = Pod {
        name: "a".into(),
        ip: Ipv4Addr::new(10, 244, 0, 2),
        mac: MacAddr([0x02, 0x0a, 0xf4, 0, 0, 2]),
        host_mac: MacAddr([0x02, 0x0e, 0xf4, 0, 0, 2]),
        port: 1,
        rx_ports: vec![1],
        mtu: 1500,
    };
    let via = |prefix: Ipv4Net, peer: u32| Route {
        prefix,
        next_hop: NextHop::Peer(peer),
    };
    let mut routes = vec![
        Route {
            prefix: "10.244.0.2/32".parse().expect("valid"),
            next_hop: NextHop::Pod(0),
        },
        via("10.244.1.0/24".parse().expect("valid"), 0),
        via("10.244.2.0/24".parse().expect("valid"), 1),
    ];
    routes.extend(scale_routes(extra).into_iter().map(|p| via(p, 0)));
    RouteTable::build(
        local,
        vec![peer(1, PeerEncap::Vxlan), peer(2, n2_encap)],
        vec![pod],
        routes,
        1,
    )
    .expect("the bench table validates")
}

/// `n` distinct /24s from 11.0.0.0 up (route-scale prefixes).
pub fn scale_routes(n: usize) -> Vec<Ipv4Net> {
    (0..n as u32)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).expect("valid /24"))
        .collect()
}

/// One host address inside each of `prefixes` (for random destinations).
pub fn hosts_in(prefixes: &[Ipv4Net]) -> Vec<u32> {
    prefixes
        .iter()
        .enumerate()
        .map(|(i, p)| u32::from(p.network()) + 1 + (i as u32 % 250))
        .collect()
}

/// The frames the pipeline benchmarks run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// VXLAN from n1 to pod a.
    DecapVxlan,
    /// IP-in-IP from n2 to pod a (needs a table with n2 on IP-in-IP).
    DecapIpip,
    /// Pod a to n1's pod (VXLAN out).
    EncapVxlan,
    /// Pod a to n2's pod (IP-in-IP out when n2 is IP-in-IP).
    EncapIpip,
    /// n1 (VXLAN) to n2's pod.
    Transit,
}

impl Direction {
    /// (rx port, frame) for this direction with an inner frame of `inner_len` bytes.
    pub fn frame(self, inner_len: usize) -> (u16, Template) {
        let from_node = |n: u8, encap: Encap, dst: Ipv4Addr| FrameSpec {
            encap,
            outer: Outer {
                src_mac: node_mac(n),
                dst_mac: GW_UNDERLAY_MAC,
                src_ip: node_ip(n),
                dst_ip: GW_IP,
            },
            inner_src_mac: node_vtep(n),
            inner_dst_mac: GW_VTEP_MAC,
            inner_src_ip: Ipv4Addr::new(10, 244, n, 2),
            inner_dst_ip: dst,
            inner_frame_len: inner_len,
        };
        let vx = Encap::Vxlan {
            vni: 1,
            port: 8472,
            src_port: 50000,
        };
        let pod_a = Ipv4Addr::new(10, 244, 0, 2);
        let from_pod = |dst: Ipv4Addr| FrameSpec {
            encap: Encap::None,
            outer: Outer {
                src_mac: GW_UNDERLAY_MAC,
                dst_mac: GW_UNDERLAY_MAC,
                src_ip: GW_IP,
                dst_ip: GW_IP,
            },
            inner_src_mac: MacAddr([0x02, 0x0a, 0xf4, 0, 0, 2]),
            inner_dst_mac: MacAddr([0x02, 0x0e, 0xf4, 0, 0, 2]),
            inner_src_ip: pod_a,
            inner_dst_ip: dst,
            inner_frame_len: inner_len,
        };
        match self {
            Direction::DecapVxlan => (0, from_node(1, vx, pod_a).build()),
            Direction::DecapIpip => (0, from_node(2, Encap::Ipip, pod_a).build()),
            Direction::EncapVxlan => (1, from_pod(Ipv4Addr::new(10, 244, 1, 2)).build()),
            Direction::EncapIpip => (1, from_pod(Ipv4Addr::new(10, 244, 2, 2)).build()),
            Direction::Transit => (0, from_node(1, vx, Ipv4Addr::new(10, 244, 2, 2)).build()),
        }
    }
}

/// A deterministic xorshift generator.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `n` distinct random prefixes, lengths spread like an Internet table
/// (mostly /24, many /16–/23, some longer), never the default route.
pub fn random_prefixes(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = Rng(seed | 1);
    let mut set = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = rng.next_u64();
        let len = match r % 100 {
            0..=59 => 24,
            60..=84 => 16 + (r >> 8) as u8 % 8,
            85..=94 => 25 + (r >> 8) as u8 % 8,
            _ => 8 + (r >> 8) as u8 % 8,
        };
        let addr = Ipv4Addr::from((r >> 32) as u32);
        let net = Ipv4Net::new(addr, len).expect("len <= 32").trunc();
        if set.insert(net) {
            out.push(net);
        }
    }
    out
}

/// `count` lookup addresses, each a random host inside a random prefix.
pub fn lookups_in(prefixes: &[Ipv4Net], count: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng(seed | 1);
    (0..count)
        .map(|_| {
            let p = prefixes[(rng.next_u64() % prefixes.len() as u64) as usize];
            let host_bits = 32 - u32::from(p.prefix_len());
            let mask = if host_bits == 32 {
                u32::MAX
            } else {
                (1u32 << host_bits) - 1
            };
            u32::from(p.network()) | (rng.next_u64() as u32 & mask)
        })
        .collect()
}

/// Nanoseconds per call of `f` over `iters` calls (wall clock).
pub fn time_ns(iters: u64, mut f: impl FnMut(u64)) -> f64 {
    // Warm caches and branch predictors first.
    for i in 0..iters / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..iters {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

/// Copies a prepared frame into `buf` (a frame buffer) and runs it through
/// the pipeline, as a worker would (no spare frames: nothing here
/// fragments).
#[inline]
pub fn process(
    p: &mut Pipeline,
    table: &RouteTable,
    counters: &Counters,
    port: u16,
    frame: &Template,
    buf: &mut [u8],
) -> Verdict {
    buf[..frame.bytes.len()].copy_from_slice(&frame.bytes);
    let buf = std::hint::black_box(buf);
    p.process(table, counters, port, buf, frame.bytes.len(), &mut NoSpare)
}
