//! Pods attached and detached at run time (`[attach]`): what `overpass-cni`
//! and `POST /api/v1/attachments` drive.
//!
//! Every step runs on one control thread (`overpass-attach`, in the
//! dataplane's namespace), one request at a time; workers are handed their
//! part through their command channel (see `afxdp::worker::Command`), so a
//! worker stays the only owner of its sockets and never takes a lock per
//! packet.
//!
//! Attach: a free pod port (its XSK slot range follows from it), one socket
//! per worker on the veth's queue `w` (opened here on the worker's pod UMEM,
//! inserted by the worker, which lends it its frame budget), the sockets in
//! the XSK map, the XDP program on the veth, and then the pod's port and /32
//! route in one [`Rib::change_pods`]: the route appears only once every
//! socket is ready. Any failure undoes the steps already taken.
//!
//! Detach reverses it: route and port leave the RIB (the change waits for
//! the workers, so nothing routes to the port any more), XDP is detached
//! and the XSK slots emptied, then each worker removes its socket and
//! takes back every frame the socket held (`XskIo::remove_port`); the port
//! goes back to the free list.
//!
//! Attachments persist in the state dir as `attachments.json` (atomic
//! writes). At start, those whose veth still exists (with the right queue
//! count) are restored with the configured pods; the others are reported
//! (log, `GET /api/v1/attachments`) and their routes dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_xdp::{PortRole, Steering};

use crate::afxdp::worker::Command;
use crate::afxdp::xsk::{
    ClosedPort, FRAME_SIZE, PortOpener, PortRemoval, PortSpec, RetiredPort, XskIo,
};
use crate::control::ports::PortPlan;
use crate::control::rib::{ChangeError, PodPort, PodSpec, Rib, RibContext, RouteSpec};
use crate::control::store::{RoutesFile, write_atomic};
use crate::host::{ethtool, iface};

/// The file attachments persist in, in the state dir.
pub const ATTACHMENTS_FILE: &str = "attachments.json";
const FILE_VERSION: u32 = 1;

/// How long a worker may take to run a command (it checks its channel once
/// per poll round and sleeps at most 10 ms).
const WORKER_REPLY: Duration = Duration::from_secs(5);

/// A pod to attach: the host end of its veth and what the pod is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// The container runtime's ID of the pod sandbox (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The interface name inside the pod (`CNI_IFNAME`).
    pub ifname: String,
    /// Host end of the pod's veth, in the gateway's namespace.
    pub interface: String,
    /// The pod's address (its /32 is routed to it).
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    /// MAC of the pod's own interface.
    #[schema(value_type = String, pattern = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$", example = "02:00:00:00:00:22")]
    pub mac: MacAddr,
    /// The veth's MTU; when given it must be the host end's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Name of the pod route; default `pod-<container_id, 12 chars>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A pod attached at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    pub interface: String,
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    #[schema(value_type = String)]
    pub mac: MacAddr,
    pub mtu: u16,
    pub name: String,
    /// The worker port of the pod (the same on every worker).
    pub port: u16,
    /// First XSK map slot of the pod (queue `q` at `xsk_base + q`).
    pub xsk_base: u32,
}

/// An attachment that was persisted but could not be restored at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotRestored {
    pub attachment: Attachment,
    pub reason: String,
}

/// Frame accounting of one worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerFrames {
    /// Frames of each UMEM (the underlay's first).
    pub umem_frames: Vec<u32>,
    /// Frames of each UMEM on its free list now.
    pub free_frames: Vec<u32>,
    /// Sockets open (= XSK map slots in use by this worker).
    pub sockets: u32,
    /// Port slots free for pods attached at run time.
    pub free_ports: u32,
}

