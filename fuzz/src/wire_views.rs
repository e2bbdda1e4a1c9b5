//! `wire_views`: every `new_checked` and every accessor of
//! `overpass_dataplane::wire` over arbitrary bytes, plus the properties the
//! module documents.
//!
//! Input: `params(16) buffer(rest)`. The 16 parameter bytes give the values
//! fed to setters and checksum helpers (two addresses, a TTL, a TOS, an ECN
//! codepoint, flags, an offset, a VNI); the buffer is offered to every view.
//!
//! Checked, per view that accepts the buffer:
//! - no getter, `payload()`, `payload_mut()`, checksum helper or fixed-size
//!   setter panics (the no-panic contract of `overpass_dataplane::wire`);
//! - lengths: `payload()` ends at the length field (IPv4 total length, UDP
//!   length), `header_bytes()` is IHL × 4;
//! - `Repr::parse` → `emit` reproduces the header (IPv4: every field but the
//!   checksum when there are no options and the reserved flag is clear; the
//!   emitted checksum verifies);
//! - `fill_checksum` makes `verify_checksum` true (IPv4, UDP);
//! - `decrement_ttl` and `set_ecn_incremental` keep a valid checksum valid,
//!   and equal to a full recomputation when the original was canonical;
//! - setters read back through their getters;
//! - VXLAN: `Repr::parse` succeeds exactly when the I flag is set; `emit`
//!   writes flags 0x08, zero reserved fields and the VNI; `Repr::new`
//!   accepts exactly 24-bit VNIs;
//! - `checksum::{sum, combine, fold, finish, update_u16,
//!   ipv4_pseudo_header}` agree with the independent RFC 1071 reference;
//! - `MacAddr`: `from_bytes` takes exactly 6 bytes; `Display` → `FromStr`
//!   round-trips; a string `FromStr` accepts is the canonical spelling of
//!   the address it yields (up to letter case).

use std::net::Ipv4Addr;

use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_dataplane::wire::{checksum, ethernet, ipip, ipv4, udp, vxlan};

use crate::net::{Reader, ones_sum};

/// Entry point of the fuzz target.
pub fn run(data: &[u8]) {
    let mut r = Reader::new(data);
    let a = Ipv4Addr::from(r.u32());
    let b = Ipv4Addr::from(r.u32());
    let ttl = r.u8();
    let tos = r.u8();
    let ecn = r.u8();
    let flags = r.u8();
    let offset = r.u16();
    let vni = r.u16();
    let vni = u32::from(vni) | u32::from(flags & 0x0f) << 20 | u32::from(flags >> 7) << 24;
    let buf = r.rest(usize::MAX);

    ethernet_view(buf);
    ipv4_view(buf, a, b, ttl, tos, ecn, flags, offset);
    udp_view(buf, a, b);
    vxlan_view(buf, vni);
    checksums(buf, offset);
    mac_addr(buf);
}

fn ethernet_view(buf: &[u8]) {
    let Ok(f) = ethernet::Frame::new_checked(buf) else {
        assert!(
            buf.len() < ethernet::HEADER_LEN,
            "Ethernet refused {} bytes",
            buf.len()
        );
        return;
    };
    let (dst, src, et) = (f.dst_addr(), f.src_addr(), f.ethertype());
    assert_eq!(f.payload().len(), buf.len() - ethernet::HEADER_LEN);
    assert_eq!(f.as_bytes(), buf);
    let repr = ethernet::Repr::parse(&f);
    assert_eq!(
        (repr.dst_addr, repr.src_addr, repr.ethertype),
        (dst, src, et)
    );
    let mut out = [0u8; ethernet::HEADER_LEN];
    assert_eq!(repr.buffer_len(), out.len());
    repr.emit(&mut ethernet::Frame::new_unchecked(&mut out[..]));
    assert_eq!(
        out[..],
        buf[..ethernet::HEADER_LEN],
        "Ethernet parse → emit"
    );
    let mut copy = buf.to_vec();
    let mut f = ethernet::Frame::new_checked(&mut copy[..]).unwrap();
    f.set_dst_addr(src);
    f.set_src_addr(dst);
    f.set_ethertype(!et);
    f.payload_mut().fill(0);
    assert_eq!((f.dst_addr(), f.src_addr(), f.ethertype()), (src, dst, !et));
}

