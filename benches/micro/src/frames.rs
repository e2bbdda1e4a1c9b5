//! Test frames: VXLAN, IP-in-IP and plain pod-side Ethernet/IPv4/UDP frames
//! carrying a probe payload (magic, sequence number, CLOCK_MONOTONIC
//! timestamp), and the parser the sinks use to find that payload again at
//! any encapsulation depth.
//!
//! Sizes are given as the *inner frame* length: the Ethernet frame the pod
//! sends or receives (Ethernet header + IPv4 packet, no FCS). A 64-byte
//! inner frame is 114 bytes on the wire in VXLAN, 84 in IP-in-IP.

use std::net::Ipv4Addr;

use overpass_dataplane::wire::ethernet::MacAddr;

/// Marks a probe payload ("OVPB").
pub const MAGIC: u32 = 0x4f56_5042;
/// Probe payload: magic (4) + sequence (8) + timestamp (8).
pub const PROBE_LEN: usize = 20;
/// Smallest inner frame that holds a probe: 14 + 20 + 8 + 20.
pub const MIN_INNER_FRAME: usize = 62;
/// Inner UDP ports of every probe.
pub const PROBE_SRC_PORT: u16 = 40000;
pub const PROBE_DST_PORT: u16 = 9;

const ETH: usize = 14;
const IP: usize = 20;
const UDP: usize = 8;
const VXLAN: usize = 8;

/// How the probe is wrapped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Encap {
    /// The pod-side frame itself.
    None,
    /// Outer Ethernet/IPv4/UDP/VXLAN around the inner Ethernet frame.
    Vxlan { vni: u32, port: u16, src_port: u16 },
    /// Outer Ethernet/IPv4 (protocol 4) around the inner IPv4 packet.
    Ipip,
}

/// Addresses of the outer (underlay) headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
}

/// Everything needed to build one probe frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameSpec {
    pub encap: Encap,
    /// Ignored for [`Encap::None`].
    pub outer: Outer,
    /// Inner Ethernet addresses (the only Ethernet header for [`Encap::None`]).
    pub inner_src_mac: MacAddr,
    pub inner_dst_mac: MacAddr,
    pub inner_src_ip: Ipv4Addr,
    pub inner_dst_ip: Ipv4Addr,
    /// Inner Ethernet frame length, at least [`MIN_INNER_FRAME`].
    pub inner_frame_len: usize,
}

/// A built frame and where its mutable fields are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub bytes: Vec<u8>,
    /// Offset of the inner IPv4 header.
    pub inner_ip: usize,
    /// Offset of the probe payload (magic).
    pub probe: usize,
}

impl FrameSpec {
    /// Bytes on the wire for this spec.
    pub fn wire_len(&self) -> usize {
        match self.encap {
            Encap::None => self.inner_frame_len,
            Encap::Vxlan { .. } => ETH + IP + UDP + VXLAN + self.inner_frame_len,
            Encap::Ipip => ETH + IP + self.inner_frame_len - ETH,
        }
    }

