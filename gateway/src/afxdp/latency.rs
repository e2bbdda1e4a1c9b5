//! Per-packet processing latency inside the gateway, as HdrHistograms.
//!
//! What is measured: for every forwarded packet, the duration of the poll
//! round that carried it, from just before the worker polls its receive
//! rings to just after that round's transmissions are queued and kicked
//! (`Instant::now()` twice per round: vDSO, no syscall). That is an upper
//! bound of the packet's receive-to-transmit-queued time inside the
//! gateway; it does not include time spent in the NIC or kernel rings.
//!
//! How it stays off the hot path: inside the packet handler the worker only
//! bumps a per-round count for the packet's direction and peer slot (fixed
//! arrays, no allocation, no lock). After the round it records the round's
//! duration once per (direction or peer, count) with `record_n` into
//! histograms the worker owns (pre-allocated, auto-resize off; a peer's
//! histogram is allocated the first time that peer forwards a packet, once
//! for the life of the process). About every 100 ms the worker merges its
//! histograms into the shared ones behind `Mutex::try_lock` — never
//! blocking: if a reader holds the lock it retries on a later round — and
//! resets its own. Readers lock the shared histograms and copy them.
//!
//! Peer slots change owner: the RIB gives the slot of a node that left the
//! route set to a new node (see [`crate::control::rib::PeerSlots`]). Before
//! it publishes the table that uses the slot for the new node it calls
//! [`LatencyShared::clear_slot`], which empties the slot's shared
//! histogram and bumps the slot's epoch, under the lock. Each worker stamps
//! what it records for a slot with the slot's epoch (one relaxed load per
//! peer per round, after the round, never per packet): values stamped with
//! an older epoch are the previous node's and are discarded, both when the
//! worker records into its own histogram and when it merges. A worker
//! records a round's values before it leaves the round ([`RoundEpoch`]),
//! and a slot is only reused once the workers were seen past every round
//! that used it for its old node, so the old node's values always carry the
//! old epoch and the new node's the new one: nothing of the old node ever
//! reaches the new node's histogram.
//!
//! [`RoundEpoch`]: overpass_dataplane::fib::RoundEpoch

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use overpass_dataplane::counters::MAX_PEERS;
use overpass_dataplane::pipeline::{DIRECTIONS, Direction, FlowTag};

/// Lowest value tracked: 1 ns.
const LOWEST_NS: u64 = 1;
/// Highest value tracked: 10 s (longer rounds saturate at this value).
const HIGHEST_NS: u64 = 10_000_000_000;
/// Per-direction histograms: 3 significant digits (0.1 %).
const SIGFIG_DIRECTION: u8 = 3;
/// Per-peer histograms: 2 significant digits (1 %), ~25 KiB each.
const SIGFIG_PEER: u8 = 2;
/// How often a worker merges into the shared histograms.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Every direction, in index order (`direction as usize`).
pub const ALL_DIRECTIONS: [Direction; DIRECTIONS] = [
    Direction::None,
    Direction::Decap,
    Direction::Encap,
    Direction::Transit,
    Direction::Local,
];

/// The stable name of a direction (API, metrics, logs).
pub fn direction_name(d: Direction) -> &'static str {
    match d {
        Direction::None => "none",
        Direction::Decap => "decap",
        Direction::Encap => "encap",
        Direction::Transit => "transit",
        Direction::Local => "local",
    }
}

/// Parses a direction name.
pub fn parse_direction(s: &str) -> Option<Direction> {
    ALL_DIRECTIONS.into_iter().find(|d| direction_name(*d) == s)
}

fn new_hist(sigfig: u8) -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, sigfig)
        .expect("constant histogram bounds are valid");
    h.auto(false);
    h
}

/// Shared histograms: what readers see.
#[derive(Debug)]
struct Merged {
    /// Wall-clock start of the current accumulation (start or last reset).
    since: SystemTime,
    directions: [Histogram<u64>; DIRECTIONS],
    /// By peer slot; allocated on first use.
    peers: Vec<Option<Histogram<u64>>>,
}

