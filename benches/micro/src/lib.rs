//! Micro-benchmark support for Overpass's pure packet path: test frames
//! ([`frames`]) and a route table shaped like the test bed's with prepared
//! frames per pipeline direction ([`micro`]). Used by the criterion benches
//! (`benches/micro.rs`), the callgrind driver (`pipeline-prof`) and the
//! end-to-end harness's in-process measurements. Depends on
//! `overpass-dataplane` alone: nothing here needs a socket or a runtime.

pub mod frames;
pub mod micro;
