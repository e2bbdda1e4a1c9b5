//! IPv4 headers (RFC 791).
//!
//! Options are read over (the payload starts after them) but never emitted;
//! the only edit is [`Packet::strip_uncopied_options`] for fragmentation.
//! Fragments are visible through the view but not representable as a
//! [`Repr`]: the gateway fragments (see the pipeline) but never reassembles.

use std::net::Ipv4Addr;

use super::checksum;
use super::{Error, Field, read_4, read_u16, write_u16};

/// Length of a header without options (IHL 5).
pub const MIN_HEADER_LEN: usize = 20;
/// The largest payload an IPv4 datagram without options can carry.
pub const MAX_PAYLOAD_LEN: usize = u16::MAX as usize - MIN_HEADER_LEN;

/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of IP-in-IP (RFC 2003).
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// ECN codepoints (RFC 3168), the low 2 bits of the TOS byte.
pub mod ecn {
    /// Not ECN-capable transport.
    pub const NOT_ECT: u8 = 0b00;
    /// ECN-capable transport, ECT(1).
    pub const ECT_1: u8 = 0b01;
    /// ECN-capable transport, ECT(0).
    pub const ECT_0: u8 = 0b10;
    /// Congestion experienced.
    pub const CE: u8 = 0b11;
}

/// Option type bytes (RFC 791 §3.1).
pub mod option {
    /// End of option list.
    pub const END: u8 = 0;
    /// No operation (padding).
    pub const NOP: u8 = 1;
    /// The "copied" flag: the option is copied into every fragment.
    pub const COPIED: u8 = 0x80;
}

/// Field offsets in the IPv4 header (RFC 791 §3.1).
pub(crate) mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    /// Version/IHL and TOS as one 16-bit checksum word.
    pub const VER_TOS_WORD: Field = 0..2;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    /// TTL and protocol as one 16-bit checksum word.
    pub const TTL_PROTO_WORD: Field = 8..10;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

