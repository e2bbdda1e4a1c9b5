//! Turning [`Results`] into the JSON file and the markdown table. Every
//! number in the markdown comes from the measurements; nothing is typed.

use std::fmt::Write as _;

use serde::Serialize;

use crate::harness::{Path, Results, Run, TcpRun, Variant, median, pps_of};

/// Where and on what the results were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub date_utc: String,
    pub command: String,
    pub runs: usize,
    pub window_s: f64,
    pub warmup_s: f64,
    pub elapsed_s: f64,
    /// Fixed-rate trials per loss-free rate search, and their window.
    pub search_trials: usize,
    pub search_window_s: f64,
}

impl Meta {
    pub fn collect(
        command: String,
        runs: usize,
        window_s: f64,
        warmup_s: f64,
        elapsed_s: f64,
    ) -> Meta {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let date_utc = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Meta {
            kernel,
            cpu_model,
            cpus,
            date_utc,
            command,
            runs,
            window_s,
            warmup_s,
            elapsed_s,
            search_trials: 0,
            search_window_s: 0.0,
        }
    }
}

/// Median and range of a set of runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(xs: &[f64]) -> Option<Summary> {
        Some(Summary {
            median: median(xs)?,
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            n: xs.len(),
        })
    }
}

/// One configuration's outcome in a variant.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigOutcome {
    pub config: String,
    pub pps: Option<Summary>,
    pub lat_p50_us: Option<Summary>,
    pub lat_p99_us: Option<Summary>,
    pub lat_p999_us: Option<Summary>,
    pub loss_pct: Option<Summary>,
    pub reordered: u64,
    /// Above 0.8 × B0's median: the generator may be the limit.
    pub generator_bound: bool,
    /// Problems of runs that did not count.
    pub problems: Vec<String>,
}

/// A ratio computed round by round within the run.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub variant: String,
    pub what: String,
    pub ratio: Summary,
    pub numerator_generator_bound: bool,
}

/// A PERF.md goal and what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub target: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub outcomes: Vec<(String, Vec<ConfigOutcome>)>,
    pub ratios: Vec<Ratio>,
    pub tcp: Vec<(String, Option<Summary>)>,
    pub goals: Vec<Goal>,
    pub raw: Results,
}

fn per_run<'a>(runs: &'a [Run], config: &'a str) -> impl Iterator<Item = &'a Run> + 'a {
    runs.iter().filter(move |r| r.config == config)
}

fn outcome(v: &Variant, runs: &[Run], label: &str, b0: Option<f64>) -> ConfigOutcome {
    let valid: Vec<&Run> = per_run(runs, label)
        .filter(|r| r.problem.is_none())
        .collect();
    let ms: Vec<_> = valid.iter().filter_map(|r| r.measured.as_ref()).collect();
    let pps = Summary::of(&ms.iter().map(|m| m.rx_pps).collect::<Vec<_>>());
    let us = |f: &dyn Fn(&crate::traffic::Measured) -> u64| {
        Summary::of(&ms.iter().map(|m| f(m) as f64 / 1e3).collect::<Vec<_>>())
    };
    let loss = Summary::of(
        &ms.iter()
            .map(|m| {
                if m.tx_total == 0 {
                    0.0
                } else {
                    100.0 * m.lost as f64 / m.tx_total as f64
                }
            })
            .collect::<Vec<_>>(),
    );
    let mut problems: Vec<String> = per_run(runs, label)
        .filter_map(|r| r.problem.clone())
        .collect();
    problems.dedup();
    ConfigOutcome {
        config: label.to_string(),
        generator_bound: v.rate_pps.is_none()
            && !label.starts_with("B0")
            && matches!((pps, b0), (Some(p), Some(b)) if p.median > 0.8 * b),
        pps,
        lat_p50_us: us(&|m| m.lat_p50_ns),
        lat_p99_us: us(&|m| m.lat_p99_ns),
        lat_p999_us: us(&|m| m.lat_p999_ns),
        loss_pct: loss,
        reordered: ms.iter().map(|m| m.reordered).sum(),
        problems,
    }
}

/// Per-round ratio of two configurations' received rates.
fn ratio(runs: &[Run], num: &str, den: &str) -> Option<Summary> {
    let rounds = runs.iter().map(|r| r.round).max()? + 1;
    let xs: Vec<f64> = (0..rounds)
        .filter_map(|round| {
            let get = |c: &str| {
                runs.iter()
                    .find(|r| r.round == round && r.config == c && r.problem.is_none())
                    .and_then(|r| r.measured.as_ref())
                    .map(|m| m.rx_pps)
            };
            match (get(num), get(den)) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            }
        })
        .collect();
    Summary::of(&xs)
}

