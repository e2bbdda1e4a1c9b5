//! Underlay facts from the kernel: neighbour MACs, interface MAC/MTU/index,
//! and network-namespace entry.
//!
//! The kernel keeps owning ARP on the underlay (the XDP program passes ARP
//! up), so the gateway learns next-hop MACs from the kernel's neighbour
//! table instead of from hand-written configuration. The control thread
//! reads the table, republishes the route table when a MAC appears or
//! changes, and asks the kernel to resolve a missing one by sending it a
//! datagram (to the discard port, 9/udp), which makes the kernel ARP for it.
//!
//! Everything here runs on the control thread, never per packet. Interface
//! queries use ioctls and `/proc/thread-self/net`, which follow the calling
//! thread's network namespace (sysfs would show the namespace it was
//! mounted in instead).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};

use crate::config::MacAddr;

/// A resolved neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub mac: MacAddr,
    /// True when the kernel considers the entry complete (ATF_COM).
    pub complete: bool,
}

/// Reads the IPv4 neighbour table of `ifname` (the calling thread's netns).
pub fn arp_table(ifname: &str) -> io::Result<HashMap<Ipv4Addr, Neighbour>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/arp")?;
    Ok(parse_arp(&text, ifname))
}

fn parse_arp(text: &str, ifname: &str) -> HashMap<Ipv4Addr, Neighbour> {
    // IP address  HW type  Flags  HW address  Mask  Device
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != ifname {
            continue;
        }
        let (Ok(ip), Ok(mac)) = (f[0].parse::<Ipv4Addr>(), f[3].parse::<MacAddr>()) else {
            continue;
        };
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
        let complete = flags & 0x2 != 0 && mac != MacAddr([0; 6]);
        out.insert(ip, Neighbour { mac, complete });
    }
    out
}

/// Makes the kernel resolve `ip` by sending it one empty datagram to the
/// discard port. Idempotent and cheap; called while a next hop is missing.
pub fn probe(ip: Ipv4Addr) -> io::Result<()> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.send_to(&[], SocketAddrV4::new(ip, 9))?;
    Ok(())
}

/// The MAC address of an interface (from `getifaddrs`, which asks the
/// kernel over netlink in the calling thread's namespace).
pub fn interface_mac(ifname: &str) -> io::Result<MacAddr> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    for ifa in addrs {
        if ifa.interface_name != ifname {
            continue;
        }
        if let Some(mac) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(MacAddr(mac));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no link address for {ifname:?}"),
    ))
}

/// The MTU of an interface, as iproute2 reports it. Startup only.
pub fn interface_mtu(ifname: &str) -> io::Result<u32> {
    link_field(ifname, "mtu")
}

/// A numeric field of `ip -j -d link show dev IFNAME`.
fn link_field(ifname: &str, field: &str) -> io::Result<u32> {
    let out = std::process::Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", ifname])
        .output()?;
    if !out.status.success() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{ifname}: {}", String::from_utf8_lossy(&out.stderr).trim()),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(io::Error::other)?;
    v[0][field]
        .as_u64()
        .map(|m| m as u32)
        .ok_or_else(|| io::Error::other(format!("{ifname}: no {field} in `ip -j -d link` output")))
}

/// The index of an interface.
pub fn ifindex(ifname: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(ifname).map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {ifname:?}: {e}"),
        )
    })
}

/// Moves the calling thread into the network namespace `name`
/// (`/var/run/netns/NAME`, as created by `ip netns add`). Threads spawned
/// afterwards inherit it. Returns a handle to the previous namespace so the
/// caller can go back.
pub fn enter_netns(name: &str) -> io::Result<File> {
    let prev = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(format!("/var/run/netns/{name}"))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name:?}: {e}")))?;
    setns(&target)?;
    Ok(prev)
}

/// Moves the calling thread into the namespace `ns` refers to.
pub fn setns(ns: &File) -> io::Result<()> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_arp() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    198.18.0.11      0x1         0x2         02:00:c6:12:00:0b     *        ul0\n\
                    198.18.0.12      0x1         0x0         00:00:00:00:00:00     *        ul0\n\
                    10.0.0.1         0x1         0x2         02:00:00:00:00:01     *        eth9\n";
        let t = parse_arp(text, "ul0");
        assert_eq!(t.len(), 2);
        let n = t[&Ipv4Addr::new(198, 18, 0, 11)];
        assert!(n.complete);
        assert_eq!(n.mac, "02:00:c6:12:00:0b".parse().unwrap());
        assert!(!t[&Ipv4Addr::new(198, 18, 0, 12)].complete);
    }

    #[test]
    fn loopback_facts() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert_eq!(interface_mac("lo").unwrap(), MacAddr([0; 6]));
        assert!(interface_mac("no-such-if0").is_err());
        assert!(interface_mtu("lo").unwrap() >= 1500);
        assert!(ifindex("no-such-if0").is_err());
    }
}
