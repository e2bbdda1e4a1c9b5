//! `overpass-guest-probe`: run inside a guest of the guest tier
//! (`deploy/guest/run.sh`), it proves a NIC's AF_XDP zero-copy path with the
//! gateway's own code:
//!
//! 1. what the driver advertises, from the kernel's `netdev` generic-netlink
//!    family (`xdp-features`, `xdp-zc-max-segs`: `overpass::host::netdev`);
//! 2. the gateway's XDP steering program attached to the NIC as an underlay
//!    (`overpass_xdp::Steering`), an AF_XDP socket on one queue bound with
//!    XDP_ZEROCOPY only (`XskIo::open` with `BindMode::ZeroCopy`; the mode is
//!    the one `XDP_OPTIONS` reports);
//! 3. UDP frames to the VXLAN port whose payload starts with the marker are
//!    counted as they arrive on the socket and sent back out of the same
//!    socket with addresses and ports swapped (zero-copy TX), until `--frames`
//!    have arrived and every echo has completed.
//!
//! It prints one line `OVERPASS-GUEST-PROBE {json}` with what it saw, and exits
//! 0 only when the driver advertises zero-copy, the socket is bound
//! zero-copy, enough frames arrived and every echo completed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use overpass::afxdp::xsk::{BindMode, PortSpec, XskIo};
use overpass::host::netdev;
use overpass_dataplane::counters::{DropReason, Event, WorkerCounters};
use overpass_dataplane::io::{PacketIo, Spare, Verdict};
use overpass_xdp::abi::SteerCounter;
use overpass_xdp::{PortRole, Steering};

/// The line prefix the guest tier's tests look for.
const PREFIX: &str = "OVERPASS-GUEST-PROBE";

#[derive(Debug, Parser)]
#[command(name = "overpass-guest-probe")]
struct Args {
    /// The NIC.
    #[arg(long, default_value = "eth0")]
    iface: String,
    /// The RX queue to bind.
    #[arg(long, default_value_t = 0)]
    queue: u32,
    /// UDP destination port the steering program treats as VXLAN.
    #[arg(long, default_value_t = 8472)]
    port: u16,
    /// Frames to receive (and echo) before stopping.
    #[arg(long, default_value_t = 64)]
    frames: u64,
    /// Payload prefix of the frames to count.
    #[arg(long, default_value = "OVG-PROBE")]
    marker: String,
    /// Ring size (fill, RX, TX) of the socket.
    #[arg(long, default_value_t = 256)]
    ring: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    iface: String,
    ifindex: u32,
    kernel: String,
    driver: Option<String>,
    netdev: Option<netdev::NetdevInfo>,
    xdp_features_names: Vec<String>,
    xdp_mode: Option<String>,
    bind_mode: Option<String>,
    received: u64,
    other_frames: u64,
    echoed: u64,
    tx_completed: u64,
    steered: u64,
    xsk_rx_dropped: u64,
    carrier_wait_ms: u64,
    elapsed_ms: u64,
    error: Option<String>,
}

fn main() {
    let args = Args::parse();
    let mut report = Report {
        iface: args.iface.clone(),
        ..Report::default()
    };
    let ok = match probe(&args, &mut report) {
        Ok(ok) => ok,
        Err(e) => {
            report.error = Some(format!("{e:#}"));
            false
        }
    };
    println!(
        "{PREFIX} {}",
        serde_json::to_string(&report).expect("the report serialises")
    );
    std::process::exit(if ok { 0 } else { 1 });
}

