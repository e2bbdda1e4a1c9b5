//! The RIB: the route set as operators describe it (configuration file,
//! REST API), validated as a whole, and turned into FIB tables
//! ([`overpass_dataplane::fib::RouteTable`]) that the workers read.
//!
//! [`Rib`] is the single writer of the FIB: route changes and neighbour
//! (next-hop MAC) changes both go through it, under one control-plane
//! mutex, so they can never publish over each other. Workers never touch
//! that mutex: they only load the published table.
//!
//! Every validation error names the offending field with its path
//! (`routes[2].node.vni`), so an API client or a config file author is told
//! exactly what to fix, and a refused change leaves everything as it was.
//!
//! A route change is one call, [`Rib::change`]: validate the whole new set,
//! persist it ([`RouteStore`]), publish it, and wait until every worker has
//! left the round that may have used the old table. Its errors are typed
//! ([`ChangeError`]); callers map them, they do not re-implement any step.
//!
//! The route set is bounded ([`RibContext::max_routes`], `gateway.max_routes`):
//! every change rebuilds the whole FIB, so the bound caps the time and
//! memory one change may take. Every node gets its own counter slot
//! ([`PeerSlots`]); a slot is reused once its node has left the set and
//! the workers are past it, and the new node counts from zero.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use overpass_dataplane::counters::{MAX_PEERS, PEER_STATS, PeerCounts};
use overpass_dataplane::fib::Encap;
use overpass_dataplane::fib::{
    LocalNode, NextHop, Peer, Pod, PortId, RoundEpoch, Route, RouteHandle, RouteTable,
};
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_dataplane::wire::vxlan::VNI_MAX;

/// One route: a prefix and either a remote node or a local pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Destination prefix (host bits must be clear).
    #[schema(value_type = String, pattern = r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$", example = "10.244.1.0/24")]
    pub prefix: Ipv4Net,
    /// A remote node reached through a tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeSpec>,
    /// A local pod (the prefix is its /32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSpec>,
}

/// A remote node (tunnel endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    /// The node's underlay address (outer destination).
    #[schema(value_type = String, format = Ipv4)]
    pub underlay_ip: Ipv4Addr,
    #[serde(default)]
    pub encap: Encap,
    /// VXLAN network identifier (24 bits). Flannel: 1; Calico: 4096.
    #[serde(default = "default_vni")]
    pub vni: u32,
    /// VXLAN UDP destination port. Flannel: 8472; Calico: 4789.
    #[serde(default = "default_port")]
    pub port: u16,
    /// The node's VTEP MAC (inner destination MAC); required for VXLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", example = "02:00:00:00:00:11")]
    pub vtep_mac: Option<MacAddr>,
    /// Tunnel MTU override; default: underlay MTU minus encap overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

fn default_vni() -> u32 {
    1
}

fn default_port() -> u16 {
    8472
}

/// A local pod behind one of the veths the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    pub name: String,
    /// Host end of the pod's veth pair (must be one the gateway serves).
    pub interface: String,
    /// MAC of the pod's own interface.
    #[schema(value_type = String, pattern = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", example = "02:00:00:00:00:22")]
    pub mac: MacAddr,
}

/// A refused route or route set: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct RibError {
    /// Path of the offending field, e.g. `routes[2].node.vni`.
    pub field: String,
    pub message: String,
    /// The prefix of the route the field belongs to, when it is one route's
    /// (`routes[i]…`): lets a single-route caller name the field relative
    /// to its route.
    #[serde(skip)]
    pub route: Option<Ipv4Net>,
}

impl RibError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> RibError {
        RibError {
            field: field.into(),
            message: message.into(),
            route: None,
        }
    }

    fn under(self, prefix: &str) -> RibError {
        RibError {
            field: if prefix.is_empty() {
                self.field
            } else {
                format!("{prefix}.{}", self.field)
            },
            ..self
        }
    }

    fn of_route(self, prefix: Ipv4Net) -> RibError {
        RibError {
            route: Some(prefix),
            ..self
        }
    }

    /// The field path relative to its route (`routes[3].node.vni` →
    /// `node.vni`, `routes[3]` → `body`) when the error is `prefix`'s route's;
    /// unchanged otherwise.
    pub fn relative_to(self, prefix: Ipv4Net) -> RibError {
        if self.route != Some(prefix) {
            return self;
        }
        let rest = self
            .field
            .strip_prefix("routes[")
            .and_then(|r| r.split_once(']'))
            .map(|(_, rest)| rest);
        let field = match rest {
            Some("") => "body".to_string(),
            Some(rest) if rest.starts_with('.') => rest[1..].to_string(),
            _ => return self,
        };
        RibError { field, ..self }
    }
}

