//! The per-packet pipeline: classify → decap → route lookup → rewrite/encap
//! → verdict. Pure code over a byte buffer: no I/O, no allocation, no
//! locks, no syscalls, so it runs unchanged in unit tests, the fuzzer, the
//! benchmarks and the AF_XDP worker.
//!
//! The buffer handed to [`Pipeline::process`] is the whole frame capacity
//! with the received packet at its start. Every rewrite happens in place:
//! decapsulation moves the inner frame to the start of the buffer and
//! encapsulation moves the inner IPv4 packet up to make room for the outer
//! headers (one `copy_within` at most; none for VXLAN→VXLAN transit and
//! pod→pod). Untrusted input only ever goes through `new_checked` views
//! (see the contract in [`crate::wire`]), so no input can panic it.
//!
//! Offsets used below (no outer options are accepted, so they are fixed):
//!
//! ```text
//! VXLAN: | eth 0..14 | ipv4 14..34 | udp 34..42 | vxlan 42..50 | inner eth 50..64 | inner ipv4 64.. |
//! IPIP:  | eth 0..14 | ipv4 14..34 | inner ipv4 34.. |
//! pod:   | eth 0..14 | ipv4 14.. |
//! ```

use crate::counters::{Counters, DropReason, Event, PeerStat};
use crate::fib::Encap;
use crate::fib::{NextHop, Peer, Pod, PortId, RouteTable, UNDERLAY_PORT};
use crate::io::{Spare, Verdict};
use crate::wire::ethernet::MacAddr;
use crate::wire::{ethernet, icmp, ipip, ipv4, udp, vxlan};

/// Inner IPv4 offset in a VXLAN frame.
pub const VXLAN_INNER_IP: usize = vxlan::frame::INNER_IP;
/// Inner IPv4 offset in an IP-in-IP frame.
pub const IPIP_INNER_IP: usize = ipip::OUTER_HEADERS_LEN;
/// IPv4 offset in a plain Ethernet frame.
pub const ETH_IP: usize = ethernet::HEADER_LEN;

/// Lowest outer UDP source port (RFC 7348: 49152–65535 recommended).
pub const SRC_PORT_MIN: u16 = 49152;

/// Where a packet entered: used to refuse sending it back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Peer(u32),
    /// Index into the table's pods (any of its RX queues' ports).
    Pod(u32),
    /// Originated by the gateway itself (ICMP errors): no TTL decrement.
    Local,
}

/// What kind of forwarding a packet got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Dropped before it was classified.
    #[default]
    None,
    /// Remote node → local pod.
    Decap,
    /// Local pod → remote node.
    Encap,
    /// Remote node → remote node (re-encapsulated).
    Transit,
    /// Local pod → local pod.
    Local,
}

/// Number of [`Direction`] values.
pub const DIRECTIONS: usize = 5;

/// What [`Pipeline::process`] learnt about the last packet, for per-peer
/// latency histograms: its direction and the counter slot of the remote
/// node involved (the receiving one for decap, the sending-to one for encap
/// and transit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowTag {
    pub direction: Direction,
    pub peer_slot: Option<u16>,
}

/// Reverse-path filtering of decapsulated traffic (`gateway.rp_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RpFilter {
    /// The inner source must route back to the node the packet came from
    /// (the kernel's `rp_filter = 1`, as Calico sets it): a node may only
    /// speak for the podCIDRs routed to it. Anything else is dropped as
    /// `inner_source_spoofed`.
    #[default]
    Strict,
    /// Tunnel traffic is trusted on its outer source alone (for a gateway
    /// behind asymmetric transit, where a node forwards other nodes' pods).
    Off,
}

/// Per-worker pipeline state.
#[derive(Debug, Default)]
pub struct Pipeline {
    /// Outer IPv4 identification counter.
    ident: u16,
    last: FlowTag,
    /// Slot of the peer the current packet came from, for drop attribution.
    rx_peer: Option<u16>,
    rp_filter: RpFilter,
    icmp: IcmpLimiter,
}

/// ICMP errors of one kind (time exceeded, fragmentation needed) per
/// second a worker may send in all (RFC 1812 §4.3.2.8 asks for a limit;
/// Linux's global default is the same).
pub const ICMP_RATE: u32 = 1000;
/// Burst of ICMP errors of one kind allowed after a quiet period.
pub const ICMP_BURST: u32 = 50;
/// ICMP errors of one kind per second one source (the offending packet's
/// source, the error's destination) may be sent.
pub const ICMP_SOURCE_RATE: u32 = 100;
/// Burst of ICMP errors of one kind one source may be sent.
pub const ICMP_SOURCE_BURST: u32 = 10;
/// Per-source token buckets per kind; sources share one by a keyed hash.
pub const ICMP_SOURCE_SLOTS: usize = 256;

/// A token bucket driven by the worker's clock (set once per poll round),
/// so the pipeline itself never reads a clock. Starts full.
#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: u32,
    /// Time the tokens were last counted up to, in nanoseconds of the
    /// worker's clock (the remainder of a partial token is kept).
    last_ns: u64,
}

