//! The real steering program, loaded into the kernel and judged frame by frame.
//!
//! `fixtures_through_test_run` runs a table of {description, frame, role, expected verdict}
//! through BPF_PROG_TEST_RUN and checks the XDP action and that exactly the expected
//! counters moved. `attach_to_veth_and_detach_on_drop` attaches to a veth in a throwaway
//! network namespace, sends real traffic through it, and checks the bpf_link goes away.
//!
//! Both need root (CAP_BPF + CAP_NET_ADMIN). Without root they print a loud SKIPPED
//! line, unless CI=true, where they fail: CI must never go green without running them.

use std::error::Error as StdError;
use std::fs::File;
use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::thread;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, IpFragOffset, IpNumber,
    Ipv4Header, Ipv6FlowLabel, Ipv6Header, SingleVlanHeader, UdpHeader, VlanId, VlanPcp,
};
use nix::sched::{CloneFlags, setns};
use nix::unistd::geteuid;
use overpass_xdp::abi::{XDP_PASS, XDP_REDIRECT};
use overpass_xdp::{COUNTER_MAX, Error, PortRole, SteerCounter, Steering, XdpMode};

/// Loopback: always exists, has one RX queue, and is all BPF_PROG_TEST_RUN accepts as an
/// ingress device without creating one.
const LO_IFINDEX: u32 = 1;
const VXLAN_PORTS: [u16; 2] = [8472, 4789];

// ---------------------------------------------------------------------------------------
// Root handling

/// True when the test can run. Without root: panics under CI=true, otherwise prints a
/// loud SKIPPED line and returns false.
fn have_root(test: &str) -> bool {
    if geteuid().is_root() {
        return true;
    }
    let why = format!(
        "{test} needs root to load BPF programs and create network namespaces (euid {})",
        geteuid()
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{why}; CI=true, so this is a failure, not a skip: run the tests as root");
    }
    // Straight to the process's stderr: eprintln! would be captured by the test harness
    // and shown only for failing tests, i.e. never for a skip.
    let _ = writeln!(
        std::io::stderr(),
        "\n******** SKIPPED (needs root): {why} ********\n"
    );
    false
}

fn chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Loading must work when root: a failure here is a real failure, never a skip.
fn load(test: &str) -> Steering {
    Steering::load(&VXLAN_PORTS)
        .unwrap_or_else(|err| panic!("{test}: Steering::load failed: {}", chain(&err)))
}

fn counters(steering: &Steering) -> [u64; COUNTER_MAX] {
    steering
        .counters()
        .unwrap_or_else(|err| panic!("reading counters: {}", chain(&err)))
}

// ---------------------------------------------------------------------------------------
// Frames

const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const NODE_A: [u8; 4] = [192, 168, 56, 11];
const NODE_B: [u8; 4] = [192, 168, 56, 12];
const POD_A: [u8; 4] = [10, 244, 1, 5];
const POD_B: [u8; 4] = [10, 244, 2, 7];

fn eth(ether_type: EtherType, payload: &[u8]) -> Vec<u8> {
    let mut frame = Ethernet2Header {
        source: PEER_MAC,
        destination: GW_MAC,
        ether_type,
    }
    .to_bytes()
    .to_vec();
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 header carrying `payload` with protocol `proto`; `edit` may change fields
/// before the checksum is computed.
fn ipv4(
    src: [u8; 4],
    dst: [u8; 4],
    proto: IpNumber,
    payload: &[u8],
    edit: impl FnOnce(&mut Ipv4Header),
) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("payload fits an IPv4 packet");
    let mut hdr = Ipv4Header::new(len, 64, proto, src, dst).expect("valid IPv4 header");
    edit(&mut hdr);
    hdr.header_checksum = hdr.calc_header_checksum();
    let mut packet = hdr.to_bytes().to_vec();
    packet.extend_from_slice(payload);
    packet
}

fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let hdr = UdpHeader::without_ipv4_checksum(src_port, dst_port, payload.len())
        .expect("valid UDP header");
    let mut datagram = hdr.to_bytes().to_vec();
    datagram.extend_from_slice(payload);
    datagram
}

