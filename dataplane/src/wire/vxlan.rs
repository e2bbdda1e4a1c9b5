//! VXLAN headers (RFC 7348).
//!
//! ```text
//!  0               1               2               3
//! |R|R|R|R|I|R|R|R|            Reserved (24)                      |
//! |                VXLAN Network Identifier (VNI)  | Reserved (8)  |
//! ```
//!
//! Transmit: flags `0x08` (I), every reserved bit 0. Receive: the I flag is
//! required; reserved bits are ignored (and reported by
//! [`Header::reserved_bits_set`] so they can be counted).

use super::{Error, Field, ethernet, ipv4, udp};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid. The only flag defined by RFC 7348.
pub const FLAG_I: u8 = 0x08;
/// The largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;
/// IANA's VXLAN UDP port (Calico).
pub const PORT_IANA: u16 = 4789;
/// The Linux kernel's default VXLAN UDP port (Flannel).
pub const PORT_LINUX: u16 = 8472;

/// Bytes in front of the inner Ethernet frame in an encapsulated frame:
/// outer Ethernet (14) + outer IPv4 (20) + UDP (8) + VXLAN (8) = 50. The
/// inner frame starts at this offset.
pub const OUTER_HEADERS_LEN: usize =
    ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + HEADER_LEN;
/// What VXLAN takes from the underlay's IP MTU: outer IPv4 (20) + UDP (8)
/// + VXLAN (8) + inner Ethernet (14) = 50, so tunnel MTU = underlay MTU − 50.
pub const OVERHEAD: usize =
    ipv4::MIN_HEADER_LEN + udp::HEADER_LEN + HEADER_LEN + ethernet::HEADER_LEN;

// Both are 50 by coincidence of the two Ethernet headers; keep them honest.
const _: () = assert!(OUTER_HEADERS_LEN == 50 && OVERHEAD == 50);

/// Where each header starts in a VXLAN-over-IPv4 frame with no outer IPv4
/// options (the gateway accepts and emits none):
/// `| eth 0..14 | ipv4 14..34 | udp 34..42 | vxlan 42..50 | inner eth 50..64 | inner ipv4 64.. |`.
pub mod frame {
    use super::{HEADER_LEN, OUTER_HEADERS_LEN, ethernet, ipv4, udp};

    /// The outer IPv4 header.
    pub const OUTER_IP: usize = ethernet::HEADER_LEN;
    /// The outer UDP header.
    pub const UDP: usize = OUTER_IP + ipv4::MIN_HEADER_LEN;
    /// The VXLAN header.
    pub const VXLAN: usize = UDP + udp::HEADER_LEN;
    /// The inner Ethernet frame.
    pub const INNER_ETH: usize = VXLAN + HEADER_LEN;
    /// The inner IPv4 packet.
    pub const INNER_IP: usize = INNER_ETH + ethernet::HEADER_LEN;

    const _: () = assert!(UDP == 34 && VXLAN == 42 && INNER_ETH == OUTER_HEADERS_LEN);
    const _: () = assert!(INNER_IP == 64);
}

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const RESERVED_0: Field = 1..4;
    pub const VNI: Field = 4..7;
    pub const RESERVED_1: usize = 7;
    pub const PAYLOAD: core::ops::RangeFrom<usize> = 8..;
}

/// A view of a VXLAN header (and the inner frame after it) over a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps a buffer without checks (see the contract in [`crate::wire`]).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Header<T> {
        Header { buffer }
    }

    /// Wraps a buffer, checking the header fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Header<T>, Error> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks the buffer holds the 8-byte header. Flags are not checked
    /// here (see [`Repr::parse`]): a view can read any header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        // Every accessor reads inside the fixed header.
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The I flag is set: the VNI is valid.
    #[inline]
    pub fn has_vni_flag(&self) -> bool {
        self.flags() & FLAG_I != 0
    }

    /// The 24-bit VNI.
    #[inline]
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// Any reserved bit is set: a flag other than I, or a reserved field
    /// non-zero. Receivers ignore these (RFC 7348) but count them.
    #[inline]
    pub fn reserved_bits_set(&self) -> bool {
        let data = self.buffer.as_ref();
        let r0 = &data[field::RESERVED_0];
        (data[field::FLAGS] & !FLAG_I) | r0[0] | r0[1] | r0[2] | data[field::RESERVED_1] != 0
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Header<&'a T> {
    /// Everything after the header: the inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    #[inline]
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Writes the VNI's low 24 bits (higher bits are dropped); the reserved
    /// byte after it is left alone.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        let b = vni.to_be_bytes();
        self.buffer.as_mut()[field::VNI].copy_from_slice(&b[1..]);
    }

    /// Zeroes both reserved fields (flags are left alone).
    #[inline]
    pub fn clear_reserved(&mut self) {
        let data = self.buffer.as_mut();
        data[field::RESERVED_0].fill(0);
        data[field::RESERVED_1] = 0;
    }

    /// Everything after the header, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A VXLAN header.
