//! `overpass`: the gateway binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use overpass::config::Config;
use overpass::gateway::Gateway;
use overpass::testbed::{Ns, PingOpts, Testbed, TestbedSpec};

#[derive(Debug, Parser)]
#[command(
    name = "overpass",
    version,
    about = "Kernel-bypass AF_XDP overlay gateway (VXLAN / IP-in-IP)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway from a configuration file until SIGINT/SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and print it as understood.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Build a Flannel-style test bed in network namespaces on this machine,
    /// run the gateway on it, show traffic flowing, and clean up.
    Demo {
        /// Namespace prefix tag (namespaces are named ovp-TAG-*).
        #[arg(long, default_value = "demo")]
        tag: String,
        /// Keep the bed and gateway up until Ctrl-C, printing counters.
        #[arg(long)]
        hold: bool,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => Config::load(&config).map(|c| print!("{}", c.to_toml())),
        Command::Demo { tag, hold } => demo(&tag, hold),
    };
    if let Err(e) = result {
        eprintln!("overpass: error: {e:#}");
        std::process::exit(1);
    }
}

/// SIGINT and SIGTERM set the returned flag instead of killing the process,
/// so shutdown detaches XDP and removes test beds.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handler")?;
    }
    Ok(flag)
}

fn run(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let stop = stop_flag()?;
    let gw = Gateway::start(&config)?;
    tracing::info!(info = ?gw.info, "gateway running");
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let counters = gw.counters();
    gw.stop();
    eprint!("final counters:\n{}", counters.render());
    Ok(())
}

fn demo(tag: &str, hold: bool) -> anyhow::Result<()> {
    let stop = stop_flag()?;
    println!(
        "== Overpass demo: building a Flannel-style overlay in network namespaces (ovp-{tag}-*)"
    );
    let bed = Testbed::create(&TestbedSpec {
        tag: tag.to_string(),
        underlay_queues: 1,
    })?;
    println!("{}", bed.describe());
    let config = bed.gateway_config();
    println!("== Gateway configuration:\n{}", config.to_toml());
    let gw = Gateway::start(&config)?;
    println!("== Dataplane: {:?}", gw.info);
    if !gw.wait_resolved(Duration::from_secs(5)) {
        println!("warning: not every peer's underlay MAC resolved within 5 s");
    }
    let opts = PingOpts::default();
    let flows: Vec<(String, std::net::Ipv4Addr, &str)> = vec![
        (
            bed.ns(Ns::LocalPod('a')),
            bed.remote_pod_ip(1),
            "local pod a -> node1 pod (encap VXLAN)",
        ),
        (
            bed.ns(Ns::LocalPod('b')),
            bed.remote_pod_ip(2),
            "local pod b -> node2 pod (encap VXLAN)",
        ),
        (
            bed.ns(Ns::NodePod(1)),
            bed.local_pod_ip('b'),
            "node1 pod -> local pod b (decap)",
        ),
        (
            bed.ns(Ns::NodePod(2)),
            bed.local_pod_ip('a'),
            "node2 pod -> local pod a (decap)",
        ),
        (
            bed.ns(Ns::LocalPod('a')),
            bed.local_pod_ip('b'),
            "local pod a -> local pod b",
        ),
    ];
    println!("== Traffic (ping, 5 probes each):");
    let mut all_ok = true;
    for (ns, dst, what) in &flows {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let r = bed.ping(ns, *dst, 5, &opts)?;
        all_ok &= r.all_received();
        println!(
            "  {what:<42} {dst:<12} {}/{} received  avg {}",
            r.received,
            r.transmitted,
            r.rtt_avg_ms
                .map_or("-".to_string(), |v| format!("{v:.3} ms"))
        );
    }
    println!("== Gateway counters:\n{}", gw.counters().render());
    while hold && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
    }
    gw.stop();
    drop(bed);
    println!("== Cleaned up: gateway stopped, XDP detached, namespaces ovp-{tag}-* removed");
    if !all_ok {
        anyhow::bail!("some pings were lost: see above");
    }
    Ok(())
}