fn tcp_ratio(tcp: &[TcpRun], reverse: bool) -> Option<Summary> {
    let rounds = tcp.iter().map(|r| r.round).max()? + 1;
    let xs: Vec<f64> = (0..rounds)
        .filter_map(|round| {
            let get = |p: Path| {
                tcp.iter()
                    .find(|r| {
                        r.round == round
                            && r.reverse == reverse
                            && r.config == p.label()
                            && r.problem.is_none()
                    })
                    .and_then(|r| r.gbps)
            };
            match (get(Path::Overpass), get(Path::B1)) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            }
        })
        .collect();
    Summary::of(&xs)
}

impl Report {
    /// The outcomes of the variant named `name` (every variant has them).
    fn outcomes_of(&self, name: &str) -> &[ConfigOutcome] {
        &self
            .outcomes
            .iter()
            .find(|(n, _)| n == name)
            .expect("an outcome per variant")
            .1
    }
}

pub fn build(meta: Meta, raw: Results) -> Report {
    let mut outcomes = vec![];
    let mut ratios = vec![];
    let b0l = Path::B0.label();
    let b1l = Path::B1.label();
    let b3l = Path::B3.label();
    let ovl = Path::Overpass.label();
    for (v, runs) in &raw.variants {
        let b0 = median(&pps_of(runs, b0l));
        let mut list = vec![];
        for c in &v.configs {
            list.push(outcome(v, runs, &c.label(), b0));
        }
        let gb = |label: &str| {
            list.iter()
                .any(|o: &ConfigOutcome| o.config == label && o.generator_bound)
        };
        if v.rate_pps.is_none() {
            let napi = Path::OverpassNapi.label();
            for (num, den) in [(ovl, b1l), (ovl, b3l), (b3l, b1l), (ovl, b0l), (napi, ovl)] {
                if let Some(r) = ratio(runs, num, den) {
                    ratios.push(Ratio {
                        variant: v.name.clone(),
                        what: format!("{num} / {den}"),
                        ratio: r,
                        numerator_generator_bound: gb(num),
                    });
                }
            }
            if v.scenario == "S6" {
                let labels: Vec<String> = v
                    .configs
                    .iter()
                    .filter(|c| c.routes.is_some())
                    .map(|c| c.label())
                    .collect();
                if let (Some(first), Some(last)) = (labels.first(), labels.last())
                    && first != last
                    && let Some(r) = ratio(runs, last, first)
                {
                    ratios.push(Ratio {
                        variant: v.name.clone(),
                        what: format!("{last} / {first}"),
                        ratio: r,
                        numerator_generator_bound: gb(last),
                    });
                }
            }
        }
        outcomes.push((v.name.clone(), list));
    }
    let mut tcp = vec![];
    for reverse in [false, true] {
        for p in [Path::B1, Path::Overpass] {
            let xs: Vec<f64> = raw
                .tcp
                .iter()
                .filter(|r| r.reverse == reverse && r.config == p.label() && r.problem.is_none())
                .filter_map(|r| r.gbps)
                .collect();
            if !xs.is_empty() {
                tcp.push((
                    format!("{}{}", p.label(), if reverse { " (reverse)" } else { "" }),
                    Summary::of(&xs),
                ));
            }
        }
    }
    let goals = goals(&raw, &outcomes, &ratios);
    Report {
        meta,
        outcomes,
        ratios,
        tcp,
        goals,
        raw,
    }
}

fn find_ratio<'a>(ratios: &'a [Ratio], variant_prefix: &str, what: &str) -> Option<&'a Ratio> {
    ratios
        .iter()
        .find(|r| r.variant.starts_with(variant_prefix) && r.what == what)
}

fn fmt_ratio(r: &Ratio) -> String {
    format!(
        "{}{:.2} [{:.2}–{:.2}]",
        if r.numerator_generator_bound {
            "≥"
        } else {
            ""
        },
        r.ratio.median,
        r.ratio.min,
        r.ratio.max
    )
}

