//! Network-namespace test bed: a small Flannel cluster built from real kernel
//! devices, used by `overpass demo` and by the integration tests.
//!
//! Every name derives from a short `tag`; with prefix `P = "ovp-{tag}"`:
//!
//! ```text
//!                         {P}-ul: bridge br0 (the underlay L2 switch, 198.18.0.0/24)
//!          ┌──────────────────────────┼───────────────────────────┬──────────────────────────┐
//!        sw-gw                      sw-n1                       sw-n2                      sw-n3
//!          │                          │                           │                          │
//!   ul0 198.18.0.1             eth0 198.18.0.11            eth0 198.18.0.12           eth0 198.18.0.13
//!   {P}-gw (gateway node)      {P}-n1 (Flannel node)       {P}-n2 (Flannel node)      {P}-n3 (IP-in-IP node)
//!   podCIDR 10.244.0.0/24      flannel.1 10.244.1.0/32     flannel.1 10.244.2.0/32    podCIDR 10.244.3.0/24
//!   gwp-a        gwp-b         cni0 10.244.1.1/24          cni0 10.244.2.1/24         tunl0 (TUN) 10.244.3.2
//!     │            │             │ vethn1p                   │ vethn2p                  (the node's "pod")
//!   {P}-pa       {P}-pb        {P}-n1p                     {P}-n2p
//!   10.244.0.2   10.244.0.3    10.244.1.2                  10.244.2.2
//! ```
//!
//! The remote nodes are configured exactly as Flannel's VXLAN backend
//! configures a node (VNI 1, UDP 8472, no learning; per remote node one
//! onlink route, one permanent neighbour, one FDB entry; see INTEROP.md).
//! Node 3 is a Calico-style IP-in-IP node (protocol 4 straight to the node
//! IP, `tunl0` MTU = underlay − 20). This machine has no kernel ipip module,
//! so its `tunl0` is a persistent TUN device and the tunnel endpoint is a
//! small user-space program (`support/ipip_peer.py`, standard-library
//! Python) started on demand by [`Testbed::start_ipip_peer`]; without it,
//! node 3's pod address is unreachable (the TUN has no carrier).
//! The switch is a plain L2 switch: br_netfilter's `bridge-nf-call-*`
//! sysctls, on by default in every namespace, are turned off in `{P}-ul`
//! (and checked), or the bridge would validate IPv4 headers itself and drop
//! malformed tunnel frames before the gateway sees them.
//! The gateway namespace has the kernel's IPv4 forwarding off: only the
//! AF_XDP dataplane forwards there. Local pods are Calico-style: a /32 on the
//! pod's `eth0`, default route via the link-local `169.254.1.1`, which the
//! gateway namespace's kernel owns on every pod's host end (so it answers the
//! pods' ARP; the XDP program passes ARP up).
//!
//! All MAC addresses are fixed (locally administered `02:…`), so the
//! configuration [`Testbed::gateway_config`] returns is reproducible.
//! TX checksum offload is off on every device that originates or forwards
//! TCP toward the gateway (a veth with offload on leaves inner TCP checksums
//! unfinished), and IPv6 is disabled everywhere to keep captures clean.
//!
//! Everything is driven through the `ip`, `bridge`, `ethtool`, `sysctl`,
//! `ping`, `iperf3` and `nstat` command-line tools; it needs root.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

use overpass::config::Config;
use overpass_dataplane::wire::ethernet::MacAddr;

/// The underlay network (the L2 switch in `{P}-ul`), prefix length 24.
pub const UNDERLAY_NET: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Underlay MTU of every node's uplink.
pub const UNDERLAY_MTU: u32 = 1500;
/// Flannel VXLAN network identifier.
pub const VXLAN_VNI: u32 = 1;
/// Flannel VXLAN UDP destination port (the Linux default, not IANA's 4789).
pub const VXLAN_PORT: u16 = 8472;
/// Overlay MTU: underlay MTU minus the 50 bytes of VXLAN overhead.
pub const OVERLAY_MTU: u32 = 1450;
/// The cluster network (`Network` in Flannel's config), SubnetLen 24.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The link-local default gateway of the local (Calico-style) pods; owned by
/// the gateway namespace's kernel on every pod's host end.
pub const POD_GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The gateway's VTEP MAC (Flannel's VtepMAC of the gateway node).
pub const GATEWAY_VTEP_MAC: MacAddr = MacAddr([0x02, 0x00, 0xc6, 0x12, 0x00, 0x01]);
/// The gateway's underlay interface in the gateway namespace.
pub const GATEWAY_UNDERLAY_IF: &str = "ul0";

/// The remote Flannel (VXLAN) node numbers.
pub const NODES: [u8; 2] = [1, 2];
/// The remote Calico-style IP-in-IP node's number (namespace `{P}-n3`).
pub const IPIP_NODE: u8 = 3;
/// Every remote node number: the VXLAN nodes, then the IP-in-IP node.
pub const ALL_NODES: [u8; 3] = [1, 2, IPIP_NODE];
/// Tunnel MTU of the IP-in-IP node: underlay MTU minus 20 (Calico's `tunl0`).
pub const IPIP_MTU: u32 = UNDERLAY_MTU - 20;
/// The IP-in-IP node's tunnel device (a TUN device, see the module docs).
pub const IPIP_DEV: &str = "tunl0";
/// The Python interpreter that has scapy (Debian's `python3-scapy`); a
/// `python3` earlier on `PATH` (pyenv, venv) may not.
pub const PYTHON: &str = "/usr/bin/python3";
/// br_netfilter's per-namespace switches that hand bridged frames to
/// iptables, ip6tables and arptables. Each is 1 by default in every
/// namespace once br_netfilter is loaded (built in here), and then the
/// bridge validates IPv4 headers itself (checksum, lengths) and drops the
/// bad ones before they reach any port: the bed's switch turns them off so
/// malformed frames reach the gateway (see [`Testbed::switch_netfilter`]).
pub const BRIDGE_NF_SYSCTLS: [&str; 3] = [
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-arptables",
];
/// The user-space IP-in-IP endpoint run by [`Testbed::start_ipip_peer`].
const IPIP_PEER_PY: &str = include_str!("../support/ipip_peer.py");
/// The local pod letters.
pub const LOCAL_PODS: [char; 2] = ['a', 'b'];

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestbedSpec {
    /// Short name every namespace derives from (`ovp-{tag}-…`): 1 to 12
    /// characters out of `[a-z0-9]`.
    pub tag: String,
    /// RX and TX queues of the gateway's underlay veth `ul0` (and of its
    /// switch-side peer, so the switch spreads flows across them).
    pub underlay_queues: u32,
}

/// Further options of a bed, for [`Testbed::create_with`] (kept apart from
/// [`TestbedSpec`] so existing struct literals of it stay valid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestbedOptions {
    /// MTU of the local pods' veth pairs (both ends). Default: the overlay
    /// MTU, 1450; a PMTU test sets 1500 to sit behind the 1450 tunnel.
    /// 68 to 3498 (native XDP on a veth limits the peer's MTU).
    pub local_pod_mtu: u32,
    /// How many local pods the gateway serves: 'a', 'b', … (1 to
    /// [`MAX_LOCAL_PODS`]; default 2, the pods [`LOCAL_PODS`]).
    pub local_pods: usize,
    /// Whether the bed writes Flannel's route, neighbour and FDB entries
    /// on the remote VXLAN nodes (default true). False: the nodes have
    /// `flannel.1` but no entry for any other node; a Flannel-style node
    /// agent learning leases from etcd installs them
    /// ([`crate::flannel`]).
    pub flannel_entries: bool,
}

/// The most local pods a bed can have ('a' to 'x', 10.244.0.2 to .25).
pub const MAX_LOCAL_PODS: usize = 24;

impl Default for TestbedOptions {
    fn default() -> Self {
        TestbedOptions {
            local_pod_mtu: OVERLAY_MTU,
            local_pods: LOCAL_PODS.len(),
            flannel_entries: true,
        }
    }
}

impl Default for TestbedSpec {
    fn default() -> Self {
        TestbedSpec {
            tag: "demo".to_string(),
            underlay_queues: 1,
        }
    }
}

/// A namespace role in the bed; [`Testbed::ns`] turns it into a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ns {
    /// `{P}-ul`: the underlay switch (bridge `br0`, no IP).
    Underlay,
    /// `{P}-gw`: the gateway node, where the dataplane runs.
    Gateway,
    /// `{P}-n1`, `{P}-n2`: remote Flannel nodes (1 or 2); `{P}-n3`: the
    /// IP-in-IP node ([`IPIP_NODE`]).
    Node(u8),
    /// `{P}-n1p`, `{P}-n2p`: the pod behind remote Flannel node 1 or 2
    /// (node 3's pod address lives on its `tunl0`, in `{P}-n3` itself).
    NodePod(u8),
    /// `{P}-pa`, `{P}-pb`: the gateway's local pods (`'a'` or `'b'`).
    LocalPod(char),
}

