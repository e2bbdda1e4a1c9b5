//! What one route change costs as the route set grows: the time to
//! validate a set and build its FIB, and the memory the set and its FIB
//! hold. Every route change rebuilds the whole FIB (validation, counter
//! slots, the route table and its DIR-16-8-8 trie), so these numbers are
//! what `gateway.max_routes` bounds. Run by `fib-scale`
//! (`cargo run --release -p overpass-benches --bin fib-scale`), which
//! measures each (size, shape) in a process of its own so that resident
//! memory figures belong to that size alone.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Instant;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use overpass::control::rib::{
    DEFAULT_MAX_ROUTES, NodeSpec, PeerSlots, Rib, RibContext, RouteSpec, build_fib,
};
use overpass::control::store::Store;
use overpass_dataplane::fib::Encap;
use overpass_dataplane::wire::ethernet::MacAddr;

/// Distinct nodes the routes are spread over (the gateway has 1024
/// per-node counter slots).
pub const NODES: u32 = 1000;

/// How the prefixes of a measured set look. The trie's memory depends on
/// it: a /24 fills entries of a level-2 chunk (one per /16 used), a /26 or
/// a /32 needs a level-3 chunk (1 KiB) per /24 it falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shape {
    /// /24s from 11.0.0.0 up, 256 per /16: Flannel podCIDRs.
    P24,
    /// /26s from 11.0.0.0 up, four per /24: Calico IPAM blocks.
    P26,
    /// /32s, one per /24 from 11.0.0.0 up: the trie's worst case (one
    /// level-3 chunk per route).
    P32,
}

impl Shape {
    pub const ALL: [Shape; 3] = [Shape::P24, Shape::P26, Shape::P32];

    pub fn name(self) -> &'static str {
        match self {
            Shape::P24 => "/24",
            Shape::P26 => "/26",
            Shape::P32 => "/32",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Shape::P24 => "/24s, 256 per /16 (Flannel podCIDRs)",
            Shape::P26 => "/26s, 4 per /24 (Calico IPAM blocks)",
            Shape::P32 => "/32s, 1 per /24 (the trie's worst case)",
        }
    }

    pub fn parse(s: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|x| x.name() == s)
    }

    /// The `i`-th prefix of this shape.
    pub fn prefix(self, i: usize) -> Ipv4Net {
        let i = i as u32;
        let (addr, len) = match self {
            Shape::P24 => (0x0b00_0000 + (i << 8), 24),
            Shape::P26 => (0x0b00_0000 + (i << 6), 26),
            Shape::P32 => (0x0b00_0000 + (i << 8) + 1, 32),
        };
        Ipv4Net::new(Ipv4Addr::from(addr), len).expect("valid prefix length")
    }
}

fn node(j: u32) -> NodeSpec {
    NodeSpec {
        name: format!("node-{j}"),
        underlay_ip: Ipv4Addr::new(198, 19, (j / 250) as u8, (j % 250 + 1) as u8),
        encap: Encap::Vxlan,
        vni: 1,
        port: 8472,
        vtep_mac: Some(MacAddr([0x02, 0, 0, 0, (j >> 8) as u8, j as u8])),
        mtu: None,
    }
}

/// `n` node routes of `shape`, spread round-robin over [`NODES`] nodes.
pub fn route_set(shape: Shape, n: usize) -> Vec<RouteSpec> {
    let nodes: Vec<NodeSpec> = (0..NODES).map(node).collect();
    (0..n)
        .map(|i| RouteSpec {
            prefix: shape.prefix(i),
            node: Some(nodes[i % NODES as usize].clone()),
            pod: None,
        })
        .collect()
}

/// Bytes a route set holds in the RIB (the vector and every name).
#[allow(clippy::ptr_arg)] // the vector's capacity counts
pub fn rib_set_bytes(routes: &Vec<RouteSpec>) -> usize {
    routes.capacity() * std::mem::size_of::<RouteSpec>()
        + routes
            .iter()
            .map(|r| {
                r.node.as_ref().map_or(0, |n| n.name.capacity())
                    + r.pod
                        .as_ref()
                        .map_or(0, |p| p.name.capacity() + p.interface.capacity())
            })
            .sum::<usize>()
}

/// One (size, shape) measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub shape: Shape,
    pub routes: usize,
    /// `build_fib` over the whole set: validation, counter slots, the
    /// route table and its trie (ms, one per run).
    pub build_ms: Vec<f64>,
    /// `Rib::change` adding one route to a RIB holding the set: the copy
    /// of the set, `build_fib`, publication, the old table dropped; no
    /// store, no workers to wait for (ms, one per run).
    pub change_ms: Vec<f64>,
    /// `Store::save_routes` of the set (JSON, fsync, rename, fsync of the
    /// directory; ms, one per run); empty when not measured.
    pub persist_ms: Vec<f64>,
    pub persist_bytes: u64,
    /// `RouteTable::lpm_bytes`.
    pub lpm_bytes: usize,
    /// `RouteTable::memory_bytes` (trie and vectors).
    pub table_bytes: usize,
    /// The RIB's copy of the set ([`rib_set_bytes`]).
    pub rib_set_bytes: usize,
    /// Resident memory a process gains holding the set in force (the RIB's
    /// set and the published table), bytes.
    pub rss_in_force: Option<u64>,
    /// Peak resident memory above the process's start during one change
    /// (old and new set and table alive together), bytes.
    pub rss_change_peak: Option<u64>,
}

fn status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// The RIB context the sets are validated in: the test fixtures' small
/// world, with no route limit.
pub fn context() -> RibContext {
    let mut ctx = overpass_testkit::fixtures::small_context();
    ctx.max_routes = usize::MAX;
    ctx
}

