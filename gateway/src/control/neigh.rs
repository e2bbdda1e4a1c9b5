//! Underlay facts from the kernel: neighbour MACs, interface MAC/MTU/index,
//! and network-namespace entry.
//!
//! The kernel keeps owning ARP on the underlay (the XDP program passes ARP
//! up), so the gateway learns next-hop MACs from the kernel's neighbour
//! table over netlink instead of from hand-written configuration
//! ([`NextHops`]): the next hop of a node is the gateway of the kernel's
//! route to it (or the node itself on-link), neighbour changes arrive on an
//! RTMGRP_NEIGH subscription, and a missing MAC is resolved by the kernel
//! on request (RTM_NEWNEIGH with NTF_USE) without sending traffic of ours.
//!
//! Everything here runs on the control thread, never per packet. Netlink
//! sockets and `getifaddrs` follow the calling thread's network namespace
//! (sysfs would show the namespace it was mounted in instead).

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use overpass_dataplane::wire::ethernet::MacAddr;

use crate::host::iface::ifindex;

/// A resolved neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: MacAddr,
    /// True when the kernel considers the entry complete (ATF_COM).
    pub complete: bool,
}

// ---- Netlink: the kernel's neighbour table and route lookups, followed live.

/// RTMGRP_NEIGH: the multicast group of neighbour table changes.
const RTMGRP_NEIGH: u32 = 0x4;

/// One rtnetlink request (see [`crate::host::netlink::request`]).
fn nl_request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    crate::host::netlink::request(NETLINK_ROUTE, msg, flags)
}

/// Whether a neighbour state carries a usable link-layer address.
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// The IPv4 neighbours of interface `ifindex`, from the kernel over netlink.
pub fn neighbours(ifindex: u32) -> io::Result<HashMap<Ipv4Addr, Neighbour>> {
    let mut out = HashMap::new();
    for m in nl_request(
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
        NLM_F_REQUEST | NLM_F_DUMP,
    )? {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        if n.header.family != AddressFamily::Inet || n.header.ifindex != ifindex {
            continue;
        }
        let mut ip = None;
        let mut mac = None;
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
                NeighbourAttribute::LinkLayerAddress(l) => mac = MacAddr::from_bytes(l),
                _ => {}
            }
        }
        if let Some(ip) = ip {
            out.insert(
                ip,
                Neighbour {
                    mac: mac.unwrap_or_default(),
                    complete: mac.is_some() && usable(n.header.state),
                },
            );
        }
    }
    Ok(out)
}

/// The kernel's route to `dst` (like `ip route get`): the gateway to send
/// through, if any (`None`: on-link), and the output interface index.
pub fn route_get(dst: Ipv4Addr) -> io::Result<(Option<Ipv4Addr>, u32)> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 32;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
    let replies = nl_request(RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST)?;
    let Some(RouteNetlinkMessage::NewRoute(r)) = replies.into_iter().next() else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no route to {dst}"),
        ));
    };
    let mut gateway = None;
    let mut oif = 0;
    for a in r.attributes {
        match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(g),
            RouteAttribute::Oif(i) => oif = i,
            _ => {}
        }
    }
    Ok((gateway, oif))
}

/// Asks the kernel to resolve `ip` on `ifindex` (RTM_NEWNEIGH with
/// NTF_USE: the kernel creates the entry if needed and sends ARP), without
/// sending any traffic of our own.
pub fn resolve(ifindex: u32, ip: Ipv4Addr) -> io::Result<()> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::None;
    msg.header.flags = NeighbourFlags::Use;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    nl_request(
        RouteNetlinkMessage::NewNeighbour(msg),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(|_| ())
}

/// A subscription to the kernel's neighbour-table changes.
#[derive(Debug)]
pub struct NeighMonitor {
    socket: Socket,
    buf: Vec<u8>,
}

