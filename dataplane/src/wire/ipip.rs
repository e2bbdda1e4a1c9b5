//! IP-in-IP (RFC 2003): an inner IPv4 datagram as the payload of an outer
//! IPv4 header with protocol 4. There is no tunnel header of its own, so
//! this module holds the constants and RFC 2003's rules for building the
//! outer header from the inner one ([`outer_repr`]).

use std::net::Ipv4Addr;

use super::{ethernet, ipv4};

/// The outer header's protocol number.
pub const PROTOCOL: u8 = ipv4::PROTO_IPIP;
/// What IP-in-IP takes from the underlay's IP MTU: the outer IPv4 header
/// (20), so tunnel MTU = underlay MTU − 20 (Calico's tunl0, flannel.ipip).
pub const OVERHEAD: usize = ipv4::MIN_HEADER_LEN;
/// Bytes in front of the inner IPv4 header in an encapsulated frame: outer
/// Ethernet (14) + outer IPv4 (20) = 34.
pub const OUTER_HEADERS_LEN: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;

const _: () = assert!(OVERHEAD == 20 && OUTER_HEADERS_LEN == 34);

/// The outer header for encapsulating `inner` from `src` to `dst` (RFC 2003
/// section 3.1):
///
/// - TOS copied from the inner header, ECN bits included (RFC 6040 normal
///   mode: the outer ECN field is a copy of the inner one);
/// - inner DF set ⇒ outer DF set (and clear otherwise: the underlay may
///   fragment what the inner sender allowed to be fragmented);
/// - TTL is the tunnel's (`ttl`), not the inner one;
/// - protocol 4, no options (inner options stay in the inner header and
///   are not copied);
/// - payload length = the inner total length (padding after it is not sent);
/// - identification copied from the inner header, a per-flow value at no
///   cost; callers with their own per-peer counter overwrite `ident`.
///
/// The inner TTL is not touched here: the forwarding path decrements it
/// (and drops TTL ≤ 1) before encapsulating.
#[inline]
pub fn outer_repr<T: AsRef<[u8]>>(
    inner: &ipv4::Packet<T>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
) -> ipv4::Repr {
    ipv4::Repr {
        src_addr: src,
        dst_addr: dst,
        protocol: PROTOCOL,
        ttl,
        tos: inner.tos(),
        dont_frag: inner.dont_frag(),
        ident: inner.ident(),
        payload_len: usize::from(inner.total_len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Error;

    const GW: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

    // Inner: IHL 6 (one option word), TOS 0xb9 (EF + ECT(1)), total 28,
    // ident 0x1234, DF, TTL 63, TCP, checksum 0x0f01,
    // 10.244.0.2 → 10.244.1.3, options 01 01 01 01, 4 payload bytes.
    static INNER_BYTES: [u8; 28] = [
        0x46, 0xb9, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x3f, 0x06, 0x0f, 0x01, 0x0a, 0xf4, 0x00,
        0x02, 0x0a, 0xf4, 0x01, 0x03, 0x01, 0x01, 0x01, 0x01, 0xaa, 0xbb, 0xcc, 0xdd,
    ];
    // Outer: IHL 5, TOS 0xb9, total 48, ident 0x1234, DF, TTL 64, proto 4,
    // checksum 0x9bac, 198.18.0.1 → 198.18.0.11.
    static OUTER_BYTES: [u8; 20] = [
        0x45, 0xb9, 0x00, 0x30, 0x12, 0x34, 0x40, 0x00, 0x40, 0x04, 0x9b, 0xac, 0xc6, 0x12, 0x00,
        0x01, 0xc6, 0x12, 0x00, 0x0b,
    ];

    #[test]
    fn test_outer_repr_rules() {
        let inner = ipv4::Packet::new_checked(&INNER_BYTES[..]).unwrap();
        assert!(inner.verify_checksum());
        let outer = outer_repr(&inner, GW, PEER, 64);
        assert_eq!(
            outer,
            ipv4::Repr {
                src_addr: GW,
                dst_addr: PEER,
                protocol: 4,
                ttl: 64,
                tos: 0xb9,
                dont_frag: true,
                ident: 0x1234,
                payload_len: 28,
            }
        );
        // The outer header never carries the inner options.
        assert_eq!(outer.buffer_len(), 20);
    }

    #[test]
    fn test_inner_without_df_and_ecn_ce() {
        let mut bytes = INNER_BYTES;
        let mut inner = ipv4::Packet::new_checked(&mut bytes[..]).unwrap();
        inner.set_flags_frag(false, false, 0);
        inner.set_ecn_incremental(ipv4::ecn::CE);
        let outer = outer_repr(&inner, GW, PEER, 1);
        assert!(!outer.dont_frag, "inner DF clear ⇒ outer DF clear");
        assert_eq!(
            outer.tos & 0b11,
            ipv4::ecn::CE,
            "ECN copied (RFC 6040 normal mode)"
        );
        assert_eq!(outer.tos >> 2, 46, "DSCP copied");
        assert_eq!(outer.ttl, 1, "the tunnel's TTL, not the inner one");
    }

    #[test]
    fn test_padding_is_not_payload() {
        let mut padded = [0u8; 46];
        padded[..28].copy_from_slice(&INNER_BYTES);
        let inner = ipv4::Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(outer_repr(&inner, GW, PEER, 64).payload_len, 28);
    }

    #[test]
    fn test_construct() {
        let inner = ipv4::Packet::new_checked(&INNER_BYTES[..]).unwrap();
        let outer = outer_repr(&inner, GW, PEER, 64);
        let mut bytes = [0xa5u8; 48];
        let mut p = ipv4::Packet::new_unchecked(&mut bytes[..]);
        outer.emit(&mut p);
        p.payload_mut().copy_from_slice(&INNER_BYTES);
        assert_eq!(bytes[..20], OUTER_BYTES);
        assert_eq!(bytes[20..], INNER_BYTES);

        // Decapsulation: the outer payload is the inner datagram, intact.
        let p = ipv4::Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.protocol(), PROTOCOL);
        assert!(p.verify_checksum());
        let back = ipv4::Packet::new_checked(p.payload()).unwrap();
        assert_eq!(back.header_bytes(), &INNER_BYTES[..24]);
    }

    #[test]
    fn test_truncated_outer() {
        let mut bytes = [0u8; 48];
        bytes[..20].copy_from_slice(&OUTER_BYTES);
        bytes[20..].copy_from_slice(&INNER_BYTES);
        for len in 0..bytes.len() {
            assert_eq!(
                ipv4::Packet::new_checked(&bytes[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn cross_check_etherparse() {
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 244, 0, 2], [10, 244, 1, 3], 63)
            .udp(5000, 53)
            .write(&mut inner, b"ipip")
            .unwrap();
        let inner_view = ipv4::Packet::new_checked(&inner[..]).unwrap();
        let outer = outer_repr(&inner_view, GW, PEER, 64);
        let mut bytes = vec![0xa5u8; outer.buffer_len() + inner.len()];
        let mut p = ipv4::Packet::new_unchecked(&mut bytes[..]);
        outer.emit(&mut p);
        p.payload_mut().copy_from_slice(&inner);

        let sliced = etherparse::SlicedPacket::from_ip(&bytes).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("outer IPv4 expected");
        };
        assert_eq!(ip.header().protocol(), etherparse::IpNumber::IPV4);
        assert_eq!(ip.header().source_addr(), GW);
        assert_eq!(ip.header().destination_addr(), PEER);
        assert_eq!(ip.header().ttl(), 64);
        assert_eq!(ip.header().dont_fragment(), inner_view.dont_frag());
        assert_eq!(ip.payload().payload, &inner[..]);
        let hdr = ip.header().to_header();
        assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
        // etherparse reads the inner datagram out of the outer payload.
        let inner_sliced = etherparse::SlicedPacket::from_ip(ip.payload().payload).unwrap();
        let Some(etherparse::TransportSlice::Udp(u)) = &inner_sliced.transport else {
            panic!("inner UDP expected");
        };
        assert_eq!(u.payload(), b"ipip");
    }
}
