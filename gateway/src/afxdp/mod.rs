//! The AF_XDP layer: UMEMs and sockets ([`xsk`], the only `unsafe` of the
//! packet path), the pinned per-queue [`worker`] loop that drives the
//! dataplane pipeline over them, and the workers' [`latency`] recorders.

pub mod latency;
pub mod worker;
pub mod xsk;
