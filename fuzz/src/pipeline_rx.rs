//! `pipeline_rx`: one frame through `Pipeline::process`, every verdict checked.
//!
//! Input: `[selector, frame...]`. The selector picks
//! - the RX port: `(sel & 0x0f) % 6` indexes [`RX_PORTS`] (0 underlay,
//!   1–2 pod a's queues, 3–4 pod b's, 5 no pod);
//! - the buffer: bit 7 clear → the whole 2048-byte frame buffer; bit 7 set →
//!   a tight buffer of `frame.len() + 8 × ((sel >> 4) & 7)` bytes, so the
//!   "no room to encapsulate" path is reached too;
//! - the spare frames the pipeline may use for fragments 1..n−1 of a packet
//!   it fragments: with bit 7 clear, `s = (sel >> 4) & 7` gives `s − 1`
//!   frames (0–6), and `s = 0` as many as it asks for; with bit 7 set (bits
//!   4–6 are the slack), as many as it asks for. The fixture's MTUs make at
//!   most 4 fragments of a frame that fits the buffer, so both "enough" and
//!   "too few" are reached. (Seeds written before spare frames existed have
//!   bits 4–6 clear with bit 7 clear: unlimited frames, as the I/O layer of
//!   the tests gives.)
//!
//! The frame is copied to the start of a buffer pre-filled with [`FILL`];
//! spare frames are fresh buffers of the same capacity, pre-filled alike
//! ([`CollectSpare`]).
//!
//! Invariants (any violation panics, which libFuzzer reports as a crash):
//! - `process` never panics (debug assertions and overflow checks are on);
//! - a drop never claims `TxRingFull` (that is the I/O layer's), leaves
//!   `last_flow()` at its default, sends no spare frame and counts no
//!   `fragmented` / `fragments_out` event;
//! - the pipeline never calls `Spare::send` when `Spare::available` is 0
//!   (it must check before cutting, so that nothing goes out unless every
//!   fragment has a frame), and no spare frame is longer than its buffer;
//! - spare frames: a `Drop` with a limited number of spare frames must be
//!   the drop the same input gets with unlimited frames (replayed on a
//!   fresh pipeline), except that a packet cut there into `n` pieces must
//!   be `Drop(FragNoFrame)` here, with fewer than `n − 1` frames
//!   available; `FragNoFrame` never occurs with unlimited frames;
//! - a forwarded frame was acceptable input: pod frames come from an
//!   attached pod's own address; underlay frames are unfragmented IPv4
//!   without options, with a valid header checksum, addressed to us, from a
//!   configured node, in that node's encapsulation (VXLAN: its UDP port and
//!   VNI, I flag, valid or absent UDP checksum, inner Ethernet to our VTEP
//!   MAC with EtherType IPv4), and the inner IPv4 packet lies inside the
//!   tunnel payload (the UDP datagram for VXLAN) with a valid checksum, an
//!   inner source that routes back (linear-scan longest match) to that
//!   very node (strict reverse path, the pipeline's default), and no outer
//!   CE over an inner Not-ECT packet (RFC 6040 says drop);
//! - `Tx { port, len }`: `len` ≤ buffer length; `port` is the underlay or a
//!   pod's TX port; the next hop is what a linear-scan longest-prefix match
//!   gives; never back to the node or pod it came from (hairpin, also across
//!   a pod's RX queues); never to a node whose MAC is unresolved; the inner
//!   packet fits the next hop's MTU (the node's tunnel MTU, the pod's veth
//!   MTU);
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
//! - fragmentation: an input without DF, TTL > 1, bigger than its next
//!   hop's MTU, must go out as `n` ≥ 2 fragments: `n − 1` spare frames then
//!   the verdict's frame, all on the verdict's port, each passing the
//!   delivery checks above for its own inner packet (outer headers for a
//!   node, Ethernet for a pod, flow tag), with: inner fragment ≤ the MTU;
//!   with `chunk` = (MTU − IHL) rounded down to a multiple of 8, `n` =
//!   ⌈data / chunk⌉ and every fragment but the last carrying exactly
//!   `chunk` data bytes (the last at least one); offsets contiguous from the
//!   input's own offset; MF on all but the last, which keeps the input's
//!   MF; DF and the reserved bit clear; version/IHL, TOS (as decapsulated),
//!   ident, protocol, source and destination the input's; TTL one less;
//!   valid checksum; the first fragment's options the input's, the later
//!   ones' the input's with every option lacking the copied flag replaced
//!   by NOPs (a malformed list, or what follows end-of-list, becomes
//!   end-of-list); the data, concatenated, the input's byte for byte; an
//!   input whose offset plus data passes 65535 is never cut (must be
//!   dropped); distinct outer identifications and, for VXLAN, one UDP
//!   source port for all fragments; one `fragmented` event and `n`
//!   `fragments_out`; no spare frame, and neither event, for any other
//!   verdict;
//! - ICMP errors: a Tx for an input whose inner TTL is ≤ 1, or that has DF
//!   and is bigger than its next hop's MTU (a node's tunnel MTU or a pod's
//!   veth MTU), must be an ICMP error (time exceeded 11/0; frag needed 3/4
//!   with that MTU) from 10.244.0.0 to the offending packet's source, TOS
//!   0xc0, TTL 64, valid IPv4 and ICMP checksums, quoting the first
//!   min(len, 548) bytes of the offending packet; never about a
//!   non-initial fragment, an ICMP error, or a non-unicast source;
//!   delivered (to a pod or encapsulated to a node, all checks above)
//!   without TTL decrement;
//! - `last_flow()` names the direction and the peer slot involved;
//! - drop accounting: the pipeline counts every drop it decides, once (the
//!   worker counts no verdict): a `Drop(reason)` verdict means exactly one
//!   drop counted, under `reason`; a forwarded packet (fragmented or not)
//!   counts no drop; an ICMP error counts exactly one, the original's
//!   (`TtlExpired` for time exceeded, `TooBig` for frag needed).