/// What `GET /api/v1/attachments` and the plugin's STATUS see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttachStatus {
    /// The gateway serves attach requests.
    pub ready: bool,
    pub workers: u32,
    /// `attach.max_pods`.
    pub max_pods: u32,
    /// `attach.ring_size`: each attached pod socket's frame budget.
    pub ring_size: u32,
    /// UMEM bytes one attached pod costs each worker (2 × ring_size frames
    /// of 2 KiB); times `workers` for the whole gateway.
    pub bytes_per_pod_per_worker: u64,
    /// UMEM bytes of all workers (every pool, the attach reserve included).
    pub umem_bytes_total: u64,
    /// XSK map slots holding a socket (every worker's open sockets).
    pub xsk_slots_in_use: u32,
    /// The MTU pods get: the underlay's minus VXLAN's 50 bytes.
    pub tunnel_mtu: u16,
    #[schema(value_type = String)]
    pub pod_cidr: Ipv4Net,
    pub per_worker: Vec<WorkerFrames>,
    pub attachments: Vec<Attachment>,
    pub not_restored: Vec<NotRestored>,
}

/// What a plugin needs before it makes a pod's veth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// Workers: the queue count every pod veth needs.
    pub workers: u32,
    /// The MTU pods get: the underlay's minus VXLAN's 50 bytes.
    pub tunnel_mtu: u16,
    /// Pod ports free for attachment.
    pub free_slots: u32,
}

/// A refused or failed attach or detach. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct AttachError {
    pub kind: AttachErrorKind,
    /// The request field (or configuration key) to fix.
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachErrorKind {
    /// The request does not fit this host (400/422).
    Invalid,
    /// Already attached, or the address is routed (409).
    Conflict,
    /// No such attachment (404).
    NotFound,
    /// `attach.max_pods` reached (507).
    Full,
    /// The gateway is stopping (503).
    Unavailable,
    /// A step failed (500).
    Failed,
}

impl AttachError {
    fn new(kind: AttachErrorKind, field: impl Into<String>, message: impl Into<String>) -> Self {
        AttachError {
            kind,
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttachmentsFile {
    version: u32,
    attachments: Vec<Attachment>,
}

enum Request {
    Attach(AttachRequest, mpsc::Sender<Result<Attachment, AttachError>>),
    Detach(String, mpsc::Sender<Result<PortRemoval, AttachError>>),
    Status(mpsc::Sender<AttachStatus>),
    Ready(mpsc::Sender<Readiness>),
    UseRib(Rib),
    Stop,
}

/// The handle: cheap to clone, usable from any thread. Requests are served
/// one at a time by the `overpass-attach` thread.
#[derive(Debug, Clone)]
pub struct Attacher {
    tx: Arc<Mutex<Option<mpsc::Sender<Request>>>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Attach(..) => "Attach",
            Request::Detach(..) => "Detach",
            Request::Status(..) => "Status",
            Request::Ready(..) => "Ready",
            Request::UseRib(..) => "UseRib",
            Request::Stop => "Stop",
        })
    }
}

fn unavailable() -> AttachError {
    AttachError::new(
        AttachErrorKind::Unavailable,
        "gateway",
        "the gateway is stopping",
    )
}