fn goals(raw: &Results, outcomes: &[(String, Vec<ConfigOutcome>)], ratios: &[Ratio]) -> Vec<Goal> {
    let ovl = Path::Overpass.label();
    let b1 = Path::B1.label();
    let b3 = Path::B3.label();
    let mut g = vec![];
    let mut ratio_goal = |goal: &str, variant: &str, what: String, target: f64| {
        let r = find_ratio(ratios, variant, &what);
        g.push(Goal {
            goal: format!("{goal}: {what}"),
            target: format!("≥ {target}"),
            measured: r.map(fmt_ratio).unwrap_or_else(|| "not measured".into()),
            met: r.map(|r| r.ratio.median >= target),
        });
    };
    for (s, name) in [
        ("S1 decap VXLAN, 64 B", "S1 VXLAN 64 B"),
        ("S2 encap VXLAN, 64 B", "S2 VXLAN 64 B"),
    ] {
        ratio_goal(name, s, format!("{ovl} / {b1}"), 1.5);
        ratio_goal(name, s, format!("{ovl} / {b3}"), 0.9);
    }
    for (s, name) in [
        ("S1 decap IP-in-IP, 64 B", "S1 IP-in-IP 64 B"),
        ("S2 encap IP-in-IP, 64 B", "S2 IP-in-IP 64 B"),
    ] {
        ratio_goal(name, s, format!("{ovl} / {b3}"), 0.9);
    }
    ratio_goal(
        "S3 transit",
        "S3 transit VXLAN→VXLAN",
        format!("{ovl} / {b1}"),
        2.0,
    );
    // S4
    let r = tcp_ratio(&raw.tcp, false);
    g.push(Goal {
        goal: "S4 TCP pod→remote pod: Overpass / kernel".into(),
        target: "≥ 1.0".into(),
        measured: r
            .map(|r| format!("{:.2} [{:.2}–{:.2}]", r.median, r.min, r.max))
            .unwrap_or_else(|| "not measured".into()),
        met: r.map(|r| r.median >= 1.0),
    });
    // S5
    for (name, list) in outcomes.iter().filter(|(n, _)| n.starts_with("S5")) {
        let get = |l: &str| list.iter().find(|o| o.config == l);
        if let (Some(k), Some(o)) = (get(b1), get(ovl)) {
            for (q, ko, oo) in [
                ("p50", k.lat_p50_us, o.lat_p50_us),
                ("p99", k.lat_p99_us, o.lat_p99_us),
            ] {
                g.push(Goal {
                    goal: format!("{name}: {q} latency"),
                    target: "≤ kernel's".into(),
                    measured: match (oo, ko) {
                        (Some(a), Some(b)) => {
                            format!("{:.1} µs vs kernel {:.1} µs", a.median, b.median)
                        }
                        _ => "not measured".into(),
                    },
                    met: match (oo, ko) {
                        (Some(a), Some(b)) => Some(a.median <= b.median),
                        _ => None,
                    },
                });
            }
        }
    }
    // S6
    if let Some(r) = ratios
        .iter()
        .find(|r| r.variant.starts_with("S6") && r.what.contains("routes) /"))
    {
        g.push(Goal {
            goal: format!("S6 route scale: {}", r.what),
            target: "≥ 0.9".into(),
            measured: fmt_ratio(r),
            met: Some(r.ratio.median >= 0.9),
        });
    }
    // Micro
    let m = |n: &str| raw.micro.iter().find(|x| x.name == n).map(|x| x.ns);
    for n in [10_000, 1_000_000] {
        if let (Some(a), Some(b)) = (
            m(&format!("lpm_overpass_{n}")),
            m(&format!("lpm_prefix_trie_{n}")),
        ) {
            g.push(Goal {
                goal: format!("LPM lookup, {n} random prefixes, random hits"),
                target: if n == 10_000 {
                    "≤ 30 ns and faster than prefix-trie"
                } else {
                    "faster than prefix-trie"
                }
                .into(),
                measured: format!("{a:.1} ns vs prefix-trie {b:.1} ns"),
                met: Some(a < b && (n != 10_000 || a <= 30.0)),
            });
        }
    }
    let pipe: Vec<&crate::harness::MicroResult> = raw
        .micro
        .iter()
        .filter(|x| x.name.starts_with("pipeline_"))
        .collect();
    if !pipe.is_empty() {
        let worst = pipe.iter().map(|x| x.ns).fold(0.0, f64::max);
        g.push(Goal {
            goal: "gateway-internal processing per packet (Pipeline::process, 64 B, hot cache)"
                .into(),
            target: "p50 ≤ 100 ns".into(),
            measured: pipe
                .iter()
                .map(|x| format!("{} {:.0} ns", x.name.trim_start_matches("pipeline_"), x.ns))
                .collect::<Vec<_>>()
                .join(", "),
            met: Some(worst <= 100.0),
        });
    }
    g
}

fn cell(o: &ConfigOutcome) -> String {
    match o.pps {
        Some(s) => format!(
            "{}{:.0} [{:.0}–{:.0}]",
            if o.generator_bound { "≥" } else { "" },
            s.median / 1e3,
            s.min / 1e3,
            s.max / 1e3
        ),
        None => match o.problems.first() {
            Some(p) => format!("✗ {p}"),
            None => "–".into(),
        },
    }
}

