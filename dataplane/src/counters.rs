//! Counters: every drop has a named reason, every forward a named kind.
//!
//! Each worker owns one [`Counters`] block (cache-line padded, single
//! writer). The worker bumps a counter with a relaxed load + store — on
//! x86 that is a plain `mov`, no locked instruction — and readers sum the
//! blocks of all workers on demand. Nothing is shared between workers.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam::utils::CachePadded;
use strum::{EnumCount, EnumIter, EnumMessage, IntoEnumIterator, IntoStaticStr};

/// Why a frame was dropped. One counter per variant.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumCount, EnumIter, IntoStaticStr, EnumMessage,
)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum DropReason {
    /// Frame shorter than an Ethernet header.
    EthTruncated,
    /// Non-IPv4 frame where only IPv4 is forwarded (ARP and the like belong to the kernel).
    NotIpv4,
    /// IPv4 header truncated or inconsistent (version, IHL, total length).
    Ipv4Malformed,
    /// IPv4 header checksum does not verify.
    Ipv4Checksum,
    /// Outer IPv4 header carries options (tunnel peers never send them).
    OuterIpv4Options,
    /// Outer IPv4 packet is a fragment (VTEPs never fragment; we do not reassemble).
    OuterFragment,
    /// Outer destination is not this gateway's underlay address.
    OuterNotLocal,
    /// Tunnel packet from an underlay address that is not a configured peer.
    UnknownPeer,
    /// Underlay packet that is neither VXLAN on a configured port nor IP-in-IP.
    NotTunnel,
    /// Encapsulation does not match the peer's configured encap.
    EncapMismatch,
    /// UDP header truncated or its length field inconsistent.
    UdpMalformed,
    /// Non-zero outer UDP checksum that does not verify.
    UdpChecksum,
    /// UDP payload shorter than a VXLAN header.
    VxlanTruncated,
    /// VXLAN header without the I flag (RFC 7348: VNI not valid).
    VxlanNoIFlag,
    /// VXLAN network identifier (or port) does not match the sending peer's.
    UnknownVni,
    /// Inner frame shorter than an Ethernet header.
    InnerTruncated,
    /// Inner destination MAC is not this gateway's VTEP MAC.
    InnerDstMac,
    /// Inner frame carries a VLAN tag (RFC 7348: discard unless configured).
    InnerVlan,
    /// Inner frame is not IPv4.
    InnerNotIpv4,
    /// Inner source does not route back to the node the tunnel packet came from (strict reverse-path filter, `gateway.rp_filter`).
    InnerSourceSpoofed,
    /// A pod sent a packet whose source is not its own address (anti-spoofing).
    PodSourceMismatch,
    /// No route for the inner destination.
    NoRoute,
    /// Route leads back out of the port the packet came in on.
    Hairpin,
    /// Inner TTL would reach zero (answered with ICMP time exceeded unless rate-limited or not allowed).
    TtlExpired,
    /// Outer CE on an inner Not-ECT packet (RFC 6040: the congestion mark cannot be passed on).
    EcnCeNotEct,
    /// Packet larger than the tunnel MTU or the frame buffer (DF set: answered with ICMP fragmentation needed).
    TooBig,
    /// Underlay next-hop MAC not resolved yet (resolution was triggered).
    NeighUnresolved,
    /// Packet to fragment (DF clear, over the next hop's MTU) but too few free frames for its fragments.
    FragNoFrame,
    /// TX ring of the output port was full.
    TxRingFull,
    /// A frame crossing to the other UMEM class (underlay ↔ pods, when the pods have a UMEM of their own) found no free frame there to be copied into.
    UmemExhausted,
    /// Dropped by the kernel on the way into a socket: no free frame in its fill ring, or a frame larger than a UMEM frame (read from XDP_STATISTICS).
    XskRxDropped,
    /// Dropped by the kernel because a socket's RX ring was full: the worker fell behind (read from XDP_STATISTICS).
    XskRxRingFull,
}

