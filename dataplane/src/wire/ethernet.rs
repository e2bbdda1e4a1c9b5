//! Ethernet II frames (no FCS: AF_XDP frames do not carry one).
//!
//! 802.1Q / 802.1ad tags are not parsed: a tagged frame reports the tag's
//! EtherType ([`ethertype::VLAN`], [`ethertype::QINQ`]) and the caller
//! decides (RFC 7348: decapsulated frames with a VLAN tag are discarded).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Error, Field, read_u16, write_u16};

/// Length of the Ethernet II header: destination, source, EtherType.
pub const HEADER_LEN: usize = 14;

/// EtherType values the gateway looks at.
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service tag (QinQ).
    pub const QINQ: u16 = 0x88a8;
    pub const IPV6: u16 = 0x86dd;
}

mod field {
    use super::Field;
    pub const DST_ADDR: Field = 0..6;
    pub const SRC_ADDR: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: core::ops::RangeFrom<usize> = 14..;
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// The address from a slice of exactly 6 bytes (None otherwise).
    #[inline]
    pub fn from_bytes(bytes: &[u8]) -> Option<MacAddr> {
        bytes.try_into().ok().map(MacAddr)
    }

    #[inline]
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// Group bit (I/G, the low bit of the first octet) set: multicast or
    /// broadcast.
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// An individual (unicast) address: the group bit is clear.
    #[inline]
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts
                .next()
                .ok_or_else(|| format!("invalid MAC address {s:?}: expected 6 octets"))?;
            // Exactly two hex digits (from_str_radix alone would take "+2").
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("invalid MAC address {s:?}: octet {part:?}"));
            }
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("invalid MAC address {s:?}: octet {part:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("invalid MAC address {s:?}: expected 6 octets"));
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[inline(always)]
fn read_mac(data: &[u8], field: Field) -> MacAddr {
    let b = &data[field];
    MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// A view of an Ethernet II frame over a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without checks (see the contract in [`crate::wire`]).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Frame<T> {
        Frame { buffer }
    }

    /// Wraps a buffer, checking that the header fits.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Frame<T>, Error> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks the buffer holds the 14-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        // Every accessor reads inside the fixed header. No minimum frame size
        // (60 bytes) is enforced: veth and AF_XDP deliver unpadded frames.
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn dst_addr(&self) -> MacAddr {
        read_mac(self.buffer.as_ref(), field::DST_ADDR)
    }

    #[inline]
    pub fn src_addr(&self) -> MacAddr {
        read_mac(self.buffer.as_ref(), field::SRC_ADDR)
    }

    /// The EtherType (a tag's TPID for tagged frames; see [`ethertype`]).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// The whole frame (header and payload).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Frame<&'a T> {
    /// Everything after the header (including any Ethernet padding).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.buffer.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.0);
    }

    #[inline]
    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE, value);
    }

    /// Everything after the header, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::PAYLOAD]
    }
}

/// A parsed Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_addr: MacAddr,
    pub dst_addr: MacAddr,
    pub ethertype: u16,
}

