//! Overpass: a kernel-bypass AF_XDP overlay gateway.
//!
//! See `docs/design.md` for the architecture. Module map:
//! - [`wire`]: typed views over packet headers (the no-panic contract lives there);
//! - [`pipeline`]: the pure per-packet logic (classify → decap → route → encap → verdict);
//! - [`route`]: the longest-prefix-match table and its atomically published snapshots;
//! - [`io`]: the small I/O trait the worker drives, with an in-memory implementation;
//! - [`xsk`]: AF_XDP sockets over one shared UMEM (the only `unsafe` code);
//! - [`worker`]: the pinned, busy-polling per-queue loop;
//! - [`neigh`]: underlay next-hop MACs from the kernel's neighbour table;
//! - [`config`], [`stats`], [`gateway`] (start/stop of the whole dataplane), [`testbed`];
//! - the control plane: [`api`] (REST API, /metrics, OpenAPI), [`store`] (persisted route
//!   set and VTEP MAC), [`latency`] (per-worker HdrHistograms), [`client`] (the CLI's client).

pub mod config;
pub mod fixtures;
pub mod stats;

pub mod api;
pub mod check;
pub mod client;
pub mod gateway;
pub mod io;
pub mod latency;
pub mod neigh;
pub mod pipeline;
pub mod reload;
pub mod rib;
pub mod route;
pub mod store;
pub mod testbed;
pub mod wire;
pub mod worker;
pub mod xsk;