///
/// `vni` must fit in 24 bits ([`VNI_MAX`]). The field is public for struct
/// literals in the TX path, where the VNI comes from validated
/// configuration; [`Repr::new`] is the checked constructor for anything
/// else. `emit` writes the low 24 bits of a larger value (it never
/// panics and never spills into the flags or reserved bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub vni: u32,
}

impl Repr {
    /// A header for `vni`; `Err(Malformed)` if it does not fit in 24 bits.
    #[inline]
    pub const fn new(vni: u32) -> Result<Repr, Error> {
        // The field is 24 bits: a larger VNI would silently become another.
        if vni > VNI_MAX {
            return Err(Error::Malformed);
        }
        Ok(Repr { vni })
    }

    /// Reads a checked header. Requires the I flag (RFC 7348: without it
    /// the VNI is not valid); other flags and reserved bits are ignored.
    #[inline]
    pub fn parse<T: AsRef<[u8]> + ?Sized>(header: &Header<&T>) -> Result<Repr, Error> {
        // Without I the VNI field carries nothing we may act on.
        if !header.has_vni_flag() {
            return Err(Error::BadFlags);
        }
        Ok(Repr { vni: header.vni() })
    }

    /// Bytes `emit` writes: the 8-byte header.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes flags `0x08`, the VNI (low 24 bits), and zeros in every
    /// reserved field.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut Header<T>) {
        header.set_flags(FLAG_I);
        header.clear_reserved();
        header.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::wire::ethernet::{self, MacAddr};

    // I flag, VNI 0x123456, then a 4-byte stand-in for the inner frame.
    static HEADER_BYTES: [u8; 12] = [
        0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x00, 0xde, 0xad, 0xbe, 0xef,
    ];
    static PAYLOAD_BYTES: [u8; 4] = [0xde, 0xad, 0xbe, 0xef];

