//! `pipeline_rx`: one frame through `Pipeline::process`, every verdict checked.
//!
//! Input: `[selector, frame...]`. The selector picks
//! - the RX port: `(sel & 0x0f) % 6` indexes [`RX_PORTS`] (0 underlay,
//!   1–2 pod a's queues, 3–4 pod b's, 5 no pod);
//! - the buffer: bit 7 clear → the whole 2048-byte frame buffer; bit 7 set →
//!   a tight buffer of `frame.len() + 8 × ((sel >> 4) & 7)` bytes, so the
//!   "no room to encapsulate" path is reached too.
//!
//! The frame is copied to the start of a buffer pre-filled with [`FILL`].
//!
//! Invariants (any violation panics, which libFuzzer reports as a crash):
//! - `process` never panics (debug assertions and overflow checks are on);
//! - a drop never claims `TxRingFull` (that is the I/O layer's) and leaves
//!   `last_flow()` at its default;
//! - a forwarded frame was acceptable input: pod frames come from an
//!   attached pod's own address; underlay frames are unfragmented IPv4
//!   without options, with a valid header checksum, addressed to us, from a
//!   configured node, in that node's encapsulation (VXLAN: its UDP port and
//!   VNI, I flag, valid or absent UDP checksum, inner Ethernet to our VTEP
//!   MAC with EtherType IPv4), and the inner IPv4 packet lies inside the
//!   tunnel payload (the UDP datagram for VXLAN) with a valid checksum and
//!   no outer CE over an inner Not-ECT packet (RFC 6040 says drop);
//! - `Tx { port, len }`: `len` ≤ buffer length; `port` is the underlay or a
//!   pod's TX port; the next hop is what a linear-scan longest-prefix match
//!   gives; never back to the node or pod it came from (hairpin, also across
//!   a pod's RX queues); never to a node whose MAC is unresolved; the inner
//!   packet fits the tunnel MTU;
//! - toward a node: outer Ethernet (next-hop MAC ← our underlay MAC,
//!   IPv4), outer IPv4 (IHL 5, total length = frame − 14, valid checksum,
//!   no MF/offset/reserved bit, DF and TOS copied from the inner header,
//!   TTL 64, protocol 17/4 per the node's encapsulation, 198.18.0.1 → the
//!   node); VXLAN: UDP source port in 49152–65535, destination the node's
//!   port, length = frame − 34, checksum 0, VXLAN flags exactly I, reserved
//!   fields zero, the node's VNI, inner Ethernet our VTEP MAC → the node's
//!   VTEP MAC, IPv4;
//! - toward a pod: Ethernet host-end MAC → pod MAC, IPv4, frame = 14 +
//!   inner total length;
//! - in both: the inner packet is the input's byte for byte except TTL (one
//!   less), header checksum (valid) and, on decapsulation, the ECN bits
//!   (RFC 6040 §4.2: outer CE → CE, outer ECT(1) over ECT(0) → ECT(1));
//!   so no byte of the output comes from the fill pattern;
//! - ICMP errors: a Tx for an input whose inner TTL is ≤ 1, or that is
//!   bigger than its node's tunnel MTU, must be an ICMP error (time
//!   exceeded 11/0; frag needed 3/4 with the MTU, only for DF packets)
//!   from 10.244.0.0 to the offending packet's source, TOS 0xc0, TTL 64,
//!   valid IPv4 and ICMP checksums, quoting the first min(len, 548) bytes
//!   of the offending packet; never about a non-initial fragment, an ICMP
//!   error, or a non-unicast source; delivered (to a pod or encapsulated
//!   to a node, all checks above) without TTL decrement;
//! - `last_flow()` names the direction and the peer slot involved;
//! - drop accounting: a `Drop` verdict means the pipeline counted nothing
//!   itself (the worker counts it); a forwarded packet counts no drop; an
//!   ICMP error counts exactly one (the original's).

use overpass::io::Verdict;
use overpass::pipeline::{Direction, FlowTag, Pipeline};
use overpass::route::{NextHop, PortId, RouteTable, UNDERLAY_PORT};
use overpass::stats::{CounterKind, Counters, DropReason};

