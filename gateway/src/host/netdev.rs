//! What a NIC's driver says it can do for XDP and AF_XDP, from the kernel's
//! generic-netlink family `netdev` (Linux 6.3 and later): `NETDEV_CMD_DEV_GET`
//! answers with `xdp-features` (a bit per capability, among them
//! `xsk-zerocopy`: whether an AF_XDP socket can bind with XDP_ZEROCOPY) and,
//! for zero-copy drivers, `xdp-zc-max-segs`. `ip -d link` shows neither.
//!
//! Requests are two netlink round trips (resolve the family id, ask), made at
//! start-up or by `overpass check`, never on the packet path.

use std::io;

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLM_F_DUMP, NLM_F_REQUEST, NlasIterator,
    ParseableParametrized,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_sys::protocols::NETLINK_GENERIC;

/// The family's name, as registered by the kernel.
pub const FAMILY: &str = "netdev";
const FAMILY_VERSION: u8 = 1;

/// `NETDEV_CMD_DEV_GET`.
const CMD_DEV_GET: u8 = 1;

/// `NETDEV_A_DEV_*` attributes.
const A_DEV_IFINDEX: u16 = 1;
const A_DEV_XDP_FEATURES: u16 = 3;
const A_DEV_XDP_ZC_MAX_SEGS: u16 = 4;
const A_DEV_XDP_RX_METADATA_FEATURES: u16 = 5;
const A_DEV_XSK_FEATURES: u16 = 6;

/// `enum netdev_xdp_act` bits of `xdp-features`, with the names the kernel's
/// netdev.yaml (and `ynl`) gives them.
pub mod xdp_act {
    /// XDP_PASS, XDP_DROP, XDP_ABORTED and XDP_TX in the driver.
    pub const BASIC: u64 = 1 << 0;
    /// XDP_REDIRECT (to a socket, a CPU, another device).
    pub const REDIRECT: u64 = 1 << 1;
    /// Can be the target of a redirect (ndo_xdp_xmit).
    pub const NDO_XMIT: u64 = 1 << 2;
    /// AF_XDP zero-copy: sockets may bind with XDP_ZEROCOPY.
    pub const XSK_ZEROCOPY: u64 = 1 << 3;
    /// The program can run on the NIC itself.
    pub const HW_OFFLOAD: u64 = 1 << 4;
    /// Non-linear (multi-buffer) frames on receive.
    pub const RX_SG: u64 = 1 << 5;
    /// Non-linear frames through ndo_xdp_xmit.
    pub const NDO_XMIT_SG: u64 = 1 << 6;

    /// Every known bit with its name.
    pub const NAMES: [(u64, &str); 7] = [
        (BASIC, "basic"),
        (REDIRECT, "redirect"),
        (NDO_XMIT, "ndo-xmit"),
        (XSK_ZEROCOPY, "xsk-zerocopy"),
        (HW_OFFLOAD, "hw-offload"),
        (RX_SG, "rx-sg"),
        (NDO_XMIT_SG, "ndo-xmit-sg"),
    ];
}

/// One device's XDP capabilities, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct NetdevInfo {
    pub ifindex: u32,
    /// `xdp-features`: [`xdp_act`] bits.
    pub xdp_features: u64,
    /// `xdp-zc-max-segs`: the most buffers a zero-copy frame may span
    /// (reported by zero-copy drivers only; 1 without multi-buffer support).
    pub xdp_zc_max_segs: Option<u32>,
    /// `xdp-rx-metadata-features` (hardware timestamp, hash, VLAN tag).
    pub xdp_rx_metadata_features: Option<u64>,
    /// `xsk-features` (TX metadata: timestamps, checksum offload).
    pub xsk_features: Option<u64>,
}

impl NetdevInfo {
    /// Whether the driver advertises AF_XDP zero-copy.
    pub fn zero_copy(&self) -> bool {
        self.xdp_features & xdp_act::XSK_ZEROCOPY != 0
    }

    /// The names of the `xdp-features` bits set, in bit order; an unknown
    /// bit is named by its value (`bit7`).
    pub fn xdp_feature_names(&self) -> Vec<String> {
        (0..64)
            .map(|b| 1u64 << b)
            .filter(|bit| self.xdp_features & bit != 0)
            .map(|bit| {
                xdp_act::NAMES
                    .iter()
                    .find(|(b, _)| *b == bit)
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_else(|| format!("bit{}", bit.trailing_zeros()))
            })
            .collect()
    }

    fn from_attrs(attrs: &[(u16, Vec<u8>)]) -> NetdevInfo {
        let mut info = NetdevInfo::default();
        for (kind, v) in attrs {
            match *kind {
                A_DEV_IFINDEX => info.ifindex = ne_u32(v).unwrap_or(0),
                A_DEV_XDP_FEATURES => info.xdp_features = ne_u64(v).unwrap_or(0),
                A_DEV_XDP_ZC_MAX_SEGS => info.xdp_zc_max_segs = ne_u32(v),
                A_DEV_XDP_RX_METADATA_FEATURES => info.xdp_rx_metadata_features = ne_u64(v),
                A_DEV_XSK_FEATURES => info.xsk_features = ne_u64(v),
                _ => {}
            }
        }
        info
    }
}

fn ne_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn ne_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?))
}