    #[test]
    fn test_deconstruct() {
        let h = Header::new_checked(&HEADER_BYTES[..]).unwrap();
        assert_eq!(h.flags(), FLAG_I);
        assert!(h.has_vni_flag());
        assert_eq!(h.vni(), 0x12_3456);
        assert!(!h.reserved_bits_set());
        assert_eq!(h.payload(), &PAYLOAD_BYTES[..]);
        assert_eq!(Repr::parse(&h), Ok(Repr::new(0x12_3456).unwrap()));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 12];
        let repr = Repr::new(0x12_3456).unwrap();
        assert_eq!(repr.buffer_len(), HEADER_LEN);
        let mut h = Header::new_unchecked(&mut bytes[..]);
        repr.emit(&mut h);
        h.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(bytes, HEADER_BYTES);
    }

    #[test]
    fn test_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Header::new_checked(&HEADER_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        assert!(
            Header::new_checked(&HEADER_BYTES[..HEADER_LEN])
                .unwrap()
                .payload()
                .is_empty()
        );
        assert!(Header::new_checked(&HEADER_BYTES[..]).is_ok());
    }

    #[test]
    fn test_vni_range() {
        assert_eq!(Repr::new(0).map(|r| r.vni), Ok(0));
        assert_eq!(Repr::new(1).map(|r| r.vni), Ok(1));
        assert_eq!(Repr::new(VNI_MAX).map(|r| r.vni), Ok(VNI_MAX));
        assert_eq!(Repr::new(VNI_MAX + 1), Err(Error::Malformed));
        assert_eq!(Repr::new(u32::MAX), Err(Error::Malformed));
        // The view's setter masks, and leaves the neighbouring bytes alone.
        let mut bytes = HEADER_BYTES;
        let mut h = Header::new_unchecked(&mut bytes[..]);
        h.set_vni(0xab00_1000);
        assert_eq!(h.vni(), 4096);
        assert_eq!(
            bytes,
            [
                0x08, 0, 0, 0, 0x00, 0x10, 0x00, 0x00, 0xde, 0xad, 0xbe, 0xef
            ]
        );
        // A struct-literal Repr with an oversized VNI: emit masks it.
        let mut bytes = [0xa5u8; 8];
        Repr { vni: 0xff12_3456 }.emit(&mut Header::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, HEADER_BYTES[..8]);
    }

    #[test]
    fn test_flags_and_reserved_bits() {
        // Missing I flag: the view reads it, Repr refuses it.
        let mut bytes = HEADER_BYTES;
        bytes[0] = 0x00;
        let h = Header::new_checked(&bytes[..]).unwrap();
        assert!(!h.has_vni_flag());
        assert_eq!(Repr::parse(&h), Err(Error::BadFlags));
        // Every reserved bit, one at a time, is reported but does not stop
        // parsing (RFC 7348: ignored on receive).
        for byte in [0, 1, 2, 3, 7] {
            for bit in 0..8 {
                let mut bytes = HEADER_BYTES;
                bytes[byte] ^= 1 << bit;
                let h = Header::new_checked(&bytes[..]).unwrap();
                if byte == 0 && 1 << bit == FLAG_I {
                    assert!(!h.reserved_bits_set());
                    continue;
                }
                assert!(h.reserved_bits_set(), "byte {byte} bit {bit}");
                assert_eq!(h.vni(), 0x12_3456);
                assert_eq!(Repr::parse(&h).map(|r| r.vni), Ok(0x12_3456));
            }
        }
        // emit clears them all again.
        let mut bytes = [0xffu8; 8];
        Repr::new(1)
            .unwrap()
            .emit(&mut Header::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, [0x08, 0, 0, 0, 0, 0, 1, 0]);
        let h = Header::new_checked(&bytes[..]).unwrap();
        assert!(!h.reserved_bits_set());
    }

    #[test]
    fn overhead_constants() {
        assert_eq!(OUTER_HEADERS_LEN, 50);
        assert_eq!(OVERHEAD, 50);
        // Flannel's flannel.1 on a 1500-byte link.
        assert_eq!(1500 - OVERHEAD, 1450);
    }

    /// Encapsulates an etherparse-built inner frame with our Reprs, checks
    /// etherparse reads the outer headers, and decapsulates with our views.
    #[test]
    fn encap_decap_round_trip() {
        let inner_src = MacAddr([0x02, 0x0f, 0, 0, 0, 1]);
        let inner_dst = MacAddr([0x02, 0x0b, 0, 0, 0, 1]);
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ethernet2(inner_src.0, inner_dst.0)
            .ipv4([10, 244, 0, 2], [10, 244, 1, 3], 63)
            .udp(5000, 53)
            .write(&mut inner, b"overlay payload")
            .unwrap();

        let (underlay_src, underlay_dst) =
            (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 11));
        let vxlan = Repr::new(1).unwrap();
        let udp_repr = udp::Repr {
            src_port: 51000,
            dst_port: PORT_LINUX,
            payload_len: HEADER_LEN + inner.len(),
        };
        let ip_repr = ipv4::Repr {
            src_addr: underlay_src,
            dst_addr: underlay_dst,
            protocol: ipv4::PROTO_UDP,
            ttl: 64,
            tos: 0,
            dont_frag: true,
            ident: 0,
            payload_len: udp::HEADER_LEN + HEADER_LEN + inner.len(),
        };
        let eth_repr = ethernet::Repr {
            src_addr: MacAddr([0x02, 0xaa, 0, 0, 0, 1]),
            dst_addr: MacAddr([0x02, 0xbb, 0, 0, 0, 2]),
            ethertype: ethernet::ethertype::IPV4,
        };
        let mut frame = vec![0xa5u8; OUTER_HEADERS_LEN + inner.len()];
        let mut at = 0;
        eth_repr.emit(&mut ethernet::Frame::new_unchecked(&mut frame[at..]));
        at += eth_repr.buffer_len();
        ip_repr.emit(&mut ipv4::Packet::new_unchecked(&mut frame[at..]));
        at += ip_repr.buffer_len();
        udp_repr.emit(&mut udp::Packet::new_unchecked(&mut frame[at..]));
        at += udp_repr.buffer_len();
        vxlan.emit(&mut Header::new_unchecked(&mut frame[at..]));
        at += vxlan.buffer_len();
        assert_eq!(at, OUTER_HEADERS_LEN);
        frame[at..].copy_from_slice(&inner);

        // etherparse agrees on the outer headers.
        let sliced = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!("outer IPv4 expected: {:?}", sliced.net);
        };
        assert_eq!(ip.header().source_addr(), underlay_src);
        assert_eq!(ip.header().destination_addr(), underlay_dst);
        assert!(ip.header().dont_fragment());
        let hdr = ip.header().to_header();
        assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
        let Some(etherparse::TransportSlice::Udp(u)) = &sliced.transport else {
            panic!("outer UDP expected");
        };
        assert_eq!(u.destination_port(), 8472);
        assert_eq!(u.checksum(), 0);
        assert_eq!(&u.payload()[HEADER_LEN..], &inner[..]);

        // And our views take it apart again.
        let eth = ethernet::Frame::new_checked(&frame[..]).unwrap();
        assert_eq!(ethernet::Repr::parse(&eth), eth_repr);
        let ip = ipv4::Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ipv4::Repr::parse(&ip), Ok(ip_repr));
        let u = udp::Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(udp::Repr::parse(&u), udp_repr);
        assert!(u.verify_checksum(ip.src_addr(), ip.dst_addr()));
        let vx = Header::new_checked(u.payload()).unwrap();
        assert_eq!(Repr::parse(&vx), Ok(vxlan));
        let inner_frame = ethernet::Frame::new_checked(vx.payload()).unwrap();
        assert_eq!(inner_frame.dst_addr(), inner_dst);
        assert_eq!(inner_frame.src_addr(), inner_src);
        assert_eq!(vx.payload(), &inner[..]);
    }
}
