//! Typed views over the packet headers the gateway reads and writes.
//!
//! One file per header, in the style of smoltcp's `wire` module: a view
//! (`Packet`, `Frame` for Ethernet, `Header` for VXLAN) over any buffer
//! `T: AsRef<[u8]>`, getters on `AsRef<[u8]>`, setters on `AsMut<[u8]>` (so the
//! same type serves RX slices and TX buffers), and a `Repr` (a parsed,
//! owned summary of the header) with `parse`, `emit` and `buffer_len`.
//!
//! # The no-panic contract
//!
//! These views are the per-packet path of the gateway: they never allocate,
//! and they never panic on input that went through the checked constructor.
//!
//! - **Untrusted input always goes through `new_checked`.** It validates every
//!   length the accessors rely on (and the few field values that make the
//!   header meaningless, such as an IPv4 version other than 4) and returns an
//!   [`Error`] instead of a view when they do not hold.
//! - **After `new_checked` succeeds, no accessor panics**: every getter, every
//!   fixed-size setter, `payload()`/`payload_mut()` and the checksum helpers
//!   stay inside the ranges `new_checked` checked. The one way to break this
//!   is to use a setter to write a *length* field (IPv4 total length, UDP
//!   length) with a value the buffer cannot hold; call `check_len` again
//!   before reading the payload of a view whose lengths you rewrote.
//! - **`new_unchecked` is for buffers the caller sized itself** (TX buffers,
//!   tests). Accessors on an unchecked view may panic if the buffer is short.
//! - **Emitting a `Repr` never panics** into a view over a buffer of at least
//!   `Repr::buffer_len()` bytes, e.g.
//!   `repr.emit(&mut Packet::new_unchecked(&mut buf[..repr.buffer_len()]))`.
//!   `emit` writes the header only; the caller writes the payload.
//!
//! Not supported, on purpose: IPv6, 802.1Q/802.1ad tags (the tag's
//! EtherType is reported and the caller decides), IPv4 options on emit
//! (they are read and skipped on parse), IPv4 reassembly, Ethernet FCS
//! (AF_XDP frames carry none).
//!
//! Big-endian fields are read with `from_be_bytes` on fixed ranges, which
//! the optimiser reduces to a load and a byte swap.

use std::fmt;

pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ipip;
pub mod ipv4;
pub mod udp;
pub mod vxlan;

/// Why a buffer was not accepted as a header (or a value as a `Repr`).
///
/// Every variant is a distinct drop reason; its doc line is its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// buffer shorter than the header or than its length fields claim
    Truncated,
    /// a field holds a value the format does not allow
    Malformed,
    /// IP version is not 4
    BadVersion,
    /// IPv4 header length (IHL) below the 20-byte minimum
    BadHeaderLen,
    /// length field smaller than the header it covers
    BadLength,
    /// header checksum does not verify
    BadChecksum,
    /// IPv4 fragment (not representable: the gateway does not reassemble)
    Fragmented,
    /// VXLAN I flag (valid VNI) not set
    BadFlags,
}

