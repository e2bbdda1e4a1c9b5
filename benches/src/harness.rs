//! The end-to-end harness: builds one test bed, runs every configuration
//! of every scenario interleaved (round-robin over the configurations, so
//! drift hits all of them alike), and checks after each run that traffic
//! went through the path being measured.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use overpass::config::Config;
use overpass::control::rib::RouteSpec;
use overpass::lifecycle::Gateway;
use overpass_dataplane::counters::{CounterKind, DropReason, Event};
use overpass_dataplane::fib::Encap as PeerEncap;
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_testkit::testbed::{self, Ns, Testbed, TestbedSpec};
use serde::Serialize;

use crate::frames::{Encap, FrameSpec, Outer};
use crate::paths::{self, Bounce, RawForwarder};
use crate::traffic::{self, GenSpec, Generator, Measured, Plan, Sink, SinkSpec};
use crate::{micro, netns};

/// The dataplane core; generator, sink and everything else run on CPU 0.
pub const DATAPLANE_CPU: usize = 1;
pub const TRAFFIC_CPU: usize = 0;

/// What forwards the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Path {
    /// Generator straight into a sink at the gateway's ingress.
    B0,
    /// The kernel's own overlay (VXLAN device + IP forwarding, RPS to CPU 1).
    B1,
    /// Raw AF_XDP forwarding: steering program + rings, no processing.
    B3,
    /// The Overpass gateway.
    Overpass,
    /// The Overpass gateway with preferred NAPI busy polling
    /// (`gateway.napi_busy_poll`, and the gateway interfaces'
    /// `napi_defer_hard_irqs` and `gro_flush_timeout` set, see
    /// [`NAPI_DEFER_HARD_IRQS`]).
    OverpassNapi,
}

/// `napi_defer_hard_irqs` and `gro_flush_timeout` (ns) of the gateway's
/// interfaces while [`Path::OverpassNapi`] runs (0 and 0 otherwise, the
/// kernel's defaults): the values the kernel's busy-polling documentation
/// starts from.
pub const NAPI_DEFER_HARD_IRQS: u32 = 2;
pub const GRO_FLUSH_TIMEOUT_NS: u32 = 200_000;

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::B0 => "B0 gen→sink",
            Path::B1 => "B1 kernel",
            Path::B3 => "B3 raw AF_XDP",
            Path::Overpass => "Overpass",
            Path::OverpassNapi => "Overpass + NAPI busy poll",
        }
    }
}

/// Which way traffic crosses the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Dir {
    /// Remote node n1 → local pod a.
    Decap,
    /// Local pod a → remote node n1.
    Encap,
    /// Remote node n1 → remote node n2.
    Transit,
}

/// Wire format on one side of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Wire {
    Plain,
    Vxlan,
    Ipip,
}

impl Wire {
    fn name(self) -> &'static str {
        match self {
            Wire::Plain => "plain",
            Wire::Vxlan => "VXLAN",
            Wire::Ipip => "IP-in-IP",
        }
    }
    fn peer(self) -> PeerEncap {
        match self {
            Wire::Ipip => PeerEncap::Ipip,
            _ => PeerEncap::Vxlan,
        }
    }
}

/// One configuration of a variant: a path, and for route-scale runs the
/// number of extra routes installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigSpec {
    pub path: Path,
    pub routes: Option<usize>,
}

impl ConfigSpec {
    pub fn label(&self) -> String {
        match self.routes {
            Some(n) => format!("{} ({n} routes)", self.path.label()),
            None => self.path.label().to_string(),
        }
    }
}

/// A scenario variant: traffic shape plus the configurations compared.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub scenario: String,
    pub name: String,
    pub dir: Dir,
    pub wire_in: Wire,
    pub wire_out: Wire,
    /// Inner (pod-side) frame length.
    pub size: usize,
    /// Fixed offered rate; `None` is flat out.
    pub rate_pps: Option<f64>,
    /// Measure the loss-free rate instead of the flat-out one: the highest
    /// offered rate losing at most this share of frames (see
    /// [`traffic::search`]).
    pub search_max_loss: Option<f64>,
    pub configs: Vec<ConfigSpec>,
    /// Configurations that cannot run, with the reason.
    pub not_applicable: Vec<(Path, String)>,
}

/// One run of one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub round: usize,
    pub config: String,
    pub measured: Option<Measured>,
    /// Counters of the path under test (deltas over the run).
    pub evidence: BTreeMap<String, u64>,
    /// Why this run does not count (nothing flowed, flowed elsewhere, ...).
    pub problem: Option<String>,
    /// Seconds spent bringing the path up.
    pub setup_s: f64,
}

