//! AF_XDP sockets over one or two UMEMs: the packet path's `unsafe` code.
//!
//! A worker owns one socket per port: its underlay RX queue and every pod
//! veth it serves. The sockets of one UMEM *class* (a [`Pool`]) share its
//! UMEM, so forwarding a frame between two ports of a class moves a
//! descriptor from one socket's RX ring to another's TX ring; the packet
//! bytes are not copied. The kernel makes a socket that shares a UMEM
//! inherit the owner's bind mode, and a veth has no zero-copy, so when the
//! underlay binds zero-copy (or `underlay.pod_umem = "separate"`) the pods
//! get a UMEM of their own and a frame crossing between the underlay and
//! a pod is copied once, into a free frame of the other class. Each socket
//! has its own fill and completion rings (required when sharing a UMEM
//! across devices).
//!
//! Frame ownership: every frame is in exactly one place at a time — its
//! pool's free list, a fill ring (kernel), an RX ring (kernel → us), our TX
//! staging list, or a TX ring (us → kernel, back through a completion
//! ring), always of its own pool's sockets. The `unsafe` blocks below rely
//! on that invariant: a descriptor we touch came from the UMEM we access it
//! through, and no one else holds it.
//!
//! Per batch this layer makes no syscall except the TX kick (`sendto`),
//! which copy mode needs while transmissions are pending, and a fill-ring
//! wakeup only when the kernel asks for one (need-wakeup mode).

use std::io;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use overpass_dataplane::counters::{DropReason, Event, WorkerCounters};
use overpass_dataplane::fib::PortId;
use overpass_dataplane::io::{Handler, PacketIo, Spare, Verdict, cross_umem_copy};

use crate::host::ethtool;

/// How a socket ended up bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum XskMode {
    ZeroCopy,
    Copy,
}

/// Which bind modes to try.
pub use crate::config::BindMode;
/// Which UMEM the pods use.
pub use crate::config::PodUmem;

/// One port to open: an interface queue.
#[derive(Debug, Clone)]
pub struct PortSpec {
    pub ifname: String,
    pub queue: u32,
    /// Fill-ring target (and RX/TX ring size) for this socket.
    pub ring_size: u32,
}

/// Frame size of a copy-mode UMEM (the pods', or one shared by all ports):
/// a power of two; 2048 leaves 1792 bytes after the kernel's 256-byte XDP
/// headroom, enough for a 1500-byte MTU frame plus 50 bytes of VXLAN
/// encapsulation.
pub const FRAME_SIZE: u32 = 2048;

/// Frame size of a UMEM the underlay may bind zero-copy to: the largest
/// chunk the kernel takes in aligned mode (a page). A zero-copy driver
/// programs its RX buffers from the chunk less the 256-byte headroom, in its
/// hardware's units: igb in 1 KiB steps (SRRCTL.BSIZEPKT), so 2048-byte
/// chunks (1792 usable) gave it 1 KiB buffers and every frame over 1 KiB
/// arrived cut at 1024 bytes (measured in the guest tier: full-size pings
/// dropped as `ipv4_malformed`); 4096-byte chunks give it 3 KiB.
pub const ZC_FRAME_SIZE: u32 = 4096;

/// Frames received per port per poll.
pub const BATCH: usize = 64;

/// Frames the refill never lends to a fill ring, so a packet that must be
/// fragmented finds spare frames even when every port is receiving.
pub const SPARE_RESERVE: usize = BATCH;

#[derive(Debug)]
struct Port {
    name: String,
    rx: RxQueue,
    tx: TxQueue,
    fq: FillQueue,
    cq: CompQueue,
    mode: XskMode,
    /// This port's frame budget: the most frames lent to the kernel for
    /// receiving on it (its fill ring plus what the kernel took from it
    /// and has not delivered yet). Also its RX/TX ring size.
    ring_size: u32,
    /// Frames given to the fill ring and not yet back through the RX ring.
    lent: u32,
    /// The pool (UMEM class) this socket's frames belong to.
    pool: usize,
    /// Descriptors waiting for the next flush; never grows past its
    /// initial capacity. Frames the TX ring had no room for stay here
    /// for the next round.
    staged: Vec<FrameDesc>,
    /// Produced to the TX ring, not yet completed.
    in_flight: u32,
    /// The kernel's cumulative XDP_STATISTICS as last folded into the
    /// worker's counters.
    seen: KernelSeen,
}

/// Cumulative kernel socket statistics already counted.
#[derive(Debug, Default, Clone, Copy)]
struct KernelSeen {
    rx_dropped: u64,
    rx_ring_full: u64,
    fill_ring_empty: u64,
}

/// One UMEM class: the UMEM and the free frames of it we hold.
#[derive(Debug)]
struct Pool {
    umem: Umem,
    free: Vec<FrameDesc>,
    /// Frames in the UMEM.
    frames: u32,
    /// Bytes per frame (a power of two).
    frame_size: u32,
}

/// No port's fill ring holds the frame (see [`XskIo`]'s `lender`).
const UNLENT: u16 = u16::MAX;

/// Room for ports attached at run time: `slots` more pod ports after the
/// ones opened at start, each with a frame budget of `ring_size`. Their
/// frames are part of the UMEM from the start (a UMEM cannot grow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttachCapacity {
    pub slots: u32,
    pub ring_size: u32,
}

/// Opens sockets for ports attached at run time on a worker's pod UMEM,
/// from any thread (socket creation takes the UMEM's own lock; the worker
/// never does per packet). The port is then handed to the worker, which
/// owns it from [`XskIo::insert_port`] on.
#[derive(Debug, Clone)]
pub struct PortOpener {
    umem: Umem,
    pool: usize,
    bind: BindMode,
}

