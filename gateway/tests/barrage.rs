//! Barrage: 20,000 malformed and hostile tunnel frames, crafted with scapy
//! (testkit/support/barrage.py) and sent from the bed's remote nodes and
//! from an underlay host that is no configured peer. Every frame must be
//! counted under the drop reason its family names (exact totals, every other
//! reason unmoved), nothing may be lost on the way (the XDP program steered
//! them all; the AF_XDP rings dropped none), the workers must still run, and
//! pods must still reach each other through the gateway afterwards.
//!
//! The bed's switch has br_netfilter's bridge-nf-call-* off (checked here):
//! with them on, the bridge itself validates IPv4 headers and drops frames
//! with bad checksums or lengths before they reach the gateway, and a test
//! like this one would test the bridge.
//!
//! Needs root; under CI=true it fails rather than skips. Tag `h15ebg`.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use overpass_dataplane::counters::{CounterKind, DropReason, Event};
use overpass_testkit::testbed::{
    self, IPIP_NODE, Ns, PingOpts, Testbed, TestbedSpec, require_root,
};

const TAG: &str = "h15ebg";

/// The XDP counter that steers a family to the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Steer {
    Vxlan,
    Ipip,
}

/// A family of frames: how barrage.py builds it is keyed by `name`; what
/// it must come to is here.
struct Family {
    name: &'static str,
    count: u64,
    reason: DropReason,
    steer: Steer,
}

const fn fam(name: &'static str, count: u64, reason: DropReason, steer: Steer) -> Family {
    Family {
        name,
        count,
        reason,
        steer,
    }
}

/// Senders: n1 = a configured Flannel (VXLAN) node, n3 = the configured
/// IP-in-IP node, x = an underlay host no peer is configured for. Order of
/// the pipeline's checks: outer IPv4 (lengths, options, checksum, fragment,
/// destination), peer, encapsulation, UDP (lengths, port, checksum), VXLAN
/// (I flag, VNI), inner Ethernet (length, VTEP MAC, tags, ethertype), inner
/// IPv4 (lengths, checksum), ECN, route, TTL, hairpin; each family breaks
/// exactly one of them.
const FAMILIES: [Family; 28] = {
    use DropReason::*;
    use Steer::{Ipip, Vxlan};
    [
        // n1: the outer IPv4 header.
        fam("outer_ipv4_truncated", 700, Ipv4Malformed, Vxlan),
        fam("outer_ipv4_length_below_header", 700, Ipv4Malformed, Vxlan),
        fam("outer_ipv4_bad_checksum", 800, Ipv4Checksum, Vxlan),
        fam("outer_ipv4_options", 700, OuterIpv4Options, Vxlan),
        fam("outer_first_fragment", 700, OuterFragment, Vxlan),
        fam("outer_not_local", 700, OuterNotLocal, Vxlan),
        // n1: UDP and VXLAN.
        fam("udp_length_beyond_datagram", 700, UdpMalformed, Vxlan),
        fam("udp_length_below_header", 700, UdpMalformed, Vxlan),
        fam("udp_bad_checksum", 800, UdpChecksum, Vxlan),
        fam("vxlan_truncated", 700, VxlanTruncated, Vxlan),
        fam("vxlan_without_i_flag", 700, VxlanNoIFlag, Vxlan),
        fam("vxlan_wrong_vni", 800, UnknownVni, Vxlan),
        fam("vxlan_wrong_port", 700, UnknownVni, Vxlan),
        // n1: the inner frame.
        fam("inner_frame_truncated", 700, InnerTruncated, Vxlan),
        fam("inner_wrong_vtep_mac", 700, InnerDstMac, Vxlan),
        fam("inner_vlan_tag", 700, InnerVlan, Vxlan),
        fam("inner_not_ipv4", 700, InnerNotIpv4, Vxlan),
        fam("inner_ipv4_malformed", 700, Ipv4Malformed, Vxlan),
        fam("inner_ipv4_bad_checksum", 700, Ipv4Checksum, Vxlan),
        fam("inner_ttl_0_or_1", 700, TtlExpired, Vxlan),
        fam("inner_no_route", 700, NoRoute, Vxlan),
        fam("inner_hairpin", 700, Hairpin, Vxlan),
        fam("ecn_ce_over_not_ect", 700, EcnCeNotEct, Vxlan),
        // Encapsulation and peer.
        fam("ipip_from_vxlan_node", 700, EncapMismatch, Ipip),
        fam("vxlan_from_ipip_node", 700, EncapMismatch, Vxlan),
        fam("ipip_later_fragment", 700, OuterFragment, Ipip),
        fam("vxlan_from_unknown_peer", 800, UnknownPeer, Vxlan),
        fam("ipip_from_unknown_peer", 700, UnknownPeer, Ipip),
    ]
};

