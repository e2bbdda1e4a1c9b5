//! The FIB: podCIDR → next hop, built for the hot path.
//!
//! A [`RouteTable`] is immutable once built. The control plane builds a new
//! one, validates it as a whole, and publishes it through [`RouteHandle`]
//! (an `ArcSwap`): workers load the current table once per RX batch, so a
//! packet sees the old table or the new one, never a mix, and a reader never
//! waits for a writer.
//!
//! Longest-prefix match is the DIR-16-8-8 trie in [`lpm`].

use std::net::Ipv4Addr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use ipnet::Ipv4Net;

use crate::counters::PeerCounts;
use crate::wire::ethernet::MacAddr;
use crate::wire::{ipip, vxlan};

mod epoch;
mod lpm;
pub use epoch::RoundEpoch;
pub use lpm::Lpm;

/// Tunnel encapsulation toward a peer.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    #[default]
    Vxlan,
    Ipip,
}

impl Encap {
    /// Bytes the encapsulation adds in front of the inner IPv4 packet on the
    /// underlay (outer Ethernet excluded): what the tunnel MTU loses.
    pub const fn overhead(self) -> u16 {
        match self {
            Encap::Vxlan => vxlan::OVERHEAD as u16,
            Encap::Ipip => ipip::OVERHEAD as u16,
        }
    }
}

/// Index of a worker port: 0 is the underlay queue, pods follow.
pub type PortId = u16;

/// The underlay port of every worker.
pub const UNDERLAY_PORT: PortId = 0;

/// A remote node: where and how to tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub underlay_ip: Ipv4Addr,
    pub encap: Encap,
    pub vni: u32,
    pub port: u16,
    /// The node's VTEP MAC (inner destination MAC on VXLAN).
    pub vtep_mac: MacAddr,
    /// Largest inner IPv4 packet the tunnel carries.
    pub mtu: u16,
    /// Underlay next-hop MAC, from the kernel's neighbour table; `None`
    /// until resolved.
    pub next_hop_mac: Option<MacAddr>,
    /// Index of this node's per-peer counters and histograms (assigned by
    /// the RIB per underlay address; kept while the node is in the route
    /// set, reused for another node once it has left it).
    pub slot: u16,
    /// The slot's per-peer counters when this node was given it: readers
    /// report counter − base, so a reused slot counts from zero for its
    /// new node. Kept by the control plane; workers never read it.
    pub counter_base: PeerCounts,
}

/// A local pod behind a veth pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// MAC of the host end of the pod's veth (source MAC toward the pod).
    pub host_mac: MacAddr,
    /// Port frames to the pod are sent on.
    pub port: PortId,
    /// Ports frames from the pod arrive on (one per veth RX queue).
    pub rx_ports: Vec<PortId>,
    /// The pod veth's MTU: larger packets are refused like a tunnel's.
    pub mtu: u16,
}

/// Where a matching packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// Index into [`RouteTable::peers`].
    Peer(u32),
    /// Index into [`RouteTable::pods`].
    Pod(u32),
}

/// This node's identity on the underlay and the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub pod_cidr: Ipv4Net,
    pub underlay_ip: Ipv4Addr,
    pub underlay_mac: MacAddr,
    pub vtep_mac: MacAddr,
    pub outer_ttl: u8,
}

/// One prefix and where it leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Net,
    pub next_hop: NextHop,
}

/// An immutable, validated route table.
#[derive(Debug)]
pub struct RouteTable {
    pub local: LocalNode,
    pub peers: Vec<Peer>,
    pub pods: Vec<Pod>,
    pub routes: Vec<Route>,
    /// Peers by underlay address, for tunnel source checks: an
    /// open-addressing hash table (linear probing, at most half full, so a
    /// miss ends at an empty slot) of (address, peer index + 1), 0 = empty.
    peer_by_ip: Box<[(u32, u32)]>,
    /// Right shift that turns an address's 32-bit hash into a slot.
    peer_shift: u32,
    /// Pods indexed by port.
    pod_by_port: Vec<Option<u32>>,
    lpm: Lpm,
    /// Bumped by the control plane on every publish.
    pub generation: u64,
}

/// Why a route set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0}: duplicate prefix")]
    DuplicatePrefix(Ipv4Net),
    #[error("{0}: overlaps the local podCIDR {1}")]
    OverlapsLocal(Ipv4Net, Ipv4Net),
    #[error("{0}: a pod route must be a /32 inside the local podCIDR")]
    BadPodRoute(Ipv4Net),
    #[error("{0}: two peers share one underlay address")]
    DuplicatePeerIp(Ipv4Addr),
    #[error("{0}: next hop index out of range")]
    BadNextHop(Ipv4Net),
}