/// A socket opened by a [`PortOpener`], not yet a port of its worker.
#[derive(Debug)]
pub struct NewPort(Port);

impl NewPort {
    /// The socket's file descriptor, for the XSK map.
    pub fn fd(&self) -> i32 {
        self.0.rx.fd().as_raw_fd()
    }

    /// How the kernel bound it.
    pub fn mode(&self) -> XskMode {
        self.0.mode
    }
}

impl PortOpener {
    /// Binds a socket for `spec` on the worker's pod UMEM.
    pub fn open(&self, spec: &PortSpec) -> Result<NewPort, XskError> {
        open_port(&self.umem, spec, self.bind, self.pool).map(NewPort)
    }
}

/// A port taken out of its worker ([`XskIo::take_port`]), socket still
/// open: close it off the worker's thread with [`DetachedPort::close`].
#[derive(Debug)]
pub struct DetachedPort {
    id: PortId,
    port: Port,
    /// Its socket owns the UMEM's descriptor: kept open (retired).
    owner: bool,
    unsent: u32,
    completed: Vec<FrameDesc>,
}

/// A port whose socket is closed: what its worker needs to take its frames
/// back ([`XskIo::reclaim`]).
#[derive(Debug)]
pub struct ClosedPort {
    id: PortId,
    pool: usize,
    completed: Vec<FrameDesc>,
    removal: PortRemoval,
}

/// The socket of a removed port that owns its UMEM's descriptor: kept open,
/// steering-less and frame-less, for as long as the UMEM lives (libxdp
/// binds the UMEM's first socket on the UMEM's own descriptor).
#[derive(Debug)]
pub struct RetiredPort(Port);

impl DetachedPort {
    /// Waits (at most 200 ms) for the frames on its TX ring to complete,
    /// then closes the socket — unless it owns the UMEM's descriptor, then
    /// it is returned as a [`RetiredPort`] to keep.
    pub fn close(mut self) -> (ClosedPort, Option<RetiredPort>) {
        let p = &mut self.port;
        let mut scratch = vec![FrameDesc::default(); p.ring_size.max(BATCH as u32) as usize];
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while p.in_flight > 0 && std::time::Instant::now() < deadline {
            let _ = p.tx.wakeup();
            // SAFETY: the completion ring only returns frames of this
            // socket's UMEM that we produced for TX; they are ours again
            // (handed back to the worker's free list by `reclaim`).
            let done = unsafe { p.cq.consume(&mut scratch) };
            p.in_flight -= done as u32;
            self.completed.extend_from_slice(&scratch[..done]);
            if done == 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        let lost = p.in_flight;
        if lost > 0 {
            tracing::warn!(port = %p.name, frames = lost, "TX frames not completed when the port was removed: lost");
        }
        let closed = ClosedPort {
            id: self.id,
            pool: p.pool,
            completed: std::mem::take(&mut self.completed),
            removal: PortRemoval {
                reclaimed: 0,
                unsent: self.unsent,
                lost,
            },
        };
        if self.owner {
            (closed, Some(RetiredPort(self.port)))
        } else {
            drop(self.port);
            (closed, None)
        }
    }
}

/// What removing a port gave back.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct PortRemoval {
    /// Frames the port's fill and RX rings held, returned to the free list.
    pub reclaimed: u32,
    /// Frames staged for TX on the port, returned to the free list.
    pub unsent: u32,
    /// Frames still on the port's TX ring when its socket closed (the
    /// kernel never completed them within the drain time): lost.
    pub lost: u32,
}

/// The AF_XDP implementation of [`PacketIo`].
#[derive(Debug)]
pub struct XskIo {
    /// Per pool (the underlay's first; the pods' second when they have
    /// their own): its UMEM, its free frames, its size in frames.
    umems: Vec<Umem>,
    free: Vec<Vec<FrameDesc>>,
    frames: Vec<u32>,
    /// Per pool, log2 of its frame size: a frame's index is its address
    /// shifted by it.
    frame_shift: Vec<u32>,
    /// Per pool, per frame (address >> `frame_shift`): the port whose fill
    /// ring it was lent to and that has not received into it yet, or
    /// [`UNLENT`]. A removed port's frames are found here (the fill ring
    /// cannot be read back): one store per frame lent and per frame
    /// received, no allocation.
    lender: Vec<Vec<u16>>,
    /// Per pool, every frame's descriptor as the UMEM first gave it (what a
    /// reclaimed frame goes back to the free list as).
    pristine: Vec<Vec<FrameDesc>>,
    /// Ports by [`PortId`]; `None`: a free slot for a port attached at run
    /// time.
    ports: Vec<Option<Port>>,
    /// Per pool, the port whose socket owns the UMEM's file descriptor
    /// (libxdp binds a UMEM's first socket on the UMEM's own fd, and a
    /// later socket can only be created while it lives).
    owner: Vec<Option<usize>>,
    /// Owner sockets of ports that were removed: kept open, unregistered
    /// and without frames, so the UMEM can take new sockets.
    retired: Vec<Port>,
    /// The pool ports attached at run time use, and how they bind.
    attach_pool: usize,
    attach_bind: BindMode,
    scratch: Vec<FrameDesc>,
    counters: Arc<WorkerCounters>,
    /// Preferred NAPI busy polling, `(usecs, budget)`, when on: each round
    /// starts by driving every socket's NAPI context, and ports attached
    /// later get the same options (see [`XskIo::enable_napi_busy_poll`]).
    napi_busy_poll: Option<(u32, u32)>,
    pollfds: Vec<libc::pollfd>,
}