use overpass_dataplane::counters::{CounterKind, Counters, DropReason, Event};
use overpass_dataplane::fib::{Encap, NextHop, PortId, RouteTable, UNDERLAY_PORT};
use overpass_dataplane::io::{Spare, Verdict};
use overpass_dataplane::pipeline::{Direction, FlowTag, Pipeline};

use crate::fixture::{
    BUF_LEN, FILL, GW_UNDERLAY_IP, GW_UNDERLAY_MAC, GW_VTEP_MAC, OUTER_TTL, PODS, PodDef, RX_PORTS,
    fixture, naive_lookup, peer_index, pod_by_rx_port,
};
use crate::net::*;

/// Spare frames without limit (the pipeline gets as many as it asks for).
pub const UNLIMITED: usize = usize::MAX;

/// Entry point of the fuzz target.
pub fn run(data: &[u8]) -> Option<Verdict> {
    run_detailed(data).map(|r| r.verdict)
}

/// [`run`], returning everything the pipeline sent.
pub fn run_detailed(data: &[u8]) -> Option<Processed> {
    let inp = decode(data)?;
    let mut p = Pipeline::new(0);
    Some(process_checked(
        &mut p, inp.rx, inp.frame, inp.cap, inp.spare,
    ))
}

/// A decoded input.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub rx: PortId,
    /// Capacity of the frame buffer and of every spare frame.
    pub cap: usize,
    /// Spare frames available ([`UNLIMITED`]: any number).
    pub spare: usize,
    pub frame: &'a [u8],
}

/// Splits an input into RX port, buffer capacity, spare frames and frame.
pub fn decode(data: &[u8]) -> Option<Input<'_>> {
    let (&sel, frame) = data.split_first()?;
    if frame.len() > BUF_LEN {
        return None;
    }
    let rx = RX_PORTS[usize::from(sel & 0x0f) % RX_PORTS.len()];
    let bits = usize::from((sel >> 4) & 7);
    let (cap, spare) = if sel & 0x80 != 0 {
        ((frame.len() + 8 * bits).min(BUF_LEN), UNLIMITED)
    } else if bits == 0 {
        (BUF_LEN, UNLIMITED)
    } else {
        (BUF_LEN, bits - 1)
    };
    Some(Input {
        rx,
        cap,
        spare,
        frame,
    })
}