impl TokenBucket {
    const fn full(burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: burst,
            last_ns: 0,
        }
    }

    /// Adds the tokens earned since the last refill at `rate` per second,
    /// up to `burst`.
    #[inline]
    fn refill(&mut self, now_ns: u64, rate: u32, burst: u32) {
        let period = 1_000_000_000 / u64::from(rate);
        let new = now_ns.saturating_sub(self.last_ns) / period;
        if new == 0 {
            return;
        }
        if new >= u64::from(burst.saturating_sub(self.tokens)) {
            self.tokens = burst;
            self.last_ns = now_ns;
        } else {
            self.tokens += new as u32;
            self.last_ns += new * period;
        }
    }
}

/// The ICMP error kinds, each with its own budget: a flood of one never
/// silences the other (time exceeded never starves PMTU discovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum IcmpKind {
    TimeExceeded,
    FragNeeded,
}

/// One kind's budget: a global bucket and per-source buckets. An error
/// needs a token from both, so a source flooding errors of that kind gets
/// at most [`ICMP_SOURCE_RATE`] and leaves the rest of the worker's
/// [`ICMP_RATE`] to the others.
#[derive(Debug, Clone)]
struct IcmpBudget {
    global: TokenBucket,
    sources: [TokenBucket; ICMP_SOURCE_SLOTS],
}

impl Default for IcmpBudget {
    fn default() -> Self {
        IcmpBudget {
            global: TokenBucket::full(ICMP_BURST),
            sources: [TokenBucket::full(ICMP_SOURCE_BURST); ICMP_SOURCE_SLOTS],
        }
    }
}

/// The ICMP error rate limits of one worker: a fixed table, no allocation
/// per packet.
#[derive(Debug, Clone, Default)]
struct IcmpLimiter {
    now_ns: u64,
    /// Key of the source hash, so which sources share a bucket cannot be
    /// predicted from outside.
    seed: u32,
    kinds: [IcmpBudget; 2],
}

impl IcmpLimiter {
    /// Takes a token for an error of `kind` to `dst`, if both its source
    /// bucket and the kind's global bucket have one.
    fn take(&mut self, kind: IcmpKind, dst: u32) -> bool {
        let now = self.now_ns;
        let budget = &mut self.kinds[kind as usize];
        let mut h = (dst ^ self.seed).wrapping_mul(0x9e37_79b1);
        h ^= h >> 15;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        let source = &mut budget.sources[h as usize % ICMP_SOURCE_SLOTS];
        source.refill(now, ICMP_SOURCE_RATE, ICMP_SOURCE_BURST);
        budget.global.refill(now, ICMP_RATE, ICMP_BURST);
        if source.tokens == 0 || budget.global.tokens == 0 {
            return false;
        }
        source.tokens -= 1;
        budget.global.tokens -= 1;
        true
    }
}

type Step<T> = Result<T, DropReason>;

/// What every step of one packet's processing reads: the route table
/// snapshot of this round and the worker's counters.
#[derive(Clone, Copy)]
struct Env<'e> {
    t: &'e RouteTable,
    c: &'e Counters,
}

/// Where the IPv4 packet being forwarded lies in the buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    off: usize,
    len: usize,
}

impl Span {
    #[inline]
    fn new(off: usize, len: usize) -> Span {
        Span { off, len }
    }
}

impl Pipeline {
    pub fn new(worker: u16) -> Pipeline {
        // Spread identification sequences of different workers apart.
        let mut p = Pipeline {
            ident: worker.wrapping_mul(0x1000),
            ..Pipeline::default()
        };
        p.icmp.seed = u32::from(worker).wrapping_mul(0x2545_f491);
        p
    }

    /// Sets the reverse-path filter of decapsulated traffic (default
    /// [`RpFilter::Strict`]).
    pub fn with_rp_filter(mut self, rp_filter: RpFilter) -> Pipeline {
        self.rp_filter = rp_filter;
        self
    }

    /// Keys the hash that maps ICMP error destinations to their rate-limit
    /// buckets (the gateway gives each worker a random key).
    pub fn with_icmp_seed(mut self, seed: u32) -> Pipeline {
        self.icmp.seed = seed;
        self
    }

    /// Tells the pipeline the time (monotonic nanoseconds). The worker calls
    /// it once per poll round; only the ICMP rate limits use it.
    #[inline]
    pub fn set_clock(&mut self, now_ns: u64) {
        self.icmp.now_ns = now_ns;
    }