/// What happened to frames that were not dropped, plus notable events.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumCount, EnumIter, IntoStaticStr, EnumMessage,
)]
#[strum(serialize_all = "snake_case")]
#[repr(u8)]
pub enum Event {
    /// Frames received from the underlay.
    RxUnderlay,
    /// Frames received from local pods.
    RxPod,
    /// Tunnel packets decapsulated and delivered to a local pod.
    DecapToPod,
    /// Packets from a local pod encapsulated toward a remote node.
    EncapToPeer,
    /// Packets from one local pod to another.
    PodToPod,
    /// Tunnel packets re-encapsulated toward another remote node.
    Transit,
    /// VXLAN headers with reserved bits set (accepted, RFC 7348).
    VxlanReservedBits,
    /// ICMP time exceeded messages sent.
    IcmpTimeExceeded,
    /// ICMP fragmentation needed messages sent.
    IcmpFragNeeded,
    /// ICMP errors not sent because of the rate limit.
    IcmpRateLimited,
    /// ICMP errors not sent because RFC 1812 forbids one for that packet.
    IcmpNotAllowed,
    /// ICMP errors not sent because there is no route back to the sender.
    IcmpUnroutable,
    /// Outer CE copied onto the inner header on decapsulation (RFC 6040).
    EcnCePropagated,
    /// Packets without DF larger than their next hop's MTU, split into IPv4 fragments.
    Fragmented,
    /// Fragments those packets were split into (each also counted as forwarded).
    FragmentsOut,
    /// Frames queued for transmission.
    TxQueued,
    /// Frames whose transmission completed.
    TxCompleted,
    /// Frames copied between UMEM classes (underlay ↔ pods with a UMEM of their own).
    CrossUmemCopy,
    /// Times the kernel found a socket's fill ring empty (read from XDP_STATISTICS).
    XskFillRingEmpty,
}

/// Names, descriptions and iteration shared by [`DropReason`] and [`Event`].
pub trait CounterKind:
    Copy + Into<&'static str> + EnumMessage + IntoEnumIterator + 'static
{
    /// Stable snake_case name (API, metrics, logs).
    fn name(self) -> &'static str {
        self.into()
    }

    /// One-line description: the variant's doc comment.
    fn description(self) -> &'static str {
        self.get_documentation().unwrap_or("").trim()
    }

    /// Every variant, in declaration order.
    fn all() -> Self::Iterator {
        Self::iter()
    }
}

impl CounterKind for DropReason {}
impl CounterKind for Event {}

/// Most remote nodes with their own counters (peer stat slots).
pub const MAX_PEERS: usize = 1024;

/// Per-peer counter kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PeerStat {
    RxPackets,
    RxBytes,
    TxPackets,
    TxBytes,
    /// Frames from this peer that were dropped.
    Drops,
}

/// Number of [`PeerStat`] kinds.
pub const PEER_STATS: usize = 5;

/// Every per-peer counter of one slot, indexed by `PeerStat as usize`.
pub type PeerCounts = [u64; PEER_STATS];

/// One worker's counters. Single writer (the worker), any number of readers.
#[derive(Debug)]
pub struct Counters {
    drops: [AtomicU64; DropReason::COUNT],
    events: [AtomicU64; Event::COUNT],
    /// `peers[slot][PeerStat]`.
    peers: Box<[[AtomicU64; PEER_STATS]]>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            peers: (0..MAX_PEERS)
                .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
                .collect(),
        }
    }
}

/// A worker's counter block, padded so two workers never share a cache line.
pub type WorkerCounters = CachePadded<Counters>;

