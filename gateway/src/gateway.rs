//! Starting and stopping the whole dataplane: XDP steering, AF_XDP
//! workers, and the control thread that keeps next hops resolved.
//!
//! Start-up order matters: the route table is built and validated first
//! (nothing is attached if the configuration is unusable), then the XDP
//! program is loaded and attached with bpf_links (they vanish with the
//! process, so a crash never leaves interfaces steering into dead
//! sockets), then sockets are bound and registered in the XSK map, and
//! only then do workers start. Stop reverses it: workers drain and exit,
//! links are dropped (programs detached), sockets closed.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use overpass_xdp::{PortRole, Steering, XdpMode};

use crate::config::{Config, MacAddr};
use crate::latency::LatencyShared;
use crate::neigh;
use crate::pipeline::Pipeline;
use crate::rib::{NodeSpec, PodPort, PodSpec, Rib, RibContext, RouteSpec};
use crate::route::{LocalNode, PortId};
use crate::stats::{Snapshot, WorkerCounters};
use crate::store::RoutesFile;
use crate::worker::{RoundEpoch, Worker};
use crate::xsk::{PortSpec, XskIo, XskMode};

/// RX/TX/fill ring size for the underlay queue sockets.
const UNDERLAY_RING: u32 = 2048;
/// Ring size for pod veth sockets.
const POD_RING: u32 = 512;

/// What the running dataplane looks like (for logs, the API, tests).
#[derive(Debug, Clone, Default)]
pub struct DataplaneInfo {
    /// (interface, XDP attach mode).
    pub xdp: Vec<(String, XdpMode)>,
    /// (interface/queue, AF_XDP bind mode).
    pub xsk: Vec<(String, XskMode)>,
    /// (worker index, core it is pinned to).
    pub pinning: Vec<(usize, usize)>,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    /// Shared with [`DataplaneView`]s (XDP counters); taken on stop.
    steering: Arc<Mutex<Option<Steering>>>,
    rib: Rib,
    counters: Vec<Arc<WorkerCounters>>,
    latency: Arc<LatencyShared>,
    epochs: Vec<Arc<RoundEpoch>>,
    pub info: DataplaneInfo,
}

/// The read side of a dataplane, for the control plane (API, metrics):
/// cheap to clone, usable from any thread, valid after the gateway stops
/// (counters then stay frozen and XDP counters become empty).
#[derive(Debug, Clone)]
pub struct DataplaneView {
    pub counters: Vec<Arc<WorkerCounters>>,
    pub latency: Arc<LatencyShared>,
    pub info: DataplaneInfo,
    steering: Arc<Mutex<Option<Steering>>>,
    epochs: Vec<Arc<RoundEpoch>>,
}

impl DataplaneView {
    /// A view of no dataplane (`overpass api-only`): no workers, zero
    /// counters, empty histograms.
    pub fn offline() -> DataplaneView {
        DataplaneView {
            counters: vec![],
            latency: Arc::new(LatencyShared::default()),
            info: DataplaneInfo::default(),
            steering: Arc::new(Mutex::new(None)),
            epochs: vec![],
        }
    }

    /// Waits until every worker has finished the round it was in, so a
    /// route table published before the call is the one every packet
    /// forwarded after it sees (the API calls this before acknowledging a
    /// change). Bounded by `timeout`; false if a worker did not finish.
    pub fn quiesce(&self, timeout: Duration) -> bool {
        self.epochs.iter().all(|e| e.wait_quiescent(timeout))
    }

    /// Counters summed over workers.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::sum(self.counters.iter().map(|c| &**c))
    }

    /// A per-peer counter summed over workers.
    pub fn peer_stat(&self, slot: u16, stat: crate::stats::PeerStat) -> u64 {
        self.counters.iter().map(|c| c.peer_stat(slot, stat)).sum()
    }

    /// XDP steering counters (summed over CPUs), by name; empty when no
    /// program is loaded.
    pub fn xdp_counters(&self) -> Vec<(&'static str, u64)> {
        let steering = self.steering.lock().unwrap_or_else(|e| e.into_inner());
        match steering.as_ref().map(|s| s.counters()) {
            Some(Ok(values)) => overpass_xdp::SteerCounter::ALL
                .iter()
                .map(|c| (c.name(), values[*c as usize]))
                .collect(),
            _ => vec![],
        }
    }
}

impl Gateway {
    /// Validates `config`, attaches XDP, binds sockets and starts workers.
    pub fn start(config: &Config) -> anyhow::Result<Gateway> {
        Self::start_with(config, None)
    }