/// A message of the `netdev` family: a command and its attributes, raw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NetdevMsg {
    cmd: u8,
    attrs: Vec<(u16, Vec<u8>)>,
}

impl NetdevMsg {
    fn nlas(&self) -> Vec<DefaultNla> {
        self.attrs
            .iter()
            .map(|(k, v)| DefaultNla::new(*k, v.clone()))
            .collect()
    }
}

impl GenlFamily for NetdevMsg {
    fn family_name() -> &'static str {
        FAMILY
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        FAMILY_VERSION
    }
}

impl Emitable for NetdevMsg {
    fn buffer_len(&self) -> usize {
        self.nlas().as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.nlas().as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for NetdevMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(buf) {
            let nla = nla?;
            attrs.push((nla.kind(), nla.value().to_vec()));
        }
        Ok(NetdevMsg {
            cmd: header.cmd,
            attrs,
        })
    }
}

/// Sends one generic-netlink request and collects the replies: up to Done
/// for a dump, the first answer otherwise. A netlink error becomes an
/// [`io::Error`] with its errno.
fn request<F>(mut msg: GenlMessage<F>, family_id: u16, dump: bool) -> io::Result<Vec<F>>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    msg.set_resolved_family_id(family_id);
    msg.finalize();
    let flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    Ok(crate::host::netlink::request(NETLINK_GENERIC, msg, flags)?
        .into_iter()
        .map(|m| m.payload)
        .collect())
}

/// The id the kernel assigned to the `netdev` family.
fn family_id() -> io::Result<u16> {
    let msg = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(FAMILY.to_string())],
    });
    let replies = request(msg, 0, false).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOENT) {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "the kernel has no `netdev` generic netlink family (Linux 6.3 or later has it)",
            )
        } else {
            e
        }
    })?;
    replies
        .iter()
        .flat_map(|r| &r.nlas)
        .find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| io::Error::other("the `netdev` family reply carries no id"))
}

/// The XDP capabilities of the interface `ifindex` (in the calling thread's
/// network namespace). ENODEV when there is no such interface.
pub fn dev_get(ifindex: u32) -> io::Result<NetdevInfo> {
    let id = family_id()?;
    let msg = GenlMessage::from_payload(NetdevMsg {
        cmd: CMD_DEV_GET,
        attrs: vec![(A_DEV_IFINDEX, ifindex.to_ne_bytes().to_vec())],
    });
    let replies = request(msg, id, false)?;
    let reply = replies
        .first()
        .ok_or_else(|| io::Error::other("no answer to NETDEV_CMD_DEV_GET"))?;
    Ok(NetdevInfo::from_attrs(&reply.attrs))
}

/// The XDP capabilities of every interface in the calling thread's network
/// namespace.
pub fn dev_dump() -> io::Result<Vec<NetdevInfo>> {
    let id = family_id()?;
    let msg = GenlMessage::from_payload(NetdevMsg {
        cmd: CMD_DEV_GET,
        attrs: vec![],
    });
    Ok(request(msg, id, true)?
        .iter()
        .map(|r| NetdevInfo::from_attrs(&r.attrs))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_read_by_kind() {
        let info = NetdevInfo::from_attrs(&[
            (A_DEV_IFINDEX, 7u32.to_ne_bytes().to_vec()),
            (2, vec![0; 4]), // pad
            (
                A_DEV_XDP_FEATURES,
                (xdp_act::BASIC | xdp_act::REDIRECT | xdp_act::XSK_ZEROCOPY | 1 << 9)
                    .to_ne_bytes()
                    .to_vec(),
            ),
            (A_DEV_XDP_ZC_MAX_SEGS, 1u32.to_ne_bytes().to_vec()),
        ]);
        assert_eq!(info.ifindex, 7);
        assert!(info.zero_copy());
        assert_eq!(info.xdp_zc_max_segs, Some(1));
        assert_eq!(info.xsk_features, None);
        assert_eq!(
            info.xdp_feature_names(),
            ["basic", "redirect", "xsk-zerocopy", "bit9"]
        );
    }

    #[test]
    fn a_request_round_trips_through_its_wire_form() {
        let msg = NetdevMsg {
            cmd: CMD_DEV_GET,
            attrs: vec![(A_DEV_IFINDEX, 3u32.to_ne_bytes().to_vec())],
        };
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // One attribute: length 8, type 1, the u32.
        assert_eq!(&buf[..4], &[8, 0, 1, 0]);
        let header = GenlHeader {
            cmd: CMD_DEV_GET,
            version: FAMILY_VERSION,
        };
        assert_eq!(NetdevMsg::parse_with_param(&buf, header).unwrap(), msg);
    }

    /// The kernel answers for loopback (no XDP in its driver) and refuses
    /// an interface that does not exist. Linux 6.3 or later.
    #[test]
    fn the_kernel_answers_for_loopback_and_refuses_a_missing_interface() {
        match dev_get(1) {
            Ok(lo) => {
                assert_eq!(lo.ifindex, 1);
                assert!(!lo.zero_copy(), "{lo:?}");
            }
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                eprintln!("skipped: {e}");
                return;
            }
            Err(e) => panic!("NETDEV_CMD_DEV_GET for lo: {e}"),
        }
        let err = dev_get(u32::MAX - 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
        assert!(dev_dump().unwrap().iter().any(|d| d.ifindex == 1));
    }
}
