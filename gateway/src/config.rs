//! The gateway's configuration file (TOML).
//!
//! Every table rejects unknown keys (`deny_unknown_fields`), so a typo is an
//! error naming the key rather than a silently ignored setting. Semantic
//! checks that serde cannot express (a pod outside the local podCIDR, two
//! peers owning overlapping podCIDRs, …) live in [`Config::validate`], whose
//! errors name the offending key with its path (`peer[1].pod_cidr`).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use overpass_dataplane::fib::Encap;
use overpass_dataplane::pipeline::RpFilter;
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_dataplane::wire::vxlan::VNI_MAX;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewayConfig,
    /// Underlay (tunnel-facing) interfaces. Issue #2 supports exactly one.
    #[serde(default)]
    pub underlay: Vec<UnderlayConfig>,
    /// Local pods behind veth pairs whose host ends the gateway serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod: Vec<PodConfig>,
    /// Remote nodes: each owns one podCIDR reached through a tunnel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer: Vec<PeerConfig>,
    /// The HTTP control plane. Unset: no API is served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiConfig>,
    /// Where the route set (and a generated VTEP MAC) persist. Unset: the
    /// route set is the configuration's, and API changes are lost on exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<StateConfig>,
    /// Cluster datastores the gateway joins (Flannel's etcd subnet
    /// manager): its own subnet lease, and every other node's lease as a
    /// route. See [`crate::cluster`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<crate::cluster::ClusterConfig>,
    /// Pods attached at run time (the CNI plugin, the attachments API).
    /// Unset: only the `[[pod]]` entries are served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachConfig>,
}

/// `[attach]`: pods attached and detached at run time (`overpass-cni`,
/// `POST /api/v1/attachments`). Every worker reserves UMEM frames and XSK
/// map slots for `max_pods` pods when the gateway starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachConfig {
    /// Pods that may be attached at once (Kubernetes' default node limit is 110).
    #[serde(default = "default_attach_max_pods")]
    pub max_pods: u32,
    /// Ring size and frame budget of each attached pod's sockets (a power
    /// of two, 64..=2048): each pod costs `2 × ring_size` frames of 2 KiB
    /// per worker.
    #[serde(default = "default_attach_ring")]
    pub ring_size: u32,
    /// The local Unix socket `overpass-cni` talks to (created 0600).
    #[serde(default = "default_attach_socket")]
    pub socket: PathBuf,
}

fn default_attach_max_pods() -> u32 {
    110
}

fn default_attach_ring() -> u32 {
    128
}

fn default_attach_socket() -> PathBuf {
    PathBuf::from("/run/overpass/cni.sock")
}

impl Default for AttachConfig {
    fn default() -> Self {
        AttachConfig {
            max_pods: default_attach_max_pods(),
            ring_size: default_attach_ring(),
            socket: default_attach_socket(),
        }
    }
}

impl AttachConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=1024).contains(&self.max_pods) {
            return Err(ConfigError::new(
                "attach.max_pods",
                format!("{} is out of range: from 1 to 1024", self.max_pods),
            ));
        }
        if !self.ring_size.is_power_of_two() || !(64..=2048).contains(&self.ring_size) {
            return Err(ConfigError::new(
                "attach.ring_size",
                format!("{} must be a power of two from 64 to 2048", self.ring_size),
            ));
        }
        if !self.socket.is_absolute() {
            return Err(ConfigError::new(
                "attach.socket",
                format!("{} must be an absolute path", self.socket.display()),
            ));
        }
        Ok(())
    }
}