    /// As [`Gateway::start`], with a persisted route set (from
    /// [`crate::store::Store::load_routes`]) in place of the configuration's.
    /// It is validated by the same code as an API change; a set that no
    /// longer validates (say, a pod interface went away) stops the start
    /// with the offending field named.
    pub fn start_with(config: &Config, persisted: Option<RoutesFile>) -> anyhow::Result<Gateway> {
        config.validate()?;
        // Enter the dataplane's namespace on this thread for the set-up;
        // threads spawned from here inherit it. Come back before returning.
        let prev_ns = match &config.gateway.netns {
            Some(ns) => Some(neigh::enter_netns(ns)?),
            None => None,
        };
        let result = Self::start_in_ns(config, persisted);
        if let Some(prev) = prev_ns {
            neigh::setns(&prev).context("returning to the original network namespace")?;
        }
        result
    }

    fn start_in_ns(config: &Config, persisted: Option<RoutesFile>) -> anyhow::Result<Gateway> {
        let ul = &config.underlay[0];
        let plan = port_plan(config)?;
        let rib = initial_rib(rib_context(config, &plan)?, config, persisted)?;
        {
            let table = rib.fib().load();
            tracing::info!(
                peers = table.peers.len(),
                pods = table.pods.len(),
                routes = table.routes.len(),
                pod_cidr = %table.local.pod_cidr,
                "route table built"
            );
        }
        let routes = rib.fib().clone();

        let mut steering = Steering::load(&ul.vxlan_ports).context("loading the XDP program")?;
        let mut xdp = vec![];
        let ul_index = neigh::ifindex(&ul.interface).context("underlay[0].interface")?;
        let mode = steering
            .attach(ul_index, PortRole::Underlay, 0)
            .with_context(|| format!("attaching XDP to {}", ul.interface))?;
        xdp.push((ul.interface.clone(), mode));
        for (i, pod) in config.pod.iter().enumerate() {
            let idx =
                neigh::ifindex(&pod.interface).with_context(|| format!("pod[{i}].interface"))?;
            let mode = steering
                .attach(idx, PortRole::Pod, plan.pod_bases[i])
                .with_context(|| format!("attaching XDP to {}", pod.interface))?;
            xdp.push((pod.interface.clone(), mode));
        }
        for (ifname, mode) in &xdp {
            tracing::info!(%ifname, ?mode, "XDP program attached (bpf_link)");
        }

        let n = plan.workers as usize;
        let cores = pick_cores(config.gateway.cores.as_deref(), n)?;
        let latency = Arc::new(LatencyShared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut xsk = vec![];
        let mut ios = vec![];
        let mut all_counters = vec![];
        let mut epochs = vec![];
        for w in 0..n {
            let counters = Arc::new(WorkerCounters::default());
            let io = XskIo::open(&plan.specs[w], ul.bind_mode, counters.clone())
                .with_context(|| format!("opening AF_XDP sockets of worker {w}"))?;
            for (port, fd) in io.fds().into_iter().enumerate() {
                let slot = plan.slots[w][port];
                steering.register_xsk(slot, fd).with_context(|| {
                    format!("registering worker {w} port {port} in XSK slot {slot}")
                })?;
            }
            xsk.extend(io.modes());
            ios.push(io);
            all_counters.push(counters);
            epochs.push(Arc::new(RoundEpoch::default()));
        }
        let busy_poll = config.gateway.busy_poll;
        let mut workers = vec![];
        let mut pinning = vec![];
        for (w, io) in ios.into_iter().enumerate() {
            let core = cores[w];
            tracing::info!(
                worker = w,
                core,
                underlay_queue = w,
                ports = plan.specs[w].len(),
                "pinning plan"
            );
            pinning.push((w, core));
            let stop = stop.clone();
            let routes = routes.clone();
            let counters = all_counters[w].clone();
            let recorder = latency.recorder();
            let epoch = epochs[w].clone();
            let handle = std::thread::Builder::new()
                .name(format!("overpass-w{w}"))
                .spawn(move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                        tracing::warn!(worker = w, core, "could not pin worker");
                    }
                    let mut worker =
                        Worker::new(io, Pipeline::new(w as u16), routes, counters, busy_poll)
                            .with_latency(recorder)
                            .with_epoch(epoch);
                    worker.run(&stop);
                })
                .with_context(|| format!("spawning worker {w}"))?;
            workers.push(handle);
        }
        let control = {
            let stop = stop.clone();
            let rib = rib.clone();
            let ifname = ul.interface.clone();
            std::thread::Builder::new()
                .name("overpass-ctl".into())
                .spawn(move || control_loop(&stop, &rib, &ifname))
                .context("spawning control thread")?
        };
        Ok(Gateway {
            stop,
            workers,
            control: Some(control),
            steering: Arc::new(Mutex::new(Some(steering))),
            rib,
            counters: all_counters,
            latency,
            epochs,
            info: DataplaneInfo { xdp, xsk, pinning },
        })
    }

    /// Counters summed over workers.
    pub fn counters(&self) -> Snapshot {
        Snapshot::sum(self.counters.iter().map(|c| &**c))
    }

    /// XDP steering counters (summed over CPUs), by name.
    pub fn xdp_counters(&self) -> Vec<(&'static str, u64)> {
        self.view().xdp_counters()
    }

    /// The read side, for the API.
    pub fn view(&self) -> DataplaneView {
        DataplaneView {
            counters: self.counters.clone(),
            latency: self.latency.clone(),
            info: self.info.clone(),
            steering: self.steering.clone(),
            epochs: self.epochs.clone(),
        }
    }

    /// The merged latency histograms.
    pub fn latency(&self) -> &Arc<LatencyShared> {
        &self.latency
    }

    /// The route set (read it, or change it hitlessly).
    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    /// Waits until every peer's next hop is resolved, or `timeout` passes.
    pub fn wait_resolved(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .rib
                .fib()
                .load()
                .peers
                .iter()
                .all(|p| p.next_hop_mac.is_some())
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Stops workers (they drain their TX rings), detaches XDP, closes sockets.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Graceful stop: detach XDP first (no new frames are steered to the
    /// sockets; the kernel gets them meanwhile), then let the workers drain
    /// what their RX rings hold and finish every queued transmission, then
    /// close the sockets.
    fn shutdown(&mut self) {
        let steering = self
            .steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut s) = steering {
            s.detach_all();
            tracing::info!("XDP programs detached");
        }
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
        tracing::info!("gateway stopped: RX stopped, TX drained, sockets closed");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let attached = self
            .steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !self.workers.is_empty() || attached {
            self.shutdown();
        }
    }
}