#[allow(clippy::too_many_arguments)]
fn ipv4_view(buf: &[u8], a: Ipv4Addr, b: Ipv4Addr, ttl: u8, tos: u8, ecn: u8, flags: u8, off: u16) {
    let Ok(p) = ipv4::Packet::new_checked(buf) else {
        return;
    };
    let hl = p.header_len();
    let total = usize::from(p.total_len());
    assert_eq!(p.version(), 4);
    assert!(hl >= ipv4::MIN_HEADER_LEN && hl <= total && total <= buf.len());
    assert_eq!(p.header_bytes(), &buf[..hl]);
    assert_eq!(p.payload(), &buf[hl..total]);
    assert_eq!(p.has_options(), hl > ipv4::MIN_HEADER_LEN);
    assert_eq!(p.tos(), buf[1]);
    assert_eq!((p.dscp(), p.ecn()), (buf[1] >> 2, buf[1] & 3));
    assert_eq!(p.ident(), u16::from_be_bytes([buf[4], buf[5]]));
    let ff = u16::from_be_bytes([buf[6], buf[7]]);
    assert_eq!(p.dont_frag(), ff & 0x4000 != 0);
    assert_eq!(p.more_frags(), ff & 0x2000 != 0);
    assert_eq!(p.frag_offset(), (ff & 0x1fff) << 3);
    assert_eq!(p.is_fragment(), ff & 0x3fff != 0);
    assert_eq!((p.ttl(), p.protocol()), (buf[8], buf[9]));
    assert_eq!(p.checksum(), u16::from_be_bytes([buf[10], buf[11]]));
    assert_eq!(p.src_addr_bytes(), buf[12..16]);
    assert_eq!(p.dst_addr_bytes(), buf[16..20]);
    assert_eq!(u32::from(p.src_addr()), p.src_addr_u32());
    assert_eq!(u32::from(p.dst_addr()), p.dst_addr_u32());
    let valid = p.verify_checksum();
    assert_eq!(
        valid,
        ones_sum(&buf[..hl], 0) == 0xffff,
        "verify_checksum vs reference"
    );
    let canonical = !ones_sum_without_checksum(&buf[..hl]);
    let was_canonical = p.checksum() == canonical;

    match ipv4::Repr::parse(&p) {
        Ok(repr) => {
            assert!(valid && !p.is_fragment());
            assert_eq!(repr.payload_len, total - hl);
            assert_eq!(
                usize::from(repr.total_len()),
                ipv4::MIN_HEADER_LEN + total - hl
            );
            let mut out = [0u8; ipv4::MIN_HEADER_LEN];
            repr.emit(&mut ipv4::Packet::new_unchecked(&mut out[..]));
            // Re-parse the emitted header with the payload behind it.
            let mut full = out.to_vec();
            full.extend_from_slice(&buf[hl..total]);
            let e = ipv4::Packet::new_checked(&full[..]).expect("emitted IPv4 header re-parses");
            assert!(e.verify_checksum(), "emitted IPv4 header checksum");
            assert_eq!(ipv4::Repr::parse(&e).ok(), Some(repr), "IPv4 emit → parse");
            if hl == ipv4::MIN_HEADER_LEN && ff & 0x8000 == 0 {
                let same = |i: usize| !matches!(i, 10 | 11) && out[i] != buf[i];
                if let Some(i) = (0..ipv4::MIN_HEADER_LEN).find(|&i| same(i)) {
                    panic!(
                        "IPv4 parse → emit changed byte {i}: {:#04x} → {:#04x}",
                        buf[i], out[i]
                    );
                }
            }
        }
        Err(e) => assert!(
            !valid || p.is_fragment(),
            "Repr::parse refused ({e:?}) a valid packet"
        ),
    }
    let outer = ipip::outer_repr(&p, a, b, ttl);
    assert_eq!(outer.payload_len, total);
    assert_eq!(
        (outer.tos, outer.dont_frag, outer.ident),
        (p.tos(), p.dont_frag(), p.ident())
    );
    assert_eq!((outer.src_addr, outer.dst_addr, outer.ttl), (a, b, ttl));
    assert_eq!(outer.protocol, ipv4::PROTO_IPIP);

    // In-place mutators on copies.
    let mut copy = buf.to_vec();
    let mut q = ipv4::Packet::new_checked(&mut copy[..]).unwrap();
    if q.ttl() > 0 {
        let before = q.ttl();
        q.decrement_ttl();
        assert_eq!(q.ttl(), before - 1);
        check_incremental(&q, valid, was_canonical, "decrement_ttl");
    }
    let mut copy = buf.to_vec();
    let mut q = ipv4::Packet::new_checked(&mut copy[..]).unwrap();
    q.set_ecn_incremental(ecn);
    assert_eq!(q.ecn(), ecn & 3);
    assert_eq!(q.dscp(), p.dscp());
    check_incremental(&q, valid, was_canonical, "set_ecn_incremental");

    let mut copy = buf.to_vec();
    let mut q = ipv4::Packet::new_checked(&mut copy[..]).unwrap();
    q.set_tos(tos);
    q.set_ident(off);
    q.set_ttl(ttl);
    q.set_protocol(flags);
    q.set_src_addr(a);
    q.set_dst_addr(b);
    let (df, mf) = (flags & 1 != 0, flags & 2 != 0);
    q.set_flags_frag(df, mf, off);
    assert_eq!(
        (q.tos(), q.ident(), q.ttl(), q.protocol()),
        (tos, off, ttl, flags)
    );
    assert_eq!((q.src_addr(), q.dst_addr()), (a, b));
    assert_eq!((q.dont_frag(), q.more_frags()), (df, mf));
    assert_eq!(q.frag_offset(), off & !7, "set_flags_frag offset");
    q.fill_checksum();
    assert!(q.verify_checksum(), "fill_checksum");
    let payload = q.payload_mut();
    assert_eq!(payload.len(), total - hl);
    payload.fill(0xee);
}

