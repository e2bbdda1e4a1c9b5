//! Overpass: a kernel-bypass AF_XDP overlay gateway.
//!
//! See `docs/design.md` for the architecture. The pure packet path (wire
//! views, pipeline, FIB, counters, the `PacketIo` trait) is the
//! `overpass-dataplane` crate; this crate puts it to work:
//! - [`afxdp`]: UMEMs, AF_XDP sockets and the pinned per-queue workers (the
//!   only `unsafe` of the packet path);
//! - [`control`]: the RIB (the FIB's single writer), its store, reload,
//!   route sources, underlay neighbours, the port plan;
//! - [`host`]: network namespaces, interface facts, ethtool, CPU lists;
//! - [`api`]: the REST API, /metrics, the dashboard, and the CLI's client;
//! - [`check`]: the `overpass check` preflight;
//! - [`lifecycle`]: start and stop of the whole gateway;
//! - [`service`]: what systemd is told (readiness, reloads, the watchdog
//!   fed by worker liveness);
//! - [`cluster`]: joining a cluster from its datastore (Flannel's etcd
//!   subnet leases);
//! - [`config`]: the TOML configuration.

pub mod afxdp;
pub mod api;
pub mod check;
pub mod cluster;
pub mod config;
pub mod control;
pub mod host;
pub mod lifecycle;
pub mod service;