/// The RIB a gateway starts with: the persisted route set (and its
/// generation) when there is one, else the configuration's at generation 1.
pub fn initial_rib(
    ctx: RibContext,
    config: &Config,
    persisted: Option<RoutesFile>,
) -> anyhow::Result<Rib> {
    match persisted {
        Some(f) => {
            let n = f.routes.len();
            let rib = Rib::new(ctx, f.routes, f.generation)
                .map_err(|e| anyhow::anyhow!("persisted route set (routes.json): {e}"))?;
            tracing::info!(
                routes = n,
                generation = f.generation,
                "loaded the persisted route set"
            );
            Ok(rib)
        }
        None => Rib::new(ctx, config_routes(config), 1).map_err(|e| anyhow::anyhow!("{e}")),
    }
}

/// A RIB context for a gateway without a dataplane (`overpass api-only`):
/// no interface is read. The underlay MTU is taken as 1500, pod interfaces
/// are the configured ones with placeholder ports and host MACs. Route
/// validation otherwise runs exactly as in a real gateway.
pub fn offline_rib_context(config: &Config) -> RibContext {
    let pod_ports = config
        .pod
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let port = (i + 1) as PortId;
            (
                p.interface.clone(),
                PodPort {
                    port,
                    rx_ports: vec![port],
                    host_mac: MacAddr([0x02, 0, 0, 0, 0, (i + 1) as u8]),
                    mtu: 1500,
                },
            )
        })
        .collect();
    RibContext {
        local: LocalNode {
            pod_cidr: config.gateway.pod_cidr,
            underlay_ip: config.gateway.underlay_ip,
            underlay_mac: MacAddr([0x02, 0, 0, 0, 0, 0xfe]),
            vtep_mac: config.gateway.vtep_mac,
            outer_ttl: config.gateway.outer_ttl,
        },
        underlay_mtu: 1500,
        pod_ports,
    }
}

/// The route set a configuration describes: one route per `[[peer]]`
/// podCIDR and one /32 per `[[pod]]`.
pub fn config_routes(config: &Config) -> Vec<RouteSpec> {
    let mut routes: Vec<RouteSpec> = config
        .peer
        .iter()
        .map(|p| RouteSpec {
            prefix: p.pod_cidr,
            node: Some(NodeSpec {
                name: p.name.clone(),
                underlay_ip: p.underlay_ip,
                encap: p.encap,
                vni: p.vni,
                port: p.port,
                vtep_mac: p.vtep_mac,
                mtu: p.mtu,
            }),
            pod: None,
        })
        .collect();
    routes.extend(config.pod.iter().map(|p| RouteSpec {
        prefix: Ipv4Net::new(p.ip, 32).expect("/32 is a valid prefix length"),
        node: None,
        pod: Some(PodSpec {
            name: p.name.clone(),
            interface: p.interface.clone(),
            mac: p.mac,
        }),
    }));
    routes
}