/// Flag bits in the flags/fragment-offset word.
const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet over a buffer.
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

    /// Wraps a buffer, checking the version and every length field.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks what the accessors rely on: version 4, a consistent IHL and
    /// total length, and a buffer holding `total_len` bytes.
    ///
    /// The buffer may be longer than `total_len` (Ethernet pads short frames
    /// to 60 bytes); `payload()` ends at `total_len`.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let data = self.buffer.as_ref();
        // The fixed header holds the fields every getter reads.
        if data.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        // Anything else is another protocol (IPv6 lands here too): the field
        // layout below does not apply.
        if self.version() != 4 {
            return Err(Error::BadVersion);
        }
        let header_len = self.header_len();
        // IHL < 5 would put the addresses inside the payload (RFC 791).
        if header_len < MIN_HEADER_LEN {
            return Err(Error::BadHeaderLen);
        }
        // Options must be present in full for header_bytes() and the checksum.
        if header_len > data.len() {
            return Err(Error::Truncated);
        }
        let total_len = usize::from(self.total_len());
        // The datagram must at least contain its own header.
        if total_len < header_len {
            return Err(Error::BadLength);
        }
        // A datagram cut short by the link: payload() would run past the end.
        if total_len > data.len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4), options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// The whole TOS byte (DSCP and ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Differentiated services code point (the high 6 bits of TOS).
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }

    /// ECN codepoint (the low 2 bits of TOS); see [`ecn`].
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0b11
    }

    /// Total length of the datagram in bytes, header included.
    #[inline]
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::IDENT)
    }

    #[inline]
    pub fn dont_frag(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_DF != 0
    }

    #[inline]
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & FLAG_MF != 0
    }

    /// Fragment offset in **bytes** (the field's 8-byte units × 8).
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (read_u16(self.buffer.as_ref(), field::FLG_OFF) & FRAG_OFFSET_MASK) << 3
    }

    /// A fragment of a larger datagram: MF set or a non-zero offset.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FLG_OFF) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_addr_bytes())
    }

    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_addr_bytes())
    }

    /// Source address as a host-order integer (`10.0.0.1` → `0x0a00_0001`).
    #[inline]
    pub fn src_addr_u32(&self) -> u32 {
        u32::from_be_bytes(self.src_addr_bytes())
    }

    /// Destination address as a host-order integer.
    #[inline]
    pub fn dst_addr_u32(&self) -> u32 {
        u32::from_be_bytes(self.dst_addr_bytes())
    }

    #[inline]
    pub fn src_addr_bytes(&self) -> [u8; 4] {
        read_4(self.buffer.as_ref(), field::SRC_ADDR)
    }

    #[inline]
    pub fn dst_addr_bytes(&self) -> [u8; 4] {
        read_4(self.buffer.as_ref(), field::DST_ADDR)
    }

    /// The header carries options (IHL > 5).
    #[inline]
    pub fn has_options(&self) -> bool {
        self.header_len() > MIN_HEADER_LEN
    }

    /// The header bytes, options included (what ICMP errors quote).
    #[inline]
    pub fn header_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// The header checksum verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.header_bytes())) == 0xffff
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Packet<&'a T> {
    /// The payload: from the end of the header (options included) to
    /// `total_len`; Ethernet padding after `total_len` is excluded.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &self.buffer.as_ref()[range]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_tos(&mut self, value: u8) {
        self.buffer.as_mut()[field::TOS] = value;
    }

    /// Sets the total length. A value the buffer cannot hold breaks the
    /// no-panic contract for `payload()` until `check_len` passes again.
    #[inline]
    pub fn set_total_len(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::LENGTH, value);
    }

    #[inline]
    pub fn set_ident(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::IDENT, value);
    }

    /// Writes the flags and fragment offset word. `offset` is in bytes; its
    /// low 3 bits are dropped (offsets are 8-byte units on the wire). The
    /// reserved flag bit is cleared.
    #[inline]
    pub fn set_flags_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let mut word = (offset >> 3) & FRAG_OFFSET_MASK;
        if dont_frag {
            word |= FLAG_DF;
        }
        if more_frags {
            word |= FLAG_MF;
        }
        write_u16(self.buffer.as_mut(), field::FLG_OFF, word);
    }

    #[inline]
    pub fn set_ttl(&mut self, value: u8) {
        self.buffer.as_mut()[field::TTL] = value;
    }

    #[inline]
    pub fn set_protocol(&mut self, value: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = value;
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    #[inline]
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Rewrites the options for a fragment after the first (RFC 791 §3.1):
    /// options without the "copied" flag become NOPs, as Linux does, so the
    /// header length stays the same. A malformed option list ends at the
    /// bad option: from there on it is overwritten with end-of-list. The
    /// checksum is not updated.
    pub fn strip_uncopied_options(&mut self) {
        let header_len = self.header_len();
        let data = self.buffer.as_mut();
        let Some(options) = data.get_mut(MIN_HEADER_LEN..header_len) else {
            return;
        };
        let mut i = 0;
        while i < options.len() {
            let kind = options[i];
            match kind {
                option::END => {
                    options[i..].fill(option::END);
                    return;
                }
                option::NOP => i += 1,
                _ => {
                    let len = options.get(i + 1).map_or(0, |&l| l as usize);
                    if len < 2 || i + len > options.len() {
                        options[i..].fill(option::END);
                        return;
                    }
                    if kind & option::COPIED == 0 {
                        options[i..i + len].fill(option::NOP);
                    }
                    i += len;
                }
            }
        }
    }

    /// Recomputes the header checksum over `header_len()` bytes.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let value = checksum::finish(checksum::sum(self.header_bytes()));
        self.set_checksum(value);
    }

    /// Decrements the TTL and updates the checksum incrementally (RFC 1624).
    ///
    /// The caller guarantees `ttl() > 0` (a forwarder drops TTL ≤ 1 before
    /// getting here). Debug builds assert it; release builds wrap 0 to 255
    /// with a consistent checksum rather than panic. An incorrect incoming
    /// checksum stays incorrect, so the receiver still drops the packet.
    #[inline]
    pub fn decrement_ttl(&mut self) {
        debug_assert!(self.ttl() > 0, "decrement_ttl on TTL 0");
        let data = self.buffer.as_mut();
        let old = read_u16(data, field::TTL_PROTO_WORD);
        // TTL is the high byte of the TTL/protocol word.
        let new = old.wrapping_sub(0x0100);
        write_u16(data, field::TTL_PROTO_WORD, new);
        let ck = read_u16(data, field::CHECKSUM);
        write_u16(data, field::CHECKSUM, checksum::update_u16(ck, old, new));
    }

    /// Sets the ECN codepoint (`ecn & 0b11`, see [`ecn`]) and updates the
    /// checksum incrementally; DSCP is kept.
    #[inline]
    pub fn set_ecn_incremental(&mut self, ecn: u8) {
        let data = self.buffer.as_mut();
        let old = read_u16(data, field::VER_TOS_WORD);
        // ECN is the low 2 bits of TOS, the low byte of this word.
        let new = (old & !0b11) | u16::from(ecn & 0b11);
        write_u16(data, field::VER_TOS_WORD, new);
        let ck = read_u16(data, field::CHECKSUM);
        write_u16(data, field::CHECKSUM, checksum::update_u16(ck, old, new));
    }

    /// The payload, mutable (`header_len()..total_len()`).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        &mut self.buffer.as_mut()[range]
    }
}