    /// Processes one received frame: `buf[..len]` is the packet, `buf` its
    /// whole buffer. Returns where to send the (rewritten) buffer. A drop
    /// is already counted in `c` (under its reason, and against the peer it
    /// came from) when [`Verdict::Drop`] is returned: the caller only
    /// recycles the frame.
    #[inline]
    pub fn process(
        &mut self,
        t: &RouteTable,
        c: &Counters,
        port: PortId,
        buf: &mut [u8],
        len: usize,
        spare: &mut dyn Spare,
    ) -> Verdict {
        let len = len.min(buf.len());
        let e = Env { t, c };
        self.last = FlowTag::default();
        self.rx_peer = None;
        let r = if port == UNDERLAY_PORT {
            c.event(Event::RxUnderlay);
            self.rx_underlay(e, buf, len, spare)
        } else {
            c.event(Event::RxPod);
            self.rx_pod(e, port, buf, len, spare)
        };
        match r {
            Ok(v) => v,
            Err(reason) => {
                // Every drop is counted here, where it is decided, once; the
                // verdict only tells the I/O layer to recycle the frame.
                c.dropped(reason);
                if let Some(slot) = self.rx_peer {
                    c.peer(slot, PeerStat::Drops, 1);
                }
                Verdict::Drop(reason)
            }
        }
    }

    /// Direction and peer of the packet [`Pipeline::process`] just handled.
    #[inline]
    pub fn last_flow(&self) -> FlowTag {
        self.last
    }

