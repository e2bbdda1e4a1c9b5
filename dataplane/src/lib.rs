//! Overpass's dataplane: the pure packet path, with no I/O of its own.
//!
//! - [`wire`]: typed views over packet headers, every offset and overhead
//!   (the no-panic contract lives there);
//! - [`pipeline`]: the per-packet logic (classify → decap → FIB lookup →
//!   rewrite/encap → verdict), and the owner of every drop it decides;
//! - [`fib`]: the immutable route table, its DIR-16-8-8 LPM and the
//!   atomically published handle the workers read;
//! - [`counters`]: the named drop reasons and events, per-worker counter
//!   blocks;
//! - [`io`]: the [`io::PacketIo`] trait a worker drives (poll, wait, the
//!   kernel's own drop counts), with an in-memory implementation.
//!
//! This crate is the bottom of the dependency graph: it knows nothing of
//! sockets, runtimes or the configuration format, so the fuzz targets and
//! the micro-benchmarks build it alone.

pub mod counters;
pub mod fib;
pub mod io;
pub mod pipeline;
pub mod wire;
