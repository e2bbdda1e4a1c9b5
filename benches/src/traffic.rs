//! The AF_XDP traffic generator and sink, and the loop that drives both
//! from one thread.
//!
//! Copy mode on veth: one `sendto` kick transmits at most 32 frames, so the
//! loop kicks on every pass while anything is outstanding. The generator
//! writes every frame of its UMEM from the template once; per frame it then
//! writes only the sequence number, the timestamp (and, for route-scale
//! runs, a random inner destination). The sink runs the Overpass steering
//! program (role `Pod`: every IPv4 frame to the socket, ARP to the kernel)
//! on its interface and looks for the probe payload at any encapsulation
//! depth.
//!
//! Generator and sink live in one thread on purpose: on a 2-core machine two
//! busy-polling threads on CPU 0 would time-slice in multi-millisecond
//! quanta and overflow the sink's RX ring.

use std::io::Write as _;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use hdrhistogram::Histogram;
use overpass_xdp::{PortRole, SteerCounter, Steering};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

use crate::frames::{self, Template};
use crate::netns;

const FRAME_SIZE: u32 = 2048;
/// Frames per RX poll.
const RX_BATCH: usize = 64;
/// Frames queued to the kernel but not completed, at most (keeps timestamps
/// close to the actual transmission at flat-out rates).
const MAX_OUTSTANDING: u32 = 512;

fn qsize(n: u32) -> anyhow::Result<QueueSize> {
    QueueSize::new(n).map_err(|e| anyhow!("ring size {n}: {e}"))
}

/// One AF_XDP socket with its own UMEM.
struct Sock {
    umem: Umem,
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    free: Vec<FrameDesc>,
    scratch: Vec<FrameDesc>,
}

impl std::fmt::Debug for Sock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sock")
            .field("free", &self.free.len())
            .finish_non_exhaustive()
    }
}

impl Sock {
    /// Opens a copy-mode socket on `ifname` queue 0 in the calling thread's
    /// network namespace, loading no XDP program.
    fn open(ifname: &str, frames: u32, ring: u32) -> anyhow::Result<Sock> {
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| anyhow!("{e}"))?)
            .fill_queue_size(qsize(ring)?)
            .comp_queue_size(qsize(ring)?)
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let count = NonZeroU32::new(frames).ok_or_else(|| anyhow!("zero frames"))?;
        let (umem, free) = Umem::new(umem_config, count, false).context("creating the UMEM")?;
        let config = SocketConfig::builder()
            .rx_queue_size(qsize(ring)?)
            .tx_queue_size(qsize(ring)?)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_COPY)
            .build();
        let iface: Interface = ifname
            .parse()
            .map_err(|_| anyhow!("bad interface name {ifname:?}"))?;
        // The queue may still be held by a socket closed a moment ago (the
        // previous configuration of the run): retry EBUSY for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let created = loop {
            // SAFETY: the UMEM is fresh and used by this one socket only, which
            // keeps a clone of it alive; (ifname, queue 0) is bound once.
            let r = unsafe { xsk_rs::Socket::new(config, &umem, &iface, 0) };
            let busy = r
                .as_ref()
                .err()
                .and_then(|e| std::error::Error::source(e))
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.raw_os_error() == Some(libc::EBUSY));
            if busy && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
            break r;
        };
        let (tx, rx, rings) = created
            .with_context(|| format!("binding an AF_XDP socket to {ifname} queue 0 (copy mode)"))?;
        let (fq, cq) =
            rings.ok_or_else(|| anyhow!("{ifname}: socket got no fill/completion rings"))?;
        Ok(Sock {
            umem,
            tx,
            rx,
            fq,
            cq,
            free,
            scratch: vec![FrameDesc::default(); ring as usize],
        })
    }

    fn fd(&self) -> i32 {
        self.rx.fd().as_raw_fd()
    }

    /// (rx_dropped, rx_ring_full, rx_fill_ring_empty, tx_invalid) from the kernel.
    fn kernel_stats(&self) -> (u64, u64, u64, u64) {
        self.rx
            .fd()
            .xdp_statistics()
            .map(|s| {
                (
                    s.rx_dropped(),
                    s.rx_ring_full(),
                    s.rx_fill_ring_empty_descs(),
                    s.tx_invalid_descs(),
                )
            })
            .unwrap_or_default()
    }
}