/// Why a route change was refused. In every case nothing changed: not the
/// FIB, not the persisted set, not the generation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The new set does not validate; the error names the field.
    #[error("{0}")]
    Invalid(RibError),
    /// The caller expected another generation (optimistic concurrency).
    #[error("stale: expected {expected}, current is {current}")]
    Stale { expected: u64, current: u64 },
    /// The edit conflicts with the set (e.g. a prefix already routed).
    #[error("{0}")]
    Conflict(RibError),
    /// The edit names something the set does not have.
    #[error("{0}")]
    NotFound(RibError),
    /// Writing the set to the store failed (the message names the file
    /// and the cause).
    #[error("persisting the route set failed: {0}")]
    Persist(String),
    /// Writing the set to the store failed for want of space (ENOSPC,
    /// EDQUOT): a full disk or quota.
    #[error("persisting the route set failed, the state dir's file system is full: {0}")]
    StorageFull(String),
}

impl ChangeError {
    /// A failed [`RouteStore::save_routes`], by cause.
    pub fn persist(e: &anyhow::Error) -> ChangeError {
        let full = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                .is_some_and(|n| n == libc::ENOSPC || n == libc::EDQUOT)
        });
        let message = format!("{e:#}");
        if full {
            ChangeError::StorageFull(message)
        } else {
            ChangeError::Persist(message)
        }
    }
}

/// Where the RIB persists a route set before publishing it (the state dir's
/// `routes.json`, see [`crate::control::store::Store`]).
pub trait RouteStore: Send + Sync + std::fmt::Debug {
    /// Writes `routes` as generation `generation`, durably, or fails.
    fn save_routes(&self, generation: u64, routes: &[RouteSpec]) -> anyhow::Result<()>;
}

/// The dataplane's per-peer statistics, as the RIB needs them when it gives
/// a counter slot to a node (implemented by
/// [`crate::lifecycle::DataplaneView`]). The RIB never writes a worker's
/// counters: it reads them to take the new node's baseline.
pub trait PeerStats: Send + Sync + std::fmt::Debug {
    /// The per-peer counters of `slot`, summed over workers.
    fn slot_counters(&self, slot: u16) -> PeerCounts;
    /// `slot` is given to a new node: its latency histograms start empty
    /// (see [`crate::afxdp::latency::LatencyShared::clear_slot`]).
    fn clear_slot(&self, slot: u16);
}

/// How long a route change waits for a worker to finish the round it was in.
const GRACE: Duration = Duration::from_millis(100);

/// Default of `gateway.max_routes`: the most routes a route set may hold
/// (see `docs/design.md`, "Route set limit", for the measurements it
/// comes from).
pub const DEFAULT_MAX_ROUTES: usize = 131_072;

/// A pod interface the gateway serves: its worker port and host-end MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPort {
    /// Port frames to the pod are sent on (the veth's queue 0 socket).
    pub port: PortId,
    /// Ports frames from the pod arrive on, one per veth RX queue.
    pub rx_ports: Vec<PortId>,
    pub host_mac: MacAddr,
    /// MTU of the pod's veth: the largest IPv4 packet delivered to it.
    pub mtu: u16,
}

/// What does not change while the gateway runs.
#[derive(Debug, Clone)]
pub struct RibContext {
    pub local: LocalNode,
    pub underlay_mtu: u16,
    /// Pod interfaces by name.
    pub pod_ports: HashMap<String, PodPort>,
    /// The most routes a route set may hold (`gateway.max_routes`).
    pub max_routes: usize,
}