/// The header's ones'-complement sum with the checksum field taken as 0.
fn ones_sum_without_checksum(h: &[u8]) -> u16 {
    let mut v = h.to_vec();
    v[10] = 0;
    v[11] = 0;
    ones_sum(&v, 0)
}

fn check_incremental(q: &ipv4::Packet<&mut [u8]>, valid: bool, canonical: bool, what: &str) {
    let h = q.header_bytes();
    if valid {
        assert!(q.verify_checksum(), "{what} broke a valid checksum");
        if canonical {
            let full = !ones_sum_without_checksum(h);
            assert_eq!(
                q.checksum(),
                full,
                "{what}: incremental ≠ full recomputation"
            );
        }
    }
}

fn udp_view(buf: &[u8], a: Ipv4Addr, b: Ipv4Addr) {
    let Ok(u) = udp::Packet::new_checked(buf) else {
        return;
    };
    let len = usize::from(u.len());
    assert!(len >= udp::HEADER_LEN && len <= buf.len());
    assert_eq!(u.payload(), &buf[udp::HEADER_LEN..len]);
    let (sp, dp, ck) = (u.src_port(), u.dst_port(), u.checksum());
    assert_eq!(ck, u16::from_be_bytes([buf[6], buf[7]]));
    let v = u.verify_checksum(a, b);
    assert_eq!(
        v,
        ck == 0 || crate::net::udp_checksum_ok(a, b, &buf[..len]),
        "UDP verify vs reference"
    );
    let repr = udp::Repr::parse(&u);
    assert_eq!(
        (repr.src_port, repr.dst_port, repr.payload_len),
        (sp, dp, len - udp::HEADER_LEN)
    );
    assert_eq!(repr.len(), u.len());
    let mut out = [0xffu8; udp::HEADER_LEN];
    repr.emit(&mut udp::Packet::new_unchecked(&mut out[..]));
    assert_eq!(out[..6], buf[..6], "UDP parse → emit");
    assert_eq!(out[6..], [0, 0], "UDP emit writes checksum 0");
    let mut copy = buf.to_vec();
    let mut w = udp::Packet::new_checked(&mut copy[..]).unwrap();
    w.set_src_port(dp);
    w.set_dst_port(sp);
    assert_eq!((w.src_port(), w.dst_port()), (dp, sp));
    w.fill_checksum(a, b);
    assert_ne!(
        w.checksum(),
        0,
        "a computed UDP checksum is never sent as 0"
    );
    assert!(w.verify_checksum(a, b), "UDP fill_checksum");
    w.payload_mut().fill(0);
}