/// Where and what a generator sends.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub netns: String,
    pub ifname: String,
    pub template: Template,
    /// When set, every frame gets a uniformly random inner destination from
    /// these (host-order IPv4 addresses).
    pub destinations: Option<Vec<u32>>,
}

/// The AF_XDP transmitter.
#[derive(Debug)]
pub struct Generator {
    sock: Sock,
    len: usize,
    probe: usize,
    inner_ip: usize,
    destinations: Option<Vec<u32>>,
    rng: u64,
    seq: u64,
    outstanding: u32,
    /// Frames handed to the kernel and completed.
    pub completed: u64,
    batch: Vec<FrameDesc>,
}

impl Generator {
    pub fn open(spec: &GenSpec) -> anyhow::Result<Generator> {
        let mut sock = netns::within(&spec.netns, || Sock::open(&spec.ifname, 4096, 2048))?;
        // Write the template into every frame once.
        let bytes = &spec.template.bytes;
        for desc in sock.free.iter_mut() {
            // SAFETY: `desc` is a frame of this socket's UMEM that nothing
            // else (kernel or us) holds yet: none was handed to any ring.
            let mut data = unsafe { sock.umem.data_mut(desc) };
            let mut cursor = data.cursor();
            cursor.set_pos(0);
            cursor
                .write_all(bytes)
                .context("template larger than a UMEM frame")?;
        }
        Ok(Generator {
            sock,
            len: bytes.len(),
            probe: spec.template.probe,
            inner_ip: spec.template.inner_ip,
            destinations: spec.destinations.clone(),
            rng: 0x9e37_79b9_7f4a_7c15,
            seq: 0,
            outstanding: 0,
            completed: 0,
            batch: Vec::with_capacity(2048),
        })
    }

    /// Frames sent so far (sequence numbers used).
    pub fn sent(&self) -> u64 {
        self.seq
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Queues up to `max` frames stamped `ts`; returns how many.
    fn send(&mut self, max: u64, ts: u64) -> u64 {
        let room = self.sock.tx.nb_free(MAX_OUTSTANDING) as u64;
        let n = max
            .min(room)
            .min(self.sock.free.len() as u64)
            .min(u64::from(MAX_OUTSTANDING.saturating_sub(self.outstanding)));
        if n == 0 {
            return 0;
        }
        self.batch.clear();
        for _ in 0..n {
            let mut desc = self.sock.free.pop().expect("counted above");
            let nd = self.destinations.as_ref().map_or(0, |d| d.len() as u64);
            let dst = if nd > 0 {
                let r = self.next_rand();
                self.destinations.as_ref().map(|d| d[(r % nd) as usize])
            } else {
                None
            };
            {
                // SAFETY: `desc` came from our free list: a frame of this UMEM
                // that neither the kernel nor another reference holds.
                let mut data = unsafe { self.sock.umem.data_mut(&mut desc) };
                data.cursor().set_pos(self.len);
                let buf = data.contents_mut();
                frames::stamp(buf, self.probe, self.seq, ts);
                if let Some(dst) = dst {
                    frames::set_inner_dst(buf, self.inner_ip, dst);
                }
            }
            self.seq += 1;
            self.batch.push(desc);
        }
        // SAFETY: the descriptors are frames of this UMEM that we own; they go
        // to the kernel and come back through the completion ring.
        let produced = unsafe { self.sock.tx.produce(&self.batch) };
        debug_assert_eq!(produced as u64, n, "nb_free promised room");
        for d in &self.batch[produced..] {
            self.sock.free.push(*d);
        }
        self.seq -= n - produced as u64;
        self.outstanding += produced as u32;
        produced as u64
    }

    /// Kicks the kernel if anything is outstanding and reaps completions.
    fn service(&mut self) {
        if self.outstanding > 0 {
            let _ = self.sock.tx.wakeup();
        }
        let scratch = &mut self.sock.scratch;
        // SAFETY: the completion ring returns frames of this UMEM that we
        // produced for TX; they are ours again.
        let done = unsafe { self.sock.cq.consume(scratch) };
        if done > 0 {
            self.outstanding -= done as u32;
            self.completed += done as u64;
            self.sock.free.extend_from_slice(&scratch[..done]);
        }
    }
}

/// What a sink listens on.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub netns: String,
    pub ifname: String,
}