/// Pod-to-pod traffic: the inner packet of every tunnel fixture and the pod fixtures.
fn inner_ipv4() -> Vec<u8> {
    ipv4(
        POD_A,
        POD_B,
        IpNumber::UDP,
        &udp(40000, 53, b"query"),
        |_| {},
    )
}

/// VXLAN header (flags: VNI valid, VNI 1) + inner Ethernet frame.
fn vxlan_payload() -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 0x01, 0];
    payload.extend(eth(EtherType::IPV4, &inner_ipv4()));
    payload
}

fn underlay_udp(src_port: u16, dst_port: u16) -> Vec<u8> {
    let payload = vxlan_payload();
    eth(
        EtherType::IPV4,
        &ipv4(
            NODE_B,
            NODE_A,
            IpNumber::UDP,
            &udp(src_port, dst_port, &payload),
            |_| {},
        ),
    )
}

fn vxlan(dst_port: u16) -> Vec<u8> {
    underlay_udp(51234, dst_port)
}

fn ipip() -> Vec<u8> {
    eth(
        EtherType::IPV4,
        &ipv4(NODE_B, NODE_A, IpNumber::IPV4, &inner_ipv4(), |_| {}),
    )
}

fn ipv4_with_options_vxlan() -> Vec<u8> {
    let payload = udp(51234, 8472, &vxlan_payload());
    let mut frame = eth(
        EtherType::IPV4,
        &ipv4(NODE_B, NODE_A, IpNumber::UDP, &payload, |_| {}),
    );
    // Grow the header to ihl 6 with one 4-byte option word (NOPs + EOL) so the UDP header
    // sits at a variable offset, as the parser must handle.
    frame[14] = 0x46;
    frame.splice(34..34, [1, 1, 1, 0]);
    frame
}

fn udp_fragment(offset_units: u16, more_fragments: bool) -> Vec<u8> {
    let payload = udp(51234, 8472, &vxlan_payload());
    eth(
        EtherType::IPV4,
        &ipv4(NODE_B, NODE_A, IpNumber::UDP, &payload, |hdr| {
            hdr.more_fragments = more_fragments;
            hdr.fragment_offset = IpFragOffset::try_new(offset_units).expect("13-bit offset");
        }),
    )
}

fn tcp_ssh() -> Vec<u8> {
    // A TCP header's worth of bytes is enough: the program never looks past IPv4 for TCP.
    let mut tcp = vec![0u8; 20];
    tcp[..4].copy_from_slice(&[0xc0, 0x00, 0, 22]);
    tcp[12] = 0x50;
    eth(
        EtherType::IPV4,
        &ipv4(NODE_B, NODE_A, IpNumber::TCP, &tcp, |_| {}),
    )
}

fn arp_request() -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &PEER_MAC,
        &NODE_B,
        &[0; 6],
        &NODE_A,
    )
    .expect("valid ARP packet");
    let mut frame = eth(EtherType::ARP, &arp.to_bytes());
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame
}

fn ipv6_udp() -> Vec<u8> {
    let payload = udp(51234, 4789, &vxlan_payload());
    let hdr = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: u16::try_from(payload.len()).expect("fits"),
        next_header: IpNumber::UDP,
        hop_limit: 64,
        source: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        destination: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    };
    let mut packet = hdr.to_bytes().to_vec();
    packet.extend(payload);
    eth(EtherType::IPV6, &packet)
}

/// VLAN 100 around an otherwise steerable VXLAN packet: the program does not walk tags.
fn vlan_tagged_vxlan() -> Vec<u8> {
    let tag = SingleVlanHeader {
        pcp: VlanPcp::ZERO,
        drop_eligible_indicator: false,
        vlan_id: VlanId::try_new(100).expect("valid VLAN id"),
        ether_type: EtherType::IPV4,
    };
    let inner = vxlan(8472);
    let mut payload = tag.to_bytes().to_vec();
    payload.extend_from_slice(&inner[14..]);
    eth(EtherType::VLAN_TAGGED_FRAME, &payload)
}

fn with_byte(mut frame: Vec<u8>, index: usize, value: u8) -> Vec<u8> {
    frame[index] = value;
    frame
}

