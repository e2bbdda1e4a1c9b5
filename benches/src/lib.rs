//! Overpass benchmarks: criterion micro-benchmarks (`benches/`), the
//! AF_XDP traffic generator and sink, and the end-to-end harness that
//! compares Overpass with the kernel's overlay (B1), raw AF_XDP forwarding
//! (B3) and the generator's own ceiling (B0) on one test bed.
//!
//! Run: `cargo run --release -p overpass-benches --bin overpass-bench`
//! (root; see the README in this directory).

pub mod frames;
pub mod harness;
pub mod micro;
pub mod netns;
pub mod paths;
pub mod report;
pub mod traffic;