/// The AF_XDP receiver, with the steering program attached to its interface.
pub struct Sink {
    // Declared first: the program leaves the interface before the socket closes.
    steering: Steering,
    sock: Sock,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("sock", &self.sock)
            .finish_non_exhaustive()
    }
}

impl Sink {
    pub fn open(spec: &SinkSpec) -> anyhow::Result<Sink> {
        netns::within(&spec.netns, || {
            let mut sock = Sock::open(&spec.ifname, 8192, 4096)?;
            let n = sock.free.len().min(4096);
            let from = sock.free.len() - n;
            // SAFETY: frames from our free list, owned by nobody else; they
            // come back to us through the RX ring.
            let produced = unsafe { sock.fq.produce(&sock.free[from..]) };
            if produced != n {
                bail!("could not fill the sink's fill ring ({produced} of {n})");
            }
            sock.free.truncate(from);
            let mut steering =
                Steering::load(&[8472]).context("loading the steering program for the sink")?;
            let ifindex = overpass::host::iface::ifindex(&spec.ifname)
                .with_context(|| spec.ifname.clone())?;
            steering
                .attach(ifindex, PortRole::Pod, 0, 1)
                .with_context(|| format!("attaching XDP to the sink's {}", spec.ifname))?;
            steering
                .register_xsk(0, sock.fd())
                .context("registering the sink socket")?;
            Ok(Sink { steering, sock })
        })
    }

    /// Frames the steering program handed to the socket so far.
    pub fn steered(&self) -> u64 {
        let c = self
            .steering
            .counters()
            .unwrap_or([0; overpass_xdp::COUNTER_MAX]);
        c[SteerCounter::SteerPod as usize].saturating_sub(c[SteerCounter::NoSocket as usize])
    }

    /// Receives up to one batch; calls `f` for every probe found. Returns
    /// (frames, frames without a probe).
    fn poll(&mut self, mut f: impl FnMut(frames::Probe)) -> (usize, usize) {
        let scratch = &mut self.sock.scratch[..RX_BATCH];
        // SAFETY: the RX ring hands us frames of this UMEM; they are ours
        // until we give them back to the fill ring below.
        let n = unsafe { self.sock.rx.consume(scratch) };
        let mut foreign = 0;
        for d in &scratch[..n] {
            // SAFETY: we own the frame (see above) and only read it.
            let data = unsafe { self.sock.umem.data(d) };
            match frames::parse(data.contents()) {
                Some(p) => f(p),
                None => foreign += 1,
            }
        }
        if n > 0 {
            // SAFETY: the frames just consumed are ours; they go back to the
            // kernel for reception. The fill ring has room: it holds at most
            // the frames we gave it, and these n were taken out of it.
            let produced = unsafe { self.sock.fq.produce(&scratch[..n]) };
            if produced < n {
                self.sock.free.extend_from_slice(&scratch[produced..n]);
            }
        }
        (n, foreign)
    }
}

/// How to drive one run.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Fixed offered rate; `None` is flat out.
    pub rate_pps: Option<f64>,
    /// Traffic before the measurement window (not counted).
    pub warmup: Duration,
    /// The measurement window (by receive time).
    pub window: Duration,
    /// After the generator stops: how long to keep receiving stragglers.
    pub drain: Duration,
}

