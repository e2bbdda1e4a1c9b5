//! The ABI shared with the XDP program, mirrored from `src/bpf/abi.h`.
//!
//! # Maps
//!
//! | map           | type              | key                          | value                   | max |
//! |---------------|-------------------|------------------------------|-------------------------|-----|
//! | `ports`       | `HASH`            | `u32` ifindex                | [`PortCfg`]             | [`MAX_PORTS`] |
//! | `xsks`        | `XSKMAP`          | `u32` slot                   | AF_XDP socket fd        | [`MAX_XSKS`] |
//! | `vxlan_ports` | `HASH`            | `u16` UDP port, host order   | `u8` = 1                | [`MAX_VXLAN_PORTS`] |
//! | `counters`    | `PERCPU_ARRAY`    | `u32` [`SteerCounter`]       | `u64` per CPU           | [`COUNTER_MAX`] |
//!
//! All integers are in host byte order (the map is local to this machine), except where a
//! field is copied from a packet; none of the fields here are.
//!
//! The socket slot a frame is steered to is `PortCfg::xsk_base + rx_queue_index`, for
//! `rx_queue_index < PortCfg::xsk_count` only: an interface serving `n` RX queues owns slots
//! `xsk_base..xsk_base + n`, and the caller hands out non-overlapping ranges. A frame to
//! steer from a queue at or past `xsk_count` is passed to the kernel and counted
//! [`SteerCounter::UnservedQueue`], so it can never land in another interface's slots.
//!
//! Mirroring rules: fixed-width fields only, no implicit padding (sizes are asserted at
//! compile time), enum discriminants identical to the C enums (a test parses `abi.h`).

use std::mem::size_of;

/// Entries in the `ports` map (interfaces the program may serve).
pub const MAX_PORTS: u32 = 256;
/// Entries in the `xsks` map (AF_XDP socket slots over all interfaces and queues).
pub const MAX_XSKS: u32 = 4096;
/// Entries in the `vxlan_ports` map (distinct VXLAN UDP destination ports).
pub const MAX_VXLAN_PORTS: u32 = 16;
/// Number of [`SteerCounter`] slots (`COUNTER_MAX` in `abi.h`).
pub const COUNTER_MAX: usize = 11;

/// `XDP_PASS`: the frame continues into the kernel network stack.
pub const XDP_PASS: u32 = 2;
/// `XDP_REDIRECT`: the frame went to the AF_XDP socket in its `xsks` slot.
pub const XDP_REDIRECT: u32 = 4;

/// Value of the `ports` map (`struct port_cfg`), keyed by ifindex.
///
/// Three naturally aligned `u32`: 12 bytes, no padding.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCfg {
    /// A [`PortRole`] as `u32`, so the layout does not depend on C's enum width.
    pub role: u32,
    /// First `xsks` slot of the interface; RX queue `q` uses `xsk_base + q`.
    pub xsk_base: u32,
    /// RX queues user space serves on the interface (`0..xsk_count`). Frames to steer
    /// from other queues are passed and counted [`SteerCounter::UnservedQueue`].
    pub xsk_count: u32,
}

const _: () = assert!(size_of::<PortCfg>() == 12);

impl PortCfg {
    /// The map value as the kernel stores it (host byte order, C layout).
    pub fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..4].copy_from_slice(&self.role.to_ne_bytes());
        out[4..8].copy_from_slice(&self.xsk_base.to_ne_bytes());
        out[8..].copy_from_slice(&self.xsk_count.to_ne_bytes());
        out
    }
}

/// What an interface is for; decides which frames the program steers (`enum port_role`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortRole {
    /// NIC facing the other nodes: VXLAN (UDP to a `vxlan_ports` port) and IP-in-IP
    /// (IPv4 protocol 4) go to user space, everything else to the kernel.
    Underlay = 1,
    /// Host end of a local pod's veth: every IPv4 frame goes to user space; ARP, IPv6
    /// and the rest go to the kernel.
    Pod = 2,
}

/// Slots of the per-CPU `counters` map (`enum steer_counter`), one per steering decision.
///
/// Every frame the program sees increments exactly one slot other than
/// [`SteerCounter::NoSocket`]; a steered frame whose XSK slot is empty additionally
/// increments `NoSocket` (it then reaches the kernel with `XDP_PASS`). So
/// `steer_* - no_socket` is the number of frames user space actually received. A frame
/// that would be steered but arrived on a queue user space does not serve counts
/// [`SteerCounter::UnservedQueue`] instead of a `steer_*` slot.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SteerCounter {
    /// Underlay: IPv4/UDP to a configured VXLAN port, steered.
    SteerVxlan = 0,
    /// Underlay: IPv4 protocol 4 (IP-in-IP), steered (fragments included).
    SteerIpip = 1,
    /// Pod: any IPv4 frame, steered.
    SteerPod = 2,
    /// ARP on any role, passed: the kernel keeps resolving neighbours.
    PassArp = 3,
    /// Any other ethertype, passed: IPv6, VLAN-tagged frames, LLDP, ...
    PassNonIpv4 = 4,
    /// Underlay IPv4 that is neither IP-in-IP nor UDP to a VXLAN port, passed (SSH, ...).
    PassNotTunnel = 5,
    /// Underlay non-first IPv4/UDP fragment, passed: it has no UDP header to inspect.
    PassFragment = 6,
    /// Truncated Ethernet/IPv4/UDP header, IPv4 `ihl < 5` or `version != 4`, passed.
    PassMalformed = 7,
    /// Ingress interface not in `ports` (or with an unknown role), passed.
    PassUnknownPort = 8,
    /// Steered but no socket in the slot: `bpf_redirect_map` fell back to `XDP_PASS`.
    NoSocket = 9,
    /// Would be steered (tunnel on an underlay, IPv4 on a pod), but arrived on an RX
    /// queue at or past the interface's `xsk_count`: passed to the kernel instead.
    UnservedQueue = 10,
}