impl RouteSpec {
    /// Checks one route on its own; errors name fields relative to it.
    pub fn validate(&self, ctx: &RibContext) -> Result<(), RibError> {
        if self.prefix.trunc() != self.prefix {
            return Err(RibError::new(
                "prefix",
                format!(
                    "host bits set in {} (did you mean {}?)",
                    self.prefix,
                    self.prefix.trunc()
                ),
            ));
        }
        match (&self.node, &self.pod) {
            (Some(_), Some(_)) => Err(RibError::new("node", "give either node or pod, not both")),
            (None, None) => Err(RibError::new(
                "node",
                "missing: give a node or a pod next hop",
            )),
            (Some(node), None) => {
                let local = &ctx.local.pod_cidr;
                if self.prefix.contains(local) || local.contains(&self.prefix) {
                    return Err(RibError::new(
                        "prefix",
                        format!("{} overlaps the local podCIDR {local}", self.prefix),
                    ));
                }
                node.validate(ctx).map_err(|e| e.under("node"))
            }
            (None, Some(pod)) => {
                if self.prefix.prefix_len() != 32 || !ctx.local.pod_cidr.contains(&self.prefix) {
                    return Err(RibError::new(
                        "prefix",
                        format!(
                            "a pod route is a /32 inside the local podCIDR {}",
                            ctx.local.pod_cidr
                        ),
                    ));
                }
                pod.validate(ctx).map_err(|e| e.under("pod"))
            }
        }
    }
}

