//! Multi-queue: one worker per underlay RX queue, each pinned to its own
//! core, on a veth with two queues; traffic spread by RSS over both queues
//! is served by both workers. And serving fewer queues than are active
//! (`underlay.queues`): what lands on the others goes to the kernel, counted.

use std::time::{Duration, Instant};

use overpass_dataplane::counters::Event;
use overpass_testkit::testbed::{Ns, PYTHON, PingOpts, Testbed, TestbedSpec, require_root};

#[test]
fn two_queues_two_pinned_workers() {
    if !require_root("multi-queue dataplane test") {
        return;
    }
    let bed = Testbed::create(&TestbedSpec {
        tag: "mq1".to_string(),
        underlay_queues: 2,
    })
    .expect("building the test bed");
    // Pod veths need as many active queues as there are workers.
    let gw_ns = bed.ns(Ns::Gateway);
    for pod in ['a', 'b'] {
        let dev = bed.local_pod_iface(pod);
        bed.exec(&gw_ns, &["ethtool", "-L", &dev, "rx", "2", "tx", "2"])
            .unwrap();
        bed.exec(
            &bed.ns(Ns::LocalPod(pod)),
            &["ethtool", "-L", "eth0", "rx", "2", "tx", "2"],
        )
        .unwrap();
    }
    let gw = bed.start_gateway().expect("starting the gateway");
    let pinning = gw.info.pinning.clone();
    assert_eq!(
        pinning.len(),
        2,
        "one worker per underlay queue: {pinning:?}"
    );
    assert_ne!(
        pinning[0].1, pinning[1].1,
        "each worker on its own core: {pinning:?}"
    );
    let sockets: Vec<&str> = gw.info.xsk.iter().map(|(n, _)| n.as_str()).collect();
    for s in ["ul0/0", "ul0/1", "gwp-a/0", "gwp-a/1", "gwp-b/0", "gwp-b/1"] {
        assert!(sockets.contains(&s), "socket {s} missing: {sockets:?}");
    }

    // Both directions work.
    let opts = PingOpts::default();
    let r = bed
        .ping(&bed.ns(Ns::LocalPod('a')), bed.remote_pod_ip(1), 5, &opts)
        .unwrap();
    assert!(r.all_received(), "{}", r.raw);
    let r = bed
        .ping(&bed.ns(Ns::NodePod(2)), bed.local_pod_ip('b'), 5, &opts)
        .unwrap();
    assert!(r.all_received(), "{}", r.raw);

    // Many TCP flows from a remote pod: the kernel VXLAN device hashes each
    // inner flow to its own outer source port, RSS spreads them over ul0's
    // two queues, and each queue's worker decapsulates its share.
    let pod = bed.ns(Ns::LocalPod('a'));
    let remote = bed.ns(Ns::NodePod(1));
    let mut served = [0u64; 2];
    for _ in 0..4 {
        let r = bed
            .iperf3_parallel(&pod, bed.local_pod_ip('a'), &remote, 1, 8)
            .expect("iperf3 runs");
        assert!(r.bytes_received > 0, "{}", r.raw);
        let view = gw.view();
        for (w, c) in view.counters.iter().enumerate() {
            served[w] = c.events(Event::DecapToPod);
        }
        eprintln!("per-worker decap_to_pod so far: {served:?}");
        if served.iter().all(|&n| n > 100) {
            break;
        }
    }
    assert!(
        served.iter().all(|&n| n > 100),
        "both workers decapsulate: per-worker decap_to_pod = {served:?}"
    );
    gw.stop();
}

