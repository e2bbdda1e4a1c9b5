//! `overpass-demo`: a Flannel-style overlay built in network namespaces on
//! this machine, with the gateway serving it and pings in every direction;
//! everything is removed on exit or Ctrl-C. `overpass demo` runs this
//! binary (it ships with the test support, not in the product).
//!
//! By default the cluster lives in a local etcd (Debian's, started by the
//! demo): Flannel-style node agents register their subnet leases and learn
//! every route from it, and the gateway joins with no `[[peer]]` line at
//! all. `--static` runs the older demo instead (peers written in the
//! configuration, Flannel's entries written by the bed).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use overpass::api::{ApiState, Auth, Server};
use overpass::cluster::{ClusterConfig, MemberHandle, RouteSources};
use overpass::control::rib::Rib;
use overpass::lifecycle::Gateway;
use overpass_testkit::etcd::{Etcd, Kv};
use overpass_testkit::flannel::{AgentSpec, FlannelNode, network_config};
use overpass_testkit::testbed::{Ns, PingOpts, Testbed, TestbedOptions, TestbedSpec};

const PREFIX: &str = "/coreos.com/network";

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
    /// No etcd: the peers are written in the gateway's configuration and
    /// the bed writes Flannel's entries on the nodes (the older demo).
    #[arg(long = "static")]
    static_routes: bool,
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
        a.static_routes,
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

/// The cluster side of the demo: etcd and the node agents.
struct Datastore {
    etcd: Etcd,
    kv: Kv,
    agents: Vec<FlannelNode>,
    member: Option<MemberHandle>,
}

fn agent(bed: &Testbed, etcd: &Etcd, n: u8) -> anyhow::Result<FlannelNode> {
    FlannelNode::start(AgentSpec {
        etcd: etcd.endpoint(),
        prefix: PREFIX.into(),
        netns: bed.ns(Ns::Node(n)),
        public_ip: bed.node_underlay_ip(n),
        vtep_mac: bed.node_vtep_mac(n).to_string(),
        subnet: bed.node_pod_cidr(n).parse()?,
        ttl: 86_400,
    })
}

/// The route set as a table, each route with its source.
fn route_table(rib: &Rib) -> String {
    let (generation, routes) = rib.routes();
    let mut out = format!("  route set generation {generation}:\n");
    for r in &routes {
        let line = match (&r.node, &r.pod) {
            (Some(n), _) => format!(
                "{:<16} -> node {} ({:?}{})",
                r.prefix.to_string(),
                n.underlay_ip,
                n.encap,
                n.vtep_mac
                    .map_or(String::new(), |m| format!(", VtepMAC {m}"))
            ),
            (_, Some(p)) => format!(
                "{:<16} -> local pod {} on {}",
                r.prefix.to_string(),
                p.name,
                p.interface
            ),
            _ => continue,
        };
        let source = match r
            .node
            .as_ref()
            .and_then(|n| overpass::cluster::owner_of(&n.name))
        {
            Some(c) => format!("etcd ({c})"),
            None => "config".into(),
        };
        out.push_str(&format!("    {line:<70} [{source}]\n"));
    }
    out
}