use crate::fixture::{
    BUF_LEN, FILL, GW_UNDERLAY_IP, GW_UNDERLAY_MAC, GW_VTEP_MAC, OUTER_TTL, PODS, PodDef, RX_PORTS,
    fixture, naive_lookup, peer_index, pod_by_rx_port,
};
use crate::net::*;
use overpass::config::Encap;

/// Entry point of the fuzz target.
pub fn run(data: &[u8]) -> Option<Verdict> {
    let (rx, cap, frame) = decode(data)?;
    let mut p = Pipeline::new(0);
    Some(process_checked(&mut p, rx, frame, cap).0)
}

/// Splits an input into RX port, buffer capacity and frame.
pub fn decode(data: &[u8]) -> Option<(PortId, usize, &[u8])> {
    let (&sel, frame) = data.split_first()?;
    if frame.len() > BUF_LEN {
        return None;
    }
    let rx = RX_PORTS[usize::from(sel & 0x0f) % RX_PORTS.len()];
    let cap = if sel & 0x80 != 0 {
        (frame.len() + 8 * usize::from((sel >> 4) & 7)).min(BUF_LEN)
    } else {
        BUF_LEN
    };
    Some((rx, cap, frame))
}

/// An input for `frame` arriving on `rx` with the full buffer.
pub fn encode(rx: PortId, frame: &[u8]) -> Vec<u8> {
    let idx = RX_PORTS.iter().position(|&p| p == rx).expect("a fixture port") as u8;
    let mut v = vec![idx];
    v.extend_from_slice(frame);
    v
}

/// An input for `frame` arriving on `rx` with a tight buffer of
/// `frame.len() + 8 × slack8` bytes (`slack8` < 8).
pub fn encode_tight(rx: PortId, slack8: u8, frame: &[u8]) -> Vec<u8> {
    let mut v = encode(rx, frame);
    v[0] |= 0x80 | ((slack8 & 7) << 4);
    v
}

/// Runs one frame through `p` in a `cap`-byte buffer pre-filled with
/// [`FILL`] and checks every invariant. Returns the verdict and the
/// transmitted bytes (empty on drop).
pub fn process_checked(
    p: &mut Pipeline,
    rx: PortId,
    frame: &[u8],
    cap: usize,
) -> (Verdict, Vec<u8>) {
    assert!(frame.len() <= cap && cap <= BUF_LEN, "harness misuse");
    let fx = fixture();
    let mut storage = [FILL; BUF_LEN];
    let buf = &mut storage[..cap];
    buf[..frame.len()].copy_from_slice(frame);
    // Per-thread counters: the drop-accounting check reads their deltas,
    // and `cargo test` runs tests in parallel threads.
    thread_local!(static COUNTERS: Counters = Counters::default());
    let (v, counted) = COUNTERS.with(|c| {
        let before = total_drops(c);
        let v = p.process(&fx.table, c, rx, buf, frame.len());
        // Drops the pipeline counted itself (the worker counts a Drop verdict).
        (v, total_drops(c) - before)
    });
    let flow = p.last_flow();
    match v {
        Verdict::Drop(reason) => {
            assert_ne!(
                reason,
                DropReason::TxRingFull,
                "the pipeline returned the I/O layer's drop reason"
            );
            assert_eq!(flow, FlowTag::default(), "a dropped packet left a flow tag");
            // Finding `icmp-drop-double-count`: an ICMP error that cannot be
            // sent leaves the original counted by the pipeline too.
            if !crate::tolerated("icmp-drop-double-count") {
                assert_eq!(
                    counted, 0,
                    "dropped as {reason:?} but also counted {counted} drop(s) itself: the \
                     worker counts this packet twice"
                );
            }
            (v, vec![])
        }
        Verdict::Tx { port, len } => {
            assert!(len <= cap, "Tx len {len} is past the {cap}-byte buffer");
            let icmp = check_tx(&fx.table, rx, frame, port, &buf[..len], flow);
            // An ICMP error stands for the dropped original: counted once.
            assert_eq!(counted, u64::from(icmp), "drops counted for a transmitted frame");
            (v, buf[..len].to_vec())
        }
    }
}

