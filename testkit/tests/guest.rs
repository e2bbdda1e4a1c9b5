//! The guest tier: the NIC side of AF_XDP zero-copy, proven in QEMU guests
//! (TCG) with the two NIC models this machine can give a zero-copy driver,
//! virtio-net (`virtio_net`, with `iommu_platform=on`) and igb (`igb`).
//!
//! In each guest `overpass-guest-probe` reads the driver's `xdp-features`
//! from the kernel (`netdev` generic netlink: `xsk-zerocopy` must be set),
//! attaches the gateway's XDP steering program to the NIC as an underlay,
//! opens an AF_XDP socket on queue 0 with the gateway's `XskIo` bound
//! zero-copy only (XDP_OPTIONS must say zero-copy), and counts the UDP frames
//! to the VXLAN port that this test sends from the host side of the link (a
//! tap in a namespace of the test), echoing each back through the same
//! socket. The test counts the echoes: frames crossed both ways through
//! zero-copy RX and TX.
//!
//! Needs root (namespaces, tap devices); under CI=true it fails rather than
//! skips, and so it does when the guest cannot run at all. QEMU and the guest
//! kernel come from `deploy/guest/install.sh`, which the test runs first (a
//! no-op when they are in place). The guests run one at a time: the machine
//! has two cores and each guest's TCG vCPU takes one.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use overpass_testkit::guest::{self, GUEST_ADDR, GuestRun, GuestSpec, Nic, PeerNs};
use overpass_testkit::testbed::require_root;

static SERIAL: Mutex<()> = Mutex::new(());

const MARKER: &str = "OVG-PROBE";
const FRAMES: u64 = 64;
const VXLAN_PORT: u16 = 8472;

#[test]
fn virtio_net_binds_zero_copy_and_frames_cross_both_ways() {
    zero_copy_in_a_guest(Nic::Virtio, "zv");
}

#[test]
fn igb_binds_zero_copy_and_frames_cross_both_ways() {
    zero_copy_in_a_guest(Nic::Igb, "zi");
}

