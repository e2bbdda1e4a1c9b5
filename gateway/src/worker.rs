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

use crate::io::{PacketIo, Verdict};
use crate::pipeline::Pipeline;
use crate::route::RouteHandle;
use crate::stats::WorkerCounters;

/// Empty polls before the worker may sleep.
const IDLE_SPINS: u32 = 20_000;

/// Something that can block until traffic arrives.
pub trait Wait {
    fn wait(&mut self, timeout_ms: i32);
}

impl Wait for crate::xsk::XskIo {
    fn wait(&mut self, timeout_ms: i32) {
        crate::xsk::XskIo::wait(self, timeout_ms)
    }
}

impl Wait for crate::io::MemIo {
    fn wait(&mut self, _timeout_ms: i32) {}
}

/// A worker: an I/O implementation, the pipeline state, the route handle.
#[derive(Debug)]
pub struct Worker<I> {
    pub io: I,
    pub pipeline: Pipeline,
    routes: RouteHandle,
    counters: Arc<WorkerCounters>,
    busy_poll: bool,
}

impl<I: PacketIo + Wait> Worker<I> {
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
        }
    }

    /// One round: a batch from every port against one route snapshot.
    /// Returns the number of frames received.
    #[inline]
    pub fn poll_once(&mut self) -> usize {
        let table = self.routes.load();
        let pipeline = &mut self.pipeline;
        let counters = &*self.counters;
        self.io.poll(|port, buf, len| {
            let v = pipeline.process(&table, counters, port, buf, len);
            if let Verdict::Drop(reason) = v {
                counters.dropped(reason);
            }
            v
        })
    }

    /// Runs until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut idle = 0u32;
        while !stop.load(Ordering::Relaxed) {
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
        // Drain: give queued transmissions a last chance to leave.
        for _ in 0..64 {
            self.poll_once();
        }
    }
}