fn total_drops(c: &Counters) -> u64 {
    DropReason::all().map(|r| c.drops(r)).sum()
}

/// Where the inner IPv4 packet of an accepted input is, and where it came from.
#[derive(Debug)]
struct Accepted {
    /// Offset and total length of the inner IPv4 packet in the input frame.
    off: usize,
    len: usize,
    /// The node it came from (index into `peers`), for underlay input.
    from_peer: Option<usize>,
    /// The pod it came from, for pod input.
    from_pod: Option<&'static PodDef>,
    /// Outer ECN codepoint, for underlay input.
    outer_ecn: Option<u8>,
}

/// Checks that a frame the pipeline forwarded (or answered with an ICMP
/// error) was acceptable, and finds its inner packet.
fn accepted_input(t: &RouteTable, rx: PortId, f: &[u8]) -> Accepted {
    assert!(f.len() >= ETH_LEN, "forwarded a frame shorter than Ethernet");
    assert_eq!(be16(f, 12), ETHERTYPE_IPV4, "forwarded a non-IPv4 frame");
    let (off, limit, from_peer, from_pod, outer_ecn) = if rx == UNDERLAY_PORT {
        let o = ETH_LEN;
        assert!(f.len() >= o + IP_LEN, "forwarded a truncated outer IPv4 header");
        assert_eq!(f[o], 0x45, "forwarded an outer header that is not IPv4 IHL 5");
        let tot = usize::from(be16(f, o + 2));
        assert!(
            tot >= IP_LEN && o + tot <= f.len(),
            "forwarded an outer packet with total length {tot} in a {}-byte frame",
            f.len()
        );
        assert!(checksum_ok(&f[o..o + IP_LEN]), "forwarded a bad outer checksum");
        assert_eq!(be16(f, o + 6) & 0x3fff, 0, "forwarded an outer fragment");
        assert_eq!(ip_at(f, o + 16), GW_UNDERLAY_IP, "forwarded an outer packet not for us");
        let src = ip_at(f, o + 12);
        let pi = peer_index(t, src)
            .unwrap_or_else(|| panic!("forwarded tunnel traffic from unknown {src}"));
        let peer = &t.peers[pi];
        let outer_end = o + tot;
        let outer_ecn = Some(f[o + 1] & 3);
        match f[o + 9] {
            PROTO_UDP => {
                assert_eq!(peer.encap, Encap::Vxlan, "VXLAN accepted from a non-VXLAN node");
                let u = o + IP_LEN;
                assert!(outer_end >= u + UDP_LEN, "forwarded a truncated UDP header");
                let ulen = usize::from(be16(f, u + 4));
                assert!(
                    ulen >= UDP_LEN && u + ulen <= outer_end,
                    "forwarded a UDP length {ulen} inconsistent with IPv4 total length {tot}"
                );
                assert_eq!(be16(f, u + 2), peer.port, "VXLAN accepted on another UDP port");
                if be16(f, u + 6) != 0 {
                    assert!(
                        udp_checksum_ok(src, GW_UNDERLAY_IP, &f[u..u + ulen]),
                        "forwarded a bad outer UDP checksum"
                    );
                }
                let udp_end = u + ulen;
                let vx = u + UDP_LEN;
                assert!(udp_end >= vx + VXLAN_LEN, "forwarded a truncated VXLAN header");
                assert!(f[vx] & 0x08 != 0, "forwarded VXLAN without the I flag");
                let vni = u32::from_be_bytes([0, f[vx + 4], f[vx + 5], f[vx + 6]]);
                assert_eq!(vni, peer.vni, "forwarded another VNI");
                let ie = vx + VXLAN_LEN;
                assert!(udp_end >= ie + ETH_LEN, "forwarded a truncated inner Ethernet header");
                assert_eq!(mac_at(f, ie), GW_VTEP_MAC, "forwarded an inner frame not for our VTEP");
                assert_eq!(be16(f, ie + 12), ETHERTYPE_IPV4, "forwarded a non-IPv4 inner frame");
                // The inner frame is the UDP payload: bytes after the UDP
                // datagram (but inside the outer IPv4 packet) are not part
                // of it.
                // Finding `vxlan-udp-len`: the gateway bounds the inner
                // packet by the outer IPv4 length instead.
                let end = if crate::tolerated("vxlan-udp-len") { outer_end } else { udp_end };
                (ie + ETH_LEN, end, Some(pi), None, outer_ecn)
            }
            PROTO_IPIP => {
                assert_eq!(peer.encap, Encap::Ipip, "IP-in-IP accepted from a non-IPIP node");
                (o + IP_LEN, outer_end, Some(pi), None, outer_ecn)
            }
            proto => panic!("forwarded underlay protocol {proto}"),
        }
    } else {
        let pod = pod_by_rx_port(rx)
            .unwrap_or_else(|| panic!("forwarded a frame from port {rx}, which serves no pod"));
        (ETH_LEN, f.len(), None, Some(pod), None)
    };
    assert!(
        limit >= off + IP_LEN,
        "forwarded a truncated inner IPv4 header (offset {off}, payload ends at {limit})"
    );
    let a = &f[off..limit];
    assert_eq!(a[0] >> 4, 4, "forwarded inner IP version {}", a[0] >> 4);
    let ihl = usize::from(a[0] & 0x0f) * 4;
    let tot = usize::from(be16(a, 2));
    assert!(ihl >= IP_LEN && ihl <= tot, "forwarded inner IHL {ihl} with total length {tot}");
    assert!(
        tot <= a.len(),
        "forwarded an inner IPv4 packet of {tot} bytes at offset {off} that runs past the \
         end of the tunnel payload / frame ({} bytes available)",
        a.len()
    );
    assert!(checksum_ok(&a[..ihl]), "forwarded a bad inner checksum");
    if let Some(pod) = from_pod {
        assert_eq!(ip_at(a, 12), pod.ip, "forwarded a spoofed source from pod {}", pod.name);
    }
    if let Some(outer) = outer_ecn {
        assert!(
            !(outer == 3 && a[1] & 3 == 0),
            "forwarded outer CE over an inner Not-ECT packet (RFC 6040: drop)"
        );
    }
    Accepted {
        off,
        len: tot,
        from_peer,
        from_pod,
        outer_ecn,
    }
}

