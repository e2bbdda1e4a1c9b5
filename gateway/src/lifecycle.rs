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

use anyhow::Context;
use overpass_dataplane::counters::{PeerCounts, PeerStat, Snapshot, WorkerCounters};
use overpass_dataplane::fib::{Peer, RoundEpoch};
use overpass_dataplane::pipeline::Pipeline;
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_xdp::{PortRole, Steering, XdpMode};

use crate::afxdp::latency::LatencyShared;
use crate::afxdp::worker::Worker;
use crate::afxdp::xsk::{XskIo, XskMode};
use crate::config::Config;
use crate::control::attach::{self, Attacher};
use crate::control::cni_socket::LocalServer;
use crate::control::neigh;
use crate::control::ports::{pick_cores, port_plan};
use crate::control::rib::{PeerStats, Rib};
use crate::control::sources::{config_routes, initial_rib, rib_context};
use crate::control::store::RoutesFile;
use crate::host::{iface, netns};

/// What the running dataplane looks like (for logs, the API, tests).
#[derive(Debug, Clone, Default)]
pub struct DataplaneInfo {
    /// (interface, XDP attach mode).
    pub xdp: Vec<(String, XdpMode)>,
    /// (interface/queue, AF_XDP bind mode).
    pub xsk: Vec<(String, XskMode)>,
    /// (worker index, core it is pinned to).
    pub pinning: Vec<(usize, usize)>,
    /// Per worker, the frames of each of its UMEMs (the underlay's first;
    /// a second when the pods have their own).
    pub umem: Vec<Vec<u32>>,
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
    /// The workers' round counters (the RIB's grace period; liveness).
    epochs: Vec<Arc<RoundEpoch>>,
    /// Pods attached at run time (`[attach]`), its thread and its socket.
    attach: Option<(Attacher, JoinHandle<()>, Option<LocalServer>)>,
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
}

impl DataplaneView {
    /// A view of no dataplane (`overpass api-only`): no workers, zero
    /// counters, empty histograms.
    pub fn offline() -> DataplaneView {
        DataplaneView::new(vec![], Arc::new(LatencyShared::default()))
    }

    /// A view of these workers' counters and histograms, without XDP
    /// steering counters.
    pub fn new(counters: Vec<Arc<WorkerCounters>>, latency: Arc<LatencyShared>) -> DataplaneView {
        DataplaneView {
            counters,
            latency,
            info: DataplaneInfo::default(),
            steering: Arc::new(Mutex::new(None)),
        }
    }

