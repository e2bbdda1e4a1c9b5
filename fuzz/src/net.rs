//! Frame building and field reading for the oracles and the seed corpus.
//!
//! Written independently of `overpass_dataplane::wire` on purpose: the
//! oracle must not share code (and so bugs) with the implementation it
//! checks. Plain byte offsets and an RFC 1071 checksum over 16-bit words.

use std::net::Ipv4Addr;

use overpass_dataplane::wire::ethernet::MacAddr;

pub const ETH_LEN: usize = 14;
pub const IP_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const VXLAN_LEN: usize = 8;
pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_UDP: u8 = 17;

/// RFC 1071 ones'-complement sum of 16-bit big-endian words (odd byte
/// padded with zero), folded, not complemented.
pub fn ones_sum(data: &[u8], init: u32) -> u16 {
    let mut sum = init;
    for w in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        // Fold as we go so the sum never overflows for any input length.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The checksum field value for `data` (checksum field zeroed by caller).
pub fn checksum(data: &[u8]) -> u16 {
    !ones_sum(data, 0)
}

/// An IPv4 header (with checksum field) verifies.
pub fn checksum_ok(header: &[u8]) -> bool {
    ones_sum(header, 0) == 0xffff
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

pub fn mac_at(b: &[u8], at: usize) -> MacAddr {
    let mut m = [0; 6];
    m.copy_from_slice(&b[at..at + 6]);
    MacAddr(m)
}

/// Recomputes the IPv4 header checksum of the header at `b[at..]`.
pub fn fix_ip_checksum(b: &mut [u8], at: usize) {
    let ihl = usize::from(b[at] & 0x0f) * 4;
    put16(b, at + 10, 0);
    let c = checksum(&b[at..at + ihl]);
    put16(b, at + 10, c);
}

/// The UDP checksum over the IPv4 pseudo-header and `udp` (its checksum
/// field zeroed by the caller); 0 is sent as 0xffff.
pub fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u16 {
    let c = !ones_sum(udp, pseudo_header(src, dst, udp.len()));
    if c == 0 { 0xffff } else { c }
}

/// A UDP datagram (checksum field included) verifies for `src` → `dst`.
pub fn udp_checksum_ok(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> bool {
    ones_sum(udp, pseudo_header(src, dst, udp.len())) == 0xffff
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u32 {
    let (s, d) = (src.octets(), dst.octets());
    u32::from(be16(&s, 0))
        + u32::from(be16(&s, 2))
        + u32::from(be16(&d, 0))
        + u32::from(be16(&d, 2))
        + u32::from(PROTO_UDP)
        + len as u32
}

/// An IPv4 header to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ip4 {
    pub tos: u8,
    pub ident: u16,
    /// Flags (reserved, DF, MF) and fragment offset, as on the wire.
    pub flags_frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Options, a multiple of 4 bytes, at most 40.
    pub options: Vec<u8>,
}

impl Ip4 {
    /// A plain unfragmented header with DF set.
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Ip4 {
        Ip4 {
            tos: 0,
            ident: 0x1234,
            flags_frag: 0x4000,
            ttl: 64,
            proto,
            src,
            dst,
            options: vec![],
        }
    }

    /// The whole packet: header (checksum filled) and `payload`.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        assert!(self.options.len().is_multiple_of(4) && self.options.len() <= 40);
        let hl = IP_LEN + self.options.len();
        let mut b = vec![0u8; hl + payload.len()];
        b[0] = 0x40 | (hl / 4) as u8;
        b[1] = self.tos;
        put16(&mut b, 2, (hl + payload.len()) as u16);
        put16(&mut b, 4, self.ident);
        put16(&mut b, 6, self.flags_frag);
        b[8] = self.ttl;
        b[9] = self.proto;
        b[12..16].copy_from_slice(&self.src.octets());
        b[16..20].copy_from_slice(&self.dst.octets());
        b[IP_LEN..hl].copy_from_slice(&self.options);
        b[hl..].copy_from_slice(payload);
        fix_ip_checksum(&mut b, 0);
        b
    }
}

/// An Ethernet header followed by `payload`.
pub fn eth(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(ETH_LEN + payload.len());
    b.extend_from_slice(&dst.0);
    b.extend_from_slice(&src.0);
    b.extend_from_slice(&ethertype.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// Outer underlay addressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
}

/// A VXLAN frame carrying `inner_frame` (an Ethernet frame). The UDP
/// checksum is computed when `udp_csum` is set, else 0 ("none").
pub fn vxlan_frame(
    o: &Outer,
    src_port: u16,
    dst_port: u16,
    vni: u32,
    inner_frame: &[u8],
    udp_csum: bool,
) -> Vec<u8> {
    let mut udp = vec![0u8; UDP_LEN + VXLAN_LEN];
    put16(&mut udp, 0, src_port);
    put16(&mut udp, 2, dst_port);
    put16(
        &mut udp,
        4,
        (UDP_LEN + VXLAN_LEN + inner_frame.len()) as u16,
    );
    udp[8] = 0x08;
    udp[12..15].copy_from_slice(&vni.to_be_bytes()[1..]);
    udp.extend_from_slice(inner_frame);
    if udp_csum {
        let c = udp_checksum(o.src_ip, o.dst_ip, &udp);
        put16(&mut udp, 6, c);
    }
    let mut ip = Ip4::new(o.src_ip, o.dst_ip, PROTO_UDP);
    ip.flags_frag = 0;
    eth(o.dst_mac, o.src_mac, ETHERTYPE_IPV4, &ip.packet(&udp))
}

/// An IP-in-IP frame carrying `inner_packet` (an IPv4 packet).
pub fn ipip_frame(o: &Outer, inner_packet: &[u8]) -> Vec<u8> {
    let mut ip = Ip4::new(o.src_ip, o.dst_ip, PROTO_IPIP);
    ip.flags_frag = 0;
    eth(
        o.dst_mac,
        o.src_mac,
        ETHERTYPE_IPV4,
        &ip.packet(inner_packet),
    )
}

/// A small inner UDP datagram (ports 40000 → 9) with `payload`.
pub fn inner_udp(payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; UDP_LEN];
    put16(&mut b, 0, 40000);
    put16(&mut b, 2, 9);
    put16(&mut b, 4, (UDP_LEN + payload.len()) as u16);
    b.extend_from_slice(payload);
    b
}

/// Reads bytes off a fuzz input, yielding zeros once it is used up (so
/// every input decodes to something).
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer if the input runs out), zero-padded to `n`.
    pub fn bytes_padded(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.rest(n).to_vec();
        v.resize(n, 0);
        v
    }

    /// Up to `max` of the remaining bytes.
    pub fn rest(&mut self, max: usize) -> &'a [u8] {
        let n = max.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
}