/// The unconfigured underlay host: namespace `{P}-x` (removed with the bed),
/// `eth0` 198.18.0.99 on the switch.
const STRANGER_IP: &str = "198.18.0.99";
const STRANGER_MAC: &str = "02:01:00:00:00:63";

fn add_stranger(bed: &Testbed) -> String {
    let ns = format!("{}-x", bed.prefix());
    let ul = bed.ns(Ns::Underlay);
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().expect("running ip");
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["netns", "add", &ns]);
    bed.exec(
        &ns,
        &[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    )
    .unwrap();
    ip(&[
        "-n",
        &ns,
        "link",
        "add",
        "eth0",
        "address",
        STRANGER_MAC,
        "type",
        "veth",
        "peer",
        "name",
        "sw-x",
        "netns",
        &ul,
    ]);
    ip(&["-n", &ul, "link", "set", "sw-x", "master", "br0", "up"]);
    ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{STRANGER_IP}/24"),
        "dev",
        "eth0",
    ]);
    ip(&["-n", &ns, "link", "set", "eth0", "up"]);
    ns
}

#[test]
fn barrage_of_malformed_tunnel_frames_is_counted_by_reason() {
    if !require_root("barrage test (network namespaces, XDP, AF_XDP, scapy)") {
        return;
    }
    let total: u64 = FAMILIES.iter().map(|f| f.count).sum();
    assert_eq!(total, 20_000);

    let bed = Testbed::create(&TestbedSpec {
        tag: TAG.to_string(),
        underlay_queues: 1,
    })
    .expect("building the test bed");
    let switch_nf = bed
        .switch_netfilter()
        .expect("reading the switch's sysctls");
    assert!(
        switch_nf.iter().all(|(_, v)| *v == 0),
        "the bed's switch hands frames to netfilter, which drops malformed IPv4 before the gateway: {switch_nf:?}"
    );
    let stranger = add_stranger(&bed);
    let gw = bed.start_gateway().expect("starting the gateway");

    // Working before: pod a ↔ node 1's pod.
    let opts = PingOpts::default();
    let pod_a = bed.ns(Ns::LocalPod('a'));
    let r = bed.ping(&pod_a, bed.remote_pod_ip(1), 3, &opts).unwrap();
    assert!(r.all_received(), "before the barrage: {}", r.raw);

    let m = |mac: overpass_dataplane::wire::ethernet::MacAddr| mac.to_string();
    let n1_pod = bed.remote_pod_ip(1);
    let [a, b, c, _] = n1_pod.octets();
    let spec = serde_json::json!({
        "senders": {
            "n1": {"ns": bed.ns(Ns::Node(1)), "iface": "eth0",
                   "mac": m(bed.node_underlay_mac(1)), "ip": bed.node_underlay_ip(1).to_string()},
            "n3": {"ns": bed.ns(Ns::Node(IPIP_NODE)), "iface": "eth0",
                   "mac": m(bed.node_underlay_mac(IPIP_NODE)),
                   "ip": bed.node_underlay_ip(IPIP_NODE).to_string()},
            "x": {"ns": stranger, "iface": "eth0", "mac": STRANGER_MAC, "ip": STRANGER_IP},
        },
        "gw": {"mac": m(bed.gateway_underlay_mac()), "ip": bed.gateway_underlay_ip().to_string(),
               "vtep": m(testbed::GATEWAY_VTEP_MAC)},
        // Inner sources stay node 1's pod, inside its podCIDR.
        "n1": {"vtep": m(bed.node_vtep_mac(1)), "pod": n1_pod.to_string(),
               "pod_net": format!("{a}.{b}.{c}")},
        "n3": {"pod": bed.remote_pod_ip(IPIP_NODE).to_string()},
        "pod_a": bed.local_pod_ip('a').to_string(),
        "vni": testbed::VXLAN_VNI,
        "vxlan_port": testbed::VXLAN_PORT,
        "other_vxlan_port": 4789,
        "families": FAMILIES.iter().map(|f| (f.name, f.count)).collect::<BTreeMap<_, _>>(),
    });
    assert!(
        bed.gateway_config().underlay[0].vxlan_ports.contains(&4789),
        "vxlan_wrong_port needs 4789 steered by the XDP program"
    );

    let xdp = |name: &str| -> u64 {
        gw.xdp_counters()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no XDP counter {name}"))
    };
    let xdp_names = ["steer_vxlan", "steer_ipip", "no_socket", "unserved_queue"];
    let xdp_before: Vec<u64> = xdp_names.iter().map(|n| xdp(n)).collect();
    let before = gw.counters();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../testkit/support/barrage.py");
    let out = Command::new(testbed::PYTHON)
        .arg(script)
        .arg(spec.to_string())
        .output()
        .expect("running barrage.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "barrage.py failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("barrage.py printed no JSON ({e}): {stdout}"));
    for f in &FAMILIES {
        assert_eq!(
            report["sent"][f.name].as_u64(),
            Some(f.count),
            "{}: {report}",
            f.name
        );
    }
    eprintln!("barrage.py sent {total} frames in {} s", report["seconds"]);

    // Every frame is received once (bounded wait), then the kernel's socket
    // statistics are folded in (every 100 ms) before judging.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.counters().since(&before).event_count(Event::RxUnderlay) < total
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let delta = gw.counters().since(&before);
    let xdp_delta: BTreeMap<&str, u64> = xdp_names
        .iter()
        .zip(&xdp_before)
        .map(|(n, b)| (*n, xdp(n) - b))
        .collect();

    let mut want: BTreeMap<&'static str, u64> = BTreeMap::new();
    for f in &FAMILIES {
        *want.entry(f.reason.name()).or_default() += f.count;
    }
    let got: BTreeMap<&'static str, u64> = DropReason::all()
        .map(|r| (r.name(), delta.drop_count(r)))
        .filter(|(_, n)| *n != 0)
        .collect();
    let mut table = String::from("drop reason                 want    got\n");
    for r in DropReason::all() {
        let (w, g) = (
            want.get(r.name()).copied().unwrap_or(0),
            delta.drop_count(r),
        );
        if w != 0 || g != 0 {
            table += &format!("{:<24} {w:>7} {g:>7}\n", r.name());
        }
    }
    table += &format!(
        "{:<24} {total:>7} {:>7}\nXDP {xdp_delta:?}\n",
        "total",
        delta.total_drops()
    );
    eprintln!("{table}{}", delta.render());

    // Nothing lost before the gateway: the XDP program steered every frame
    // to a socket, none fell back or was passed, the rings dropped none.
    let want_steer = |s: Steer| -> u64 {
        FAMILIES
            .iter()
            .filter(|f| f.steer == s)
            .map(|f| f.count)
            .sum()
    };
    assert_eq!(
        (xdp_delta["steer_vxlan"], xdp_delta["steer_ipip"]),
        (want_steer(Steer::Vxlan), want_steer(Steer::Ipip)),
        "frames lost before the XDP program (or steered elsewhere)\n{table}"
    );
    assert_eq!(xdp_delta["no_socket"], 0, "{table}");
    assert_eq!(xdp_delta["unserved_queue"], 0, "{table}");
    assert_eq!(delta.drop_count(DropReason::XskRxRingFull), 0, "{table}");
    assert_eq!(delta.drop_count(DropReason::XskRxDropped), 0, "{table}");
    assert_eq!(
        delta.event_count(Event::RxUnderlay),
        total,
        "frames received from the underlay\n{table}"
    );
    // Every one of them dropped under its family's reason, none forwarded.
    assert_eq!(got, want, "drops by reason\n{table}");
    for e in [Event::DecapToPod, Event::Transit] {
        assert_eq!(delta.event_count(e), 0, "{}\n{table}", e.name());
    }

    // Alive and forwarding.
    assert_eq!(gw.workers_running(), 1, "a worker died");
    let r = bed.ping(&pod_a, bed.remote_pod_ip(1), 5, &opts).unwrap();
    assert!(r.all_received(), "pod a -> node 1's pod after: {}", r.raw);
    let r = bed
        .ping(&bed.ns(Ns::NodePod(1)), bed.local_pod_ip('a'), 5, &opts)
        .unwrap();
    assert!(r.all_received(), "node 1's pod -> pod a after: {}", r.raw);
    gw.stop();
    bed.destroy().unwrap();
}