impl NodeSpec {
    fn validate(&self, ctx: &RibContext) -> Result<(), RibError> {
        if self.name.is_empty() || self.name.len() > 63 {
            return Err(RibError::new("name", "must be 1 to 63 characters"));
        }
        let ip = self.underlay_ip;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            return Err(RibError::new(
                "underlay_ip",
                format!("{ip} is not a unicast node address"),
            ));
        }
        if ip == ctx.local.underlay_ip {
            return Err(RibError::new(
                "underlay_ip",
                format!("{ip} is this gateway's own address"),
            ));
        }
        if self.vni > VNI_MAX {
            return Err(RibError::new(
                "vni",
                format!("{} is larger than the 24-bit maximum {VNI_MAX}", self.vni),
            ));
        }
        if self.port == 0 {
            return Err(RibError::new("port", "must not be 0"));
        }
        if self.encap == Encap::Vxlan {
            match self.vtep_mac {
                None => return Err(RibError::new("vtep_mac", "required for a VXLAN node")),
                Some(m) if !m.is_unicast() || m == MacAddr([0; 6]) => {
                    return Err(RibError::new(
                        "vtep_mac",
                        format!("{m} is not a unicast MAC"),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(mtu) = self.mtu {
            let max = ctx.underlay_mtu.saturating_sub(self.encap.overhead());
            if !(576..=max).contains(&mtu) {
                return Err(RibError::new(
                    "mtu",
                    format!(
                        "{mtu} is outside 576..={max} (underlay MTU {} minus encap overhead)",
                        ctx.underlay_mtu
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The effective tunnel MTU.
    pub fn effective_mtu(&self, underlay_mtu: u16) -> u16 {
        self.mtu
            .unwrap_or(underlay_mtu.saturating_sub(self.encap.overhead()))
    }

    /// Whether two routes may share this node (same underlay address).
    fn same_tunnel(&self, other: &NodeSpec) -> bool {
        self.encap == other.encap
            && self.vni == other.vni
            && self.port == other.port
            && self.vtep_mac == other.vtep_mac
            && self.mtu == other.mtu
    }
}

impl PodSpec {
    fn validate(&self, ctx: &RibContext) -> Result<(), RibError> {
        if self.name.is_empty() || self.name.len() > 63 {
            return Err(RibError::new("name", "must be 1 to 63 characters"));
        }
        if !ctx.pod_ports.contains_key(&self.interface) {
            let mut served: Vec<&str> = ctx.pod_ports.keys().map(String::as_str).collect();
            served.sort_unstable();
            return Err(RibError::new(
                "interface",
                format!(
                    "{:?} is not a pod interface this gateway serves ({served:?})",
                    self.interface
                ),
            ));
        }
        if !self.mac.is_unicast() || self.mac == MacAddr([0; 6]) {
            return Err(RibError::new(
                "mac",
                format!("{} is not a unicast MAC", self.mac),
            ));
        }
        Ok(())
    }
}

/// Validates a whole route set and builds its FIB table as generation
/// `generation`. `neigh` supplies resolved underlay MACs. Nodes new to the
/// set get a slot from `slots`, and the slots of nodes no longer in it
/// retire (see [`PeerSlots`]). Errors name `routes[i].field`, or `routes`
/// for a set over [`RibContext::max_routes`].
pub fn build_fib(
    ctx: &RibContext,
    routes: &[RouteSpec],
    neigh: &HashMap<Ipv4Addr, MacAddr>,
    slots: &mut PeerSlots,
    generation: u64,
) -> Result<RouteTable, RibError> {
    if routes.len() > ctx.max_routes {
        return Err(RibError::new(
            "routes",
            format!(
                "{} routes are more than the {} this gateway accepts (gateway.max_routes)",
                routes.len(),
                ctx.max_routes
            ),
        ));
    }
    let mut peers: Vec<Peer> = vec![];
    let mut peer_specs: Vec<&NodeSpec> = vec![];
    let mut peer_index: HashMap<Ipv4Addr, u32> = HashMap::new();
    let mut pods: Vec<Pod> = vec![];
    let mut pod_index: HashMap<&str, (u32, usize)> = HashMap::new();
    let mut fib_routes = Vec::with_capacity(routes.len());
    let mut seen: HashMap<Ipv4Net, usize> = HashMap::with_capacity(routes.len());
    for (i, r) in routes.iter().enumerate() {
        // The field path, built only for an error.
        let at = || format!("routes[{i}]");
        r.validate(ctx)
            .map_err(|e| e.under(&at()).of_route(r.prefix))?;
        if let Some(j) = seen.insert(r.prefix, i) {
            return Err(RibError::new(
                format!("{}.prefix", at()),
                format!("{} is already routed by routes[{j}]", r.prefix),
            )
            .of_route(r.prefix));
        }
        let next_hop = if let Some(node) = &r.node {
            match peer_index.get(&node.underlay_ip) {
                Some(&idx) => {
                    if !peer_specs[idx as usize].same_tunnel(node) {
                        return Err(RibError::new(
                            format!("{}.node", at()),
                            format!(
                                "node {} is already used with other tunnel settings (encap, vni, port, vtep_mac, mtu must match)",
                                node.underlay_ip
                            ),
                        )
                        .of_route(r.prefix));
                    }
                    NextHop::Peer(idx)
                }
                None => {
                    let (slot, counter_base) = slots.get(node.underlay_ip).ok_or_else(|| {
                        RibError::new(
                            format!("{}.node", at()),
                            format!(
                                "no counter slot left for node {}: all {MAX_PEERS} are held by nodes \
                                 of the current or the new set ({}) or by removed nodes not released \
                                 yet ({}); a removed node's slot is reused from the next change on",
                                node.underlay_ip,
                                slots.by_ip.len(),
                                slots.retiring.len()
                            ),
                        )
                        .of_route(r.prefix)
                    })?;
                    let idx = peers.len() as u32;
                    peer_index.insert(node.underlay_ip, idx);
                    peer_specs.push(node);
                    peers.push(Peer {
                        name: node.name.clone(),
                        underlay_ip: node.underlay_ip,
                        encap: node.encap,
                        vni: node.vni,
                        port: node.port,
                        vtep_mac: node.vtep_mac.unwrap_or_default(),
                        mtu: node.effective_mtu(ctx.underlay_mtu),
                        next_hop_mac: neigh.get(&node.underlay_ip).copied(),
                        slot,
                        counter_base,
                    });
                    NextHop::Peer(idx)
                }
            }
        } else {
            let pod = r.pod.as_ref().expect("validated: node or pod");
            if let Some((_, j)) = pod_index.get(pod.interface.as_str()) {
                return Err(RibError::new(
                    format!("{}.pod.interface", at()),
                    format!("{} already carries routes[{j}]'s pod", pod.interface),
                )
                .of_route(r.prefix));
            }
            let port = &ctx.pod_ports[&pod.interface];
            let idx = pods.len() as u32;
            pod_index.insert(&pod.interface, (idx, i));
            pods.push(Pod {
                name: pod.name.clone(),
                ip: r.prefix.network(),
                mac: pod.mac,
                host_mac: port.host_mac,
                port: port.port,
                rx_ports: port.rx_ports.clone(),
                mtu: port.mtu,
            });
            NextHop::Pod(idx)
        };
        fib_routes.push(Route {
            prefix: r.prefix,
            next_hop,
        });
    }
    let table = RouteTable::build(ctx.local.clone(), peers, pods, fib_routes, generation)
        .map_err(|e| RibError::new("routes", e.to_string()))?;
    slots.retire_others(&peer_index, generation);
    Ok(table)
}

/// Per-node counter slots (indexes of the workers' per-peer counters and
/// of the per-peer latency histograms; [`MAX_PEERS`] of them).
///
/// A node keeps its slot while it is in the route set, so its counters and
/// histograms survive every change that keeps it. A change that removes a
/// node retires its slot: packets of the old table may still be in flight
/// in a worker's round. [`Rib::change`] waits for the workers after
/// publishing; once they were seen past every round that may have used
/// the older tables ([`PeerSlots::confirm`]) the slot is free. So a slot
/// freed by generation g is reused from generation g+1 on, never by g
/// itself (a change that swaps every node for new ones needs room for
/// both sets). A node that leaves and comes back is a new node.
///
/// A reused slot counts from zero for its new node, without any write to a
/// worker's counters: the slot's counters when it is given are the node's
/// baseline (`Peer::counter_base`, read through [`PeerStats`]; readers
/// report counter − baseline), and the slot's latency histograms are
/// cleared before the table that uses it is published.
#[derive(Debug, Default, Clone)]
pub struct PeerSlots {
    /// The nodes of the route set: slot and counter baseline.
    by_ip: HashMap<Ipv4Addr, (u16, PeerCounts)>,
    /// Slots free for a new node, lowest first.
    free: BTreeSet<u16>,
    /// Slots from here on were never given.
    fresh: usize,
    /// Slots of nodes that left the set, with the generation that removed
    /// them: not reusable until the workers are confirmed past it.
    retiring: Vec<(u16, u64)>,
    /// Slots given to new nodes since [`PeerSlots::take_assigned`].
    assigned: Vec<u16>,
    /// Where baselines are read and histograms cleared (none: no dataplane).
    stats: Option<Arc<dyn PeerStats>>,
}

impl PeerSlots {
    /// The slot of `ip` and its counter baseline. A node new to the set gets
    /// a free slot (freed ones first, lowest first) with the slot's current
    /// counters as its baseline; `None` when no slot is free.
    pub fn get(&mut self, ip: Ipv4Addr) -> Option<(u16, PeerCounts)> {
        if let Some(s) = self.by_ip.get(&ip) {
            return Some(*s);
        }
        let slot = match self.free.pop_first() {
            Some(slot) => slot,
            None if self.fresh < MAX_PEERS => {
                self.fresh += 1;
                (self.fresh - 1) as u16
            }
            None => return None,
        };
        let base = self
            .stats
            .as_ref()
            .map_or([0; PEER_STATS], |s| s.slot_counters(slot));
        self.by_ip.insert(ip, (slot, base));
        self.assigned.push(slot);
        Some((slot, base))
    }

    /// The slot of `ip` if it is a node of the route set.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<u16> {
        self.by_ip.get(&ip).map(|(slot, _)| *slot)
    }

    /// Retires the slots of the nodes not in `in_use`, the set just built
    /// as `generation`.
    fn retire_others<V>(&mut self, in_use: &HashMap<Ipv4Addr, V>, generation: u64) {
        let retiring = &mut self.retiring;
        self.by_ip.retain(|ip, (slot, _)| {
            let keep = in_use.contains_key(ip);
            if !keep {
                retiring.push((*slot, generation));
            }
            keep
        });
    }

    /// The workers were seen past every round that may have used a table
    /// older than `generation`: the slots retired up to `generation` are
    /// free.
    pub fn confirm(&mut self, generation: u64) {
        let free = &mut self.free;
        self.retiring.retain(|&(slot, g)| {
            if g <= generation {
                free.insert(slot);
            }
            g > generation
        });
    }

    /// The slots given to new nodes since the last call.
    pub fn take_assigned(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.assigned)
    }
}

#[derive(Debug)]
struct RibState {
    routes: Vec<RouteSpec>,
    generation: u64,
    neigh: HashMap<Ipv4Addr, MacAddr>,
    slots: PeerSlots,
}

/// The route set and the single writer of the FIB.
#[derive(Debug, Clone)]
pub struct Rib {
    /// What the RIB knows of this host. Replaced only under the state lock,
    /// by a change that also edits the pod ports ([`Rib::change_pods`]).
    ctx: Arc<arc_swap::ArcSwap<RibContext>>,
    state: Arc<Mutex<RibState>>,
    fib: RouteHandle,
    /// Where changes are persisted before they are published (none: not
    /// persisted, e.g. tests and the demo).
    store: Option<Arc<dyn RouteStore>>,
    /// The FIB's readers (one per worker), waited for after a publish.
    readers: Arc<[Arc<RoundEpoch>]>,
}

impl Rib {
    /// Validates `routes` and publishes them as generation `generation`.
    pub fn new(ctx: RibContext, routes: Vec<RouteSpec>, generation: u64) -> Result<Rib, RibError> {
        let neigh = HashMap::new();
        let mut slots = PeerSlots::default();
        let table = build_fib(&ctx, &routes, &neigh, &mut slots, generation)?;
        // Fresh slots: nothing recorded under them yet.
        slots.take_assigned();
        Ok(Rib {
            ctx: Arc::new(arc_swap::ArcSwap::from_pointee(ctx)),
            state: Arc::new(Mutex::new(RibState {
                routes,
                generation,
                neigh,
                slots,
            })),
            fib: RouteHandle::new(table),
            store: None,
            readers: Arc::new([]),
        })
    }

    /// Persists every change to `store` before publishing it.
    pub fn with_store(mut self, store: Option<Arc<dyn RouteStore>>) -> Rib {
        self.store = store;
        self
    }

    /// Waits for `readers` (the workers' round epochs) after publishing.
    pub fn with_readers(mut self, readers: Vec<Arc<RoundEpoch>>) -> Rib {
        self.readers = readers.into();
        self
    }

    /// Takes the baselines of nodes given a slot from `stats`, and clears
    /// their latency histograms there (every handle of this RIB). Set it
    /// before the first change; slots given before count from zero.
    pub fn with_peer_stats(self, stats: Arc<dyn PeerStats>) -> Rib {
        self.lock().slots.stats = Some(stats);
        self
    }

    /// What the RIB knows of this host (a snapshot: pods attached at run
    /// time change its `pod_ports`).
    pub fn context(&self) -> Arc<RibContext> {
        self.ctx.load_full()
    }

    /// The handle workers read from.
    pub fn fib(&self) -> &RouteHandle {
        &self.fib
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RibState> {
        // A panic while holding the lock cannot leave a half-written state:
        // every writer builds the new state fully before assigning it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current route set and its generation.
    pub fn routes(&self) -> (u64, Vec<RouteSpec>) {
        let s = self.lock();
        (s.generation, s.routes.clone())
    }

    /// Validates a candidate set without applying it.
    pub fn check(&self, routes: &[RouteSpec]) -> Result<(), RibError> {
        let s = self.lock();
        // Slots assigned while checking are thrown away with the copy.
        let mut slots = s.slots.clone();
        build_fib(
            &self.ctx.load(),
            routes,
            &s.neigh,
            &mut slots,
            s.generation + 1,
        )
        .map(|_| ())
    }

    /// One route change, whole: `edit` changes a copy of the current set
    /// under the RIB lock (so concurrent changes never lose each other, and
    /// it may refuse with its own error); the result is validated as a
    /// whole, persisted, published, and then this waits until no worker is
    /// still in a round that may have loaded the previous table, so the
    /// change is in force for every packet forwarded after it returns.
    /// With `expected`, the current generation must be that one. Returns
    /// the new generation and `edit`'s value. Blocks (fsync, the grace
    /// period): call it off async executors.
    pub fn change<T>(
        &self,
        expected: Option<u64>,
        edit: impl FnOnce(&mut Vec<RouteSpec>) -> Result<T, ChangeError>,
    ) -> Result<(u64, T), ChangeError> {
        self.change_pods(expected, |_| {}, edit)
    }

    /// As [`Rib::change`], also editing the pod interfaces the gateway
    /// serves (`ports`, applied to a copy of the context under the same
    /// lock): a pod attached at run time gets its port and its route in one
    /// change, and a detached one loses both. The new context is kept only
    /// when the change succeeds.
    pub fn change_pods<T>(
        &self,
        expected: Option<u64>,
        ports: impl FnOnce(&mut HashMap<String, PodPort>),
        edit: impl FnOnce(&mut Vec<RouteSpec>) -> Result<T, ChangeError>,
    ) -> Result<(u64, T), ChangeError> {
        let result = {
            let mut s = self.lock();
            if let Some(e) = expected
                && e != s.generation
            {
                return Err(ChangeError::Stale {
                    expected: e,
                    current: s.generation,
                });
            }
            let mut routes = s.routes.clone();
            let value = edit(&mut routes)?;
            let generation = s.generation + 1;
            let mut slots = s.slots.clone();
            let mut ctx = RibContext::clone(&self.ctx.load());
            ports(&mut ctx.pod_ports);
            let table = build_fib(&ctx, &routes, &s.neigh, &mut slots, generation)
                .map_err(ChangeError::Invalid)?;
            if let Some(store) = &self.store {
                store.save_routes(generation, &routes).map_err(|e| {
                    tracing::error!(
                        "persisting route set generation {generation} failed, nothing changed: {e:#}"
                    );
                    ChangeError::persist(&e)
                })?;
            }
            // Slots given to new nodes start with empty histograms (their
            // counters start at the baselines taken by build_fib), before
            // any packet can be recorded for the new node.
            let assigned = slots.take_assigned();
            if let Some(stats) = &slots.stats {
                for &slot in &assigned {
                    stats.clear_slot(slot);
                }
            }
            s.slots = slots;
            self.ctx.store(Arc::new(ctx));
            self.fib.publish(table);
            s.routes = routes;
            s.generation = generation;
            (generation, value)
        };
        if self.readers.iter().all(|r| r.wait_quiescent(GRACE)) {
            // No worker is in a round that may use a table older than this
            // one: slots retired up to this generation may be reused.
            self.lock().slots.confirm(result.0);
        } else {
            tracing::warn!(
                "a worker did not finish its round within {GRACE:?} of a route change; \
                 the counter slots of removed nodes stay reserved until a later change sees it done"
            );
        }
        Ok(result)
    }

    /// Replaces the whole set (see [`Rib::change`]).
    pub fn replace(
        &self,
        routes: Vec<RouteSpec>,
        expected: Option<u64>,
    ) -> Result<u64, ChangeError> {
        self.change(expected, |current| {
            *current = routes;
            Ok(())
        })
        .map(|(generation, ())| generation)
    }

    /// Records resolved underlay MACs and republishes if any changed. Does
    /// not change the route generation (the route set is the same).
    pub fn set_neighbours(&self, neigh: HashMap<Ipv4Addr, MacAddr>) -> bool {
        let mut s = self.lock();
        if s.neigh == neigh {
            return false;
        }
        let mut slots = s.slots.clone();
        let table = build_fib(
            &self.ctx.load(),
            &s.routes,
            &neigh,
            &mut slots,
            s.generation,
        )
        .expect("a route set that validated once validates with other neighbour MACs");
        self.fib.publish(table);
        s.neigh = neigh;
        true
    }

    /// The counter slot of the node at `ip`, if it is in the route set.
    pub fn peer_slot(&self, ip: Ipv4Addr) -> Option<u16> {
        self.lock().slots.lookup(ip)
    }

    /// Underlay addresses of every node the route set uses.
    pub fn node_addresses(&self) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .lock()
            .routes
            .iter()
            .filter_map(|r| r.node.as_ref())
            .map(|n| n.underlay_ip)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}
