//! The per-queue worker loop: poll every port, run the pipeline, repeat.
//!
//! One worker per underlay RX queue, pinned to its own core. It loads the
//! route table once per round of batches (the RCU-style snapshot), so a
//! whole batch is processed against one table, and it never blocks: when
//! there has been nothing to do for a while it sleeps in `poll(2)` on its
//! sockets (unless `busy_poll` is set), which costs latency only for the
//! first packet after an idle period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use overpass_dataplane::fib::{RoundEpoch, RouteHandle};
use overpass_dataplane::io::{KERNEL_SYNC, PacketIo, Verdict};

use overpass_dataplane::counters::WorkerCounters;
use overpass_dataplane::pipeline::Pipeline;

use crate::afxdp::latency::LatencyRecorder;

/// Empty polls before the worker may sleep.
const IDLE_SPINS: u32 = 20_000;

/// Work the control plane hands a worker (attach or remove a port, read
/// its frame accounting): run on the worker's thread between two poll
/// rounds, so the worker stays the only owner of its sockets.
pub type Command<I> = Box<dyn FnOnce(&mut I) + Send>;

/// A worker: an I/O implementation, the pipeline state, the route handle.
pub struct Worker<I> {
    pub io: I,
    pub pipeline: Pipeline,
    routes: RouteHandle,
    counters: Arc<WorkerCounters>,
    busy_poll: bool,
    /// Latency recording (see [`crate::afxdp::latency`]); `None`: not measured.
    latency: Option<LatencyRecorder>,
    /// Round counter for the control plane's grace period.
    epoch: Arc<RoundEpoch>,
    /// Origin of the clock the pipeline is given each round.
    clock0: Instant,
    /// Commands from the control plane, checked once per round (a lock-free
    /// `try_recv` on an empty channel).
    commands: Option<std::sync::mpsc::Receiver<Command<I>>>,
}

impl<I: std::fmt::Debug> std::fmt::Debug for Worker<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("io", &self.io)
            .field("busy_poll", &self.busy_poll)
            .finish_non_exhaustive()
    }
}

impl<I: PacketIo> Worker<I> {
    pub fn new(
        io: I,
        pipeline: Pipeline,
        routes: RouteHandle,
        counters: Arc<WorkerCounters>,
        busy_poll: bool,
    ) -> Self {
        Worker {
            io,
            pipeline,
            routes,
            counters,
            busy_poll,
            latency: None,
            epoch: Arc::default(),
            clock0: Instant::now(),
            commands: None,
        }
    }

    /// Runs the commands sent on `commands` between poll rounds.
    pub fn with_commands(mut self, commands: std::sync::mpsc::Receiver<Command<I>>) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Runs every pending command. Once per round: an empty channel costs
    /// an atomic load.
    #[inline]
    fn run_commands(&mut self) {
        if let Some(rx) = &self.commands {
            while let Ok(cmd) = rx.try_recv() {
                cmd(&mut self.io);
            }
        }
    }

    /// Publishes round starts and ends in `epoch` (see [`RoundEpoch`]).
    pub fn with_epoch(mut self, epoch: Arc<RoundEpoch>) -> Self {
        self.epoch = epoch;
        self
    }

    /// Records per-packet processing latency into `recorder`.
    pub fn with_latency(mut self, recorder: LatencyRecorder) -> Self {
        self.latency = Some(recorder);
        self
    }

    /// One round: a batch from every port against one route snapshot.
    /// Returns the number of frames received.
    #[inline]
    pub fn poll_once(&mut self) -> usize {
        let epoch = &*self.epoch;
        epoch.enter();
        let table = self.routes.load();
        // One clock read per round (vDSO, no syscall): the pipeline's ICMP
        // rate limit runs on it.
        let start = Instant::now();
        self.pipeline
            .set_clock(start.duration_since(self.clock0).as_nanos() as u64);
        let pipeline = &mut self.pipeline;
        let counters = &*self.counters;
        let Some(latency) = self.latency.as_mut() else {
            // The pipeline counts its own drops; nothing to add here.
            let n = self.io.poll(|port, buf, len, spare| {
                pipeline.process(&table, counters, port, buf, len, spare)
            });
            drop(table);
            epoch.leave();
            return n;
        };
        // Two clock reads per round (vDSO); per packet only an array bump.
        let n = self.io.poll(|port, buf, len, spare| {
            let v = pipeline.process(&table, counters, port, buf, len, spare);
            if let Verdict::Tx { .. } = v {
                latency.note(pipeline.last_flow());
            }
            v
        });
        drop(table);
        let end = Instant::now();
        if n > 0 {
            latency.end_round(end.duration_since(start));
        }
        // The round ends once its per-peer values are recorded: a route
        // change that waited for it may then give a slot of the old table
        // to another node (see latency.rs).
        epoch.leave();
        latency.maybe_flush(end);
        n
    }

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut idle = 0u32;
        let mut rounds = 0u32;
        let mut next_sync = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(256) {
                let now = Instant::now();
                if now >= next_sync {
                    self.io.sync_kernel_counters();
                    next_sync = now + KERNEL_SYNC;
                }
            }
            self.run_commands();
            if self.poll_once() > 0 {
                idle = 0;
                continue;
            }
            idle = idle.saturating_add(1);
            if !self.busy_poll && idle > IDLE_SPINS {
                self.io.wait(10);
            } else {
                std::hint::spin_loop();
            }
        }
        // Drain: keep kicking until every queued transmission has left (or
        // 200 ms passed). The XDP program is detached first (see
        // Gateway::stop), so no new frames arrive meanwhile.
        let deadline = Instant::now() + std::time::Duration::from_millis(200);
        loop {
            self.poll_once();
            if !self.io.tx_pending() || Instant::now() >= deadline {
                break;
            }
        }
        self.io.sync_kernel_counters();
        if let Some(latency) = self.latency.as_mut() {
            latency.flush();
        }
    }
}