/// What the RIB needs to know about this host: the underlay interface's
/// MAC and MTU, and the worker port and host-end MAC of every pod veth.
/// Reads the interfaces of the calling thread's network namespace.
pub fn rib_context(config: &Config, plan: &PortPlan) -> anyhow::Result<RibContext> {
    let ul = &config.underlay[0];
    let underlay_mac = neigh::interface_mac(&ul.interface).context("underlay[0].interface")?;
    let underlay_mtu = neigh::interface_mtu(&ul.interface).context("underlay[0].interface")?;
    let mut pod_ports = HashMap::new();
    for (i, p) in config.pod.iter().enumerate() {
        let host_mac =
            neigh::interface_mac(&p.interface).with_context(|| format!("pod[{i}].interface"))?;
        // Same layout on every worker (see PortPlan).
        let port = (i + 1) as PortId;
        debug_assert_eq!(plan.specs[0][port as usize].ifname, p.interface);
        pod_ports.insert(
            p.interface.clone(),
            PodPort {
                port,
                rx_ports: vec![port],
                host_mac,
                mtu: neigh::interface_mtu(&p.interface)
                    .with_context(|| format!("pod[{i}].interface"))?
                    .min(u16::MAX as u32) as u16,
            },
        );
    }
    Ok(RibContext {
        local: LocalNode {
            pod_cidr: config.gateway.pod_cidr,
            underlay_ip: config.gateway.underlay_ip,
            underlay_mac,
            vtep_mac: config.gateway.vtep_mac,
            outer_ttl: config.gateway.outer_ttl,
        },
        underlay_mtu: underlay_mtu.min(u16::MAX as u32) as u16,
        pod_ports,
    })
}

/// Which socket serves what. One worker per served underlay RX queue;
/// worker `w` owns, over its own UMEM, a socket on underlay queue `w` and
/// one on queue `w` of every pod veth (a frame only reaches a socket bound
/// to the queue it arrived on, and a worker can only transmit on its own
/// sockets). So every worker has the same port layout — port 0 is its
/// underlay queue, port `1 + i` is pod `i` — and the FIB's pod ports are
/// valid on every worker. XSK map slots: underlay queue `q` at `q`, pod `i`
/// queue `q` at `N + i·N + q`.
#[derive(Debug, Clone)]
pub struct PortPlan {
    /// Number of workers (= served underlay queues).
    pub workers: u32,
    /// Per worker, its sockets in port order.
    pub specs: Vec<Vec<PortSpec>>,
    /// Per worker, the XSK map slot of each port.
    pub slots: Vec<Vec<u32>>,
    /// Per pod, the XSK slot base its XDP attachment uses.
    pub pod_bases: Vec<u32>,
}

/// Plans the ports for `config` from the interfaces' active queue counts.
/// Every pod veth must have as many active queues as there are workers
/// (`ethtool -L`), so whichever queue a pod's frame arrives on, the worker
/// of that queue also owns a socket to answer on.
pub fn port_plan(config: &Config) -> anyhow::Result<PortPlan> {
    let ul = &config.underlay[0];
    let active = crate::xsk::rx_queue_count(&ul.interface).context("underlay[0].interface")?;
    let n = match ul.queues {
        Some(q) if q > active => bail!(
            "underlay[0].queues: {} has {active} active RX queue(s), {q} requested (ethtool -L {} combined {q})",
            ul.interface,
            ul.interface
        ),
        Some(q) => {
            if q < active {
                tracing::warn!(
                    ifname = %ul.interface, served = q, active,
                    "not every underlay RX queue is served: traffic hashed to the others goes to the kernel"
                );
            }
            q
        }
        None => active,
    };
    for (i, p) in config.pod.iter().enumerate() {
        let pq = crate::xsk::rx_queue_count(&p.interface)
            .with_context(|| format!("pod[{i}].interface"))?;
        if pq != n {
            bail!(
                "pod[{i}].interface: {} has {pq} active RX queue(s); with {n} worker(s) it needs exactly {n} (ethtool -L {} rx {n} tx {n})",
                p.interface,
                p.interface
            );
        }
    }
    let slots_needed = n as usize * (1 + config.pod.len());
    if slots_needed > overpass_xdp::abi::MAX_XSKS as usize {
        bail!(
            "{n} queues × (1 underlay + {} pods) = {slots_needed} sockets, more than the XSK map's {}",
            config.pod.len(),
            overpass_xdp::abi::MAX_XSKS
        );
    }
    let pods = config.pod.len() as u32;
    let mut specs = vec![];
    let mut slots = vec![];
    for w in 0..n {
        let mut s = vec![PortSpec {
            ifname: ul.interface.clone(),
            queue: w,
            ring_size: UNDERLAY_RING,
        }];
        let mut sl = vec![w];
        for (i, p) in config.pod.iter().enumerate() {
            s.push(PortSpec {
                ifname: p.interface.clone(),
                queue: w,
                ring_size: POD_RING,
            });
            sl.push(n + i as u32 * n + w);
        }
        specs.push(s);
        slots.push(sl);
    }
    Ok(PortPlan {
        workers: n,
        specs,
        slots,
        pod_bases: (0..pods).map(|i| n + i * n).collect(),
    })
}