/// `[api]`: the REST API, /metrics and health endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Listen address. Default 127.0.0.1:9180 (loopback only).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// File holding the bearer token mutations need (mode 0600 or
    /// stricter, enforced). Unset: every mutation is refused (403).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Whether reads (GET) need the token too. Default false; /healthz and
    /// /readyz are always open.
    #[serde(default)]
    pub read_requires_token: bool,
    /// Largest request body accepted, in bytes (default 1 MiB).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
    /// Seconds a client has to send a whole request head (request line and
    /// headers), counted from when the server starts waiting for it: a
    /// half-sent request, and a kept-alive connection with no next
    /// request, are closed after this. Default 10.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: u64,
    /// Seconds a connection may move no byte while the server waits on the
    /// client (a request body that stalls, a response the client does not
    /// read); then it is closed. Default 60.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: u64,
    /// Connections served at once; one more is answered 503 and closed
    /// (counted in `overpass_api_connections_refused_total`). Default 256.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a stop waits for requests in progress before it closes the
    /// connections that are left. Default 5.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: u64,
    /// Extra `Host` header values the API answers (a name or address,
    /// optionally `:port`; without a port any port matches), e.g. the name
    /// a reverse proxy forwards. Loopback names (localhost, 127.0.0.0/8,
    /// [::1]) with the listener's port or none are always accepted; on a
    /// loopback listener nothing else is (DNS rebinding). On another
    /// listener the Host is checked only when this list is not empty.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: default_listen(),
            token_file: None,
            read_requires_token: false,
            body_limit: default_body_limit(),
            header_timeout: default_header_timeout(),
            idle_timeout: default_idle_timeout(),
            max_connections: default_max_connections(),
            shutdown_timeout: default_shutdown_timeout(),
            allowed_hosts: vec![],
        }
    }
}

impl ApiConfig {
    /// Checks the keys' ranges; errors name the key (`api.max_connections`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.body_limit < 1024 {
            return Err(ConfigError::new(
                "api.body_limit",
                "must be at least 1024 bytes",
            ));
        }
        let seconds = [
            ("api.header_timeout", self.header_timeout, 3600),
            ("api.idle_timeout", self.idle_timeout, 86400),
            // The unit's TimeoutStopSec covers this and the dataplane's drain.
            ("api.shutdown_timeout", self.shutdown_timeout, 60),
        ];
        for (key, value, max) in seconds {
            if !(1..=max).contains(&value) {
                return Err(ConfigError::new(
                    key,
                    format!("{value} is out of range: seconds from 1 to {max}"),
                ));
            }
        }
        if !(1..=MAX_API_CONNECTIONS).contains(&self.max_connections) {
            return Err(ConfigError::new(
                "api.max_connections",
                format!(
                    "{} is out of range: from 1 to {MAX_API_CONNECTIONS} (each is a file descriptor; see LimitNOFILE in overpass.service)",
                    self.max_connections
                ),
            ));
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            crate::api::host::HostPattern::parse(host)
                .map_err(|m| ConfigError::new(format!("api.allowed_hosts[{i}]"), m))?;
        }
        Ok(())
    }
}

/// The largest `api.max_connections` accepted.
pub const MAX_API_CONNECTIONS: usize = 65536;

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9180))
}

fn default_body_limit() -> usize {
    1 << 20
}

fn default_header_timeout() -> u64 {
    10
}

fn default_idle_timeout() -> u64 {
    60
}

fn default_max_connections() -> usize {
    256
}

fn default_shutdown_timeout() -> u64 {
    5
}

/// `[state]`: persistent control-plane state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Directory (created 0700) for `routes.json` and `vtep_mac.json`.
    pub dir: PathBuf,
    /// What a start does with a `routes.json` it cannot use (not JSON, an
    /// unknown version, or a set that no longer validates). Default
    /// `fail`: the start fails, naming the file and how to recover.
    #[serde(default)]
    pub on_corrupt: OnCorrupt,
}

impl StateConfig {
    /// `dir`, with the defaults for the rest.
    pub fn new(dir: impl Into<PathBuf>) -> StateConfig {
        StateConfig {
            dir: dir.into(),
            on_corrupt: OnCorrupt::default(),
        }
    }
}

/// `[state] on_corrupt`: see [`StateConfig::on_corrupt`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnCorrupt {
    /// Refuse to start; the error names the file and the recovery.
    #[default]
    Fail,
    /// Rename the file to `routes.json.corrupt-<UTC time>` (kept, never
    /// deleted), log it as an error, and start from the configuration's
    /// route set.
    SetAside,
}

