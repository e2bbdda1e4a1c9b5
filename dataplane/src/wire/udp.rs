//! UDP headers (RFC 768) over IPv4.

use std::net::Ipv4Addr;

use super::checksum;
use super::ipv4::PROTO_UDP;
use super::{Error, Field, read_u16, write_u16};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

/// A view of a UDP datagram over a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checks (see the contract in [`crate::wire`]).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer, checking the header and the length field.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the buffer holds the header and the `len()` bytes the length
    /// field claims. The buffer may be longer (IP or Ethernet padding).
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        // The fixed header holds the fields every getter reads.
        if data.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let len = usize::from(self.len());
        // The length covers the header itself (RFC 768: minimum 8).
        if len < HEADER_LEN {
            return Err(Error::BadLength);
        }
        // A datagram cut short: payload() and the checksum would run past it.
        if len > data.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header plus payload, in bytes.
    #[inline]
    #[expect(
        clippy::len_without_is_empty,
        reason = "the UDP length field, never empty"
    )]
    pub fn len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// The checksum field (0: none was computed).
    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The checksum over the pseudo-header, header and payload verifies, or
    /// there is none: a zero checksum means "not computed" over IPv4
    /// (RFC 768), which VXLAN senders use (RFC 7348).
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        checksum::fold(self.checksum_sum(src, dst)) == 0xffff
    }

    /// Partial sum of the pseudo-header and the datagram (`..len()`).
    #[inline]
    fn checksum_sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
        let len = self.len();
        let data = &self.buffer.as_ref()[..usize::from(len)];
        checksum::combine(
            checksum::ipv4_pseudo_header(src, dst, PROTO_UDP, len),
            checksum::sum(data),
        )
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the header to `len()`; padding after it is excluded.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_src_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT, value);
    }

    #[inline]
    pub fn set_dst_port(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT, value);
    }

    /// Sets the length field. A value the buffer cannot hold breaks the
    /// no-panic contract for `payload()` and the checksum helpers until
    /// `check_len` passes again.
    #[inline]
    pub fn set_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    /// Computes and writes the checksum over the pseudo-header, header and
    /// payload (`..len()`), for a datagram from `src` to `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let value = checksum::finish(self.checksum_sum(src, dst));
        // A computed 0 is sent as 0xffff: 0 on the wire means "none" (RFC 768).
        self.set_checksum(if value == 0 { 0xffff } else { value });
    }

    /// The payload, mutable (`HEADER_LEN..len()`).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// A UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes after the header. At most 65527: `emit` writes a length of
    /// 65535 for anything larger rather than wrap.
    pub payload_len: usize,
}