/// RFC 6040 §4.2: the inner ECN codepoint after decapsulation.
pub fn decap_ecn(outer: u8, inner: u8) -> u8 {
    match (outer, inner) {
        (3, _) => 3,
        (1, 2) => 1,
        _ => inner,
    }
}

/// The output inner packet `b` is `a` with TTL less `hops`, a valid
/// checksum and every other byte equal.
pub fn check_inner(a: &[u8], b: &[u8], hops: u8) {
    assert!(b.len() >= a.len(), "inner packet cut short");
    let b = &b[..a.len()];
    let ihl = usize::from(a[0] & 0x0f) * 4;
    assert_eq!(b[8], a[8] - hops, "inner TTL {} → {}, expected −{hops}", a[8], b[8]);
    assert!(checksum_ok(&b[..ihl]), "output inner header checksum does not verify");
    if let Some(i) = (0..a.len()).find(|&i| !matches!(i, 8 | 10 | 11) && a[i] != b[i]) {
        panic!(
            "inner packet byte {i} changed: {:#04x} → {:#04x} (fill pattern is {FILL:#04x})",
            a[i], b[i]
        );
    }
}

/// ICMP error kinds a forwarder originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IcmpKind {
    TimeExceeded,
    FragNeeded { mtu: u16 },
}

/// The overlay address ICMP errors come from.
fn icmp_source(t: &RouteTable) -> std::net::Ipv4Addr {
    t.local.pod_cidr.network()
}

/// Most bytes of the offending packet an ICMP error quotes (576-byte error).
const ICMP_QUOTE_MAX: usize = 576 - IP_LEN - 8;

