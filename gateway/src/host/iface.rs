//! Interface facts: index, MAC address, MTU (control-plane and start-up only).

use std::io;

use overpass_dataplane::wire::ethernet::MacAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_facts() {
        assert_eq!(ifindex("lo").unwrap(), 1);
        assert_eq!(interface_mac("lo").unwrap(), MacAddr([0; 6]));
        assert!(interface_mac("no-such-if0").is_err());
        assert!(interface_mtu("lo").unwrap() >= 1500);
        assert!(ifindex("no-such-if0").is_err());
    }
}