fn probe(args: &Args, report: &mut Report) -> anyhow::Result<bool> {
    let start = Instant::now();
    report.kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    let ifindex = overpass::host::iface::ifindex(&args.iface)?;
    report.ifindex = ifindex;
    report.driver = overpass::host::ethtool::driver_name(&args.iface);
    let info = netdev::dev_get(ifindex)?;
    report.netdev = Some(info);
    report.xdp_features_names = info.xdp_feature_names();
    eprintln!(
        "probe: {} ({:?}): xdp-features {:#x} [{}], xdp-zc-max-segs {:?}",
        args.iface,
        report.driver,
        info.xdp_features,
        report.xdp_features_names.join(","),
        info.xdp_zc_max_segs
    );

    let mut steering = Steering::load(&[args.port])?;
    let mode = steering.attach(ifindex, PortRole::Underlay, 0, args.queue + 1)?;
    report.xdp_mode = Some(mode.as_str().to_string());
    let counters = Arc::new(WorkerCounters::default());
    let spec = PortSpec {
        ifname: args.iface.clone(),
        queue: args.queue,
        ring_size: args.ring,
    };
    let mut io = XskIo::open(&[spec], BindMode::ZeroCopy, counters.clone())?;
    let bound = io.modes()[0].1;
    report.bind_mode = Some(
        serde_json::to_value(bound)?
            .as_str()
            .unwrap_or("?")
            .to_string(),
    );
    steering.register_xsk(args.queue, io.fds()[0])?;
    eprintln!(
        "probe: XDP {mode}, AF_XDP socket on queue {} bound {bound:?}",
        args.queue
    );

    // igb resets its link on every XDP attach (about a second).
    let carrier = Instant::now();
    let carrier_path = format!("/sys/class/net/{}/carrier", args.iface);
    while std::fs::read_to_string(&carrier_path)
        .unwrap_or_default()
        .trim()
        != "1"
    {
        anyhow::ensure!(
            carrier.elapsed() < Duration::from_secs(20),
            "{}: no carrier",
            args.iface
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    report.carrier_wait_ms = carrier.elapsed().as_millis() as u64;

    let deadline = start + Duration::from_secs(args.timeout_secs);
    let marker = args.marker.as_bytes();
    let port = args.port;
    let (mut received, mut other, mut echoed) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline {
        let got = io.poll(|_, buf: &mut [u8], len: usize, _: &mut dyn Spare| {
            let frame = &mut buf[..len];
            if !is_probe_frame(frame, port, marker) {
                other += 1;
                return Verdict::Drop(DropReason::NotTunnel);
            }
            received += 1;
            swap_addresses(frame);
            echoed += 1;
            Verdict::Tx { port: 0, len }
        });
        if received >= args.frames && !io.tx_pending() {
            break;
        }
        if got == 0 && !io.tx_pending() {
            io.wait(10);
        }
    }
    io.sync_kernel_counters();
    let s = counters.snapshot();
    report.received = received;
    report.other_frames = other;
    report.echoed = echoed;
    report.tx_completed = s.event_count(Event::TxCompleted);
    report.xsk_rx_dropped =
        s.drop_count(DropReason::XskRxDropped) + s.drop_count(DropReason::XskRxRingFull);
    report.steered = steering.counters()?[SteerCounter::SteerVxlan as usize];
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    eprintln!(
        "probe: {received} frames received, {echoed} echoed, {} completed, {other} others",
        report.tx_completed
    );
    if received < args.frames {
        report.error = Some(format!(
            "{received} of {} frames arrived within {} s",
            args.frames, args.timeout_secs
        ));
    }
    Ok(info.zero_copy()
        && bound == overpass::afxdp::xsk::XskMode::ZeroCopy
        && received >= args.frames
        && report.tx_completed == echoed)
}

/// Ethernet + IPv4 (no options) + UDP to `port`, payload starting with `marker`.
fn is_probe_frame(f: &[u8], port: u16, marker: &[u8]) -> bool {
    const ETH: usize = 14;
    const IP: usize = 20;
    const UDP: usize = 8;
    f.len() >= ETH + IP + UDP + marker.len()
        && f[12..14] == [0x08, 0x00]
        && f[ETH] == 0x45
        && f[ETH + 9] == 17
        && u16::from_be_bytes([f[ETH + IP + 2], f[ETH + IP + 3]]) == port
        && f[ETH + IP + UDP..].starts_with(marker)
}

/// Swaps Ethernet, IPv4 and UDP source and destination: the frame goes back
/// to its sender. Both checksums stay valid (one's-complement sums do not
/// depend on the order of their words).
fn swap_addresses(f: &mut [u8]) {
    let (dst, rest) = f.split_at_mut(6);
    dst.swap_with_slice(&mut rest[..6]);
    let (src_ip, dst_ip) = f[26..34].split_at_mut(4);
    src_ip.swap_with_slice(dst_ip);
    let (sport, dport) = f[34..38].split_at_mut(2);
    sport.swap_with_slice(dport);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(40000, 8472)
            .write(&mut f, payload)
            .unwrap();
        f
    }

    #[test]
    fn probe_frames_are_recognised_by_port_and_marker() {
        let f = frame(b"OVG-PROBE 1");
        assert!(is_probe_frame(&f, 8472, b"OVG-PROBE"));
        assert!(!is_probe_frame(&f, 4789, b"OVG-PROBE"));
        assert!(!is_probe_frame(
            &frame(b"something else"),
            8472,
            b"OVG-PROBE"
        ));
        assert!(!is_probe_frame(&f[..40], 8472, b"OVG-PROBE"));
    }

    /// The echo goes back to the sender with both checksums still valid.
    #[test]
    fn the_echo_swaps_every_address_and_keeps_the_checksums() {
        let mut f = frame(b"OVG-PROBE 1 payload");
        swap_addresses(&mut f);
        let p = etherparse::PacketHeaders::from_ethernet_slice(&f).unwrap();
        let eth = p.link.unwrap().ethernet2().unwrap();
        assert_eq!(eth.destination, [2, 0, 0, 0, 0, 1]);
        assert_eq!(eth.source, [2, 0, 0, 0, 0, 2]);
        let Some(etherparse::NetHeaders::Ipv4(ip, _)) = p.net else {
            panic!("no IPv4 header");
        };
        assert_eq!(ip.source, [192, 0, 2, 2]);
        assert_eq!(ip.destination, [192, 0, 2, 1]);
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        let Some(etherparse::TransportHeader::Udp(udp)) = p.transport else {
            panic!("no UDP header");
        };
        assert_eq!((udp.source_port, udp.destination_port), (8472, 40000));
        let payload = p.payload.slice();
        assert_eq!(udp.checksum, udp.calc_checksum_ipv4(&ip, payload).unwrap());
    }
}