impl Ns {
    /// Every namespace of a bed, in creation order.
    pub const ALL: [Ns; 9] = [
        Ns::Underlay,
        Ns::Gateway,
        Ns::Node(1),
        Ns::Node(2),
        Ns::Node(IPIP_NODE),
        Ns::NodePod(1),
        Ns::NodePod(2),
        Ns::LocalPod('a'),
        Ns::LocalPod('b'),
    ];

    /// The part after `ovp-{tag}-`.
    ///
    /// # Panics
    /// On a node number other than 1, 2 or 3 (a node pod other than 1 or 2),
    /// or a pod letter other than 'a' or 'b'.
    pub fn suffix(self) -> String {
        match self {
            Ns::Underlay => "ul".to_string(),
            Ns::Gateway => "gw".to_string(),
            Ns::Node(n) => format!("n{}", check_node(n)),
            Ns::NodePod(n) => format!("n{}p", check_vxlan_node(n)),
            Ns::LocalPod(p) => format!("p{}", check_pod(p)),
        }
    }
}

fn check_node(node: u8) -> u8 {
    assert!(
        ALL_NODES.contains(&node),
        "test bed has remote nodes 1, 2 (VXLAN) and 3 (IP-in-IP), not {node}"
    );
    node
}

fn check_vxlan_node(node: u8) -> u8 {
    assert!(
        NODES.contains(&node),
        "test bed has remote VXLAN nodes (with a VtepMAC and a pod namespace) 1 and 2, not {node}"
    );
    node
}

fn check_pod(pod: char) -> char {
    assert!(
        pod.is_ascii_lowercase() && (pod as usize - 'a' as usize) < MAX_LOCAL_PODS,
        "test bed local pods are 'a' to 'x', not {pod:?}"
    );
    pod
}

/// Options for [`Testbed::ping`].
#[derive(Debug, Clone, PartialEq)]
pub struct PingOpts {
    /// ICMP payload size (`ping -s`); unset: ping's default of 56.
    pub size: Option<u32>,
    /// Seconds between probes (`ping -i`); below 0.2 needs root (we are).
    pub interval: f64,
    /// Seconds to wait for replies after the last probe (`ping -W`), so a
    /// run takes at most about `count × interval + timeout_s`. (No `ping -w`:
    /// with it ping keeps probing until `count` replies or the deadline.)
    pub timeout_s: u32,
    /// `true`: DF set, no fragmentation (`-M do`); `false`: DF clear, the
    /// kernel may fragment (`-M dont`).
    pub dont_fragment: bool,
}

impl Default for PingOpts {
    fn default() -> Self {
        PingOpts {
            size: None,
            interval: 0.2,
            timeout_s: 2,
            dont_fragment: false,
        }
    }
}

/// The summary of a ping run.
#[derive(Debug, Clone, PartialEq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
    /// Average round-trip time; `None` when nothing came back.
    pub rtt_avg_ms: Option<f64>,
    /// ping's whole output (stdout then stderr): per-probe lines, ICMP errors
    /// received (e.g. `Frag needed and DF set (mtu = 1450)`) and the summary.
    pub raw: String,
}

impl PingStats {
    /// Probes were sent and every one was answered.
    pub fn all_received(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted
    }
}

/// The summary of an iperf3 TCP run (from the client's `-J` report).
#[derive(Debug, Clone, PartialEq)]
pub struct IperfResult {
    /// `end.sum_sent.bytes`: bytes the sender wrote.
    pub bytes_sent: u64,
    /// `end.sum_received.bytes`: bytes the receiver read.
    pub bytes_received: u64,
    /// `end.sum_received.bits_per_second`: receiver-side goodput.
    pub bits_per_second: f64,
    /// `end.sum_sent.retransmits` (0 when iperf3 does not report it).
    pub retransmits: u64,
    /// The client's JSON report.
    pub raw: String,
}

/// A built test bed. Owns its namespaces: dropping it kills every process
/// left in them and deletes them (the veth pairs die with them).
///
/// A bed also holds an exclusive lock on its tag (`flock` on
/// `/run/lock/overpass-testbed-{tag}.lock`) for its whole life, so two
/// processes (say, two `cargo test` runs) building the same tag take turns
/// instead of deleting each other's namespaces. Within one process the lock
/// is shared: in-process users of one tag must serialise themselves.
pub struct Testbed {
    spec: TestbedSpec,
    options: TestbedOptions,
    prefix: String,
    /// Set once the namespaces are gone, so Drop does not clean up twice.
    cleaned: bool,
    /// Released after the namespaces are deleted (fields drop after `drop`).
    _lock: Arc<TagLock>,
}

impl fmt::Debug for Testbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Testbed")
            .field("prefix", &self.prefix)
            .field("spec", &self.spec)
            .finish()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        if let Err(e) = remove_namespaces(&self.spec.tag) {
            eprintln!("overpass testbed: cleaning up {}: {e:#}", self.prefix);
        }
    }
}

impl Testbed {
    /// Builds the bed, after removing namespaces a crashed earlier run with
    /// the same tag left behind. On failure, whatever was built is removed.
    ///
    /// Waits (up to 5 minutes) while another process holds a bed with the
    /// same tag.
    pub fn create(spec: &TestbedSpec) -> anyhow::Result<Testbed> {
        Self::create_with(spec, &TestbedOptions::default())
    }

    /// As [`Testbed::create`], with further options.
    pub fn create_with(spec: &TestbedSpec, options: &TestbedOptions) -> anyhow::Result<Testbed> {
        check_tag(&spec.tag)?;
        if spec.underlay_queues == 0 || spec.underlay_queues > 64 {
            bail!(
                "underlay_queues must be 1 to 64, not {}",
                spec.underlay_queues
            );
        }
        if !(1..=MAX_LOCAL_PODS).contains(&options.local_pods) {
            bail!(
                "local_pods must be 1 to {MAX_LOCAL_PODS}, not {}",
                options.local_pods
            );
        }
        if !(68..=3498).contains(&options.local_pod_mtu) {
            bail!(
                "local_pod_mtu must be 68 to 3498, not {}",
                options.local_pod_mtu
            );
        }
        let lock = TagLock::acquire(&spec.tag, Duration::from_secs(300))?;
        let stale = remove_namespaces(&spec.tag)?;
        if stale > 0 {
            tracing::info!(tag = %spec.tag, namespaces = stale, "removed a stale test bed");
        }
        // Constructed first so that a failure half-way is cleaned up by Drop.
        let bed = Testbed {
            spec: spec.clone(),
            options: options.clone(),
            prefix: format!("ovp-{}", spec.tag),
            cleaned: false,
            _lock: lock,
        };
        bed.build()
            .with_context(|| format!("building test bed {}", bed.prefix))?;
        Ok(bed)
    }

    /// Removes what a crashed run left: kills every process in the
    /// namespaces `ovp-{tag}-*` (as listed by `ip netns pids`, never this
    /// process itself) and deletes them. Returns how many were deleted.
    /// Refuses (error) while another process holds a live bed with this tag.
    pub fn cleanup_stale(tag: &str) -> anyhow::Result<usize> {
        check_tag(tag)?;
        let _lock = TagLock::acquire(tag, Duration::ZERO)?;
        remove_namespaces(tag)
    }

    /// Tears the bed down now, reporting errors (dropping does the same
    /// silently, printing errors to stderr). Returns how many namespaces were
    /// deleted.
    pub fn destroy(mut self) -> anyhow::Result<usize> {
        self.cleaned = true;
        remove_namespaces(&self.spec.tag)
    }

    /// What this bed was built from.
    pub fn spec(&self) -> &TestbedSpec {
        &self.spec
    }

    /// The further options this bed was built with.
    pub fn options(&self) -> &TestbedOptions {
        &self.options
    }

    /// `ovp-{tag}`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace name of a role.
    ///
    /// # Panics
    /// On a node other than 1|2 or a local pod other than 'a'|'b'.
    pub fn ns(&self, role: Ns) -> String {
        format!("{}-{}", self.prefix, role.suffix())
    }

    /// Starts the gateway on this bed with [`Testbed::gateway_config`] and
    /// waits (up to 5 s) until its underlay next hops are resolved.
    pub fn start_gateway(&self) -> anyhow::Result<overpass::lifecycle::Gateway> {
        let gw = overpass::lifecycle::Gateway::start(&self.gateway_config())
            .context("starting the gateway")?;
        if !gw.wait_resolved(Duration::from_secs(5)) {
            bail!("underlay next hops never resolved");
        }
        Ok(gw)
    }