/// Chooses `n` cores: the configured ones (each must exist), or by default
/// the highest-numbered cores this process may run on, leaving core 0 to
/// the kernel and the control plane when there is more than one.
pub fn pick_cores(configured: Option<&[usize]>, n: usize) -> anyhow::Result<Vec<usize>> {
    // The cores this thread may run on (the default choice stays inside
    // them, e.g. systemd's CPUAffinity=).
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if let Some(cores) = configured {
        // Configured cores only have to exist: workers set their own
        // affinity, which may lie outside the starting thread's (isolated
        // cores, or a caller pinned elsewhere).
        let online = online_cpus().unwrap_or_else(|| available.clone());
        for (i, c) in cores.iter().enumerate() {
            if !online.contains(c) {
                bail!("gateway.cores[{i}]: core {c} does not exist (online: {online:?})");
            }
        }
        if cores.len() < n {
            bail!(
                "gateway.cores: {n} workers need {n} cores, {} listed",
                cores.len()
            );
        }
        return Ok(cores[..n].to_vec());
    }
    if available.is_empty() {
        bail!("no CPU cores available to pin workers to");
    }
    Ok((0..n)
        .map(|i| available[(available.len() - 1 - i % available.len()) % available.len()])
        .collect())
}

/// The online CPUs (`/sys/devices/system/cpu/online`, e.g. "0-3,6").
fn online_cpus() -> Option<Vec<usize>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    parse_cpu_list(text.trim())
}

/// Parses a kernel CPU list ("0-3,6").
fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut out = vec![];
    for part in text.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => out.push(part.parse().ok()?),
        }
    }
    Some(out)
}

/// Keeps every node's underlay next-hop MAC in step with the kernel's
/// neighbour table; the RIB republishes the FIB when one changes.
fn control_loop(stop: &AtomicBool, rib: &Rib, ifname: &str) {
    let mut next_hops = match neigh::NextHops::new(ifname) {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(%ifname, "cannot follow the neighbour table: {e}; next hops stay unresolved");
            return;
        }
    };
    let mut known: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let nodes = rib.node_addresses();
        match next_hops.refresh(&nodes) {
            Ok(resolved) => {
                if resolved != known {
                    for ip in &nodes {
                        let (old, new) = (known.get(ip), resolved.get(ip));
                        if old != new {
                            tracing::info!(node = %ip, ?old, ?new, "underlay next hop changed");
                        }
                    }
                    rib.set_neighbours(resolved.clone());
                    known = resolved;
                }
            }
            Err(e) => tracing::warn!("reading the neighbour table: {e}"),
        }
        // Woken at once by a neighbour change; otherwise re-checked so new
        // routes and route changes are picked up.
        next_hops.wait(if known.len() == nodes.len() { 200 } else { 20 });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6"), Some(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("x"), None);
        assert!(online_cpus().is_some_and(|c| c.contains(&0)));
    }

    #[test]
    fn configured_cores_must_exist() {
        let e = pick_cores(Some(&[4096]), 1).unwrap_err().to_string();
        assert!(
            e.starts_with("gateway.cores[0]: core 4096 does not exist"),
            "{e}"
        );
        assert_eq!(pick_cores(Some(&[0]), 1).unwrap(), vec![0]);
        assert!(
            pick_cores(Some(&[0]), 2).is_err(),
            "two workers need two cores"
        );
    }
}