/// An input for `frame` arriving on `rx` with the full buffer (and
/// unlimited spare frames).
pub fn encode(rx: PortId, frame: &[u8]) -> Vec<u8> {
    let idx = RX_PORTS
        .iter()
        .position(|&p| p == rx)
        .expect("a fixture port") as u8;
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

/// An input for `frame` arriving on `rx` with the full buffer and `spare`
/// (< 7) spare frames.
pub fn encode_spare(rx: PortId, spare: u8, frame: &[u8]) -> Vec<u8> {
    assert!(spare < 7, "at most 6 spare frames can be encoded");
    let mut v = encode(rx, frame);
    v[0] |= (spare + 1) << 4;
    v
}

/// A [`Spare`] handing out up to a number of fresh buffers of one capacity,
/// pre-filled with [`FILL`], and keeping what is sent in them.
#[derive(Debug)]
pub struct CollectSpare {
    cap: usize,
    left: usize,
    /// Frames sent, in order: port and bytes.
    pub sent: Vec<(PortId, Vec<u8>)>,
    /// Frames taken and recycled unsent (`fill` returned 0).
    pub recycled: usize,
    /// `send` calls refused for want of a frame (the pipeline should have
    /// asked `available` first).
    pub refused: usize,
}

impl CollectSpare {
    /// `frames` buffers ([`UNLIMITED`]: any number) of `cap` bytes.
    pub fn new(cap: usize, frames: usize) -> CollectSpare {
        CollectSpare {
            cap,
            left: frames,
            sent: vec![],
            recycled: 0,
            refused: 0,
        }
    }
}

impl Spare for CollectSpare {
    fn available(&self, _port: PortId) -> usize {
        self.left
    }

    fn send(&mut self, port: PortId, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if self.left == 0 {
            self.refused += 1;
            return false;
        }
        if self.left != UNLIMITED {
            self.left -= 1;
        }
        let mut buf = vec![FILL; self.cap];
        let len = fill(&mut buf);
        assert!(
            len <= self.cap,
            "spare frame of {len} bytes in a {}-byte buffer",
            self.cap
        );
        if len == 0 {
            self.recycled += 1;
        } else {
            buf.truncate(len);
            self.sent.push((port, buf));
        }
        true
    }
}

/// What [`process_checked`] saw the pipeline do.
#[derive(Debug, Clone)]
pub struct Processed {
    pub verdict: Verdict,
    /// The verdict's frame (empty on drop).
    pub frame: Vec<u8>,
    /// Frames sent through the spare, in order, with their port.
    pub spare: Vec<(PortId, Vec<u8>)>,
}

/// Runs one frame through `p` in a `cap`-byte buffer pre-filled with
/// [`FILL`], with `spare` spare frames of the same capacity ([`UNLIMITED`]:
/// any number), and checks every invariant.
pub fn process_checked(
    p: &mut Pipeline,
    rx: PortId,
    frame: &[u8],
    cap: usize,
    spare: usize,
) -> Processed {
    assert!(frame.len() <= cap && cap <= BUF_LEN, "harness misuse");
    let fx = fixture();
    let mut storage = [FILL; BUF_LEN];
    let buf = &mut storage[..cap];
    buf[..frame.len()].copy_from_slice(frame);
    let mut sp = CollectSpare::new(cap, spare);
    // Per-thread counters: the drop-accounting check reads their deltas,
    // and `cargo test` runs tests in parallel threads.
    thread_local!(static COUNTERS: Counters = Counters::default());
    let (v, counted, frag) = COUNTERS.with(|c| {
        let before = (drop_counts(c), frag_events(c));
        let v = p.process(&fx.table, c, rx, buf, frame.len(), &mut sp);
        // Drops the pipeline counted: every one it decided (the worker
        // counts no verdict), by reason.
        let (f, n) = frag_events(c);
        (
            v,
            drops_since(c, &before.0),
            (f - before.1.0, n - before.1.1),
        )
    });
    let flow = p.last_flow();
    assert_eq!(
        sp.refused, 0,
        "the pipeline asked for a spare frame while none was available"
    );
    match v {
        Verdict::Drop(reason) => {
            assert_ne!(
                reason,
                DropReason::TxRingFull,
                "the pipeline returned the I/O layer's drop reason"
            );
            assert_eq!(flow, FlowTag::default(), "a dropped packet left a flow tag");
            // The pipeline counts the drop it returns, once, and nothing
            // else. Finding `icmp-drop-double-count`: an ICMP error that
            // cannot be sent leaves the original counted as well as the
            // verdict's drop (one packet, two drops); tolerated, the
            // verdict's drop must still be counted, and at most one more.
            if crate::tolerated("icmp-drop-double-count") {
                let total: u64 = counted.iter().map(|&(_, n)| n).sum();
                assert!(
                    counted.iter().any(|&(r, _)| r == reason) && total <= 2,
                    "dropped as {reason:?} but counted {counted:?}"
                );
            } else {
                assert_eq!(
                    counted,
                    [(reason, 1)],
                    "dropped as {reason:?}: the pipeline must count exactly that drop, once"
                );
            }
            assert!(
                sp.sent.is_empty(),
                "dropped as {reason:?} but sent {} spare frame(s) (fragments of a packet that \
                 is not delivered whole)",
                sp.sent.len()
            );
            // Finding `frag-events-on-drop`: a fragment that does not fit
            // the spare frame's buffer is dropped after the events counted.
            if !crate::tolerated("frag-events-on-drop") {
                assert_eq!(
                    frag,
                    (0, 0),
                    "dropped as {reason:?} but counted (fragmented, fragments_out) = {frag:?}"
                );
            }
            if spare == UNLIMITED {
                assert_ne!(
                    reason,
                    DropReason::FragNoFrame,
                    "dropped as FragNoFrame with unlimited spare frames"
                );
            } else {
                check_spare_drop(rx, frame, cap, spare, reason);
            }
            Processed {
                verdict: v,
                frame: vec![],
                spare: sp.sent,
            }
        }
        Verdict::Tx { port, len } => {
            assert!(len <= cap, "Tx len {len} is past the {cap}-byte buffer");
            assert_eq!(
                sp.recycled, 0,
                "spare frame(s) taken and recycled unsent, yet forwarded"
            );
            let out = &buf[..len];
            let icmp = check_tx(&fx.table, rx, frame, port, out, flow, &sp.sent, frag);
            // An ICMP error stands for the dropped original: counted once,
            // under the reason it answers. A forward counts no drop.
            let want: &[(DropReason, u64)] = match icmp {
                None => &[],
                Some(IcmpKind::TimeExceeded) => &[(DropReason::TtlExpired, 1)],
                Some(IcmpKind::FragNeeded { .. }) => &[(DropReason::TooBig, 1)],
            };
            assert_eq!(
                counted,
                want,
                "drops counted for a transmitted frame ({})",
                match icmp {
                    Some(k) => format!("ICMP error {k:?}"),
                    None => "forwarded".to_string(),
                }
            );
            Processed {
                verdict: v,
                frame: out.to_vec(),
                spare: sp.sent,
            }
        }
    }
}

/// A drop with `spare` (limited) spare frames: the same input on a fresh
/// pipeline with unlimited frames must give the same drop, or be cut into
/// more fragments than `spare` frames allow (then the drop is
/// `FragNoFrame`).
fn check_spare_drop(rx: PortId, frame: &[u8], cap: usize, spare: usize, reason: DropReason) {
    let mut q = Pipeline::new(0);
    let full = process_checked(&mut q, rx, frame, cap, UNLIMITED);
    match full.verdict {
        Verdict::Tx { .. } if !full.spare.is_empty() => {
            let n = full.spare.len() + 1;
            assert_eq!(
                reason,
                DropReason::FragNoFrame,
                "with {spare} spare frame(s), dropped as {reason:?} a packet cut into {n} \
                 fragments with unlimited frames"
            );
            assert!(
                spare < n - 1,
                "dropped as FragNoFrame with {spare} spare frame(s) for {n} fragments (needs {})",
                n - 1
            );
        }
        Verdict::Tx { .. } => panic!(
            "with {spare} spare frame(s), dropped as {reason:?} a packet forwarded whole with \
             unlimited frames"
        ),
        Verdict::Drop(r) => assert_eq!(
            reason, r,
            "with {spare} spare frame(s), dropped as {reason:?}; with unlimited frames as {r:?}"
        ),
    }
}

/// The `fragmented` and `fragments_out` event counts.
fn frag_events(c: &Counters) -> (u64, u64) {
    (c.events(Event::Fragmented), c.events(Event::FragmentsOut))
}

/// Every drop count, by reason.
fn drop_counts(c: &Counters) -> Vec<u64> {
    DropReason::all().map(|r| c.drops(r)).collect()
}

/// The drops counted since `before` ([`drop_counts`]): each reason counted,
/// with how many times, in declaration order.
fn drops_since(c: &Counters, before: &[u64]) -> Vec<(DropReason, u64)> {
    DropReason::all()
        .zip(before)
        .map(|(r, &b)| (r, c.drops(r) - b))
        .filter(|&(_, n)| n > 0)
        .collect()
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
    assert!(
        f.len() >= ETH_LEN,
        "forwarded a frame shorter than Ethernet"
    );
    assert_eq!(be16(f, 12), ETHERTYPE_IPV4, "forwarded a non-IPv4 frame");
    let (off, limit, from_peer, from_pod, outer_ecn) = if rx == UNDERLAY_PORT {
        let o = ETH_LEN;
        assert!(
            f.len() >= o + IP_LEN,
            "forwarded a truncated outer IPv4 header"
        );
        assert_eq!(
            f[o], 0x45,
            "forwarded an outer header that is not IPv4 IHL 5"
        );
        let tot = usize::from(be16(f, o + 2));
        assert!(
            tot >= IP_LEN && o + tot <= f.len(),
            "forwarded an outer packet with total length {tot} in a {}-byte frame",
            f.len()
        );
        assert!(
            checksum_ok(&f[o..o + IP_LEN]),
            "forwarded a bad outer checksum"
        );
        assert_eq!(be16(f, o + 6) & 0x3fff, 0, "forwarded an outer fragment");
        assert_eq!(
            ip_at(f, o + 16),
            GW_UNDERLAY_IP,
            "forwarded an outer packet not for us"
        );
        let src = ip_at(f, o + 12);
        let pi = peer_index(t, src)
            .unwrap_or_else(|| panic!("forwarded tunnel traffic from unknown {src}"));
        let peer = &t.peers[pi];
        let outer_end = o + tot;
        let outer_ecn = Some(f[o + 1] & 3);
        match f[o + 9] {
            PROTO_UDP => {
                assert_eq!(
                    peer.encap,
                    Encap::Vxlan,
                    "VXLAN accepted from a non-VXLAN node"
                );
                let u = o + IP_LEN;
                assert!(outer_end >= u + UDP_LEN, "forwarded a truncated UDP header");
                let ulen = usize::from(be16(f, u + 4));
                assert!(
                    ulen >= UDP_LEN && u + ulen <= outer_end,
                    "forwarded a UDP length {ulen} inconsistent with IPv4 total length {tot}"
                );
                assert_eq!(
                    be16(f, u + 2),
                    peer.port,
                    "VXLAN accepted on another UDP port"
                );
                if be16(f, u + 6) != 0 {
                    assert!(
                        udp_checksum_ok(src, GW_UNDERLAY_IP, &f[u..u + ulen]),
                        "forwarded a bad outer UDP checksum"
                    );
                }
                let udp_end = u + ulen;
                let vx = u + UDP_LEN;
                assert!(
                    udp_end >= vx + VXLAN_LEN,
                    "forwarded a truncated VXLAN header"
                );
                assert!(f[vx] & 0x08 != 0, "forwarded VXLAN without the I flag");
                let vni = u32::from_be_bytes([0, f[vx + 4], f[vx + 5], f[vx + 6]]);
                assert_eq!(vni, peer.vni, "forwarded another VNI");
                let ie = vx + VXLAN_LEN;
                assert!(
                    udp_end >= ie + ETH_LEN,
                    "forwarded a truncated inner Ethernet header"
                );
                assert_eq!(
                    mac_at(f, ie),
                    GW_VTEP_MAC,
                    "forwarded an inner frame not for our VTEP"
                );
                assert_eq!(
                    be16(f, ie + 12),
                    ETHERTYPE_IPV4,
                    "forwarded a non-IPv4 inner frame"
                );
                // The inner frame is the UDP payload: bytes after the UDP
                // datagram (but inside the outer IPv4 packet) are not part
                // of it.
                // Finding `vxlan-udp-len`: the gateway bounds the inner
                // packet by the outer IPv4 length instead.
                let end = if crate::tolerated("vxlan-udp-len") {
                    outer_end
                } else {
                    udp_end
                };
                (ie + ETH_LEN, end, Some(pi), None, outer_ecn)
            }
            PROTO_IPIP => {
                assert_eq!(
                    peer.encap,
                    Encap::Ipip,
                    "IP-in-IP accepted from a non-IPIP node"
                );
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
    assert!(
        ihl >= IP_LEN && ihl <= tot,
        "forwarded inner IHL {ihl} with total length {tot}"
    );
    assert!(
        tot <= a.len(),
        "forwarded an inner IPv4 packet of {tot} bytes at offset {off} that runs past the \
         end of the tunnel payload / frame ({} bytes available)",
        a.len()
    );
    assert!(checksum_ok(&a[..ihl]), "forwarded a bad inner checksum");
    if let Some(pi) = from_peer {
        // Strict reverse path (the pipeline's default): the inner source
        // routes back, by longest match, to the node it came from.
        let src = ip_at(a, 12);
        assert_eq!(
            naive_lookup(t, src),
            Some(NextHop::Peer(pi as u32)),
            "forwarded (or answered) a packet from {} whose inner source {src} does not route \
             back to it",
            t.peers[pi].name
        );
    }
    if let Some(pod) = from_pod {
        assert_eq!(
            ip_at(a, 12),
            pod.ip,
            "forwarded a spoofed source from pod {}",
            pod.name
        );
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
    assert_eq!(
        b[8],
        a[8] - hops,
        "inner TTL {} → {}, expected −{hops}",
        a[8],
        b[8]
    );
    assert!(
        checksum_ok(&b[..ihl]),
        "output inner header checksum does not verify"
    );
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

/// Checks a transmitted frame (and the spare frames sent before it);
/// returns the kind of ICMP error it is, if the gateway originated one
/// (instead of forwarding the input).
#[allow(clippy::too_many_arguments)]
fn check_tx(
    t: &RouteTable,
    rx: PortId,
    frame: &[u8],
    port: PortId,
    out: &[u8],
    flow: FlowTag,
    spare: &[(PortId, Vec<u8>)],
    frag: (u64, u64),
) -> Option<IcmpKind> {
    let inn = accepted_input(t, rx, frame);
    // The inner packet as the forwarding step sees it: after RFC 6040
    // decapsulation (ECN), before the TTL decrement.
    let mut a = frame[inn.off..inn.off + inn.len].to_vec();
    if let Some(outer) = inn.outer_ecn {
        a[1] = (a[1] & !3) | decap_ecn(outer, a[1] & 3);
    }
    let dst = ip_at(&a, 16);
    let nh = naive_lookup(t, dst).unwrap_or_else(|| panic!("forwarded {dst}, which has no route"));
    let mtu = next_hop_mtu(t, nh);
    let too_big = a.len() > usize::from(mtu);
    let df = be16(&a, 6) & 0x4000 != 0;
    let icmp = if a[8] <= 1 {
        Some(IcmpKind::TimeExceeded)
    } else if too_big && df {
        Some(IcmpKind::FragNeeded { mtu })
    } else {
        None
    };
    let to = Delivery {
        from_peer: inn.from_peer,
        from_pod: inn.from_pod,
        hops: 1,
    };
    if icmp.is_none() && too_big {
        // No DF, too big for the next hop: cut into fragments.
        let n = check_fragments(t, rx, &a, mtu, port, out, spare, &to, flow);
        assert_eq!(
            frag,
            (1, n as u64),
            "(fragmented, fragments_out) events for a packet cut into {n}"
        );
        return None;
    }
    assert!(
        spare.is_empty(),
        "{} spare frame(s) sent for a packet that is not fragmented ({})",
        spare.len(),
        match icmp {
            Some(k) => format!("answered with {k:?}"),
            None => format!("{} bytes, next-hop MTU {mtu}", a.len()),
        }
    );
    assert_eq!(
        frag,
        (0, 0),
        "(fragmented, fragments_out) events for a packet not fragmented"
    );
    let Some(kind) = icmp else {
        check_delivery(t, rx, port, out, &a, &to, flow);
        return None;
    };

    // An ICMP error about `a`, routed back to its source.
    let ihl = usize::from(a[0] & 0x0f) * 4;
    assert_eq!(
        be16(&a, 6) & 0x1fff,
        0,
        "ICMP error about a non-initial fragment"
    );
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
    assert!(
        out.len() >= e_off + IP_LEN + 8,
        "ICMP error frame too short"
    );
    let e = &out[e_off..];
    let quote = a.len().min(ICMP_QUOTE_MAX);
    assert_eq!(
        (e[0], e[9]),
        (0x45, 1),
        "expected an ICMP error ({kind:?}) about the {}-byte packet with TTL {} (next-hop MTU \
         {mtu}): version/IHL, protocol",
        a.len(),
        a[8]
    );
    assert_eq!(e[1], 0xc0, "ICMP error TOS (internetwork control)");
    assert_eq!(
        usize::from(be16(e, 2)),
        IP_LEN + 8 + quote,
        "ICMP error total length"
    );
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
        panic!(
            "ICMP quote byte {i}: {:#04x}, offending packet has {:#04x}",
            q[i], a[i]
        );
    }
    if quote >= ihl && a[1] == frame[inn.off + 1] {
        assert_eq!(
            q[10..12],
            a[10..12],
            "ICMP quote changed the header checksum"
        );
    } else if quote >= ihl {
        assert!(
            checksum_ok(&q[..ihl]),
            "quoted header checksum does not verify"
        );
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
    Some(kind)
}

/// The largest IPv4 packet next hop `nh` takes: a node's tunnel MTU, a
/// pod's veth MTU.
fn next_hop_mtu(t: &RouteTable, nh: NextHop) -> u16 {
    match nh {
        NextHop::Peer(pi) => t.peers[pi as usize].mtu,
        NextHop::Pod(i) => t.pods[i as usize].mtu,
    }
}

/// The options of a fragment after the first, from the datagram's (RFC
/// 791 §3.1, as `overpass_dataplane::wire::ipv4::Packet::strip_uncopied_options`
/// documents it): an option without the copied flag (type bit 7) becomes
/// NOPs, its length kept; NOP stays; end-of-list, and a malformed option
/// (length < 2 or past the options), end the list: from there on every
/// byte is end-of-list (0).
pub fn later_fragment_options(options: &[u8]) -> Vec<u8> {
    let mut v = options.to_vec();
    let mut i = 0;
    while i < v.len() {
        let kind = v[i];
        if kind == 1 {
            i += 1;
            continue;
        }
        let len = if kind == 0 {
            0
        } else {
            v.get(i + 1).map_or(0, |&l| usize::from(l))
        };
        if len < 2 || i + len > v.len() {
            v[i..].fill(0);
            break;
        }
        if kind & 0x80 == 0 {
            v[i..i + len].fill(1);
        }
        i += len;
    }
    v
}

/// Checks that IPv4 packet `a` (no DF, TTL > 1, bigger than `mtu`, its next
/// hop's) went out as fragments: the spare frames in order, then `out`
/// (the verdict's frame, on `port`). Returns the number of fragments.
#[allow(clippy::too_many_arguments)]
fn check_fragments(
    t: &RouteTable,
    rx: PortId,
    a: &[u8],
    mtu: u16,
    port: PortId,
    out: &[u8],
    spare: &[(PortId, Vec<u8>)],
    to: &Delivery,
    flow: FlowTag,
) -> usize {
    let mtu = usize::from(mtu);
    let ihl = usize::from(a[0] & 0x0f) * 4;
    let data = &a[ihl..];
    let ff = be16(a, 6);
    let base = usize::from(ff & 0x1fff) * 8;
    let last_mf = ff & 0x2000 != 0;
    let frames: Vec<(PortId, &[u8])> = spare
        .iter()
        .map(|(p, f)| (*p, &f[..]))
        .chain(std::iter::once((port, out)))
        .collect();
    let n = frames.len();
    assert!(
        n >= 2,
        "a {}-byte packet without DF was sent whole over a {mtu}-byte MTU (no spare frame used)",
        a.len()
    );
    assert!(
        base + data.len() <= usize::from(u16::MAX),
        "cut a fragment reaching past 65535 bytes (offset {base} + {} data bytes): it must be \
         dropped",
        data.len()
    );
    let chunk = (mtu - ihl) & !7;
    assert_eq!(
        n,
        data.len().div_ceil(chunk),
        "{} data bytes cut into {n} fragments, expected pieces of {chunk} bytes (MTU {mtu}, IHL \
         {ihl})",
        data.len()
    );
    let inner_off = match port {
        UNDERLAY_PORT => {
            let Some(NextHop::Peer(pi)) = naive_lookup(t, ip_at(a, 16)) else {
                panic!("fragments of a packet to a pod went to the underlay");
            };
            match t.peers[pi as usize].encap {
                Encap::Vxlan => ETH_LEN + IP_LEN + UDP_LEN + VXLAN_LEN + ETH_LEN,
                Encap::Ipip => ETH_LEN + IP_LEN,
            }
        }
        _ => ETH_LEN,
    };
    let later_options = later_fragment_options(&a[IP_LEN..ihl]);
    let mut done = 0;
    let mut outer_idents = vec![];
    let mut sports = vec![];
    for (i, &(fport, f)) in frames.iter().enumerate() {
        let what = format!(
            "fragment {i} of {n} ({} data bytes from offset {base})",
            data.len()
        );
        assert_eq!(
            fport, port,
            "{what}: sent on port {fport}, the verdict's port is {port}"
        );
        assert!(
            f.len() >= inner_off + ihl,
            "{what}: frame of {} bytes",
            f.len()
        );
        let b = &f[inner_off..];
        assert_eq!(b[0], a[0], "{what}: version/IHL");
        let tot = usize::from(be16(b, 2));
        assert_eq!(
            tot,
            b.len(),
            "{what}: total length {tot}, frame carries {}",
            b.len()
        );
        assert!(tot <= mtu, "{what}: {tot} bytes over the {mtu}-byte MTU");
        assert!(tot > ihl, "{what}: no data");
        let dlen = tot - ihl;
        let last = i == n - 1;
        if !last {
            assert_eq!(
                dlen % 8,
                0,
                "{what}: {dlen} data bytes, not a multiple of 8"
            );
            // As much as fits, so no more fragments than needed.
            assert_eq!(
                dlen, chunk,
                "{what}: {dlen} data bytes, {chunk} fit the MTU"
            );
        }
        let bf = be16(b, 6);
        assert_eq!(bf & 0xc000, 0, "{what}: DF/reserved bit set ({bf:#06x})");
        let mf = bf & 0x2000 != 0;
        assert_eq!(
            mf,
            !last || last_mf,
            "{what}: MF {mf} (datagram's MF {last_mf})"
        );
        let offset = usize::from(bf & 0x1fff) * 8;
        assert_eq!(
            offset,
            base + done,
            "{what}: offset {offset}, expected {}",
            base + done
        );
        assert_eq!(b[1], a[1], "{what}: TOS");
        assert_eq!(b[4..6], a[4..6], "{what}: identification");
        assert_eq!(b[8], a[8] - 1, "{what}: TTL {}, datagram's {}", b[8], a[8]);
        assert_eq!(b[9], a[9], "{what}: protocol");
        assert_eq!(b[12..20], a[12..20], "{what}: addresses");
        assert!(
            checksum_ok(&b[..ihl]),
            "{what}: header checksum does not verify"
        );
        let want_options = if i == 0 {
            &a[IP_LEN..ihl]
        } else {
            &later_options[..]
        };
        assert_eq!(
            &b[IP_LEN..ihl],
            want_options,
            "{what}: options (datagram's: {:02x?})",
            &a[IP_LEN..ihl]
        );
        assert!(
            done + dlen <= data.len(),
            "{what}: the fragments carry more than the datagram's {} data bytes",
            data.len()
        );
        if let Some(k) = (0..dlen).find(|&k| b[ihl + k] != data[done + k]) {
            panic!(
                "{what}: data byte {k} is {:#04x}, the datagram's byte {} is {:#04x} (fill \
                 pattern {FILL:#04x})",
                b[ihl + k],
                done + k,
                data[done + k]
            );
        }
        // The whole frame, as for any packet: the expected fragment (the
        // header rebuilt from the datagram's) delivered to the next hop.
        let mut want = a[..ihl].to_vec();
        want[IP_LEN..].copy_from_slice(want_options);
        put16(&mut want, 2, tot as u16);
        put16(&mut want, 6, (u16::from(mf) << 13) | (offset / 8) as u16);
        fix_ip_checksum(&mut want, 0);
        want.extend_from_slice(&data[done..done + dlen]);
        check_delivery(t, rx, fport, f, &want, to, flow);
        if port == UNDERLAY_PORT {
            outer_idents.push(be16(f, ETH_LEN + 4));
            if f[ETH_LEN + 9] == PROTO_UDP {
                sports.push(be16(f, ETH_LEN + IP_LEN));
            }
        }
        done += dlen;
    }
    assert_eq!(
        done,
        data.len(),
        "the fragments carry {done} of the datagram's data bytes"
    );
    let mut ids = outer_idents.clone();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        outer_idents.len(),
        "outer identifications of the fragments repeat: {outer_idents:?}"
    );
    assert!(
        sports.windows(2).all(|w| w[0] == w[1]),
        "fragments of one datagram on different UDP source ports (ECMP paths): {sports:?}"
    );
    n
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
        assert_ne!(
            d.from_peer,
            Some(pi),
            "hairpin: sent back to the node it came from"
        );
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
        assert_eq!(
            usize::from(be16(out, o + 2)),
            out.len() - ETH_LEN,
            "outer total length"
        );
        let ff = be16(out, o + 6);
        assert_eq!(ff & 0xbfff, 0, "outer flags/offset {ff:#06x}");
        assert_eq!(
            ff & 0x4000,
            be16(a, 6) & 0x4000,
            "outer DF is not the inner DF"
        );
        assert_eq!(out[o + 8], OUTER_TTL, "outer TTL");
        assert!(
            checksum_ok(&out[o..o + IP_LEN]),
            "outer IPv4 checksum does not verify"
        );
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
        assert_eq!(
            nh,
            NextHop::Pod(idx as u32),
            "{dst} routes to {nh:?}, sent to pod {idx}"
        );
        let pod = &t.pods[idx];
        let def = PODS.iter().find(|p| p.port == port).expect("fixture pod");
        assert_eq!((pod.ip, pod.mtu), (def.ip, def.mtu));
        assert!(
            a.len() <= usize::from(pod.mtu),
            "packet of {} bytes exceeds pod {}'s MTU {}",
            a.len(),
            pod.name,
            pod.mtu
        );
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