    /// Counters summed over workers.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::sum(self.counters.iter().map(|c| &**c))
    }

    /// A per-peer counter of a slot summed over workers: everything the
    /// slot counted, for every node that held it. What a node counted is
    /// [`DataplaneView::peer_counts`].
    pub fn peer_stat(&self, slot: u16, stat: PeerStat) -> u64 {
        self.counters.iter().map(|c| c.peer_stat(slot, stat)).sum()
    }

    /// What `peer` (a node of a published table) counted since it was
    /// given its slot: the slot's counters minus the node's baseline, so a
    /// reused slot never shows its previous node's traffic. Index with
    /// `PeerStat as usize`.
    pub fn peer_counts(&self, peer: &Peer) -> PeerCounts {
        let now = self.slot_counters(peer.slot);
        std::array::from_fn(|i| now[i].saturating_sub(peer.counter_base[i]))
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

impl PeerStats for DataplaneView {
    fn slot_counters(&self, slot: u16) -> PeerCounts {
        let mut sum = [0u64; overpass_dataplane::counters::PEER_STATS];
        for c in &self.counters {
            for (s, v) in sum.iter_mut().zip(c.peer_counts(slot)) {
                *s += v;
            }
        }
        sum
    }

    fn clear_slot(&self, slot: u16) {
        self.latency.clear_slot(slot);
    }
}

impl Gateway {
    /// Validates `config`, attaches XDP, binds sockets and starts workers.
    pub fn start(config: &Config) -> anyhow::Result<Gateway> {
        Self::start_with(config, None)
    }

    /// As [`Gateway::start`], with a persisted route set (from
    /// [`crate::control::store::Store::load_routes`]) in place of the configuration's.
    /// It is validated by the same code as an API change; a set that no
    /// longer validates (say, a pod interface went away) stops the start,
    /// before anything is attached, with the offending field named (an
    /// [`crate::control::sources::InitialRibError::Persisted`] in the error's chain).
    pub fn start_with(config: &Config, persisted: Option<RoutesFile>) -> anyhow::Result<Gateway> {
        config.validate()?;
        // Enter the dataplane's namespace on this thread for the set-up;
        // threads spawned from here inherit it. Come back before returning.
        netns::in_netns(config.gateway.netns.as_deref(), || {
            Self::start_in_ns(config, persisted)
        })
        .context("gateway.netns")?
    }

    fn start_in_ns(config: &Config, persisted: Option<RoutesFile>) -> anyhow::Result<Gateway> {
        let ul = &config.underlay[0];
        let mut plan = port_plan(config)?;
        let n = plan.workers as usize;
        // Pods attached at run time before a restart whose veths are still
        // here: served again, with the configured ones.
        let state_dir = config.state.as_ref().map(|s| s.dir.clone());
        let configured: Vec<String> = config.pod.iter().map(|p| p.interface.clone()).collect();
        let (restored, persisted) = match &config.attach {
            Some(_) => {
                let r = attach::restore(state_dir.as_deref(), &mut plan)?;
                let persisted = r.routes(persisted, config_routes(config), &configured);
                (r, persisted)
            }
            None => (attach::Restored::default(), persisted),
        };
        if let Some(unserved) = plan.unserved_queues(&ul.interface) {
            // The same sentence `overpass check` reports (nic.queues).
            tracing::warn!("{unserved}");
        }
        // One round epoch per worker: the RIB waits on them after each
        // publish, so a change it acknowledges is in force.
        let epochs: Vec<Arc<RoundEpoch>> = (0..n).map(|_| Arc::default()).collect();
        // The workers' counters and histograms: the RIB reads a node's
        // counter baseline and clears its histograms when it gives the node
        // a reused slot.
        let all_counters: Vec<Arc<WorkerCounters>> = (0..n).map(|_| Arc::default()).collect();
        let latency = Arc::new(LatencyShared::default());
        let mut ctx = rib_context(config, &plan)?;
        restored.add_ports(&mut ctx)?;
        let rib = initial_rib(ctx, config, persisted)?
            .with_readers(epochs.clone())
            .with_peer_stats(Arc::new(DataplaneView::new(
                all_counters.clone(),
                latency.clone(),
            )));
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
        let ul_index = iface::ifindex(&ul.interface).context("underlay[0].interface")?;
        let mode = steering
            .attach(ul_index, PortRole::Underlay, 0, plan.workers)
            .with_context(|| format!("attaching XDP to {}", ul.interface))?;
        xdp.push((ul.interface.clone(), mode));
        for (i, pod) in config.pod.iter().enumerate() {
            let idx =
                iface::ifindex(&pod.interface).with_context(|| format!("pod[{i}].interface"))?;
            let mode = steering
                .attach(idx, PortRole::Pod, plan.pod_bases[i], plan.workers)
                .with_context(|| format!("attaching XDP to {}", pod.interface))?;
            xdp.push((pod.interface.clone(), mode));
        }
        for (a, idx) in &restored.attached {
            let mode = steering
                .attach(*idx, PortRole::Pod, a.xsk_base, plan.workers)
                .with_context(|| format!("attaching XDP to {} (restored)", a.interface))?;
            xdp.push((a.interface.clone(), mode));
        }
        for (ifname, mode) in &xdp {
            tracing::info!(%ifname, ?mode, "XDP program attached (bpf_link)");
        }

        let cores = pick_cores(config.gateway.cores.as_deref(), n)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut xsk = vec![];
        let mut ios = vec![];
        let mut umem = vec![];
        for (w, counters) in all_counters.iter().enumerate() {
            let mut io = XskIo::open_for(
                &plan.specs[w],
                ul.bind_mode,
                ul.pod_umem,
                plan.attach_capacity(),
                counters.clone(),
            )
            .with_context(|| format!("opening AF_XDP sockets of worker {w}"))?;
            let gw = &config.gateway;
            if gw.napi_busy_poll {
                io.enable_napi_busy_poll(gw.napi_busy_poll_usecs, gw.napi_busy_poll_budget)
                    .with_context(|| format!("gateway.napi_busy_poll: worker {w}"))?;
                tracing::info!(
                    worker = w,
                    usecs = gw.napi_busy_poll_usecs,
                    budget = gw.napi_busy_poll_budget,
                    "preferred NAPI busy polling: the worker drives its sockets' NAPI contexts"
                );
            }
            let frames = io.umem_frames();
            tracing::info!(
                worker = w,
                umem_frames = ?frames,
                umem_bytes = io.umem_bytes().iter().sum::<u64>(),
                "AF_XDP sockets open ({} UMEM{})",
                frames.len(),
                if frames.len() > 1 { "s: the pods have their own" } else { ", shared by all ports" }
            );
            umem.push(frames);
            for (port, fd) in io.fds().into_iter().enumerate() {
                let slot = plan.slots[w][port];
                steering.register_xsk(slot, fd).with_context(|| {
                    format!("registering worker {w} port {port} in XSK slot {slot}")
                })?;
            }
            xsk.extend(io.modes());
            ios.push(io);
        }
        let busy_poll = config.gateway.busy_poll;
        let rp_filter = config.gateway.rp_filter;
        tracing::info!(?rp_filter, "reverse-path filter of tunnel traffic");
        let mut workers = vec![];
        let mut pinning = vec![];
        let attaching = config.attach.is_some();
        let openers: Vec<_> = ios.iter().map(XskIo::opener).collect();
        let mut command_tx = vec![];
        for (w, io) in ios.into_iter().enumerate() {
            let (tx, commands) = std::sync::mpsc::channel();
            if attaching {
                command_tx.push(tx);
            }
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
                    let pipeline = Pipeline::new(w as u16)
                        .with_rp_filter(rp_filter)
                        .with_icmp_seed(icmp_seed(w));
                    let mut worker = Worker::new(io, pipeline, routes, counters, busy_poll)
                        .with_latency(recorder)
                        .with_epoch(epoch);
                    if attaching {
                        worker = worker.with_commands(commands);
                    }
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
        let steering = Arc::new(Mutex::new(Some(steering)));
        let umem_bytes: u64 = umem
            .iter()
            .flatten()
            .map(|&f| u64::from(f) * u64::from(crate::afxdp::xsk::FRAME_SIZE))
            .sum();
        let attach = match &config.attach {
            Some(ac) => {
                tracing::info!(
                    max_pods = ac.max_pods,
                    ring_size = ac.ring_size,
                    bytes_per_pod_per_worker = plan.bytes_per_attached_pod(),
                    umem_bytes_total = umem_bytes,
                    "pods may be attached at run time"
                );
                let (attacher, thread) = attach::start(attach::AttachSetup {
                    plan: plan.clone(),
                    workers: command_tx,
                    openers,
                    steering: steering.clone(),
                    rib: rib.clone(),
                    restored,
                    configured,
                    state_dir,
                    umem_bytes,
                })?;
                let local = LocalServer::start(&ac.socket, attacher.clone())?;
                Some((attacher, thread, Some(local)))
            }
            None => None,
        };
        Ok(Gateway {
            stop,
            workers,
            control: Some(control),
            attach,
            steering,
            rib,
            counters: all_counters,
            latency,
            epochs,
            info: DataplaneInfo {
                xdp,
                xsk,
                pinning,
                umem,
            },
        })
    }

    /// Counters summed over workers.
    pub fn counters(&self) -> Snapshot {
        Snapshot::sum(self.counters.iter().map(|c| &**c))
    }

    /// Worker threads still running: all of them until [`Gateway::stop`],
    /// unless one ended early (a panic; in a release build a panic aborts
    /// the whole process instead).
    pub fn workers_running(&self) -> usize {
        self.workers.iter().filter(|w| !w.is_finished()).count()
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
        }
    }

    /// Each worker's round counter: it moves at least every ~10 ms while
    /// the worker runs, so one that stands still means a wedged worker
    /// (see [`crate::service::Liveness`]).
    pub fn worker_progress(&self) -> Vec<u64> {
        self.epochs.iter().map(|e| e.rounds()).collect()
    }

    /// The merged latency histograms.
    pub fn latency(&self) -> &Arc<LatencyShared> {
        &self.latency
    }

    /// Pods attached at run time; `None` without `[attach]`.
    pub fn attacher(&self) -> Option<&Attacher> {
        self.attach.as_ref().map(|(a, _, _)| a)
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
        if let Some((attacher, thread, local)) = self.attach.take() {
            drop(local);
            attacher.stop();
            let _ = thread.join();
        }
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

/// A random key for worker `w`'s ICMP rate-limit hash (std's per-process
/// random hasher keys), so which sources share a bucket cannot be worked
/// out from outside.
fn icmp_seed(w: usize) -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(w) as u32
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