impl RouteTable {
    /// Builds and validates a table. Rules: prefixes are unique (host bits
    /// are cleared); remote routes never overlap the local podCIDR (an
    /// address there without a pod is unrouted, never sent away); pod
    /// routes are /32s inside it; each peer has its own underlay address.
    /// Overlapping remote prefixes are allowed: the longest match wins, as
    /// on any router.
    pub fn build(
        local: LocalNode,
        peers: Vec<Peer>,
        pods: Vec<Pod>,
        routes: Vec<Route>,
        generation: u64,
    ) -> Result<RouteTable, RouteError> {
        let mut routes: Vec<Route> = routes
            .into_iter()
            .map(|r| Route {
                prefix: r.prefix.trunc(),
                ..r
            })
            .collect();
        routes.sort_by_key(|r| (r.prefix.network(), r.prefix.prefix_len()));
        for w in routes.windows(2) {
            if w[0].prefix == w[1].prefix {
                return Err(RouteError::DuplicatePrefix(w[0].prefix));
            }
        }
        for r in &routes {
            match r.next_hop {
                NextHop::Peer(i) => {
                    if i as usize >= peers.len() {
                        return Err(RouteError::BadNextHop(r.prefix));
                    }
                    if r.prefix.contains(&local.pod_cidr) || local.pod_cidr.contains(&r.prefix) {
                        return Err(RouteError::OverlapsLocal(r.prefix, local.pod_cidr));
                    }
                }
                NextHop::Pod(i) => {
                    if i as usize >= pods.len() {
                        return Err(RouteError::BadNextHop(r.prefix));
                    }
                    if r.prefix.prefix_len() != 32 || !local.pod_cidr.contains(&r.prefix) {
                        return Err(RouteError::BadPodRoute(r.prefix));
                    }
                }
            }
        }
        let mut pod_by_port: Vec<Option<u32>> = vec![];
        for (i, pod) in pods.iter().enumerate() {
            for &port in pod.rx_ports.iter().chain([&pod.port]) {
                let port = port as usize;
                if pod_by_port.len() <= port {
                    pod_by_port.resize(port + 1, None);
                }
                pod_by_port[port] = Some(i as u32);
            }
        }
        let mut sorted: Vec<u32> = peers.iter().map(|p| u32::from(p.underlay_ip)).collect();
        sorted.sort_unstable();
        for w in sorted.windows(2) {
            if w[0] == w[1] {
                return Err(RouteError::DuplicatePeerIp(Ipv4Addr::from(w[0])));
            }
        }
        let bits = (2 * peers.len())
            .max(2)
            .next_power_of_two()
            .trailing_zeros();
        let peer_shift = 32 - bits;
        let mut peer_by_ip = vec![(0u32, 0u32); 1 << bits].into_boxed_slice();
        let mask = peer_by_ip.len() - 1;
        for (i, p) in peers.iter().enumerate() {
            let ip = u32::from(p.underlay_ip);
            let mut slot = peer_slot(ip, peer_shift);
            while peer_by_ip[slot].1 != 0 {
                slot = (slot + 1) & mask;
            }
            peer_by_ip[slot] = (ip, i as u32 + 1);
        }
        let lpm = Lpm::build(routes.iter().map(|r| (r.prefix, encode_nh(r.next_hop))));
        Ok(RouteTable {
            local,
            peers,
            pods,
            routes,
            peer_by_ip,
            peer_shift,
            pod_by_port,
            lpm,
            generation,
        })
    }

    /// Longest-prefix match on an inner destination.
    #[inline]
    pub fn lookup(&self, dst: u32) -> Option<NextHop> {
        self.lpm.lookup(dst).map(decode_nh)
    }

    /// Whether the longest match for `addr` is peer `peer` (a strict
    /// reverse-path check: one trie lookup, no decoding).
    #[inline(always)]
    pub fn routes_to_peer(&self, addr: u32, peer: u32) -> bool {
        self.lpm.matches(addr, encode_nh(NextHop::Peer(peer)))
    }