impl SteerCounter {
    /// Every counter, in map-slot order (`ALL[i] as usize == i`).
    pub const ALL: [SteerCounter; COUNTER_MAX] = [
        SteerCounter::SteerVxlan,
        SteerCounter::SteerIpip,
        SteerCounter::SteerPod,
        SteerCounter::PassArp,
        SteerCounter::PassNonIpv4,
        SteerCounter::PassNotTunnel,
        SteerCounter::PassFragment,
        SteerCounter::PassMalformed,
        SteerCounter::PassUnknownPort,
        SteerCounter::NoSocket,
        SteerCounter::UnservedQueue,
    ];

    /// The snake_case name used in metrics and the API, e.g. `"steer_vxlan"`.
    pub const fn name(self) -> &'static str {
        match self {
            SteerCounter::SteerVxlan => "steer_vxlan",
            SteerCounter::SteerIpip => "steer_ipip",
            SteerCounter::SteerPod => "steer_pod",
            SteerCounter::PassArp => "pass_arp",
            SteerCounter::PassNonIpv4 => "pass_non_ipv4",
            SteerCounter::PassNotTunnel => "pass_not_tunnel",
            SteerCounter::PassFragment => "pass_fragment",
            SteerCounter::PassMalformed => "pass_malformed",
            SteerCounter::PassUnknownPort => "pass_unknown_port",
            SteerCounter::NoSocket => "no_socket",
            SteerCounter::UnservedQueue => "unserved_queue",
        }
    }

    /// Index of this counter's slot in the `counters` map and in
    /// [`crate::Steering::counters`]'s array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::mem::offset_of;

    use super::*;

    const ABI_H: &str = include_str!("bpf/abi.h");

    /// `NAME = value` pairs of the C enum called `name`, in declaration order.
    fn c_enum(name: &str) -> Vec<(String, i64)> {
        let start = ABI_H
            .find(&format!("enum {name} {{"))
            .unwrap_or_else(|| panic!("enum {name} not found in abi.h"));
        let body = &ABI_H[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
        body.lines()
            // Drop comments: the enum bodies use one-line /* */ comments only.
            .map(|line| match line.find("/*") {
                Some(i) => &line[..i],
                None => line,
            })
            .filter_map(|line| {
                let (name, value) = line.trim().trim_end_matches(',').split_once('=')?;
                Some((name.trim().to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    fn c_defines() -> HashMap<String, i64> {
        ABI_H
            .lines()
            .filter_map(|line| {
                let mut words = line.strip_prefix("#define ")?.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.parse().ok()?))
            })
            .collect()
    }

    #[test]
    fn steer_counter_matches_c_enum() {
        let c = c_enum("steer_counter");
        // Every Rust counter, then COUNTER_MAX as the count.
        assert_eq!(c.len(), COUNTER_MAX + 1, "abi.h enum steer_counter: {c:?}");
        for (counter, (c_name, c_value)) in SteerCounter::ALL.iter().zip(&c) {
            assert_eq!(
                counter.name().to_uppercase(),
                *c_name,
                "Rust {counter:?} sits where abi.h has {c_name}"
            );
            assert_eq!(counter.index() as i64, *c_value, "{c_name} value");
        }
        assert_eq!(
            c[COUNTER_MAX],
            ("COUNTER_MAX".to_string(), COUNTER_MAX as i64)
        );
    }

    #[test]
    fn all_is_in_slot_order() {
        for (i, counter) in SteerCounter::ALL.iter().enumerate() {
            assert_eq!(counter.index(), i, "{counter:?}");
        }
    }

    #[test]
    fn port_role_matches_c_enum() {
        let c = c_enum("port_role");
        assert_eq!(
            c,
            vec![
                ("PORT_ROLE_UNDERLAY".to_string(), PortRole::Underlay as i64),
                ("PORT_ROLE_POD".to_string(), PortRole::Pod as i64),
            ]
        );
    }

    #[test]
    fn map_sizes_match_c_defines() {
        let d = c_defines();
        assert_eq!(d["MAX_PORTS"], i64::from(MAX_PORTS));
        assert_eq!(d["MAX_XSKS"], i64::from(MAX_XSKS));
        assert_eq!(d["MAX_VXLAN_PORTS"], i64::from(MAX_VXLAN_PORTS));
    }

    /// The skeleton's `port_cfg` is generated from the compiled object's BTF, i.e. what
    /// clang actually laid out.
    #[test]
    fn port_cfg_matches_btf() {
        use crate::skel::types::port_cfg;
        assert_eq!(size_of::<PortCfg>(), size_of::<port_cfg>());
        assert_eq!(offset_of!(PortCfg, role), offset_of!(port_cfg, role));
        assert_eq!(
            offset_of!(PortCfg, xsk_base),
            offset_of!(port_cfg, xsk_base)
        );
        assert_eq!(
            offset_of!(PortCfg, xsk_count),
            offset_of!(port_cfg, xsk_count)
        );
    }

    #[test]
    fn port_cfg_bytes_are_c_layout() {
        let cfg = PortCfg {
            role: PortRole::Pod as u32,
            xsk_base: 0x0102_0304,
            xsk_count: 0x0a0b_0c0d,
        };
        let bytes = cfg.to_bytes();
        assert_eq!(bytes[..4], 2u32.to_ne_bytes());
        assert_eq!(bytes[4..8], 0x0102_0304u32.to_ne_bytes());
        assert_eq!(bytes[8..], 0x0a0b_0c0du32.to_ne_bytes());
    }
}
