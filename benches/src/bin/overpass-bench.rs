//! The end-to-end benchmark harness. One invocation builds a test bed,
//! runs B0, B1, B3 and Overpass for every selected scenario, and writes a
//! JSON result and a markdown table.
//!
//! ```text
//! cargo run --release -p overpass-benches --bin overpass-bench              # default set, < 10 min
//! cargo run --release -p overpass-benches --bin overpass-bench -- --smoke   # every path once, briefly
//! cargo run --release -p overpass-benches --bin overpass-bench -- --full    # longer windows, more runs
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use overpass_benches::harness::{Bench, Options};
use overpass_benches::report;

#[derive(Debug, Parser)]
#[command(about = "Overpass end-to-end benchmark harness (needs root)")]
struct Args {
    /// CI smoke mode: every configuration once, briefly.
    #[arg(long, conflicts_with = "full")]
    smoke: bool,
    /// The long set: more runs, longer windows, a 512 B size, TCP both ways.
    #[arg(long)]
    full: bool,
    /// Runs per configuration (default 5; smoke 1; full 9).
    #[arg(long)]
    runs: Option<usize>,
    /// Measurement window per run, seconds.
    #[arg(long)]
    window: Option<f64>,
    /// Only these scenarios (S1..S6, micro); repeatable.
    #[arg(long = "only", value_name = "SCENARIO")]
    only: Vec<String>,
    /// JSON output.
    #[arg(long, default_value = default_out("json"))]
    json: PathBuf,
    /// Markdown output.
    #[arg(long, default_value = default_out("md"))]
    markdown: PathBuf,
    /// Test bed tag (namespaces ovp-TAG-*).
    #[arg(long, default_value = "bnh")]
    tag: String,
    /// Skip the in-process micro measurements.
    #[arg(long)]
    no_micro: bool,
}

const fn default_out(ext: &str) -> &'static str {
    match ext.as_bytes()[0] {
        b'j' => concat!(env!("CARGO_MANIFEST_DIR"), "/results/latest.json"),
        _ => concat!(env!("CARGO_MANIFEST_DIR"), "/results/latest.md"),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("overpass-bench needs root (network namespaces, XDP, AF_XDP)");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the signal handler")?;
    }
    let mut opts = if args.smoke {
        Options::smoke(&args.tag)
    } else if args.full {
        Options::full(&args.tag)
    } else {
        Options::default_set(&args.tag)
    };
    if let Some(r) = args.runs {
        opts.runs = r.max(1);
    }
    if let Some(w) = args.window {
        opts.window = Duration::from_secs_f64(w);
    }
    opts.only = args.only.clone();
    opts.no_micro = args.no_micro;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let (runs, window, warmup) = (
        opts.runs,
        opts.window.as_secs_f64(),
        opts.warmup.as_secs_f64(),
    );
    let (search_trials, search_window_s) = (opts.search_trials, opts.search_window.as_secs_f64());

    let mut bench = Bench::new(opts, stop.clone(), true)?;
    let results = bench.run_all();
    // Tear the bed down before writing (and also when the run failed).
    let tag = bench.opts.tag.clone();
    drop(bench);
    if let Err(e) = overpass_testkit::testbed::Testbed::cleanup_stale(&tag) {
        eprintln!("cleanup: {e:#}");
    }
    let results = results?;
    let meta = report::Meta {
        search_trials,
        search_window_s,
        ..report::Meta::collect(command, runs, window, warmup, results.elapsed_s)
    };
    let rep = report::build(meta, results);
    for (path, text) in [
        (&args.json, serde_json::to_string_pretty(&rep)?),
        (&args.markdown, report::markdown(&rep)),
    ] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        }
        std::fs::write(path, text).with_context(|| path.display().to_string())?;
        eprintln!("wrote {}", path.display());
    }
    print!("{}", report::markdown(&rep));
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("interrupted: partial results written");
        std::process::exit(130);
    }
    Ok(())
}