    /// The configuration the gateway needs to serve this bed: netns = the
    /// gateway namespace, one underlay `ul0` (default VXLAN ports), local pods
    /// `a`/`b`, Flannel peers `n1`/`n2` (VXLAN, VNI 1, port 8472), and the
    /// Calico-style peer `n3` (IP-in-IP, tunnel MTU underlay − 20).
    pub fn gateway_config(&self) -> Config {
        let text = config_toml(&self.ns(Ns::Gateway), &self.local_pods());
        Config::from_toml(&text)
            .unwrap_or_else(|e| panic!("test bed config does not validate: {e}\n{text}"))
    }

    /// The gateway's underlay address, 198.18.0.1.
    pub fn gateway_underlay_ip(&self) -> Ipv4Addr {
        host(UNDERLAY_NET, 1)
    }

    /// The gateway's podCIDR as text, `10.244.0.0/24`.
    pub fn gateway_pod_cidr(&self) -> String {
        pod_cidr(0)
    }

    /// Remote node `node`'s underlay address, 198.18.0.1{node} (node 1, 2 or 3).
    pub fn node_underlay_ip(&self, node: u8) -> Ipv4Addr {
        node_ip(check_node(node))
    }

    /// Remote node `node`'s podCIDR as text, `10.244.{node}.0/24`.
    pub fn node_pod_cidr(&self, node: u8) -> String {
        pod_cidr(check_node(node))
    }

    /// Remote node `node`'s Flannel VtepMAC (`flannel.1`'s address); VXLAN
    /// nodes 1 and 2 only.
    pub fn node_vtep_mac(&self, node: u8) -> MacAddr {
        node_vtep_mac(check_vxlan_node(node))
    }

    /// Remote node `node`'s underlay MAC (its `eth0`).
    pub fn node_underlay_mac(&self, node: u8) -> MacAddr {
        mac(0x01, 10 + check_node(node))
    }

    /// The gateway's underlay MAC (`ul0`).
    pub fn gateway_underlay_mac(&self) -> MacAddr {
        mac(0x01, 1)
    }

    /// The MAC of local pod `pod`'s veth host end (the pods' next hop).
    pub fn local_host_end_mac(&self, pod: char) -> MacAddr {
        local_host_end_mac(check_pod(pod))
    }

    /// The bed's local pods: 'a', 'b', … ([`TestbedOptions::local_pods`]).
    pub fn local_pods(&self) -> Vec<char> {
        (0..self.options.local_pods)
            .map(|i| (b'a' + i as u8) as char)
            .collect()
    }

    /// Local pod `pod`'s address: 10.244.0.2 for 'a', 10.244.0.3 for 'b', ….
    pub fn local_pod_ip(&self, pod: char) -> Ipv4Addr {
        local_pod_ip(check_pod(pod))
    }

    /// Local pod `pod`'s `eth0` MAC.
    pub fn local_pod_mac(&self, pod: char) -> MacAddr {
        local_pod_mac(check_pod(pod))
    }

    /// The host end of local pod `pod`'s veth, in the gateway namespace.
    pub fn local_pod_iface(&self, pod: char) -> String {
        format!("gwp-{}", check_pod(pod))
    }