fn truncated(mut frame: Vec<u8>, len: usize) -> Vec<u8> {
    frame.truncate(len);
    frame
}

// ---------------------------------------------------------------------------------------
// The fixture table

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Steered to the XSK map. No socket is registered, so the redirect falls back to
    /// XDP_PASS and NoSocket counts too.
    Steer(SteerCounter),
    /// Passed to the kernel, counting this one counter.
    Pass(SteerCounter),
    /// BPF_PROG_TEST_RUN refuses the frame before the program runs (shorter than an
    /// Ethernet header): nothing counts.
    KernelRefuses,
}

struct Fixture {
    what: &'static str,
    /// Role of the ingress interface; None: not in `ports` at all.
    role: Option<PortRole>,
    frame: Vec<u8>,
    expect: Expect,
}

fn fixtures() -> Vec<Fixture> {
    use Expect::{KernelRefuses, Pass, Steer};
    use PortRole::{Pod, Underlay};
    use SteerCounter::*;

    let fx = |what, role, frame, expect| Fixture {
        what,
        role,
        frame,
        expect,
    };
    vec![
        // Underlay: tunnels in, everything else to the kernel.
        fx(
            "VXLAN to 8472 (Flannel)",
            Some(Underlay),
            vxlan(8472),
            Steer(SteerVxlan),
        ),
        fx(
            "VXLAN to 4789 (IANA)",
            Some(Underlay),
            vxlan(4789),
            Steer(SteerVxlan),
        ),
        fx(
            "VXLAN behind IPv4 options (ihl 6)",
            Some(Underlay),
            ipv4_with_options_vxlan(),
            Steer(SteerVxlan),
        ),
        fx(
            "first fragment of a VXLAN datagram (MF, offset 0)",
            Some(Underlay),
            udp_fragment(0, true),
            Steer(SteerVxlan),
        ),
        fx(
            "IP-in-IP (protocol 4)",
            Some(Underlay),
            ipip(),
            Steer(SteerIpip),
        ),
        fx(
            "UDP to 53",
            Some(Underlay),
            underlay_udp(51234, 53),
            Pass(PassNotTunnel),
        ),
        fx(
            "UDP from 8472 to 53 (source port is not the tunnel)",
            Some(Underlay),
            underlay_udp(8472, 53),
            Pass(PassNotTunnel),
        ),
        fx(
            "TCP to 22 (SSH)",
            Some(Underlay),
            tcp_ssh(),
            Pass(PassNotTunnel),
        ),
        fx(
            "non-first fragment of UDP to 8472",
            Some(Underlay),
            udp_fragment(185, false),
            Pass(PassFragment),
        ),
        fx(
            "ARP on underlay",
            Some(Underlay),
            arp_request(),
            Pass(PassArp),
        ),
        fx(
            "IPv6 UDP to 4789",
            Some(Underlay),
            ipv6_udp(),
            Pass(PassNonIpv4),
        ),
        fx(
            "VLAN-tagged VXLAN",
            Some(Underlay),
            vlan_tagged_vxlan(),
            Pass(PassNonIpv4),
        ),
        // Malformed: the kernel judges those.
        fx(
            "truncated Ethernet (10 bytes)",
            Some(Underlay),
            truncated(vxlan(8472), 10),
            KernelRefuses,
        ),
        fx(
            "Ethernet only, IPv4 ethertype, no IPv4 header",
            Some(Underlay),
            truncated(vxlan(8472), 14),
            Pass(PassMalformed),
        ),
        fx(
            "truncated IPv4 (10 of 20 header bytes)",
            Some(Underlay),
            truncated(vxlan(8472), 24),
            Pass(PassMalformed),
        ),
        fx(
            "IPv4 ihl 4",
            Some(Underlay),
            with_byte(vxlan(8472), 14, 0x44),
            Pass(PassMalformed),
        ),
        fx(
            "IPv4 version 6 under the IPv4 ethertype",
            Some(Underlay),
            with_byte(vxlan(8472), 14, 0x65),
            Pass(PassMalformed),
        ),
        fx(
            "IPv4 ihl 15, options run past the frame",
            Some(Underlay),
            truncated(with_byte(vxlan(8472), 14, 0x4f), 14 + 40),
            Pass(PassMalformed),
        ),
        fx(
            "truncated UDP (4 of 8 header bytes)",
            Some(Underlay),
            truncated(vxlan(8472), 14 + 20 + 4),
            Pass(PassMalformed),
        ),
        // Pod: IPv4 in, the rest to the kernel.
        fx(
            "pod IPv4",
            Some(Pod),
            eth(EtherType::IPV4, &inner_ipv4()),
            Steer(SteerPod),
        ),
        fx(
            "pod IPv4 that looks like VXLAN",
            Some(Pod),
            vxlan(8472),
            Steer(SteerPod),
        ),
        fx("ARP on pod", Some(Pod), arp_request(), Pass(PassArp)),
        fx("IPv6 on pod", Some(Pod), ipv6_udp(), Pass(PassNonIpv4)),
        fx(
            "pod truncated IPv4",
            Some(Pod),
            truncated(eth(EtherType::IPV4, &inner_ipv4()), 30),
            Pass(PassMalformed),
        ),
        // Not ours.
        fx(
            "unknown ingress ifindex, VXLAN",
            None,
            vxlan(8472),
            Pass(PassUnknownPort),
        ),
        fx(
            "unknown ingress ifindex, ARP",
            None,
            arp_request(),
            Pass(PassUnknownPort),
        ),
    ]
}