/// `[gateway]`: the gateway's identity as an overlay node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Network namespace (a name under /var/run/netns) the dataplane runs in.
    /// Unset: the namespace the process was started in.
    #[serde(default)]
    pub netns: Option<String>,
    /// This node's podCIDR (the local pods live inside it). Optional with a
    /// `[[cluster]]`: the subnet lease taken there is the podCIDR (given
    /// here too, it pins that lease's subnet).
    #[serde(default = "unset_pod_cidr", skip_serializing_if = "pod_cidr_is_unset")]
    pub pod_cidr: Ipv4Net,
    /// This node's underlay address: outer source of every encapsulated packet.
    pub underlay_ip: Ipv4Addr,
    /// This node's VTEP MAC: inner source MAC on VXLAN, and the inner
    /// destination MAC remote Flannel nodes use for us. Must stay stable
    /// across restarts because peers install it as a permanent neighbour.
    /// Unset (or all zeros): generated once and kept in the `[state]` dir
    /// (see [`crate::control::store::resolve_vtep_mac`]).
    #[serde(default, skip_serializing_if = "mac_is_zero")]
    pub vtep_mac: MacAddr,
    /// Outer IPv4 TTL of encapsulated packets.
    #[serde(default = "default_outer_ttl")]
    pub outer_ttl: u8,
    /// CPU cores for the workers, one per underlay RX queue in order.
    /// Unset: cores are chosen from the ones the process may run on.
    #[serde(default)]
    pub cores: Option<Vec<usize>>,
    /// Workers never sleep: they busy-poll their rings even when idle
    /// (lowest latency; meant for dedicated, isolated cores). Default:
    /// after ~20k empty polls a worker sleeps in poll(2) until traffic.
    #[serde(default)]
    pub busy_poll: bool,
    /// Preferred NAPI busy polling (`SO_PREFER_BUSY_POLL` on every
    /// socket): each worker round runs the sockets' NAPI contexts itself
    /// instead of leaving receive processing to softirq or NAPI threads
    /// competing for its core (see `XskIo::enable_napi_busy_poll`). Pair it
    /// with the interfaces' `napi_defer_hard_irqs` and `gro_flush_timeout`.
    #[serde(default)]
    pub napi_busy_poll: bool,
    /// `SO_BUSY_POLL`: microseconds a blocking poll(2) busy-polls (0 to
    /// 1000000; with `napi_busy_poll`).
    #[serde(default = "default_napi_busy_poll_usecs")]
    pub napi_busy_poll_usecs: u32,
    /// `SO_BUSY_POLL_BUDGET`: frames per NAPI poll (1 to 1024; with
    /// `napi_busy_poll`).
    #[serde(default = "default_napi_busy_poll_budget")]
    pub napi_busy_poll_budget: u32,
    /// Reverse-path filter of tunnel traffic: `strict` (default) drops a
    /// decapsulated packet whose inner source does not route back to the
    /// node it came from (`inner_source_spoofed`), as the kernel's
    /// rp_filter does; `off` trusts the outer source alone.
    #[serde(default)]
    pub rp_filter: RpFilter,
    /// The most routes the route set may hold (configuration, persisted
    /// set, API, reload). Every change rebuilds the whole FIB, so this
    /// bounds the time and memory of one change.
    #[serde(default = "default_max_routes")]
    pub max_routes: usize,
}

fn default_max_routes() -> usize {
    crate::control::rib::DEFAULT_MAX_ROUTES
}

/// `0.0.0.0/0`: "not set" for `gateway.pod_cidr` (a `[[cluster]]` lease
/// gives it).
pub fn unset_pod_cidr() -> Ipv4Net {
    Ipv4Net::default()
}

/// Whether `gateway.pod_cidr` is unset (see [`unset_pod_cidr`]).
pub fn pod_cidr_is_unset(cidr: &Ipv4Net) -> bool {
    *cidr == unset_pod_cidr()
}