/// What one run measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Measured {
    /// Frames handed to the kernel during the whole run.
    pub tx_total: u64,
    /// Frames sent during the window.
    pub tx_window: u64,
    /// Probes received during the whole run (after the drain).
    pub rx_total: u64,
    /// Probes received during the window.
    pub rx_window: u64,
    pub window_s: f64,
    /// Received probes per second in the window.
    pub rx_pps: f64,
    /// Sent frames per second in the window.
    pub tx_pps: f64,
    /// `tx_total - rx_total` (frames that never arrived).
    pub lost: u64,
    /// Probes that arrived after a higher sequence number.
    pub reordered: u64,
    /// Frames the sink got that carried no probe.
    pub foreign: u64,
    /// One-way latency of window probes, nanoseconds.
    pub lat_p50_ns: u64,
    pub lat_p99_ns: u64,
    pub lat_p999_ns: u64,
    pub lat_max_ns: u64,
    /// Sink socket kernel statistics: rx_dropped, rx_ring_full.
    pub sink_rx_dropped: u64,
    pub sink_rx_ring_full: u64,
    /// Frames the sink's steering program redirected.
    pub sink_steered: u64,
    /// The trials of a rate search ([`search`]); empty for a single run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trials: Vec<Trial>,
}

/// Runs `gen` into `sink` according to `plan`. Stops early when `stop` is set.
pub fn run(tx_gen: &mut Generator, sink: &mut Sink, plan: &Plan, stop: &AtomicBool) -> Measured {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let start = now_ns();
    // The generator may have run before (a rate search reuses it): count
    // from here.
    let sent0 = tx_gen.sent();
    let sent = |g: &Generator| g.sent() - sent0;
    let t0 = start + plan.warmup.as_nanos() as u64;
    let t1 = t0 + plan.window.as_nanos() as u64;
    let t_end = t1 + plan.drain.as_nanos() as u64;
    let (mut rx_total, mut rx_window, mut foreign, mut reordered) = (0u64, 0u64, 0u64, 0u64);
    let mut tx_at_t0: Option<u64> = None;
    let mut tx_at_t1: Option<u64> = None;
    let mut max_seq: Option<u64> = None;
    let (drop0, full0) = {
        let s = sink.sock.kernel_stats();
        (s.0, s.1)
    };
    let steered0 = sink.steered();
    let mut iter = 0u64;
    loop {
        let now = now_ns();
        if now >= t_end || (iter & 1023 == 0 && stop.load(Ordering::Relaxed)) {
            break;
        }
        iter += 1;
        if now >= t0 && tx_at_t0.is_none() {
            tx_at_t0 = Some(sent(tx_gen));
        }
        if now < t1 {
            let want = match plan.rate_pps {
                Some(rate) => {
                    let due = ((now - start) as f64 * rate / 1e9) as u64;
                    due.saturating_sub(sent(tx_gen)).min(256)
                }
                None => 256,
            };
            if want > 0 {
                tx_gen.send(want, now);
            }
        } else if tx_at_t1.is_none() {
            tx_at_t1 = Some(sent(tx_gen));
        }
        tx_gen.service();
        let rx_now = now_ns();
        let in_window = rx_now >= t0 && rx_now < t1;
        let (_, f) = sink.poll(|p| {
            rx_total += 1;
            match max_seq {
                Some(m) if p.seq < m => reordered += 1,
                _ => max_seq = Some(p.seq),
            }
            if in_window {
                rx_window += 1;
                let _ = hist.record(rx_now.saturating_sub(p.ts_ns).max(1));
            }
        });
        foreign += f as u64;
    }
    // Give outstanding transmissions a last chance (bounded).
    for _ in 0..10_000 {
        if tx_gen.outstanding == 0 {
            break;
        }
        tx_gen.service();
    }
    let (drop1, full1) = {
        let s = sink.sock.kernel_stats();
        (s.0, s.1)
    };
    let window_s = plan.window.as_secs_f64();
    let tx_window = tx_at_t1.unwrap_or(sent(tx_gen)) - tx_at_t0.unwrap_or(0);
    let tx_total = sent(tx_gen);
    let q = |p: f64| {
        if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(p)
        }
    };
    Measured {
        tx_total,
        tx_window,
        rx_total,
        rx_window,
        window_s,
        rx_pps: rx_window as f64 / window_s,
        tx_pps: tx_window as f64 / window_s,
        lost: tx_total.saturating_sub(rx_total),
        reordered,
        foreign,
        lat_p50_ns: q(0.5),
        lat_p99_ns: q(0.99),
        lat_p999_ns: q(0.999),
        lat_max_ns: if hist.is_empty() { 0 } else { hist.max() },
        sink_rx_dropped: drop1 - drop0,
        sink_rx_ring_full: full1 - full0,
        sink_steered: sink.steered() - steered0,
        trials: vec![],
    }
}