fn zero_copy_in_a_guest(nic: Nic, tag: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("the guest tier (QEMU, tap devices, network namespaces)") {
        return;
    }
    guest::install().expect("deploy/guest/install.sh");
    let peer = PeerNs::create(&format!("ovg-{tag}-peer")).expect("peer namespace");
    let spec = GuestSpec::new(nic, peer.name(), tag);
    // The probe finds the frames within seconds of its start; its own
    // deadline comes well before the guest's.
    let probe = format!(
        "{} --iface eth0 --frames {FRAMES} --marker {MARKER} --timeout-secs 120",
        env!("CARGO_BIN_EXE_overpass-guest-probe")
    );
    let script = match nic {
        Nic::Virtio => format!("exec {probe}"),
        // igb in Linux 6.18.15 (the newest 6.18 this tier can fetch) wakes
        // the TX queue's interrupt vector for an RX wakeup (fixed upstream
        // by d4c13ab36273, "igb: Fix trigger of incorrect irq in
        // igb_xsk_wakeup", in 6.18 stable after 6.18.15). With one queue on
        // one vCPU, RX and TX have vectors of their own, and a socket whose
        // fill ring is filled after bind (XskIo's order: xsk-rs binds before
        // it hands out the fill ring) never gets its RX ring armed: no frame
        // ever arrives. More than 4 channels on an 82576 share one vector per
        // RX/TX pair, so the wakeup reaches the RX ring; RSS then sends
        // every flow to queue 0. Measured: split vectors, 0 of 64 frames in
        // 120 s; paired, all of them within a second.
        Nic::Igb => {
            format!("ethtool -L eth0 combined 5 && ethtool -X eth0 equal 1 && exec {probe}")
        }
    };
    let run = GuestRun::spawn(&spec, &["sh", "-c", &script]).expect("starting the guest");

    let (sent, echoes, out) = send_until_done(&peer, &spec, run);
    eprintln!("{}", out.output);
    let report = out
        .output
        .lines()
        .find_map(|l| l.strip_prefix("OVERPASS-GUEST-PROBE "))
        .map(|j| serde_json::from_str::<serde_json::Value>(j).expect("the probe's JSON"));
    let Some(r) = report else {
        panic!(
            "{}: the guest did not run the probe ({}):\n{}\n{}",
            nic.as_str(),
            out.status,
            out.output,
            out.stderr
        );
    };
    eprintln!(
        "guest tier {}: kernel {}, driver {}, xdp-features {:#x} {}, xdp-zc-max-segs {}, \
         XDP {}, AF_XDP bind {}; {} sent, {} received, {} echoed ({} completed), {} echoes back; \
         guest {:.1} s (probe {} ms)",
        nic.as_str(),
        r["kernel"],
        r["driver"],
        r["netdev"]["xdp_features"].as_u64().unwrap_or(0),
        r["xdp_features_names"],
        r["netdev"]["xdp_zc_max_segs"],
        r["xdp_mode"],
        r["bind_mode"],
        sent,
        r["received"],
        r["echoed"],
        r["tx_completed"],
        echoes,
        out.elapsed.as_secs_f64(),
        r["elapsed_ms"],
    );
    assert!(
        out.status.success(),
        "{}: the probe failed ({}): {r}\n{}",
        nic.as_str(),
        out.status,
        out.stderr
    );
    assert_eq!(r["driver"], nic.driver());
    let names: Vec<&str> = r["xdp_features_names"]
        .as_array()
        .expect("feature names")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        names.contains(&"xsk-zerocopy"),
        "{}: {names:?}",
        nic.as_str()
    );
    assert!(
        r["netdev"]["xdp_zc_max_segs"].as_u64().unwrap_or(0) >= 1,
        "{r}"
    );
    assert_eq!(r["xdp_mode"], "native", "{r}");
    assert_eq!(r["bind_mode"], "zero-copy", "{r}");
    let received = r["received"].as_u64().unwrap_or(0);
    assert!(received >= FRAMES, "{r}");
    assert_eq!(r["tx_completed"], r["echoed"], "{r}");
    assert!(
        echoes >= FRAMES,
        "{}: {echoes} echoes reached the peer, {received} frames reached the socket",
        nic.as_str()
    );
}

/// From the peer namespace: a permanent neighbour entry for the guest (as
/// soon as run.sh has made the tap), then a UDP datagram to the guest's VXLAN
/// port every 5 ms, counting the echoes, until the guest stops; then a last
/// second for echoes still in flight.
fn send_until_done(
    peer: &PeerNs,
    spec: &GuestSpec,
    mut run: GuestRun,
) -> (u64, u64, guest::GuestOutput) {
    let sock = overpass::host::netns::in_netns(Some(peer.name()), || {
        UdpSocket::bind(("0.0.0.0", VXLAN_PORT))
    })
    .expect("entering the peer namespace")
    .expect("a UDP socket in the peer namespace");
    sock.set_nonblocking(true).unwrap();
    let to: SocketAddr = (
        GUEST_ADDR.parse::<std::net::Ipv4Addr>().unwrap(),
        VXLAN_PORT,
    )
        .into();
    let mut echoes = 0u64;
    let mut count_echoes = |sock: &UdpSocket| {
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if buf[..n].starts_with(MARKER.as_bytes()) {
                echoes += 1;
            }
        }
    };
    let mut neigh = false;
    let mut sent = 0u64;
    let deadline = Instant::now() + spec.timeout + Duration::from_secs(30);
    while !run.finished() && Instant::now() < deadline {
        if !neigh {
            neigh = peer.ip(&[
                "neigh",
                "replace",
                GUEST_ADDR,
                "lladdr",
                &spec.mac,
                "dev",
                &spec.tap,
                "nud",
                "permanent",
            ]);
        }
        if neigh {
            let payload = format!("{MARKER} {sent:08} {}", "x".repeat(40));
            if sock.send_to(payload.as_bytes(), to).is_ok() {
                sent += 1;
            }
        }
        count_echoes(&sock);
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = run.wait().expect("waiting for the guest");
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        count_echoes(&sock);
        std::thread::sleep(Duration::from_millis(20));
    }
    (sent, echoes, out)
}
