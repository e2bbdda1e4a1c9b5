//! Interop end to end, with tools no one here wrote: IP-in-IP to a
//! Calico-style node (a user-space RFC 2003 endpoint, there being no kernel
//! ipip module here), transit between VXLAN and IP-in-IP nodes, scapy's
//! dissection of the gateway's real output, PMTU discovery (ping, tracepath)
//! and traceroute through the gateway's ICMP errors.
//!
//! Each test builds its own bed (tags `ix*`), runs the real gateway in
//! process, and needs root; under CI=true they fail rather than skip. They
//! run one at a time (two cores; the worker busy-polls one).

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Mutex;

use overpass_dataplane::counters::{CounterKind, DropReason, Event};
use overpass_testkit::testbed::{
    self, IPIP_NODE, Ns, PingOpts, Testbed, TestbedOptions, TestbedSpec, require_root,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// The gateway's own overlay address: the source of the ICMP errors it sends.
const GATEWAY_OVERLAY_IP: &str = "10.244.0.0";

fn bed_with(tag: &str, options: &TestbedOptions) -> Testbed {
    Testbed::create_with(
        &TestbedSpec {
            tag: tag.to_string(),
            underlay_queues: 1,
        },
        options,
    )
    .expect("building the test bed")
}

fn bed(tag: &str) -> Testbed {
    bed_with(tag, &TestbedOptions::default())
}

/// stdout + stderr of a command run in `ns` (any exit status).
fn run_in(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {args:?} in {ns}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The addresses of traceroute hop `hop` (`traceroute -n` output lines
/// look like ` 2  10.244.0.0  0.321 ms  0.2 ms  0.2 ms`).
fn traceroute_hop(out: &str, hop: u32) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next()? == hop.to_string()).then(|| {
                words
                    .filter(|w| w.parse::<Ipv4Addr>().is_ok())
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
        })
        .flatten()
        .collect()
}

/// (1) Local pod ↔ the IP-in-IP node's pod address: ping both ways, TCP both
/// ways with no checksum errors, counted as encap/decap.
#[test]
fn ipip_node_ping_and_tcp_both_ways() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("IP-in-IP end to end (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("ix1");
    let gw = bed.start_gateway().expect("starting the gateway");
    let peer = bed.start_ipip_peer().expect("IP-in-IP endpoint");
    let pod = bed.ns(Ns::LocalPod('a'));
    let n3 = bed.ns(Ns::Node(IPIP_NODE));
    let n3_ip = bed.remote_pod_ip(IPIP_NODE);
    const N: u32 = 10;
    for (ns, dst) in [(&pod, n3_ip), (&n3, bed.local_pod_ip('a'))] {
        let before = gw.counters();
        let r = bed.ping(ns, dst, N, &PingOpts::default()).unwrap();
        assert!(r.all_received(), "{ns} -> {dst}: {}", r.raw);
        let after = gw.counters();
        assert_eq!(
            after.since(&before).event_count(Event::EncapToPeer),
            u64::from(N),
            "{ns} -> {dst}\n{}",
            after.render()
        );
        assert_eq!(
            after.since(&before).event_count(Event::DecapToPod),
            u64::from(N),
            "{ns} -> {dst}\n{}",
            after.render()
        );
        assert_eq!(
            after.total_drops(),
            before.total_drops(),
            "{}",
            after.render()
        );
    }

    let errs = |ns: &str| bed.nstat(ns, "TcpInCsumErrors").unwrap();
    let (pod_err0, n3_err0) = (errs(&pod), errs(&n3));
    let before = gw.counters();
    for (server_ns, server_ip, client_ns) in [
        (&n3, n3_ip, &pod),                 // pod -> n3: encap
        (&pod, bed.local_pod_ip('a'), &n3), // n3 -> pod: decap
    ] {
        for reverse in [false, true] {
            let r = bed
                .iperf3(server_ns, server_ip, client_ns, 2, reverse)
                .expect("iperf3 runs");
            eprintln!(
                "iperf3 {client_ns} -> {server_ip} reverse={reverse}: {:.1} Mbit/s, {} retransmits",
                r.bits_per_second / 1e6,
                r.retransmits
            );
            assert!(
                r.bytes_received > 1_000_000,
                "{client_ns} -> {server_ip} (reverse={reverse}): only {} bytes\n{}",
                r.bytes_received,
                r.raw
            );
        }
    }
    assert_eq!(errs(&pod), pod_err0, "TcpInCsumErrors moved in the pod");
    assert_eq!(errs(&n3), n3_err0, "TcpInCsumErrors moved on node 3");
    let after = gw.counters();
    assert!(
        after.since(&before).event_count(Event::EncapToPeer) > 1000
            && after.since(&before).event_count(Event::DecapToPod) > 1000,
        "{}",
        after.render()
    );
    eprintln!(
        "gateway after iperf3:\n{}\nnode 3:\n{}",
        after.render(),
        run_in(&n3, &["ip", "-s", "link", "show", "dev", testbed::IPIP_DEV])
    );
    let summary = peer.stop().unwrap();
    eprintln!("{summary}");
    assert!(summary.contains("errors=0"), "{summary}");
    gw.stop();
}

/// Transit between real stacks: node 1's kernel VXLAN (a route to node 3's
/// podCIDR via the gateway's VTEP, as a Flannel node gets for any lease) and
/// node 3's IP-in-IP endpoint, re-encapsulated by the gateway both ways.
#[test]
fn transit_between_flannel_and_ipip_nodes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("VXLAN <-> IP-in-IP transit (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("ix2");
    let gw = bed.start_gateway().expect("starting the gateway");
    let _peer = bed.start_ipip_peer().expect("IP-in-IP endpoint");
    bed.route_via_gateway(1, &bed.node_pod_cidr(IPIP_NODE))
        .unwrap();
    let before = gw.counters();
    const N: u32 = 5;
    let r = bed
        .ping(
            &bed.ns(Ns::NodePod(1)),
            bed.remote_pod_ip(IPIP_NODE),
            N,
            &PingOpts::default(),
        )
        .unwrap();
    assert!(r.all_received(), "{}", r.raw);
    let after = gw.counters();
    // Requests VXLAN -> IP-in-IP, replies IP-in-IP -> VXLAN.
    assert_eq!(
        after.since(&before).event_count(Event::Transit),
        2 * u64::from(N),
        "{}",
        after.render()
    );
    assert_eq!(after.total_drops(), before.total_drops());
    gw.stop();
}

/// Runs testkit/support/scapy_check.py against `bed` (every default case
/// when `cases` is empty) and returns its JSON verdict.
fn scapy_check(bed: &Testbed, cases: &[&str]) -> serde_json::Value {
    let m = |mac: overpass_dataplane::wire::ethernet::MacAddr| mac.to_string();
    let spec = serde_json::json!({
        "ns": {
            "pa": bed.ns(Ns::LocalPod('a')),
            "n1": bed.ns(Ns::Node(1)),
            "n2": bed.ns(Ns::Node(2)),
            "n3": bed.ns(Ns::Node(IPIP_NODE)),
        },
        "mac": {
            "gw_ul": m(bed.gateway_underlay_mac()),
            "gw_vtep": m(testbed::GATEWAY_VTEP_MAC),
            "n1_ul": m(bed.node_underlay_mac(1)),
            "n2_ul": m(bed.node_underlay_mac(2)),
            "n3_ul": m(bed.node_underlay_mac(IPIP_NODE)),
            "n1_vtep": m(bed.node_vtep_mac(1)),
            "n2_vtep": m(bed.node_vtep_mac(2)),
            "pa": m(bed.local_pod_mac('a')),
            "pa_host": m(bed.local_host_end_mac('a')),
        },
        "ip": {
            "gw_ul": bed.gateway_underlay_ip().to_string(),
            "n1_ul": bed.node_underlay_ip(1).to_string(),
            "n2_ul": bed.node_underlay_ip(2).to_string(),
            "n3_ul": bed.node_underlay_ip(IPIP_NODE).to_string(),
            "pa": bed.local_pod_ip('a').to_string(),
        },
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testkit/support/scapy_check.py"
    );
    let out = Command::new(testbed::PYTHON)
        .arg(script)
        .arg(spec.to_string())
        .args(cases)
        .output()
        .expect("running scapy_check.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scapy_check.py failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("scapy_check.py printed no JSON ({e}): {stdout}"))
}

/// (2) scapy crafts IP-in-IP and VXLAN packets at the gateway and dissects
/// what the gateway emits on the underlay or to a pod (see
/// testkit/support/scapy_check.py for the exact rules checked).
#[test]
fn scapy_dissects_the_gateway_output() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("scapy interop (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("ix3");
    let gw = bed.start_gateway().expect("starting the gateway");
    let before = gw.counters();
    let verdict = scapy_check(&bed, &[]);
    let cases = verdict["cases"].as_object().expect("cases");
    let mut failed = vec![];
    for (name, case) in cases {
        eprintln!("scapy {name}: ok={} seen: {}", case["ok"], case["seen"]);
        if case["ok"] != true {
            failed.push(format!("{name}: {}", case["failures"]));
        }
    }
    assert_eq!(cases.len(), 7, "{verdict}");
    let after = gw.counters();
    assert!(
        failed.is_empty(),
        "scapy checks failed:\n{}\n{}",
        failed.join("\n"),
        after.render()
    );
    // (a) ×2 decap, (b) ×2 encap, 3 transits; nothing dropped on the way.
    assert_eq!(after.since(&before).event_count(Event::DecapToPod), 2);
    assert_eq!(after.since(&before).event_count(Event::Transit), 3);
    assert_eq!(after.since(&before).event_count(Event::EcnCePropagated), 1);
    assert!(after.since(&before).event_count(Event::EncapToPeer) >= 2);
    gw.stop();
}

/// Strict reverse-path filtering (issue 15, finding 8): the configured
/// peers n1 (VXLAN) and n3 (IP-in-IP) send inner sources that do not route
/// back to them — another node's podCIDR, a local pod's address, addresses
/// outside every route; to a local pod and in transit to n3. None is
/// delivered (scapy sniffs the pod and n3, up to legitimate sentinels sent
/// after them on the same paths), and `inner_source_spoofed` rises by
/// exactly the number sent, with no other drop.
#[test]
fn spoofed_inner_sources_from_configured_peers_are_dropped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("reverse-path filter (network namespaces, XDP, AF_XDP)") {
        return;
    }
    assert_eq!(
        DropReason::InnerSourceSpoofed.name(),
        "inner_source_spoofed"
    );
    let bed = bed("ixrp");
    let gw = bed.start_gateway().expect("starting the gateway");
    let before = gw.counters();
    let verdict = scapy_check(&bed, &["spoofed_inner_sources"]);
    let case = &verdict["cases"]["spoofed_inner_sources"];
    eprintln!("scapy spoofed_inner_sources: {}", case["seen"]);
    let d = gw.counters().since(&before);
    assert_eq!(case["ok"], true, "{}\n{}", case["failures"], d.render());
    let sent = case["sent"].as_u64().expect("sent");
    assert_eq!(sent, 30, "{verdict}");
    assert_eq!(
        d.drop_count(DropReason::InnerSourceSpoofed),
        sent,
        "{}",
        d.render()
    );
    assert_eq!(d.total_drops(), sent, "{}", d.render());
    // Only the sentinels went through: two decapsulated, one in transit.
    assert_eq!(d.event_count(Event::DecapToPod), 2, "{}", d.render());
    assert_eq!(d.event_count(Event::Transit), 1, "{}", d.render());
    gw.stop();
}

/// (3) PMTU discovery across the 1450-byte VXLAN tunnel from a pod whose own
/// MTU is 1500 (both local pods): ping learns the MTU from the gateway's
/// frag-needed, tracepath (from the other pod) discovers it too, and
/// traceroute shows the gateway as the first hop.
#[test]
fn pmtu_discovery_and_traceroute_through_the_gateway() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("PMTU / traceroute (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed_with(
        "ix4",
        &TestbedOptions {
            local_pod_mtu: 1500,
            ..TestbedOptions::default()
        },
    );
    let gw = bed.start_gateway().expect("starting the gateway");
    let pod = bed.ns(Ns::LocalPod('a'));
    let dst = bed.remote_pod_ip(1);
    let before = gw.counters();
    let r = bed
        .ping(
            &pod,
            dst,
            3,
            &PingOpts {
                size: Some(1472),
                dont_fragment: true,
                ..PingOpts::default()
            },
        )
        .unwrap();
    assert_eq!(r.received, 0, "{}", r.raw);
    assert!(
        r.raw.contains(&format!(
            "From {GATEWAY_OVERLAY_IP} icmp_seq=1 Frag needed and DF set (mtu = 1450)"
        )),
        "{}",
        r.raw
    );
    let after = gw.counters();
    assert!(after.since(&before).event_count(Event::IcmpFragNeeded) >= 1);
    assert!(after.since(&before).drop_count(DropReason::TooBig) >= 1);
    // The pod's kernel learnt it: the next full-size DF ping fits 1450.
    let r = bed
        .ping(
            &pod,
            dst,
            2,
            &PingOpts {
                size: Some(1422),
                dont_fragment: true,
                ..PingOpts::default()
            },
        )
        .unwrap();
    assert!(r.all_received(), "{}", r.raw);

    // tracepath from the other pod, whose kernel has not learnt the PMTU yet.
    let out = run_in(
        &bed.ns(Ns::LocalPod('b')),
        &["timeout", "30", "tracepath", "-n", &dst.to_string()],
    );
    eprintln!("tracepath:\n{out}");
    assert!(out.contains("pmtu 1450"), "{out}");
    assert!(out.contains(GATEWAY_OVERLAY_IP), "{out}");
    assert!(out.contains("Resume: pmtu 1450"), "{out}");

    // traceroute (UDP): the gateway answers TTL 1 with time exceeded.
    let out = run_in(
        &pod,
        &[
            "timeout",
            "40",
            "traceroute",
            "-n",
            "-w",
            "2",
            "-m",
            "6",
            &dst.to_string(),
        ],
    );
    eprintln!("traceroute:\n{out}");
    assert!(
        traceroute_hop(&out, 1)
            .iter()
            .any(|a| a == GATEWAY_OVERLAY_IP),
        "hop 1 is not the gateway:\n{out}"
    );
    assert!(
        out.contains(&dst.to_string()),
        "destination not reached:\n{out}"
    );
    let after = gw.counters();
    assert!(after.since(&before).event_count(Event::IcmpTimeExceeded) >= 3);
    assert_eq!(
        after.event_count(Event::IcmpRateLimited),
        0,
        "{}",
        after.render()
    );
    gw.stop();
}

/// (4) Time exceeded toward a remote pod: traceroute from node 1's pod to a
/// local pod lists the gateway's overlay address as a hop (the error went
/// back through VXLAN to a real kernel VTEP).
#[test]
fn traceroute_from_a_remote_pod_sees_the_gateway() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("traceroute from a remote pod (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("ix5");
    let gw = bed.start_gateway().expect("starting the gateway");
    let dst = bed.local_pod_ip('a');
    let out = run_in(
        &bed.ns(Ns::NodePod(1)),
        &[
            "timeout",
            "40",
            "traceroute",
            "-n",
            "-w",
            "2",
            "-m",
            "6",
            &dst.to_string(),
        ],
    );
    eprintln!("traceroute:\n{out}");
    let hops: Vec<Vec<String>> = (1..=6).map(|h| traceroute_hop(&out, h)).collect();
    assert!(
        hops.iter().flatten().any(|a| a == GATEWAY_OVERLAY_IP),
        "the gateway is not a hop:\n{out}"
    );
    assert!(
        out.contains(&dst.to_string()),
        "destination not reached:\n{out}"
    );
    let c = gw.counters();
    assert!(
        c.event_count(Event::IcmpTimeExceeded) >= 3,
        "{}",
        c.render()
    );
    gw.stop();
}

/// RFC 1812 rate limit, not a cap: 100 TTL-1 probes at 100/s (a tenth of
/// the gateway's 1000/s limit) must all be answered with time exceeded.
/// Needs the worker to feed the pipeline its clock (`Pipeline::set_clock`
/// once per poll round); without it the bucket never refills after the
/// initial burst of 50, and every later error counts as `icmp_rate_limited`.
#[test]
fn icmp_rate_limit_refills_over_time() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("ICMP rate limit refill (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("ix6");
    let gw = bed.start_gateway().expect("starting the gateway");
    let pod = bed.ns(Ns::LocalPod('a'));
    let dst = bed.remote_pod_ip(1).to_string();
    let out = run_in(
        &pod,
        &[
            "timeout", "30", "ping", "-n", "-t", "1", "-c", "100", "-i", "0.01", "-W", "1", &dst,
        ],
    );
    let answered = out
        .lines()
        .filter(|l| {
            l.contains(&format!("From {GATEWAY_OVERLAY_IP}")) && l.contains("Time to live exceeded")
        })
        .count();
    let c = gw.counters();
    assert!(
        answered >= 95,
        "only {answered} of 100 TTL-1 probes at 100/s got time exceeded \
         (icmp_time_exceeded={}, icmp_rate_limited={})\n{}",
        c.event_count(Event::IcmpTimeExceeded),
        c.event_count(Event::IcmpRateLimited),
        c.render()
    );
    assert_eq!(c.event_count(Event::IcmpRateLimited), 0, "{}", c.render());
    gw.stop();
}

/// An IP-in-IP node's tunnel MTU (1480) is larger than the local pods' veth
/// MTU (1450). A DF packet between the two sizes must not vanish: a router
/// answers it with frag-needed (mtu = 1450), as the kernel would for its
/// own egress device (delivered to the 1450-byte veth, the veth's kernel
/// side would drop it silently: a PMTU black hole). Without DF it is
/// fragmented to the pod's MTU and reassembled by the pod.
#[test]
fn ipip_to_pod_above_pod_mtu_is_not_black_holed() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("pod MTU black hole (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed("ix7");
    let gw = bed.start_gateway().expect("starting the gateway");
    let _peer = bed.start_ipip_peer().expect("IP-in-IP endpoint");
    let n3 = bed.ns(Ns::Node(IPIP_NODE));
    let dst = bed.local_pod_ip('a');
    // Fits the 1450 pod MTU: delivered.
    let fits = PingOpts {
        size: Some(1422),
        dont_fragment: true,
        ..PingOpts::default()
    };
    let r = bed.ping(&n3, dst, 2, &fits).unwrap();
    assert!(r.all_received(), "{}", r.raw);
    // 1480 bytes without DF (first, before n3 learns the PMTU from a
    // frag-needed below): the gateway fragments it to the pod's MTU after
    // decapsulation, and the pod's kernel reassembles it.
    let no_df = PingOpts {
        size: Some(1452),
        dont_fragment: false,
        ..fits
    };
    let before = gw.counters();
    let r = bed.ping(&n3, dst, 3, &no_df).unwrap();
    let after = gw.counters();
    assert!(r.all_received(), "{}\n{}", r.raw, after.render());
    assert_eq!(
        after.since(&before).event_count(Event::Fragmented),
        3,
        "{}",
        after.render()
    );
    assert_eq!(after.since(&before).event_count(Event::FragmentsOut), 6);
    assert_eq!(after.since(&before).drop_count(DropReason::TooBig), 0);
    // 1480 bytes: fits the IP-in-IP tunnel, not the pod's veth.
    let big = PingOpts {
        size: Some(1452),
        ..fits
    };
    let before = gw.counters();
    let r = bed.ping(&n3, dst, 2, &big).unwrap();
    let after = gw.counters();
    let links = run_in(
        &bed.ns(Ns::Gateway),
        &["ip", "-s", "link", "show", "dev", &bed.local_pod_iface('a')],
    );
    assert!(
        r.all_received() || r.raw.contains("mtu = 1450"),
        "1480-byte DF packets to a 1450-MTU pod neither delivered nor answered with \
         frag-needed (decap_to_pod +{}, icmp_frag_needed +{}):\n{}\n{}\n{links}",
        after.since(&before).event_count(Event::DecapToPod),
        after.since(&before).event_count(Event::IcmpFragNeeded),
        r.raw,
        after.render()
    );
    gw.stop();
}

/// A packet without DF larger than the path is fragmented by the gateway
/// as a router would (RFC 791, RFC 1812 §5.2.6), never by the VTEP: from a
/// 1500-MTU pod across the 1450-byte VXLAN tunnel the fragments are whole
/// VXLAN packets, and the remote pod's kernel reassembles them. A datagram
/// the pod's own kernel already fragmented (3000 bytes → 1500-byte pieces)
/// is fragmented again, offsets continuing. Replies come back (fragmented
/// by the remote node's kernel, which knows its own tunnel MTU).
#[test]
fn packets_without_df_are_fragmented_across_the_tunnel() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("fragmentation (network namespaces, XDP, AF_XDP)") {
        return;
    }
    let bed = bed_with(
        "ix8",
        &TestbedOptions {
            local_pod_mtu: 1500,
            ..TestbedOptions::default()
        },
    );
    let gw = bed.start_gateway().expect("starting the gateway");
    let pod = bed.ns(Ns::LocalPod('a'));
    let dst = bed.remote_pod_ip(1);
    // (ping -s, packets the gateway cuts, fragments it sends) for 3 pings:
    // 1500 bytes → 1444 + 76; 3000 bytes leave the pod as 1500 + 1500 + 68,
    // and each 1500-byte fragment is cut again in two.
    for (size, cut, out) in [(1472, 3, 6), (3000, 6, 12)] {
        let opts = PingOpts {
            size: Some(size),
            dont_fragment: false,
            ..PingOpts::default()
        };
        let before = gw.counters();
        let r = bed.ping(&pod, dst, 3, &opts).unwrap();
        let after = gw.counters();
        assert!(
            r.all_received(),
            "ping -s {size}: {}\n{}",
            r.raw,
            after.render()
        );
        assert!(!r.raw.contains("Frag needed"), "{}", r.raw);
        assert_eq!(
            after.since(&before).event_count(Event::Fragmented),
            cut,
            "ping -s {size}"
        );
        assert_eq!(
            after.since(&before).event_count(Event::FragmentsOut),
            out,
            "ping -s {size}: {}",
            after.render()
        );
        assert_eq!(after.since(&before).drop_count(DropReason::TooBig), 0);
        assert_eq!(after.since(&before).drop_count(DropReason::FragNoFrame), 0);
    }
    gw.stop();
}