/// One trial of a rate search.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Trial {
    /// Offered rate (`None`: flat out).
    pub offered_pps: Option<f64>,
    pub tx_pps: f64,
    pub rx_pps: f64,
    /// Lost share of the frames sent.
    pub loss: f64,
}

/// Lost share of the frames a run sent.
pub fn loss(m: &Measured) -> f64 {
    if m.tx_total == 0 {
        1.0
    } else {
        m.lost as f64 / m.tx_total as f64
    }
}

/// Throughput as RFC 2544 §26.1 defines it, with a loss tolerance: the
/// highest offered rate at which at most `max_loss` of the frames are lost.
/// A short flat-out trial bounds the search; if it loses no more than
/// `max_loss` it is the answer. Otherwise `trials` fixed-rate runs of
/// `plan` on the same path bisect below the flat-out rate, starting from
/// what got through flat out (or half the flat-out rate if that collapsed).
/// Returns the passing trial with the highest rate (every trial listed in
/// [`Measured::trials`]); when none passes, the lowest-rate trial, so the
/// reported rate is an upper bound and the loss column shows it failed.
pub fn search(
    tx_gen: &mut Generator,
    sink: &mut Sink,
    plan: &Plan,
    max_loss: f64,
    trials: usize,
    stop: &AtomicBool,
) -> Measured {
    let mut log = vec![];
    let mut note = |m: &Measured, offered: Option<f64>| {
        log.push(Trial {
            offered_pps: offered,
            tx_pps: m.tx_pps,
            rx_pps: m.rx_pps,
            loss: loss(m),
        })
    };
    let flat = run(
        tx_gen,
        sink,
        &Plan {
            rate_pps: None,
            ..*plan
        },
        stop,
    );
    note(&flat, None);
    if loss(&flat) <= max_loss {
        return Measured {
            trials: log,
            ..flat
        };
    }
    let (mut lo, mut hi) = (0.0f64, flat.tx_pps);
    // What got through flat out is a good first guess, unless the path
    // collapsed under the overload (then plain bisection).
    let mut rate = if flat.rx_pps > hi / 4.0 {
        flat.rx_pps * 0.95
    } else {
        hi / 2.0
    };
    let mut best: Option<Measured> = None;
    let mut lowest: Option<Measured> = None;
    for _ in 0..trials {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let m = run(
            tx_gen,
            sink,
            &Plan {
                rate_pps: Some(rate),
                ..*plan
            },
            stop,
        );
        note(&m, Some(rate));
        if loss(&m) <= max_loss {
            lo = rate;
            best = Some(m);
        } else {
            hi = rate;
            lowest = Some(m);
        }
        rate = (lo + hi) / 2.0;
    }
    let m = best.or(lowest).unwrap_or(flat);
    Measured { trials: log, ..m }
}

/// CLOCK_MONOTONIC in nanoseconds.
#[inline]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which is live and
    // properly aligned; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
