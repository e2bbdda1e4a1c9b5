//! Test support for Overpass, kept out of the product:
//! - [`fixtures`]: the packet fixture table (input frame, expected verdict,
//!   output bytes and counters), run against the pipeline, the XDP program
//!   (BPF_PROG_TEST_RUN) and the benchmarks;
//! - [`testbed`]: the Flannel-style network-namespace test bed (remote nodes
//!   with real kernel VXLAN devices, an IP-in-IP node, pods), used by the
//!   integration tests, the benchmark harness and the demo;
//! - [`guest`]: the guest tier, a QEMU guest whose NIC can do AF_XDP
//!   zero-copy (`deploy/guest/run.sh`), linked to a namespace of the test.

pub mod etcd;
pub mod fixtures;
pub mod flannel;
pub mod guest;
pub mod testbed;