fn wait_for(what: &str, f: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !f() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn has_route(rib: &Rib, prefix: &str) -> bool {
    rib.routes()
        .1
        .iter()
        .any(|r| r.prefix.to_string() == prefix)
}

fn demo(
    tag: &str,
    hold: bool,
    api: Option<std::net::SocketAddr>,
    token_file: Option<&Path>,
    static_routes: bool,
    attach: Option<&Path>,
) -> anyhow::Result<()> {
    let token = token_file.map(Auth::load_token).transpose()?;
    let stop = stop_flag()?;
    println!(
        "== Overpass demo: building a Flannel-style overlay in network namespaces (ovp-{tag}-*)"
    );
    let bed = Testbed::create_with(
        &TestbedSpec {
            tag: tag.to_string(),
            underlay_queues: 1,
        },
        &TestbedOptions {
            flannel_entries: static_routes,
            ..TestbedOptions::default()
        },
    )?;
    println!("{}", bed.describe());
    let mut config = bed.gateway_config();
    let mut store = None;
    if !static_routes {
        let etcd = Etcd::start(tag).context("starting etcd (Debian's etcd-server)")?;
        let kv = etcd.kv()?;
        kv.put(&format!("{PREFIX}/config"), &network_config(), None)?;
        println!(
            "== etcd {} (data in {}): {PREFIX}/config = {}",
            etcd.endpoint(),
            etcd.dir().display(),
            network_config()
        );
        config.peer.clear();
        config.cluster = vec![ClusterConfig {
            prefix: PREFIX.into(),
            ..ClusterConfig::new(vec![etcd.endpoint()])
        }];
        store = Some(Datastore {
            etcd,
            kv,
            agents: vec![],
            member: None,
        });
    }
    if let Some(socket) = attach {
        config.attach = Some(overpass::config::AttachConfig {
            socket: socket.to_path_buf(),
            ..Default::default()
        });
    }
    println!("== Gateway configuration:\n{}", config.to_toml());
    let member = overpass::cluster::join(&mut config, None)?;
    if let Some(m) = &member {
        println!(
            "== Joined the cluster: subnet lease {} (the gateway's podCIDR), no [[peer]] lines",
            m.subnet()
        );
    }
    let gw = Gateway::start(&config)?;
    if let (Some(m), Some(ds)) = (member, store.as_mut()) {
        ds.member = Some(m.run(gw.rib().clone())?);
        for n in [1u8, 2] {
            ds.agents.push(agent(&bed, &ds.etcd, n)?);
            println!(
                "== Node {n}'s agent registered {PREFIX}/subnets/10.244.{n}.0-24 and installed \
                 the gateway's route, neighbour and FDB entry from etcd"
            );
        }
        wait_for("the nodes' routes", || {
            has_route(gw.rib(), "10.244.1.0/24") && has_route(gw.rib(), "10.244.2.0/24")
        })?;
        println!(
            "== Every route came from the datastore:\n{}",
            route_table(gw.rib())
        );
    }
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
            state.set_sources(RouteSources {
                config: overpass::control::sources::config_routes(&config),
                clusters: store
                    .iter()
                    .filter_map(|d| d.member.as_ref().map(|m| m.status().clone()))
                    .collect(),
            });
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
    if let Some(ds) = store.as_mut()
        && !stop.load(Ordering::Relaxed)
    {
        // A node leaves and comes back: the route table follows etcd.
        println!("== Node 2 leaves: its agent stops and its lease is deleted from etcd");
        ds.agents.pop();
        ds.kv.delete(&format!("{PREFIX}/subnets/10.244.2.0-24"))?;
        wait_for("node 2's route to go", || {
            !has_route(gw.rib(), "10.244.2.0/24")
        })?;
        print!("{}", route_table(gw.rib()));
        let r = bed.ping(
            &bed.ns(Ns::LocalPod('b')),
            bed.remote_pod_ip(2),
            2,
            &PingOpts {
                timeout_s: 1,
                ..opts.clone()
            },
        )?;
        println!(
            "  local pod b -> node2 pod: {}/{} received (dropped as no_route)",
            r.received, r.transmitted
        );
        println!("== Node 2 joins again");
        ds.agents.push(agent(&bed, &ds.etcd, 2)?);
        wait_for("node 2's route", || has_route(gw.rib(), "10.244.2.0/24"))?;
        print!("{}", route_table(gw.rib()));
        if !gw.wait_resolved(Duration::from_secs(5)) {
            println!("warning: not every peer's underlay MAC resolved within 5 s");
        }
        let r = bed.ping(&bed.ns(Ns::LocalPod('b')), bed.remote_pod_ip(2), 5, &opts)?;
        all_ok &= r.all_received();
        println!(
            "  local pod b -> node2 pod: {}/{} received",
            r.received, r.transmitted
        );
    }
    println!("== Gateway counters:\n{}", gw.counters().render());
    if hold && let Some(ds) = &store {
        println!(
            "== Holding. The route table follows etcd: try\n  \
             ETCDCTL_API=3 etcdctl --endpoints {} del {PREFIX}/subnets/10.244.1.0-24\n  \
             ETCDCTL_API=3 etcdctl --endpoints {} put {PREFIX}/subnets/10.244.9.0-24 \
             '{{\"PublicIP\":\"198.18.0.99\",\"BackendType\":\"vxlan\",\"BackendData\":{{\"VNI\":1,\"VtepMAC\":\"02:00:00:00:00:99\"}}}}'",
            ds.etcd.endpoint(),
            ds.etcd.endpoint()
        );
    }
    let mut shown = gw.rib().routes().0;
    while hold && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let g = gw.rib().routes().0;
        if g != shown {
            shown = g;
            print!("{}", route_table(gw.rib()));
        }
    }
    if let Some(s) = server {
        s.stop();
    }
    if let Some(mut ds) = store {
        ds.agents.clear();
        if let Some(m) = ds.member.take() {
            m.stop();
        }
    }
    gw.stop();
    drop(bed);
    println!(
        "== Cleaned up: gateway stopped, XDP detached, etcd stopped, namespaces ovp-{tag}-* removed"
    );
    if !all_ok {
        anyhow::bail!("some pings were lost: see above");
    }
    Ok(())
}