/// Checks a transmitted frame; returns whether it is an ICMP error the
/// gateway originated (instead of forwarding the input).
fn check_tx(
    t: &RouteTable,
    rx: PortId,
    frame: &[u8],
    port: PortId,
    out: &[u8],
    flow: FlowTag,
) -> bool {
    let inn = accepted_input(t, rx, frame);
    // The inner packet as the forwarding step sees it: after RFC 6040
    // decapsulation (ECN), before the TTL decrement.
    let mut a = frame[inn.off..inn.off + inn.len].to_vec();
    if let Some(outer) = inn.outer_ecn {
        a[1] = (a[1] & !3) | decap_ecn(outer, a[1] & 3);
    }
    let dst = ip_at(&a, 16);
    let nh = naive_lookup(t, dst).unwrap_or_else(|| panic!("forwarded {dst}, which has no route"));
    let too_big = match nh {
        NextHop::Peer(pi) => {
            let mtu = t.peers[pi as usize].mtu;
            (a.len() > usize::from(mtu)).then_some(mtu)
        }
        NextHop::Pod(_) => None,
    };
    let icmp = if a[8] <= 1 {
        Some(IcmpKind::TimeExceeded)
    } else {
        too_big.map(|mtu| IcmpKind::FragNeeded { mtu })
    };
    let Some(kind) = icmp else {
        let to = Delivery {
            from_peer: inn.from_peer,
            from_pod: inn.from_pod,
            hops: 1,
        };
        check_delivery(t, rx, port, out, &a, &to, flow);
        return false;
    };

    // An ICMP error about `a`, routed back to its source.
    if let IcmpKind::FragNeeded { .. } = kind {
        assert!(be16(&a, 6) & 0x4000 != 0, "frag-needed sent for a packet without DF");
    }
    let ihl = usize::from(a[0] & 0x0f) * 4;
    assert_eq!(be16(&a, 6) & 0x1fff, 0, "ICMP error about a non-initial fragment");
    assert!(
        !(a[9] == 1 && a.len() > ihl && matches!(a[ihl], 3 | 4 | 5 | 11 | 12)),
        "ICMP error about an ICMP error"
    );
    let src = ip_at(&a, 12);
    assert!(
        !(src.is_unspecified() || src.is_multicast() || src.is_broadcast() || src.is_loopback()),
        "ICMP error sent to {src}"
    );
    let back = naive_lookup(t, src)
        .unwrap_or_else(|| panic!("ICMP error sent to {src}, which has no route"));
    let e_off = match (port, back) {
        (UNDERLAY_PORT, NextHop::Peer(pi)) => match t.peers[pi as usize].encap {
            Encap::Vxlan => ETH_LEN + IP_LEN + UDP_LEN + VXLAN_LEN + ETH_LEN,
            Encap::Ipip => ETH_LEN + IP_LEN,
        },
        _ => ETH_LEN,
    };
    assert!(out.len() >= e_off + IP_LEN + 8, "ICMP error frame too short");
    let e = &out[e_off..];
    let quote = a.len().min(ICMP_QUOTE_MAX);
    assert_eq!(e[0], 0x45, "ICMP error version/IHL");
    assert_eq!(e[1], 0xc0, "ICMP error TOS (internetwork control)");
    assert_eq!(usize::from(be16(e, 2)), IP_LEN + 8 + quote, "ICMP error total length");
    assert_eq!(be16(e, 6), 0, "ICMP error flags/offset");
    assert_eq!(e[8], 64, "ICMP error TTL");
    assert_eq!(e[9], 1, "ICMP error protocol");
    assert!(checksum_ok(&e[..IP_LEN]), "ICMP error IPv4 checksum");
    assert_eq!(ip_at(e, 12), icmp_source(t), "ICMP error source");
    assert_eq!(ip_at(e, 16), src, "ICMP error destination");
    let m = &e[IP_LEN..IP_LEN + 8 + quote];
    let want_hdr: [u8; 4] = match kind {
        IcmpKind::TimeExceeded => [0, 0, 0, 0],
        IcmpKind::FragNeeded { mtu } => [0, 0, (mtu >> 8) as u8, mtu as u8],
    };
    let (ty, code) = match kind {
        IcmpKind::TimeExceeded => (11, 0),
        IcmpKind::FragNeeded { .. } => (3, 4),
    };
    assert_eq!((m[0], m[1]), (ty, code), "ICMP type/code for {kind:?}");
    assert_eq!(m[4..8], want_hdr, "ICMP rest-of-header for {kind:?}");
    assert_eq!(ones_sum(m, 0), 0xffff, "ICMP checksum");
    // The quote: the offending packet as received (ECN as decapsulated, so
    // its header checksum may have been updated: it must verify).
    let q = &m[8..];
    if let Some(i) = (0..quote).find(|&i| !matches!(i, 10 | 11) && q[i] != a[i]) {
        panic!("ICMP quote byte {i}: {:#04x}, offending packet has {:#04x}", q[i], a[i]);
    }
    if quote >= ihl && a[1] == frame[inn.off + 1] {
        assert_eq!(q[10..12], a[10..12], "ICMP quote changed the header checksum");
    } else if quote >= ihl {
        assert!(checksum_ok(&q[..ihl]), "quoted header checksum does not verify");
    }
    // The error itself is forwarded like any packet, without TTL decrement
    // and with no hairpin rule (it goes back where the original came from).
    let e_len = usize::from(be16(e, 2));
    let to = Delivery {
        from_peer: None,
        from_pod: None,
        hops: 0,
    };
    check_delivery(t, rx, port, out, &e[..e_len], &to, flow);
    let rx_slot = inn.from_peer.map(|i| t.peers[i].slot);
    match back {
        NextHop::Pod(_) => assert_eq!(
            flow,
            FlowTag {
                direction: Direction::Local,
                peer_slot: rx_slot
            },
            "flow tag of an ICMP error to a pod"
        ),
        NextHop::Peer(pi) => assert_eq!(
            flow,
            FlowTag {
                direction: Direction::Encap,
                peer_slot: Some(t.peers[pi as usize].slot)
            },
            "flow tag of an ICMP error to a node"
        ),
    }
    true
}