#[test]
fn fixtures_through_test_run() {
    const TEST: &str = "fixtures_through_test_run";
    if !have_root(TEST) {
        return;
    }
    let steering = load(TEST);

    let mut failures = Vec::new();
    for fixture in fixtures() {
        let what = fixture.what;
        match fixture.role {
            Some(role) => steering.set_port(LO_IFINDEX, role, 0, 1),
            None => steering.remove_port(LO_IFINDEX),
        }
        .unwrap_or_else(|err| panic!("{what}: configuring ports: {}", chain(&err)));

        let before = counters(&steering);
        let result = steering.test_run(&fixture.frame, LO_IFINDEX, 0);
        let after = counters(&steering);
        let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();

        let mut want_delta = [0u64; COUNTER_MAX];
        let want_action = match fixture.expect {
            Expect::Steer(counter) => {
                want_delta[counter.index()] = 1;
                want_delta[SteerCounter::NoSocket.index()] = 1;
                Some(XDP_PASS)
            }
            Expect::Pass(counter) => {
                want_delta[counter.index()] = 1;
                Some(XDP_PASS)
            }
            Expect::KernelRefuses => None,
        };

        let got_action = match (&result, want_action) {
            (Ok(action), _) => Some(*action),
            (Err(Error::TestRun { source, .. }), None)
                if source.kind() == libbpf_rs::ErrorKind::InvalidInput =>
            {
                None
            }
            (Err(err), None) => {
                failures.push(format!("{what}: want EINVAL, got: {}", chain(err)));
                continue;
            }
            (Err(err), Some(_)) => {
                failures.push(format!("{what}: test_run failed: {}", chain(err)));
                continue;
            }
        };
        if got_action != want_action {
            failures.push(format!(
                "{what}: action {got_action:?}, want {want_action:?} (XDP_PASS = {XDP_PASS})"
            ));
        }
        if delta != want_delta {
            let named = |d: &[u64]| -> Vec<String> {
                SteerCounter::ALL
                    .iter()
                    .filter(|c| d[c.index()] != 0)
                    .map(|c| format!("{}+{}", c.name(), d[c.index()]))
                    .collect()
            };
            failures.push(format!(
                "{what}: counters moved {:?}, want {:?}",
                named(&delta),
                named(&want_delta)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// Steered frames land in slot `xsk_base + rx_queue_index`: a base past the end of the
/// XSK map still falls back to the kernel rather than dropping.
#[test]
fn xsk_slot_out_of_map_falls_back_to_pass() {
    const TEST: &str = "xsk_slot_out_of_map_falls_back_to_pass";
    if !have_root(TEST) {
        return;
    }
    let steering = load(TEST);
    steering
        .set_port(LO_IFINDEX, PortRole::Underlay, u32::MAX, 1)
        .expect("set_port");
    let action = steering
        .test_run(&vxlan(8472), LO_IFINDEX, 0)
        .unwrap_or_else(|err| panic!("test_run: {}", chain(&err)));
    assert_eq!(action, XDP_PASS);
    let c = counters(&steering);
    assert_eq!(c[SteerCounter::SteerVxlan.index()], 1);
    assert_eq!(c[SteerCounter::NoSocket.index()], 1);
    assert_ne!(action, XDP_REDIRECT);
}

#[test]
fn register_xsk_rejects_non_sockets_and_bad_slots() {
    const TEST: &str = "register_xsk_rejects_non_sockets_and_bad_slots";
    if !have_root(TEST) {
        return;
    }
    let steering = load(TEST);
    let file = File::open("/dev/null").expect("open /dev/null");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let err = steering
        .register_xsk(0, fd)
        .expect_err("a /dev/null fd is not an AF_XDP socket");
    assert!(chain(&err).contains("slot 0"), "{}", chain(&err));
    assert!(
        steering
            .register_xsk(overpass_xdp::abi::MAX_XSKS, fd)
            .is_err(),
        "slot past MAX_XSKS"
    );
}

// ---------------------------------------------------------------------------------------
// Real interface: veth pair across two throwaway network namespaces.

/// `ip` with `args`, panicking with its stderr on failure; returns stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("running ip {args:?}: {err}"));
    assert!(
        out.status.success(),
        "ip {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Gateway side `ovp0` in `ovp-xdptest-<pid>`, its peer `ovp1` in `ovp-xdptest-<pid>-peer`,
/// addressed 10.99.0.1/24 and .2. Both namespaces (and so the veth pair) go in `Drop`.
struct TestNet {
    gw: String,
    peer: String,
}

impl TestNet {
    fn new() -> TestNet {
        let gw = format!("ovp-xdptest-{}", std::process::id());
        let peer = format!("{gw}-peer");
        // Leftovers of a crashed run with a recycled pid would make `add` fail.
        for ns in [&gw, &peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        // Constructed before the namespaces exist so a panic below still cleans up.
        let net = TestNet { gw, peer };
        ip(&["netns", "add", &net.gw]);
        ip(&["netns", "add", &net.peer]);
        ip(&[
            "-n", &net.gw, "link", "add", "ovp0", "type", "veth", "peer", "name", "ovp1", "netns",
            &net.peer,
        ]);
        ip(&["-n", &net.gw, "addr", "add", "10.99.0.1/24", "dev", "ovp0"]);
        ip(&[
            "-n",
            &net.peer,
            "addr",
            "add",
            "10.99.0.2/24",
            "dev",
            "ovp1",
        ]);
        ip(&["-n", &net.gw, "link", "set", "ovp0", "up"]);
        ip(&["-n", &net.peer, "link", "set", "ovp1", "up"]);
        net
    }

    /// `ip -d link show ovp0` in the gateway namespace.
    fn gw_link(&self) -> String {
        ip(&["-n", &self.gw, "-d", "link", "show", "ovp0"])
    }

    /// Runs `cmd args` inside the peer namespace; returns whether it succeeded.
    fn in_peer(&self, cmd: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.peer])
            .args(cmd)
            // Keep ping's chatter out of the test output; the exit status is the result.
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|err| panic!("running {cmd:?} in {}: {err}", self.peer))
            .success()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in [&self.gw, &self.peer] {
            if let Err(err) = Command::new("ip").args(["netns", "del", ns]).status() {
                eprintln!("cleanup: ip netns del {ns}: {err}");
            }
        }
    }
}

/// Runs `f` on a thread of its own that has joined network namespace `ns`: setns changes
/// only the calling thread, and that thread ends here, so no other test (nor the main
/// thread under --test-threads=1) is left inside the namespace.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let result = thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|err| panic!("open /run/netns/{ns}: {err}"));
            setns(file, CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|err| panic!("setns into {ns}: {err}"));
            f()
        })
        .join()
    });
    result.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[test]
