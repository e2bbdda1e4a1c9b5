//! The whole gateway on a zero-copy NIC: `overpass run` in a QEMU guest (TCG)
//! whose underlay is virtio-net or igb, joined through a tap to the underlay
//! switch of a test bed on the host, whose Flannel-style nodes (kernel VXLAN
//! devices) and Calico-style IP-in-IP node are the gateway's peers. The
//! guest's pods are veth pairs inside the guest, served in copy mode from a
//! UMEM of their own while the underlay binds zero-copy (docs/design.md,
//! "UMEM classes"); every frame that crosses between the two is copied once.
//!
//! The host side drives the guest step by step through its command agent
//! (`testkit/support/guest_agent.py`, over TCP from node 1's namespace):
//! build the pods, start the gateway, and between the steps ping, run iperf3
//! and read the API from the host. Shown per NIC:
//! - `overpass check` in the guest reads the NIC's `xdp-features` from the
//!   kernel (`xsk-zerocopy`) and plans native XDP and a zero-copy underlay
//!   with copy-mode pods;
//! - the API reports the underlay socket zero-copy and the pod sockets copy;
//! - pings both ways: decap to a pod, encap from a pod, transit between two
//!   host peers (VXLAN ↔ IP-in-IP), each with the counters that match what
//!   was sent (and one cross-UMEM copy per frame that crossed);
//! - an iperf3 TCP transfer with zero TcpInCsumErrors on both ends;
//! - no XDP program left on any of the gateway's links after SIGTERM, nor
//!   after SIGKILL of a restarted gateway.
//!
//! Needs root; under CI=true it fails rather than skips. One guest at a time
//! (two cores: each guest's TCG vCPU takes one).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use overpass::api::client::Client;
use overpass_dataplane::counters::{CounterKind as _, Event};
use overpass_testkit::guest::{self, GuestAgent, GuestRun, GuestSpec, Nic};
use overpass_testkit::testbed::{
    GATEWAY_VTEP_MAC, IPIP_NODE, NODES, Ns, PingOpts, Testbed, TestbedSpec, VXLAN_PORT, VXLAN_VNI,
    require_root,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// The gateway's underlay address in the bed (the guest's eth0).
const GW: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const AGENT_PORT: u16 = 7000;
const API_PORT: u16 = 9180;
const POD_MTU: u32 = 1450;

#[test]
fn virtio_net_gateway_runs_zero_copy_with_copy_mode_pods() {
    gateway_in_a_guest(Nic::Virtio, "gzv");
}

#[test]
fn igb_gateway_runs_zero_copy_with_copy_mode_pods() {
    gateway_in_a_guest(Nic::Igb, "gzi");
}

/// Builds pods 'a' and 'b' in the guest exactly as the test bed builds its
/// local pods (Calico-style: a /32 on the pod's eth0, default route via
/// 169.254.1.1, which the host end owns), and for igb the queue layout that
/// works around Linux 6.18.15's igb RX wakeup (see testkit/tests/guest.rs).
fn guest_setup(bed: &Testbed, nic: Nic) -> String {
    let mut s = String::from("sysctl -qw net.ipv6.conf.all.disable_ipv6=1\n");
    if nic == Nic::Igb {
        s += "ethtool -L eth0 combined 5\nethtool -X eth0 equal 1\n";
    }
    for p in ['a', 'b'] {
        let (dev, ip) = (bed.local_pod_iface(p), bed.local_pod_ip(p));
        s += &format!(
            "ip netns add p{p}\n\
             ip -n p{p} link set lo up\n\
             ip link add {dev} address {host_mac} mtu {POD_MTU} type veth peer name eth0 netns p{p} address {pod_mac} mtu {POD_MTU}\n\
             ip addr add 169.254.1.1/32 dev {dev}\n\
             ip link set {dev} up\n\
             ip route add {ip}/32 dev {dev} scope link\n\
             ip -n p{p} addr add {ip}/32 dev eth0\n\
             ip -n p{p} link set eth0 up\n\
             ip -n p{p} route add 169.254.1.1 dev eth0 scope link\n\
             ip -n p{p} route add default via 169.254.1.1 dev eth0\n\
             ip netns exec p{p} ethtool -K eth0 tx off >/dev/null\n",
            host_mac = bed.local_host_end_mac(p),
            pod_mac = bed.local_pod_mac(p),
        );
    }
    s
}

/// The gateway's configuration in the guest: the bed's gateway identity
/// (underlay address, VTEP MAC, podCIDR, peers) on the guest's eth0, one
/// queue, bind mode and pod UMEM left at their defaults ("auto").
fn guest_config(bed: &Testbed) -> String {
    let mut s = format!(
        "[gateway]\npod_cidr = \"{}\"\nunderlay_ip = \"{GW}\"\nvtep_mac = \"{GATEWAY_VTEP_MAC}\"\n\n\
         [[underlay]]\ninterface = \"eth0\"\nqueues = 1\n",
        bed.gateway_pod_cidr(),
    );
    for p in ['a', 'b'] {
        s += &format!(
            "\n[[pod]]\nname = \"{p}\"\ninterface = \"{}\"\nip = \"{}\"\nmac = \"{}\"\n",
            bed.local_pod_iface(p),
            bed.local_pod_ip(p),
            bed.local_pod_mac(p)
        );
    }
    for n in NODES {
        s += &format!(
            "\n[[peer]]\nname = \"n{n}\"\npod_cidr = \"{}\"\nunderlay_ip = \"{}\"\nencap = \"vxlan\"\n\
             vni = {VXLAN_VNI}\nport = {VXLAN_PORT}\nvtep_mac = \"{}\"\n",
            bed.node_pod_cidr(n),
            bed.node_underlay_ip(n),
            bed.node_vtep_mac(n)
        );
    }
    s += &format!(
        "\n[[peer]]\nname = \"n{IPIP_NODE}\"\npod_cidr = \"{}\"\nunderlay_ip = \"{}\"\nencap = \"ipip\"\n",
        bed.node_pod_cidr(IPIP_NODE),
        bed.node_underlay_ip(IPIP_NODE),
    );
    s += &format!("\n[api]\nlisten = \"{GW}:{API_PORT}\"\n\n[state]\ndir = \"/tmp/overpass\"\n");
    s
}

/// The gateway's API as seen from node 1 (the API answers on the guest's
/// underlay address; only tunnel traffic is steered away from its kernel).
struct Api<'a> {
    ns: &'a str,
    client: Client,
}

