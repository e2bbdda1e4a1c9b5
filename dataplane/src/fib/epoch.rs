//! The FIB readers' grace period (RCU's synchronize): after publishing a
//! new table, the writer waits until no worker is still in a round that may
//! have loaded the old one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A worker's round counter, for the control plane's grace period: odd
/// while the worker is inside a poll round (holding a route snapshot), even
/// between rounds. After publishing a new table, [`RoundEpoch::wait_quiescent`]
/// returns once no round that may have loaded the old table is still
/// running, so an acknowledged route change is in force for every packet
/// forwarded afterwards (RCU's synchronize, bounded by one round).
#[derive(Debug, Default)]
pub struct RoundEpoch(AtomicU64);

impl RoundEpoch {
    /// Round start. SeqCst (one locked instruction per round, not per
    /// packet): ordered before the table load that follows, so a writer
    /// that published and then sees an even value knows the round loads
    /// the new table.
    #[inline]
    pub fn enter(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Round end (single writer: a plain store).
    #[inline]
    pub fn leave(&self) {
        self.0
            .store(self.0.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    /// The counter itself: it moves twice per poll round, so a reader that
    /// sees the same value for much longer than a round (a worker sleeps at
    /// most 10 ms in `poll(2)`) knows the worker is wedged. For liveness
    /// monitoring (the service watchdog), not for synchronisation.
    #[inline]
    pub fn rounds(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Waits (up to `timeout`) until the round in progress when called, if
    /// any, has ended. Call after publishing. Returns false on timeout.
    pub fn wait_quiescent(&self, timeout: Duration) -> bool {
        let start = self.0.load(Ordering::SeqCst);
        if start.is_multiple_of(2) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        while self.0.load(Ordering::Acquire) == start {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }
}
