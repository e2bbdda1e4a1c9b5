//! Overpass benchmarks: the AF_XDP traffic generator and sink, and the end-to-end harness that
//! compares Overpass with the kernel's overlay (B1), raw AF_XDP forwarding
//! (B3) and the generator's own ceiling (B0) on one test bed.
//!
//! Run: `cargo run --release -p overpass-benches --bin overpass-bench`
//! (root; see the README in this directory). The micro-benchmarks of the
//! pure packet path are their own crate, `overpass-micro` (`micro/`), which
//! depends on the dataplane crate alone; the harness reuses its frames.
//! `fib-scale` measures what a route change costs by route set size
//! ([`fib_scale`]; no root needed).

pub use overpass_micro::{frames, micro};

pub mod fib_scale;
pub mod harness;
pub mod netns;
pub mod paths;
pub mod report;
pub mod traffic;