/// Measures one (size, shape) in this process: `runs` timed runs of each
/// step; persisting into `persist_dir` when given.
pub fn measure(
    shape: Shape,
    n: usize,
    runs: usize,
    persist_dir: Option<&std::path::Path>,
) -> anyhow::Result<Sample> {
    let ctx = context();
    let rss0 = status_kib("VmRSS:");
    let rib = Rib::new(ctx.clone(), route_set(shape, n), 1)
        .map_err(|e| anyhow::anyhow!("{n} {} routes: {e}", shape.name()))?;
    let rss_in_force = status_kib("VmRSS:")
        .zip(rss0)
        .map(|(a, b)| a.saturating_sub(b) * 1024);
    let (lpm_bytes, table_bytes) = {
        let t = rib.fib().load();
        anyhow::ensure!(
            t.routes.len() == n,
            "the FIB holds {} routes",
            t.routes.len()
        );
        (t.lpm_bytes(), t.memory_bytes())
    };
    // Peak RSS from here on: "5" resets VmHWM to the current RSS.
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let extra = |k: usize| RouteSpec {
        prefix: Ipv4Net::new(Ipv4Addr::new(9, (k >> 8) as u8, k as u8, 0), 24).expect("valid /24"),
        node: Some(node(0)),
        pod: None,
    };
    let mut change_ms = vec![];
    for k in 0..runs {
        let t = Instant::now();
        rib.change(None, |r| {
            r.push(extra(k));
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("change: {e}"))?;
        change_ms.push(ms(t));
    }
    let rss_change_peak = status_kib("VmHWM:")
        .zip(rss0)
        .filter(|_| peak_reset)
        .map(|(a, b)| a.saturating_sub(b) * 1024);
    let (_, routes) = rib.routes();
    drop(rib);
    let mut build_ms = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        let table = build_fib(&ctx, &routes, &HashMap::new(), &mut PeerSlots::default(), 2)
            .map_err(|e| anyhow::anyhow!("build_fib: {e}"))?;
        build_ms.push(ms(t));
        anyhow::ensure!(table.routes.len() == routes.len());
    }
    let mut persist_ms = vec![];
    let mut persist_bytes = 0;
    if let Some(dir) = persist_dir {
        let store = Store::open(dir)?;
        for g in 0..runs {
            let t = Instant::now();
            store.save_routes(g as u64 + 1, &routes)?;
            persist_ms.push(ms(t));
        }
        persist_bytes = std::fs::metadata(dir.join("routes.json"))?.len();
    }
    Ok(Sample {
        shape,
        routes: n,
        build_ms,
        change_ms,
        persist_ms,
        persist_bytes,
        lpm_bytes,
        table_bytes,
        rib_set_bytes: rib_set_bytes(&routes),
        rss_in_force,
        rss_change_peak,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn times(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let (min, max) = (
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
    );
    let f = |x: f64| {
        if x >= 100.0 {
            format!("{x:.0}")
        } else if x >= 10.0 {
            format!("{x:.1}")
        } else {
            format!("{x:.2}")
        }
    };
    format!("{} [{}–{}]", f(median(v)), f(min), f(max))
}

/// Bytes in MiB (KiB below 1 MiB).
pub fn size(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", b as f64 / 1024.0)
    }
}

/// The markdown table of `samples`, under `header`.
pub fn markdown(header: &str, samples: &[Sample]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# FIB rebuild cost by route set size\n\n{header}\n");
    let _ = writeln!(
        o,
        "| routes | prefixes | build_fib ms | change ms | persist ms (routes.json) | LPM trie | FIB table | RIB set | RSS in force | RSS peak of a change |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
    for s in samples {
        let opt = |v: Option<u64>| v.map_or("n/a".into(), size);
        let persist = if s.persist_ms.is_empty() {
            "–".to_string()
        } else {
            format!("{} ({})", times(&s.persist_ms), size(s.persist_bytes))
        };
        let routes = if s.routes == DEFAULT_MAX_ROUTES {
            format!("{} (default limit)", s.routes)
        } else {
            s.routes.to_string()
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            routes,
            s.shape.name(),
            times(&s.build_ms),
            times(&s.change_ms),
            persist,
            size(s.lpm_bytes as u64),
            size(s.table_bytes as u64),
            size(s.rib_set_bytes as u64),
            opt(s.rss_in_force),
            opt(s.rss_change_peak),
        );
    }
    let _ = writeln!(
        o,
        "\nColumns: **build_fib**: validating the whole set and building its FIB (counter slots, route \
         table, DIR-16-8-8 trie), what every route change runs. **change**: `Rib::change` adding one \
         route to a RIB holding the set (copy of the set, build_fib, publication, old table dropped; \
         no store, no workers to wait for). **persist**: `Store::save_routes` of the set (JSON, fsync, \
         rename, fsync of the directory), which a gateway with a `[state]` dir adds to every change. \
         **LPM trie**: `RouteTable::lpm_bytes`; **FIB table**: `RouteTable::memory_bytes` (trie and \
         vectors); **RIB set**: the RIB's `Vec<RouteSpec>` and its names. **RSS in force**: resident \
         memory a process gains holding the set (RIB set, FIB table); **RSS peak of a change**: the \
         peak above the process's start while changes run (old and new set and table alive together). \
         Times: median [min–max] of the runs. Routes go to {NODES} nodes round-robin. \
         \"default limit\": the default `gateway.max_routes`."
    );
    let _ = writeln!(o, "\nPrefix shapes:");
    for shape in Shape::ALL {
        let _ = writeln!(o, "- `{}`: {}", shape.name(), shape.describe());
    }
    o
}