/// The markdown report.
pub fn markdown(r: &Report) -> String {
    let m = &r.meta;
    let mut s = String::new();
    let _ = writeln!(s, "# Overpass benchmark results\n");
    let _ = writeln!(
        s,
        "Generated by `{}` on {} in {:.0} s. Kernel `{}`, CPU {} ({} CPUs). Every NIC is a veth between \
         network namespaces; AF_XDP runs in copy mode. Dataplane (Overpass worker, B3 loop, kernel RPS) on \
         CPU 1; generator, sink and helpers on CPU 0. Each configuration ran {} times, interleaved \
         round-robin; warm-up {:.2} s, measurement window {:.2} s. Cells: median [min–max]; \
         \"≥\" marks a median above 0.8 × B0 (generator-bound); ratios are taken round by round within the run.\n",
        m.command,
        m.date_utc,
        m.elapsed_s,
        m.kernel,
        m.cpu_model,
        m.cpus,
        m.runs,
        m.warmup_s,
        m.window_s
    );
    let variants: Vec<&(Variant, Vec<Run>)> = r.raw.variants.iter().collect();
    let tput: Vec<_> = variants
        .iter()
        .filter(|(v, _)| v.rate_pps.is_none() && v.scenario != "S6")
        .collect();
    if !tput.is_empty() {
        let _ = writeln!(
            s,
            "## Throughput, kpps received at the sink (S1 decap, S2 encap, S3 transit)\n"
        );
        let _ = writeln!(
            s,
            "| scenario | B0 gen→sink | B1 kernel | B3 raw AF_XDP | Overpass | Overpass/B1 | Overpass/B3 |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for (v, _) in tput {
            let list = r.outcomes_of(&v.name);
            let col = |p: Path| {
                if let Some(o) = list.iter().find(|o| o.config == p.label()) {
                    cell(o)
                } else if let Some((_, why)) = v.not_applicable.iter().find(|(q, _)| *q == p) {
                    why.clone()
                } else {
                    "–".into()
                }
            };
            let rat = |den: Path| {
                find_ratio(
                    &r.ratios,
                    &v.name,
                    &format!("{} / {}", Path::Overpass.label(), den.label()),
                )
                .map(fmt_ratio)
                .unwrap_or_else(|| "–".into())
            };
            let mark = if v.search_max_loss.is_some() {
                " ‡"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "| {}{mark} | {} | {} | {} | {} | {} | {} |",
                v.name,
                col(Path::B0),
                col(Path::B1),
                col(Path::B3),
                col(Path::Overpass),
                rat(Path::B1),
                rat(Path::B3)
            );
        }
        if let Some(max_loss) = r.raw.variants.iter().find_map(|(v, _)| v.search_max_loss) {
            let _ = writeln!(s, "\n{}", search_note(max_loss, &r.meta));
        }
        s.push('\n');
    }
    let napi = Path::OverpassNapi.label();
    let busy: Vec<_> = variants
        .iter()
        .filter(|(v, _)| {
            v.rate_pps.is_none() && v.configs.iter().any(|c| c.path == Path::OverpassNapi)
        })
        .collect();
    if !busy.is_empty() {
        let _ = writeln!(
            s,
            "## Preferred NAPI busy polling (`gateway.napi_busy_poll`), loss-free rate, kpps\n"
        );
        let _ = writeln!(
            s,
            "Today's mode against the same gateway with `SO_PREFER_BUSY_POLL` on its sockets (the worker \
             drives their NAPI contexts each round) and `napi_defer_hard_irqs` = {} and \
             `gro_flush_timeout` = {} ns on its interfaces; the two interleaved in the same run.\n",
            crate::harness::NAPI_DEFER_HARD_IRQS,
            crate::harness::GRO_FLUSH_TIMEOUT_NS
        );
        let _ = writeln!(s, "| scenario | Overpass | {napi} | {napi} / Overpass |");
        let _ = writeln!(s, "|---|---|---|---|");
        for (v, _) in busy {
            let list = r.outcomes_of(&v.name);
            let col = |label: &str| {
                list.iter()
                    .find(|o| o.config == label)
                    .map(cell)
                    .unwrap_or_else(|| "–".into())
            };
            let rat = find_ratio(
                &r.ratios,
                &v.name,
                &format!("{napi} / {}", Path::Overpass.label()),
            )
            .map(fmt_ratio)
            .unwrap_or_else(|| "–".into());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {rat} |",
                v.name,
                col(Path::Overpass.label()),
                col(napi)
            );
        }
        s.push('\n');
    }
    if !r.tcp.is_empty() {
        let _ = writeln!(s, "## S4 TCP, iperf3 pod a → n1's pod (Gbit/s)\n");
        let _ = writeln!(s, "| path | Gbit/s |");
        let _ = writeln!(s, "|---|---|");
        for (name, sum) in &r.tcp {
            if let Some(x) = sum {
                let _ = writeln!(
                    s,
                    "| {name} | {:.2} [{:.2}–{:.2}] |",
                    x.median, x.min, x.max
                );
            }
        }
        s.push('\n');
    }
    let lat: Vec<_> = variants
        .iter()
        .filter(|(v, _)| v.scenario == "S5")
        .collect();
    if !lat.is_empty() {
        let _ = writeln!(s, "## S5 one-way latency, generator → sink (µs)\n");
        let _ = writeln!(
            s,
            "| load | path | received kpps | p50 | p99 | p99.9 | loss % |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        for (v, _) in lat {
            let list = r.outcomes_of(&v.name);
            for o in list {
                let q = |x: Option<Summary>| {
                    x.map(|x| format!("{:.1} [{:.1}–{:.1}]", x.median, x.min, x.max))
                        .unwrap_or("–".into())
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    v.name.trim_start_matches("S5 decap VXLAN 64 B at "),
                    o.config,
                    o.pps
                        .map(|p| format!("{:.1}", p.median / 1e3))
                        .unwrap_or_else(|| cell(o)),
                    q(o.lat_p50_us),
                    q(o.lat_p99_us),
                    q(o.lat_p999_us),
                    o.loss_pct
                        .map(|l| format!("{:.3}", l.median))
                        .unwrap_or("–".into())
                );
            }
        }
        s.push('\n');
    }
    for (v, _) in variants.iter().filter(|(v, _)| v.scenario == "S6") {
        let list = r.outcomes_of(&v.name);
        let _ = writeln!(s, "## {} (kpps)\n", v.name);
        if let Some(max_loss) = v.search_max_loss {
            let _ = writeln!(s, "{}\n", search_note(max_loss, &r.meta));
        }
        let _ = writeln!(s, "| configuration | kpps |");
        let _ = writeln!(s, "|---|---|");
        for o in list {
            let _ = writeln!(s, "| {} | {} |", o.config, cell(o));
        }
        for rt in r
            .ratios
            .iter()
            .filter(|x| x.variant == v.name && x.what.contains("routes) /"))
        {
            let _ = writeln!(s, "| ratio {} | {} |", rt.what, fmt_ratio(rt));
        }
        s.push('\n');
    }
    if !r.raw.micro.is_empty() {
        let _ = writeln!(
            s,
            "## In-process micro measurements (ns per operation, wall clock, hot loop)\n"
        );
        let _ = writeln!(s, "| what | ns |");
        let _ = writeln!(s, "|---|---|");
        for x in &r.raw.micro {
            let _ = writeln!(s, "| {} | {:.1} |", x.name, x.ns);
        }
        s.push('\n');
    }
    if !r.goals.is_empty() {
        let _ = writeln!(s, "## PERF.md goals\n");
        let _ = writeln!(s, "| goal | target | measured | met |");
        let _ = writeln!(s, "|---|---|---|---|");
        for g in &r.goals {
            let met = match g.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                g.goal, g.target, g.measured, met
            );
        }
        s.push('\n');
    }
    let problems: Vec<String> = r
        .raw
        .variants
        .iter()
        .flat_map(|(v, runs)| {
            runs.iter().filter_map(move |x| {
                x.problem
                    .as_ref()
                    .map(|p| format!("{} / {} round {}: {p}", v.name, x.config, x.round))
            })
        })
        .chain(r.raw.tcp.iter().filter_map(|x| {
            x.problem
                .as_ref()
                .map(|p| format!("S4 {} round {}: {p}", x.config, x.round))
        }))
        .collect();
    if !problems.is_empty() {
        let _ = writeln!(s, "## Runs that did not count\n");
        for p in problems {
            let _ = writeln!(s, "- {p}");
        }
        s.push('\n');
    }
    s
}

/// What a "‡" (loss-free rate) row means.
fn search_note(max_loss: f64, meta: &Meta) -> String {
    format!(
        "‡ Loss-free rate (RFC 2544 throughput): the highest offered rate losing at most {}% of \
         the frames, found per run by a flat-out trial and then {} fixed-rate trials of {:.2} s \
         bisecting below it on the same path (every trial is in the JSON). Offered flat out, \
         these paths collapse instead of saturating.",
        max_loss * 100.0,
        meta.search_trials,
        meta.search_window_s
    )
}