    /// The peer whose underlay address is `src`, if any.
    #[inline]
    pub fn peer_by_underlay(&self, src: u32) -> Option<u32> {
        let mask = self.peer_by_ip.len() - 1;
        let mut slot = peer_slot(src, self.peer_shift);
        loop {
            let &(ip, idx) = self.peer_by_ip.get(slot)?;
            if idx == 0 {
                return None;
            }
            if ip == src {
                return Some(idx - 1);
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The index of the pod attached to `port`, if any.
    #[inline]
    pub fn pod_index_on_port(&self, port: PortId) -> Option<u32> {
        *self.pod_by_port.get(port as usize)?
    }

    /// The pod attached to `port`, if any.
    #[inline]
    pub fn pod_on_port(&self, port: PortId) -> Option<&Pod> {
        let idx = (*self.pod_by_port.get(port as usize)?)?;
        self.pods.get(idx as usize)
    }

    /// Bytes of the longest-prefix-match trie ([`Lpm::memory_bytes`]).
    pub fn lpm_bytes(&self) -> usize {
        self.lpm.memory_bytes()
    }

    /// Bytes the whole table holds: the trie plus its vectors (routes,
    /// peers with their names, pods with their port lists, the lookup
    /// indexes), by capacity.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let peers: usize = self.peers.iter().map(|p| p.name.capacity()).sum::<usize>()
            + self.peers.capacity() * size_of::<Peer>();
        let pods: usize = self
            .pods
            .iter()
            .map(|p| p.name.capacity() + p.rx_ports.capacity() * size_of::<PortId>())
            .sum::<usize>()
            + self.pods.capacity() * size_of::<Pod>();
        size_of::<RouteTable>()
            + self.lpm.memory_bytes()
            + self.routes.capacity() * size_of::<Route>()
            + peers
            + pods
            + self.peer_by_ip.len() * size_of::<(u32, u32)>()
            + self.pod_by_port.capacity() * size_of::<Option<u32>>()
    }
}

/// The home slot of underlay address `ip` in a peer table of `2^(32 -
/// shift)` slots (Fibonacci hashing: the top bits of a multiplication).
#[inline(always)]
fn peer_slot(ip: u32, shift: u32) -> usize {
    (ip.wrapping_mul(0x9e37_79b9) >> shift) as usize
}

// Next hops are stored in the trie as the index, with bit 30 set for pods.
#[inline(always)]
fn encode_nh(nh: NextHop) -> u32 {
    match nh {
        NextHop::Peer(i) => i,
        NextHop::Pod(i) => i | (1 << 30),
    }
}

fn decode_nh(v: u32) -> NextHop {
    if v & (1 << 30) != 0 {
        NextHop::Pod(v & !(1 << 30))
    } else {
        NextHop::Peer(v)
    }
}

/// Shared handle through which the control plane publishes tables.
#[derive(Debug, Clone)]
pub struct RouteHandle(Arc<ArcSwap<RouteTable>>);

impl RouteHandle {
    pub fn new(table: RouteTable) -> RouteHandle {
        RouteHandle(Arc::new(ArcSwap::from_pointee(table)))
    }

    /// The current table; cheap, lock-free, never blocks.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<RouteTable>> {
        self.0.load()
    }

    /// A clone of the current table's `Arc`.
    pub fn current(&self) -> Arc<RouteTable> {
        self.0.load_full()
    }

    /// Publishes `table` atomically.
    pub fn publish(&self, table: RouteTable) {
        self.0.store(Arc::new(table));
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::Ipv4Net;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn local() -> LocalNode {
        LocalNode {
            pod_cidr: net("10.244.0.0/24"),
            underlay_ip: Ipv4Addr::new(198, 18, 0, 1),
            underlay_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            vtep_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            outer_ttl: 64,
        }
    }

    fn peer(name: &str, ip: [u8; 4]) -> Peer {
        Peer {
            name: name.into(),
            underlay_ip: Ipv4Addr::from(ip),
            encap: Encap::Vxlan,
            vni: 1,
            port: 8472,
            vtep_mac: MacAddr([2, 0, 0, 0, 1, ip[3]]),
            mtu: 1450,
            next_hop_mac: None,
            slot: ip[3] as u16,
            counter_base: Default::default(),
        }
    }

    fn via(prefix: &str, peer: u32) -> Route {
        Route {
            prefix: net(prefix),
            next_hop: NextHop::Peer(peer),
        }
    }

    fn two_peers() -> Vec<Peer> {
        vec![peer("a", [198, 18, 0, 11]), peer("b", [198, 18, 0, 12])]
    }

    #[test]
    fn table_validates_as_a_whole() {
        let ok = RouteTable::build(
            local(),
            two_peers(),
            vec![],
            vec![
                via("10.244.1.0/24", 0),
                via("10.244.2.0/24", 1),
                via("10.244.2.64/26", 0),
            ],
            1,
        )
        .unwrap();
        assert_eq!(ok.lookup(0x0af4_0105), Some(NextHop::Peer(0)));
        assert_eq!(ok.lookup(0x0af4_0205), Some(NextHop::Peer(1)));
        assert_eq!(
            ok.lookup(0x0af4_0245),
            Some(NextHop::Peer(0)),
            "longest match wins"
        );
        assert_eq!(ok.lookup(0x0af4_0305), None);
        assert_eq!(
            ok.peer_by_underlay(u32::from(Ipv4Addr::new(198, 18, 0, 12))),
            Some(1)
        );
        assert_eq!(
            ok.peer_by_underlay(u32::from(Ipv4Addr::new(198, 18, 0, 13))),
            None
        );

        let build = |peers: Vec<Peer>, routes: Vec<Route>| {
            RouteTable::build(local(), peers, vec![], routes, 1)
        };
        assert!(matches!(
            build(
                two_peers(),
                vec![via("10.244.1.0/24", 0), via("10.244.1.0/24", 1)]
            ),
            Err(RouteError::DuplicatePrefix(_))
        ));
        assert!(matches!(
            build(two_peers(), vec![via("10.244.0.0/16", 0)]),
            Err(RouteError::OverlapsLocal(..))
        ));
        assert!(matches!(
            build(two_peers(), vec![via("10.244.1.0/24", 2)]),
            Err(RouteError::BadNextHop(_))
        ));
        assert!(matches!(
            build(
                vec![peer("a", [198, 18, 0, 11]), peer("b", [198, 18, 0, 11])],
                vec![]
            ),
            Err(RouteError::DuplicatePeerIp(_))
        ));
        let pod = Pod {
            name: "p".into(),
            ip: Ipv4Addr::new(10, 244, 0, 2),
            mac: MacAddr([2, 0, 0, 0, 0, 9]),
            host_mac: MacAddr([2, 0, 0, 0, 0, 8]),
            port: 1,
            rx_ports: vec![1, 3],
            mtu: 1450,
        };
        let pod_route = |p: &str| Route {
            prefix: net(p),
            next_hop: NextHop::Pod(0),
        };
        let t = RouteTable::build(
            local(),
            vec![],
            vec![pod.clone()],
            vec![pod_route("10.244.0.2/32")],
            1,
        )
        .unwrap();
        assert_eq!(t.lookup(0x0af4_0002), Some(NextHop::Pod(0)));
        assert_eq!(t.pod_on_port(1).map(|p| p.ip), Some(pod.ip));
        assert!(t.pod_on_port(2).is_none());
        assert_eq!(
            t.pod_on_port(3).map(|p| p.ip),
            Some(pod.ip),
            "every RX queue's port maps to the pod"
        );
        assert!(matches!(
            RouteTable::build(
                local(),
                vec![],
                vec![pod],
                vec![pod_route("10.244.0.0/31")],
                1
            ),
            Err(RouteError::BadPodRoute(_))
        ));
    }

    #[test]
    fn peers_are_found_by_underlay_address() {
        for n in [0usize, 1, 2, 3, 100, 1024] {
            let peers: Vec<Peer> = (0..n)
                .map(|i| {
                    let mut p = peer("p", [198, 18, 0, 0]);
                    // Addresses that differ in every byte and cluster.
                    p.underlay_ip = Ipv4Addr::from(0xc612_0000 + (i as u32) * 0x0101);
                    p
                })
                .collect();
            let t = RouteTable::build(local(), peers.clone(), vec![], vec![], 1).unwrap();
            for (i, p) in peers.iter().enumerate() {
                assert_eq!(t.peer_by_underlay(u32::from(p.underlay_ip)), Some(i as u32));
            }
            for miss in [0, 1, 0xc612_0000 + 0x0100, u32::MAX] {
                if !peers.iter().any(|p| u32::from(p.underlay_ip) == miss) {
                    assert_eq!(t.peer_by_underlay(miss), None, "{n} peers, {miss:#x}");
                }
            }
        }
    }

    #[test]
    fn reverse_path_is_the_longest_match() {
        let t = RouteTable::build(
            local(),
            two_peers(),
            vec![],
            vec![via("10.244.1.0/24", 0), via("10.244.1.64/26", 1)],
            1,
        )
        .unwrap();
        assert!(t.routes_to_peer(0x0af4_0105, 0));
        assert!(!t.routes_to_peer(0x0af4_0105, 1));
        assert!(t.routes_to_peer(0x0af4_0145, 1), "the /26 is peer 1's");
        assert!(!t.routes_to_peer(0x0af4_0145, 0));
        assert!(!t.routes_to_peer(0x0af4_0205, 0), "no route");
        assert!(!t.routes_to_peer(0x0af4_0205, u32::MAX), "no route");
    }

    #[test]
    fn publish_is_atomic_swap() {
        let h = RouteHandle::new(RouteTable::build(local(), vec![], vec![], vec![], 1).unwrap());
        let old = h.current();
        h.publish(
            RouteTable::build(
                local(),
                two_peers(),
                vec![],
                vec![via("10.244.1.0/24", 0)],
                2,
            )
            .unwrap(),
        );
        assert_eq!(old.generation, 1);
        assert_eq!(
            old.lookup(0x0af4_0105),
            None,
            "a reader's snapshot never changes under it"
        );
        assert_eq!(h.load().generation, 2);
        assert_eq!(h.load().lookup(0x0af4_0105), Some(NextHop::Peer(0)));
    }
}