/// An unfragmented IPv4 header without options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_addr: Ipv4Addr,
    pub dst_addr: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    /// The whole TOS byte (DSCP and ECN).
    pub tos: u8,
    pub dont_frag: bool,
    pub ident: u16,
    /// Bytes after the header. At most [`MAX_PAYLOAD_LEN`]: `emit` writes
    /// a total length of 65535 for anything larger rather than wrap.
    pub payload_len: usize,
}

impl Repr {
    /// Reads a checked packet. Options are skipped (`payload_len` counts
    /// from the end of the real header).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &Packet<&T>) -> Result<Repr, Error> {
        // A corrupted header could send the packet anywhere.
        if !packet.verify_checksum() {
            return Err(Error::BadChecksum);
        }
        // A Repr describes a whole datagram; we do not reassemble.
        if packet.is_fragment() {
            return Err(Error::Fragmented);
        }
        Ok(Repr {
            src_addr: packet.src_addr(),
            dst_addr: packet.dst_addr(),
            protocol: packet.protocol(),
            ttl: packet.ttl(),
            tos: packet.tos(),
            dont_frag: packet.dont_frag(),
            ident: packet.ident(),
            payload_len: packet.payload().len(),
        })
    }

    /// Bytes `emit` writes: the 20-byte header (no options).
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// The total length field `emit` writes (saturating at 65535).
    #[inline]
    pub fn total_len(&self) -> u16 {
        u16::try_from(MIN_HEADER_LEN + self.payload_len.min(MAX_PAYLOAD_LEN)).unwrap_or(u16::MAX)
    }

    /// Writes the 20-byte header, checksum included, into the start of
    /// `packet` (which must hold at least `buffer_len()` bytes).
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        // Version 4, IHL 5: we never emit options.
        packet.buffer.as_mut()[field::VER_IHL] = 0x45;
        packet.set_tos(self.tos);
        packet.set_total_len(self.total_len());
        packet.set_ident(self.ident);
        packet.set_flags_frag(self.dont_frag, false, 0);
        packet.set_ttl(self.ttl);
        packet.set_protocol(self.protocol);
        packet.set_src_addr(self.src_addr);
        packet.set_dst_addr(self.dst_addr);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_options(options: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; MIN_HEADER_LEN + options.len()];
        v[0] = 0x40 | ((MIN_HEADER_LEN + options.len()) / 4) as u8;
        let len = v.len() as u16;
        v[2..4].copy_from_slice(&len.to_be_bytes());
        v[MIN_HEADER_LEN..].copy_from_slice(options);
        v
    }

    #[test]
    fn strip_uncopied_options_keeps_copied_ones() {
        // Record route (uncopied), security (copied), NOP, EOL, junk after EOL.
        let mut v = with_options(&[7, 7, 4, 0, 0, 0, 0, 0x82, 3, 9, 1, 0, 0x44, 0x44, 0, 0]);
        Packet::new_unchecked(&mut v[..]).strip_uncopied_options();
        assert_eq!(
            &v[MIN_HEADER_LEN..],
            &[1, 1, 1, 1, 1, 1, 1, 0x82, 3, 9, 1, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn strip_uncopied_options_ends_a_malformed_list() {
        for bad in [[0x44, 1, 0, 0], [0x44, 9, 0, 0], [0x94, 0, 1, 1]] {
            let mut v = with_options(&bad);
            Packet::new_unchecked(&mut v[..]).strip_uncopied_options();
            assert_eq!(&v[MIN_HEADER_LEN..], &[0, 0, 0, 0], "{bad:?}");
        }
        // No options, or an IHL past the buffer: nothing to do, no panic.
        let mut v = with_options(&[]);
        Packet::new_unchecked(&mut v[..]).strip_uncopied_options();
        v[0] = 0x4f;
        Packet::new_unchecked(&mut v[..]).strip_uncopied_options();
    }
    use crate::wire::test_util::XorShift;

    // Version 4, IHL 5, DSCP 46 (EF) + ECT(1), total 24, ident 0x1234, DF,
    // TTL 64, UDP, checksum 0x13e6, 10.0.0.1 → 10.0.0.2, 4 payload bytes.
    static PACKET_BYTES: [u8; 24] = [
        0x45, 0xb9, 0x00, 0x18, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x13, 0xe6, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02, 0xaa, 0xbb, 0xcc, 0xdd,
    ];
    static PAYLOAD_BYTES: [u8; 4] = [0xaa, 0xbb, 0xcc, 0xdd];

    // The same with IHL 6 and one option word (four NOP options, 0x01):
    // total 28, checksum 0x10e0.
    static OPTIONS_BYTES: [u8; 28] = [
        0x46, 0xb9, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x10, 0xe0, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02, 0x01, 0x01, 0x01, 0x01, 0xaa, 0xbb, 0xcc, 0xdd,
    ];

    fn repr() -> Repr {
        Repr {
            src_addr: Ipv4Addr::new(10, 0, 0, 1),
            dst_addr: Ipv4Addr::new(10, 0, 0, 2),
            protocol: PROTO_UDP,
            ttl: 64,
            tos: 0xb9,
            dont_frag: true,
            ident: 0x1234,
            payload_len: 4,
        }
    }

    #[test]
    fn test_deconstruct() {
        let p = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.tos(), 0xb9);
        assert_eq!(p.dscp(), 46);
        assert_eq!(p.ecn(), ecn::ECT_1);
        assert_eq!(p.total_len(), 24);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert_eq!(p.frag_offset(), 0);
        assert!(!p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), PROTO_UDP);
        assert_eq!(p.checksum(), 0x13e6);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.src_addr_u32(), 0x0a00_0001);
        assert_eq!(p.dst_addr_u32(), 0x0a00_0002);
        assert_eq!(p.src_addr_bytes(), [10, 0, 0, 1]);
        assert_eq!(p.dst_addr_bytes(), [10, 0, 0, 2]);
        assert!(!p.has_options());
        assert_eq!(p.header_bytes(), &PACKET_BYTES[..20]);
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..]);
        assert!(p.verify_checksum());
        assert_eq!(Repr::parse(&p), Ok(repr()));
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 24];
        let repr = repr();
        assert_eq!(repr.buffer_len(), 20);
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        repr.emit(&mut p);
        p.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_construct_into_exact_buffer() {
        // emit needs only buffer_len() bytes, whatever payload_len says.
        let mut bytes = [0xa5u8; MIN_HEADER_LEN];
        let repr = Repr {
            payload_len: 1480,
            ..repr()
        };
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        let p = Packet::new_unchecked(&bytes[..]);
        assert_eq!(p.total_len(), 1500);
        assert!(p.verify_checksum());
        assert_eq!(Packet::new_checked(&bytes[..]), Err(Error::Truncated));
    }

    #[test]
    fn test_setters() {
        let mut bytes = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut bytes[..]).unwrap();
        p.set_tos(0x02);
        p.set_ident(0xbeef);
        p.set_flags_frag(false, true, 1480);
        p.set_ttl(3);
        p.set_protocol(PROTO_IPIP);
        p.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        p.set_dst_addr(Ipv4Addr::new(198, 51, 100, 7));
        p.set_total_len(22);
        p.fill_checksum();
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.tos(), 0x02);
        assert_eq!(p.ecn(), ecn::ECT_0);
        assert_eq!(p.ident(), 0xbeef);
        assert!(!p.dont_frag() && p.more_frags());
        assert_eq!(p.frag_offset(), 1480);
        assert!(p.is_fragment());
        assert_eq!(p.ttl(), 3);
        assert_eq!(p.protocol(), PROTO_IPIP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..2]);
        assert!(p.verify_checksum());
        // The offset's low 3 bits cannot be represented and are dropped.
        let mut bytes = PACKET_BYTES;
        let mut p = Packet::new_unchecked(&mut bytes[..]);
        p.set_flags_frag(true, false, 13);
        assert_eq!(
            (p.dont_frag(), p.more_frags(), p.frag_offset()),
            (true, false, 8)
        );
        p.set_flags_frag(false, false, u16::MAX);
        assert_eq!(p.frag_offset(), 0xfff8);
        assert!(!p.dont_frag() && !p.more_frags());
    }

    #[test]
    fn test_truncated() {
        for bytes in [&PACKET_BYTES[..], &OPTIONS_BYTES[..]] {
            for len in 0..bytes.len() {
                let r = Packet::new_checked(&bytes[..len]);
                assert_eq!(r, Err(Error::Truncated), "len {len}");
            }
            assert!(Packet::new_checked(bytes).is_ok());
        }
    }

    #[test]
    fn test_bad_fields() {
        let with = |f: &dyn Fn(&mut [u8])| {
            let mut b = PACKET_BYTES;
            f(&mut b);
            Packet::new_checked(&b[..]).map(|_| ())
        };
        assert_eq!(with(&|b| b[0] = 0x65), Err(Error::BadVersion));
        assert_eq!(with(&|b| b[0] = 0x05), Err(Error::BadVersion));
        assert_eq!(with(&|b| b[0] = 0x44), Err(Error::BadHeaderLen));
        assert_eq!(with(&|b| b[0] = 0x40), Err(Error::BadHeaderLen));
        // IHL 15 = 60 bytes, more than the 24-byte buffer.
        assert_eq!(with(&|b| b[0] = 0x4f), Err(Error::Truncated));
        // Total length smaller than the header, or zero.
        assert_eq!(
            with(&|b| b[2..4].copy_from_slice(&19u16.to_be_bytes())),
            Err(Error::BadLength)
        );
        assert_eq!(with(&|b| b[2..4].fill(0)), Err(Error::BadLength));
        // Total length exactly the header: an empty payload is fine.
        assert_eq!(
            with(&|b| b[2..4].copy_from_slice(&20u16.to_be_bytes())),
            Ok(())
        );
        // An IHL-6 header whose total length ends inside its options.
        let mut b = OPTIONS_BYTES;
        b[2..4].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]), Err(Error::BadLength));
    }

    #[test]
    fn test_overlong() {
        // total_len claims more than the buffer holds.
        for total in [25u16, 1500, u16::MAX] {
            let mut b = PACKET_BYTES;
            b[2..4].copy_from_slice(&total.to_be_bytes());
            assert_eq!(
                Packet::new_checked(&b[..]),
                Err(Error::Truncated),
                "total {total}"
            );
        }
        // A buffer longer than total_len (Ethernet padding) is fine, and the
        // padding is not payload.
        let mut padded = [0u8; 46];
        padded[..24].copy_from_slice(&PACKET_BYTES);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..]);
        let mut p = Packet::new_checked(&mut padded[..]).unwrap();
        assert_eq!(p.payload_mut().len(), 4);
    }

    #[test]
    fn test_options() {
        let p = Packet::new_checked(&OPTIONS_BYTES[..]).unwrap();
        assert!(p.has_options());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.header_bytes(), &OPTIONS_BYTES[..24]);
        assert_eq!(p.payload(), &PAYLOAD_BYTES[..]);
        assert!(p.verify_checksum());
        // Options are skipped: the Repr is the option-less equivalent.
        assert_eq!(Repr::parse(&p), Ok(repr()));
        // fill_checksum covers the options.
        let mut b = OPTIONS_BYTES;
        b[10..12].fill(0);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        assert_eq!(b, OPTIONS_BYTES);
    }

    #[test]
    fn test_parse_rejects() {
        let mut b = PACKET_BYTES;
        b[11] ^= 1;
        let p = Packet::new_checked(&b[..]).unwrap();
        assert!(!p.verify_checksum());
        assert_eq!(Repr::parse(&p), Err(Error::BadChecksum));
        for (mf, offset) in [(true, 0), (false, 8), (true, 1480)] {
            let mut b = PACKET_BYTES;
            let mut p = Packet::new_unchecked(&mut b[..]);
            p.set_flags_frag(false, mf, offset);
            p.fill_checksum();
            let p = Packet::new_checked(&b[..]).unwrap();
            assert!(p.is_fragment());
            assert_eq!(Repr::parse(&p), Err(Error::Fragmented));
        }
    }

    #[test]
    fn test_decrement_ttl() {
        let mut rng = XorShift::new(64);
        for _ in 0..2000 {
            let mut b = PACKET_BYTES;
            rng.fill(&mut b[1..20]);
            b[2..4].copy_from_slice(&24u16.to_be_bytes());
            b[8] = b[8].max(1);
            let mut p = Packet::new_checked(&mut b[..]).unwrap();
            p.fill_checksum();
            let ttl = p.ttl();
            p.decrement_ttl();
            assert_eq!(p.ttl(), ttl - 1);
            let incremental = p.checksum();
            p.fill_checksum();
            assert_eq!(incremental, p.checksum(), "ttl {ttl}");
        }
        // Down to 0 from the static packet, step by step.
        let mut b = PACKET_BYTES;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        for ttl in (0..64).rev() {
            p.decrement_ttl();
            assert_eq!(p.ttl(), ttl);
            assert!(p.verify_checksum());
        }
    }

    #[test]
    fn test_set_ecn_incremental() {
        for from in 0..4 {
            for to in 0..8 {
                let mut b = PACKET_BYTES;
                let mut p = Packet::new_checked(&mut b[..]).unwrap();
                p.set_tos((46 << 2) | from);
                p.fill_checksum();
                p.set_ecn_incremental(to);
                assert_eq!(p.ecn(), to & 0b11);
                assert_eq!(p.dscp(), 46);
                assert_eq!(p.version(), 4);
                assert_eq!(p.header_len(), 20);
                let incremental = p.checksum();
                p.fill_checksum();
                assert_eq!(incremental, p.checksum(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn test_emit_saturates_total_len() {
        let mut b = [0u8; 20];
        for (payload_len, total) in [
            (MAX_PAYLOAD_LEN, 65535),
            (MAX_PAYLOAD_LEN + 1, 65535),
            (usize::MAX, 65535),
        ] {
            let r = Repr {
                payload_len,
                ..repr()
            };
            assert_eq!(r.total_len(), total);
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            assert_eq!(Packet::new_unchecked(&b[..]).total_len(), total);
        }
    }

    /// A random header etherparse can represent, with options and fragment
    /// fields.
    fn random_etherparse_header(rng: &mut XorShift) -> etherparse::Ipv4Header {
        let mut h = etherparse::Ipv4Header::new(
            0,
            rng.next_u8(),
            etherparse::IpNumber(rng.next_u8()),
            rng.next_u64().to_be_bytes()[..4].try_into().unwrap(),
            rng.next_u64().to_be_bytes()[..4].try_into().unwrap(),
        )
        .unwrap();
        h.dscp = etherparse::IpDscp::try_new(rng.next_u8() & 0x3f).unwrap();
        h.ecn = etherparse::IpEcn::try_new(rng.next_u8() & 0x3).unwrap();
        h.identification = rng.next_u16();
        h.dont_fragment = rng.next_u8() & 1 == 1;
        h.more_fragments = rng.next_u8() & 1 == 1;
        h.fragment_offset = etherparse::IpFragOffset::try_new(rng.next_u16() & 0x1fff).unwrap();
        let options = [1u8; 40];
        h.options = options[..4 * rng.below(11)].try_into().unwrap();
        h.set_payload_len(rng.below(1400)).unwrap();
        h.header_checksum = h.calc_header_checksum();
        h
    }

    #[test]
    fn cross_check_etherparse_parse() {
        let mut rng = XorShift::new(0xe7e7);
        for _ in 0..500 {
            let h = random_etherparse_header(&mut rng);
            let payload_len = usize::from(h.payload_len().unwrap());
            let mut bytes = h.to_bytes().to_vec();
            bytes.extend((0..payload_len).map(|i| i as u8));
            let theirs = etherparse::Ipv4HeaderSlice::from_slice(&bytes).unwrap();
            let p = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(p.version(), theirs.version());
            assert_eq!(p.header_len(), usize::from(theirs.ihl()) * 4);
            assert_eq!(p.dscp(), theirs.dcp().value());
            assert_eq!(p.ecn(), theirs.ecn().value());
            assert_eq!(p.total_len(), theirs.total_len());
            assert_eq!(p.ident(), theirs.identification());
            assert_eq!(p.dont_frag(), theirs.dont_fragment());
            assert_eq!(p.more_frags(), theirs.more_fragments());
            assert_eq!(p.frag_offset(), theirs.fragments_offset().value() * 8);
            assert_eq!(p.is_fragment(), theirs.is_fragmenting_payload());
            assert_eq!(p.ttl(), theirs.ttl());
            assert_eq!(p.protocol(), theirs.protocol().0);
            assert_eq!(p.checksum(), theirs.header_checksum());
            assert_eq!(p.src_addr(), theirs.source_addr());
            assert_eq!(p.dst_addr(), theirs.destination_addr());
            assert_eq!(p.has_options(), !theirs.options().is_empty());
            assert_eq!(p.header_bytes(), theirs.slice());
            assert_eq!(p.payload().len(), payload_len);
            assert!(p.verify_checksum());

            // Our incremental TTL update agrees with etherparse's checksum.
            if p.ttl() > 0 {
                let mut copy = bytes.clone();
                let mut p = Packet::new_checked(&mut copy[..]).unwrap();
                p.decrement_ttl();
                let mut theirs = h.clone();
                theirs.time_to_live -= 1;
                assert_eq!(p.checksum(), theirs.calc_header_checksum());
            }
        }
    }

    #[test]
    fn cross_check_etherparse_emit() {
        let mut rng = XorShift::new(0x4545);
        for _ in 0..500 {
            let r = Repr {
                src_addr: Ipv4Addr::from(rng.next_u64() as u32),
                dst_addr: Ipv4Addr::from(rng.next_u64() as u32),
                protocol: rng.next_u8(),
                ttl: rng.next_u8(),
                tos: rng.next_u8(),
                dont_frag: rng.next_u8() & 1 == 1,
                ident: rng.next_u16(),
                payload_len: rng.below(1480),
            };
            let mut bytes = vec![0xa5u8; r.buffer_len() + r.payload_len];
            r.emit(&mut Packet::new_unchecked(&mut bytes[..]));
            let (h, rest) = etherparse::Ipv4Header::from_slice(&bytes).unwrap();
            assert_eq!(h.source, r.src_addr.octets());
            assert_eq!(h.destination, r.dst_addr.octets());
            assert_eq!(h.protocol.0, r.protocol);
            assert_eq!(h.time_to_live, r.ttl);
            assert_eq!((h.dscp.value() << 2) | h.ecn.value(), r.tos);
            assert_eq!(h.dont_fragment, r.dont_frag);
            assert!(!h.more_fragments);
            assert_eq!(h.fragment_offset.value(), 0);
            assert_eq!(h.identification, r.ident);
            assert!(h.options.is_empty());
            assert_eq!(rest.len(), r.payload_len);
            assert_eq!(h.header_checksum, h.calc_header_checksum());
            let p = Packet::new_checked(&bytes[..]).unwrap();
            assert_eq!(Repr::parse(&p), Ok(r));
        }
    }
}
