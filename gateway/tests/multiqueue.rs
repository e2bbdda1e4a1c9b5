//! Multi-queue: one worker per underlay RX queue, each pinned to its own
//! core, on a veth with two queues; traffic spread by RSS over both queues
//! is served by both workers.

use overpass_dataplane::counters::Event;
use overpass_testkit::testbed::{Ns, PingOpts, Testbed, TestbedSpec, require_root};

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
        if served.iter().all(|&n| n > 0) {
            break;
        }
    }
    assert!(
        served.iter().all(|&n| n > 100),
        "both workers decapsulate: per-worker decap_to_pod = {served:?}"
    );
    gw.stop();
}
