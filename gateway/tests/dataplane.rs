//! End-to-end dataplane tests in network namespaces, against real kernel
//! VXLAN devices configured exactly as Flannel configures them.
//!
//! Each test builds its own test bed (its own namespaces, torn down on
//! drop) and runs the real gateway: XDP program, AF_XDP sockets, workers.
//! They need root; under CI=true they fail rather than skip.
//! They run one at a time (the machine has two cores, and the gateway's
//! worker busy-polls one of them).

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use overpass_dataplane::counters::{DropReason, Event};
use overpass_testkit::testbed::{
    KillOnDrop, Ns, PingOpts, Testbed, TestbedSpec, require_root, wait_until,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn bed(tag: &str) -> Testbed {
    Testbed::create(&TestbedSpec {
        tag: tag.to_string(),
        underlay_queues: 1,
    })
    .expect("building the test bed")
}

#[test]
fn ping_both_ways_and_counters_match() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("dataplane ping test (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("it1");
    let gw = bed.start_gateway().expect("starting the gateway");
    let opts = PingOpts::default();
    const N: u32 = 10;
    // (from, to, what the gateway does with the request).
    let flows = [
        (
            bed.ns(Ns::LocalPod('a')),
            bed.remote_pod_ip(1),
            Event::EncapToPeer,
        ),
        (
            bed.ns(Ns::LocalPod('b')),
            bed.remote_pod_ip(2),
            Event::EncapToPeer,
        ),
        (
            bed.ns(Ns::NodePod(1)),
            bed.local_pod_ip('a'),
            Event::DecapToPod,
        ),
        (
            bed.ns(Ns::NodePod(2)),
            bed.local_pod_ip('b'),
            Event::DecapToPod,
        ),
    ];
    for (ns, dst, _) in &flows {
        let before = gw.counters();
        let xdp_before = gw.xdp_counters();
        let r = bed.ping(ns, *dst, N, &opts).expect("ping runs");
        assert!(r.all_received(), "{ns} -> {dst}: {}", r.raw);
        assert_eq!(r.transmitted, N);
        let after = gw.counters();
        // Every request and every reply crossed the gateway exactly once:
        // one direction is encapsulated, the other decapsulated.
        assert_eq!(
            after.since(&before).event_count(Event::EncapToPeer),
            N as u64,
            "{ns} -> {dst}\n{}",
            after.render()
        );
        assert_eq!(
            after.since(&before).event_count(Event::DecapToPod),
            N as u64,
            "{ns} -> {dst}\n{}",
            after.render()
        );
        assert_eq!(
            after.since(&before).event_count(Event::RxUnderlay),
            N as u64
        );
        assert_eq!(after.since(&before).event_count(Event::RxPod), N as u64);
        assert_eq!(
            after.total_drops(),
            before.total_drops(),
            "unexpected drops:\n{}",
            after.render()
        );
        // The XDP program steered the same packets.
        let xdp_after = gw.xdp_counters();
        let steered = |v: &[(&str, u64)], name: &str| {
            v.iter().find(|(n, _)| *n == name).map(|(_, c)| *c).unwrap()
        };
        assert_eq!(
            steered(&xdp_after, "steer_vxlan") - steered(&xdp_before, "steer_vxlan"),
            N as u64
        );
        assert_eq!(
            steered(&xdp_after, "steer_pod") - steered(&xdp_before, "steer_pod"),
            N as u64
        );
        assert_eq!(steered(&xdp_after, "no_socket"), 0);
    }
    // Pod to pod on the gateway itself.
    let before = gw.counters();
    let r = bed
        .ping(&bed.ns(Ns::LocalPod('a')), bed.local_pod_ip('b'), N, &opts)
        .unwrap();
    assert!(r.all_received(), "{}", r.raw);
    assert_eq!(
        gw.counters().since(&before).event_count(Event::PodToPod),
        2 * N as u64
    );

    // The kernel's own VXLAN device on node 1 decapsulated our packets: its
    // RX counter moved, so they were well-formed VXLAN for a real VTEP.
    let (rx, _) = bed.link_stats(&bed.ns(Ns::Node(1)), "flannel.1").unwrap();
    assert!(rx >= N as u64, "flannel.1 on node 1 received {rx} packets");
    gw.stop();
    for dev in ["ul0", "gwp-a", "gwp-b"] {
        assert!(
            !bed.link_xdp_attached(&bed.ns(Ns::Gateway), dev).unwrap(),
            "XDP still attached to {dev} after stop"
        );
    }
}

#[test]
fn unrouted_traffic_is_dropped_with_a_named_counter() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("dataplane drop test") {
        return;
    }
    let bed = bed("it2");
    let gw = bed.start_gateway().expect("starting the gateway");
    let before = gw.counters();
    // 10.244.9.0/24 belongs to no node: the pod's packets reach the gateway
    // and must be counted as no_route, not vanish.
    let r = bed
        .ping(
            &bed.ns(Ns::LocalPod('a')),
            "10.244.9.9".parse().unwrap(),
            3,
            &PingOpts::default(),
        )
        .unwrap();
    assert_eq!(r.received, 0);
    let after = gw.counters();
    assert_eq!(after.since(&before).drop_count(DropReason::NoRoute), 3);
    gw.stop();
}