/// Errors opening sockets.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("creating UMEM of {frames} frames: {source}")]
    Umem {
        frames: u32,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "binding AF_XDP socket to {ifname} queue {queue} ({mode:?}, driver {driver}): {source}{why}"
    )]
    Bind {
        ifname: String,
        queue: u32,
        mode: XskMode,
        /// The interface's driver (`ethtool -i`), "unknown" if it says none.
        driver: String,
        /// Why the kernel refused, where the error number tells (starts
        /// with "; "), else empty.
        why: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0}")]
    Other(String),
}

fn boxed(
    e: impl std::error::Error + Send + Sync + 'static,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

fn qsize(n: u32) -> Result<QueueSize, XskError> {
    QueueSize::new(n).map_err(|e| XskError::Other(format!("ring size {n}: {e}")))
}

impl XskIo {
    /// Opens one socket per port, trying zero-copy first when `bind` is
    /// [`BindMode::Auto`], with the pods sharing the underlay's UMEM unless
    /// it bound zero-copy ([`PodUmem::Auto`]). Ports are numbered in
    /// `specs` order ([`PortId`] 0, the first, is the underlay queue).
    pub fn open(
        specs: &[PortSpec],
        bind: BindMode,
        counters: Arc<WorkerCounters>,
    ) -> Result<XskIo, XskError> {
        Self::open_with(specs, bind, PodUmem::Auto, counters)
    }

    /// As [`XskIo::open`], choosing the pods' UMEM with `pod_umem`. The
    /// pods' sockets try zero-copy first too when they have their own
    /// UMEM (veths refuse it; a pod on a zero-copy NIC keeps it).
    pub fn open_with(
        specs: &[PortSpec],
        bind: BindMode,
        pod_umem: PodUmem,
        counters: Arc<WorkerCounters>,
    ) -> Result<XskIo, XskError> {
        Self::open_for(specs, bind, pod_umem, AttachCapacity::default(), counters)
    }

    /// As [`XskIo::open_with`], with room for `attach.slots` pod ports
    /// attached at run time ([`XskIo::insert_port`]) after the ones in
    /// `specs`: their frames are in the pods' UMEM from the start, and
    /// their port ids follow `specs`' ones.
    pub fn open_for(
        specs: &[PortSpec],
        bind: BindMode,
        pod_umem: PodUmem,
        attach: AttachCapacity,
        counters: Arc<WorkerCounters>,
    ) -> Result<XskIo, XskError> {
        let (underlay, pods) = specs
            .split_first()
            .ok_or_else(|| XskError::Other("no ports".into()))?;
        let mut ports = Vec::with_capacity(specs.len() + attach.slots as usize);
        let mut pools = vec![];
        let has_pods = !pods.is_empty() || attach.slots > 0;
        let none = AttachCapacity::default();
        // Own pools when asked, or when the underlay binds zero-copy: a
        // socket sharing a UMEM inherits its owner's mode, and pods on veths
        // cannot bind zero-copy. Zero-copy is tried on a pool of the
        // underlay's own size; only if the kernel refuses it are the pods
        // given the underlay's UMEM (grown to their budgets).
        let own = if !has_pods || pod_umem == PodUmem::Separate {
            let size = if bind == BindMode::Copy {
                FRAME_SIZE
            } else {
                ZC_FRAME_SIZE
            };
            let pool = new_pool(std::slice::from_ref(underlay), none, size)?;
            ports.push(Some(open_port(&pool.umem, underlay, bind, 0)?));
            pools.push(pool);
            has_pods
        } else if bind == BindMode::Copy {
            false
        } else {
            let pool = new_pool(std::slice::from_ref(underlay), none, ZC_FRAME_SIZE)?;
            match open_port(&pool.umem, underlay, BindMode::ZeroCopy, 0) {
                Ok(port) => {
                    tracing::info!(
                        ifname = %underlay.ifname,
                        queue = underlay.queue,
                        "underlay bound zero-copy: the pods get a UMEM of their own (a socket sharing a UMEM inherits its mode); frames crossing between them are copied once"
                    );
                    ports.push(Some(port));
                    pools.push(pool);
                    true
                }
                Err(e) if bind == BindMode::ZeroCopy => return Err(e),
                Err(e) => {
                    let why = match &e {
                        XskError::Bind { driver, source, .. } => {
                            format!("driver {driver}: {source}")
                        }
                        other => other.to_string(),
                    };
                    tracing::info!(ifname = %underlay.ifname, queue = underlay.queue, "zero-copy refused ({why}); copy mode, the pods share the underlay's UMEM");
                    false
                }
            }
        };
        let mut owner = vec![Some(0)];
        if own {
            let pool = new_pool(pods, attach, FRAME_SIZE)?;
            for spec in pods {
                ports.push(Some(open_port(&pool.umem, spec, BindMode::Auto, 1)?));
            }
            pools.push(pool);
            // Without a pod opened here, the first pod attached owns it.
            owner.push((!pods.is_empty()).then_some(1));
        } else if pools.is_empty() {
            let shared = new_pool(specs, attach, FRAME_SIZE)?;
            for spec in specs {
                ports.push(Some(open_port(&shared.umem, spec, BindMode::Copy, 0)?));
            }
            pools.push(shared);
        }
        ports.resize_with(specs.len() + attach.slots as usize, || None);
        let biggest_ring = specs
            .iter()
            .map(|s| s.ring_size)
            .chain([attach.ring_size])
            .max()
            .unwrap_or(2048);
        let mut umems = Vec::with_capacity(pools.len());
        let mut free = Vec::with_capacity(pools.len());
        let mut frames = Vec::with_capacity(pools.len());
        let mut frame_shift = Vec::with_capacity(pools.len());
        let mut lender = Vec::with_capacity(pools.len());
        let mut pristine = Vec::with_capacity(pools.len());
        for p in pools {
            umems.push(p.umem);
            lender.push(vec![UNLENT; p.free.len()]);
            let mut all = p.free.clone();
            all.sort_by_key(|d| d.addr());
            pristine.push(all);
            free.push(p.free);
            frames.push(p.frames);
            frame_shift.push(p.frame_size.trailing_zeros());
        }
        let mut io = XskIo {
            attach_pool: umems.len() - 1,
            attach_bind: if own { BindMode::Auto } else { BindMode::Copy },
            umems,
            free,
            frames,
            frame_shift,
            lender,
            pristine,
            ports,
            owner,
            retired: vec![],
            scratch: vec![FrameDesc::default(); BATCH.max(biggest_ring as usize)],
            counters,
            napi_busy_poll: None,
            pollfds: vec![],
        };
        io.rebuild_pollfds();
        io.refill();
        Ok(io)
    }

    fn rebuild_pollfds(&mut self) {
        self.pollfds = self
            .ports
            .iter()
            .flatten()
            .map(|p| libc::pollfd {
                fd: p.rx.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
    }

    /// An opener of sockets for ports attached at run time (on the pods'
    /// UMEM).
    pub fn opener(&self) -> PortOpener {
        PortOpener {
            umem: self.umems[self.attach_pool].clone(),
            pool: self.attach_pool,
            bind: self.attach_bind,
        }
    }

    /// Makes `port` (opened by this worker's [`PortOpener`]) port `id`, a
    /// free slot, and lends it its frame budget. Called on the worker's
    /// thread, between poll rounds.
    pub fn insert_port(&mut self, id: PortId, port: NewPort) -> Result<(), XskError> {
        let id = id as usize;
        match self.ports.get(id) {
            Some(None) => {}
            Some(Some(p)) => {
                return Err(XskError::Other(format!(
                    "port {id} is taken (by {})",
                    p.name
                )));
            }
            None => {
                return Err(XskError::Other(format!(
                    "port {id} is beyond this worker's {} ports",
                    self.ports.len()
                )));
            }
        }
        let port = port.0;
        if let Some((usecs, budget)) = self.napi_busy_poll {
            set_busy_poll(&port, usecs, budget).map_err(|e| XskError::Other(e.to_string()))?;
        }
        if port.pool >= self.umems.len() {
            return Err(XskError::Other(format!("no pool {}", port.pool)));
        }
        if self.owner[port.pool].is_none() {
            self.owner[port.pool] = Some(id);
        }
        self.ports[id] = Some(port);
        self.rebuild_pollfds();
        self.refill();
        Ok(())
    }

    /// Takes port `id` out of the worker (step 1 of 2 of a removal, on the
    /// worker's thread): it is no longer polled, and the frames staged for
    /// it are free again. Call it once nothing routes to the port any more
    /// and its XDP steering is gone. The socket is closed where the
    /// returned [`DetachedPort`] is dropped — not on the worker's thread:
    /// closing an AF_XDP socket waits for an RCU grace period (tens of
    /// milliseconds) that would stall every other port. `None`: no such port.
    pub fn take_port(&mut self, id: PortId) -> Option<DetachedPort> {
        let mut p = self.ports.get_mut(id as usize)?.take()?;
        let unsent = p.staged.len() as u32;
        self.free[p.pool].append(&mut p.staged);
        self.rebuild_pollfds();
        let owner = self.owner[p.pool] == Some(id as usize);
        Some(DetachedPort {
            id,
            port: p,
            owner,
            unsent,
            completed: vec![],
        })
    }

    /// Step 2 of a removal, on the worker's thread, once the socket of
    /// `detached` is closed (or retired): every frame it held comes back —
    /// those its TX ring completed, and those lent to its fill ring or left
    /// in its RX ring (found through `lender`).
    pub fn reclaim(&mut self, detached: ClosedPort) -> PortRemoval {
        let ClosedPort {
            id,
            pool,
            completed,
            mut removal,
        } = detached;
        self.free[pool].extend_from_slice(&completed);
        for (i, l) in self.lender[pool].iter_mut().enumerate() {
            if *l == id {
                *l = UNLENT;
                self.free[pool].push(self.pristine[pool][i]);
                removal.reclaimed += 1;
            }
        }
        removal
    }

    /// Takes and reclaims port `id` at once, closing its socket on this
    /// thread (tests, and removals that need not spare other ports).
    pub fn remove_port(&mut self, id: PortId) -> Option<PortRemoval> {
        let d = self.take_port(id)?;
        let (closed, retired) = d.close();
        if let Some(r) = retired {
            self.retired.push(r.0);
        }
        Some(self.reclaim(closed))
    }

    /// Free frames of each pool (frames no ring and no port holds).
    pub fn free_frames(&self) -> Vec<u32> {
        self.free.iter().map(|f| f.len() as u32).collect()
    }

    /// Ports open (sockets serving traffic), and slots free for ports
    /// attached at run time.
    pub fn port_counts(&self) -> (usize, usize) {
        let open = self.ports.iter().flatten().count();
        (open, self.ports.len() - open)
    }

    /// The socket file descriptor of each port, for the XSK map.
    pub fn fds(&self) -> Vec<i32> {
        self.ports
            .iter()
            .flatten()
            .map(|p| p.rx.fd().as_raw_fd())
            .collect()
    }

    /// The bind mode of each port.
    pub fn modes(&self) -> Vec<(String, XskMode)> {
        self.ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.mode))
            .collect()
    }

    /// Frames in each of this worker's UMEMs (underlay's first; a second
    /// entry when the pods have their own).
    pub fn umem_frames(&self) -> Vec<u32> {
        self.frames.clone()
    }

    /// Preferred busy polling: sets `SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL`
    /// (`usecs`, how long a blocking `poll(2)` busy-polls) and
    /// `SO_BUSY_POLL_BUDGET` (`budget`, frames per NAPI poll) on every
    /// socket, and from then on each round starts with a non-blocking
    /// `recvfrom` per socket, which runs the socket's NAPI context in this
    /// thread: the worker drives the driver's receive (and, by its TX kick,
    /// transmit) processing itself instead of competing with softirq or a
    /// NAPI thread for the core. With the interface's `napi_defer_hard_irqs`
    /// and `gro_flush_timeout` set (docs/design.md), the kernel keeps its
    /// interrupts off while the worker polls. One syscall per socket per
    /// round, never per packet. Needs CAP_NET_ADMIN.
    pub fn enable_napi_busy_poll(&mut self, usecs: u32, budget: u32) -> io::Result<()> {
        for p in self.ports.iter().flatten() {
            set_busy_poll(p, usecs, budget)?;
        }
        self.napi_busy_poll = Some((usecs, budget));
        Ok(())
    }

    /// Runs each socket's NAPI context once (non-blocking `recvfrom`, which
    /// busy-polls when [`XskIo::enable_napi_busy_poll`] set it up).
    fn drive_napi(&mut self) {
        for p in &self.pollfds {
            // SAFETY: `p.fd` is a socket we own; a zero-length receive into
            // a null buffer with MSG_DONTWAIT reads nothing and never blocks.
            unsafe {
                libc::recvfrom(
                    p.fd,
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
        }
    }

    /// Bytes of each of this worker's UMEMs, in [`XskIo::umem_frames`]'s
    /// order.
    pub fn umem_bytes(&self) -> Vec<u64> {
        self.frames
            .iter()
            .zip(&self.frame_shift)
            .map(|(&n, &shift)| u64::from(n) << shift)
            .collect()
    }

    /// Tops up every port's fill ring from the free list, each only up to
    /// its own budget: no port can take frames another port's fill ring
    /// needs (every fill ring has the UMEM's one fill-ring size, so the
    /// ring's free space is no bound), and [`SPARE_RESERVE`] frames stay
    /// free for fragments.
    fn refill(&mut self) {
        for (id, p) in self.ports.iter_mut().enumerate() {
            let Some(p) = p else { continue };
            let free = &mut self.free[p.pool];
            let want = p.ring_size.saturating_sub(p.lent) as usize;
            let lendable = free.len().saturating_sub(SPARE_RESERVE);
            let n = want.min(lendable).min(p.fq.nb_free(want as u32) as usize);
            if n == 0 {
                continue;
            }
            let from = free.len() - n;
            // SAFETY: the descriptors come from the free list of this
            // socket's pool: frames of its UMEM that nothing else (kernel or
            // us) holds.
            let produced = unsafe { p.fq.produce(&free[from..]) };
            let lender = &mut self.lender[p.pool];
            let shift = self.frame_shift[p.pool];
            for d in &free[free.len() - produced..] {
                if let Some(l) = lender.get_mut(d.addr() >> shift) {
                    *l = id as u16;
                }
            }
            free.truncate(free.len() - produced);
            p.lent += produced as u32;
            if produced > 0 && p.fq.needs_wakeup() {
                // Zero-copy drivers may sleep on an empty fill ring; a
                // zero-timeout poll wakes them. Rare by construction.
                let _ = p.fq.wakeup(p.rx.fd_mut(), 0);
            }
        }
    }

    /// Hands staged frames to the TX rings, kicks the kernel while
    /// anything is in flight, and reaps completions.
    fn flush(&mut self) {
        for p in self.ports.iter_mut().flatten() {
            if !p.staged.is_empty() {
                // xsk-rs produces all of a slice or nothing: offer what the
                // ring has room for, keep the rest staged for the next round
                // (only a frame that finds the staging list full is dropped,
                // as `tx_ring_full`, in `poll`).
                let room = (p.tx.nb_free(p.staged.len() as u32) as usize).min(p.staged.len());
                // SAFETY: staged descriptors are frames of this UMEM that we
                // received and now pass to the kernel; we do not touch them
                // again until they come back through the completion ring.
                let produced = unsafe { p.tx.produce(&p.staged[..room]) };
                p.in_flight += produced as u32;
                self.counters.event_n(Event::TxQueued, produced as u64);
                // No allocation: the unsent tail moves to the front.
                p.staged.drain(..produced);
            }
            if p.in_flight > 0 && (p.mode == XskMode::Copy || p.tx.needs_wakeup()) {
                // Copy mode transmits at most 32 frames per kick, so keep
                // kicking every loop while frames are pending. Errors here
                // are transient (ENOBUFS/EAGAIN are swallowed by xsk-rs).
                let _ = p.tx.wakeup();
            }
            // SAFETY: the completion ring only returns frames of this
            // socket's UMEM that we produced for TX; they are ours again.
            let done = unsafe { p.cq.consume(&mut self.scratch) };
            if done > 0 {
                p.in_flight -= done as u32;
                self.counters.event_n(Event::TxCompleted, done as u64);
                self.free[p.pool].extend_from_slice(&self.scratch[..done]);
            }
        }
    }
}

fn open_port(umem: &Umem, spec: &PortSpec, bind: BindMode, pool: usize) -> Result<Port, XskError> {
    let modes: &[XskMode] = match bind {
        BindMode::Auto => &[XskMode::ZeroCopy, XskMode::Copy],
        BindMode::ZeroCopy => &[XskMode::ZeroCopy],
        BindMode::Copy => &[XskMode::Copy],
    };
    let ifname: Interface = spec
        .ifname
        .parse()
        .map_err(|_| XskError::Other(format!("bad interface name {:?}", spec.ifname)))?;
    let mut last_err = None;
    for &mode in modes {
        let flag = match mode {
            XskMode::ZeroCopy => BindFlags::XDP_ZEROCOPY,
            XskMode::Copy => BindFlags::XDP_COPY,
        };
        let config = SocketConfig::builder()
            .rx_queue_size(qsize(spec.ring_size)?)
            .tx_queue_size(qsize(spec.ring_size)?)
            // Our own XDP program (xdp-prog) steers into the XSK map.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | flag)
            .build();
        // A queue whose previous socket was just closed (a restart) stays
        // busy until the kernel finishes releasing it: retry for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let created = loop {
            // SAFETY: the UMEM outlives the sockets (they hold a clone of
            // it) and each (interface, queue) pair is bound once per worker.
            let r = unsafe { Socket::new(config, umem, &ifname, spec.queue) };
            match &r {
                Err(e) if is_busy(e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                _ => break r,
            }
        };
        match created {
            Ok((tx, rx, Some((fq, cq)))) => {
                if mode != modes[0] {
                    tracing::info!(ifname = %spec.ifname, queue = spec.queue, "zero-copy bind refused; using copy mode");
                }
                // A socket sharing the UMEM of another inherits that socket's
                // mode whatever flags it asked for: report what the kernel says.
                let mode = bound_mode(rx.fd().as_raw_fd()).unwrap_or(mode);
                tracing::info!(ifname = %spec.ifname, queue = spec.queue, ?mode, "AF_XDP socket bound");
                return Ok(Port {
                    name: format!("{}/{}", spec.ifname, spec.queue),
                    rx,
                    tx,
                    fq,
                    cq,
                    mode,
                    ring_size: spec.ring_size,
                    lent: 0,
                    pool,
                    staged: Vec::with_capacity(spec.ring_size as usize),
                    in_flight: 0,
                    seen: KernelSeen::default(),
                });
            }
            Ok((_, _, None)) => {
                return Err(XskError::Other(format!(
                    "{} queue {}: socket got no fill/completion rings (queue bound twice?)",
                    spec.ifname, spec.queue
                )));
            }
            Err(e) => {
                let why = bind_refusal(mode, &e).map_or(String::new(), |w| format!("; {w}"));
                last_err = Some(XskError::Bind {
                    ifname: spec.ifname.clone(),
                    queue: spec.queue,
                    mode,
                    driver: ethtool::driver_name(&spec.ifname).unwrap_or_else(|| "unknown".into()),
                    why,
                    source: boxed(e),
                })
            }
        }
    }
    Err(last_err.expect("at least one mode was tried"))
}

/// Sets `SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL` = `usecs` and
/// `SO_BUSY_POLL_BUDGET` = `budget` on `p`'s socket, reading each back where
/// the kernel lets it be read.
fn set_busy_poll(p: &Port, usecs: u32, budget: u32) -> io::Result<()> {
    let opts: [(libc::c_int, libc::c_int, &str); 3] = [
        (libc::SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL"),
        (libc::SO_BUSY_POLL, usecs as libc::c_int, "SO_BUSY_POLL"),
        (
            libc::SO_BUSY_POLL_BUDGET,
            budget as libc::c_int,
            "SO_BUSY_POLL_BUDGET",
        ),
    ];
    {
        let fd = p.rx.fd().as_raw_fd();
        for (opt, value, name) in opts {
            // SAFETY: `fd` is a socket we own; the option value is a
            // live c_int whose size we pass.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&value as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc != 0 {
                let e = io::Error::last_os_error();
                return Err(io::Error::new(
                    e.kind(),
                    format!("setsockopt({name} = {value}) on {}: {e}", p.name),
                ));
            }
            // Read back: the kernel must hold what was asked.
            let mut got: libc::c_int = -1;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: as above; `got` and `len` are live locals the
            // kernel writes at most `len` bytes to.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&mut got as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            let read_err = (rc != 0).then(io::Error::last_os_error);
            // SO_BUSY_POLL_BUDGET cannot be read (ENOPROTOOPT): the
            // setsockopt's success is all there is.
            if read_err
                .as_ref()
                .is_some_and(|e| e.raw_os_error() == Some(libc::ENOPROTOOPT))
            {
                continue;
            }
            if read_err.is_some() || got != value {
                return Err(io::Error::other(format!(
                    "{name} on {} reads back {got}, not {value} ({read_err:?})",
                    p.name
                )));
            }
        }
    }
    Ok(())
}

/// A UMEM (with its free list) of `frame_size`-byte frames, sized for the
/// sockets `specs` and `attach`.
fn new_pool(specs: &[PortSpec], attach: AttachCapacity, frame_size: u32) -> Result<Pool, XskError> {
    let frames = umem_frames_with(specs, attach);
    let biggest_ring = specs
        .iter()
        .map(|s| s.ring_size)
        .chain((attach.slots > 0).then_some(attach.ring_size))
        .max()
        .unwrap_or(2048);
    let umem_config = UmemConfig::builder()
        .frame_size(FrameSize::new(frame_size).map_err(|e| XskError::Other(e.to_string()))?)
        .fill_queue_size(qsize(biggest_ring)?)
        .comp_queue_size(qsize(biggest_ring)?)
        .build()
        .map_err(|e| XskError::Other(e.to_string()))?;
    let count = NonZeroU32::new(frames).ok_or_else(|| XskError::Other("no ports".into()))?;
    let (umem, free) = Umem::new(umem_config, count, false).map_err(|e| XskError::Umem {
        frames,
        source: boxed(e),
    })?;
    Ok(Pool {
        umem,
        free,
        frames,
        frame_size,
    })
}

/// The UMEM size for the sockets `specs`: every port's receive budget
/// (its fill ring) and as much again for frames in RX rings, TX staging, TX
/// and completion rings, plus the spare reserve for fragments, rounded up
/// to a power of two.
pub fn umem_frames(specs: &[PortSpec]) -> u32 {
    umem_frames_with(specs, AttachCapacity::default())
}

/// As [`umem_frames`], plus `2 × ring_size` frames for each of
/// `attach.slots` ports attached at run time. Without them the size is
/// rounded up to a power of two; with them, to a multiple of 64 (doubling
/// 110 pods' worth of frames would waste half of it).
pub fn umem_frames_with(specs: &[PortSpec], attach: AttachCapacity) -> u32 {
    let budgets: u32 = specs.iter().map(|s| s.ring_size).sum();
    let base = budgets * 2 + SPARE_RESERVE as u32;
    if attach.slots == 0 {
        return base.next_power_of_two();
    }
    (base + attach.slots * attach.ring_size * 2).next_multiple_of(64)
}

/// What a refused bind means, from its error number, for the operator.
fn bind_refusal(mode: XskMode, e: &xsk_rs::socket::SocketCreateError) -> Option<&'static str> {
    let errno = bind_errno(e)?;
    Some(match (mode, errno) {
        (XskMode::ZeroCopy, libc::EOPNOTSUPP) => {
            "the driver has no AF_XDP zero-copy support (or the socket shares a UMEM bound in copy mode): use bind_mode = \"auto\" or \"copy\", or a NIC whose driver supports zero-copy (`overpass check` lists them)"
        }
        (XskMode::ZeroCopy, libc::EINVAL) => {
            "the driver refused zero-copy on this queue (no DMA-capable device; a virtio-net NIC needs the IOMMU platform feature)"
        }
        (_, libc::EBUSY) => "the queue is already bound by another AF_XDP socket",
        (_, libc::ENOENT | libc::ENODEV) => "no such interface or queue",
        _ => return None,
    })
}

/// Whether this kernel lets us create an AF_XDP socket.
pub fn af_xdp_available() -> io::Result<()> {
    // SAFETY: socket(2) has no memory preconditions.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor we just created and own; closing it once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Whether a socket creation failed with EBUSY (queue still held).
fn is_busy(e: &xsk_rs::socket::SocketCreateError) -> bool {
    bind_errno(e) == Some(libc::EBUSY)
}

/// The error number a failed socket creation carries, if any.
fn bind_errno(e: &xsk_rs::socket::SocketCreateError) -> Option<i32> {
    use std::error::Error;
    e.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

/// The mode the kernel actually bound a socket in (XDP_OPTIONS).
fn bound_mode(fd: i32) -> io::Result<XskMode> {
    let mut opts = libc::xdp_options { flags: 0 };
    let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `opts`, a live
    // xdp_options, and updates `len`; `fd` is an AF_XDP socket we own.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_OPTIONS,
            (&mut opts as *mut libc::xdp_options).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0 {
        XskMode::ZeroCopy
    } else {
        XskMode::Copy
    })
}

/// Exposes a frame's whole capacity as its contents (so the pipeline can
/// grow a packet in place), calls `f` on it, and sets the frame's length to
/// what `f` returns when that is `Some`.
fn with_whole_frame<R>(
    data: &mut xsk_rs::umem::frame::DataMut<'_>,
    f: impl FnOnce(&mut [u8]) -> (R, Option<usize>),
) -> R {
    let mut cursor = data.cursor();
    let cap = cursor.buf_len();
    cursor.set_pos(cap);
    let (r, len) = f(data.contents_mut());
    if let Some(len) = len {
        data.cursor().set_pos(len);
    }
    r
}

/// [`Spare`] frames of an [`XskIo`]: taken from the free list of the
/// output port's pool and staged on that port ahead of the frame being
/// handled.
struct XskSpare<'a> {
    umems: &'a [Umem],
    free: &'a mut [Vec<FrameDesc>],
    ports: &'a mut [Option<Port>],
}

impl Spare for XskSpare<'_> {
    fn available(&self, port: PortId) -> usize {
        let Some(Some(p)) = self.ports.get(port as usize) else {
            return 0;
        };
        // One staging slot stays free for the handled frame itself.
        let room = (p.staged.capacity() - p.staged.len()).saturating_sub(1);
        room.min(self.free[p.pool].len())
    }

    fn send(&mut self, port: PortId, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if self.available(port) == 0 {
            return false;
        }
        let Some(Some(out)) = self.ports.get(port as usize) else {
            return false;
        };
        let pool = out.pool;
        let Some(mut desc) = self.free[pool].pop() else {
            return false;
        };
        let len = {
            // SAFETY: `desc` comes from the free list of `pool`: a frame of
            // that pool's UMEM that neither the kernel nor any other
            // reference holds.
            let mut data = unsafe { self.umems[pool].data_mut(&mut desc) };
            with_whole_frame(&mut data, |buf| {
                let len = fill(buf).min(buf.len());
                (len, Some(len))
            })
        };
        match &mut self.ports[port as usize] {
            Some(out) if len > 0 => out.staged.push(desc),
            _ => self.free[pool].push(desc),
        }
        true
    }
}

impl PacketIo for XskIo {
    fn poll(&mut self, mut handler: impl Handler) -> usize {
        if self.napi_busy_poll.is_some() {
            self.drive_napi();
        }
        let XskIo {
            umems,
            ports,
            free,
            lender,
            frame_shift,
            scratch,
            counters,
            ..
        } = self;
        let umems = &umems[..];
        let mut total = 0;
        for port in 0..ports.len() {
            let Some(this) = ports[port].as_mut() else {
                continue;
            };
            let pool = this.pool;
            let rx_batch = &mut scratch[..BATCH];
            // SAFETY: the RX ring hands us frames of this socket's UMEM; from
            // here on they are ours alone until passed on below.
            let n = unsafe { this.rx.consume(rx_batch) };
            total += n;
            this.lent = this.lent.saturating_sub(n as u32);
            for &rx_desc in &scratch[..n] {
                if let Some(l) = lender[pool].get_mut(rx_desc.addr() >> frame_shift[pool]) {
                    *l = UNLENT;
                }
                let mut desc = rx_desc;
                let len = desc.lengths().data();
                // SAFETY: `desc` is a frame of `pool`'s UMEM that we own (see
                // above); no other reference to its bytes exists. Spare
                // frames are other descriptors from the free lists.
                let mut data = unsafe { umems[pool].data_mut(&mut desc) };
                let verdict = {
                    let mut spare = XskSpare {
                        umems,
                        free: &mut free[..],
                        ports: &mut ports[..],
                    };
                    with_whole_frame(&mut data, |buf| {
                        let verdict = handler(port as PortId, buf, len, &mut spare);
                        let tx_len = match verdict {
                            Verdict::Tx { len, .. } => Some(len),
                            Verdict::Drop(_) => None,
                        };
                        (verdict, tx_len)
                    })
                };
                let Verdict::Tx { port: out, len } = verdict else {
                    free[pool].push(desc);
                    continue;
                };
                let Some(Some(out)) = ports.get_mut(out as usize) else {
                    // A port removed at run time: nothing routes to it once
                    // its removal is acknowledged, so this cannot happen.
                    counters.dropped(DropReason::TxRingFull);
                    free[pool].push(desc);
                    continue;
                };
                if out.staged.len() == out.staged.capacity() {
                    counters.dropped(DropReason::TxRingFull);
                    free[pool].push(desc);
                    continue;
                }
                if out.pool == pool {
                    out.staged.push(desc);
                    continue;
                }
                // Crossing between UMEM classes: copied once, into a free
                // frame of the output's pool; the received frame is free again.
                let Some(mut copy) = free[out.pool].pop() else {
                    counters.dropped(DropReason::UmemExhausted);
                    free[pool].push(desc);
                    continue;
                };
                let copied = {
                    // SAFETY: `copy` comes from the free list of the output's
                    // pool: a frame of that UMEM nothing else holds; `data`
                    // is a frame of the other UMEM, so the two never alias.
                    let mut dst = unsafe { umems[out.pool].data_mut(&mut copy) };
                    let src = &data.contents()[..len];
                    // A frame larger than the other class's frames does not
                    // fit (the pipeline's MTU checks keep that from happening).
                    with_whole_frame(&mut dst, |buf| {
                        let fits = cross_umem_copy(buf, src);
                        (fits, fits.then_some(len))
                    })
                };
                if !copied {
                    counters.dropped(DropReason::TooBig);
                    free[out.pool].push(copy);
                    free[pool].push(desc);
                    continue;
                }
                counters.event(Event::CrossUmemCopy);
                out.staged.push(copy);
                free[pool].push(desc);
            }
        }
        self.flush();
        self.refill();
        total
    }

    fn ports(&self) -> usize {
        self.ports.len()
    }

    /// Whether any frame is staged or in flight on a TX ring.
    fn tx_pending(&self) -> bool {
        self.ports
            .iter()
            .flatten()
            .any(|p| p.in_flight > 0 || !p.staged.is_empty())
    }

    /// Sleeps until a port has frames or `timeout_ms` passes. Only called
    /// when the worker has been idle, never per packet.
    fn wait(&mut self, timeout_ms: i32) {
        if self.ports.iter().flatten().any(|p| p.in_flight > 0) {
            return; // keep kicking TX instead of sleeping
        }
        // SAFETY: `pollfds` is a live array of valid pollfd structs whose
        // length we pass; the fds belong to sockets we own.
        unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms,
            );
        }
    }

    /// Folds the kernel's drop statistics of every socket (XDP_STATISTICS,
    /// cumulative) into the worker's counters as `xsk_rx_dropped`,
    /// `xsk_rx_ring_full` and `xsk_fill_ring_empty`: the frames lost before
    /// the worker could see them. One `getsockopt` per socket; the worker
    /// calls it every few milliseconds, never per packet.
    fn sync_kernel_counters(&mut self) {
        let delta = |now: u64, seen: &mut u64| {
            let d = now.saturating_sub(*seen);
            *seen = now;
            d
        };
        for p in self.ports.iter_mut().flatten() {
            let Ok(s) = p.rx.fd().xdp_statistics() else {
                continue;
            };
            let c = &self.counters;
            c.dropped_n(
                DropReason::XskRxDropped,
                delta(s.rx_dropped(), &mut p.seen.rx_dropped),
            );
            c.dropped_n(
                DropReason::XskRxRingFull,
                delta(s.rx_ring_full(), &mut p.seen.rx_ring_full),
            );
            c.event_n(
                Event::XskFillRingEmpty,
                delta(s.rx_fill_ring_empty_descs(), &mut p.seen.fill_ring_empty),
            );
        }
    }
}