#[inline]
fn bump(c: &AtomicU64, n: u64) {
    // Single writer: load + store is enough and avoids a locked RMW.
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl Counters {
    #[inline]
    pub fn dropped(&self, reason: DropReason) {
        bump(&self.drops[reason as usize], 1);
    }

    #[inline]
    pub fn dropped_n(&self, reason: DropReason, n: u64) {
        bump(&self.drops[reason as usize], n);
    }

    #[inline]
    pub fn event(&self, event: Event) {
        bump(&self.events[event as usize], 1);
    }

    #[inline]
    pub fn event_n(&self, event: Event, n: u64) {
        bump(&self.events[event as usize], n);
    }

    /// Adds `n` to a per-peer counter; slots past [`MAX_PEERS`] are ignored.
    #[inline]
    pub fn peer(&self, slot: u16, stat: PeerStat, n: u64) {
        if let Some(p) = self.peers.get(slot as usize) {
            bump(&p[stat as usize], n);
        }
    }

    /// A per-peer counter's value.
    pub fn peer_stat(&self, slot: u16, stat: PeerStat) -> u64 {
        self.peers
            .get(slot as usize)
            .map_or(0, |p| p[stat as usize].load(Ordering::Relaxed))
    }

    /// Every per-peer counter of `slot` (zeros past [`MAX_PEERS`]).
    pub fn peer_counts(&self, slot: u16) -> PeerCounts {
        self.peers.get(slot as usize).map_or([0; PEER_STATS], |p| {
            std::array::from_fn(|i| p[i].load(Ordering::Relaxed))
        })
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].load(Ordering::Relaxed)
    }

    pub fn events(&self, event: Event) -> u64 {
        self.events[event as usize].load(Ordering::Relaxed)
    }

    /// A plain copy of every counter.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        s.add(self);
        s
    }
}

/// Counter values summed over workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub drops: [u64; DropReason::COUNT],
    pub events: [u64; Event::COUNT],
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            drops: [0; DropReason::COUNT],
            events: [0; Event::COUNT],
        }
    }
}

impl Snapshot {
    pub fn add(&mut self, c: &Counters) {
        for (i, d) in c.drops.iter().enumerate() {
            self.drops[i] += d.load(Ordering::Relaxed);
        }
        for (i, e) in c.events.iter().enumerate() {
            self.events[i] += e.load(Ordering::Relaxed);
        }
    }

    pub fn sum<'a>(blocks: impl IntoIterator<Item = &'a WorkerCounters>) -> Snapshot {
        let mut s = Snapshot::default();
        for b in blocks {
            s.add(b);
        }
        s
    }

    /// What was counted after `earlier` (a snapshot of the same counters
    /// taken before this one).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            drops: std::array::from_fn(|i| self.drops[i] - earlier.drops[i]),
            events: std::array::from_fn(|i| self.events[i] - earlier.events[i]),
        }
    }

    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    pub fn event_count(&self, e: Event) -> u64 {
        self.events[e as usize]
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Human-readable listing of the non-zero counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for e in Event::all() {
            let v = self.event_count(e);
            if v != 0 {
                out.push_str(&format!("  {:<24} {v}\n", e.name()));
            }
        }
        for r in DropReason::all() {
            let v = self.drop_count(r);
            if v != 0 {
                out.push_str(&format!("  drop.{:<19} {v}\n", r.name()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_described() {
        let names: HashSet<_> = DropReason::all().map(|r| r.name()).collect();
        assert_eq!(names.len(), DropReason::COUNT);
        for r in DropReason::all() {
            assert!(!r.description().is_empty());
        }
        assert_eq!(
            DropReason::NoRoute.description(),
            "No route for the inner destination."
        );
    }

    #[test]
    fn counts_and_sums() {
        let a = WorkerCounters::default();
        let b = WorkerCounters::default();
        a.dropped(DropReason::NoRoute);
        b.dropped(DropReason::NoRoute);
        b.event_n(Event::TxQueued, 5);
        let s = Snapshot::sum([&a, &b]);
        assert_eq!(s.drop_count(DropReason::NoRoute), 2);
        assert_eq!(s.event_count(Event::TxQueued), 5);
        assert_eq!(s.total_drops(), 2);
    }
}