    /// The address of the pod behind remote node `node`: 10.244.{node}.2
    /// (for node 3, the address on its `tunl0`, in namespace `{P}-n3`).
    pub fn remote_pod_ip(&self, node: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, check_node(node), 2)
    }

    /// Runs `args` inside namespace `ns` (`ip netns exec`), output captured.
    /// A non-zero exit is an error naming the command and its stderr.
    pub fn exec(&self, ns: &str, args: &[&str]) -> anyhow::Result<Output> {
        nsexec(ns, args)
    }

    /// Pings `dst` from namespace `ns` `count` times. Losing probes is not an
    /// error (the stats say so); ping failing to produce a summary is.
    pub fn ping(
        &self,
        ns: &str,
        dst: Ipv4Addr,
        count: u32,
        opts: &PingOpts,
    ) -> anyhow::Result<PingStats> {
        if count == 0 {
            bail!("ping count must be at least 1");
        }
        if !(opts.interval.is_finite() && opts.interval >= 0.002) {
            bail!(
                "ping interval must be at least 0.002 s, not {}",
                opts.interval
            );
        }
        // A safety net only: ping ends by itself after the last probe's wait.
        let limit = (f64::from(count) * opts.interval).ceil() as u64
            + u64::from(opts.timeout_s.max(1))
            + 10;
        let mut args: Vec<String> = ["timeout", "-k", "2", &limit.to_string(), "ping", "-n"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["-c".into(), count.to_string()]);
        args.extend(["-i".into(), opts.interval.to_string()]);
        args.extend(["-W".into(), opts.timeout_s.max(1).to_string()]);
        args.extend([
            "-M".into(),
            if opts.dont_fragment { "do" } else { "dont" }.into(),
        ]);
        if let Some(size) = opts.size {
            args.extend(["-s".into(), size.to_string()]);
        }
        args.push(dst.to_string());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(&args);
        let out = output(&mut cmd)?;
        let raw = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        parse_ping(&raw)
            .with_context(|| format!("`{}` ({}): {}", render(&cmd), out.status, raw.trim()))
    }

    /// The command line of a ping run from namespace `ns` (for callers that
    /// run it in the background): `count` probes, `interval` seconds apart.
    pub fn ping_command(&self, ns: &str, dst: Ipv4Addr, count: u32, interval: f64) -> Vec<String> {
        ["ip", "netns", "exec", ns, "ping", "-n", "-q", "-W", "2"]
            .iter()
            .map(|s| s.to_string())
            .chain([
                "-c".into(),
                count.to_string(),
                "-i".into(),
                interval.to_string(),
                dst.to_string(),
            ])
            .collect()
    }

    /// A TCP iperf3 run of `seconds` from `client_ns` to a one-shot server
    /// (`iperf3 -s -1`) on `server_ip` in `server_ns`; `reverse` makes the
    /// server send (`-R`). Each call uses a fresh port in 5201..5300.
    pub fn iperf3(
        &self,
        server_ns: &str,
        server_ip: Ipv4Addr,
        client_ns: &str,
        seconds: u32,
        reverse: bool,
    ) -> anyhow::Result<IperfResult> {
        self.iperf3_run(server_ns, server_ip, client_ns, seconds, reverse, 1)
    }

    /// [`Testbed::iperf3`] with `streams` parallel TCP connections (`-P`),
    /// client to server: many flows, so hashing spreads them over queues.
    pub fn iperf3_parallel(
        &self,
        server_ns: &str,
        server_ip: Ipv4Addr,
        client_ns: &str,
        seconds: u32,
        streams: u32,
    ) -> anyhow::Result<IperfResult> {
        self.iperf3_run(server_ns, server_ip, client_ns, seconds, false, streams)
    }

    fn iperf3_run(
        &self,
        server_ns: &str,
        server_ip: Ipv4Addr,
        client_ns: &str,
        seconds: u32,
        reverse: bool,
        streams: u32,
    ) -> anyhow::Result<IperfResult> {
        static NEXT_PORT: AtomicU16 = AtomicU16::new(0);
        let port = (5201 + NEXT_PORT.fetch_add(1, Ordering::Relaxed) % 99).to_string();
        let ip = server_ip.to_string();
        let mut server = Command::new("ip")
            .args([
                "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", &ip, "-p", &port,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the iperf3 server")?;
        let result = (|| {
            // Wait until the server listens (or died).
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(status) = server.try_wait()? {
                    bail!(
                        "iperf3 server in {server_ns} exited early ({status}); port {port} in use?"
                    );
                }
                let out = nsexec(server_ns, &["ss", "-Htln", &format!("sport = :{port}")])?;
                if !out.stdout.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("iperf3 server in {server_ns} not listening on {ip}:{port} after 5 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let limit = (seconds + 20).to_string();
            let secs = seconds.max(1).to_string();
            let mut args = vec![
                "timeout", "-k", "5", &limit, "iperf3", "-c", &ip, "-p", &port, "-t", &secs, "-J",
            ];
            args.extend(["--connect-timeout", "3000"]);
            let streams = streams.max(1).to_string();
            args.extend(["-P", &streams]);
            if reverse {
                args.push("-R");
            }
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", client_ns]).args(&args);
            let out = output(&mut cmd)?;
            let raw = String::from_utf8_lossy(&out.stdout).into_owned();
            parse_iperf(&raw).with_context(|| {
                format!(
                    "`{}` ({}): {} {}",
                    render(&cmd),
                    out.status,
                    raw.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
        })();
        // The one-shot server exits after the test; do not leave it behind.
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(server.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(server.try_wait(), Ok(None)) {
            let _ = server.kill();
            let _ = server.wait();
        }
        result
    }

    /// The absolute value of a kernel SNMP/netstat counter in `ns` (e.g.
    /// `TcpRetransSegs`, `UdpInDatagrams`), via `nstat -asz` (absolute, no
    /// history update, zeros included). 0 when the kernel has no such counter.
    pub fn nstat(&self, ns: &str, counter: &str) -> anyhow::Result<u64> {
        let out = nsexec(ns, &["nstat", "-asz", counter])?;
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut fields = line.split_whitespace();
            if fields.next() == Some(counter) {
                let value = fields.next().unwrap_or_default();
                return value
                    .parse()
                    .with_context(|| format!("nstat {counter}: bad value {value:?}"));
            }
        }
        Ok(0)
    }

    /// The switch namespace's [`BRIDGE_NF_SYSCTLS`] as (name, value): all 0
    /// on a bed as built, so the switch forwards malformed frames instead of
    /// judging them; empty when br_netfilter is not loaded (the bridge then
    /// calls no netfilter hook at all). A test that sends malformed outer
    /// headers checks it: br_netfilter loaded after the bed was built would
    /// bring the switches back at 1.
    pub fn switch_netfilter(&self) -> anyhow::Result<Vec<(String, u64)>> {
        bridge_nf_values(&self.ns(Ns::Underlay))
    }

    /// Routes `cidr` from Flannel node `node` through the gateway, as
    /// Flannel routes a node's podCIDR (via the gateway's `subnet.0` on
    /// `flannel.1`, onlink): for transit tests, whose far end (the IP-in-IP
    /// node) no Flannel node knows.
    pub fn route_via_gateway(&self, node: u8, cidr: &str) -> anyhow::Result<()> {
        let via = Ipv4Addr::new(10, 244, 0, 0).to_string();
        ip(
            &self.ns(Ns::Node(check_vxlan_node(node))),
            &[
                "route",
                "add",
                cidr,
                "via",
                &via,
                "dev",
                "flannel.1",
                "onlink",
            ],
        )?;
        Ok(())
    }

    /// Whether an XDP program is attached to `dev` in `ns` (any mode).
    pub fn link_xdp_attached(&self, ns: &str, dev: &str) -> anyhow::Result<bool> {
        let link = link_json(ns, dev, "-d")?;
        Ok(xdp_attached(&link))
    }

    /// `(rx_packets, tx_packets)` of `dev` in `ns`.
    pub fn link_stats(&self, ns: &str, dev: &str) -> anyhow::Result<(u64, u64)> {
        let link = link_json(ns, dev, "-s")?;
        let get = |dir: &str| {
            link["stats64"][dir]["packets"]
                .as_u64()
                .ok_or_else(|| anyhow!("no stats64.{dir}.packets for {dev} in {ns}"))
        };
        Ok((get("rx")?, get("tx")?))
    }

    /// A human-readable map of the bed (for `overpass demo`).
    pub fn describe(&self) -> String {
        let mut s = format!(
            "test bed {p}: underlay switch {ul} (br0, {UNDERLAY_NET}/24, MTU {UNDERLAY_MTU})\n  \
             gateway  {gw}: {ulif} {gwip} ({q} queue(s)), VtepMAC {GATEWAY_VTEP_MAC}, podCIDR {cidr}, ip_forward=0\n",
            p = self.prefix,
            ul = self.ns(Ns::Underlay),
            gw = self.ns(Ns::Gateway),
            ulif = GATEWAY_UNDERLAY_IF,
            gwip = self.gateway_underlay_ip(),
            q = self.spec.underlay_queues,
            cidr = self.gateway_pod_cidr(),
        );
        for pod in self.local_pods() {
            s += &format!(
                "    local pod {}: {} {} ({}), host end {}\n",
                pod,
                self.ns(Ns::LocalPod(pod)),
                self.local_pod_ip(pod),
                self.local_pod_mac(pod),
                self.local_pod_iface(pod)
            );
        }
        for n in NODES {
            s += &format!(
                "  node {n}   {}: eth0 {}, flannel.1 VtepMAC {}, podCIDR {}\n    pod {}: {}\n",
                self.ns(Ns::Node(n)),
                self.node_underlay_ip(n),
                self.node_vtep_mac(n),
                self.node_pod_cidr(n),
                self.ns(Ns::NodePod(n)),
                self.remote_pod_ip(n)
            );
        }
        let n = IPIP_NODE;
        s += &format!(
            "  node {n}   {}: eth0 {}, IP-in-IP ({IPIP_DEV}: user-space endpoint, MTU {IPIP_MTU}), podCIDR {}\n    pod address {} on {IPIP_DEV}\n",
            self.ns(Ns::Node(n)),
            self.node_underlay_ip(n),
            self.node_pod_cidr(n),
            self.remote_pod_ip(n)
        );
        s
    }

    /// Starts node 3's user-space IP-in-IP endpoint (see the module docs)
    /// and waits until it has opened its TUN device and raw socket. It stops
    /// when the returned guard is dropped (or the bed is: it runs in the
    /// bed's namespace `{P}-n3`, whose processes die with the bed).
    pub fn start_ipip_peer(&self) -> anyhow::Result<IpipPeer> {
        let ns = self.ns(Ns::Node(IPIP_NODE));
        let local = self.node_underlay_ip(IPIP_NODE).to_string();
        let remote = self.gateway_underlay_ip().to_string();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, PYTHON, "-u", "-c", IPIP_PEER_PY])
            .args(["--dev", IPIP_DEV, "--local", &local, "--remote", &remote]);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the IP-in-IP endpoint in {ns}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = IpipPeer { child, lines };
        match peer.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "ready" => Ok(peer),
            Ok(line) => bail!("IP-in-IP endpoint in {ns} said {line:?} instead of \"ready\""),
            Err(_) => {
                let status = peer.child.try_wait().ok().flatten();
                bail!("IP-in-IP endpoint in {ns} not ready after 10 s (exit status {status:?})")
            }
        }
    }

    fn build(&self) -> anyhow::Result<()> {
        let ul = self.ns(Ns::Underlay);
        let gw = self.ns(Ns::Gateway);
        let roles = Ns::ALL
            .into_iter()
            .filter(|r| !matches!(r, Ns::LocalPod(_)))
            .chain(self.local_pods().into_iter().map(Ns::LocalPod));
        for role in roles {
            let ns = self.ns(role);
            run(Command::new("ip").args(["netns", "add", &ns]))?;
            ip(&ns, &["link", "set", "lo", "up"])?;
            let forward = match role {
                Ns::Node(_) => "net.ipv4.ip_forward=1",
                _ => "net.ipv4.ip_forward=0",
            };
            nsexec(
                &ns,
                &[
                    "sysctl",
                    "-q",
                    "-w",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                    forward,
                ],
            )?;
        }

        // The underlay switch.
        ip(
            &ul,
            &[
                "link",
                "add",
                "br0",
                "address",
                &mac(0x02, 0xfe).to_string(),
                "type",
                "bridge",
            ],
        )?;
        ip(&ul, &["link", "set", "br0", "up"])?;
        switch_netfilter_off(&ul)?;

        // The gateway's uplink, with N queues on both ends.
        let q = self.spec.underlay_queues.to_string();
        let queues = ["numrxqueues", &q, "numtxqueues", &q];
        let mut args = vec!["link", "add", GATEWAY_UNDERLAY_IF, "address"];
        let gw_ul_mac = mac(0x01, 1).to_string();
        let sw_gw_mac = mac(0x02, 1).to_string();
        args.extend([gw_ul_mac.as_str()]);
        args.extend(queues);
        args.extend([
            "type", "veth", "peer", "name", "sw-gw", "netns", &ul, "address", &sw_gw_mac,
        ]);
        args.extend(queues);
        ip(&gw, &args)?;
        ip(&ul, &["link", "set", "sw-gw", "master", "br0", "up"])?;
        ip(
            &gw,
            &[
                "addr",
                "add",
                &format!("{}/24", self.gateway_underlay_ip()),
                "dev",
                GATEWAY_UNDERLAY_IF,
            ],
        )?;
        ip(&gw, &["link", "set", GATEWAY_UNDERLAY_IF, "up"])?;

        for n in NODES {
            self.build_node(n)?;
        }
        self.build_ipip_node(IPIP_NODE)?;
        for pod in self.local_pods() {
            self.build_local_pod(pod)?;
        }
        Ok(())
    }

    fn build_node(&self, n: u8) -> anyhow::Result<()> {
        let node = self.ns(Ns::Node(n));
        let pod = self.ns(Ns::NodePod(n));
        let node_addr = node_ip(n).to_string();
        let mtu = OVERLAY_MTU.to_string();

        self.build_node_uplink(n)?;

        // flannel.1, exactly as Flannel's VXLAN backend creates it.
        ip(
            &node,
            &[
                "link",
                "add",
                "flannel.1",
                "address",
                &node_vtep_mac(n).to_string(),
                "mtu",
                &mtu,
                "type",
                "vxlan",
                "id",
                &VXLAN_VNI.to_string(),
                "local",
                &node_addr,
                "dev",
                "eth0",
                "dstport",
                &VXLAN_PORT.to_string(),
                "nolearning",
            ],
        )?;
        ip(
            &node,
            &[
                "addr",
                "add",
                &format!("10.244.{n}.0/32"),
                "dev",
                "flannel.1",
            ],
        )?;
        ip(&node, &["link", "set", "flannel.1", "up"])?;

        // cni0 and the pod behind it.
        let cni_mac = MacAddr([0x02, 0x0c, 0xf4, n, 0x00, 0x01]).to_string();
        ip(
            &node,
            &[
                "link", "add", "cni0", "address", &cni_mac, "mtu", &mtu, "type", "bridge",
            ],
        )?;
        ip(
            &node,
            &["addr", "add", &format!("10.244.{n}.1/24"), "dev", "cni0"],
        )?;
        ip(&node, &["link", "set", "cni0", "up"])?;
        let host_end = format!("veth{}", Ns::NodePod(n).suffix());
        ip(
            &node,
            &[
                "link",
                "add",
                &host_end,
                "address",
                &MacAddr([0x02, 0x0e, 0xf4, n, 0x00, 0x02]).to_string(),
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pod,
                "address",
                &MacAddr([0x02, 0x0a, 0xf4, n, 0x00, 0x02]).to_string(),
                "mtu",
                &mtu,
            ],
        )?;
        ip(&node, &["link", "set", &host_end, "master", "cni0", "up"])?;
        ip(
            &pod,
            &["addr", "add", &format!("10.244.{n}.2/24"), "dev", "eth0"],
        )?;
        ip(&pod, &["link", "set", "eth0", "up"])?;
        ip(
            &pod,
            &["route", "add", "default", "via", &format!("10.244.{n}.1")],
        )?;

        // Flannel's three entries for every other node of the cluster
        // (unless a node agent learns them from etcd).
        let others = std::iter::once((0u8, host(UNDERLAY_NET, 1), GATEWAY_VTEP_MAC)).chain(
            NODES
                .into_iter()
                .filter(|&m| m != n)
                .map(|m| (m, node_ip(m), node_vtep_mac(m))),
        );
        for (m, public_ip, vtep) in others.filter(|_| self.options.flannel_entries) {
            let subnet0 = format!("10.244.{m}.0");
            let vtep = vtep.to_string();
            ip(
                &node,
                &[
                    "route",
                    "add",
                    &pod_cidr(m),
                    "via",
                    &subnet0,
                    "dev",
                    "flannel.1",
                    "onlink",
                ],
            )?;
            ip(
                &node,
                &[
                    "neigh",
                    "add",
                    &subnet0,
                    "lladdr",
                    &vtep,
                    "dev",
                    "flannel.1",
                    "nud",
                    "permanent",
                ],
            )?;
            run(Command::new("bridge").args([
                "-n",
                &node,
                "fdb",
                "append",
                &vtep,
                "dev",
                "flannel.1",
                "dst",
                &public_ip.to_string(),
            ]))?;
        }

        for dev in ["eth0", "flannel.1", "cni0", &host_end] {
            tx_csum_off(&node, dev)?;
        }
        tx_csum_off(&pod, "eth0")
    }

    /// Node `n`'s underlay link: `eth0` (its underlay address) in the node's
    /// namespace, its peer `sw-n{n}` enslaved to the switch bridge.
    fn build_node_uplink(&self, n: u8) -> anyhow::Result<()> {
        let ul = self.ns(Ns::Underlay);
        let node = self.ns(Ns::Node(n));
        let sw = format!("sw-n{n}");
        ip(
            &node,
            &[
                "link",
                "add",
                "eth0",
                "address",
                &mac(0x01, 10 + n).to_string(),
                "type",
                "veth",
                "peer",
                "name",
                &sw,
                "netns",
                &ul,
                "address",
                &mac(0x02, 10 + n).to_string(),
            ],
        )?;
        ip(&ul, &["link", "set", &sw, "master", "br0", "up"])?;
        ip(
            &node,
            &["addr", "add", &format!("{}/24", node_ip(n)), "dev", "eth0"],
        )?;
        ip(&node, &["link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// Node 3, Calico-style IP-in-IP: uplink `eth0`, and a persistent TUN
    /// device `tunl0` (MTU underlay − 20) carrying the node's pod address,
    /// routed toward the cluster. [`Testbed::start_ipip_peer`] runs the
    /// tunnel endpoint behind it.
    fn build_ipip_node(&self, n: u8) -> anyhow::Result<()> {
        let node = self.ns(Ns::Node(n));
        self.build_node_uplink(n)?;

        ip(&node, &["tuntap", "add", "dev", IPIP_DEV, "mode", "tun"])?;
        ip(
            &node,
            // A long queue: the user-space endpoint drains it in bursts.
            &[
                "link",
                "set",
                IPIP_DEV,
                "mtu",
                &IPIP_MTU.to_string(),
                "txqueuelen",
                "10000",
                "up",
            ],
        )?;
        let pod_addr = Ipv4Addr::new(10, 244, n, 2).to_string();
        ip(
            &node,
            &["addr", "add", &format!("{pod_addr}/32"), "dev", IPIP_DEV],
        )?;
        ip(
            &node,
            &[
                "route",
                "add",
                CLUSTER_CIDR,
                "dev",
                IPIP_DEV,
                "src",
                &pod_addr,
            ],
        )?;
        for dev in ["eth0", IPIP_DEV] {
            tx_csum_off(&node, dev)?;
        }
        Ok(())
    }

    fn build_local_pod(&self, p: char) -> anyhow::Result<()> {
        let gw = self.ns(Ns::Gateway);
        let pod = self.ns(Ns::LocalPod(p));
        let host_end = self.local_pod_iface(p);
        let pod_ip = local_pod_ip(p);
        let mtu = self.options.local_pod_mtu.to_string();
        let gw_ip = POD_GATEWAY_IP.to_string();
        ip(
            &gw,
            &[
                "link",
                "add",
                &host_end,
                "address",
                &local_host_end_mac(p).to_string(),
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &pod,
                "address",
                &local_pod_mac(p).to_string(),
                "mtu",
                &mtu,
            ],
        )?;
        // The host end owns 169.254.1.1/32, so the gateway namespace's kernel
        // answers the pod's ARP for its default gateway; the /32 route back
        // to the pod (what Calico installs) lets it answer pings too.
        ip(
            &gw,
            &["addr", "add", &format!("{gw_ip}/32"), "dev", &host_end],
        )?;
        ip(&gw, &["link", "set", &host_end, "up"])?;
        ip(
            &gw,
            &[
                "route",
                "add",
                &format!("{pod_ip}/32"),
                "dev",
                &host_end,
                "scope",
                "link",
            ],
        )?;

        ip(
            &pod,
            &["addr", "add", &format!("{pod_ip}/32"), "dev", "eth0"],
        )?;
        ip(&pod, &["link", "set", "eth0", "up"])?;
        ip(
            &pod,
            &["route", "add", &gw_ip, "dev", "eth0", "scope", "link"],
        )?;
        ip(
            &pod,
            &["route", "add", "default", "via", &gw_ip, "dev", "eth0"],
        )?;
        tx_csum_off(&pod, "eth0")
    }
}

/// Node 3's running IP-in-IP endpoint (from [`Testbed::start_ipip_peer`]).
/// Dropping it kills the endpoint.
#[derive(Debug)]
pub struct IpipPeer {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl IpipPeer {
    /// Stops the endpoint (SIGTERM) and returns its summary line, e.g.
    /// `ipip_peer: encap=10 decap=10 ignored=0 errors=0`.
    pub fn stop(self) -> anyhow::Result<String> {
        let pid = libc::pid_t::try_from(self.child.id()).context("endpoint pid")?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let summary = self
            .lines
            .recv_timeout(Duration::from_secs(5))
            .context("the IP-in-IP endpoint printed no summary")?;
        Ok(summary)
    }
}

impl Drop for IpipPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, so a test
/// that panics never leaves a gateway running.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `f` every 50 ms until it holds; panics naming `what` after
/// `timeout` (for tests).
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// Whether the test may do root-only work. Root: `true`. Not root: prints a
/// loud `SKIPPED (needs root): {what}` to stderr and returns `false`, unless
/// the environment has `CI=true`, where skipping would hide a broken setup:
/// then it panics.
pub fn require_root(what: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} needs root, and CI=true forbids skipping it: run the tests as root");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n######## SKIPPED (needs root): {what} ########\n"
    );
    false
}

/// Kills the processes in, and deletes, the namespaces `ovp-{tag}-{role}`.
/// Namespaces that vanish meanwhile (someone else deleted them) are skipped.
fn remove_namespaces(tag: &str) -> anyhow::Result<usize> {
    let prefix = format!("ovp-{tag}-");
    let names: Vec<String> = list_netns()?
        .into_iter()
        .filter(|n| {
            n.strip_prefix(&prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('-'))
        })
        .collect();
    if names.is_empty() {
        return Ok(0);
    }
    let me = std::process::id();
    let mut errors = vec![];
    // Kill, then wait (bounded) for the processes to leave.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut alive = 0;
        for ns in &names {
            match netns_pids(ns) {
                Ok(_) if !netns_exists(ns) => {}
                Ok(pids) => {
                    for pid in pids.into_iter().filter(|&p| p != me) {
                        alive += 1;
                        kill(pid);
                    }
                }
                Err(_) if !netns_exists(ns) => {}
                Err(e) if Instant::now() >= deadline => errors.push(format!("{e:#}")),
                Err(_) => alive += 1,
            }
        }
        if alive == 0 || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut deleted = 0;
    for ns in &names {
        match run(Command::new("ip").args(["netns", "delete", ns])) {
            Ok(_) => deleted += 1,
            Err(_) if !netns_exists(ns) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() {
        Ok(deleted)
    } else {
        Err(anyhow!(
            "deleted {deleted} of {} namespaces: {}",
            names.len(),
            errors.join("; ")
        ))
    }
}

/// An exclusive `flock` on a tag, shared within this process (see [`Testbed`]).
#[derive(Debug)]
struct TagLock {
    _file: File,
}

/// The tags this process holds, so a second bed of the same tag in this
/// process (e.g. after `mem::forget` of the first, a simulated crash) does
/// not wait for itself.
static HELD: Mutex<Vec<(String, Weak<TagLock>)>> = Mutex::new(Vec::new());

impl TagLock {
    fn acquire(tag: &str, wait: Duration) -> anyhow::Result<Arc<TagLock>> {
        if let Some(lock) = held(tag) {
            return Ok(lock);
        }
        let path = format!("/run/lock/overpass-testbed-{tag}.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {path}"))?;
        let deadline = Instant::now() + wait;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {path}"));
                }
            }
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            if Instant::now() >= deadline {
                bail!(
                    "test bed tag {tag:?} is in use by another process (pid {holder}, lock {path})"
                );
            }
            if !told {
                eprintln!("overpass testbed: waiting for tag {tag:?}, in use by pid {holder}");
                told = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Diagnostics only: who holds it.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        let lock = Arc::new(TagLock { _file: file });
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|(_, w)| w.strong_count() > 0);
        held.push((tag.to_string(), Arc::downgrade(&lock)));
        Ok(lock)
    }
}

fn held(tag: &str) -> Option<Arc<TagLock>> {
    let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    held.iter()
        .filter(|(t, _)| t == tag)
        .find_map(|(_, w)| w.upgrade())
}

fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

fn check_tag(tag: &str) -> anyhow::Result<()> {
    if tag.is_empty()
        || tag.len() > 12
        || !tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!("test bed tag must be 1 to 12 characters out of [a-z0-9], not {tag:?}");
    }
    Ok(())
}

fn host(net: Ipv4Addr, n: u8) -> Ipv4Addr {
    let o = net.octets();
    Ipv4Addr::new(o[0], o[1], o[2], n)
}

fn node_ip(n: u8) -> Ipv4Addr {
    host(UNDERLAY_NET, 10 + n)
}

fn pod_cidr(n: u8) -> String {
    format!("10.244.{n}.0/24")
}

/// Underlay MACs: `02:{kind}:c6:12:00:{host}`; kind 01 = node end, 02 = switch end.
fn mac(kind: u8, host: u8) -> MacAddr {
    MacAddr([0x02, kind, 0xc6, 0x12, 0x00, host])
}

fn node_vtep_mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0x00, 0xc6, 0x12, 0x00, 10 + n])
}

