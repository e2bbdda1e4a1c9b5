//! The kernel's ethtool ioctl: channel counts and driver names.
//!
//! The one `unsafe` block outside the AF_XDP layer: SIOCETHTOOL has no safe
//! wrapper in the crates we use, and the ioctl ABI is a plain C struct.

use std::io;
use std::os::fd::AsRawFd;

/// Runs one SIOCETHTOOL request on `ifname`: `data` is the ethtool command
/// struct (its first field the command number), read and written in place.
fn ethtool<T>(ifname: &str, data: &mut T) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {ifname:?}"),
        ));
    }
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = (data as *mut T).cast();
    // SAFETY: SIOCETHTOOL reads the NUL-terminated name in `req` and reads
    // and writes one ethtool command struct through `ifru_data`, which
    // points at a live `T`; callers pass the struct the command expects.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if rc < 0 {
        // The raw errno, so callers can tell EOPNOTSUPP from the rest.
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The number of RX queues an AF_XDP socket can bind to on `ifname`: the
/// device's current channel count (`ethtool -l`: rx + combined), which for
/// a veth is usually 1 even though more queues are allocated. Devices that
/// do not report channels have one queue.
pub fn rx_queue_count(ifname: &str) -> io::Result<u32> {
    /// `struct ethtool_channels` from linux/ethtool.h.
    #[repr(C)]
    #[derive(Default)]
    struct EthtoolChannels {
        cmd: u32,
        max_rx: u32,
        max_tx: u32,
        max_other: u32,
        max_combined: u32,
        rx_count: u32,
        tx_count: u32,
        other_count: u32,
        combined_count: u32,
    }
    const ETHTOOL_GCHANNELS: u32 = 0x0000_003c;
    let mut channels = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    match ethtool(ifname, &mut channels) {
        Ok(()) => Ok((channels.rx_count + channels.combined_count).max(1)),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(1),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{ifname}: ETHTOOL_GCHANNELS: {e}"),
        )),
    }
}

/// The driver of `ifname` (`ethtool -i`), e.g. "veth", "mlx5_core".
pub fn driver_name(ifname: &str) -> Option<String> {
    /// `struct ethtool_drvinfo` from linux/ethtool.h.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        version: [u8; 32],
        fw_version: [u8; 32],
        bus_info: [u8; 32],
        erom_version: [u8; 32],
        reserved2: [u8; 12],
        n_priv_flags: u32,
        n_stats: u32,
        testinfo_len: u32,
        eedump_len: u32,
        regdump_len: u32,
    }
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    ethtool(ifname, &mut info).ok()?;
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    let d = String::from_utf8_lossy(&info.driver[..end]).into_owned();
    (!d.is_empty()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_count_of_loopback_and_missing_device() {
        assert_eq!(rx_queue_count("lo").unwrap(), 1);
        assert!(rx_queue_count("no-such-if0").is_err());
        assert!(rx_queue_count("").is_err());
    }
}
