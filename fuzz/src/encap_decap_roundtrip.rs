//! `encap_decap_roundtrip`: a pod's packet goes out to a node and comes back.
//!
//! The input describes an arbitrary valid inner IPv4 packet (see
//! [`Packet::decode`]): source pod and RX queue, a destination inside one of
//! the remote prefixes (nodes with a resolved MAC: VXLAN VNI 1 / 8472,
//! VXLAN VNI 4096 / 4789, and the IP-in-IP node), TTL 2–255, TOS, ident,
//! flags and fragment offset, protocol, 0–40 bytes of options and a payload
//! (with DF: cut to the tunnel MTU; without: cut to what the 2048-byte frame
//! buffer holds, so that a packet over the tunnel MTU is fragmented).
//!
//! 1. The pod sends it: the pipeline must encapsulate it toward the node
//!    the reference LPM picks (all of `pipeline_rx`'s checks apply) — as
//!    fragments if it exceeds the tunnel MTU (no DF then), or drop it as
//!    `Ipv4Malformed` if it is itself a fragment whose pieces would reach
//!    past 65535 bytes.
//! 2. The node answers the way a peer does: outer MACs and IPs swapped (the
//!    node's MAC → our underlay MAC), its own outer ident, UDP source port
//!    from the input and optionally a real UDP checksum; inner Ethernet from
//!    the node's VTEP MAC to our VTEP MAC; inner source = the remote address,
//!    inner destination = a local pod; checksums fixed. Everything else in
//!    the inner packet is left as the gateway sent it (TTL already one less).
//! 3. The gateway receives that on the underlay: it must deliver to that pod
//!    exactly the original packet (TOS, ident, flags/offset, protocol,
//!    options, payload byte for byte) with TTL decremented twice, the
//!    addresses set in step 2 and a valid checksum — or, when the original
//!    TTL was 2, drop it as `TtlExpired` or answer the remote sender with an
//!    ICMP time exceeded (checked like every other output). Fragments come
//!    back one by one (the node answers each as it came, with its own outer
//!    ident): each is delivered whole (they fit the pod's MTU) as the
//!    gateway sent it with one more hop, and their data, in order, are the
//!    original's.

use std::net::Ipv4Addr;

use overpass_dataplane::counters::DropReason;
use overpass_dataplane::fib::{Encap, NextHop, PortId, UNDERLAY_PORT};
use overpass_dataplane::io::Verdict;
use overpass_dataplane::pipeline::Pipeline;

use crate::fixture::{
    BUF_LEN, GW_UNDERLAY_IP, GW_UNDERLAY_MAC, GW_VTEP_MAC, NODES, PODS, fixture, naive_lookup,
};
use crate::net::*;
use crate::pipeline_rx::{UNLIMITED, check_inner, process_checked};

/// Remote prefixes whose node has a resolved next-hop MAC.
fn remote_prefixes() -> Vec<ipnet::Ipv4Net> {
    NODES
        .iter()
        .filter(|n| n.next_hop_mac.is_some())
        .flat_map(|n| n.prefixes.iter().map(|p| p.parse().unwrap()))
        .collect()
}

/// The decoded input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Index into [`PODS`] of the sender, and which of its RX queues.
    pub src_pod: usize,
    pub rx_queue: usize,
    /// Index into the remote prefixes, and the host bits inside it.
    pub prefix: usize,
    pub host: u32,
    pub ip: Ip4,
    pub payload: Vec<u8>,
    /// Return trip: the pod it is delivered to, the peer's UDP source port,
    /// whether the peer sends a UDP checksum.
    pub reply_pod: usize,
    pub reply_sport: u16,
    pub reply_udp_csum: bool,
}

impl Packet {
    /// Decodes fuzz input. Layout (missing bytes read as zero):
    /// `pods(1) prefix(1) host(4) ttl(1) tos(1) ident(2) flags_frag(2)
    /// proto(1) ihl(1) sport(2) options(4 × (ihl − 5)) payload(rest)`.
    /// `pods`: bit 0 sender, bit 1 RX queue, bit 2 reply pod, bit 3 UDP
    /// checksum on the return trip.
    pub fn decode(data: &[u8]) -> Packet {
        let mut r = Reader::new(data);
        let pods = r.u8();
        let prefix = usize::from(r.u8()) % remote_prefixes().len();
        let host = r.u32();
        let ttl = 2 + r.u8() % 254;
        let tos = r.u8();
        let ident = r.u16();
        let flags_frag = r.u16();
        let proto = r.u8();
        let ihl = 5 + usize::from(r.u8() % 11);
        let sport = r.u16();
        let options = r.bytes_padded((ihl - 5) * 4);
        let payload = r.rest(usize::MAX).to_vec();
        Packet {
            src_pod: usize::from(pods & 1),
            rx_queue: usize::from((pods >> 1) & 1),
            prefix,
            host,
            ip: Ip4 {
                tos,
                ident,
                flags_frag,
                ttl,
                proto,
                src: PODS[usize::from(pods & 1)].ip,
                dst: Ipv4Addr::UNSPECIFIED,
                options,
            },
            payload,
            reply_pod: usize::from((pods >> 2) & 1),
            reply_sport: sport,
            reply_udp_csum: pods & 8 != 0,
        }
    }