impl Attacher {
    fn send(&self, r: Request) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        tx.as_ref().is_some_and(|tx| tx.send(r).is_ok())
    }

    /// Attaches a pod (see the module docs). Blocks until done.
    pub fn attach(&self, req: AttachRequest) -> Result<Attachment, AttachError> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::Attach(req, tx)) {
            return Err(unavailable());
        }
        rx.recv().unwrap_or_else(|_| Err(unavailable()))
    }

    /// Detaches the pod on host interface `interface`. Blocks until done.
    pub fn detach(&self, interface: &str) -> Result<PortRemoval, AttachError> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::Detach(interface.to_string(), tx)) {
            return Err(unavailable());
        }
        rx.recv().unwrap_or_else(|_| Err(unavailable()))
    }

    /// Attachments, capacity, memory and frame accounting. `None` once the
    /// gateway stopped.
    pub fn status(&self) -> Option<AttachStatus> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::Status(tx)) {
            return None;
        }
        rx.recv().ok()
    }

    /// Whether attach requests are served, and what a plugin needs to make
    /// a pod's veth (cheap: no worker is asked). `None` once stopped.
    pub fn ready(&self) -> Option<Readiness> {
        let (tx, rx) = mpsc::channel();
        if !self.send(Request::Ready(tx)) {
            return None;
        }
        rx.recv().ok()
    }

    /// Route changes go through `rib` from now on (a handle that persists
    /// to the state dir; the gateway's own does not).
    pub fn use_rib(&self, rib: Rib) {
        self.send(Request::UseRib(rib));
    }

    /// Ends the control thread (the gateway is stopping).
    pub fn stop(&self) {
        self.send(Request::Stop);
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// What the control thread owns.
struct AttachState {
    workers: Vec<mpsc::Sender<Command<XskIo>>>,
    openers: Vec<PortOpener>,
    steering: Arc<Mutex<Option<Steering>>>,
    rib: Rib,
    n: u32,
    ring: u32,
    max_pods: u32,
    /// Pod ports free for attachment.
    free: BTreeSet<u16>,
    /// By host interface; with its ifindex at attach time.
    attached: BTreeMap<String, (Attachment, u32)>,
    /// Interfaces of the configured pods (never attachable).
    configured: Vec<String>,
    not_restored: Vec<NotRestored>,
    state_dir: Option<PathBuf>,
    umem_bytes: u64,
    /// Sockets of removed ports that own their UMEM's descriptor.
    retired: Vec<RetiredPort>,
    /// Milliseconds the last bring-up spent binding sockets, handing them
    /// to the workers, in XDP and XSK map, and in the route change (logged).
    steps_ms: [f64; 4],
}

/// Restored attachments, before the gateway's sockets open.
#[derive(Debug, Default)]
pub struct Restored {
    pub attached: Vec<(Attachment, u32)>,
    pub not_restored: Vec<NotRestored>,
    /// Host-end MACs of the restored veths, read with their other facts
    /// (a veth may be going away while the gateway starts).
    pub host_macs: HashMap<String, MacAddr>,
}

/// Reads `attachments.json` from `state_dir` and adds those whose veth
/// exists with `plan.workers` queues to `plan` (their sockets then open with
/// the others at start). Call in the dataplane's namespace.
pub fn restore(state_dir: Option<&Path>, plan: &mut PortPlan) -> anyhow::Result<Restored> {
    let mut out = Restored::default();
    let Some(dir) = state_dir else {
        return Ok(out);
    };
    let path = dir.join(ATTACHMENTS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
    };
    let file: AttachmentsFile =
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if file.version != FILE_VERSION {
        anyhow::bail!(
            "{}: version {} (this gateway reads {FILE_VERSION})",
            path.display(),
            file.version
        );
    }
    for mut a in file.attachments {
        let check = || -> Result<(u32, MacAddr), String> {
            let idx = iface::ifindex(&a.interface).map_err(|e| format!("{e}"))?;
            let q = ethtool::rx_queue_count(&a.interface).map_err(|e| format!("{e}"))?;
            if q != plan.workers {
                return Err(format!("{} active RX queues, {} workers", q, plan.workers));
            }
            let mac = iface::interface_mac(&a.interface).map_err(|e| format!("{e}"))?;
            Ok((idx, mac))
        };
        let checked = check();
        match checked.and_then(|(idx, mac)| {
            plan.add_attached(&a.interface)
                .map(|port| (idx, port, mac))
                .map_err(|e| e.to_string())
        }) {
            Ok((idx, port, mac)) => {
                out.host_macs.insert(a.interface.clone(), mac);
                a.port = port;
                a.xsk_base = plan.slot_base(port);
                tracing::info!(interface = %a.interface, ip = %a.ip, port, "attachment restored");
                out.attached.push((a, idx));
            }
            Err(reason) => {
                tracing::warn!(interface = %a.interface, ip = %a.ip, container_id = %a.container_id, %reason, "attachment not restored: its route is dropped");
                out.not_restored.push(NotRestored {
                    attachment: a,
                    reason,
                });
            }
        }
    }
    Ok(out)
}

impl Restored {
    /// Adds the restored pods' ports to `ctx`.
    pub fn add_ports(&self, ctx: &mut RibContext) -> anyhow::Result<()> {
        for (a, _) in &self.attached {
            let host_mac = match self.host_macs.get(&a.interface) {
                Some(m) => *m,
                None => iface::interface_mac(&a.interface)?,
            };
            ctx.pod_ports.insert(
                a.interface.clone(),
                PodPort {
                    port: a.port,
                    rx_ports: vec![a.port],
                    host_mac,
                    mtu: a.mtu,
                },
            );
        }
        Ok(())
    }

    /// The route set to start with (`[attach]` set): `persisted` (or
    /// `config_routes` when there is none) keeping only the pod routes of
    /// `configured` interfaces and of restored attachments — those of
    /// attachments not restored go, and so does one a crash left between
    /// writing `routes.json` and `attachments.json` — with a route for
    /// every restored attachment.
    pub fn routes(
        &self,
        persisted: Option<RoutesFile>,
        config_routes: Vec<RouteSpec>,
        configured: &[String],
    ) -> Option<RoutesFile> {
        if persisted.is_none() && self.attached.is_empty() {
            return None;
        }
        let mut file = persisted.unwrap_or(RoutesFile {
            version: 1,
            generation: 1,
            routes: config_routes,
        });
        let served = |i: &str| {
            configured.iter().any(|c| c == i) || self.attached.iter().any(|(a, _)| a.interface == i)
        };
        file.routes.retain(|r| match &r.pod {
            Some(p) if !served(&p.interface) => {
                tracing::warn!(prefix = %r.prefix, interface = %p.interface, "pod route dropped: its interface is neither configured nor a restored attachment");
                false
            }
            _ => true,
        });
        for (a, _) in &self.attached {
            let has = file
                .routes
                .iter()
                .any(|r| r.pod.as_ref().is_some_and(|p| p.interface == a.interface));
            if !has {
                file.routes.push(route_of(a));
            }
        }
        Some(file)
    }
}

fn route_of(a: &Attachment) -> RouteSpec {
    RouteSpec {
        prefix: Ipv4Net::new(a.ip, 32).expect("/32 is a valid prefix length"),
        node: None,
        pod: Some(PodSpec {
            name: a.name.clone(),
            interface: a.interface.clone(),
            mac: a.mac,
        }),
    }
}

/// Everything the control thread needs from the start-up.
pub struct AttachSetup {
    pub plan: PortPlan,
    pub workers: Vec<mpsc::Sender<Command<XskIo>>>,
    pub openers: Vec<PortOpener>,
    pub steering: Arc<Mutex<Option<Steering>>>,
    pub rib: Rib,
    pub restored: Restored,
    pub configured: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub umem_bytes: u64,
}

impl std::fmt::Debug for AttachSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachSetup")
            .field("workers", &self.workers.len())
            .field("restored", &self.restored)
            .finish_non_exhaustive()
    }
}