    /// Builds the frame with sequence number and timestamp zero.
    ///
    /// # Panics
    /// If `inner_frame_len` is below [`MIN_INNER_FRAME`] or above 9000.
    pub fn build(&self) -> Template {
        assert!(
            (MIN_INNER_FRAME..=9000).contains(&self.inner_frame_len),
            "inner frame length {} out of range",
            self.inner_frame_len
        );
        let inner_ip_len = self.inner_frame_len - ETH;
        let mut b = vec![0u8; self.wire_len()];
        let inner_ip = match self.encap {
            Encap::None => {
                eth(&mut b[..ETH], self.inner_dst_mac, self.inner_src_mac);
                ETH
            }
            Encap::Vxlan {
                vni,
                port,
                src_port,
            } => {
                let o = &self.outer;
                eth(&mut b[..ETH], o.dst_mac, o.src_mac);
                let outer_ip_len = IP + UDP + VXLAN + self.inner_frame_len;
                ipv4(
                    &mut b[ETH..ETH + IP],
                    o.src_ip,
                    o.dst_ip,
                    17,
                    outer_ip_len,
                    false,
                );
                udp(
                    &mut b[ETH + IP..ETH + IP + UDP],
                    src_port,
                    port,
                    UDP + VXLAN + self.inner_frame_len,
                );
                let vx = ETH + IP + UDP;
                b[vx] = 0x08;
                b[vx + 4..vx + 7].copy_from_slice(&vni.to_be_bytes()[1..]);
                let ie = vx + VXLAN;
                eth(&mut b[ie..ie + ETH], self.inner_dst_mac, self.inner_src_mac);
                ie + ETH
            }
            Encap::Ipip => {
                let o = &self.outer;
                eth(&mut b[..ETH], o.dst_mac, o.src_mac);
                ipv4(
                    &mut b[ETH..ETH + IP],
                    o.src_ip,
                    o.dst_ip,
                    4,
                    IP + inner_ip_len,
                    false,
                );
                ETH + IP
            }
        };
        ipv4(
            &mut b[inner_ip..inner_ip + IP],
            self.inner_src_ip,
            self.inner_dst_ip,
            17,
            inner_ip_len,
            true,
        );
        let u = inner_ip + IP;
        udp(
            &mut b[u..u + UDP],
            PROBE_SRC_PORT,
            PROBE_DST_PORT,
            inner_ip_len - IP,
        );
        let probe = u + UDP;
        b[probe..probe + 4].copy_from_slice(&MAGIC.to_be_bytes());
        // The rest of the payload is a recognisable fill pattern.
        for (i, x) in b[probe + PROBE_LEN..].iter_mut().enumerate() {
            *x = i as u8;
        }
        Template {
            bytes: b,
            inner_ip,
            probe,
        }
    }
}

fn eth(b: &mut [u8], dst: MacAddr, src: MacAddr) {
    b[0..6].copy_from_slice(&dst.0);
    b[6..12].copy_from_slice(&src.0);
    b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
}