#[test]
fn tcp_both_ways_without_checksum_errors() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("dataplane iperf3 test") {
        return;
    }
    let bed = bed("it3");
    let gw = bed.start_gateway().expect("starting the gateway");
    let pod = bed.ns(Ns::LocalPod('a'));
    let remote = bed.ns(Ns::NodePod(1));
    let errs = |ns: &str| bed.nstat(ns, "TcpInCsumErrors").unwrap();
    let (pod_err0, remote_err0) = (errs(&pod), errs(&remote));
    for (server_ns, server_ip, client_ns) in [
        (&remote, bed.remote_pod_ip(1), &pod), // local pod -> remote pod (encap)
        (&pod, bed.local_pod_ip('a'), &remote), // remote pod -> local pod (decap)
    ] {
        for reverse in [false, true] {
            let r = bed
                .iperf3(server_ns, server_ip, client_ns, 2, reverse)
                .expect("iperf3 runs");
            assert!(
                r.bytes_received > 1_000_000,
                "{client_ns} -> {server_ip} (reverse={reverse}): only {} bytes\n{}",
                r.bytes_received,
                r.raw
            );
            eprintln!(
                "iperf3 {client_ns} -> {server_ip} reverse={reverse}: {:.1} Mbit/s, {} retransmits",
                r.bits_per_second / 1e6,
                r.retransmits
            );
        }
    }
    assert_eq!(
        errs(&pod),
        pod_err0,
        "TcpInCsumErrors moved in the local pod"
    );
    assert_eq!(
        errs(&remote),
        remote_err0,
        "TcpInCsumErrors moved in the remote pod"
    );
    let c = gw.counters();
    assert!(
        c.event_count(Event::EncapToPeer) > 1000 && c.event_count(Event::DecapToPod) > 1000,
        "{}",
        c.render()
    );
    gw.stop();
}