    fn rx_underlay(
        &mut self,
        e: Env<'_>,
        buf: &mut [u8],
        len: usize,
        spare: &mut dyn Spare,
    ) -> Step<Verdict> {
        let Env { t, c } = e;
        let frame = &buf[..len];
        let eth = ethernet::Frame::new_checked(frame).map_err(|_| DropReason::EthTruncated)?;
        if eth.ethertype() != ethernet::ethertype::IPV4 {
            return Err(DropReason::NotIpv4);
        }
        let ip = ipv4::Packet::new_checked(eth.payload()).map_err(|_| DropReason::Ipv4Malformed)?;
        // Tunnel peers never send outer options; refusing them keeps every
        // offset below fixed.
        if ip.header_len() != ipv4::MIN_HEADER_LEN {
            return Err(DropReason::OuterIpv4Options);
        }
        if !ip.verify_checksum() {
            return Err(DropReason::Ipv4Checksum);
        }
        // VTEPs must not fragment (RFC 7348 §4.3) and we do not reassemble.
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Err(DropReason::OuterFragment);
        }
        if ip.dst_addr() != t.local.underlay_ip {
            return Err(DropReason::OuterNotLocal);
        }
        // Like Calico's Felix: tunnel traffic only from configured peers.
        let peer_idx = t
            .peer_by_underlay(u32::from(ip.src_addr()))
            .ok_or(DropReason::UnknownPeer)?;
        let peer = &t.peers[peer_idx as usize];
        self.rx_peer = Some(peer.slot);
        c.peer(peer.slot, PeerStat::RxPackets, 1);
        c.peer(peer.slot, PeerStat::RxBytes, len as u64);
        // End of the outer packet: Ethernet padding past it is ignored.
        let outer_end = ETH_IP + ip.total_len() as usize;
        let (inner_off, inner_end) = match ip.protocol() {
            ipv4::PROTO_UDP => {
                if peer.encap != Encap::Vxlan {
                    return Err(DropReason::EncapMismatch);
                }
                let udp =
                    udp::Packet::new_checked(ip.payload()).map_err(|_| DropReason::UdpMalformed)?;
                if udp.dst_port() != peer.port {
                    return Err(DropReason::UnknownVni);
                }
                // Zero means "no checksum" over IPv4 (RFC 7348 senders use it).
                if udp.checksum() != 0 && !udp.verify_checksum(ip.src_addr(), ip.dst_addr()) {
                    return Err(DropReason::UdpChecksum);
                }
                let vx = vxlan::Header::new_checked(udp.payload())
                    .map_err(|_| DropReason::VxlanTruncated)?;
                if !vx.has_vni_flag() {
                    return Err(DropReason::VxlanNoIFlag);
                }
                if vx.reserved_bits_set() {
                    // RFC 7348: ignored on receipt; counted so it is visible.
                    c.event(Event::VxlanReservedBits);
                }
                if vx.vni() != peer.vni {
                    return Err(DropReason::UnknownVni);
                }
                let inner_end = ETH_IP + ipv4::MIN_HEADER_LEN + udp.len() as usize;
                let inner = frame
                    .get(VXLAN_INNER_IP - ethernet::HEADER_LEN..inner_end)
                    .unwrap_or(&[]);
                let ieth =
                    ethernet::Frame::new_checked(inner).map_err(|_| DropReason::InnerTruncated)?;
                // A kernel VTEP drops frames not addressed to it; so do we.
                if ieth.dst_addr() != t.local.vtep_mac {
                    return Err(DropReason::InnerDstMac);
                }
                match ieth.ethertype() {
                    ethernet::ethertype::IPV4 => {}
                    // RFC 7348 §6: discard tagged inner frames unless configured.
                    ethernet::ethertype::VLAN | ethernet::ethertype::QINQ => {
                        return Err(DropReason::InnerVlan);
                    }
                    _ => return Err(DropReason::InnerNotIpv4),
                }
                // The inner packet ends with the UDP datagram, whatever the
                // outer IPv4 length says (as the kernel trims to it).
                (VXLAN_INNER_IP, inner_end)
            }
            ipv4::PROTO_IPIP => {
                if peer.encap != Encap::Ipip {
                    return Err(DropReason::EncapMismatch);
                }
                (IPIP_INNER_IP, outer_end)
            }
            _ => return Err(DropReason::NotTunnel),
        };
        let inner = ipv4::Packet::new_checked(frame.get(inner_off..inner_end).unwrap_or(&[]))
            .map_err(|_| DropReason::Ipv4Malformed)?;
        if !inner.verify_checksum() {
            return Err(DropReason::Ipv4Checksum);
        }
        // Strict reverse path (the kernel's rp_filter, Calico's setting): a
        // node speaks only for the podCIDRs routed to it. Its own host
        // traffic and ICMP errors come from its VTEP address, inside them.
        if self.rp_filter == RpFilter::Strict
            && !t.routes_to_peer(u32::from(inner.src_addr()), peer_idx)
        {
            return Err(DropReason::InnerSourceSpoofed);
        }
        let inner_len = inner.total_len() as usize;
        let (outer_ecn, inner_ecn) = (ip.ecn(), inner.ecn());
        if let Some(ecn) = decap_ecn(outer_ecn, inner_ecn)? {
            ipv4::Packet::new_unchecked(&mut buf[inner_off..inner_off + inner_len])
                .set_ecn_incremental(ecn);
            if ecn == ipv4::ecn::CE {
                c.event(Event::EcnCePropagated);
            }
        }
        let from = Origin::Peer(peer_idx);
        self.forward(e, buf, Span::new(inner_off, inner_len), from, spare)
    }

    fn rx_pod(
        &mut self,
        e: Env<'_>,
        port: PortId,
        buf: &mut [u8],
        len: usize,
        spare: &mut dyn Spare,
    ) -> Step<Verdict> {
        let Env { t, .. } = e;
        let frame = &buf[..len];
        let eth = ethernet::Frame::new_checked(frame).map_err(|_| DropReason::EthTruncated)?;
        if eth.ethertype() != ethernet::ethertype::IPV4 {
            return Err(DropReason::NotIpv4);
        }
        let ip = ipv4::Packet::new_checked(eth.payload()).map_err(|_| DropReason::Ipv4Malformed)?;
        if !ip.verify_checksum() {
            return Err(DropReason::Ipv4Checksum);
        }
        // Anti-spoofing: a pod may only send from its own address.
        let pod_idx = t
            .pod_index_on_port(port)
            .ok_or(DropReason::PodSourceMismatch)?;
        if ip.src_addr() != t.pods[pod_idx as usize].ip {
            return Err(DropReason::PodSourceMismatch);
        }
        let ip_len = ip.total_len() as usize;
        self.forward(
            e,
            buf,
            Span::new(ETH_IP, ip_len),
            Origin::Pod(pod_idx),
            spare,
        )
    }

    /// Routes the received IPv4 packet at `buf[off..off + ip_len]` (already
    /// validated; from a node or a pod, never [`Origin::Local`]: the
    /// gateway's own ICMP errors go straight to [`Pipeline::deliver`]) and
    /// rewrites the buffer for its next hop.
    fn forward(
        &mut self,
        e: Env<'_>,
        buf: &mut [u8],
        pkt: Span,
        from: Origin,
        spare: &mut dyn Spare,
    ) -> Step<Verdict> {
        let Env { t, .. } = e;
        let Span { off, len: ip_len } = pkt;
        let (dst, ttl) = {
            let ip = ipv4::Packet::new_unchecked(&buf[off..off + ip_len]);
            (ip.dst_addr(), ip.ttl())
        };
        let nh = t.lookup(u32::from(dst)).ok_or(DropReason::NoRoute)?;
        // A router never forwards a packet whose TTL would reach zero; it
        // tells the sender (traceroute relies on it).
        if ttl <= 1 {
            let repr = icmp::ErrorRepr::TtlExceeded;
            let reason = DropReason::TtlExpired;
            return self.icmp_error(e, buf, pkt, repr, reason);
        }
        // The rules of `Out::resolve`, in place (see there).
        let out = match nh {
            NextHop::Pod(i) => {
                if from == Origin::Pod(i) {
                    return Err(DropReason::Hairpin);
                }
                Out::Pod(&t.pods[i as usize])
            }
            NextHop::Peer(i) => {
                if from == Origin::Peer(i) {
                    return Err(DropReason::Hairpin);
                }
                let peer = &t.peers[i as usize];
                let mac = peer.next_hop_mac.ok_or(DropReason::NeighUnresolved)?;
                // Route tables only hold 24-bit VNIs; checked anyway so no
                // table can make us emit a wrong one.
                let vx = vxlan::Repr::new(peer.vni).map_err(|_| DropReason::UnknownVni)?;
                Out::Peer { peer, mac, vx }
            }
        };
        // A pod's veth would drop an oversized packet silently, and VTEPs
        // never fragment their output (RFC 7348 §4.3): the packet is fitted
        // to the next hop's MTU here, as a router would.
        if ip_len > out.mtu() as usize {
            return self.too_big(e, buf, pkt, out, from, spare);
        }
        self.deliver(e, buf, pkt, out, from)
    }

    /// Rewrites the buffer holding the routed IPv4 packet at `buf[off..off +
    /// ip_len]` (fitting `out`'s MTU) for its next hop: TTL decrement, then
    /// a new Ethernet header for a pod, or the outer headers for a node.
    #[inline(always)]
    fn deliver(
        &mut self,
        e: Env<'_>,
        buf: &mut [u8],
        pkt: Span,
        out: Out<'_>,
        from: Origin,
    ) -> Step<Verdict> {
        let Env { t, c } = e;
        let Span { off, len: ip_len } = pkt;
        match out {
            Out::Pod(pod) => {
                if from != Origin::Local {
                    ipv4::Packet::new_unchecked(&mut buf[off..off + ip_len]).decrement_ttl();
                }
                let eth_off = off - ethernet::HEADER_LEN;
                ethernet::Repr {
                    src_addr: pod.host_mac,
                    dst_addr: pod.mac,
                    ethertype: ethernet::ethertype::IPV4,
                }
                .emit(&mut ethernet::Frame::new_unchecked(&mut buf[eth_off..off]));
                let len = ethernet::HEADER_LEN + ip_len;
                if eth_off != 0 {
                    buf.copy_within(eth_off..off + ip_len, 0);
                }
                // The gateway's own ICMP errors are counted as such, not
                // as forwarded traffic.
                let (event, direction) = match from {
                    Origin::Peer(_) => (Some(Event::DecapToPod), Direction::Decap),
                    Origin::Pod(_) => (Some(Event::PodToPod), Direction::Local),
                    Origin::Local => (None, Direction::Local),
                };
                if let Some(e) = event {
                    c.event(e);
                }
                self.last = FlowTag {
                    direction,
                    peer_slot: self.rx_peer,
                };
                Ok(Verdict::Tx {
                    port: pod.port,
                    len,
                })
            }
            Out::Peer { peer, mac, vx } => {
                let new_off = out.ip_offset();
                let total = new_off + ip_len;
                if total > buf.len() {
                    return Err(DropReason::TooBig);
                }
                if new_off != off {
                    buf.copy_within(off..off + ip_len, new_off);
                }
                let (tos, dont_frag, hash) = {
                    let mut inner = ipv4::Packet::new_unchecked(&mut buf[new_off..total]);
                    if from != Origin::Local {
                        inner.decrement_ttl();
                    }
                    (
                        inner.tos(),
                        inner.dont_frag(),
                        flow_hash(inner.into_inner()),
                    )
                };
                ethernet::Repr {
                    src_addr: t.local.underlay_mac,
                    dst_addr: mac,
                    ethertype: ethernet::ethertype::IPV4,
                }
                .emit(&mut ethernet::Frame::new_unchecked(&mut buf[..ETH_IP]));
                self.ident = self.ident.wrapping_add(1);
                let outer = ipv4::Repr {
                    src_addr: t.local.underlay_ip,
                    dst_addr: peer.underlay_ip,
                    protocol: match peer.encap {
                        Encap::Vxlan => ipv4::PROTO_UDP,
                        Encap::Ipip => ipv4::PROTO_IPIP,
                    },
                    ttl: t.local.outer_ttl,
                    // DSCP and ECN copied from the inner header (RFC 6040
                    // normal mode; RFC 2003 for IP-in-IP).
                    tos,
                    // Inner DF ⇒ outer DF, so PMTU discovery works end to end.
                    dont_frag,
                    ident: self.ident,
                    payload_len: total - IPIP_INNER_IP,
                };
                outer.emit(&mut ipv4::Packet::new_unchecked(
                    &mut buf[ETH_IP..IPIP_INNER_IP],
                ));
                if peer.encap == Encap::Vxlan {
                    udp::Repr {
                        src_port: SRC_PORT_MIN | (hash as u16 & 0x3fff),
                        dst_port: peer.port,
                        payload_len: total - vxlan::frame::VXLAN,
                    }
                    .emit(&mut udp::Packet::new_unchecked(
                        &mut buf[vxlan::frame::UDP..vxlan::frame::VXLAN],
                    ));
                    vx.emit(&mut vxlan::Header::new_unchecked(
                        &mut buf[vxlan::frame::VXLAN..vxlan::frame::INNER_ETH],
                    ));
                    ethernet::Repr {
                        src_addr: t.local.vtep_mac,
                        dst_addr: peer.vtep_mac,
                        ethertype: ethernet::ethertype::IPV4,
                    }
                    .emit(&mut ethernet::Frame::new_unchecked(
                        &mut buf[vxlan::frame::INNER_ETH..VXLAN_INNER_IP],
                    ));
                }
                let (event, direction) = match from {
                    Origin::Peer(_) => (Some(Event::Transit), Direction::Transit),
                    Origin::Pod(_) => (Some(Event::EncapToPeer), Direction::Encap),
                    Origin::Local => (None, Direction::Encap),
                };
                if let Some(e) = event {
                    c.event(e);
                }
                c.peer(peer.slot, PeerStat::TxPackets, 1);
                c.peer(peer.slot, PeerStat::TxBytes, total as u64);
                self.last = FlowTag {
                    direction,
                    peer_slot: Some(peer.slot),
                };
                Ok(Verdict::Tx {
                    port: UNDERLAY_PORT,
                    len: total,
                })
            }
        }
    }
}