impl NeighMonitor {
    pub fn new() -> io::Result<NeighMonitor> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, RTMGRP_NEIGH))?;
        socket.set_non_blocking(true)?;
        Ok(NeighMonitor {
            socket,
            buf: vec![0u8; 64 * 1024],
        })
    }

    /// Waits up to `timeout_ms` for neighbour changes; returns whether any
    /// arrived (all pending notifications are consumed).
    pub fn wait(&mut self, timeout_ms: u16) -> bool {
        use std::os::fd::AsFd;
        let mut fds = [nix::poll::PollFd::new(
            self.socket.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready =
            nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(timeout_ms)).unwrap_or(0) > 0;
        let mut any = false;
        if ready {
            while let Ok(n) = self.socket.recv(&mut &mut self.buf[..], 0) {
                if n == 0 {
                    break;
                }
                any = true;
            }
        }
        any
    }
}

/// Keeps the underlay next-hop MAC of every remote node, following the
/// kernel: the next hop of a node is the gateway of the kernel's route to
/// it (or the node itself when on-link), its MAC comes from the neighbour
/// table, and a missing one is resolved by the kernel on request (rate
/// limited per address). Changes arrive through [`NeighMonitor`], so a MAC
/// that changes in the kernel changes here within one wait.
#[derive(Debug)]
pub struct NextHops {
    ifindex: u32,
    monitor: NeighMonitor,
    /// node → (next hop, when the route was looked up)
    routes: HashMap<Ipv4Addr, (Ipv4Addr, std::time::Instant)>,
    last_resolve: HashMap<Ipv4Addr, std::time::Instant>,
}

/// How long a node's route lookup is trusted.
const ROUTE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a missing next hop is re-requested.
const RESOLVE_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl NextHops {
    /// Tracks next hops reached through the underlay interface `ifname`.
    pub fn new(ifname: &str) -> io::Result<NextHops> {
        Ok(NextHops {
            ifindex: ifindex(ifname)?,
            monitor: NeighMonitor::new()?,
            routes: HashMap::new(),
            last_resolve: HashMap::new(),
        })
    }

    fn next_hop(&mut self, node: Ipv4Addr) -> Ipv4Addr {
        let now = std::time::Instant::now();
        if let Some((nh, at)) = self.routes.get(&node)
            && now.duration_since(*at) < ROUTE_TTL
        {
            return *nh;
        }
        let nh = match route_get(node) {
            Ok((Some(gw), oif)) if oif == self.ifindex => gw,
            Ok((_, oif)) if oif != self.ifindex && oif != 0 => {
                tracing::warn!(%node, oif, "the kernel routes this node away from the underlay interface");
                node
            }
            Ok(_) => node,
            Err(e) => {
                tracing::warn!(%node, "route lookup failed: {e}");
                node
            }
        };
        self.routes.insert(node, (nh, now));
        nh
    }

    /// The resolved MAC of every node's next hop; asks the kernel to
    /// resolve the missing ones.
    pub fn refresh(&mut self, nodes: &[Ipv4Addr]) -> io::Result<HashMap<Ipv4Addr, MacAddr>> {
        let table = neighbours(self.ifindex)?;
        let mut out = HashMap::new();
        for &node in nodes {
            let nh = self.next_hop(node);
            match table.get(&nh).filter(|n| n.complete) {
                Some(n) => {
                    out.insert(node, n.mac);
                }
                None => {
                    let due = self
                        .last_resolve
                        .get(&nh)
                        .is_none_or(|t| t.elapsed() >= RESOLVE_EVERY);
                    if due {
                        if let Err(e) = resolve(self.ifindex, nh) {
                            tracing::debug!(%nh, "neighbour resolution request failed: {e}");
                        }
                        self.last_resolve.insert(nh, std::time::Instant::now());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Waits for a neighbour change or `timeout_ms`.
    pub fn wait(&mut self, timeout_ms: u16) -> bool {
        self.monitor.wait(timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_route_to_loopback() {
        let (gw, oif) = route_get(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!((gw, oif), (None, 1), "loopback is on-link");
    }
}
