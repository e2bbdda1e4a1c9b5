//! `overpass-demo`: a Flannel-style overlay built in network namespaces on
//! this machine, with the gateway serving it and pings in every direction;
//! everything is removed on exit or Ctrl-C. `overpass demo` runs this
//! binary (it ships with the test support, not in the product).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use overpass::api::{ApiState, Auth, Server};
use overpass::lifecycle::Gateway;
use overpass_testkit::testbed::{Ns, PingOpts, Testbed, TestbedSpec};

/// Build a Flannel-style test bed in network namespaces on this machine, run
/// the gateway on it, show traffic flowing, and clean up.
#[derive(Debug, Parser)]
#[command(name = "overpass demo", version)]
struct Args {
    /// Namespace prefix tag (namespaces are named ovp-TAG-*).
    #[arg(long, default_value = "demo")]
    tag: String,
    /// Keep the bed and gateway up until Ctrl-C, printing counters.
    #[arg(long)]
    hold: bool,
    /// Also serve the API and the web dashboard on ADDR (e.g.
    /// 127.0.0.1:9180); use with --hold to keep it up.
    #[arg(long, value_name = "ADDR")]
    api: Option<std::net::SocketAddr>,
    /// Token file for the API's mutations (mode 0600); without it the API
    /// is read-only.
    #[arg(long, requires = "api")]
    token_file: Option<PathBuf>,
    /// Also take pods attached at run time: serve the local socket the
    /// overpass-cni plugin talks to at SOCKET (`[attach] socket`); use with
    /// --hold, and run the plugin in the gateway's namespace (ovp-TAG-gw).
    #[arg(long, value_name = "SOCKET")]
    attach: Option<PathBuf>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    if let Err(e) = demo(
        &a.tag,
        a.hold,
        a.api,
        a.token_file.as_deref(),
        a.attach.as_deref(),
    ) {
        eprintln!("overpass demo: error: {e:#}");
        std::process::exit(1);
    }
}

/// SIGINT and SIGTERM set the flag instead of killing the process, so the
/// bed is removed and XDP detached.
fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone()).context("installing signal handler")?;
    }
    Ok(flag)
}

fn demo(
    tag: &str,
    hold: bool,
    api: Option<std::net::SocketAddr>,
    token_file: Option<&Path>,
    attach: Option<&Path>,
) -> anyhow::Result<()> {
    let token = token_file.map(Auth::load_token).transpose()?;
    let stop = stop_flag()?;
    println!(
        "== Overpass demo: building a Flannel-style overlay in network namespaces (ovp-{tag}-*)"
    );
    let bed = Testbed::create(&TestbedSpec {
        tag: tag.to_string(),
        underlay_queues: 1,
    })?;
    println!("{}", bed.describe());
    let mut config = bed.gateway_config();
    if let Some(socket) = attach {
        config.attach = Some(overpass::config::AttachConfig {
            socket: socket.to_path_buf(),
            ..Default::default()
        });
    }
    println!("== Gateway configuration:\n{}", config.to_toml());
    let gw = Gateway::start(&config)?;
    println!("== Dataplane: {:?}", gw.info);
    // From the host namespace (Gateway::start returned to it), as `run` does.
    let server = match api {
        Some(listen) => {
            let state = ApiState::new(
                gw.rib().clone(),
                gw.view(),
                Auth::new(token, false),
                1 << 20,
                "dataplane",
            );
            if let Some(a) = gw.attacher() {
                state.set_attacher(a.clone());
            }
            let server = Server::start(listen, state)?;
            println!("== API and dashboard: http://{}/", server.addr);
            Some(server)
        }
        None => None,
    };
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
    if let Some(s) = server {
        s.stop();
    }
    gw.stop();
    drop(bed);
    println!("== Cleaned up: gateway stopped, XDP detached, namespaces ovp-{tag}-* removed");
    if !all_ok {
        anyhow::bail!("some pings were lost: see above");
    }
    Ok(())
}