fn vxlan_view(buf: &[u8], vni: u32) {
    match vxlan::Repr::new(vni) {
        Ok(r) => assert!(vni <= vxlan::VNI_MAX && r.vni == vni),
        Err(_) => assert!(vni > vxlan::VNI_MAX),
    }
    let Ok(h) = vxlan::Header::new_checked(buf) else {
        assert!(buf.len() < vxlan::HEADER_LEN);
        return;
    };
    assert_eq!(h.flags(), buf[0]);
    assert_eq!(h.has_vni_flag(), buf[0] & 0x08 != 0);
    assert_eq!(h.vni(), u32::from_be_bytes([0, buf[4], buf[5], buf[6]]));
    let reserved = buf[0] & !0x08 != 0 || buf[1..4] != [0, 0, 0] || buf[7] != 0;
    assert_eq!(h.reserved_bits_set(), reserved);
    assert_eq!(h.payload(), &buf[vxlan::HEADER_LEN..]);
    match vxlan::Repr::parse(&h) {
        Ok(r) => {
            assert!(h.has_vni_flag());
            assert_eq!(r.vni, h.vni());
            let mut out = [0xffu8; vxlan::HEADER_LEN];
            r.emit(&mut vxlan::Header::new_unchecked(&mut out[..]));
            assert_eq!(
                out,
                [0x08, 0, 0, 0, buf[4], buf[5], buf[6], 0],
                "VXLAN emit"
            );
        }
        Err(_) => assert!(!h.has_vni_flag()),
    }
    // A VNI wider than 24 bits through the struct literal: low 24 bits only.
    let mut out = [0u8; vxlan::HEADER_LEN];
    vxlan::Repr { vni }.emit(&mut vxlan::Header::new_unchecked(&mut out[..]));
    let h2 = vxlan::Header::new_checked(&out[..]).unwrap();
    assert_eq!(h2.vni(), vni & vxlan::VNI_MAX);
    assert!(!h2.reserved_bits_set() && h2.has_vni_flag());
}

fn checksums(buf: &[u8], word: u16) {
    let s = checksum::sum(buf);
    assert_eq!(
        checksum::fold(s),
        ones_sum(buf, 0),
        "checksum::sum vs reference"
    );
    assert_eq!(checksum::finish(s), !ones_sum(buf, 0));
    // combine: split at an even point.
    let mid = (buf.len() / 2) & !1;
    let (x, y) = buf.split_at(mid);
    let c = checksum::combine(checksum::sum(x), checksum::sum(y));
    assert_eq!(checksum::fold(c), ones_sum(buf, 0), "checksum::combine");
    // Pseudo-header: source, destination, zero, protocol, length.
    if buf.len() >= 11 {
        let src = Ipv4Addr::new(buf[0], buf[1], buf[2], buf[3]);
        let dst = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
        let (proto, len) = (buf[8], u16::from_be_bytes([buf[9], buf[10]]));
        let mut ph = buf[..8].to_vec();
        ph.extend_from_slice(&[0, proto]);
        ph.extend_from_slice(&len.to_be_bytes());
        assert_eq!(
            checksum::fold(checksum::ipv4_pseudo_header(src, dst, proto, len)),
            ones_sum(&ph, 0),
            "ipv4_pseudo_header"
        );
    }
    // RFC 1624 update of one 16-bit word of an even-length block that is
    // not all zeros afterwards (the documented precondition).
    if buf.len() >= 2 {
        let mut data = buf[..buf.len() & !1].to_vec();
        let i = (usize::from(word) % (data.len() / 2)) * 2;
        let old = u16::from_be_bytes([data[i], data[i + 1]]);
        let ck = checksum::finish(checksum::sum(&data));
        data[i..i + 2].copy_from_slice(&word.to_be_bytes());
        if data.iter().any(|&x| x != 0) {
            assert_eq!(
                checksum::update_u16(ck, old, word),
                checksum::finish(checksum::sum(&data)),
                "update_u16 ≠ recomputation"
            );
        }
    }
}

fn mac_addr(buf: &[u8]) {
    for n in [5, 6, 7] {
        if buf.len() >= n {
            assert_eq!(MacAddr::from_bytes(&buf[..n]).is_some(), n == 6);
        }
    }
    if let Some(m) = buf.get(..6).and_then(MacAddr::from_bytes) {
        assert_eq!(m.is_unicast(), !m.is_multicast());
        assert_eq!(m.is_broadcast(), m.0 == [0xff; 6]);
        assert_eq!(m.as_bytes(), &m.0);
        let s = m.to_string();
        assert_eq!(s.parse::<MacAddr>(), Ok(m), "Display → FromStr");
        let _ = format!("{m:?}");
    }
    // Finding `mac-plus-sign`: `u8::from_str_radix` takes a leading '+',
    // so "+a:+b:…" parses.
    if let Ok(s) = std::str::from_utf8(buf)
        && let Ok(m) = s.parse::<MacAddr>()
        && !crate::tolerated("mac-plus-sign")
    {
        assert!(
            m.to_string().eq_ignore_ascii_case(s),
            "FromStr accepted {s:?} as {m}, which is not its spelling"
        );
    }
}