impl Repr {
    /// Reads the header of a checked datagram. Cannot fail: `new_checked`
    /// validated the length, and the checksum needs the IP addresses (see
    /// [`Packet::verify_checksum`]).
    #[inline]
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Repr {
        Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        }
    }

    /// Bytes `emit` writes: the 8-byte header.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// The length field `emit` writes (saturating at 65535).
    #[inline]
    #[expect(
        clippy::len_without_is_empty,
        reason = "the UDP length field, never empty"
    )]
    pub fn len(&self) -> u16 {
        u16::try_from(HEADER_LEN.saturating_add(self.payload_len)).unwrap_or(u16::MAX)
    }

    /// Writes the header with checksum 0 ("none", as RFC 7348 recommends for
    /// VXLAN over IPv4). To send a checksum, write the payload and call
    /// [`Packet::fill_checksum`].
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(self.len());
        packet.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::test_util::XorShift;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    // 49152 → 8472, length 12, no checksum, 4 payload bytes.
    static PACKET_BYTES: [u8; 12] = [
        0xc0, 0x00, 0x21, 0x18, 0x00, 0x0c, 0x00, 0x00, 0xaa, 0xbb, 0xcc, 0xdd,
    ];
    // The same with its checksum for 10.0.0.1 → 10.0.0.2.
    static CHECKSUMMED_BYTES: [u8; 12] = [
        0xc0, 0x00, 0x21, 0x18, 0x00, 0x0c, 0x93, 0x21, 0xaa, 0xbb, 0xcc, 0xdd,
    ];
    static PAYLOAD_BYTES: [u8; 4] = [0xaa, 0xbb, 0xcc, 0xdd];

    fn repr() -> Repr {
        Repr {
            src_port: 49152,
            dst_port: 8472,
            payload_len: 4,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.src_port(), 49152);
        assert_eq!(p.dst_port(), 8472);
        assert_eq!(p.len(), 12);
        assert_eq!(p.checksum(), 0);
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..]);
        assert!(p.verify_checksum(SRC, DST), "0 = no checksum, accepted");
        assert_eq!(Repr::parse(&p), repr());

        let p = Packet::new_checked(&CHECKSUMMED_BYTES[..]).unwrap();
        assert_eq!(p.checksum(), 0x9321);
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.verify_checksum(SRC, Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 12];
        let repr = repr();
        assert_eq!(repr.buffer_len(), HEADER_LEN);
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut p);
        p.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(bytes, PACKET_BYTES);
        Packet::new_unchecked(&mut bytes[..]).fill_checksum(SRC, DST);
        assert_eq!(bytes, CHECKSUMMED_BYTES);
    }

    #[test]
    fn test_setters() {
        let mut bytes = CHECKSUMMED_BYTES;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_src_port(1);
        p.set_dst_port(2);
        p.set_len(10);
        p.set_checksum(0x1234);
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(
            (p.src_port(), p.dst_port(), p.len(), p.checksum()),
            (1, 2, 10, 0x1234)
        );
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..2]);
        assert!(!p.verify_checksum(SRC, DST));
    }

    #[test]
    fn test_truncated() {
        for len in 0..PACKET_BYTES.len() {
            assert_eq!(
                Packet::new_checked(&PACKET_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        assert!(Packet::new_checked(&PACKET_BYTES[..]).is_ok());
    }

    #[test]
    fn test_length_field() {
        let with_len = |len: u16| {
            let mut b = PACKET_BYTES;
            b[4..6].copy_from_slice(&len.to_be_bytes());
            b
        };
        // Shorter than the header.
        for len in 0..8 {
            assert_eq!(
                Packet::new_checked(&with_len(len)[..]),
                Err(Error::BadLength),
                "len {len}"
            );
        }
        // Longer than the buffer.
        for len in [13, 1500, u16::MAX] {
            assert_eq!(
                Packet::new_checked(&with_len(len)[..]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        // Exactly the header: empty payload. Shorter than the buffer: the
        // rest is padding, outside payload().
        let b = with_len(8);
        assert!(Packet::new_checked(&b[..]).unwrap().payload().is_empty());
        let b = with_len(10);
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap().payload(),
            &PAYLOAD_BYTES[..2]
        );
    }

    #[test]
    fn test_zero_checksum_sent_as_ffff() {
        // Find a payload whose computed checksum is 0: the checksum of the
        // rest plus a final word w is 0 when the total sum is 0xffff.
        let mut b = [0u8; 12];
        let mut p = Packet::new_unchecked(&mut b[..]);
        repr().emit(&mut p);
        let partial = checksum::fold(checksum::combine(
            checksum::ipv4_pseudo_header(SRC, DST, PROTO_UDP, 12),
            checksum::sum(&b),
        ));
        let w = 0xffff - partial;
        b[10..12].copy_from_slice(&w.to_be_bytes());
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn test_emit_saturates_len() {
        let mut b = [0u8; 8];
        for (payload_len, len) in [(65527, 65535), (65528, 65535), (usize::MAX, 65535), (0, 8)] {
            let r = Repr {
                payload_len,
                ..repr()
            };
            assert_eq!(r.len(), len);
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            assert_eq!(Packet::new_unchecked(&b[..]).len(), len);
        }
    }

    #[test]
    fn cross_check_etherparse() {
        let mut rng = XorShift::new(768);
        for _ in 0..300 {
            let src = rng.next_u64().to_be_bytes()[..4].try_into().unwrap();
            let dst = rng.next_u64().to_be_bytes()[..4].try_into().unwrap();
            let (sport, dport) = (rng.next_u16(), rng.next_u16());
            let mut payload = vec![0u8; rng.below(300)];
            rng.fill(&mut payload);
            let mut bytes = Vec::new();
            etherparse::PacketBuilder::ipv4(src, dst, 64)
                .udp(sport, dport)
                .write(&mut bytes, &payload)
                .unwrap();
            let udp_bytes = &bytes[20..];
            let theirs = etherparse::UdpSlice::from_slice(udp_bytes).unwrap();
            let p = Packet::new_checked(udp_bytes).unwrap();
            let (src, dst) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
            assert_eq!(p.src_port(), theirs.source_port());
            assert_eq!(p.dst_port(), theirs.destination_port());
            assert_eq!(p.len(), theirs.length());
            assert_eq!(p.checksum(), theirs.checksum());
            assert_eq!(p.payload(), theirs.payload());
            assert!(p.verify_checksum(src, dst));

            // Our fill_checksum computes what etherparse wrote.
            let mut copy = udp_bytes.to_vec();
            let mut ours = Packet::new_checked(&mut copy[..]).unwrap();
            ours.set_checksum(0);
            ours.fill_checksum(src, dst);
            assert_eq!(ours.checksum(), theirs.checksum());

            // And etherparse verifies a datagram we emitted and checksummed.
            let r = Repr {
                src_port: sport,
                dst_port: dport,
                payload_len: payload.len(),
            };
            let mut out = vec![0xa5u8; r.buffer_len() + payload.len()];
            let mut ours = Packet::new_unchecked(&mut out[..]);
            r.emit(&mut ours);
            ours.payload_mut().copy_from_slice(&payload);
            ours.fill_checksum(src, dst);
            let (h, _) = etherparse::UdpHeader::from_slice(&out).unwrap();
            let expected = h
                .calc_checksum_ipv4_raw(src.octets(), dst.octets(), &payload)
                .unwrap();
            assert_eq!(h.checksum, expected);
            assert_eq!(usize::from(h.length), 8 + payload.len());
        }
    }
}