    /// The inverse of [`Packet::decode`] (for the seed corpus).
    pub fn encode(&self) -> Vec<u8> {
        let pods = self.src_pod as u8
            | (self.rx_queue as u8) << 1
            | (self.reply_pod as u8) << 2
            | u8::from(self.reply_udp_csum) << 3;
        let mut v = vec![pods, self.prefix as u8];
        v.extend_from_slice(&self.host.to_be_bytes());
        v.push(self.ip.ttl - 2);
        v.push(self.ip.tos);
        v.extend_from_slice(&self.ip.ident.to_be_bytes());
        v.extend_from_slice(&self.ip.flags_frag.to_be_bytes());
        v.push(self.ip.proto);
        v.push((self.ip.options.len() / 4) as u8);
        v.extend_from_slice(&self.reply_sport.to_be_bytes());
        v.extend_from_slice(&self.ip.options);
        v.extend_from_slice(&self.payload);
        v
    }
}

/// Entry point of the fuzz target.
pub fn run(data: &[u8]) {
    roundtrip(&Packet::decode(data));
}

/// Runs the round trip; returns the frames delivered to the pod (one, or
/// one per fragment; `None`: TTL expired on the way back, as it must for
/// TTL 2, or a fragment reaching past 64 KiB dropped on the way out).
pub fn roundtrip(pk: &Packet) -> Option<Vec<Vec<u8>>> {
    let fx = fixture();
    let t = &fx.table;
    let prefixes = remote_prefixes();
    let net = prefixes[pk.prefix];
    let host_mask = !u32::MAX
        .checked_shl(32 - u32::from(net.prefix_len()))
        .unwrap_or(0);
    let dst = Ipv4Addr::from(u32::from(net.network()) | (pk.host & host_mask));
    let Some(NextHop::Peer(pi)) = naive_lookup(t, dst) else {
        panic!("fixture: {dst} in {net} does not route to a node");
    };
    let peer = &t.peers[pi as usize];
    let node_mac = peer.next_hop_mac.expect("fixture: resolved node");

    // 1. Pod → node.
    let src_pod = &PODS[pk.src_pod];
    let rx: PortId = src_pod.rx_ports[pk.rx_queue % src_pod.rx_ports.len()];
    let mut ip = pk.ip.clone();
    ip.dst = dst;
    let header = IP_LEN + ip.options.len();
    let df = ip.flags_frag & 0x4000 != 0;
    let room = if df {
        usize::from(peer.mtu) - header
    } else {
        BUF_LEN - ETH_LEN - header
    };
    let payload = &pk.payload[..pk.payload.len().min(room)];
    let original = ip.packet(payload);
    let frame = eth(src_pod.host_mac, src_pod.mac, ETHERTYPE_IPV4, &original);
    let mut p = Pipeline::new(0);
    let sent = process_checked(&mut p, rx, &frame, BUF_LEN, UNLIMITED);
    let base = usize::from(ip.flags_frag & 0x1fff) * 8;
    if original.len() > usize::from(peer.mtu) && base + payload.len() > usize::from(u16::MAX) {
        // A fragment to cut whose pieces would reach past 64 KiB.
        assert_eq!(
            sent.verdict,
            Verdict::Drop(DropReason::Ipv4Malformed),
            "a fragment at offset {base} with {} data bytes was not dropped",
            payload.len()
        );
        return None;
    }
    assert!(
        matches!(
            sent.verdict,
            Verdict::Tx {
                port: UNDERLAY_PORT,
                ..
            }
        ),
        "a valid pod packet to {dst} was not encapsulated: {:?}",
        sent.verdict
    );
    // Every frame the pod's packet became (process_checked verified that
    // they are its fragments if there are several).
    let outs: Vec<Vec<u8>> = sent
        .spare
        .into_iter()
        .map(|(_, f)| f)
        .chain(std::iter::once(sent.frame))
        .collect();
    assert_eq!(
        outs.len() > 1,
        original.len() > usize::from(peer.mtu),
        "{} frame(s) for a {}-byte packet over a {}-byte tunnel MTU",
        outs.len(),
        original.len(),
        peer.mtu
    );

    let reply_pod = &PODS[pk.reply_pod];
    let mut delivered = vec![];
    for (i, out) in outs.iter().enumerate() {
        // 2. The node answers (each fragment as it came).
        let inner_off = match peer.encap {
            Encap::Vxlan => ETH_LEN + IP_LEN + UDP_LEN + VXLAN_LEN + ETH_LEN,
            Encap::Ipip => ETH_LEN + IP_LEN,
        };
        let mut inner = out[inner_off..].to_vec();
        reply_inner(&mut inner, dst, reply_pod.ip);
        let o = Outer {
            src_mac: node_mac,
            dst_mac: GW_UNDERLAY_MAC,
            src_ip: peer.underlay_ip,
            dst_ip: GW_UNDERLAY_IP,
        };
        let mut back = match peer.encap {
            Encap::Vxlan => {
                let inner_frame = eth(GW_VTEP_MAC, peer.vtep_mac, ETHERTYPE_IPV4, &inner);
                vxlan_frame(
                    &o,
                    pk.reply_sport,
                    peer.port,
                    peer.vni,
                    &inner_frame,
                    pk.reply_udp_csum,
                )
            }
            Encap::Ipip => ipip_frame(&o, &inner),
        };
        // The peer's own outer ident, as a real one would use.
        put16(
            &mut back,
            ETH_LEN + 4,
            pk.ip.ident.rotate_left(7).wrapping_add(i as u16),
        );
        fix_ip_checksum(&mut back, ETH_LEN);
        assert_eq!(back.len(), out.len());

        // 3. Node → pod.
        let got = process_checked(&mut p, UNDERLAY_PORT, &back, BUF_LEN, UNLIMITED);
        let v = got.verdict;
        if pk.ip.ttl == 2 {
            // TTL 1 on arrival: dropped, or answered with an ICMP time
            // exceeded toward the remote sender (process_checked verified
            // its content; only the first fragment is answered).
            assert!(
                matches!(
                    v,
                    Verdict::Drop(DropReason::TtlExpired)
                        | Verdict::Tx {
                            port: UNDERLAY_PORT,
                            ..
                        }
                ),
                "a packet sent with TTL 2 came back with TTL 1: {v:?}"
            );
            continue;
        }
        assert_eq!(
            v,
            Verdict::Tx {
                port: reply_pod.port,
                len: ETH_LEN + inner.len()
            },
            "the node's answer (frame {i} of {}) was not delivered to pod {}",
            outs.len(),
            reply_pod.name
        );
        assert!(
            got.spare.is_empty(),
            "a fragment that fits the pod's MTU was cut again"
        );
        let d = got.frame;
        assert_eq!(mac_at(&d, 0), reply_pod.mac);
        assert_eq!(mac_at(&d, 6), reply_pod.host_mac);
        // What the pod gets is what the gateway sent with the addresses the
        // node set, one hop later.
        check_inner(&inner, &d[ETH_LEN..], 1);
        delivered.push(d);
    }
    if pk.ip.ttl == 2 {
        return None;
    }
    // Reassembled, the pod has the original (with the node's addresses),
    // TTL −2.
    let mut want = original.clone();
    reply_inner(&mut want, dst, reply_pod.ip);
    if let [d] = &delivered[..] {
        check_inner(&want, &d[ETH_LEN..], 2);
    } else {
        let mut data = vec![];
        for d in &delivered {
            let f = &d[ETH_LEN..];
            let ihl = usize::from(f[0] & 0x0f) * 4;
            assert_eq!(usize::from(be16(f, 6) & 0x1fff) * 8, base + data.len());
            assert_eq!(f[8], pk.ip.ttl - 2, "fragment TTL");
            data.extend_from_slice(&f[ihl..]);
        }
        assert_eq!(data, payload, "reassembled data differ from the original's");
    }
    Some(delivered)
}

/// Turns the inner packet into the node's answer: source = the remote
/// address, destination = the local pod, checksum fixed.
fn reply_inner(ip: &mut [u8], remote: Ipv4Addr, pod: Ipv4Addr) {
    ip[12..16].copy_from_slice(&remote.octets());
    ip[16..20].copy_from_slice(&pod.octets());
    fix_ip_checksum(ip, 0);
}