fn attach_to_veth_and_detach_on_drop() {
    const TEST: &str = "attach_to_veth_and_detach_on_drop";
    if !have_root(TEST) {
        return;
    }
    let net = TestNet::new();
    in_netns(&net.gw, || {
        let ifindex = nix::net::if_::if_nametoindex("ovp0").expect("ovp0 ifindex");
        veth_scenario(&net, ifindex);
    });
}

fn veth_scenario(net: &TestNet, ifindex: u32) {
    let mut steering = load("attach_to_veth_and_detach_on_drop");
    assert!(
        !net.gw_link().contains("prog/xdp"),
        "ovp0 has an XDP program before attach:\n{}",
        net.gw_link()
    );

    let mode = steering
        .attach(ifindex, PortRole::Underlay, 0, 1)
        .unwrap_or_else(|err| panic!("attach to ovp0: {}", chain(&err)));
    assert_eq!(mode, XdpMode::Native, "veth supports native XDP");
    assert_eq!(
        steering.xdp_mode(ifindex).expect("xdp_mode"),
        XdpMode::Native
    );
    let link = net.gw_link();
    assert!(
        link.contains(" xdp ") && link.contains("prog/xdp") && link.contains("overpass_steer"),
        "ip -d link show does not report our native XDP program:\n{link}"
    );

    let err = steering
        .attach(ifindex, PortRole::Underlay, 0, 1)
        .expect_err("second attach to the same interface");
    assert!(
        chain(&err).contains("ovp0"),
        "error names the interface: {}",
        chain(&err)
    );

    // Real traffic from the peer: the kernel must still answer ARP and ping (passed),
    // and a datagram to the VXLAN port is steered (no socket: counted and passed).
    let before = steering.counters().expect("counters");
    assert!(
        net.in_peer(&["ping", "-c", "2", "-W", "2", "-q", "10.99.0.1"]),
        "ping through the XDP program failed: it must pass ARP and ICMP to the kernel"
    );
    in_netns(&net.peer, || {
        let socket = UdpSocket::bind("10.99.0.2:0").expect("bind UDP in the peer namespace");
        socket
            .send_to(b"not really vxlan", "10.99.0.1:8472")
            .expect("send UDP to 8472");
    });
    let after = steering.counters().expect("counters");
    let moved = |c: SteerCounter| after[c.index()] - before[c.index()];
    assert!(moved(SteerCounter::PassArp) >= 1, "ARP counted: {after:?}");
    assert!(
        moved(SteerCounter::PassNotTunnel) >= 2,
        "ICMP counted: {after:?}"
    );
    assert_eq!(
        moved(SteerCounter::SteerVxlan),
        1,
        "VXLAN steered: {after:?}"
    );
    assert_eq!(moved(SteerCounter::NoSocket), 1, "no socket yet: {after:?}");

    steering.detach_all();
    assert!(
        !net.gw_link().contains("prog/xdp"),
        "detach_all left the program on ovp0:\n{}",
        net.gw_link()
    );
    assert_eq!(steering.attached().count(), 0);

    steering
        .attach(ifindex, PortRole::Pod, 0, 1)
        .unwrap_or_else(|err| panic!("re-attach to ovp0: {}", chain(&err)));
    assert!(net.gw_link().contains("overpass_steer"));
    drop(steering);
    let link = net.gw_link();
    assert!(
        !link.contains("prog/xdp") && !link.contains(" xdp "),
        "dropping Steering left the program on ovp0:\n{link}"
    );
}