/// The all-zero MAC: "not set" for `gateway.vtep_mac`.
pub fn mac_is_zero(mac: &MacAddr) -> bool {
    *mac == MacAddr([0; 6])
}

fn default_outer_ttl() -> u8 {
    64
}

fn default_napi_busy_poll_usecs() -> u32 {
    20
}

fn default_napi_busy_poll_budget() -> u32 {
    64
}

/// `[[underlay]]`: a tunnel-facing NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderlayConfig {
    pub interface: String,
    /// UDP destination ports steered to the gateway as VXLAN.
    #[serde(default = "default_vxlan_ports")]
    pub vxlan_ports: Vec<u16>,
    /// Number of RX queues to serve (one worker each). Unset: all of them.
    #[serde(default)]
    pub queues: Option<u32>,
    /// AF_XDP bind mode.
    #[serde(default)]
    pub bind_mode: BindMode,
    /// Whether pod sockets share the underlay socket's UMEM: `auto`
    /// (default) shares it when the underlay is in copy mode and gives the
    /// pods a UMEM of their own when it is zero-copy (the kernel makes a
    /// socket sharing a UMEM inherit its owner's mode, and veths have no
    /// zero-copy); `separate` always gives them their own (a frame crossing
    /// between the two is copied once).
    #[serde(default)]
    pub pod_umem: PodUmem,
}

fn default_vxlan_ports() -> Vec<u16> {
    vec![8472, 4789]
}

/// How AF_XDP sockets are bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BindMode {
    /// Try zero-copy, fall back to copy mode (the mode in use is logged).
    #[default]
    Auto,
    ZeroCopy,
    Copy,
}

/// Which UMEM the pod sockets of a worker use (see `underlay.pod_umem`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodUmem {
    /// The underlay's when it is copy mode, their own when it is zero-copy.
    #[default]
    Auto,
    /// Always their own.
    Separate,
}

/// `[[pod]]`: a local pod behind a veth pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodConfig {
    pub name: String,
    /// Host end of the pod's veth pair (in the gateway's namespace).
    pub interface: String,
    pub ip: Ipv4Addr,
    /// MAC of the pod's own interface (the inner destination MAC we write).
    pub mac: MacAddr,
}

/// `[[peer]]`: a remote node owning a podCIDR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub name: String,
    pub pod_cidr: Ipv4Net,
    /// The node's underlay address (outer destination).
    pub underlay_ip: Ipv4Addr,
    #[serde(default)]
    pub encap: Encap,
    /// VXLAN network identifier (24 bits). Flannel: 1; Calico: 4096.
    #[serde(default = "default_vni")]
    pub vni: u32,
    /// VXLAN UDP destination port. Flannel: 8472; Calico: 4789.
    #[serde(default = "default_vxlan_port")]
    pub port: u16,
    /// The node's VTEP MAC (inner destination MAC). Required for VXLAN.
    #[serde(default)]
    pub vtep_mac: Option<MacAddr>,
    /// Tunnel MTU override. Unset: underlay MTU minus the encap overhead.
    #[serde(default)]
    pub mtu: Option<u16>,
}

fn default_vni() -> u32 {
    1
}

fn default_vxlan_port() -> u16 {
    8472
}