impl Api<'_> {
    fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        overpass::host::netns::in_netns(Some(self.ns), || self.client.get(path))?
    }

    fn ready(&self) -> bool {
        overpass::host::netns::in_netns(Some(self.ns), || {
            self.client
                .request("GET", "/readyz", None, None)
                .is_ok_and(|r| r.status == 200)
        })
        .unwrap_or(false)
    }

    fn event(&self, counters: &serde_json::Value, e: Event) -> u64 {
        counters["events"]
            .as_array()
            .and_then(|a| a.iter().find(|c| c["name"] == e.name()))
            .and_then(|c| c["value"].as_u64())
            .unwrap_or_else(|| panic!("no event {} in {counters}", e.name()))
    }
}

/// The counters that are not zero, `name=value` (for failure messages).
fn nonzero(counters: &serde_json::Value) -> String {
    ["events", "drops", "xdp"]
        .iter()
        .flat_map(|k| counters[k].as_array().into_iter().flatten())
        .filter(|c| c["value"].as_u64().unwrap_or(0) != 0)
        .map(|c| format!("{}={}", c["name"].as_str().unwrap_or("?"), c["value"]))
        .collect::<Vec<_>>()
        .join(" ")
}

const LINKS: [&str; 3] = ["eth0", "gwp-a", "gwp-b"];