// ---------------------------------------------------------------------------------------
// Served queues: a port's `xsk_count` bounds the slots it steers into.

/// A throwaway namespace holding veth `mq0` (peer `mq1`) with two RX queues, deleted on drop:
/// BPF_PROG_TEST_RUN only accepts an `rx_queue_index` the ingress device really has.
struct TwoQueueNet {
    ns: String,
}

impl TwoQueueNet {
    fn new() -> TwoQueueNet {
        let ns = format!("ovp-xdptest-{}-mq", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let net = TwoQueueNet { ns };
        ip(&["netns", "add", &net.ns]);
        let q = ["numrxqueues", "2", "numtxqueues", "2"];
        let mut args = vec!["-n", &net.ns, "link", "add", "mq0"];
        args.extend(q);
        args.extend(["type", "veth", "peer", "name", "mq1"]);
        args.extend(q);
        ip(&args);
        net
    }
}

impl Drop for TwoQueueNet {
    fn drop(&mut self) {
        if let Err(err) = Command::new("ip").args(["netns", "del", &self.ns]).status() {
            eprintln!("cleanup: ip netns del {}: {err}", self.ns);
        }
    }
}

/// The gateway serves fewer queues than a NIC has active (`underlay.queues`): the port's
/// `xsk_count` is the served count. A frame to steer from a queue past it must go to the
/// kernel, counted `unserved_queue`; `xsk_base + queue` would be the next port's slot (a
/// pod's socket, bound to another device, where the kernel drops the frame unseen).
#[test]
fn unserved_queue_is_passed_not_steered_into_another_slot() {
    const TEST: &str = "unserved_queue_is_passed_not_steered_into_another_slot";
    if !have_root(TEST) {
        return;
    }
    let net = TwoQueueNet::new();
    in_netns(&net.ns, || {
        let steering = load(TEST);
        let ifindex = nix::net::if_::if_nametoindex("mq0").expect("mq0 ifindex");
        let cases = [
            (
                PortRole::Underlay,
                "VXLAN",
                vxlan(8472),
                SteerCounter::SteerVxlan,
            ),
            (
                PortRole::Underlay,
                "IP-in-IP",
                ipip(),
                SteerCounter::SteerIpip,
            ),
            (
                PortRole::Pod,
                "pod IPv4",
                eth(EtherType::IPV4, &inner_ipv4()),
                SteerCounter::SteerPod,
            ),
        ];
        let mut failures = Vec::new();
        for (role, what, frame, steer) in cases {
            // Queue 0 served (slot 0); slot 1 would be the next port's.
            steering
                .set_port(ifindex, role, 0, 1)
                .unwrap_or_else(|err| panic!("set_port: {}", chain(&err)));
            for queue in [0, 1] {
                let before = counters(&steering);
                let action = steering
                    .test_run(&frame, ifindex, queue)
                    .unwrap_or_else(|err| panic!("{what} on queue {queue}: {}", chain(&err)));
                let after = counters(&steering);
                let mut want = [0u64; COUNTER_MAX];
                if queue == 0 {
                    // Served: steered; nothing is registered, so it falls back too.
                    want[steer.index()] = 1;
                    want[SteerCounter::NoSocket.index()] = 1;
                } else {
                    want[SteerCounter::UnservedQueue.index()] = 1;
                }
                let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
                if action != XDP_PASS || delta != want {
                    let named = |d: &[u64]| -> Vec<String> {
                        SteerCounter::ALL
                            .iter()
                            .filter(|c| d[c.index()] != 0)
                            .map(|c| format!("{}+{}", c.name(), d[c.index()]))
                            .collect()
                    };
                    failures.push(format!(
                        "{what} ({role:?}, xsk_count 1) on queue {queue}: action {action}, counters {:?}; want XDP_PASS ({XDP_PASS}), {:?}",
                        named(&delta),
                        named(&want)
                    ));
                }
            }
        }
        // Serving both queues steers both.
        steering
            .set_port(ifindex, PortRole::Underlay, 0, 2)
            .unwrap_or_else(|err| panic!("set_port: {}", chain(&err)));
        let before = counters(&steering);
        steering
            .test_run(&vxlan(8472), ifindex, 1)
            .unwrap_or_else(|err| panic!("VXLAN on served queue 1: {}", chain(&err)));
        let after = counters(&steering);
        let moved = |c: SteerCounter| after[c.index()] - before[c.index()];
        if moved(SteerCounter::SteerVxlan) != 1 || moved(SteerCounter::UnservedQueue) != 0 {
            failures.push(format!(
                "VXLAN on queue 1 with xsk_count 2: steer_vxlan +{}, unserved_queue +{}; want +1, +0",
                moved(SteerCounter::SteerVxlan),
                moved(SteerCounter::UnservedQueue)
            ));
        }
        assert!(
            failures.is_empty(),
            "{} case(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    });
}
