//! ICMPv4 (RFC 792): the header of the error messages a router originates
//! (time exceeded, destination unreachable / fragmentation needed) and the
//! type check that keeps us from answering an error with an error.

use super::checksum;
use super::{Error, read_u16, write_u16};

pub const HEADER_LEN: usize = 8;

/// Type 3: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// Code 4 of type 3: fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Type 11: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Code 0 of type 11: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;
pub const TYPE_ECHO_REPLY: u8 = 0;
pub const TYPE_ECHO_REQUEST: u8 = 8;

mod field {
    use crate::wire::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    /// Unused for time exceeded; for frag-needed bytes 6..8 carry the MTU.
    pub const NEXT_HOP_MTU: Field = 6..8;
}

/// Whether an ICMP message of this type is an error (RFC 1122 §3.2.2: never
/// answer an error with an error).
pub const fn is_error(msg_type: u8) -> bool {
    matches!(msg_type, 3 | 4 | 5 | 11 | 12)
}

/// A read/write view of an ICMPv4 message.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The 8-byte header must be there.
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The next-hop MTU of a fragmentation-needed message.
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// The checksum covers the whole message.
    pub fn verify_checksum(&self) -> bool {
        checksum::fold(checksum::sum(self.buffer.as_ref())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Fills the checksum over the whole buffer (header + data).
    pub fn fill_checksum(&mut self) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM, 0);
        let ck = checksum::finish(checksum::sum(self.buffer.as_ref()));
        write_u16(self.buffer.as_mut(), field::CHECKSUM, ck);
    }
}

/// An ICMP error message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorRepr {
    /// Type 11 code 0.
    TtlExceeded,
    /// Type 3 code 4 with the next-hop MTU.
    FragNeeded { mtu: u16 },
}

impl ErrorRepr {
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 8-byte header into the start of `packet` (whose buffer
    /// holds the header followed by the quoted datagram) and fills the
    /// checksum over all of it.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        let (t, c, mtu) = match *self {
            ErrorRepr::TtlExceeded => (TYPE_TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0),
            ErrorRepr::FragNeeded { mtu } => (TYPE_DEST_UNREACHABLE, CODE_FRAG_NEEDED, mtu),
        };
        let b = packet.buffer.as_mut();
        b[field::TYPE] = t;
        b[field::CODE] = c;
        b[4..6].copy_from_slice(&[0, 0]);
        write_u16(b, field::NEXT_HOP_MTU, mtu);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Time exceeded quoting a 20-byte header + 8 bytes (from a capture).
    static TIME_EXCEEDED: [u8; 36] = [
        0x0b, 0x00, 0xf4, 0xff, 0x00, 0x00, 0x00, 0x00, // type, code, checksum, unused
        0x45, 0x00, 0x00, 0x3c, 0x12, 0x34, 0x40, 0x00, 0x01, 0x11, 0x00, 0x00, 0x0a, 0xf4, 0x00,
        0x02, 0x0a, 0xf4, 0x01, 0x02, // quoted IPv4 header (checksum zeroed for the fixture)
        0x9c, 0x40, 0x82, 0x9b, 0x00, 0x28, 0x00, 0x00, // quoted UDP header
    ];

    #[test]
    fn test_construct_and_deconstruct() {
        let mut buf = [0xa5u8; 36];
        buf[8..].copy_from_slice(&TIME_EXCEEDED[8..]);
        let mut p = Packet::new_unchecked(&mut buf[..]);
        ErrorRepr::TtlExceeded.emit(&mut p);
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.msg_type(), TYPE_TIME_EXCEEDED);
        assert_eq!(p.code(), 0);
        assert!(p.verify_checksum());
        assert_eq!(
            &buf[4..8],
            &[0, 0, 0, 0],
            "unused field zeroed over the 0xa5 fill"
        );
        // Cross-check the checksum with etherparse.
        let (hdr, _) = etherparse::Icmpv4Header::from_slice(&buf).unwrap();
        assert_eq!(hdr.checksum, hdr.icmp_type.calc_checksum(&buf[8..]));
    }

    #[test]
    fn frag_needed_carries_mtu() {
        let mut buf = vec![0xa5u8; 36];
        buf[8..].copy_from_slice(&TIME_EXCEEDED[8..]);
        ErrorRepr::FragNeeded { mtu: 1450 }.emit(&mut Packet::new_unchecked(&mut buf[..]));
        let p = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!((p.msg_type(), p.code(), p.next_hop_mtu()), (3, 4, 1450));
        assert!(p.verify_checksum());
        let (hdr, _) = etherparse::Icmpv4Header::from_slice(&buf).unwrap();
        assert!(matches!(
            hdr.icmp_type,
            etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: 1450
                }
            )
        ));
    }

    #[test]
    fn truncation() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Packet::new_checked(&TIME_EXCEEDED[..len]).unwrap_err(),
                Error::Truncated
            );
        }
        assert!(Packet::new_checked(&TIME_EXCEEDED[..HEADER_LEN]).is_ok());
    }

    #[test]
    fn error_types() {
        assert!(is_error(TYPE_TIME_EXCEEDED) && is_error(TYPE_DEST_UNREACHABLE));
        assert!(!is_error(TYPE_ECHO_REQUEST) && !is_error(TYPE_ECHO_REPLY));
    }
}