/// Starts the gateway in the guest as `name` and waits until the API says
/// ready; on failure, panics with the gateway's log.
fn start_gateway(agent: &mut GuestAgent, api: &Api<'_>, name: &str) {
    agent
        .spawn(
            name,
            &[
                env!("CARGO_BIN_EXE_overpass"),
                "run",
                "--config",
                "/tmp/overpass.toml",
            ],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !api.ready() {
        let r = agent.wait(name, Duration::from_millis(500)).unwrap();
        if r.status.is_some() || Instant::now() > deadline {
            panic!(
                "the gateway in the guest did not become ready ({:?}):\n{}",
                r.status, r.out
            );
        }
    }
}

/// Links of the gateway that still have an XDP program, read in the guest.
fn links_with_xdp(agent: &mut GuestAgent) -> Vec<String> {
    LINKS
        .iter()
        .filter(|dev| {
            let r = agent
                .exec(
                    &["ip", "-d", "-j", "link", "show", "dev", dev],
                    Duration::from_secs(10),
                )
                .unwrap();
            assert!(r.success(), "ip link show {dev}: {}", r.out);
            let v: serde_json::Value = serde_json::from_str(&r.out).expect("ip -j output");
            let xdp = &v[0]["xdp"];
            !xdp["prog"].is_null()
                || xdp["attached"].as_array().is_some_and(|a| !a.is_empty())
                || xdp["mode"].as_u64().is_some_and(|m| m != 0)
        })
        .map(|d| d.to_string())
        .collect()
}

fn gateway_in_a_guest(nic: Nic, tag: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !require_root("the whole gateway in a guest (QEMU, tap devices, network namespaces)") {
        return;
    }
    guest::install().expect("deploy/guest/install.sh");
    let started = Instant::now();
    let bed = Testbed::create(&TestbedSpec {
        tag: tag.to_string(),
        underlay_queues: 1,
    })
    .expect("building the test bed");
    let ul = bed.ns(Ns::Underlay);
    // The guest takes the gateway's place on the switch: the bed's own
    // gateway uplink (and with it ul0 in the unused gateway namespace) goes.
    bed.exec(&ul, &["ip", "link", "del", "sw-gw"]).unwrap();
    let mut spec = GuestSpec::new(nic, &ul, tag);
    spec.host_addr = None;
    spec.bridge = Some("br0".to_string());
    spec.guest_addr = Some(format!("{GW}/24"));
    spec.mac = bed.gateway_underlay_mac().to_string();
    spec.mem_mb = 1024;
    spec.timeout = Duration::from_secs(280);
    let listen = format!("{GW}:{AGENT_PORT}");
    let command = guest::agent_command(&listen);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = GuestRun::spawn(&spec, &command).expect("starting the guest");

    let n1 = bed.ns(Ns::Node(1));
    let mut agent = GuestAgent::connect(
        &n1,
        SocketAddr::from((GW, AGENT_PORT)),
        Duration::from_secs(120),
    )
    .expect("the guest's agent");
    let booted = started.elapsed();
    agent
        .sh(&guest_setup(&bed, nic))
        .expect("building the guest's pods");
    agent
        .write("/tmp/overpass.toml", &guest_config(&bed))
        .unwrap();
    // `overpass check` asks the guest's kernel what the NIC can do.
    let check = agent
        .exec(
            &[
                env!("CARGO_BIN_EXE_overpass"),
                "check",
                "--config",
                "/tmp/overpass.toml",
                "--json",
            ],
            Duration::from_secs(60),
        )
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(&check.out)
        .unwrap_or_else(|e| panic!("overpass check --json in the guest: {e}:\n{}", check.out));
    let finding = |name: &str, subject: &str| {
        report["findings"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|f| f["check"] == name && f["subject"] == subject)
            })
            .cloned()
            .unwrap_or_else(|| panic!("no {name} finding for {subject}: {report}"))
    };
    let zc = finding("nic.zero_copy", "eth0");
    eprintln!(
        "{}: overpass check: {}; {}",
        nic.as_str(),
        zc["message"],
        finding("nic.plan", "eth0")["message"]
    );
    assert_eq!(zc["severity"], "ok", "{zc}");
    let msg = zc["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!("driver {}, xdp-features [", nic.driver()))
            && msg.contains("xsk-zerocopy"),
        "{zc}"
    );
    let plan = finding("nic.plan", "eth0");
    assert!(
        plan["message"]
            .as_str()
            .is_some_and(|m| m.contains("native XDP") && m.contains("AF_XDP zero-copy")),
        "{plan}"
    );
    for dev in ["gwp-a", "gwp-b"] {
        let plan = finding("nic.plan", dev);
        assert!(
            plan["message"]
                .as_str()
                .is_some_and(|m| m.contains("AF_XDP copy mode")),
            "{plan}"
        );
    }

    let api = Api {
        ns: &n1,
        client: Client::new(&format!("http://{GW}:{API_PORT}"), None),
    };
    start_gateway(&mut agent, &api, "gw");
    let ready = started.elapsed();

    // Bind modes, as the API reports them.
    let ifaces = api.get("/api/v1/interfaces").unwrap();
    let socket_modes: Vec<(String, String, String)> = ifaces["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .flat_map(|i| {
            i["sockets"].as_array().into_iter().flatten().map(|s| {
                (
                    i["name"].as_str().unwrap_or_default().to_string(),
                    i["xdp_mode"].as_str().unwrap_or_default().to_string(),
                    s["xsk_mode"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect();
    eprintln!(
        "{}: sockets (interface, XDP mode, bind mode): {socket_modes:?}",
        nic.as_str()
    );
    let mode_of = |dev: &str| {
        socket_modes
            .iter()
            .find(|(n, _, _)| n == dev)
            .unwrap_or_else(|| panic!("no socket on {dev}: {ifaces}"))
    };
    assert_eq!(mode_of("eth0").1, "native", "{ifaces}");
    assert_eq!(mode_of("eth0").2, "zero-copy", "{ifaces}");
    for dev in ["gwp-a", "gwp-b"] {
        assert_eq!(mode_of(dev).2, "copy", "{ifaces}");
    }

    // Decap to a pod (and the replies encapsulated back): node 1's pod
    // pings pod a. Every frame crosses the UMEM boundary once.
    const N: u64 = 10;
    let opts = PingOpts::default();
    let node_pod = bed.ns(Ns::NodePod(1));
    let before = api.get("/api/v1/counters").unwrap();
    let r = bed
        .ping(&node_pod, bed.local_pod_ip('a'), N as u32, &opts)
        .unwrap();
    assert!(r.all_received(), "{}", r.raw);
    let after = api.get("/api/v1/counters").unwrap();
    let delta = |e: Event| api.event(&after, e) - api.event(&before, e);
    assert_eq!(delta(Event::DecapToPod), N, "{}", nonzero(&after));
    assert_eq!(delta(Event::EncapToPeer), N, "{}", nonzero(&after));
    assert_eq!(delta(Event::CrossUmemCopy), 2 * N, "{}", nonzero(&after));
    assert_eq!(
        after["total_drops"],
        before["total_drops"],
        "{}",
        nonzero(&after)
    );

    // Full-size frames (a 1450-byte inner packet, a 1500-byte outer IP
    // packet) both ways.
    let big = PingOpts {
        size: Some(POD_MTU - 28),
        dont_fragment: true,
        ..PingOpts::default()
    };
    let r = bed.ping(&node_pod, bed.local_pod_ip('a'), 3, &big).unwrap();
    assert!(
        r.all_received(),
        "{}\n{}",
        r.raw,
        nonzero(&api.get("/api/v1/counters").unwrap())
    );

    // Encap from a pod: pod b pings node 2's pod from inside the guest.
    let r = agent
        .exec(
            &[
                "ip",
                "netns",
                "exec",
                "pb",
                "ping",
                "-c",
                "5",
                "-i",
                "0.2",
                "-W",
                "5",
                &bed.remote_pod_ip(2).to_string(),
            ],
            Duration::from_secs(60),
        )
        .unwrap();
    assert!(
        r.success() && r.out.contains("5 received"),
        "pod b -> node 2's pod: {}",
        r.out
    );

    // Transit: node 1's pod to the IP-in-IP node's pod through the gateway
    // (requests VXLAN -> IP-in-IP, replies back), underlay to underlay.
    let _ipip = bed.start_ipip_peer().expect("IP-in-IP endpoint");
    bed.route_via_gateway(1, &bed.node_pod_cidr(IPIP_NODE))
        .unwrap();
    let before = api.get("/api/v1/counters").unwrap();
    let r = bed
        .ping(&node_pod, bed.remote_pod_ip(IPIP_NODE), N as u32, &opts)
        .unwrap();
    assert!(r.all_received(), "{}", r.raw);
    let after = api.get("/api/v1/counters").unwrap();
    let delta = |e: Event| api.event(&after, e) - api.event(&before, e);
    assert_eq!(delta(Event::Transit), 2 * N, "{}", nonzero(&after));
    assert_eq!(
        delta(Event::CrossUmemCopy),
        0,
        "transit stays in the underlay's UMEM: {}",
        nonzero(&after)
    );
    assert_eq!(
        after["total_drops"],
        before["total_drops"],
        "{}",
        nonzero(&after)
    );

    // iperf3 TCP from node 1's pod to pod a; no checksum errors either end.
    agent
        .spawn(
            "iperf3",
            &[
                "ip",
                "netns",
                "exec",
                "pa",
                "iperf3",
                "-s",
                "-1",
                "-B",
                "10.244.0.2",
            ],
        )
        .unwrap();
    let iperf_deadline = Instant::now() + Duration::from_secs(60);
    let client = loop {
        let out = bed
            .exec(
                &node_pod,
                &[
                    "iperf3",
                    "-c",
                    &bed.local_pod_ip('a').to_string(),
                    "-t",
                    "3",
                    "-J",
                ],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // iperf3 3.12 exits 0 with -J even when it could not connect: the
        // JSON's "error" says so.
        let refused = text.contains("Connection refused");
        if out.status.success() && !refused {
            break text;
        }
        // The server may not listen yet; it must not have exited.
        let server = agent.wait("iperf3", Duration::from_millis(300)).unwrap();
        assert!(
            refused && server.status.is_none() && iperf_deadline > Instant::now(),
            "iperf3 client: {text}\niperf3 server in the guest ({:?}): {}",
            server.status,
            server.out
        );
    };
    let report: serde_json::Value = serde_json::from_str(&client).expect("iperf3 JSON");
    let bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let bytes = report["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 0, "{client}");
    let server = agent.wait("iperf3", Duration::from_secs(30)).unwrap();
    assert!(server.success(), "iperf3 server: {}", server.out);
    let guest_csum = agent
        .exec(
            &[
                "ip",
                "netns",
                "exec",
                "pa",
                "nstat",
                "-asz",
                "TcpInCsumErrors",
            ],
            Duration::from_secs(10),
        )
        .unwrap();
    let guest_errors: u64 = guest_csum
        .out
        .lines()
        .find_map(|l| l.strip_prefix("TcpInCsumErrors"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("nstat in pod a: {}", guest_csum.out));
    assert_eq!(guest_errors, 0, "TcpInCsumErrors in the guest's pod a");
    assert_eq!(bed.nstat(&node_pod, "TcpInCsumErrors").unwrap(), 0);

    // SIGTERM: the gateway stops cleanly and detaches every program.
    agent.signal("gw", libc::SIGTERM).unwrap();
    let r = agent.wait("gw", Duration::from_secs(30)).unwrap();
    assert_eq!(r.status, Some(0), "gateway after SIGTERM:\n{}", r.out);
    assert_eq!(
        links_with_xdp(&mut agent),
        Vec::<String>::new(),
        "after SIGTERM"
    );

    // A restart (the persisted route set and VTEP MAC), traffic, SIGKILL: the
    // kernel detaches the programs with the process's links.
    start_gateway(&mut agent, &api, "gw2");
    let r = bed
        .ping(&node_pod, bed.local_pod_ip('b'), 3, &opts)
        .unwrap();
    assert!(r.all_received(), "after the restart: {}", r.raw);
    agent.signal("gw2", libc::SIGKILL).unwrap();
    let r = agent.wait("gw2", Duration::from_secs(30)).unwrap();
    assert_eq!(r.status, Some(128 + libc::SIGKILL), "{}", r.out);
    assert_eq!(
        links_with_xdp(&mut agent),
        Vec::<String>::new(),
        "after SIGKILL"
    );

    agent.quit().unwrap();
    let out = run.wait().expect("the guest");
    assert!(
        out.status.success(),
        "{}: guest ended {}:\n{}\n{}",
        nic.as_str(),
        out.status,
        out.output,
        out.stderr
    );
    eprintln!(
        "guest gateway {}: agent up {:.1} s, gateway ready {:.1} s after start; iperf3 {:.1} Mbit/s \
         ({bytes} bytes); whole run {:.1} s",
        nic.as_str(),
        booted.as_secs_f64(),
        ready.as_secs_f64(),
        bits / 1e6,
        out.elapsed.as_secs_f64()
    );
}