/// The `overpass` binary as an operator runs it: `overpass run --config`.
fn spawn_gateway(bed: &Testbed, dir: &std::path::Path) -> Child {
    let path = dir.join("overpass.toml");
    std::fs::write(&path, bed.gateway_config().to_toml()).unwrap();
    Command::new(env!("CARGO_BIN_EXE_overpass"))
        .args(["run", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning overpass")
}

#[test]
fn binary_serves_traffic_and_leaves_no_xdp_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("overpass run test") {
        return;
    }
    let bed = bed("it4");
    let dir = std::env::temp_dir().join(format!("overpass-it4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gw_ns = bed.ns(Ns::Gateway);
    let attached = |dev: &str| bed.link_xdp_attached(&gw_ns, dev).unwrap();

    for signal in ["TERM", "KILL"] {
        let mut child = KillOnDrop(spawn_gateway(&bed, &dir));
        wait_until(
            "XDP attached by overpass run",
            Duration::from_secs(10),
            || attached("ul0") && attached("gwp-a") && attached("gwp-b"),
        );
        // Give the control thread a moment to resolve next hops, then
        // prove traffic flows through the binary.
        let ok = (0..20).any(|_| {
            bed.ping(
                &bed.ns(Ns::LocalPod('a')),
                bed.remote_pod_ip(2),
                1,
                &PingOpts::default(),
            )
            .map(|r| r.all_received())
            .unwrap_or(false)
        });
        assert!(ok, "no ping made it through `overpass run`");
        Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        if signal == "TERM" {
            assert!(
                status.success(),
                "overpass run exited with {status} on SIGTERM"
            );
        }
        // bpf_link: the programs go away with the process, even on SIGKILL.
        wait_until(
            &format!("XDP detached after SIG{signal}"),
            Duration::from_secs(5),
            || !attached("ul0") && !attached("gwp-a") && !attached("gwp-b"),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Frames the kernel drops before the worker sees them (fill ring empty,
/// RX ring full) are counted from the sockets' XDP_STATISTICS: a socket
/// with a 64-frame fill ring that is never polled receives exactly 64 of
/// a burst, and every other frame the XDP program steered to it shows up
/// as an `xsk_*` drop once the counters are synced.
#[test]
fn kernel_drops_before_the_rx_ring_are_counted() {
    use overpass_dataplane::io::{PacketIo, Verdict};
    use overpass_xdp::abi::SteerCounter;

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("AF_XDP kernel drop statistics (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("dp5");
    let (counters, steering, mut io) = pod_socket(&bed, 'a', 64);

    let steered = || steering.counters().unwrap()[SteerCounter::SteerPod.index()];
    let before = steered();
    // 400 echo requests at once (preload); nobody polls the socket, so
    // none is answered and ping exits non-zero.
    let out = bed
        .exec(
            &bed.ns(Ns::LocalPod('a')),
            &["sh", "-c", "ping -q -l 400 -c 400 -W 1 10.244.1.2; true"],
        )
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    let sent = steered() - before;
    assert!(sent >= 300, "only {sent} frames steered to the socket");
    io.sync_kernel_counters();
    let s = counters.snapshot();
    let lost = s.drop_count(DropReason::XskRxDropped) + s.drop_count(DropReason::XskRxRingFull);
    eprintln!("{}", s.render());
    assert_eq!(lost, sent - 64, "{sent} steered, 64 fit the fill ring");
    assert!(s.event_count(Event::XskFillRingEmpty) > 0);
    // The 64 that fit are all there.
    let mut got = 0;
    for _ in 0..10 {
        got += io.poll(|_, _, _, _| Verdict::Drop(DropReason::NoRoute));
    }
    assert_eq!(got, 64);
    // Counters are folded in as deltas: syncing again adds nothing.
    io.sync_kernel_counters();
    assert_eq!(counters.snapshot(), s);
}

/// A TX ring with room for part of a batch takes that part; the rest waits
/// in the staging list for the next round instead of being dropped
/// (xsk-rs's `produce` is all-or-nothing). Copy mode transmits 32 frames
/// per kick, so after a first batch of 64 the 64-slot TX ring has room for
/// 32: the second batch of 64 goes out in two rounds, with no
/// `tx_ring_full`.
#[test]
fn a_partly_full_tx_ring_takes_what_fits_and_the_rest_waits() {
    use overpass_dataplane::io::{PacketIo, Verdict};

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("AF_XDP partial TX (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("dp6");
    let pod_ns = bed.ns(Ns::LocalPod('a'));
    let (counters, _steering, mut io) = pod_socket(&bed, 'a', 64);
    let pod_rx = || -> u64 {
        let out = bed
            .exec(
                &pod_ns,
                &["cat", "/sys/class/net/eth0/statistics/rx_packets"],
            )
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    // 64 echo requests at once; nobody answers them, so ping exits non-zero.
    let burst = || {
        bed.exec(
            &pod_ns,
            &["sh", "-c", "ping -q -l 64 -c 64 -W 1 10.244.1.2; true"],
        )
        .unwrap();
    };
    // Every frame goes back out of the port it came in on.
    let echo = |_: u16, _: &mut [u8], len: usize, _: &mut dyn overpass_dataplane::io::Spare| {
        Verdict::Tx { port: 0, len }
    };
    let rx0 = pod_rx();
    burst();
    assert_eq!(io.poll(echo), 64, "the first burst fills the RX ring");
    burst();
    assert_eq!(io.poll(echo), 64, "the second burst fills it again");
    let s = counters.snapshot();
    assert_eq!(
        s.drop_count(DropReason::TxRingFull),
        0,
        "frames the ring had no room for yet were dropped:\n{}",
        s.render()
    );
    for _ in 0..100 {
        if !io.tx_pending() {
            break;
        }
        io.poll(echo);
    }
    assert!(!io.tx_pending(), "transmissions still pending");
    let s = counters.snapshot();
    assert_eq!(s.event_count(Event::TxCompleted), 128, "{}", s.render());
    assert_eq!(s.drop_count(DropReason::TxRingFull), 0, "{}", s.render());
    // At least: the pod's own ARP exchange with its gateway may add one.
    let rx = pod_rx() - rx0;
    assert!(
        rx >= 128,
        "{rx} frames reached the pod's veth, 128 were sent"
    );
}

/// Every pod keeps its own frame budget: with 8 pods on one worker, all
/// pinging at once, every pod gets its replies and no pod's fill ring runs
/// dry (before, fill rings were topped up in port order until the UMEM ran
/// out, and the last pods got no frames at all).
#[test]
fn eight_pods_on_one_worker_all_get_frames() {
    use overpass_testkit::testbed::TestbedOptions;

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("frame budget test (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = Testbed::create_with(
        &TestbedSpec {
            tag: "dp8".to_string(),
            underlay_queues: 1,
        },
        &TestbedOptions {
            local_pods: 8,
            ..TestbedOptions::default()
        },
    )
    .expect("building the test bed");
    let gw = bed.start_gateway().expect("starting the gateway");
    assert_eq!(gw.info.xsk.len(), 9, "{:?}", gw.info.xsk);
    // Let the workers fold the kernel's statistics of the start once.
    std::thread::sleep(Duration::from_millis(300));
    let before = gw.counters();
    let pods = bed.local_pods();
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|&p| {
                let bed = &bed;
                s.spawn(move || {
                    (
                        p,
                        bed.ping(
                            &bed.ns(Ns::LocalPod(p)),
                            bed.remote_pod_ip(1),
                            5,
                            &PingOpts::default(),
                        ),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    std::thread::sleep(Duration::from_millis(300));
    let d = gw.counters().since(&before);
    for (p, r) in &results {
        let r = r.as_ref().expect("ping ran");
        assert!(
            r.all_received(),
            "pod {p}: {}/{} replies\n{}",
            r.received,
            r.transmitted,
            d.render()
        );
    }
    assert_eq!(
        d.event_count(Event::XskFillRingEmpty),
        0,
        "a fill ring ran dry\n{}",
        d.render()
    );
    assert_eq!(d.drop_count(DropReason::XskRxDropped), 0, "{}", d.render());
    gw.stop();
}

/// One copy-mode AF_XDP socket of `ring` frames on queue 0 of local pod
/// `pod`'s host end, behind the steering program (role pod: every IPv4
/// frame to the socket), with its own counters; no worker polls it.
fn pod_socket(
    bed: &Testbed,
    pod: char,
    ring: u32,
) -> (
    std::sync::Arc<overpass_dataplane::counters::WorkerCounters>,
    overpass_xdp::Steering,
    overpass::afxdp::xsk::XskIo,
) {
    use overpass::afxdp::xsk::{BindMode, PortSpec, XskIo};
    use overpass_xdp::{PortRole, Steering};
    let pod_if = bed.local_pod_iface(pod);
    overpass::host::netns::in_netns(Some(&bed.ns(Ns::Gateway)), || {
        let counters = std::sync::Arc::new(overpass_dataplane::counters::WorkerCounters::default());
        let mut steering = Steering::load(&[8472]).unwrap();
        let ifindex = overpass::host::iface::ifindex(&pod_if).unwrap();
        steering.attach(ifindex, PortRole::Pod, 0, 1).unwrap();
        let spec = PortSpec {
            ifname: pod_if.clone(),
            queue: 0,
            ring_size: ring,
        };
        let io = XskIo::open(&[spec], BindMode::Copy, counters.clone()).unwrap();
        steering.register_xsk(0, io.fds()[0]).unwrap();
        (counters, steering, io)
    })
    .unwrap()
}

/// `bind_mode = "zero-copy"` on a NIC without zero-copy (a veth) stops the
/// start with an error naming the interface, its driver and why.
#[test]
fn zero_copy_bind_on_a_veth_fails_naming_interface_driver_and_why() {
    use overpass::config::BindMode;

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("zero-copy bind refusal (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("dp7");
    let mut config = bed.gateway_config();
    config.underlay[0].bind_mode = BindMode::ZeroCopy;
    let e = overpass::lifecycle::Gateway::start(&config)
        .map(|_| ())
        .expect_err("a veth cannot bind zero-copy");
    let text = format!("{e:#}");
    for want in [
        "ul0 queue 0",
        "ZeroCopy",
        "driver veth",
        "no AF_XDP zero-copy support",
        "bind_mode",
    ] {
        assert!(text.contains(want), "{want:?} missing from: {text}");
    }
    // Nothing was left attached.
    assert!(!bed.link_xdp_attached(&bed.ns(Ns::Gateway), "ul0").unwrap());
}

/// With `underlay.pod_umem = "separate"` (what a zero-copy underlay gets
/// automatically) the pods' sockets use a UMEM of their own: a frame
/// crossing between the underlay and a pod is copied once into the other
/// UMEM, pod-to-pod frames still move by descriptor. Pings in every
/// direction arrive, with exact copy counts and no drops.
#[test]
fn pods_with_their_own_umem_copy_each_crossing_frame_once() {
    use overpass::config::PodUmem;

    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("separate pod UMEM (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("dp9");
    let mut config = bed.gateway_config();
    config.underlay[0].pod_umem = PodUmem::Separate;
    let gw = overpass::lifecycle::Gateway::start(&config).expect("starting the gateway");
    assert!(gw.wait_resolved(Duration::from_secs(5)));
    assert_eq!(gw.info.umem.len(), 1, "one worker");
    assert_eq!(gw.info.umem[0].len(), 2, "two UMEMs: {:?}", gw.info.umem);
    const N: u32 = 10;
    let opts = PingOpts::default();
    // (from, to, frames crossing between the UMEMs per ping: request and
    // reply each cross once, except pod to pod, which stays in the pods'.)
    let flows = [
        (bed.ns(Ns::LocalPod('a')), bed.remote_pod_ip(1), 2),
        (bed.ns(Ns::NodePod(2)), bed.local_pod_ip('b'), 2),
        (bed.ns(Ns::LocalPod('a')), bed.local_pod_ip('b'), 0),
    ];
    for (ns, dst, crossings) in &flows {
        let before = gw.counters();
        let r = bed.ping(ns, *dst, N, &opts).expect("ping runs");
        assert!(r.all_received(), "{ns} -> {dst}: {}", r.raw);
        let d = gw.counters().since(&before);
        assert_eq!(
            d.event_count(Event::CrossUmemCopy),
            u64::from(N) * crossings,
            "{ns} -> {dst}\n{}",
            d.render()
        );
        assert_eq!(d.total_drops(), 0, "{ns} -> {dst}\n{}", d.render());
    }
    // Every socket's real bind mode is in /metrics.
    let state = overpass::api::ApiState::new(
        gw.rib().clone(),
        gw.view(),
        overpass::api::Auth::new(None, false),
        1 << 20,
        "dataplane",
    );
    let server = overpass::api::Server::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    server.stop();
    for socket in ["ul0/0", "gwp-a/0", "gwp-b/0"] {
        let line = format!("overpass_xsk_bind_mode{{socket=\"{socket}\",mode=\"copy\"}} 1");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
    gw.stop();
}

/// `gateway.napi_busy_poll`: every socket gets SO_PREFER_BUSY_POLL,
/// SO_BUSY_POLL and SO_BUSY_POLL_BUDGET (read back at start: the start fails
/// unless the kernel holds them), the interfaces defer their interrupts as
/// docs/design.md says to, and the worker drives NAPI itself each round.
/// Pings both ways with exact counters and TCP both ways without checksum
/// errors, then the interfaces' deferral is put back.
#[test]
fn napi_busy_poll_carries_traffic_both_ways() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("preferred NAPI busy polling (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("dpn");
    let gw_ns = bed.ns(Ns::Gateway);
    let defer = |irqs: u32, timeout: u32| {
        for dev in ["ul0", "gwp-a", "gwp-b"] {
            bed.exec(
                &gw_ns,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "echo {irqs} > /sys/class/net/{dev}/napi_defer_hard_irqs && \
                         echo {timeout} > /sys/class/net/{dev}/gro_flush_timeout"
                    ),
                ],
            )
            .unwrap();
        }
    };
    defer(2, 200_000);
    let mut config = bed.gateway_config();
    config.gateway.napi_busy_poll = true;
    let gw = overpass::lifecycle::Gateway::start(&config).expect("starting the gateway");
    assert!(gw.wait_resolved(Duration::from_secs(5)));
    const N: u32 = 10;
    let opts = PingOpts::default();
    for (ns, dst, ev) in [
        (
            bed.ns(Ns::LocalPod('a')),
            bed.remote_pod_ip(1),
            Event::EncapToPeer,
        ),
        (
            bed.ns(Ns::NodePod(2)),
            bed.local_pod_ip('b'),
            Event::DecapToPod,
        ),
    ] {
        let before = gw.counters();
        let r = bed.ping(&ns, dst, N, &opts).expect("ping runs");
        assert!(r.all_received(), "{ns} -> {dst}: {}", r.raw);
        let d = gw.counters().since(&before);
        // Requests one way, replies the other: N of each direction.
        assert_eq!(d.event_count(ev), u64::from(N), "{}", d.render());
        assert_eq!(d.total_drops(), 0, "{}", d.render());
    }
    let pod = bed.ns(Ns::LocalPod('a'));
    let remote = bed.ns(Ns::NodePod(1));
    for (server_ns, server_ip, client_ns) in [
        (&remote, bed.remote_pod_ip(1), &pod),
        (&pod, bed.local_pod_ip('a'), &remote),
    ] {
        let r = bed
            .iperf3(server_ns, server_ip, client_ns, 2, false)
            .expect("iperf3 runs");
        assert!(r.bytes_received > 1_000_000, "{}", r.raw);
        eprintln!(
            "napi busy poll: iperf3 {client_ns} -> {server_ip}: {:.1} Mbit/s",
            r.bits_per_second / 1e6
        );
    }
    for ns in [&pod, &remote] {
        assert_eq!(bed.nstat(ns, "TcpInCsumErrors").unwrap(), 0, "{ns}");
    }
    gw.stop();
    defer(0, 0);
}