fn ipv4(b: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total_len: usize, df: bool) {
    b[0] = 0x45;
    b[1] = 0;
    b[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    b[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    b[6..8].copy_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
    b[8] = 64;
    b[9] = proto;
    b[10..12].copy_from_slice(&[0, 0]);
    b[12..16].copy_from_slice(&src.octets());
    b[16..20].copy_from_slice(&dst.octets());
    let c = ip_checksum(&b[..20]);
    b[10..12].copy_from_slice(&c.to_be_bytes());
}

/// UDP header with checksum 0 ("none", allowed over IPv4).
fn udp(b: &mut [u8], src: u16, dst: u16, len: usize) {
    b[0..2].copy_from_slice(&src.to_be_bytes());
    b[2..4].copy_from_slice(&dst.to_be_bytes());
    b[4..6].copy_from_slice(&(len as u16).to_be_bytes());
    b[6..8].copy_from_slice(&[0, 0]);
}

/// The Internet checksum of an IPv4 header (checksum field included as is).
pub fn ip_checksum(h: &[u8]) -> u16 {
    let mut sum = 0u32;
    for w in h.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes sequence number and timestamp into a frame built from `t`.
#[inline]
pub fn stamp(frame: &mut [u8], probe: usize, seq: u64, ts_ns: u64) {
    frame[probe + 4..probe + 12].copy_from_slice(&seq.to_be_bytes());
    frame[probe + 12..probe + 20].copy_from_slice(&ts_ns.to_be_bytes());
}

/// Rewrites the inner destination address and the inner header checksum.
#[inline]
pub fn set_inner_dst(frame: &mut [u8], inner_ip: usize, dst: u32) {
    let h = &mut frame[inner_ip..inner_ip + IP];
    h[16..20].copy_from_slice(&dst.to_be_bytes());
    h[10..12].copy_from_slice(&[0, 0]);
    let c = ip_checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
}

/// A probe found in a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub seq: u64,
    pub ts_ns: u64,
    /// How the probe arrived.
    pub wire: Wire,
}

/// The encapsulation a sink saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    Plain,
    Vxlan,
    Ipip,
}

/// Finds the probe in `frame`: plain UDP, VXLAN (any UDP port carrying a
/// VXLAN header with the I flag whose inner frame is IPv4/UDP with a probe)
/// or IP-in-IP. `None` for anything else.
pub fn parse(frame: &[u8]) -> Option<Probe> {
    let ip = frame.get(ETH..)?;
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let (proto, l4) = ip_payload(ip)?;
    match proto {
        17 => {
            if let Some(p) = udp_probe(l4) {
                return Some(mk(p, Wire::Plain));
            }
            // VXLAN: UDP header, 8-byte VXLAN header with the I flag, inner Ethernet.
            let vx = l4.get(UDP..UDP + VXLAN)?;
            if vx[0] & 0x08 == 0 {
                return None;
            }
            let inner = l4.get(UDP + VXLAN..)?;
            if inner.get(12..14)? != [0x08, 0x00] {
                return None;
            }
            let (p2, l4b) = ip_payload(inner.get(ETH..)?)?;
            (p2 == 17)
                .then(|| udp_probe(l4b))
                .flatten()
                .map(|p| mk(p, Wire::Vxlan))
        }
        4 => {
            let (p2, l4b) = ip_payload(l4)?;
            (p2 == 17)
                .then(|| udp_probe(l4b))
                .flatten()
                .map(|p| mk(p, Wire::Ipip))
        }
        _ => None,
    }
}

fn mk((seq, ts_ns): (u64, u64), wire: Wire) -> Probe {
    Probe { seq, ts_ns, wire }
}

fn ip_payload(ip: &[u8]) -> Option<(u8, &[u8])> {
    let h = ip.first()?;
    if h >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(h & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    if ihl < IP || total < ihl {
        return None;
    }
    Some((*ip.get(9)?, ip.get(ihl..total.min(ip.len()))?))
}

fn udp_probe(udp: &[u8]) -> Option<(u64, u64)> {
    let p = udp.get(UDP..UDP + PROBE_LEN)?;
    if p[0..4] != MAGIC.to_be_bytes() {
        return None;
    }
    let seq = u64::from_be_bytes(p[4..12].try_into().ok()?);
    let ts = u64::from_be_bytes(p[12..20].try_into().ok()?);
    Some((seq, ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(encap: Encap, len: usize) -> FrameSpec {
        FrameSpec {
            encap,
            outer: Outer {
                src_mac: MacAddr([2, 1, 0, 0, 0, 11]),
                dst_mac: MacAddr([2, 1, 0, 0, 0, 1]),
                src_ip: Ipv4Addr::new(198, 18, 0, 11),
                dst_ip: Ipv4Addr::new(198, 18, 0, 1),
            },
            inner_src_mac: MacAddr([2, 0, 0, 0, 0, 11]),
            inner_dst_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            inner_src_ip: Ipv4Addr::new(10, 244, 1, 2),
            inner_dst_ip: Ipv4Addr::new(10, 244, 0, 2),
            inner_frame_len: len,
        }
    }

    #[test]
    fn build_and_parse_every_encap() {
        let vx = Encap::Vxlan {
            vni: 1,
            port: 8472,
            src_port: 50000,
        };
        for (encap, wire, len, wire_len) in [
            (Encap::None, Wire::Plain, 64, 64),
            (vx, Wire::Vxlan, 64, 114),
            (Encap::Ipip, Wire::Ipip, 64, 84),
            (vx, Wire::Vxlan, 1400, 1450),
            (Encap::Ipip, Wire::Ipip, 1400, 1420),
        ] {
            let s = spec(encap, len);
            let mut t = s.build();
            assert_eq!(t.bytes.len(), wire_len);
            stamp(&mut t.bytes, t.probe, 7, 123_456);
            let p = parse(&t.bytes).unwrap();
            assert_eq!((p.seq, p.ts_ns, p.wire), (7, 123_456, wire));
            // Checksums verify (a header summing to zero).
            assert_eq!(ip_checksum(&t.bytes[t.inner_ip..t.inner_ip + 20]), 0);
            if encap != Encap::None {
                assert_eq!(ip_checksum(&t.bytes[14..34]), 0);
            }
            set_inner_dst(&mut t.bytes, t.inner_ip, 0x0b00_0105);
            assert_eq!(ip_checksum(&t.bytes[t.inner_ip..t.inner_ip + 20]), 0);
            assert_eq!(&t.bytes[t.inner_ip + 16..t.inner_ip + 20], &[11, 0, 1, 5]);
            // The etherparse view agrees on the outer layout.
            assert!(parse(&t.bytes[..30]).is_none());
        }
        assert!(parse(&[0u8; 60]).is_none());
    }
}