/// Starts the control thread (spawned from the dataplane's namespace: it
/// stays there).
pub fn start(setup: AttachSetup) -> anyhow::Result<(Attacher, std::thread::JoinHandle<()>)> {
    let plan = &setup.plan;
    let first = plan.config_pods as u16 + 1;
    let last = (plan.config_pods + plan.max_attached) as u16;
    let taken: BTreeSet<u16> = setup
        .restored
        .attached
        .iter()
        .map(|(a, _)| a.port)
        .collect();
    let free = (first..=last).filter(|p| !taken.contains(p)).collect();
    let mut state = AttachState {
        workers: setup.workers,
        openers: setup.openers,
        steering: setup.steering,
        rib: setup.rib,
        n: plan.workers,
        ring: plan.attach_ring,
        max_pods: plan.max_attached,
        free,
        attached: setup
            .restored
            .attached
            .into_iter()
            .map(|(a, idx)| (a.interface.clone(), (a, idx)))
            .collect(),
        configured: setup.configured,
        not_restored: setup.restored.not_restored,
        state_dir: setup.state_dir,
        umem_bytes: setup.umem_bytes,
        retired: vec![],
        steps_ms: [0.0; 4],
    };
    // What was restored is what is persisted from now on.
    if let Err(e) = state.persist() {
        tracing::error!("{e}");
    }
    let (tx, rx) = mpsc::channel::<Request>();
    let handle = std::thread::Builder::new()
        .name("overpass-attach".into())
        .spawn(move || {
            while let Ok(req) = rx.recv() {
                match req {
                    Request::Attach(r, reply) => {
                        let _ = reply.send(state.attach(r));
                    }
                    Request::Detach(i, reply) => {
                        let _ = reply.send(state.detach(&i));
                    }
                    Request::Status(reply) => {
                        let _ = reply.send(state.status());
                    }
                    Request::Ready(reply) => {
                        let _ = reply.send(state.readiness());
                    }
                    Request::UseRib(rib) => state.rib = rib,
                    Request::Stop => break,
                }
            }
        })?;
    Ok((
        Attacher {
            tx: Arc::new(Mutex::new(Some(tx))),
        },
        handle,
    ))
}