impl Error {
    /// The error's message (the same text as the variant's documentation).
    pub const fn message(self) -> &'static str {
        match self {
            Error::Truncated => "buffer shorter than the header or than its length fields claim",
            Error::Malformed => "a field holds a value the format does not allow",
            Error::BadVersion => "IP version is not 4",
            Error::BadHeaderLen => "IPv4 header length (IHL) below the 20-byte minimum",
            Error::BadLength => "length field smaller than the header it covers",
            Error::BadChecksum => "header checksum does not verify",
            Error::Fragmented => {
                "IPv4 fragment (not representable: the gateway does not reassemble)"
            }
            Error::BadFlags => "VXLAN I flag (valid VNI) not set",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// Byte range of a fixed-size field inside a header.
type Field = core::ops::Range<usize>;

/// Reads the big-endian `u16` at `field` (a 2-byte range).
#[inline(always)]
fn read_u16(data: &[u8], field: Field) -> u16 {
    let b = &data[field];
    u16::from_be_bytes([b[0], b[1]])
}

/// Writes `value` big-endian at `field` (a 2-byte range).
#[inline(always)]
fn write_u16(data: &mut [u8], field: Field, value: u16) {
    data[field].copy_from_slice(&value.to_be_bytes());
}

/// Reads the 4 bytes at `field` (a 4-byte range).
#[inline(always)]
fn read_4(data: &[u8], field: Field) -> [u8; 4] {
    let b = &data[field];
    [b[0], b[1], b[2], b[3]]
}

#[cfg(test)]
pub(crate) mod test_util {
    /// xorshift64*: a tiny deterministic generator for fuzz-style tests.
    #[derive(Debug)]
    pub struct XorShift(u64);

    impl XorShift {
        pub fn new(seed: u64) -> Self {
            XorShift(seed | 1)
        }

        pub fn next_u64(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        pub fn next_u16(&mut self) -> u16 {
            (self.next_u64() >> 48) as u16
        }

        pub fn next_u8(&mut self) -> u8 {
            (self.next_u64() >> 56) as u8
        }

        /// Uniform-ish in `0..n` (n > 0).
        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }

        pub fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next_u8();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::XorShift;
    use super::*;

    #[test]
    fn error_messages_are_distinct_and_displayed() {
        let all = [
            Error::Truncated,
            Error::Malformed,
            Error::BadVersion,
            Error::BadHeaderLen,
            Error::BadLength,
            Error::BadChecksum,
            Error::Fragmented,
            Error::BadFlags,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            assert_eq!(e.to_string(), e.message());
            assert!(seen.insert(e.message()), "duplicate message for {e:?}");
        }
        let boxed: Box<dyn std::error::Error> = Box::new(Error::Truncated);
        assert!(boxed.to_string().contains("shorter"));
    }

    /// Calls every read accessor of every view (and the in-place mutators on a
    /// copy) for a buffer that passed `new_checked`.
    fn exercise(buf: &[u8]) -> [usize; 4] {
        let mut accepted = [0; 4];
        if let Ok(f) = ethernet::Frame::new_checked(buf) {
            accepted[0] += 1;
            let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
            let _ = ethernet::Repr::parse(&f);
            let mut copy = buf.to_vec();
            let mut f = ethernet::Frame::new_checked(&mut copy[..]).unwrap();
            f.set_dst_addr(ethernet::MacAddr::BROADCAST);
            f.payload_mut().fill(0);
        }
        if let Ok(p) = ipv4::Packet::new_checked(buf) {
            accepted[1] += 1;
            let _ = (
                p.version(),
                p.header_len(),
                p.tos(),
                p.dscp(),
                p.ecn(),
                p.total_len(),
            );
            let _ = (
                p.ident(),
                p.dont_frag(),
                p.more_frags(),
                p.frag_offset(),
                p.is_fragment(),
            );
            let _ = (
                p.ttl(),
                p.protocol(),
                p.checksum(),
                p.src_addr(),
                p.dst_addr(),
            );
            let _ = (
                p.src_addr_u32(),
                p.dst_addr_u32(),
                p.src_addr_bytes(),
                p.dst_addr_bytes(),
            );
            let _ = (
                p.has_options(),
                p.header_bytes().len(),
                p.payload().len(),
                p.verify_checksum(),
            );
            let _ = ipv4::Repr::parse(&p);
            let _ = ipip::outer_repr(&p, [1, 1, 1, 1].into(), [2, 2, 2, 2].into(), 64);
            let mut copy = buf.to_vec();
            let mut p = ipv4::Packet::new_checked(&mut copy[..]).unwrap();
            if p.ttl() > 0 {
                p.decrement_ttl();
            }
            p.set_ecn_incremental(3);
            p.fill_checksum();
            assert!(p.verify_checksum());
            p.payload_mut().fill(0);
        }
        if let Ok(u) = udp::Packet::new_checked(buf) {
            accepted[2] += 1;
            let _ = (
                u.src_port(),
                u.dst_port(),
                u.len(),
                u.checksum(),
                u.payload().len(),
            );
            let (a, b) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
            let _ = (u.verify_checksum(a, b), udp::Repr::parse(&u));
            let mut copy = buf.to_vec();
            let mut u = udp::Packet::new_checked(&mut copy[..]).unwrap();
            u.fill_checksum(a, b);
            assert!(u.verify_checksum(a, b));
            u.payload_mut().fill(0);
        }
        if let Ok(h) = vxlan::Header::new_checked(buf) {
            accepted[3] += 1;
            let _ = (h.flags(), h.has_vni_flag(), h.vni(), h.reserved_bits_set());
            let _ = (vxlan::Repr::parse(&h), h.payload().len());
        }
        accepted
    }

    #[test]
    fn random_byte_soup_never_panics() {
        let mut rng = XorShift::new(0x0e7a_9a55);
        let mut accepted = [0usize; 4];
        for round in 0..3000 {
            let mut buf = vec![0u8; 1 + rng.below(120)];
            rng.fill(&mut buf);
            // Half the rounds look like IPv4 so the deeper checks get reached:
            // version 4, a random IHL, and a total length near the buffer size.
            let ipv4_like = round % 2 == 1 && buf.len() >= 4;
            if ipv4_like {
                buf[0] = 0x40 | (buf[0] & 0x0f);
                let total = (buf.len() as u16).saturating_sub(rng.below(8) as u16);
                buf[2..4].copy_from_slice(&total.to_be_bytes());
                // The UDP length field sits at the same offset (4..6) as the
                // IPv4 identification: make it plausible too.
                if buf.len() >= 6 {
                    let ulen = (buf.len() as u16).saturating_sub(rng.below(8) as u16);
                    buf[4..6].copy_from_slice(&ulen.to_be_bytes());
                }
            }
            for len in 0..=buf.len() {
                for (total, n) in accepted.iter_mut().zip(exercise(&buf[..len])) {
                    *total += n;
                }
            }
        }
        // The soup must reach every view's accept path, not only the rejects.
        assert!(
            accepted.iter().all(|&n| n > 500),
            "accepted per view: {accepted:?}"
        );
    }
}