/// Harness options.
#[derive(Debug, Clone)]
pub struct Options {
    pub tag: String,
    pub runs: usize,
    pub warmup: Duration,
    pub window: Duration,
    pub tcp_secs: u32,
    /// Scenario filter (`S1`, `S2`, ...); empty = all.
    pub only: Vec<String>,
    pub full: bool,
    pub sizes: Vec<usize>,
    pub route_counts: Vec<usize>,
    pub low_rate_pps: f64,
    /// Skip the in-process micro measurements.
    pub no_micro: bool,
    /// Loss tolerance of the loss-free rate search (S2, S6).
    pub max_loss: f64,
    /// Fixed-rate trials per search after the flat-out one.
    pub search_trials: usize,
    /// Measurement window of each search trial.
    pub search_window: Duration,
}

impl Options {
    pub fn default_set(tag: &str) -> Options {
        Options {
            tag: tag.into(),
            runs: 5,
            warmup: Duration::from_millis(250),
            window: Duration::from_millis(1000),
            tcp_secs: 2,
            only: vec![],
            full: false,
            sizes: vec![64, 1400],
            route_counts: vec![16, 1000, 100_000],
            low_rate_pps: 10_000.0,
            no_micro: false,
            max_loss: 0.001,
            search_trials: 7,
            search_window: Duration::from_millis(250),
        }
    }

    pub fn smoke(tag: &str) -> Options {
        Options {
            runs: 1,
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(300),
            tcp_secs: 1,
            sizes: vec![64],
            route_counts: vec![16, 1000],
            search_trials: 2,
            search_window: Duration::from_millis(100),
            ..Options::default_set(tag)
        }
    }

    pub fn full(tag: &str) -> Options {
        Options {
            runs: 9,
            window: Duration::from_millis(3000),
            warmup: Duration::from_millis(500),
            tcp_secs: 5,
            full: true,
            sizes: vec![64, 512, 1400],
            ..Options::default_set(tag)
        }
    }

    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s.eq_ignore_ascii_case(scenario))
    }
}

/// One TCP run.
#[derive(Debug, Clone, Serialize)]
pub struct TcpRun {
    pub round: usize,
    pub config: String,
    pub reverse: bool,
    pub gbps: Option<f64>,
    pub retransmits: u64,
    pub evidence: BTreeMap<String, u64>,
    pub problem: Option<String>,
}

/// In-process micro measurements (ns per operation, wall clock).
#[derive(Debug, Clone, Serialize)]
pub struct MicroResult {
    pub name: String,
    pub ns: f64,
}

/// Everything one invocation measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub variants: Vec<(Variant, Vec<Run>)>,
    pub tcp: Vec<TcpRun>,
    pub micro: Vec<MicroResult>,
    pub elapsed_s: f64,
}

/// The harness: a test bed and the state shared by all runs.
pub struct Bench {
    pub bed: Testbed,
    pub opts: Options,
    stop: Arc<AtomicBool>,
    ul0_mac: MacAddr,
    node_mac: [MacAddr; 2],
    log: bool,
}

impl std::fmt::Debug for Bench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bench")
            .field("bed", &self.bed)
            .finish_non_exhaustive()
    }
}

fn link_mac(ns: &str, dev: &str) -> anyhow::Result<MacAddr> {
    let out = netns::sh(ns, &format!("cat /sys/class/net/{dev}/address"))?;
    out.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("MAC of {dev} in {ns}: {e:?}"))
}

impl Bench {
    /// Builds the bed (tag `opts.tag`) and pins the calling thread (and so
    /// every helper process) to the traffic CPU.
    pub fn new(opts: Options, stop: Arc<AtomicBool>, log: bool) -> anyhow::Result<Bench> {
        netns::pin_to(TRAFFIC_CPU);
        let bed = Testbed::create(&TestbedSpec {
            tag: opts.tag.clone(),
            underlay_queues: 1,
        })?;
        let gw = bed.ns(Ns::Gateway);
        let ul0_mac = link_mac(&gw, testbed::GATEWAY_UNDERLAY_IF)?;
        let node_mac = [
            link_mac(&bed.ns(Ns::Node(1)), "eth0")?,
            link_mac(&bed.ns(Ns::Node(2)), "eth0")?,
        ];
        // Static FDB entries so the switch never floods a test frame.
        let ul = bed.ns(Ns::Underlay);
        let script = format!(
            "set -e\nbridge fdb replace {ul0_mac} dev sw-gw master static\n\
             bridge fdb replace {} dev sw-n1 master static\nbridge fdb replace {} dev sw-n2 master static\n",
            node_mac[0], node_mac[1]
        );
        netns::sh(&ul, &script)?;
        Ok(Bench {
            bed,
            opts,
            stop,
            ul0_mac,
            node_mac,
            log,
        })
    }