/// A configuration error: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Path of the offending key, e.g. `peer[1].vni`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Parses and validates a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message names an unknown or missing key but not the
            // key whose value has the wrong type: name it from the span.
            let key = e
                .span()
                .and_then(|span| key_at(text, span.start))
                .unwrap_or_else(|| "config".to_string());
            ConfigError::new(key, e.message().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, anyhow::Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Serialises to TOML (used by `overpass demo` to show what it runs).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configuration serialises")
    }

    /// Checks what serde cannot: ranges, overlaps, duplicates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let gw = &self.gateway;
        crate::cluster::validate_config(self)?;
        // Until the cluster lease gives the podCIDR, nothing can be checked
        // against it (validated again once it is known).
        let pod_cidr_known = !pod_cidr_is_unset(&gw.pod_cidr);
        if gw.pod_cidr.trunc() != gw.pod_cidr {
            return Err(ConfigError::new(
                "gateway.pod_cidr",
                format!(
                    "host bits set in {} (did you mean {}?)",
                    gw.pod_cidr,
                    gw.pod_cidr.trunc()
                ),
            ));
        }
        if mac_is_zero(&gw.vtep_mac) && self.state.is_none() {
            return Err(ConfigError::new(
                "gateway.vtep_mac",
                "required unless [state] dir is set (where a generated one is kept)",
            ));
        }
        if gw.vtep_mac.is_multicast() {
            return Err(ConfigError::new(
                "gateway.vtep_mac",
                "must be a unicast MAC",
            ));
        }
        if let Some(api) = &self.api {
            api.validate()?;
        }
        if let Some(attach) = &self.attach {
            attach.validate()?;
        }
        if gw.outer_ttl == 0 {
            return Err(ConfigError::new("gateway.outer_ttl", "must be at least 1"));
        }
        if gw.napi_busy_poll_usecs > 1_000_000 {
            return Err(ConfigError::new(
                "gateway.napi_busy_poll_usecs",
                format!(
                    "{} is more than 1000000 (one second)",
                    gw.napi_busy_poll_usecs
                ),
            ));
        }
        if !(1..=1024).contains(&gw.napi_busy_poll_budget) {
            return Err(ConfigError::new(
                "gateway.napi_busy_poll_budget",
                format!("{} is not within 1 to 1024", gw.napi_busy_poll_budget),
            ));
        }
        if gw.max_routes == 0 {
            return Err(ConfigError::new("gateway.max_routes", "must be at least 1"));
        }
        let routes = self.peer.len() + self.pod.len();
        if routes > gw.max_routes {
            return Err(ConfigError::new(
                "peer",
                format!(
                    "{} [[peer]] and {} [[pod]] entries are {routes} routes, more than \
                     gateway.max_routes ({})",
                    self.peer.len(),
                    self.pod.len(),
                    gw.max_routes
                ),
            ));
        }
        if let Some(cores) = &gw.cores {
            if cores.is_empty() {
                return Err(ConfigError::new(
                    "gateway.cores",
                    "must not be empty when set",
                ));
            }
            let mut seen = HashSet::new();
            for (i, core) in cores.iter().enumerate() {
                if !seen.insert(core) {
                    return Err(ConfigError::new(
                        format!("gateway.cores[{i}]"),
                        format!("core {core} listed twice"),
                    ));
                }
            }
        }
        if self.underlay.len() != 1 {
            return Err(ConfigError::new(
                "underlay",
                format!(
                    "exactly one [[underlay]] interface is supported, found {}",
                    self.underlay.len()
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, ul) in self.underlay.iter().enumerate() {
            check_ifname(&format!("underlay[{i}].interface"), &ul.interface)?;
            names.insert(ul.interface.clone());
            if ul.vxlan_ports.is_empty() || ul.vxlan_ports.contains(&0) {
                return Err(ConfigError::new(
                    format!("underlay[{i}].vxlan_ports"),
                    "needs at least one port, none of them 0",
                ));
            }
            if ul.queues == Some(0) {
                return Err(ConfigError::new(
                    format!("underlay[{i}].queues"),
                    "must be at least 1",
                ));
            }
        }
        let mut pod_ips = HashSet::new();
        for (i, pod) in self.pod.iter().enumerate() {
            check_ifname(&format!("pod[{i}].interface"), &pod.interface)?;
            if !names.insert(pod.interface.clone()) {
                return Err(ConfigError::new(
                    format!("pod[{i}].interface"),
                    format!("interface {} is used twice", pod.interface),
                ));
            }
            if !gw.pod_cidr.contains(&pod.ip) {
                return Err(ConfigError::new(
                    format!("pod[{i}].ip"),
                    format!("{} is outside the local podCIDR {}", pod.ip, gw.pod_cidr),
                ));
            }
            if !pod_ips.insert(pod.ip) {
                return Err(ConfigError::new(
                    format!("pod[{i}].ip"),
                    format!("{} is used twice", pod.ip),
                ));
            }
            if pod.mac.is_multicast() {
                return Err(ConfigError::new(
                    format!("pod[{i}].mac"),
                    "must be a unicast MAC",
                ));
            }
        }
        let mut cidrs: Vec<(usize, Ipv4Net)> = vec![];
        for (i, peer) in self.peer.iter().enumerate() {
            if peer.pod_cidr.trunc() != peer.pod_cidr {
                return Err(ConfigError::new(
                    format!("peer[{i}].pod_cidr"),
                    format!("host bits set in {}", peer.pod_cidr),
                ));
            }
            if pod_cidr_known
                && (peer.pod_cidr.contains(&gw.pod_cidr) || gw.pod_cidr.contains(&peer.pod_cidr))
            {
                return Err(ConfigError::new(
                    format!("peer[{i}].pod_cidr"),
                    format!(
                        "{} overlaps the local podCIDR {}",
                        peer.pod_cidr, gw.pod_cidr
                    ),
                ));
            }
            for (j, other) in &cidrs {
                if other.contains(&peer.pod_cidr) || peer.pod_cidr.contains(other) {
                    return Err(ConfigError::new(
                        format!("peer[{i}].pod_cidr"),
                        format!("{} overlaps peer[{j}].pod_cidr {other}", peer.pod_cidr),
                    ));
                }
            }
            cidrs.push((i, peer.pod_cidr));
            if peer.vni > VNI_MAX {
                return Err(ConfigError::new(
                    format!("peer[{i}].vni"),
                    format!("{} is larger than the 24-bit maximum {VNI_MAX}", peer.vni),
                ));
            }
            if peer.port == 0 {
                return Err(ConfigError::new(format!("peer[{i}].port"), "must not be 0"));
            }
            if peer.encap == Encap::Vxlan {
                match peer.vtep_mac {
                    None => {
                        return Err(ConfigError::new(
                            format!("peer[{i}].vtep_mac"),
                            "required for a VXLAN peer (Flannel's VtepMAC of that node)",
                        ));
                    }
                    Some(mac) if mac.is_multicast() => {
                        return Err(ConfigError::new(
                            format!("peer[{i}].vtep_mac"),
                            "must be a unicast MAC",
                        ));
                    }
                    Some(_) => {}
                }
                if !self
                    .underlay
                    .iter()
                    .any(|u| u.vxlan_ports.contains(&peer.port))
                {
                    return Err(ConfigError::new(
                        format!("peer[{i}].port"),
                        format!(
                            "UDP port {} is not in any underlay's vxlan_ports",
                            peer.port
                        ),
                    ));
                }
            }
            if let Some(mtu) = peer.mtu
                && mtu < 576
            {
                return Err(ConfigError::new(
                    format!("peer[{i}].mtu"),
                    "must be at least 576",
                ));
            }
        }
        Ok(())
    }
}

/// The dotted path (`api.header_timeout`, `peer[1].vni`) of the `key =`
/// line holding byte `offset` of `text`, under its last table header.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = Default::default();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim().to_string();
            let n = arrays.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = name.0.trim().to_string();
        }
        if (start..end).contains(&offset) {
            let (key, _) = t.split_once('=')?;
            let key = key.trim().trim_matches('"');
            return Some(match table.is_empty() {
                true => key.to_string(),
                false => format!("{table}.{key}"),
            });
        }
        start = end;
    }
    None
}