fn local_pod_index(p: char) -> u8 {
    2 + (p as u8 - b'a')
}

fn local_pod_ip(p: char) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, local_pod_index(p))
}

fn local_pod_mac(p: char) -> MacAddr {
    MacAddr([0x02, 0x0a, 0xf4, 0x00, 0x00, local_pod_index(p)])
}

fn local_host_end_mac(p: char) -> MacAddr {
    MacAddr([0x02, 0x0e, 0xf4, 0x00, 0x00, local_pod_index(p)])
}

/// The gateway configuration for a bed whose gateway namespace is `gw_ns`.
/// Built as TOML so that fields added later with defaults need no change here.
fn config_toml(gw_ns: &str, pods: &[char]) -> String {
    let mut s = format!(
        "[gateway]\nnetns = \"{gw_ns}\"\npod_cidr = \"{}\"\nunderlay_ip = \"{}\"\nvtep_mac = \"{GATEWAY_VTEP_MAC}\"\n\n\
         [[underlay]]\ninterface = \"{GATEWAY_UNDERLAY_IF}\"\n",
        pod_cidr(0),
        host(UNDERLAY_NET, 1),
    );
    for &p in pods {
        s += &format!(
            "\n[[pod]]\nname = \"{p}\"\ninterface = \"gwp-{p}\"\nip = \"{}\"\nmac = \"{}\"\n",
            local_pod_ip(p),
            local_pod_mac(p)
        );
    }
    for n in NODES {
        s += &format!(
            "\n[[peer]]\nname = \"n{n}\"\npod_cidr = \"{}\"\nunderlay_ip = \"{}\"\nencap = \"vxlan\"\nvni = {VXLAN_VNI}\n\
             port = {VXLAN_PORT}\nvtep_mac = \"{}\"\n",
            pod_cidr(n),
            node_ip(n),
            node_vtep_mac(n)
        );
    }
    s += &format!(
        "\n[[peer]]\nname = \"n{IPIP_NODE}\"\npod_cidr = \"{}\"\nunderlay_ip = \"{}\"\nencap = \"ipip\"\n",
        pod_cidr(IPIP_NODE),
        node_ip(IPIP_NODE),
    );
    s
}

fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with output captured; an error only if it cannot start.
fn output(cmd: &mut Command) -> anyhow::Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{}`", render(cmd)))
}

/// Runs `cmd` with output captured; a non-zero exit is an error naming the
/// command and its stderr (or stdout when stderr is empty).
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = output(cmd)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let detail = if stderr.trim().is_empty() {
            String::from_utf8_lossy(&out.stdout)
        } else {
            stderr
        };
        bail!(
            "`{}` failed ({}): {}",
            render(cmd),
            out.status,
            detail.trim()
        );
    }
    Ok(out)
}

fn ip(ns: &str, args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new("ip").args(["-n", ns]).args(args))
}

fn nsexec(ns: &str, args: &[&str]) -> anyhow::Result<Output> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

/// [`BRIDGE_NF_SYSCTLS`] in `ns` that exist, with their values.
fn bridge_nf_values(ns: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = vec![];
    for key in BRIDGE_NF_SYSCTLS {
        // The keys exist only while br_netfilter is loaded (sysctl fails
        // with "cannot stat" otherwise).
        let Ok(o) = nsexec(ns, &["sysctl", "-n", key]) else {
            continue;
        };
        let text = String::from_utf8_lossy(&o.stdout);
        let value = text
            .trim()
            .parse()
            .with_context(|| format!("{key} in {ns}: {text:?}"))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// Sets [`BRIDGE_NF_SYSCTLS`] to 0 in the switch namespace `ns` and checks
/// they read back 0. Without br_netfilter there is nothing to turn off.
fn switch_netfilter_off(ns: &str) -> anyhow::Result<()> {
    let present = bridge_nf_values(ns)?;
    if present.is_empty() {
        tracing::debug!(%ns, "br_netfilter not loaded: the bridge calls no netfilter hook");
        return Ok(());
    }
    let mut args = vec!["sysctl".to_string(), "-q".into(), "-w".into()];
    args.extend(present.iter().map(|(k, _)| format!("{k}=0")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    nsexec(ns, &args)?;
    let after = bridge_nf_values(ns)?;
    if after.len() != present.len() || after.iter().any(|(_, v)| *v != 0) {
        bail!("bridge netfilter calls still on in {ns} after setting them to 0: {after:?}");
    }
    Ok(())
}

fn tx_csum_off(ns: &str, dev: &str) -> anyhow::Result<()> {
    nsexec(ns, &["ethtool", "-K", dev, "tx", "off"]).map(drop)
}

fn list_netns() -> anyhow::Result<Vec<String>> {
    let dir = Path::new("/run/netns");
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut names = vec![];
    for entry in std::fs::read_dir(dir).context("listing /run/netns")? {
        names.push(
            entry
                .context("listing /run/netns")?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    Ok(names)
}

fn netns_pids(ns: &str) -> anyhow::Result<Vec<u32>> {
    let out = run(Command::new("ip").args(["netns", "pids", ns]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

fn kill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

fn link_json(ns: &str, dev: &str, flag: &str) -> anyhow::Result<serde_json::Value> {
    let out = ip(ns, &["-j", flag, "link", "show", "dev", dev])?;
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `ip -j link show dev {dev}` in {ns}"))?;
    match v.get_mut(0) {
        Some(link) => Ok(link.take()),
        None => bail!("`ip -j link show dev {dev}` in {ns} returned no link"),
    }
}

/// `ip -d -j link show` reports `"xdp": {"mode": …, "prog": {…}}` for one
/// program, or `"xdp": {"attached": [...]}` for several modes at once.
fn xdp_attached(link: &serde_json::Value) -> bool {
    let xdp = &link["xdp"];
    !xdp["prog"].is_null()
        || xdp["attached"].as_array().is_some_and(|a| !a.is_empty())
        || xdp["mode"].as_u64().is_some_and(|m| m != 0)
}

fn parse_ping(raw: &str) -> anyhow::Result<PingStats> {
    let summary = raw
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| anyhow!("no ping summary"))?;
    let mut transmitted = None;
    let mut received = None;
    for part in summary.split(',') {
        let mut words = part.split_whitespace();
        let (Some(num), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        match what {
            "packets" => transmitted = num.parse().ok(),
            "received" => received = num.parse().ok(),
            _ => {}
        }
    }
    let rtt_avg_ms = raw
        .lines()
        .find(|l| l.starts_with("rtt ") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.parse().ok());
    Ok(PingStats {
        transmitted: transmitted.ok_or_else(|| anyhow!("no transmitted count in {summary:?}"))?,
        received: received.ok_or_else(|| anyhow!("no received count in {summary:?}"))?,
        rtt_avg_ms,
        raw: raw.to_string(),
    })
}

fn parse_iperf(raw: &str) -> anyhow::Result<IperfResult> {
    let v: serde_json::Value =
        serde_json::from_str(raw).context("iperf3 printed no JSON report")?;
    if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {err}");
    }
    let end = &v["end"];
    let num = |path: &[&str]| {
        let mut x = end;
        for key in path {
            x = &x[*key];
        }
        x.as_f64()
            .ok_or_else(|| anyhow!("iperf3 report has no end.{}", path.join(".")))
    };
    Ok(IperfResult {
        bytes_sent: num(&["sum_sent", "bytes"])? as u64,
        bytes_received: num(&["sum_received", "bytes"])? as u64,
        bits_per_second: num(&["sum_received", "bits_per_second"])?,
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        raw: raw.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::MutexGuard;

    /// The root tests share namespace names: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spec(tag: &str) -> TestbedSpec {
        TestbedSpec {
            tag: tag.to_string(),
            underlay_queues: 1,
        }
    }

    fn bed_namespaces(tag: &str) -> Vec<String> {
        let prefix = format!("ovp-{tag}-");
        list_netns()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    #[test]
    fn config_validates_and_matches_the_bed() {
        let c = Config::from_toml(&config_toml("ovp-x-gw", &LOCAL_PODS)).unwrap();
        assert_eq!(c.gateway.netns.as_deref(), Some("ovp-x-gw"));
        assert_eq!(c.gateway.vtep_mac, GATEWAY_VTEP_MAC);
        assert_eq!(c.gateway.underlay_ip, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(c.underlay[0].interface, "ul0");
        assert_eq!(c.underlay[0].vxlan_ports, vec![8472, 4789]);
        assert_eq!(c.pod.len(), 2);
        assert_eq!(c.pod[1].interface, "gwp-b");
        assert_eq!(c.pod[1].ip, Ipv4Addr::new(10, 244, 0, 3));
        assert_eq!(c.peer.len(), 3);
        assert_eq!(c.peer[1].underlay_ip, Ipv4Addr::new(198, 18, 0, 12));
        assert_eq!(c.peer[1].vtep_mac, Some(node_vtep_mac(2)));
        assert_eq!((c.peer[0].vni, c.peer[0].port), (1, 8472));
        let n3 = &c.peer[2];
        assert_eq!(n3.name, "n3");
        assert_eq!(n3.encap, overpass_dataplane::fib::Encap::Ipip);
        assert_eq!(n3.underlay_ip, Ipv4Addr::new(198, 18, 0, 13));
        assert_eq!(n3.pod_cidr.to_string(), "10.244.3.0/24");
        assert_eq!((n3.vtep_mac, n3.mtu), (None, None));
    }

    #[test]
    fn names_and_tags() {
        assert_eq!(Ns::NodePod(2).suffix(), "n2p");
        assert_eq!(Ns::Node(IPIP_NODE).suffix(), "n3");
        assert!(std::panic::catch_unwind(|| Ns::NodePod(IPIP_NODE).suffix()).is_err());
        assert!(std::panic::catch_unwind(|| Ns::Node(4).suffix()).is_err());
        assert_eq!(Ns::LocalPod('b').suffix(), "pb");
        assert!(check_tag("t1").is_ok());
        for bad in ["", "a-b", "UPPER", "thirteenchars"] {
            assert!(check_tag(bad).is_err(), "{bad:?}");
        }
        // Every MAC is unicast and locally administered, and they are distinct.
        let mut macs = vec![GATEWAY_VTEP_MAC, node_vtep_mac(1), node_vtep_mac(2)];
        macs.extend(
            LOCAL_PODS
                .iter()
                .flat_map(|&p| [local_pod_mac(p), local_host_end_mac(p)]),
        );
        macs.extend([1, 11, 12, 13].iter().flat_map(|&h| [mac(1, h), mac(2, h)]));
        for m in &macs {
            assert_eq!(m.0[0] & 3, 2, "{m}");
        }
        let n = macs.len();
        macs.sort_by_key(|m| m.0);
        macs.dedup();
        assert_eq!(macs.len(), n);
    }

    #[test]
    fn parses_ping_and_iperf() {
        let raw = "PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data.\n\n--- 10.244.2.2 ping statistics ---\n\
                   3 packets transmitted, 2 received, 33.3333% packet loss, time 401ms\n\
                   rtt min/avg/max/mdev = 0.061/0.083/0.105/0.022 ms\n";
        let s = parse_ping(raw).unwrap();
        assert_eq!(
            (s.transmitted, s.received, s.rtt_avg_ms),
            (3, 2, Some(0.083))
        );
        let lost = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2040ms\n";
        let s = parse_ping(lost).unwrap();
        assert_eq!((s.transmitted, s.received, s.rtt_avg_ms), (3, 0, None));
        assert!(parse_ping("ping: connect: Network is unreachable\n").is_err());

        let json = r#"{"start":{},"end":{"sum_sent":{"bytes":1000,"bits_per_second":8000.0,"retransmits":4},
                       "sum_received":{"bytes":900,"bits_per_second":7200.5}}}"#;
        let r = parse_iperf(json).unwrap();
        assert_eq!(
            (
                r.bytes_sent,
                r.bytes_received,
                r.bits_per_second,
                r.retransmits
            ),
            (1000, 900, 7200.5, 4)
        );
        let err = parse_iperf(r#"{"start":{},"end":{},"error":"unable to connect to server"}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unable to connect"), "{err}");
    }

    #[test]
    fn xdp_detection_from_json() {
        let none: serde_json::Value = serde_json::json!({"ifname": "ul0"});
        assert!(!xdp_attached(&none));
        let one = serde_json::json!({"xdp": {"mode": 1, "prog": {"id": 7}}});
        assert!(xdp_attached(&one));
        let multi =
            serde_json::json!({"xdp": {"mode": 4, "attached": [{"mode": 1, "prog": {"id": 7}}]}});
        assert!(xdp_attached(&multi));
    }

    /// The remote side alone is a working Flannel cluster: pods behind n1
    /// and n2 reach each other through the kernel VXLAN path, and TCP works.
    #[test]
    fn remote_nodes_are_a_working_flannel_cluster() {
        if !require_root("testbed: remote Flannel nodes over kernel VXLAN") {
            return;
        }
        let _serial = serial();
        let t0 = Instant::now();
        let bed = Testbed::create(&spec("tbt")).unwrap();
        eprintln!("testbed create: {:?}", t0.elapsed());
        assert_eq!(bed_namespaces("tbt").len(), 9);

        let n1p = bed.ns(Ns::NodePod(1));
        let n2p = bed.ns(Ns::NodePod(2));
        let udp_before = bed.nstat(&bed.ns(Ns::Node(2)), "UdpInDatagrams").unwrap();
        let stats = bed
            .ping(&n1p, bed.remote_pod_ip(2), 3, &PingOpts::default())
            .unwrap();
        assert!(
            stats.all_received() && stats.transmitted == 3,
            "{}",
            stats.raw
        );
        assert!(stats.rtt_avg_ms.is_some());
        let stats = bed
            .ping(&n2p, bed.remote_pod_ip(1), 3, &PingOpts::default())
            .unwrap();
        assert!(
            stats.all_received() && stats.transmitted == 3,
            "{}",
            stats.raw
        );

        // The echoes crossed n2's VXLAN socket (decap counts as a UDP datagram).
        let udp_after = bed.nstat(&bed.ns(Ns::Node(2)), "UdpInDatagrams").unwrap();
        assert!(
            udp_after >= udp_before + 6,
            "UdpInDatagrams {udp_before} -> {udp_after}"
        );
        assert!(bed.nstat(&n2p, "IcmpInEchos").unwrap() >= 3);
        assert_eq!(bed.nstat(&n2p, "NoSuchCounterAnywhere").unwrap(), 0);

        // A full-size DF packet fits the overlay MTU; one byte more does not.
        let big = PingOpts {
            size: Some(OVERLAY_MTU - 28),
            dont_fragment: true,
            ..PingOpts::default()
        };
        assert!(
            bed.ping(&n1p, bed.remote_pod_ip(2), 2, &big)
                .unwrap()
                .all_received()
        );
        let too_big = PingOpts {
            size: Some(OVERLAY_MTU - 27),
            ..big
        };
        let stats = bed.ping(&n1p, bed.remote_pod_ip(2), 1, &too_big).unwrap();
        assert_eq!((stats.transmitted, stats.received), (1, 0), "{}", stats.raw);
        assert!(stats.raw.contains("mtu=1450"), "{}", stats.raw);

        // TCP across the overlay, both directions, no server left behind.
        let r = bed
            .iperf3(&n2p, bed.remote_pod_ip(2), &n1p, 1, false)
            .unwrap();
        assert!(r.bytes_received > 0 && r.bits_per_second > 0.0, "{r:?}");
        eprintln!(
            "iperf3 n1p->n2p: {:.2} Gbit/s, {} retransmits",
            r.bits_per_second / 1e9,
            r.retransmits
        );
        let r = bed
            .iperf3(&n2p, bed.remote_pod_ip(2), &n1p, 1, true)
            .unwrap();
        assert!(r.bytes_received > 0, "{r:?}");
        assert!(netns_pids(&n2p).unwrap().is_empty());

        // The gateway's underlay is up, has no XDP program, and saw nothing
        // but possibly ARP/broadcast (no flow was addressed to it).
        let gw = bed.ns(Ns::Gateway);
        assert!(!bed.link_xdp_attached(&gw, "ul0").unwrap());
        bed.link_stats(&gw, "ul0").unwrap();
        assert!(bed.link_stats(&gw, "nonexistent0").is_err());

        // Errors name the command and carry its stderr.
        let err = bed
            .exec(&gw, &["ip", "link", "show", "nonexistent0"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ip link show nonexistent0") && err.contains("does not exist"),
            "{err}"
        );

        let t0 = Instant::now();
        assert_eq!(bed.destroy().unwrap(), 9);
        eprintln!("testbed cleanup: {:?}", t0.elapsed());
        assert!(bed_namespaces("tbt").is_empty());
    }

    /// A local pod's ARP for its default gateway 169.254.1.1 is answered by
    /// the gateway namespace's kernel (no XDP program attached here).
    #[test]
    fn local_pods_reach_their_link_local_gateway() {
        if !require_root("testbed: local pod ARP for 169.254.1.1") {
            return;
        }
        let _serial = serial();
        let bed = Testbed::create(&spec("tbt")).unwrap();
        let gw = bed.ns(Ns::Gateway);
        assert_eq!(
            bed.exec(&gw, &["sysctl", "-n", "net.ipv4.ip_forward"])
                .unwrap()
                .stdout,
            b"0\n"
        );
        for pod in LOCAL_PODS {
            let ns = bed.ns(Ns::LocalPod(pod));
            let stats = bed
                .ping(&ns, POD_GATEWAY_IP, 2, &PingOpts::default())
                .unwrap();
            assert!(stats.all_received(), "pod {pod}: {}", stats.raw);
            let neigh = bed
                .exec(&ns, &["ip", "neigh", "show", "169.254.1.1", "dev", "eth0"])
                .unwrap();
            let neigh = String::from_utf8_lossy(&neigh.stdout);
            let host_mac = local_host_end_mac(pod).to_string();
            assert!(
                neigh.contains(&host_mac),
                "pod {pod}: neighbour {neigh:?}, want {host_mac}"
            );
        }
        // The gateway kernel does not forward between its pods.
        let stats = bed
            .ping(
                &bed.ns(Ns::LocalPod('a')),
                bed.local_pod_ip('b'),
                1,
                &PingOpts {
                    timeout_s: 1,
                    ..PingOpts::default()
                },
            )
            .unwrap();
        assert_eq!(stats.received, 0, "{}", stats.raw);
        drop(bed);
        assert!(bed_namespaces("tbt").is_empty());
    }

    /// Node 3: a persistent TUN `tunl0` with the pod address, no carrier
    /// until the user-space IP-in-IP endpoint attaches; the endpoint starts,
    /// reports, and stops with its guard. Local pod MTU follows the options.
    #[test]
    fn ipip_node_and_its_endpoint() {
        if !require_root("testbed: IP-in-IP node 3") {
            return;
        }
        let _serial = serial();
        let bed = Testbed::create_with(
            &spec("tbt"),
            &TestbedOptions {
                local_pod_mtu: 1500,
                ..TestbedOptions::default()
            },
        )
        .unwrap();
        let n3 = bed.ns(Ns::Node(IPIP_NODE));
        let carrier = || {
            let link = link_json(&n3, IPIP_DEV, "-d").unwrap();
            let flags: Vec<String> = serde_json::from_value(link["flags"].clone()).unwrap();
            assert_eq!(link["mtu"].as_u64(), Some(u64::from(IPIP_MTU)));
            !flags.iter().any(|f| f == "NO-CARRIER")
        };
        assert!(!carrier());
        let peer = bed.start_ipip_peer().unwrap();
        assert!(carrier());
        let summary = peer.stop().unwrap();
        assert!(summary.starts_with("ipip_peer: encap="), "{summary}");
        let deadline = Instant::now() + Duration::from_secs(3);
        while carrier() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!carrier());
        // Guards die with the bed too.
        let _peer = bed.start_ipip_peer().unwrap();
        for pod in LOCAL_PODS {
            let link = link_json(&bed.ns(Ns::LocalPod(pod)), "eth0", "-d").unwrap();
            assert_eq!(link["mtu"].as_u64(), Some(1500));
        }
        assert!(bed.describe().contains("IP-in-IP"));
        assert_eq!(bed.destroy().unwrap(), 9);
    }

    /// A bed leaked by a crash (never dropped, a process left running in it)
    /// is removed by the next create with the same tag.
    #[test]
    fn create_after_a_crash() {
        if !require_root("testbed: create after a crash") {
            return;
        }
        let _serial = serial();
        let bed = Testbed::create(&spec("tbt")).unwrap();
        let pod = bed.ns(Ns::NodePod(1));
        let mut sleeper = Command::new("ip")
            .args(["netns", "exec", &pod, "sleep", "600"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while netns_pids(&pod).unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::mem::forget(bed);
        assert_eq!(bed_namespaces("tbt").len(), 9);

        let bed = Testbed::create(&TestbedSpec {
            tag: "tbt".into(),
            underlay_queues: 2,
        })
        .unwrap();
        let status = sleeper.wait().unwrap();
        assert!(!status.success(), "the leftover process was killed");
        let link = link_json(&bed.ns(Ns::Gateway), "ul0", "-d").unwrap();
        assert_eq!(
            (
                link["num_rx_queues"].as_u64(),
                link["num_tx_queues"].as_u64()
            ),
            (Some(2), Some(2))
        );
        let stats = bed
            .ping(
                &bed.ns(Ns::NodePod(1)),
                bed.remote_pod_ip(2),
                3,
                &PingOpts::default(),
            )
            .unwrap();
        assert!(stats.all_received(), "{}", stats.raw);
        // An unrelated tag is untouched by this bed's cleanup.
        assert_eq!(Testbed::cleanup_stale("tbtnone").unwrap(), 0);
        drop(bed);
        assert!(bed_namespaces("tbt").is_empty());
    }
}