impl Repr {
    /// Reads the header of a checked frame. Cannot fail: any 14 bytes are a
    /// valid Ethernet II header.
    #[inline]
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &Frame<&T>) -> Repr {
        Repr {
            src_addr: frame.src_addr(),
            dst_addr: frame.dst_addr(),
            ethertype: frame.ethertype(),
        }
    }

    /// Bytes `emit` writes: the 14-byte header.
    #[inline]
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first 14 bytes of `frame`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst_addr);
        frame.set_src_addr(self.src_addr);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // dst 02:0b:00:00:00:01, src 02:0f:00:00:00:01, IPv4, 4 payload bytes.
    static FRAME_BYTES: [u8; 18] = [
        0x02, 0x0b, 0x00, 0x00, 0x00, 0x01, 0x02, 0x0f, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0xaa,
        0xbb, 0xcc, 0xdd,
    ];
    static PAYLOAD_BYTES: [u8; 4] = [0xaa, 0xbb, 0xcc, 0xdd];
    const DST: MacAddr = MacAddr([0x02, 0x0b, 0, 0, 0, 1]);
    const SRC: MacAddr = MacAddr([0x02, 0x0f, 0, 0, 0, 1]);

    #[test]
    fn test_deconstruct() {
        let frame = Frame::new_checked(&FRAME_BYTES[..]).unwrap();
        assert_eq!(frame.dst_addr(), DST);
        assert_eq!(frame.src_addr(), SRC);
        assert_eq!(frame.ethertype(), ethertype::IPV4);
        assert_eq!(frame.payload(), &PAYLOAD_BYTES[..]);
        assert_eq!(
            Repr::parse(&frame),
            Repr {
                src_addr: SRC,
                dst_addr: DST,
                ethertype: ethertype::IPV4
            }
        );
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5u8; 18];
        let repr = Repr {
            src_addr: SRC,
            dst_addr: DST,
            ethertype: ethertype::IPV4,
        };
        assert_eq!(repr.buffer_len(), HEADER_LEN);
        let mut frame = Frame::new_unchecked(&mut bytes[..]);
        repr.emit(&mut frame);
        frame.payload_mut().copy_from_slice(&PAYLOAD_BYTES);
        assert_eq!(bytes, FRAME_BYTES);
    }

    #[test]
    fn test_setters() {
        let mut bytes = FRAME_BYTES;
        let mut frame = Frame::new_checked(&mut bytes[..]).unwrap();
        frame.set_dst_addr(MacAddr::BROADCAST);
        frame.set_src_addr(DST);
        frame.set_ethertype(ethertype::ARP);
        let frame = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(frame.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(frame.src_addr(), DST);
        assert_eq!(frame.ethertype(), 0x0806);
        assert_eq!(frame.payload(), &PAYLOAD_BYTES[..]);
    }

    #[test]
    fn test_truncated() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                Frame::new_checked(&FRAME_BYTES[..len]),
                Err(Error::Truncated),
                "len {len}"
            );
        }
        // The bare header is a frame with an empty payload.
        let frame = Frame::new_checked(&FRAME_BYTES[..HEADER_LEN]).unwrap();
        assert!(frame.payload().is_empty());
        assert!(Frame::new_checked(&FRAME_BYTES[..]).is_ok());
    }

    #[test]
    fn mac_kinds() {
        assert!(MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::BROADCAST.is_unicast());
        let mcast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
        assert!(mcast.is_multicast() && !mcast.is_broadcast() && !mcast.is_unicast());
        assert!(DST.is_unicast() && !DST.is_multicast() && !DST.is_broadcast());
        assert!(!MacAddr([0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]).is_broadcast());
        assert_eq!(MacAddr::from_bytes(&FRAME_BYTES[..6]), Some(DST));
        assert_eq!(MacAddr::from_bytes(&FRAME_BYTES[..5]), None);
        assert_eq!(DST.as_bytes(), &[0x02, 0x0b, 0, 0, 0, 1]);
    }

    #[test]
    fn mac_parse() {
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:zz".parse::<MacAddr>().is_err());
        // from_str_radix alone accepts a sign (found by the fuzzer).
        assert!("+2:00:00:00:00:01".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:-1".parse::<MacAddr>().is_err());
        assert!("2:00:00:00:00:000".parse::<MacAddr>().is_err());
        assert_eq!(
            "0A:0b:00:00:00:ff".parse::<MacAddr>().unwrap().to_string(),
            "0a:0b:00:00:00:ff"
        );
        assert_eq!(format!("{:?}", MacAddr::BROADCAST), "ff:ff:ff:ff:ff:ff");
    }

    #[test]
    fn mac_serde_round_trip() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct T {
            mac: MacAddr,
        }
        let t = T { mac: SRC };
        let text = toml::to_string(&t).unwrap();
        assert_eq!(text.trim(), r#"mac = "02:0f:00:00:00:01""#);
        assert_eq!(toml::from_str::<T>(&text).unwrap(), t);
        assert!(toml::from_str::<T>(r#"mac = "02:0f""#).is_err());
    }

    #[test]
    fn cross_check_etherparse() {
        let builder = etherparse::PacketBuilder::ethernet2(SRC.0, DST.0)
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1234, 8472);
        let mut bytes = Vec::new();
        builder.write(&mut bytes, &[1, 2, 3]).unwrap();
        let theirs = etherparse::Ethernet2Slice::from_slice_without_fcs(&bytes).unwrap();
        let ours = Frame::new_checked(&bytes[..]).unwrap();
        assert_eq!(ours.dst_addr().0, theirs.destination());
        assert_eq!(ours.src_addr().0, theirs.source());
        assert_eq!(ours.ethertype(), theirs.ether_type().0);
        assert_eq!(ours.payload(), theirs.payload_slice());

        // And etherparse reads what we emit.
        let repr = Repr {
            src_addr: DST,
            dst_addr: MacAddr::BROADCAST,
            ethertype: ethertype::ARP,
        };
        let mut out = [0xa5u8; HEADER_LEN];
        repr.emit(&mut Frame::new_unchecked(&mut out[..]));
        let theirs = etherparse::Ethernet2Slice::from_slice_without_fcs(&out).unwrap();
        assert_eq!(theirs.destination(), [0xff; 6]);
        assert_eq!(theirs.source(), DST.0);
        assert_eq!(theirs.ether_type(), etherparse::EtherType::ARP);
    }
}