fn check_ifname(key: &str, name: &str) -> Result<(), ConfigError> {
    // IFNAMSIZ is 16 including the NUL.
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(ConfigError::new(
            key,
            format!("{name:?} is not a valid interface name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[gateway]
pod_cidr = "10.244.0.0/24"
underlay_ip = "198.18.0.1"
vtep_mac = "02:0f:00:00:00:01"

[[underlay]]
interface = "ul0"

[[pod]]
name = "a"
interface = "gwp-a"
ip = "10.244.0.2"
mac = "02:0a:00:00:00:02"

[[peer]]
name = "node1"
pod_cidr = "10.244.1.0/24"
underlay_ip = "198.18.0.11"
vtep_mac = "02:0b:00:00:00:01"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.underlay[0].vxlan_ports, vec![8472, 4789]);
        assert_eq!(c.peer[0].vni, 1);
        assert_eq!(c.peer[0].port, 8472);
        assert_eq!(c.peer[0].encap, Encap::Vxlan);
        assert_eq!(c.gateway.outer_ttl, 64);
        assert_eq!(c.gateway.rp_filter, RpFilter::Strict, "on by default");
        assert_eq!(c.pod[0].mac, MacAddr([2, 0xa, 0, 0, 0, 2]));
        // Round trip through our own serialiser.
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn rp_filter_is_strict_or_off() {
        let with = |v: &str| {
            GOOD.replace(
                "vtep_mac = \"02:0f:00:00:00:01\"",
                &format!("vtep_mac = \"02:0f:00:00:00:01\"\nrp_filter = {v}"),
            )
        };
        let off = Config::from_toml(&with("\"off\"")).unwrap();
        assert_eq!(off.gateway.rp_filter, RpFilter::Off);
        assert_eq!(Config::from_toml(&off.to_toml()).unwrap(), off);
        let strict = Config::from_toml(&with("\"strict\"")).unwrap();
        assert_eq!(strict.gateway.rp_filter, RpFilter::Strict);
        let e = err(&with("\"loose\""));
        assert!(e.message.contains("loose"), "{e}");
    }

    fn err(text: &str) -> ConfigError {
        Config::from_toml(text).unwrap_err()
    }

    #[test]
    fn napi_busy_poll_keys_are_checked() {
        let with = |extra: &str| {
            GOOD.replace(
                "vtep_mac = \"02:0f:00:00:00:01\"",
                &format!("vtep_mac = \"02:0f:00:00:00:01\"\n{extra}"),
            )
        };
        let c = Config::from_toml(GOOD).unwrap();
        assert!(!c.gateway.napi_busy_poll);
        assert_eq!(
            (
                c.gateway.napi_busy_poll_usecs,
                c.gateway.napi_busy_poll_budget
            ),
            (20, 64)
        );
        let on =
            Config::from_toml(&with("napi_busy_poll = true\nnapi_busy_poll_budget = 128")).unwrap();
        assert!(on.gateway.napi_busy_poll);
        assert_eq!(on.gateway.napi_busy_poll_budget, 128);
        assert_eq!(Config::from_toml(&on.to_toml()).unwrap(), on);
        for (extra, key) in [
            ("napi_busy_poll_budget = 0", "gateway.napi_busy_poll_budget"),
            (
                "napi_busy_poll_budget = 1025",
                "gateway.napi_busy_poll_budget",
            ),
            (
                "napi_busy_poll_usecs = 1000001",
                "gateway.napi_busy_poll_usecs",
            ),
        ] {
            assert_eq!(err(&with(extra)).key, key, "{extra}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err(&GOOD.replace("[[underlay]]", "[[underlay]]\ninterfcae = \"x\""));
        assert!(e.message.contains("interfcae"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let cases = [
            (
                "10.244.1.0/24\"\nunderlay_ip",
                "10.244.1.5/24\"\nunderlay_ip",
                "peer[0].pod_cidr",
            ),
            ("ip = \"10.244.0.2\"", "ip = \"10.245.0.2\"", "pod[0].ip"),
            (
                "vtep_mac = \"02:0b:00:00:00:01\"",
                "vtep_mac = \"02:0b:00:00:00:01\"\nvni = 16777216",
                "peer[0].vni",
            ),
            (
                "vtep_mac = \"02:0b:00:00:00:01\"",
                "vtep_mac = \"02:0b:00:00:00:01\"\nport = 9999",
                "peer[0].port",
            ),
            ("10.244.1.0/24", "10.244.0.0/16", "peer[0].pod_cidr"),
            (
                "mac = \"02:0a:00:00:00:02\"",
                "mac = \"03:0a:00:00:00:02\"",
                "pod[0].mac",
            ),
        ];
        for (from, to, key) in cases {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "fixture replacement {from:?} did not apply");
            assert_eq!(err(&text).key, key, "for {to:?}");
        }
    }

    #[test]
    fn api_limits_have_defaults_and_errors_name_the_key() {
        let c = Config::from_toml(&format!("{GOOD}\n[api]\n")).unwrap();
        let api = c.api.unwrap();
        assert_eq!(api, ApiConfig::default());
        assert_eq!(
            (
                api.header_timeout,
                api.idle_timeout,
                api.max_connections,
                api.shutdown_timeout
            ),
            (10, 60, 256, 5)
        );
        assert!(api.allowed_hosts.is_empty());
        let set = Config::from_toml(&format!(
            "{GOOD}\n[api]\nheader_timeout = 2\nidle_timeout = 30\nmax_connections = 1000\nshutdown_timeout = 1\nallowed_hosts = [\"gw.example\", \"[fd00::1]:9180\"]\n"
        ))
        .unwrap();
        assert_eq!(set.api.as_ref().unwrap().max_connections, 1000);
        for (line, key) in [
            ("header_timeout = 0", "api.header_timeout"),
            ("header_timeout = 3601", "api.header_timeout"),
            ("idle_timeout = 0", "api.idle_timeout"),
            ("shutdown_timeout = 0", "api.shutdown_timeout"),
            ("shutdown_timeout = 61", "api.shutdown_timeout"),
            ("max_connections = 0", "api.max_connections"),
            ("max_connections = 65537", "api.max_connections"),
            ("body_limit = 10", "api.body_limit"),
            (
                "allowed_hosts = [\"gw.example\", \"http://x\"]",
                "api.allowed_hosts[1]",
            ),
            ("allowed_hosts = [\"\"]", "api.allowed_hosts[0]"),
            ("allowed_hosts = [\"gw.example:x\"]", "api.allowed_hosts[0]"),
        ] {
            let e = err(&format!("{GOOD}\n[api]\n{line}\n"));
            assert_eq!(e.key, key, "{line}: {e}");
        }
        // Negative and non-integer values are type errors naming the key.
        let e = err(&format!("{GOOD}\n[api]\nheader_timeout = -1\n"));
        assert_eq!(e.key, "api.header_timeout", "{e}");
        let e = err(&format!("{GOOD}\n[api]\nmax_connections = \"10\"\n"));
        assert_eq!(e.key, "api.max_connections", "{e}");
        let e = err(&GOOD.replace("underlay_ip = \"198.18.0.11\"", "underlay_ip = 5"));
        assert_eq!(e.key, "peer[0].underlay_ip", "{e}");
    }

    #[test]
    fn max_routes_bounds_the_configured_set() {
        assert_eq!(
            Config::from_toml(GOOD).unwrap().gateway.max_routes,
            crate::control::rib::DEFAULT_MAX_ROUTES
        );
        let with = |v: &str| {
            GOOD.replace(
                "vtep_mac = \"02:0f:00:00:00:01\"",
                &format!("vtep_mac = \"02:0f:00:00:00:01\"\nmax_routes = {v}"),
            )
        };
        assert!(Config::from_toml(&with("2")).is_ok());
        let e = err(&with("1"));
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            (
                "peer",
                "1 [[peer]] and 1 [[pod]] entries are 2 routes, more than gateway.max_routes (1)"
            )
        );
        assert_eq!(err(&with("0")).key, "gateway.max_routes");
    }

    #[test]
    fn vxlan_peer_needs_vtep_mac() {
        let e = err(&GOOD.replace("vtep_mac = \"02:0b:00:00:00:01\"", ""));
        assert_eq!(e.key, "peer[0].vtep_mac");
    }
}