/// A routed packet's next hop, resolved far enough to be written.
#[derive(Debug, Clone, Copy)]
enum Out<'t> {
    Pod(&'t Pod),
    Peer {
        peer: &'t Peer,
        /// Underlay next-hop MAC.
        mac: MacAddr,
        vx: vxlan::Repr,
    },
}

impl<'t> Out<'t> {
    /// The next hop `nh` of a packet from `from`, resolved far enough to be
    /// written: never back where the packet came from, never to a node
    /// whose underlay MAC is unknown. (`Pipeline::forward` spells the same
    /// rules out in place: calling this there costs the decapsulation path
    /// ~18 instructions a packet, measured with callgrind.)
    #[inline(always)]
    fn resolve(t: &'t RouteTable, nh: NextHop, from: Origin) -> Step<Out<'t>> {
        Ok(match nh {
            NextHop::Pod(i) => {
                if from == Origin::Pod(i) {
                    return Err(DropReason::Hairpin);
                }
                Out::Pod(&t.pods[i as usize])
            }
            NextHop::Peer(i) => {
                if from == Origin::Peer(i) {
                    return Err(DropReason::Hairpin);
                }
                let peer = &t.peers[i as usize];
                let mac = peer.next_hop_mac.ok_or(DropReason::NeighUnresolved)?;
                // Route tables only hold 24-bit VNIs; checked anyway so no
                // table can make us emit a wrong one.
                let vx = vxlan::Repr::new(peer.vni).map_err(|_| DropReason::UnknownVni)?;
                Out::Peer { peer, mac, vx }
            }
        })
    }

    /// Largest IPv4 packet the next hop carries.
    #[inline]
    fn mtu(self) -> u16 {
        match self {
            Out::Pod(pod) => pod.mtu,
            Out::Peer { peer, .. } => peer.mtu,
        }
    }

    /// The port its frames leave on.
    #[inline]
    fn port(self) -> PortId {
        match self {
            Out::Pod(pod) => pod.port,
            Out::Peer { .. } => UNDERLAY_PORT,
        }
    }

    /// Where the IPv4 packet sits in the frame that is sent.
    #[inline]
    fn ip_offset(self) -> usize {
        match self {
            Out::Pod(_) => ETH_IP,
            Out::Peer { peer, .. } => match peer.encap {
                Encap::Vxlan => VXLAN_INNER_IP,
                Encap::Ipip => IPIP_INNER_IP,
            },
        }
    }
}

impl Pipeline {
    /// Handles a packet larger than its next hop's MTU. With DF set the
    /// sender learns the MTU from an ICMP fragmentation-needed (RFC 1191);
    /// without it the packet is fragmented (RFC 791 §3.2, RFC 1812 §5.2.6).
    fn too_big(
        &mut self,
        e: Env<'_>,
        buf: &mut [u8],
        pkt: Span,
        out: Out<'_>,
        from: Origin,
        spare: &mut dyn Spare,
    ) -> Step<Verdict> {
        let Span { off, len: ip_len } = pkt;
        let df = ipv4::Packet::new_unchecked(&buf[off..off + ip_len]).dont_frag();
        if !df {
            return self.fragment(e, buf, pkt, out, from, spare);
        }
        let repr = icmp::ErrorRepr::FragNeeded { mtu: out.mtu() };
        self.icmp_error(e, buf, pkt, repr, DropReason::TooBig)
    }