/// The merged histograms of every worker.
#[derive(Debug)]
pub struct LatencyShared {
    merged: Mutex<Merged>,
    /// Per peer slot: bumped (under `merged`'s lock) each time the slot is
    /// given to a new node. Workers read it; only the control plane writes.
    slot_epoch: Box<[AtomicU32]>,
}

impl Default for LatencyShared {
    fn default() -> Self {
        LatencyShared {
            merged: Mutex::new(Merged {
                since: SystemTime::now(),
                directions: std::array::from_fn(|_| new_hist(SIGFIG_DIRECTION)),
                peers: (0..MAX_PEERS).map(|_| None).collect(),
            }),
            slot_epoch: (0..MAX_PEERS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

/// A copy of the merged histograms at one moment.
#[derive(Debug, Clone)]
pub struct LatencySnapshot {
    /// Start of the accumulation (process start or last reset).
    pub since: SystemTime,
    /// When the copy was taken.
    pub taken: SystemTime,
    /// Per direction, in [`ALL_DIRECTIONS`] order.
    pub directions: Vec<(Direction, Histogram<u64>)>,
    /// Per peer slot that forwarded anything.
    pub peers: Vec<(u16, Histogram<u64>)>,
}

impl LatencySnapshot {
    /// Every direction merged (per-direction histograms share their bounds).
    pub fn total(&self) -> Histogram<u64> {
        let mut t = new_hist(SIGFIG_DIRECTION);
        for (_, h) in &self.directions {
            t.add(h).expect("same bounds");
        }
        t
    }

    pub fn direction(&self, d: Direction) -> &Histogram<u64> {
        &self.directions[d as usize].1
    }

    pub fn peer(&self, slot: u16) -> Option<&Histogram<u64>> {
        self.peers.iter().find(|(s, _)| *s == slot).map(|(_, h)| h)
    }
}

impl LatencyShared {
    fn lock(&self) -> MutexGuard<'_, Merged> {
        self.merged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the merged histograms (holds the lock for the copy only).
    pub fn snapshot(&self) -> LatencySnapshot {
        let m = self.lock();
        LatencySnapshot {
            since: m.since,
            taken: SystemTime::now(),
            directions: ALL_DIRECTIONS
                .iter()
                .zip(m.directions.iter())
                .map(|(d, h)| (*d, h.clone()))
                .collect(),
            peers: m
                .peers
                .iter()
                .enumerate()
                .filter_map(|(slot, h)| {
                    h.as_ref()
                        .filter(|h| !h.is_empty())
                        .map(|h| (slot as u16, h.clone()))
                })
                .collect(),
        }
    }

    /// Clears the merged histograms and starts a new accumulation.
    /// Values a worker has not merged yet land in the new one.
    pub fn reset(&self) {
        let mut m = self.lock();
        for h in m.directions.iter_mut() {
            h.reset();
        }
        for h in m.peers.iter_mut().flatten() {
            h.reset();
        }
        m.since = SystemTime::now();
    }

    /// `slot` now belongs to another node: its shared histogram starts
    /// empty, and what any worker recorded for the slot's previous node and
    /// has not merged yet is discarded (see the module documentation).
    /// Called by the control plane before it publishes the table that
    /// gives the slot to its new node.
    pub fn clear_slot(&self, slot: u16) {
        let mut m = self.lock();
        if let Some(h) = m.peers.get_mut(slot as usize).and_then(Option::as_mut) {
            h.reset();
        }
        if let Some(e) = self.slot_epoch.get(slot as usize) {
            // Single writer (the control plane, under the lock).
            e.store(e.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// A recorder for one worker, merging into this.
    pub fn recorder(self: &Arc<Self>) -> LatencyRecorder {
        LatencyRecorder::new(self.clone())
    }
}

/// One worker's recorder. Single owner, never shared.
#[derive(Debug)]
pub struct LatencyRecorder {
    shared: Arc<LatencyShared>,
    directions: [Histogram<u64>; DIRECTIONS],
    peers: Vec<Option<Histogram<u64>>>,
    /// Per peer slot: the slot epoch the values in `peers[slot]` belong to.
    peer_epoch: Box<[u32]>,
    /// Forwarded packets of the current round, per direction.
    round_dir: [u32; DIRECTIONS],
    /// Forwarded packets of the current round, per peer slot.
    round_peer: Box<[u32]>,
    /// Slots with a non-zero `round_peer` (capacity MAX_PEERS: never grows).
    touched: Vec<u16>,
    /// Whether the local histograms hold values not merged yet.
    dirty: bool,
    last_flush: Instant,
}

impl LatencyRecorder {
    fn new(shared: Arc<LatencyShared>) -> LatencyRecorder {
        LatencyRecorder {
            shared,
            directions: std::array::from_fn(|_| new_hist(SIGFIG_DIRECTION)),
            peers: (0..MAX_PEERS).map(|_| None).collect(),
            peer_epoch: vec![0; MAX_PEERS].into_boxed_slice(),
            round_dir: [0; DIRECTIONS],
            round_peer: vec![0; MAX_PEERS].into_boxed_slice(),
            touched: Vec::with_capacity(MAX_PEERS),
            dirty: false,
            last_flush: Instant::now(),
        }
    }

    /// Notes one forwarded packet of the current round (hot path: two
    /// array increments).
    #[inline]
    pub fn note(&mut self, tag: FlowTag) {
        self.round_dir[tag.direction as usize] += 1;
        if let Some(slot) = tag.peer_slot
            && let Some(c) = self.round_peer.get_mut(slot as usize)
        {
            if *c == 0 {
                self.touched.push(slot);
            }
            *c += 1;
        }
    }

    /// Ends a round that took `elapsed`: records it once per noted packet.
    /// Call it before the round's [`RoundEpoch::leave`]: per-peer values are
    /// stamped with the slot's owner as of the round (see the module
    /// documentation).
    ///
    /// [`RoundEpoch::leave`]: overpass_dataplane::fib::RoundEpoch::leave
    #[inline]
    pub fn end_round(&mut self, elapsed: Duration) {
        let ns = (elapsed.as_nanos() as u64).clamp(LOWEST_NS, HIGHEST_NS);
        for (h, n) in self.directions.iter_mut().zip(self.round_dir.iter_mut()) {
            if *n != 0 {
                h.saturating_record_n(ns, *n as u64);
                *n = 0;
                self.dirty = true;
            }
        }
        for slot in self.touched.drain(..) {
            let s = slot as usize;
            let n = std::mem::take(&mut self.round_peer[s]);
            let epoch = self.shared.slot_epoch[s].load(Ordering::Relaxed);
            // First packet of this peer ever: allocate its histogram once.
            let h = self.peers[s].get_or_insert_with(|| new_hist(SIGFIG_PEER));
            if self.peer_epoch[s] != epoch {
                // The slot changed owner since this worker last recorded
                // into it: what it holds, not merged yet, was the previous
                // node's.
                h.reset();
                self.peer_epoch[s] = epoch;
            }
            h.saturating_record_n(ns, n as u64);
        }
    }

    /// Merges into the shared histograms if [`FLUSH_INTERVAL`] has passed
    /// and nobody holds their lock; never blocks.
    #[inline]
    pub fn maybe_flush(&mut self, now: Instant) {
        if !self.dirty || now.duration_since(self.last_flush) < FLUSH_INTERVAL {
            return;
        }
        let shared = self.shared.clone();
        if let Ok(mut m) = shared.merged.try_lock() {
            self.merge_into(&mut m);
            self.last_flush = now;
        }
    }

    /// Merges now, waiting for the lock (used when the worker stops).
    pub fn flush(&mut self) {
        let shared = self.shared.clone();
        let mut m = shared.lock();
        self.merge_into(&mut m);
        self.last_flush = Instant::now();
    }

    fn merge_into(&mut self, m: &mut Merged) {
        for (shared, local) in m.directions.iter_mut().zip(self.directions.iter_mut()) {
            if !local.is_empty() {
                shared.add(&*local).expect("same bounds");
                local.reset();
            }
        }
        for (slot, local) in self.peers.iter_mut().enumerate() {
            if let Some(local) = local.as_mut().filter(|h| !h.is_empty()) {
                // Under the lock the control plane bumps epochs with.
                if self.peer_epoch[slot] != self.shared.slot_epoch[slot].load(Ordering::Relaxed) {
                    // The previous owner's values: its histogram is gone.
                    local.reset();
                    continue;
                }
                m.peers[slot]
                    .get_or_insert_with(|| new_hist(SIGFIG_PEER))
                    .add(&*local)
                    .expect("same bounds");
                local.reset();
            }
        }
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_merge_and_reset() {
        let shared = Arc::new(LatencyShared::default());
        let mut a = shared.recorder();
        let mut b = shared.recorder();
        for _ in 0..3 {
            a.note(FlowTag {
                direction: Direction::Encap,
                peer_slot: Some(7),
            });
        }
        a.note(FlowTag {
            direction: Direction::Local,
            peer_slot: None,
        });
        a.end_round(Duration::from_micros(5));
        b.note(FlowTag {
            direction: Direction::Decap,
            peer_slot: Some(7),
        });
        b.end_round(Duration::from_micros(9));
        // Not merged yet: readers see nothing.
        assert_eq!(shared.snapshot().total().len(), 0);
        a.maybe_flush(Instant::now() + FLUSH_INTERVAL);
        b.flush();
        let s = shared.snapshot();
        assert_eq!(s.total().len(), 5);
        assert_eq!(s.direction(Direction::Encap).len(), 3);
        assert_eq!(s.direction(Direction::Decap).len(), 1);
        assert_eq!(s.peer(7).unwrap().len(), 4);
        assert!(s.peer(8).is_none());
        let p50 = s.direction(Direction::Encap).value_at_quantile(0.5);
        assert!((4_990..=5_010).contains(&p50), "{p50}");
        shared.reset();
        assert_eq!(shared.snapshot().total().len(), 0);
    }

    #[test]
    fn a_cleared_slot_keeps_nothing_of_its_previous_node() {
        let shared = Arc::new(LatencyShared::default());
        let (mut a, mut b) = (shared.recorder(), shared.recorder());
        let tag = FlowTag {
            direction: Direction::Decap,
            peer_slot: Some(3),
        };
        let round = |r: &mut LatencyRecorder, n: usize| {
            for _ in 0..n {
                r.note(tag);
            }
            r.end_round(Duration::from_micros(2));
        };
        round(&mut a, 2);
        a.flush();
        round(&mut a, 4);
        round(&mut b, 8);
        assert_eq!(shared.snapshot().peer(3).unwrap().len(), 2);
        // Slot 3 goes to another node: merged, and unmerged in a and b.
        shared.clear_slot(3);
        assert!(shared.snapshot().peer(3).is_none());
        round(&mut a, 1);
        a.flush();
        b.flush();
        assert_eq!(shared.snapshot().peer(3).unwrap().len(), 1);
        assert_eq!(
            shared.snapshot().direction(Direction::Decap).len(),
            15,
            "per-direction histograms are not per node: they keep everything"
        );
    }

    #[test]
    fn a_busy_lock_defers_the_merge() {
        let shared = Arc::new(LatencyShared::default());
        let mut r = shared.recorder();
        r.note(FlowTag {
            direction: Direction::Encap,
            peer_slot: None,
        });
        r.end_round(Duration::from_micros(1));
        {
            let _held = shared.lock();
            r.maybe_flush(Instant::now() + FLUSH_INTERVAL);
        }
        assert_eq!(shared.snapshot().total().len(), 0);
        r.maybe_flush(Instant::now() + FLUSH_INTERVAL);
        assert_eq!(shared.snapshot().total().len(), 1);
    }
}