/// `ethtool -S {dev}` in `ns` as (name, value) pairs.
fn ethtool_stats(bed: &Testbed, ns: &str, dev: &str) -> Vec<(String, u64)> {
    let out = bed.exec(ns, &["ethtool", "-S", dev]).expect("ethtool -S");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn stat(stats: &[(String, u64)], name: &str) -> u64 {
    stats
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in ethtool -S: {stats:?}"))
}

/// Finding 7 of the hardening review: with `underlay.queues = 1` on an
/// underlay of two active queues, the XDP program must pass tunnel frames
/// that arrive on queue 1 to the kernel and count them `unserved_queue`.
/// Before, its slot arithmetic (`xsk_base + queue` = 1) put them in pod
/// `gwp-a`'s socket slot, where the kernel dropped them (a socket bound to
/// another device: `rx_queue_1_drops` on ul0) while the log said they went
/// to the kernel.
///
/// Many UDP flows from node 1's pod: the kernel VXLAN device gives each its
/// own outer source port, and the switch hashes them over ul0's two queues.
/// Queue 0's are decapsulated by the one worker; queue 1's must reach the
/// gateway namespace's kernel, which has no socket on 8472 (`UdpNoPorts`).
#[test]
fn unserved_underlay_queue_goes_to_the_kernel_counted() {
    if !require_root("unserved underlay queue test") {
        return;
    }
    let bed = Testbed::create(&TestbedSpec {
        tag: "h15euq".to_string(),
        underlay_queues: 2,
    })
    .expect("building the test bed");
    let mut config = bed.gateway_config();
    config.underlay[0].queues = Some(1);
    let gw = overpass::lifecycle::Gateway::start(&config).expect("starting the gateway");
    assert!(gw.wait_resolved(Duration::from_secs(5)), "next hops");
    assert_eq!(
        gw.info.pinning.len(),
        1,
        "one worker: {:?}",
        gw.info.pinning
    );

    let gw_ns = bed.ns(Ns::Gateway);
    let xdp = |name: &str| -> u64 {
        gw.xdp_counters()
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    };
    let no_ports = || bed.nstat(&gw_ns, "UdpNoPorts").unwrap();

    const FLOWS: u64 = 200;
    let (unserved0, steered0, no_socket0) =
        (xdp("unserved_queue"), xdp("steer_vxlan"), xdp("no_socket"));
    let kernel0 = no_ports();
    let eth0 = ethtool_stats(&bed, &gw_ns, "ul0");
    let before = gw.counters();
    // One datagram per flow, each from its own source port.
    let send = format!(
        "import socket\nfor p in range(20000, 20000 + {FLOWS}):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.bind(('', p))\n    s.sendto(b'unserved-queue', ('{}', 9))\n    s.close()\n",
        bed.local_pod_ip('a')
    );
    bed.exec(&bed.ns(Ns::NodePod(1)), &[PYTHON, "-c", &send])
        .expect("sending from node 1's pod");

    // Every datagram ends up decapsulated (queue 0) or in the kernel
    // (queue 1); wait for that (bounded), then judge.
    let accounted =
        || gw.counters().since(&before).event_count(Event::DecapToPod) + (no_ports() - kernel0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while accounted() < FLOWS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let delta = gw.counters().since(&before);
    let decap = delta.event_count(Event::DecapToPod);
    let kernel = no_ports() - kernel0;
    let unserved = xdp("unserved_queue") - unserved0;
    let steered = xdp("steer_vxlan") - steered0;
    let no_socket = xdp("no_socket") - no_socket0;
    let eth1 = ethtool_stats(&bed, &gw_ns, "ul0");
    let moved = |name: &str| stat(&eth1, name) - stat(&eth0, name);
    let report = format!(
        "{FLOWS} flows: decap_to_pod {decap}, gateway kernel UdpNoPorts {kernel}; XDP steer_vxlan {steered}, unserved_queue {unserved}, no_socket {no_socket}; \
         ul0 queue 0: xdp_packets {}, redirect {}, drops {}; queue 1: xdp_packets {}, redirect {}, drops {}\n{}",
        moved("rx_queue_0_xdp_packets"),
        moved("rx_queue_0_xdp_redirect"),
        moved("rx_queue_0_drops"),
        moved("rx_queue_1_xdp_packets"),
        moved("rx_queue_1_xdp_redirect"),
        moved("rx_queue_1_drops"),
        delta.render()
    );
    eprintln!("{report}");
    assert_eq!(
        moved("rx_queue_1_drops"),
        0,
        "the kernel dropped frames that arrived on unserved queue 1 (steered into another port's socket slot)\n{report}"
    );
    assert_eq!(
        moved("rx_queue_1_xdp_redirect"),
        0,
        "frames from unserved queue 1 were redirected to a socket\n{report}"
    );
    assert_eq!(
        decap + kernel,
        FLOWS,
        "every flow is decapsulated (queue 0) or reaches the gateway's kernel (queue 1)\n{report}"
    );
    assert!(
        kernel > 0 && decap > 0,
        "the switch hashed the flows over both queues\n{report}"
    );
    let xdp_names: Vec<&str> = gw.xdp_counters().iter().map(|(n, _)| *n).collect();
    assert!(
        xdp_names.contains(&"unserved_queue"),
        "the XDP program has no unserved_queue counter: {xdp_names:?}"
    );
    assert_eq!(
        unserved, kernel,
        "every frame passed from queue 1 is counted as unserved_queue\n{report}"
    );
    assert_eq!(
        steered, decap,
        "only queue 0's frames are steered\n{report}"
    );
    assert_eq!(no_socket, 0, "{report}");
    assert_eq!(delta.total_drops(), 0, "{report}");
    gw.stop();
    bed.destroy().unwrap();
}