fn invalid(field: &str, message: impl Into<String>) -> AttachError {
    AttachError::new(AttachErrorKind::Invalid, field, message)
}

fn failed(field: &str, message: impl Into<String>) -> AttachError {
    AttachError::new(AttachErrorKind::Failed, field, message)
}

impl AttachState {
    fn lock_steering(&self) -> std::sync::MutexGuard<'_, Option<Steering>> {
        self.steering.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on every worker's thread and collects the replies in
    /// worker order.
    fn on_workers<T: Send + 'static>(
        &self,
        mut f: impl FnMut(usize) -> Box<dyn FnOnce(&mut XskIo) -> T + Send>,
    ) -> Vec<Option<T>> {
        let mut replies = vec![];
        for (w, tx) in self.workers.iter().enumerate() {
            let (rtx, rrx) = mpsc::channel();
            let job = f(w);
            let sent = tx
                .send(Box::new(move |io: &mut XskIo| {
                    let _ = rtx.send(job(io));
                }))
                .is_ok();
            replies.push(sent.then_some(rrx));
        }
        replies
            .into_iter()
            .map(|r| r.and_then(|r| r.recv_timeout(WORKER_REPLY).ok()))
            .collect()
    }

    fn persist(&self) -> Result<(), AttachError> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        let file = AttachmentsFile {
            version: FILE_VERSION,
            attachments: self.attached.values().map(|(a, _)| a.clone()).collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).expect("attachments serialise");
        write_atomic(dir, ATTACHMENTS_FILE, &bytes).map_err(|e| {
            failed(
                "store",
                format!("writing {}: {e}", dir.join(ATTACHMENTS_FILE).display()),
            )
        })
    }

    fn check_request(&self, req: &AttachRequest) -> Result<(), AttachError> {
        for (field, v) in [
            ("container_id", &req.container_id),
            ("ifname", &req.ifname),
            ("interface", &req.interface),
        ] {
            if v.is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if req.interface.len() > 15 || req.interface.contains(['/', ' ']) {
            return Err(invalid(
                "interface",
                format!("{:?} is not an interface name", req.interface),
            ));
        }
        if self.configured.contains(&req.interface) {
            return Err(AttachError::new(
                AttachErrorKind::Conflict,
                "interface",
                format!("{} is a configured pod ([[pod]])", req.interface),
            ));
        }
        if self.attached.contains_key(&req.interface) {
            return Err(AttachError::new(
                AttachErrorKind::Conflict,
                "interface",
                format!("{} is already attached", req.interface),
            ));
        }
        if let Some((a, _)) = self
            .attached
            .values()
            .find(|(a, _)| a.container_id == req.container_id && a.ifname == req.ifname)
        {
            return Err(AttachError::new(
                AttachErrorKind::Conflict,
                "container_id",
                format!(
                    "{}/{} is already attached on {}",
                    req.container_id, req.ifname, a.interface
                ),
            ));
        }
        if req.mac.is_multicast() || req.mac == MacAddr::default() {
            return Err(invalid("mac", "must be a unicast MAC"));
        }
        Ok(())
    }

    fn attach(&mut self, req: AttachRequest) -> Result<Attachment, AttachError> {
        self.check_request(&req)?;
        let ifindex = iface::ifindex(&req.interface)
            .map_err(|e| invalid("interface", format!("{}: {e}", req.interface)))?;
        let queues = ethtool::rx_queue_count(&req.interface)
            .map_err(|e| invalid("interface", format!("{}: {e}", req.interface)))?;
        if queues != self.n {
            return Err(invalid(
                "interface",
                format!(
                    "{} has {queues} active RX queue(s); with {n} worker(s) it needs exactly {n} (ip link add … numrxqueues {n} numtxqueues {n}, or ethtool -L)",
                    req.interface,
                    n = self.n
                ),
            ));
        }
        let host_mac = iface::interface_mac(&req.interface)
            .map_err(|e| invalid("interface", format!("{}: {e}", req.interface)))?;
        let mtu = iface::interface_mtu(&req.interface)
            .map_err(|e| invalid("interface", format!("{}: {e}", req.interface)))?
            .min(u32::from(u16::MAX)) as u16;
        if let Some(m) = req.mtu
            && m != mtu
        {
            return Err(invalid(
                "mtu",
                format!("{m} is not {}'s MTU ({mtu})", req.interface),
            ));
        }
        let Some(port) = self.free.pop_first() else {
            return Err(AttachError::new(
                AttachErrorKind::Full,
                "attach.max_pods",
                format!("all {} pod slots are attached", self.max_pods),
            ));
        };
        let base = self.n + (u32::from(port) - 1) * self.n;
        let name = req.name.clone().unwrap_or_else(|| {
            format!(
                "pod-{}",
                req.container_id.chars().take(12).collect::<String>()
            )
        });
        let a = Attachment {
            container_id: req.container_id,
            ifname: req.ifname,
            interface: req.interface,
            ip: req.ip,
            mac: req.mac,
            mtu,
            name,
            port,
            xsk_base: base,
        };
        match self.bring_up(&a, ifindex, host_mac) {
            Ok(()) => {
                self.attached
                    .insert(a.interface.clone(), (a.clone(), ifindex));
                if let Err(e) = self.persist() {
                    // The pod is attached and routed; only the record is
                    // missing: say so, keep serving.
                    tracing::error!(interface = %a.interface, "{e}");
                }
                let [sockets, workers, xdp, route] = self.steps_ms;
                tracing::info!(
                    interface = %a.interface, ip = %a.ip, port, xsk_base = base,
                    sockets_ms = sockets, workers_ms = workers, xdp_ms = xdp, route_ms = route,
                    "pod attached"
                );
                Ok(a)
            }
            Err(e) => {
                self.free.insert(port);
                Err(e)
            }
        }
    }

    /// Sockets, XSK slots, XDP, route; undoes what it did on failure.
    fn bring_up(
        &mut self,
        a: &Attachment,
        ifindex: u32,
        host_mac: MacAddr,
    ) -> Result<(), AttachError> {
        let port = a.port;
        let mut clock = std::time::Instant::now();
        let mut lap = |i: usize, steps: &mut [f64; 4]| {
            steps[i] = clock.elapsed().as_secs_f64() * 1e3;
            clock = std::time::Instant::now();
        };
        let mut steps = [0.0; 4];
        let mut opened = vec![];
        for (w, opener) in self.openers.iter().enumerate() {
            let spec = PortSpec {
                ifname: a.interface.clone(),
                queue: w as u32,
                ring_size: self.ring,
            };
            match opener.open(&spec) {
                Ok(p) => opened.push(p),
                Err(e) => return Err(invalid("interface", e.to_string())),
            }
        }
        lap(0, &mut steps);
        let fds: Vec<i32> = opened.iter().map(|p| p.fd()).collect();
        let mut ports: Vec<Option<_>> = opened.into_iter().map(Some).collect();
        let inserted = self.on_workers(|w| {
            let p = ports[w].take().expect("one socket per worker");
            Box::new(move |io: &mut XskIo| io.insert_port(port, p).map_err(|e| e.to_string()))
        });
        let all_in = inserted.iter().all(|r| matches!(r, Some(Ok(()))));
        let undo_workers = |me: &Self| {
            me.on_workers(|_| Box::new(move |io: &mut XskIo| io.remove_port(port)));
        };
        if !all_in {
            undo_workers(self);
            let why = inserted
                .into_iter()
                .find_map(|r| match r {
                    Some(Err(e)) => Some(e),
                    None => Some("a worker did not answer".into()),
                    _ => None,
                })
                .unwrap_or_default();
            return Err(failed("interface", why));
        }
        lap(1, &mut steps);
        let xdp = {
            let mut guard = self.lock_steering();
            let Some(steering) = guard.as_mut() else {
                drop(guard);
                undo_workers(self);
                return Err(unavailable());
            };
            let mut r = Ok(());
            for (w, fd) in fds.iter().enumerate() {
                if let Err(e) = steering.register_xsk(a.xsk_base + w as u32, *fd) {
                    r = Err(e.to_string());
                    break;
                }
            }
            let r = r.and_then(|()| {
                steering
                    .attach(ifindex, PortRole::Pod, a.xsk_base, self.n)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            if r.is_err() {
                for w in 0..self.n {
                    let _ = steering.unregister_xsk(a.xsk_base + w);
                }
            }
            r
        };
        if let Err(e) = xdp {
            undo_workers(self);
            return Err(failed("interface", e));
        }
        lap(2, &mut steps);
        let mtu = a.mtu;
        let ifname = a.interface.clone();
        let route = route_of(a);
        let changed = self.rib.change_pods(
            None,
            |ports: &mut HashMap<String, PodPort>| {
                ports.insert(
                    ifname,
                    PodPort {
                        port,
                        rx_ports: vec![port],
                        host_mac,
                        mtu,
                    },
                );
            },
            |routes| {
                // The pod's address must not be another pod's or a /32
                // route of its own (a covering node route is the RIB's to
                // judge).
                let taken = routes.iter().find(|r| {
                    r.prefix.contains(&a.ip) && (r.prefix.prefix_len() == 32 || r.pod.is_some())
                });
                if let Some(r) = taken {
                    return Err(ChangeError::Conflict(crate::control::rib::RibError::new(
                        "ip",
                        format!("{} is already routed ({})", a.ip, r.prefix),
                    )));
                }
                routes.push(route);
                Ok(())
            },
        );
        if let Err(e) = changed {
            self.take_down(a, ifindex);
            undo_workers(self);
            return Err(match e {
                ChangeError::Conflict(e) => {
                    AttachError::new(AttachErrorKind::Conflict, e.field, e.message)
                }
                ChangeError::Invalid(e) => {
                    let field = if e.field.ends_with(".prefix") {
                        "ip".to_string()
                    } else {
                        e.field
                    };
                    invalid(&field, e.message)
                }
                other => failed("store", other.to_string()),
            });
        }
        lap(3, &mut steps);
        self.steps_ms = steps;
        Ok(())
    }

    /// Detaches XDP from the veth and empties its XSK slots.
    fn take_down(&self, a: &Attachment, ifindex: u32) {
        let mut guard = self.lock_steering();
        if let Some(steering) = guard.as_mut() {
            if let Err(e) = steering.detach(ifindex) {
                // The veth may be gone already (its link went with it).
                tracing::debug!(interface = %a.interface, "XDP detach: {e}");
                let _ = steering.remove_port(ifindex);
            }
            for w in 0..self.n {
                let _ = steering.unregister_xsk(a.xsk_base + w);
            }
        }
    }

    fn detach(&mut self, interface: &str) -> Result<PortRemoval, AttachError> {
        let Some((a, ifindex)) = self.attached.get(interface).cloned() else {
            return Err(AttachError::new(
                AttachErrorKind::NotFound,
                "interface",
                format!("{interface} is not attached"),
            ));
        };
        let name = a.interface.clone();
        self.rib
            .change_pods(
                None,
                |ports| {
                    ports.remove(&name);
                },
                |routes| {
                    routes.retain(|r| r.pod.as_ref().is_none_or(|p| p.interface != name));
                    Ok(())
                },
            )
            .map_err(|e| failed("store", e.to_string()))?;
        self.take_down(&a, ifindex);
        let port = a.port;
        // Each worker lets go of its socket; the sockets close here (a close
        // waits for an RCU grace period: never on a worker's thread); then
        // each worker takes back every frame its socket held.
        let taken = self.on_workers(|_| Box::new(move |io: &mut XskIo| io.take_port(port)));
        let mut closed: Vec<Option<ClosedPort>> = vec![];
        for d in taken {
            closed.push(d.flatten().map(|d| {
                let (c, retired) = d.close();
                self.retired.extend(retired);
                c
            }));
        }
        let removed = self.on_workers(|w| {
            let c = closed[w].take();
            Box::new(move |io: &mut XskIo| c.map(|c| io.reclaim(c)))
        });
        let mut total = PortRemoval::default();
        for r in removed.into_iter().flatten().flatten() {
            total.reclaimed += r.reclaimed;
            total.unsent += r.unsent;
            total.lost += r.lost;
        }
        self.free.insert(port);
        self.attached.remove(interface);
        if let Err(e) = self.persist() {
            tracing::error!(%interface, "{e}");
        }
        tracing::info!(%interface, reclaimed = total.reclaimed, unsent = total.unsent, lost = total.lost, "pod detached");
        Ok(total)
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            ready: self.lock_steering().is_some(),
            workers: self.n,
            tunnel_mtu: self.rib.context().underlay_mtu.saturating_sub(50),
            free_slots: self.free.len() as u32,
        }
    }

    fn status(&self) -> AttachStatus {
        let frames = self.on_workers(|_| {
            Box::new(|io: &mut XskIo| {
                let (open, free) = io.port_counts();
                WorkerFrames {
                    umem_frames: io.umem_frames(),
                    free_frames: io.free_frames(),
                    sockets: open as u32,
                    free_ports: free as u32,
                }
            })
        });
        let ready = self.lock_steering().is_some() && frames.iter().all(Option::is_some);
        let per_worker: Vec<WorkerFrames> = frames.into_iter().flatten().collect();
        let ctx = self.rib.context();
        AttachStatus {
            ready,
            workers: self.n,
            max_pods: self.max_pods,
            ring_size: self.ring,
            bytes_per_pod_per_worker: 2 * u64::from(self.ring) * u64::from(FRAME_SIZE),
            umem_bytes_total: self.umem_bytes,
            xsk_slots_in_use: per_worker.iter().map(|w| w.sockets).sum(),
            tunnel_mtu: ctx.underlay_mtu.saturating_sub(50),
            pod_cidr: ctx.local.pod_cidr,
            per_worker,
            attachments: self.attached.values().map(|(a, _)| a.clone()).collect(),
            not_restored: self.not_restored.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(interface: &str, ip: [u8; 4]) -> Attachment {
        Attachment {
            container_id: format!("c-{interface}"),
            ifname: "eth0".into(),
            interface: interface.into(),
            ip: Ipv4Addr::from(ip),
            mac: MacAddr([0x0e, 0, 0, 0, 0, ip[3]]),
            mtu: 1450,
            name: format!("pod-{interface}"),
            port: 3,
            xsk_base: 3,
        }
    }

    fn pod_route(interface: &str, ip: [u8; 4]) -> RouteSpec {
        route_of(&att(interface, ip))
    }

    #[test]
    fn start_routes_keep_served_pods_only() {
        let configured = vec!["gwp-a".to_string()];
        let restored = Restored {
            attached: vec![(att("ovp1", [10, 244, 0, 10]), 7)],
            not_restored: vec![NotRestored {
                attachment: att("ovp2", [10, 244, 0, 11]),
                reason: "No such device".into(),
            }],
            host_macs: HashMap::new(),
        };
        let persisted = RoutesFile {
            version: 1,
            generation: 9,
            routes: vec![
                pod_route("gwp-a", [10, 244, 0, 2]),
                // Not restored: dropped.
                pod_route("ovp2", [10, 244, 0, 11]),
                // A crash between routes.json and attachments.json: dropped.
                pod_route("ovp3", [10, 244, 0, 12]),
            ],
        };
        let f = restored
            .routes(Some(persisted), vec![], &configured)
            .unwrap();
        assert_eq!(f.generation, 9);
        let ifaces: Vec<&str> = f
            .routes
            .iter()
            .map(|r| r.pod.as_ref().unwrap().interface.as_str())
            .collect();
        // The restored attachment's route is added when missing.
        assert_eq!(ifaces, vec!["gwp-a", "ovp1"]);
        // Nothing restored, nothing persisted: the configuration's set.
        assert!(
            Restored::default()
                .routes(None, vec![], &configured)
                .is_none()
        );
    }
}
