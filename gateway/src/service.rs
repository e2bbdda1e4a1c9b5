//! The process as a service: what the service manager (systemd) is told,
//! and when.
//!
//! The unit is `Type=notify`: the service counts as started only when
//! `READY=1` arrives, which [`Notifier::ready`] sends once the dataplane
//! runs and the API listens, so `systemctl start` returns (and a queued
//! `systemctl reload` runs) only then. Reloads are bracketed by
//! `RELOADING=1` … `READY=1`, a stop starts with `STOPPING=1`. Outside
//! systemd (`NOTIFY_SOCKET` unset) every message is a no-op.
//!
//! With `WatchdogSec=` set, systemd passes `WATCHDOG_USEC` and restarts the
//! service when no `WATCHDOG=1` arrives for that long. [`Notifier::tick`]
//! sends one every half period, but only while every worker shows progress
//! ([`Liveness`]): a worker's round counter moves at least every ~10 ms
//! (it sleeps at most that long in `poll(2)`), so one that has not moved
//! for [`STALL`] is wedged (stuck in a round, or its thread died), the
//! pings stop, and systemd restarts the service.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// How long a worker's round counter may stand still before the worker
/// counts as wedged (two orders of magnitude above its longest sleep).
pub const STALL: Duration = Duration::from_secs(1);

/// Per-worker progress over time: which workers have made no progress for
/// the stall time. Pure (the caller supplies the counters and the clock).
#[derive(Debug, Clone)]
pub struct Liveness {
    stall: Duration,
    /// Per worker: the last counter value seen and when it last moved.
    seen: Vec<(u64, Instant)>,
}

impl Liveness {
    pub fn new(stall: Duration) -> Liveness {
        Liveness {
            stall,
            seen: vec![],
        }
    }

    /// Records the workers' counters at `now`; returns the indexes of the
    /// workers whose counter has not moved for the stall time (empty: all
    /// alive). The first observation (or a changed worker count) starts
    /// every worker's clock afresh.
    pub fn observe(&mut self, now: Instant, progress: &[u64]) -> Vec<usize> {
        if self.seen.len() != progress.len() {
            self.seen = progress.iter().map(|&p| (p, now)).collect();
            return vec![];
        }
        let mut stalled = vec![];
        for (i, (&p, seen)) in progress.iter().zip(self.seen.iter_mut()).enumerate() {
            if p != seen.0 {
                *seen = (p, now);
            } else if now.saturating_duration_since(seen.1) >= self.stall {
                stalled.push(i);
            }
        }
        stalled
    }
}

/// Talks to the service manager (see the module documentation).
#[derive(Debug)]
pub struct Notifier {
    /// Ping period (half of `WATCHDOG_USEC`); `None`: no watchdog.
    ping_every: Option<Duration>,
    next_ping: Instant,
    liveness: Liveness,
    /// The stalled workers last reported (logged on change only).
    stalled: Vec<usize>,
}

impl Notifier {
    /// Reads the watchdog period systemd passed (`WATCHDOG_USEC`, for this
    /// process when `WATCHDOG_PID` is set).
    pub fn from_env() -> Notifier {
        let ping_every = sd_notify::watchdog_enabled().map(|d| d / 2);
        if let Some(every) = ping_every {
            tracing::info!(
                ?every,
                "service watchdog enabled: pinging while every worker makes progress"
            );
        }
        Notifier {
            ping_every,
            next_ping: Instant::now(),
            liveness: Liveness::new(STALL),
            stalled: vec![],
        }
    }

    /// How often the main loop should call [`Notifier::tick`].
    pub fn tick_period(&self) -> Duration {
        let tick = Duration::from_millis(100);
        match self.ping_every {
            Some(every) => tick.min(every / 2).max(Duration::from_millis(1)),
            None => tick,
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(state) {
            tracing::warn!("notifying the service manager ({state:?}): {e}");
        }
    }

    /// Started: the dataplane runs and the API listens.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A reload begins (end it with [`Notifier::ready`]).
    pub fn reloading(&self) {
        let mut state = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            state.push(now);
        }
        self.send(&state);
    }