    /// Splits the packet at `buf[off..off + ip_len]` (DF clear, larger than
    /// `out`'s MTU) into fragments that fit, each written for the next hop
    /// like any packet. All but the last go out in spare frames, in order;
    /// the last stays in `buf` and is the verdict. Nothing is sent unless
    /// every fragment has a frame.
    ///
    /// Per RFC 791: the data is cut at multiples of 8 bytes, a fragment of
    /// a fragment keeps its offset base and its last piece the original MF
    /// bit, and fragments after the first carry only the options with the
    /// copied flag (the others become NOPs, as Linux does).
    fn fragment(
        &mut self,
        e: Env<'_>,
        buf: &mut [u8],
        pkt: Span,
        out: Out<'_>,
        from: Origin,
        spare: &mut dyn Spare,
    ) -> Step<Verdict> {
        let Env { c, .. } = e;
        let Span { off, len: ip_len } = pkt;
        let (ihl, base, last_mf) = {
            let ip = ipv4::Packet::new_unchecked(&buf[off..off + ip_len]);
            (ip.header_len(), ip.frag_offset(), ip.more_frags())
        };
        // Bytes of data per fragment: a multiple of 8 (the offset's unit).
        let chunk = (out.mtu() as usize).saturating_sub(ihl) & !7;
        let data_len = ip_len - ihl;
        if chunk == 0 {
            return Err(DropReason::TooBig);
        }
        // The pieces' offsets must fit the 16-bit datagram (a fragment
        // reaching past 65535 bytes is malformed: "ping of death").
        if base as usize + data_len > u16::MAX as usize {
            return Err(DropReason::Ipv4Malformed);
        }
        let count = data_len.div_ceil(chunk);
        let new_off = out.ip_offset();
        // Every fragment, written for the next hop, must fit a frame (spare
        // frames are as big as the received one): checked before anything
        // is sent, so a packet goes out whole or not at all.
        if new_off + ihl + chunk > buf.len() {
            return Err(DropReason::TooBig);
        }
        if spare.available(out.port()) < count - 1 {
            return Err(DropReason::FragNoFrame);
        }
        for k in 0..count - 1 {
            let from_data = off + ihl + k * chunk;
            let frag_len = ihl + chunk;
            let frame = &buf[..];
            let mut result = Ok(());
            spare.send(out.port(), &mut |sbuf: &mut [u8]| {
                let Some(dst) = sbuf.get_mut(new_off..new_off + frag_len) else {
                    result = Err(DropReason::TooBig);
                    return 0;
                };
                dst[..ihl].copy_from_slice(&frame[off..off + ihl]);
                dst[ihl..].copy_from_slice(&frame[from_data..from_data + chunk]);
                let mut ip = ipv4::Packet::new_unchecked(&mut *dst);
                ip.set_total_len(frag_len as u16);
                ip.set_flags_frag(false, true, base + (k * chunk) as u16);
                ip.fill_checksum();
                match self.deliver(e, sbuf, Span::new(new_off, frag_len), out, from) {
                    Ok(Verdict::Tx { len, .. }) => len,
                    Ok(Verdict::Drop(reason)) | Err(reason) => {
                        result = Err(reason);
                        0
                    }
                }
            });
            result?;
            if k == 0 {
                // Fragments after the first: non-copied options go.
                ipv4::Packet::new_unchecked(&mut buf[off..off + ihl]).strip_uncopied_options();
            }
        }
        // The last fragment: its data moves down behind the header.
        let done = (count - 1) * chunk;
        let last_len = ihl + data_len - done;
        buf.copy_within(off + ihl + done..off + ip_len, off + ihl);
        {
            let mut ip = ipv4::Packet::new_unchecked(&mut buf[off..off + last_len]);
            ip.set_total_len(last_len as u16);
            ip.set_flags_frag(false, last_mf, base + done as u16);
            ip.fill_checksum();
        }
        let v = self.deliver(e, buf, Span::new(off, last_len), out, from)?;
        c.event(Event::Fragmented);
        c.event_n(Event::FragmentsOut, count as u64);
        Ok(v)
    }