/// Where a forwarded packet came from, and how many TTL it must lose.
struct Delivery {
    from_peer: Option<usize>,
    from_pod: Option<&'static PodDef>,
    hops: u8,
}

/// Checks that `out` carries IPv4 packet `a` to its next hop (by reference
/// LPM). `hops` = 0 marks a packet the gateway originated (ICMP error):
/// no TTL decrement, no hairpin rule, and its flow tag is checked by the
/// caller.
fn check_delivery(
    t: &RouteTable,
    rx: PortId,
    port: PortId,
    out: &[u8],
    a: &[u8],
    d: &Delivery,
    flow: FlowTag,
) {
    let dst = ip_at(a, 16);
    let nh = naive_lookup(t, dst).unwrap_or_else(|| panic!("forwarded {dst}, which has no route"));
    let rx_slot = d.from_peer.map(|i| t.peers[i].slot);
    if port == UNDERLAY_PORT {
        let NextHop::Peer(pi) = nh else {
            panic!("{dst} routes to {nh:?} but went to the underlay");
        };
        let pi = pi as usize;
        let peer = &t.peers[pi];
        assert_ne!(d.from_peer, Some(pi), "hairpin: sent back to the node it came from");
        let nh_mac = peer
            .next_hop_mac
            .unwrap_or_else(|| panic!("sent to {} whose next-hop MAC is unresolved", peer.name));
        assert!(
            a.len() <= usize::from(peer.mtu),
            "inner packet of {} bytes exceeds {}'s MTU {}",
            a.len(),
            peer.name,
            peer.mtu
        );
        let inner_off = match peer.encap {
            Encap::Vxlan => ETH_LEN + IP_LEN + UDP_LEN + VXLAN_LEN + ETH_LEN,
            Encap::Ipip => ETH_LEN + IP_LEN,
        };
        assert_eq!(out.len(), inner_off + a.len(), "Tx length");
        assert_eq!(mac_at(out, 0), nh_mac, "outer destination MAC");
        assert_eq!(mac_at(out, 6), GW_UNDERLAY_MAC, "outer source MAC");
        assert_eq!(be16(out, 12), ETHERTYPE_IPV4, "outer EtherType");
        let o = ETH_LEN;
        assert_eq!(out[o], 0x45, "outer version/IHL");
        assert_eq!(out[o + 1], a[1], "outer TOS is not the inner TOS");
        assert_eq!(usize::from(be16(out, o + 2)), out.len() - ETH_LEN, "outer total length");
        let ff = be16(out, o + 6);
        assert_eq!(ff & 0xbfff, 0, "outer flags/offset {ff:#06x}");
        assert_eq!(ff & 0x4000, be16(a, 6) & 0x4000, "outer DF is not the inner DF");
        assert_eq!(out[o + 8], OUTER_TTL, "outer TTL");
        assert!(checksum_ok(&out[o..o + IP_LEN]), "outer IPv4 checksum does not verify");
        assert_eq!(ip_at(out, o + 12), GW_UNDERLAY_IP, "outer source");
        assert_eq!(ip_at(out, o + 16), peer.underlay_ip, "outer destination");
        match peer.encap {
            Encap::Vxlan => {
                assert_eq!(out[o + 9], PROTO_UDP, "outer protocol");
                let u = o + IP_LEN;
                let sport = be16(out, u);
                assert!(sport >= 49152, "UDP source port {sport} below 49152");
                assert_eq!(be16(out, u + 2), peer.port, "UDP destination port");
                assert_eq!(usize::from(be16(out, u + 4)), out.len() - u, "UDP length");
                assert_eq!(be16(out, u + 6), 0, "UDP checksum is not 0");
                let vx = u + UDP_LEN;
                let mut want = [0u8; 8];
                want[0] = 0x08;
                want[4..7].copy_from_slice(&peer.vni.to_be_bytes()[1..]);
                assert_eq!(out[vx..vx + 8], want, "VXLAN header");
                let ie = vx + VXLAN_LEN;
                assert_eq!(mac_at(out, ie), peer.vtep_mac, "inner destination MAC");
                assert_eq!(mac_at(out, ie + 6), GW_VTEP_MAC, "inner source MAC");
                assert_eq!(be16(out, ie + 12), ETHERTYPE_IPV4, "inner EtherType");
            }
            Encap::Ipip => assert_eq!(out[o + 9], PROTO_IPIP, "outer protocol"),
        }
        check_inner(a, &out[inner_off..], d.hops);
        if d.hops > 0 {
            let want = if rx == UNDERLAY_PORT {
                Direction::Transit
            } else {
                Direction::Encap
            };
            assert_eq!(
                flow,
                FlowTag {
                    direction: want,
                    peer_slot: Some(peer.slot)
                },
                "flow tag"
            );
        }
    } else {
        let idx = t
            .pods
            .iter()
            .position(|p| p.port == port)
            .unwrap_or_else(|| panic!("Tx on port {port}, which is no pod's TX port"));
        assert_eq!(nh, NextHop::Pod(idx as u32), "{dst} routes to {nh:?}, sent to pod {idx}");
        let pod = &t.pods[idx];
        let def = PODS.iter().find(|p| p.port == port).expect("fixture pod");
        assert_eq!(pod.ip, def.ip);
        // Finding `pod-rxq-hairpin`: the gateway compares the RX port, not
        // the pod, so a pod's frame to itself on its second queue returns.
        if let Some(src) = d.from_pod.filter(|_| !crate::tolerated("pod-rxq-hairpin")) {
            assert_ne!(
                src.port, port,
                "hairpin: a frame from pod {} (RX port {rx}) was sent back to it",
                src.name
            );
        }
        assert_eq!(out.len(), ETH_LEN + a.len(), "Tx length");
        assert_eq!(mac_at(out, 0), pod.mac, "destination MAC");
        assert_eq!(mac_at(out, 6), pod.host_mac, "source MAC");
        assert_eq!(be16(out, 12), ETHERTYPE_IPV4, "EtherType");
        check_inner(a, &out[ETH_LEN..], d.hops);
        if d.hops > 0 {
            let want = if rx == UNDERLAY_PORT {
                FlowTag {
                    direction: Direction::Decap,
                    peer_slot: rx_slot,
                }
            } else {
                FlowTag {
                    direction: Direction::Local,
                    peer_slot: None,
                }
            };
            assert_eq!(flow, want, "flow tag");
        }
    }
}