    /// The stop begins.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Checks the workers' progress (`progress`: one round counter per
    /// worker, see [`overpass_dataplane::fib::RoundEpoch::rounds`]), logs a
    /// wedged or recovered worker, and pings the watchdog when due and every
    /// worker is alive.
    pub fn tick(&mut self, now: Instant, progress: &[u64]) {
        let stalled = self.liveness.observe(now, progress);
        if stalled != self.stalled {
            if stalled.is_empty() {
                tracing::warn!("every worker makes progress again; watchdog pings resume");
            } else {
                tracing::error!(
                    workers = ?stalled,
                    "worker made no progress for {STALL:?}: wedged; watchdog pings withheld{}",
                    if self.ping_every.is_some() {
                        ", the service manager restarts the service when WatchdogSec passes"
                    } else {
                        " (no watchdog configured: nothing restarts it)"
                    }
                );
            }
            self.stalled = stalled;
        }
        let Some(every) = self.ping_every else {
            return;
        };
        if now >= self.next_ping && self.stalled.is_empty() {
            self.send(&[NotifyState::Watchdog]);
            self.next_ping = now + every;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_worker_whose_counter_stands_still_is_stalled() {
        let t0 = Instant::now();
        let mut l = Liveness::new(ms(1000));
        assert!(l.observe(t0, &[0, 0]).is_empty(), "first look: baseline");
        // Both move.
        assert!(l.observe(t0 + ms(100), &[4, 2]).is_empty());
        // Worker 1 stops at 2: not yet stalled within the stall time …
        assert!(l.observe(t0 + ms(600), &[10, 2]).is_empty());
        assert!(l.observe(t0 + ms(1099), &[16, 2]).is_empty());
        // … stalled from 1 s after its last move (at 100 ms) on.
        assert_eq!(l.observe(t0 + ms(1100), &[20, 2]), vec![1]);
        assert_eq!(l.observe(t0 + ms(5000), &[30, 2]), vec![1]);
        // Moving again (by any amount, even one step into a round) clears it.
        assert!(l.observe(t0 + ms(5100), &[40, 3]).is_empty());
        // Both stuck, worker 0 stuck inside a round (odd value).
        assert_eq!(l.observe(t0 + ms(6100), &[41, 3]), vec![1]);
        assert_eq!(l.observe(t0 + ms(6200), &[41, 3]), vec![1]);
        assert_eq!(l.observe(t0 + ms(7100), &[41, 3]), vec![0, 1]);
    }

    #[test]
    fn no_workers_is_alive_and_a_new_worker_set_starts_afresh() {
        let t0 = Instant::now();
        let mut l = Liveness::new(ms(1000));
        assert!(l.observe(t0, &[]).is_empty());
        assert!(l.observe(t0 + ms(60_000), &[]).is_empty());
        assert!(l.observe(t0 + ms(60_000), &[7]).is_empty());
        assert!(l.observe(t0 + ms(60_999), &[7]).is_empty());
        assert_eq!(l.observe(t0 + ms(61_000), &[7]), vec![0]);
        // A clock that goes nowhere (same instant) never counts as a stall.
        let mut l = Liveness::new(ms(1000));
        assert!(l.observe(t0, &[1]).is_empty());
        assert!(l.observe(t0, &[1]).is_empty());
    }

    #[test]
    fn pings_are_withheld_while_a_worker_is_stalled() {
        // Without NOTIFY_SOCKET nothing is sent; what is checked here is the
        // schedule: a ping is due only while no worker is stalled.
        let t0 = Instant::now();
        let mut n = Notifier {
            ping_every: Some(ms(500)),
            next_ping: t0,
            liveness: Liveness::new(ms(1000)),
            stalled: vec![],
        };
        n.tick(t0, &[0]);
        assert_eq!(n.next_ping, t0 + ms(500), "pinged at once");
        n.tick(t0 + ms(500), &[2]);
        assert_eq!(n.next_ping, t0 + ms(1000));
        // Stuck at 2 since 500 ms: stalled from 1500 ms, no more pings.
        n.tick(t0 + ms(1000), &[2]);
        assert_eq!(n.next_ping, t0 + ms(1500));
        n.tick(t0 + ms(1500), &[2]);
        assert_eq!(n.stalled, vec![0]);
        assert_eq!(n.next_ping, t0 + ms(1500), "withheld");
        n.tick(t0 + ms(4000), &[2]);
        assert_eq!(n.next_ping, t0 + ms(1500), "still withheld");
        n.tick(t0 + ms(4100), &[3]);
        assert!(n.stalled.is_empty());
        assert_eq!(n.next_ping, t0 + ms(4600), "resumed");
    }
}