    /// Answers the packet at `buf[off..off + ip_len]` with an ICMP error
    /// from this node's overlay address, routed like any other packet (to
    /// a local pod, or encapsulated toward the sender's node). The
    /// offending packet is counted as dropped under `reason` either way.
    ///
    /// RFC 1812 §4.3.2.7: no error about an ICMP error, a non-initial
    /// fragment, or a packet from an address that is not a unicast host.
    /// The way back is resolved before a rate-limit token is taken, so an
    /// error that cannot be sent costs no one else's budget. Out of line:
    /// the forwarding path stays small.
    #[cold]
    #[inline(never)]
    fn icmp_error(
        &mut self,
        e: Env<'_>,
        buf: &mut [u8],
        pkt: Span,
        repr: icmp::ErrorRepr,
        reason: DropReason,
    ) -> Step<Verdict> {
        let Env { t, c } = e;
        let Span { off, len: ip_len } = pkt;
        let (src, ihl, frag_offset, proto) = {
            let ip = ipv4::Packet::new_unchecked(&buf[off..off + ip_len]);
            (
                ip.src_addr(),
                ip.header_len(),
                ip.frag_offset(),
                ip.protocol(),
            )
        };
        let quoted_icmp_error =
            proto == ipv4::PROTO_ICMP && buf.get(off + ihl).is_some_and(|t| icmp::is_error(*t));
        if frag_offset != 0
            || quoted_icmp_error
            || src.is_unspecified()
            || src.is_multicast()
            || src.is_broadcast()
            || src.is_loopback()
        {
            c.event(Event::IcmpNotAllowed);
            return Err(reason);
        }
        // The way back to the sender, resolved as for any packet the
        // gateway originates.
        let Some(out) = t
            .lookup(u32::from(src))
            .and_then(|nh| Out::resolve(t, nh, Origin::Local).ok())
        else {
            c.event(Event::IcmpUnroutable);
            return Err(reason);
        };
        // The error is built where a VXLAN frame carries its inner packet,
        // so the common case (answering a remote pod) needs no further move.
        // It quotes as much as fits in 576 bytes and the way back's MTU.
        let quote = ip_len
            .min(ICMP_QUOTE_MAX)
            .min((out.mtu() as usize).saturating_sub(ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN));
        let new_off = VXLAN_INNER_IP;
        let icmp_off = new_off + ipv4::MIN_HEADER_LEN;
        let data_off = icmp_off + icmp::HEADER_LEN;
        let total = ipv4::MIN_HEADER_LEN + icmp::HEADER_LEN + quote;
        if new_off + total > buf.len() {
            return Err(reason);
        }
        let kind = match repr {
            icmp::ErrorRepr::TtlExceeded => IcmpKind::TimeExceeded,
            icmp::ErrorRepr::FragNeeded { .. } => IcmpKind::FragNeeded,
        };
        if !self.icmp.take(kind, u32::from(src)) {
            c.event(Event::IcmpRateLimited);
            return Err(reason);
        }
        buf.copy_within(off..off + quote, data_off);
        repr.emit(&mut icmp::Packet::new_unchecked(
            &mut buf[icmp_off..data_off + quote],
        ));
        self.ident = self.ident.wrapping_add(1);
        ipv4::Repr {
            src_addr: t.local.pod_cidr.network(),
            dst_addr: src,
            protocol: ipv4::PROTO_ICMP,
            ttl: 64,
            // Internetwork control, as routers mark their own ICMP.
            tos: 0xc0,
            dont_frag: false,
            ident: self.ident,
            payload_len: icmp::HEADER_LEN + quote,
        }
        .emit(&mut ipv4::Packet::new_unchecked(
            &mut buf[new_off..icmp_off],
        ));
        // Fits the way back and the buffer (checked above): it is sent.
        let Ok(v) = self.deliver(e, buf, Span::new(new_off, total), out, Origin::Local) else {
            c.event(Event::IcmpUnroutable);
            return Err(reason);
        };
        // The offending packet is dropped (counted here, since the verdict
        // is the error's transmission) and answered.
        c.dropped(reason);
        c.event(match kind {
            IcmpKind::TimeExceeded => Event::IcmpTimeExceeded,
            IcmpKind::FragNeeded => Event::IcmpFragNeeded,
        });
        Ok(v)
    }
}

/// Most bytes of the offending packet an ICMP error quotes (RFC 1812
/// §4.3.2.3: as much as fits in 576 bytes).
pub const ICMP_QUOTE_MAX: usize = 576 - ipv4::MIN_HEADER_LEN - icmp::HEADER_LEN;

/// RFC 6040 §4.2 decapsulation: the inner ECN field to write, if it
/// changes; `Err` when the packet must be dropped (outer CE on an inner
/// Not-ECT packet: the congestion signal cannot be passed on).
#[inline]
fn decap_ecn(outer: u8, inner: u8) -> Result<Option<u8>, DropReason> {
    use ipv4::ecn::{CE, ECT_0, ECT_1, NOT_ECT};
    match (outer, inner) {
        (CE, NOT_ECT) => Err(DropReason::EcnCeNotEct),
        (CE, CE) => Ok(None),
        (CE, _) => Ok(Some(CE)),
        (ECT_1, ECT_0) => Ok(Some(ECT_1)),
        _ => Ok(None),
    }
}

/// A hash of the inner flow (addresses, protocol, and ports for unfragmented
/// TCP/UDP) for the outer UDP source port: the underlay's ECMP and RSS see
/// one flow per inner flow (RFC 7348 §5).
#[inline]
fn flow_hash(ip: &[u8]) -> u32 {
    // One bounds check for the fixed header, then plain loads.
    let Some(h) = ip.first_chunk::<{ ipv4::MIN_HEADER_LEN }>() else {
        return 0;
    };
    let word = |b: &[u8; 4]| u32::from_be_bytes(*b);
    use ipv4::field;
    let src = word(h[field::SRC_ADDR].try_into().unwrap_or(&[0; 4]));
    let dst = word(h[field::DST_ADDR].try_into().unwrap_or(&[0; 4]));
    let proto = h[field::PROTOCOL];
    let ihl = ((h[field::VER_IHL] & 0x0f) as usize) * 4;
    let frag = u16::from_be_bytes([h[field::FLG_OFF.start], h[field::FLG_OFF.start + 1]]) & 0x3fff;
    let ports = match ip.get(ihl..ihl + 4) {
        Some(p) if (proto == ipv4::PROTO_TCP || proto == ipv4::PROTO_UDP) && frag == 0 => {
            u32::from_be_bytes([p[0], p[1], p[2], p[3]])
        }
        _ => 0,
    };
    // Multiply-xorshift mix (Murmur3 finaliser): cheap and well spread.
    let mut h = src ^ dst.rotate_left(16) ^ ports ^ u32::from(proto);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