    fn say(&self, msg: &str) {
        if self.log {
            eprintln!("{msg}");
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The variants of the selected scenarios. S5's second load needs the
    /// kernel's maximum, so it is planned after S1 has run (see [`Bench::run_all`]).
    pub fn plan(&self) -> Vec<Variant> {
        let o = &self.opts;
        let mut v = vec![];
        let all = |b1: bool| {
            let mut c = vec![ConfigSpec {
                path: Path::B0,
                routes: None,
            }];
            if b1 {
                c.push(ConfigSpec {
                    path: Path::B1,
                    routes: None,
                });
            }
            c.push(ConfigSpec {
                path: Path::B3,
                routes: None,
            });
            c.push(ConfigSpec {
                path: Path::Overpass,
                routes: None,
            });
            c
        };
        let no_kernel_ipip = vec![(
            Path::B1,
            "n/a: the kernel here has no ipip module, so there is no kernel IP-in-IP path"
                .to_string(),
        )];
        for (scenario, dir) in [("S1", Dir::Decap), ("S2", Dir::Encap)] {
            if !o.wants(scenario) {
                continue;
            }
            for wire in [Wire::Vxlan, Wire::Ipip] {
                for &size in &o.sizes {
                    let (wire_in, wire_out) = match dir {
                        Dir::Decap => (wire, Wire::Plain),
                        _ => (Wire::Plain, wire),
                    };
                    let kernel = wire == Wire::Vxlan;
                    v.push(Variant {
                        scenario: scenario.into(),
                        name: format!(
                            "{scenario} {} {}, {size} B",
                            if dir == Dir::Decap { "decap" } else { "encap" },
                            wire.name()
                        ),
                        dir,
                        wire_in,
                        wire_out,
                        size,
                        rate_pps: None,
                        // Flat out, encapsulation collapses every AF_XDP
                        // path here (receive livelock on the worker's CPU,
                        // see the README): the loss-free rate is measured.
                        search_max_loss: (dir == Dir::Encap).then_some(o.max_loss),
                        configs: {
                            let mut c = all(kernel);
                            // Preferred busy polling against today's mode
                            // on the loss-free encapsulation rate.
                            if dir == Dir::Encap {
                                c.push(ConfigSpec {
                                    path: Path::OverpassNapi,
                                    routes: None,
                                });
                            }
                            c
                        },
                        not_applicable: if kernel {
                            vec![]
                        } else {
                            no_kernel_ipip.clone()
                        },
                    });
                }
            }
        }
        if o.wants("S3") {
            for out in [Wire::Vxlan, Wire::Ipip] {
                let kernel = out == Wire::Vxlan;
                v.push(Variant {
                    scenario: "S3".into(),
                    name: format!("S3 transit VXLAN→{}, 64 B", out.name()),
                    dir: Dir::Transit,
                    wire_in: Wire::Vxlan,
                    wire_out: out,
                    size: 64,
                    rate_pps: None,
                    search_max_loss: None,
                    configs: all(kernel),
                    not_applicable: if kernel {
                        vec![]
                    } else {
                        no_kernel_ipip.clone()
                    },
                });
            }
        }
        if o.wants("S6") {
            let mut configs = vec![ConfigSpec {
                path: Path::B0,
                routes: None,
            }];
            configs.extend(o.route_counts.iter().map(|&n| ConfigSpec {
                path: Path::Overpass,
                routes: Some(n),
            }));
            v.push(Variant {
                scenario: "S6".into(),
                name: "S6 encap VXLAN, 64 B, random destinations over N /24 routes".into(),
                dir: Dir::Encap,
                wire_in: Wire::Plain,
                wire_out: Wire::Vxlan,
                size: 64,
                rate_pps: None,
                search_max_loss: Some(o.max_loss),
                configs,
                not_applicable: vec![],
            });
        }
        v
    }

    fn latency_variant(&self, name: String, rate: f64) -> Variant {
        Variant {
            scenario: "S5".into(),
            name,
            dir: Dir::Decap,
            wire_in: Wire::Vxlan,
            wire_out: Wire::Plain,
            size: 64,
            rate_pps: Some(rate),
            search_max_loss: None,
            configs: vec![
                ConfigSpec {
                    path: Path::B1,
                    routes: None,
                },
                ConfigSpec {
                    path: Path::Overpass,
                    routes: None,
                },
                ConfigSpec {
                    path: Path::OverpassNapi,
                    routes: None,
                },
            ],
            not_applicable: vec![],
        }
    }

    /// Runs everything selected. Returns what was measured so far when
    /// stopped early (Ctrl-C).
    pub fn run_all(&mut self) -> anyhow::Result<Results> {
        let t0 = Instant::now();
        let mut results = Results {
            variants: vec![],
            tcp: vec![],
            micro: vec![],
            elapsed_s: 0.0,
        };
        if !self.opts.no_micro && self.opts.wants("micro") {
            self.say("micro: LPM and pipeline, in process");
            results.micro = run_micro(self.opts.full);
        }
        let plan = self.plan();
        for v in plan {
            if self.stopped() {
                break;
            }
            let runs = self.run_variant(&v)?;
            results.variants.push((v, runs));
        }
        if self.opts.wants("S5") && !self.stopped() {
            let mut lat = vec![self.latency_variant(
                format!(
                    "S5 decap VXLAN 64 B at {:.0} kpps",
                    self.opts.low_rate_pps / 1e3
                ),
                self.opts.low_rate_pps,
            )];
            let kernel_max = results
                .variants
                .iter()
                .find(|(v, _)| v.scenario == "S1" && v.wire_in == Wire::Vxlan && v.size == 64)
                .and_then(|(_, runs)| median(&pps_of(runs, Path::B1.label())));
            match kernel_max {
                Some(k) if k > 0.0 => lat.push(self.latency_variant(
                    format!(
                        "S5 decap VXLAN 64 B at 50 % of the kernel's max ({:.0} kpps)",
                        k / 2e3
                    ),
                    k / 2.0,
                )),
                _ => self
                    .say("S5: no S1 VXLAN 64 B kernel maximum measured; 50 % load point skipped"),
            }
            for v in lat {
                if self.stopped() {
                    break;
                }
                let runs = self.run_variant(&v)?;
                results.variants.push((v, runs));
            }
        }
        if self.opts.wants("S4") && !self.stopped() {
            results.tcp = self.run_tcp()?;
        }
        results.elapsed_s = t0.elapsed().as_secs_f64();
        Ok(results)
    }

    /// Runs `v`'s configurations round-robin, `opts.runs` rounds.
    pub fn run_variant(&mut self, v: &Variant) -> anyhow::Result<Vec<Run>> {
        let mut runs = vec![];
        for round in 0..self.opts.runs {
            for c in &v.configs {
                if self.stopped() {
                    return Ok(runs);
                }
                let r = self.run_one(v, c, round)?;
                let m = r.measured.as_ref();
                self.say(&format!(
                    "{} | {:<28} | round {round}: {:>8.1} kpps rx, {:>8.1} kpps tx, p50 {:>6.1} µs{}",
                    v.name,
                    c.label(),
                    m.map_or(0.0, |m| m.rx_pps / 1e3),
                    m.map_or(0.0, |m| m.tx_pps / 1e3),
                    m.map_or(0.0, |m| m.lat_p50_ns as f64 / 1e3),
                    r.problem.as_deref().map(|p| format!("  PROBLEM: {p}")).unwrap_or_default()
                ));
                runs.push(r);
            }
        }
        Ok(runs)
    }

    fn gen_spec(&self, v: &Variant, routes: Option<usize>) -> GenSpec {
        let bed = &self.bed;
        let vx = Encap::Vxlan {
            vni: testbed::VXLAN_VNI,
            port: testbed::VXLAN_PORT,
            src_port: 50000,
        };
        let from_n1 = |encap: Encap, dst: Ipv4Addr| FrameSpec {
            encap,
            outer: Outer {
                src_mac: self.node_mac[0],
                dst_mac: self.ul0_mac,
                src_ip: bed.node_underlay_ip(1),
                dst_ip: bed.gateway_underlay_ip(),
            },
            inner_src_mac: bed.node_vtep_mac(1),
            inner_dst_mac: testbed::GATEWAY_VTEP_MAC,
            inner_src_ip: bed.remote_pod_ip(1),
            inner_dst_ip: dst,
            inner_frame_len: v.size,
        };
        let wire_encap = |w: Wire| match w {
            Wire::Vxlan => vx,
            Wire::Ipip => Encap::Ipip,
            Wire::Plain => Encap::None,
        };
        match v.dir {
            Dir::Decap => GenSpec {
                netns: bed.ns(Ns::Node(1)),
                ifname: "eth0".into(),
                template: from_n1(wire_encap(v.wire_in), bed.local_pod_ip('a')).build(),
                destinations: None,
            },
            Dir::Transit => GenSpec {
                netns: bed.ns(Ns::Node(1)),
                ifname: "eth0".into(),
                template: from_n1(wire_encap(v.wire_in), bed.remote_pod_ip(2)).build(),
                destinations: None,
            },
            Dir::Encap => {
                let spec = FrameSpec {
                    encap: Encap::None,
                    outer: Outer {
                        src_mac: self.ul0_mac,
                        dst_mac: self.ul0_mac,
                        src_ip: bed.gateway_underlay_ip(),
                        dst_ip: bed.gateway_underlay_ip(),
                    },
                    inner_src_mac: bed.local_pod_mac('a'),
                    inner_dst_mac: host_end_mac(bed),
                    inner_src_ip: bed.local_pod_ip('a'),
                    inner_dst_ip: bed.remote_pod_ip(1),
                    inner_frame_len: v.size,
                };
                GenSpec {
                    netns: bed.ns(Ns::LocalPod('a')),
                    ifname: "eth0".into(),
                    template: spec.build(),
                    destinations: routes.map(|n| micro::hosts_in(&micro::scale_routes(n))),
                }
            }
        }
    }

    fn sink_spec(&self, v: &Variant, path: Path) -> SinkSpec {
        let bed = &self.bed;
        let gw = bed.ns(Ns::Gateway);
        match (path, v.dir) {
            (Path::B0, Dir::Encap) => SinkSpec {
                netns: gw,
                ifname: bed.local_pod_iface('a'),
            },
            (Path::B0, _) => SinkSpec {
                netns: gw,
                ifname: testbed::GATEWAY_UNDERLAY_IF.into(),
            },
            (_, Dir::Decap) => SinkSpec {
                netns: bed.ns(Ns::LocalPod('a')),
                ifname: "eth0".into(),
            },
            (_, Dir::Encap) => SinkSpec {
                netns: bed.ns(Ns::Node(1)),
                ifname: "eth0".into(),
            },
            (_, Dir::Transit) => SinkSpec {
                netns: bed.ns(Ns::Node(2)),
                ifname: "eth0".into(),
            },
        }
    }

    /// The gateway configuration for a variant: the bed's, pinned to the
    /// dataplane CPU, with the peers' encapsulation matching the traffic.
    pub fn gateway_config(&self, v: &Variant) -> Config {
        let mut c = self.bed.gateway_config();
        c.gateway.cores = Some(vec![DATAPLANE_CPU]);
        // As on a gateway with a dedicated core: the worker never sleeps.
        c.gateway.busy_poll = true;
        let (n1, n2) = match v.dir {
            Dir::Decap => (v.wire_in.peer(), PeerEncap::Vxlan),
            Dir::Encap => (v.wire_out.peer(), PeerEncap::Vxlan),
            Dir::Transit => (v.wire_in.peer(), v.wire_out.peer()),
        };
        for p in &mut c.peer {
            match p.name.as_str() {
                "n1" => p.encap = n1,
                "n2" => p.encap = n2,
                _ => {}
            }
        }
        c
    }

    /// Receive work of the gateway's interfaces (underlay, pod veths) runs
    /// on the dataplane CPU, like a NIC queue whose IRQ is affine to its
    /// worker; the sinks' (`eth0` of pods and nodes) on the traffic CPU.
    /// veth polls in NAPI only while an XDP program is attached, so this
    /// runs after every attach: switch NAPI to threaded mode, pin threads.
    fn pin_napi(&self) {
        let bed = &self.bed;
        let gw = format!(
            "for d in {} {} {}; do echo 1 > /sys/class/net/$d/threaded 2>/dev/null; done; true",
            testbed::GATEWAY_UNDERLAY_IF,
            bed.local_pod_iface('a'),
            bed.local_pod_iface('b')
        );
        let _ = netns::sh(&bed.ns(Ns::Gateway), &gw);
        for ns in [
            bed.ns(Ns::LocalPod('a')),
            bed.ns(Ns::Node(1)),
            bed.ns(Ns::Node(2)),
        ] {
            let _ = netns::sh(
                &ns,
                "echo 1 > /sys/class/net/eth0/threaded 2>/dev/null; true",
            );
        }
        netns::pin_threads("napi/ul0-", DATAPLANE_CPU);
        netns::pin_threads("napi/gwp-", DATAPLANE_CPU);
        netns::pin_threads("napi/eth0-", TRAFFIC_CPU);
    }

    /// Sets `napi_defer_hard_irqs` and `gro_flush_timeout` of the gateway's
    /// interfaces (underlay, pod veths).
    fn napi_defer(&self, irqs: u32, timeout_ns: u32) {
        let bed = &self.bed;
        let cmd = format!(
            "for d in {} {} {}; do echo {irqs} > /sys/class/net/$d/napi_defer_hard_irqs; \
             echo {timeout_ns} > /sys/class/net/$d/gro_flush_timeout; done",
            testbed::GATEWAY_UNDERLAY_IF,
            bed.local_pod_iface('a'),
            bed.local_pod_iface('b')
        );
        if let Err(e) = netns::sh(&bed.ns(Ns::Gateway), &cmd) {
            self.say(&format!(
                "setting napi_defer_hard_irqs/gro_flush_timeout: {e:#}"
            ));
        }
    }

    fn link(&self, ns: &str, dev: &str) -> (u64, u64) {
        self.bed.link_stats(ns, dev).unwrap_or((0, 0))
    }

    /// One run of one configuration: bring the path up, send, check the
    /// path's own counters, tear it down.
    pub fn run_one(&mut self, v: &Variant, c: &ConfigSpec, round: usize) -> anyhow::Result<Run> {
        let gw_ns = self.bed.ns(Ns::Gateway);
        let pod_if = self.bed.local_pod_iface('a');
        let t_setup = Instant::now();
        let mut evidence = BTreeMap::new();
        let mut problem = None;
        enum Up {
            None,
            Kernel { fl0: (u64, u64), pod0: (u64, u64) },
            Raw(RawForwarder),
            Gw(Box<Gateway>, overpass_dataplane::counters::Snapshot),
        }
        let up = match c.path {
            Path::B0 => Up::None,
            Path::B1 => {
                paths::kernel_up(&self.bed, DATAPLANE_CPU)?;
                Up::Kernel {
                    fl0: self.link(&gw_ns, "flannel.1"),
                    pod0: self.link(&gw_ns, &pod_if),
                }
            }
            Path::B3 => {
                let bounce = match v.dir {
                    Dir::Decap => Bounce::UnderlayToPod,
                    Dir::Encap => Bounce::PodToUnderlay {
                        dst: self.node_mac[0],
                        src: self.ul0_mac,
                    },
                    Dir::Transit => Bounce::UnderlayToUnderlay {
                        dst: self.node_mac[1],
                        src: self.ul0_mac,
                    },
                };
                Up::Raw(RawForwarder::start(&self.bed, bounce, DATAPLANE_CPU)?)
            }
            Path::Overpass | Path::OverpassNapi => {
                let mut config = self.gateway_config(v);
                // Explicit both ways, whatever the default.
                config.gateway.napi_busy_poll = c.path == Path::OverpassNapi;
                if c.path == Path::OverpassNapi {
                    self.napi_defer(NAPI_DEFER_HARD_IRQS, GRO_FLUSH_TIMEOUT_NS);
                }
                let gw = start_gateway(&config)?;
                if !gw.wait_resolved(Duration::from_secs(5)) {
                    problem = Some("gateway: next hops not resolved after 5 s".to_string());
                }
                if let Some(n) = c.routes {
                    install_scale_routes(&gw, n)?;
                }
                let before = gw.counters();
                Up::Gw(Box::new(gw), before)
            }
        };
        self.pin_napi();
        let setup_s = t_setup.elapsed().as_secs_f64();
        let gen_spec = self.gen_spec(v, c.routes);
        let sink_spec = self.sink_spec(v, c.path);
        let measured = (|| -> anyhow::Result<Measured> {
            let mut sink = Sink::open(&sink_spec)?;
            let mut tx_gen = Generator::open(&gen_spec)?;
            self.pin_napi();
            let plan = Plan {
                rate_pps: v
                    .rate_pps
                    .or(std::env::var("OVP_RATE").ok().and_then(|s| s.parse().ok())),
                warmup: self.opts.warmup,
                window: self.opts.window,
                drain: Duration::from_millis(30),
            };
            Ok(match v.search_max_loss {
                None => traffic::run(&mut tx_gen, &mut sink, &plan, &self.stop),
                Some(max_loss) => {
                    let trial = Plan {
                        warmup: self.opts.warmup.min(Duration::from_millis(100)),
                        window: self.opts.search_window,
                        ..plan
                    };
                    let trials = self.opts.search_trials;
                    traffic::search(&mut tx_gen, &mut sink, &trial, max_loss, trials, &self.stop)
                }
            })
        })();
        let rx = measured.as_ref().map_or(0, |m| m.rx_total);
        let enough = |n: u64| n as f64 >= 0.98 * rx as f64;
        // Evidence from the path itself; then tear it down.
        match up {
            Up::None => {
                if let Ok(m) = &measured {
                    evidence.insert("sink_xdp_steered".into(), m.sink_steered);
                    if m.sink_steered < m.rx_total {
                        problem = Some(
                            "the sink's steering program saw fewer frames than the sink counted"
                                .into(),
                        );
                    }
                }
            }
            Up::Kernel { fl0, pod0 } => {
                let fl1 = self.link(&gw_ns, "flannel.1");
                let pod1 = self.link(&gw_ns, &pod_if);
                paths::kernel_down(&self.bed)?;
                let (frx, ftx) = (fl1.0 - fl0.0, fl1.1 - fl0.1);
                let (prx, ptx) = (pod1.0 - pod0.0, pod1.1 - pod0.1);
                evidence.insert("flannel.1_rx_packets".into(), frx);
                evidence.insert("flannel.1_tx_packets".into(), ftx);
                evidence.insert(format!("{pod_if}_rx_packets"), prx);
                evidence.insert(format!("{pod_if}_tx_packets"), ptx);
                let ok = match v.dir {
                    Dir::Decap => enough(frx) && enough(ptx),
                    Dir::Encap => enough(prx) && enough(ftx),
                    Dir::Transit => enough(frx) && enough(ftx),
                };
                if !ok {
                    problem = Some(
                        "kernel device counters do not account for the received traffic".into(),
                    );
                }
            }
            Up::Raw(raw) => {
                let done = raw.tx_completed();
                let steered = raw.steered();
                raw.stop();
                evidence.insert("b3_tx_completed".into(), done);
                evidence.insert("b3_xdp_steered".into(), steered);
                if !(enough(done) && enough(steered)) {
                    problem =
                        Some("B3 socket counters do not account for the received traffic".into());
                }
            }
            Up::Gw(gw, before) => {
                let after = gw.counters();
                gw.stop();
                if c.path == Path::OverpassNapi {
                    self.napi_defer(0, 0);
                }
                let ev = match v.dir {
                    Dir::Decap => Event::DecapToPod,
                    Dir::Encap => Event::EncapToPeer,
                    Dir::Transit => Event::Transit,
                };
                let fwd = after.since(&before).event_count(ev);
                evidence.insert(format!("gateway_{}", ev.name()), fwd);
                let mut drops: Vec<(u64, &str)> = DropReason::all()
                    .map(|r| (after.since(&before).drop_count(r), r.name()))
                    .filter(|(n, _)| *n > 0)
                    .collect();
                drops.sort_unstable_by(|a, b| b.cmp(a));
                for (n, name) in &drops {
                    evidence.insert(format!("gateway_drop_{name}"), *n);
                }
                if rx == 0 && fwd == 0 && !drops.is_empty() {
                    problem = Some(format!(
                        "not supported by the gateway yet: it dropped every frame ({} × {})",
                        drops[0].0, drops[0].1
                    ));
                } else if !enough(fwd) {
                    problem =
                        Some("gateway counters do not account for the received traffic".into());
                }
            }
        }
        let measured = match measured {
            Ok(m) => {
                if m.rx_total == 0 && problem.is_none() {
                    problem = Some("no probe reached the sink".into());
                }
                Some(m)
            }
            Err(e) => {
                problem = Some(format!("traffic: {e:#}"));
                None
            }
        };
        Ok(Run {
            round,
            config: c.label(),
            measured,
            evidence,
            problem,
            setup_s,
        })
    }

    /// S4: iperf3 from pod a to n1's pod (and back with `--full`), kernel
    /// path and Overpass interleaved.
    pub fn run_tcp(&mut self) -> anyhow::Result<Vec<TcpRun>> {
        let mut out = vec![];
        let dirs: &[bool] = if self.opts.full {
            &[false, true]
        } else {
            &[false]
        };
        let v = self.latency_variant(String::new(), 0.0);
        let gw_ns = self.bed.ns(Ns::Gateway);
        let server = self.bed.ns(Ns::NodePod(1));
        let client = self.bed.ns(Ns::LocalPod('a'));
        let server_ip = self.bed.remote_pod_ip(1);
        for round in 0..self.opts.runs {
            for &reverse in dirs {
                for path in [Path::B1, Path::Overpass] {
                    if self.stopped() {
                        return Ok(out);
                    }
                    let mut evidence = BTreeMap::new();
                    let mut problem = None;
                    let result;
                    match path {
                        Path::B1 => {
                            paths::kernel_up(&self.bed, DATAPLANE_CPU)?;
                            let f0 = self.link(&gw_ns, "flannel.1");
                            result = self.bed.iperf3(
                                &server,
                                server_ip,
                                &client,
                                self.opts.tcp_secs,
                                reverse,
                            );
                            let f1 = self.link(&gw_ns, "flannel.1");
                            paths::kernel_down(&self.bed)?;
                            evidence.insert("flannel.1_rx_packets".into(), f1.0 - f0.0);
                            evidence.insert("flannel.1_tx_packets".into(), f1.1 - f0.1);
                            if f1.0 == f0.0 || f1.1 == f0.1 {
                                problem = Some("TCP did not cross flannel.1 both ways".to_string());
                            }
                        }
                        _ => {
                            let gw = start_gateway(&self.gateway_config(&v))?;
                            gw.wait_resolved(Duration::from_secs(5));
                            let before = gw.counters();
                            result = self.bed.iperf3(
                                &server,
                                server_ip,
                                &client,
                                self.opts.tcp_secs,
                                reverse,
                            );
                            let after = gw.counters();
                            gw.stop();
                            for ev in [Event::EncapToPeer, Event::DecapToPod] {
                                let n = after.since(&before).event_count(ev);
                                evidence.insert(format!("gateway_{}", ev.name()), n);
                                if n == 0 {
                                    problem = Some(format!("gateway counted no {}", ev.name()));
                                }
                            }
                        }
                    }
                    let (gbps, retransmits) = match result {
                        Ok(r) => (Some(r.bits_per_second / 1e9), r.retransmits),
                        Err(e) => {
                            problem = Some(format!("iperf3: {e:#}"));
                            (None, 0)
                        }
                    };
                    self.say(&format!(
                        "S4 TCP{} | {:<14} | round {round}: {:.2} Gbit/s{}",
                        if reverse { " reverse" } else { "" },
                        path.label(),
                        gbps.unwrap_or(0.0),
                        problem
                            .as_deref()
                            .map(|p| format!("  PROBLEM: {p}"))
                            .unwrap_or_default()
                    ));
                    out.push(TcpRun {
                        round,
                        config: path.label().into(),
                        reverse,
                        gbps,
                        retransmits,
                        evidence,
                        problem,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Starts the gateway with this thread's CPU mask widened: the gateway
/// checks its configured cores against the calling thread's affinity.
fn start_gateway(config: &Config) -> anyhow::Result<Gateway> {
    netns::unpin();
    let gw = Gateway::start(config).context("starting the gateway");
    netns::pin_to(TRAFFIC_CPU);
    gw
}

fn host_end_mac(bed: &Testbed) -> MacAddr {
    // The host end of pod a's veth: read it rather than assume the bed's scheme.
    link_mac(&bed.ns(Ns::Gateway), &bed.local_pod_iface('a'))
        .unwrap_or(MacAddr([0x02, 0x0e, 0xf4, 0, 0, 2]))
}

/// Adds `n` /24 routes (11.0.0.0 up) via node n1 to the running gateway's
/// route set, through the RIB as the API does.
fn install_scale_routes(gw: &Gateway, n: usize) -> anyhow::Result<()> {
    let rib = gw.rib();
    let (generation, mut routes) = rib.routes();
    let n1 = routes
        .iter()
        .find_map(|r| r.node.as_ref().filter(|nd| nd.name == "n1").cloned())
        .context("no route via n1 in the gateway's route set")?;
    routes.extend(micro::scale_routes(n).into_iter().map(|prefix| RouteSpec {
        prefix,
        node: Some(n1.clone()),
        pod: None,
    }));
    let want = routes.len();
    rib.replace(routes, Some(generation))
        .map_err(|e| anyhow::anyhow!("installing {n} routes: {e}"))?;
    let have = rib.fib().load().routes.len();
    if have != want {
        bail!("the FIB holds {have} routes after installing {want}");
    }
    Ok(())
}

/// Received packets per second of the valid runs of `config`.
pub fn pps_of(runs: &[Run], config: &str) -> Vec<f64> {
    runs.iter()
        .filter(|r| r.config == config && r.problem.is_none())
        .filter_map(|r| r.measured.as_ref().map(|m| m.rx_pps))
        .collect()
}

/// The median (mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// In-process micro measurements for the goals table: LPM lookups against
/// `prefix-trie` on the same prefixes, and `Pipeline::process` per packet.
pub fn run_micro(full: bool) -> Vec<MicroResult> {
    use overpass_dataplane::counters::Counters;
    use overpass_dataplane::fib::Lpm;
    use overpass_dataplane::pipeline::Pipeline;
    let mut out = vec![];
    let mut sizes = vec![10_000usize, 1_000_000];
    if full {
        sizes.insert(0, 1000);
    }
    for n in sizes {
        let prefixes = micro::random_prefixes(n, 42);
        let addrs = micro::lookups_in(&prefixes, 1 << 16, 7);
        let lpm = Lpm::build(prefixes.iter().enumerate().map(|(i, p)| (*p, i as u32)));
        let mask = addrs.len() as u64 - 1;
        let mut sink = 0u64;
        let ns = micro::time_ns(4_000_000, |i| {
            sink = sink.wrapping_add(u64::from(
                lpm.lookup(addrs[(i & mask) as usize]).unwrap_or(0),
            ));
        });
        out.push(MicroResult {
            name: format!("lpm_overpass_{n}"),
            ns,
        });
        let mut trie: prefix_trie::PrefixMap<ipnet::Ipv4Net, u32> = prefix_trie::PrefixMap::new();
        for (i, p) in prefixes.iter().enumerate() {
            trie.insert(*p, i as u32);
        }
        let nets: Vec<ipnet::Ipv4Net> = addrs
            .iter()
            .map(|a| ipnet::Ipv4Net::new(Ipv4Addr::from(*a), 32).expect("/32"))
            .collect();
        let ns = micro::time_ns(1_000_000, |i| {
            sink = sink.wrapping_add(u64::from(
                trie.get_lpm(&nets[(i & mask) as usize])
                    .map(|(_, v)| *v)
                    .unwrap_or(0),
            ));
        });
        out.push(MicroResult {
            name: format!("lpm_prefix_trie_{n}"),
            ns,
        });
        std::hint::black_box(sink);
    }
    for (name, dir, n2) in [
        (
            "pipeline_decap_vxlan_64",
            micro::Direction::DecapVxlan,
            PeerEncap::Vxlan,
        ),
        (
            "pipeline_decap_ipip_64",
            micro::Direction::DecapIpip,
            PeerEncap::Ipip,
        ),
        (
            "pipeline_encap_vxlan_64",
            micro::Direction::EncapVxlan,
            PeerEncap::Vxlan,
        ),
        (
            "pipeline_encap_ipip_64",
            micro::Direction::EncapIpip,
            PeerEncap::Ipip,
        ),
        (
            "pipeline_transit_vxlan_64",
            micro::Direction::Transit,
            PeerEncap::Vxlan,
        ),
    ] {
        let table = micro::table(n2, 0);
        let counters = Counters::default();
        let mut p = Pipeline::new(0);
        let (port, t) = dir.frame(64);
        let mut buf = vec![0u8; 2048];
        let mut ok = true;
        let ns = micro::time_ns(2_000_000, |_| {
            let v = micro::process(&mut p, &table, &counters, port, &t, &mut buf);
            ok &= matches!(v, overpass_dataplane::io::Verdict::Tx { .. });
        });
        out.push(MicroResult {
            name: if ok {
                name.to_string()
            } else {
                format!("{name}_DROPPED")
            },
            ns,
        });
    }
    out
}
