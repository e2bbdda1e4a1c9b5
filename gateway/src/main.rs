//! `overpass`: the gateway binary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use overpass::api::client::Client;
use overpass::api::{ApiState, Auth, Server, ServerOptions};
use overpass::config::Config;
use overpass::config::OnCorrupt;
use overpass::control::rib::{NodeSpec, PodSpec, Rib, RouteSpec};
use overpass::control::sources::InitialRibError;
use overpass::control::store::{RoutesFile, Store, Unusable};
use overpass::lifecycle::{DataplaneView, Gateway};
use overpass::service::Notifier;
use overpass_dataplane::fib::Encap;
use overpass_dataplane::wire::ethernet::MacAddr;

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
    /// Run the gateway from a configuration file until SIGINT/SIGTERM
    /// (with the API when the file has an [api] section).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run only the control plane (route set, persistence, API) with no
    /// dataplane: no XDP, no sockets, no interfaces read. Same RIB, store
    /// and API code as `run`; for tests, API clients and dry runs.
    ApiOnly {
        #[arg(long, short)]
        config: PathBuf,
        /// Override api.listen (e.g. 127.0.0.1:0 for any free port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Read or change the route set of a running gateway (over its API).
    Routes {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        action: RoutesAction,
    },
    /// Show a running gateway's counters, peers and latency (over its API).
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a configuration file and print it as understood.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Preflight: inspect this host (kernel, NICs, MTU, offloads, cores)
    /// against a configuration; exits non-zero on blockers.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the findings as JSON (`{"config", "findings", "summary"}`).
        #[arg(long)]
        json: bool,
    },
    /// Build a Flannel-style test bed in network namespaces on this machine,
    /// run the gateway on it, show traffic flowing, and clean up (runs
    /// `overpass-demo`, the test support's binary; `overpass demo --help`
    /// lists its options).
    #[command(disable_help_flag = true)]
    Demo {
        /// Passed to `overpass-demo` as they are (--tag, --hold, --api,
        /// --token-file, --help).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// How to reach the API.
#[derive(Debug, clap::Args)]
struct ClientArgs {
    /// API base URL [env: OVERPASS_API; default http://127.0.0.1:9180].
    #[arg(long)]
    api: Option<String>,
    /// File holding the bearer token [env: OVERPASS_TOKEN_FILE, or the
    /// token itself in OVERPASS_TOKEN].
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum RoutesAction {
    /// List the route set.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Add (or with --replace, create-or-replace) one route.
    Add {
        /// Destination prefix, e.g. 10.244.5.0/24.
        prefix: ipnet::Ipv4Net,
        /// Remote node: its underlay IPv4 address.
        #[arg(long, conflicts_with_all = ["pod", "interface", "mac"])]
        node: Option<std::net::Ipv4Addr>,
        /// Name of the node or pod.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "vxlan")]
        encap: EncapArg,
        #[arg(long, default_value_t = 1)]
        vni: u32,
        #[arg(long, default_value_t = 8472)]
        port: u16,
        #[arg(long)]
        vtep_mac: Option<MacAddr>,
        #[arg(long)]
        mtu: Option<u16>,
        /// Local pod instead of a node (the prefix is the pod's /32).
        #[arg(long, requires_all = ["interface", "mac"])]
        pod: bool,
        /// Pod: host end of its veth.
        #[arg(long)]
        interface: Option<String>,
        /// Pod: its MAC.
        #[arg(long)]
        mac: Option<MacAddr>,
        /// Replace an existing route for the prefix instead of failing.
        #[arg(long)]
        replace: bool,
    },
    /// Delete the route for a prefix.
    Del { prefix: ipnet::Ipv4Net },
    /// Replace the whole set with a JSON file ({"routes": [...]} or [...]).
    Apply {
        file: PathBuf,
        /// Validate and show the diff without applying.
        #[arg(long)]
        dry_run: bool,
        /// Only apply if the set is still at this generation.
        #[arg(long)]
        if_match: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EncapArg {
    Vxlan,
    Ipip,
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::ApiOnly { config, listen } => api_only(&config, listen),
        Command::Routes { client, action } => routes_cmd(&client, action),
        Command::Stats { client, json } => stats_cmd(&client, json),
        Command::CheckConfig { config } => Config::load(&config).map(|c| print!("{}", c.to_toml())),
        Command::Check { config, json } => {
            let format = if json {
                overpass::check::Format::Json
            } else {
                overpass::check::Format::Text
            };
            overpass::check::run_with(&config, format)
        }
        Command::Demo { args } => demo(&args),
    };
    if let Err(e) = result {
        eprintln!("overpass: error: {e:#}");
        std::process::exit(1);
    }
}

/// Logs go to stderr (journald collects them under systemd): plain text
/// without colours unless stderr is a terminal, or one JSON object per
/// line with `OVERPASS_LOG_FORMAT=json`. `RUST_LOG` sets the filter
/// (default `info`).
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("OVERPASS_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

/// The signals a serving process handles. Installed first thing in `run`
/// and `api-only`, before the configuration is read: a signal that arrives
/// while the process starts is remembered, never fatal. SIGINT and SIGTERM
/// set `stop` (a stop requested during start happens as soon as the start
/// completes: XDP is detached and the route set persisted as in any stop);
/// SIGHUP sets `hup` (a reload requested during start is applied once the
/// gateway serves).
struct Signals {
    stop: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let stop = Arc::new(AtomicBool::new(false));
        let hup = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
        }
        signal_hook::flag::register(SIGHUP, hup.clone())
            .context("installing the SIGHUP handler")?;
        Ok(Signals { stop, hup })
    }
}

/// What `run` and `api-only` share: the loaded configuration with its
/// VTEP MAC resolved, the open state dir, the persisted route set, and the
/// API's authentication — all checked before anything starts.
struct ControlPlane {
    /// The configuration file's path.
    path: PathBuf,
    config: Config,
    store: Option<Arc<Store>>,
    /// The persisted route set to start with (`None`: the configuration's).
    persisted: Option<RoutesFile>,
    auth: Auth,
    /// The `[[cluster]]` entries joined (leases taken), not yet following.
    cluster: Vec<overpass::cluster::Member>,
}

fn control_plane(path: &Path, stop: &AtomicBool) -> anyhow::Result<ControlPlane> {
    let mut config = Config::load(path)?;
    let store = match &config.state {
        Some(s) => Some(Arc::new(Store::open(&s.dir)?)),
        None => None,
    };
    overpass::control::store::resolve_vtep_mac(&mut config, store.as_deref())?;
    // A [[cluster]] lease gives the podCIDR: taken before anything that
    // validates against it.
    let state_dir = config.state.as_ref().map(|s| s.dir.clone());
    let cluster = overpass::cluster::join_all_until(&mut config, state_dir.as_deref(), stop)?;
    if !cluster.is_empty() {
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    let api = config.api.clone().unwrap_or_default();
    let token = api
        .token_file
        .as_deref()
        .map(Auth::load_token)
        .transpose()?;
    let mut cp = ControlPlane {
        path: path.to_path_buf(),
        auth: Auth::new(token, api.read_requires_token),
        config,
        store,
        persisted: None,
        cluster,
    };
    if let Some(store) = &cp.store {
        match store.load_routes() {
            Ok(persisted) => cp.persisted = persisted,
            Err(e) => match e.downcast_ref::<Unusable>() {
                Some(u) => cp.unusable_routes(&u.problem)?,
                None => return Err(e),
            },
        }
    }
    Ok(cp)
}

impl ControlPlane {
    /// `rib` persisting every change to the state dir (when there is one).
    fn persisting(&self, rib: Rib) -> Rib {
        rib.with_store(
            self.store
                .clone()
                .map(|s| s as Arc<dyn overpass::control::rib::RouteStore>),
        )
    }

    /// The persisted route set cannot be used (`problem`): per `[state]
    /// on_corrupt`, refuse to start (the error names the file and how to
    /// recover) or set the file aside and go on with the configuration's
    /// set.
    fn unusable_routes(&mut self, problem: &str) -> anyhow::Result<()> {
        let (Some(store), Some(state)) = (&self.store, &self.config.state) else {
            anyhow::bail!("{problem}");
        };
        let file = store.routes_path();
        match state.on_corrupt {
            OnCorrupt::Fail => anyhow::bail!(
                "{file}: {problem}.\n\
                 Nothing was started. To start from the configuration's route set and keep \
                 this file aside (renamed to routes.json.corrupt-<time>, never deleted), set \
                 on_corrupt = \"set-aside\" under [state] in {config} and start again; or \
                 repair the file, or move it away yourself: mv {file} {file}.corrupt",
                file = file.display(),
                config = self.path.display(),
            ),
            OnCorrupt::SetAside => {
                let aside = store.set_aside()?;
                tracing::error!(
                    file = %file.display(),
                    kept_as = %aside.display(),
                    "{problem}; the file is set aside ([state] on_corrupt = \"set-aside\") and \
                     the gateway starts from the configuration's route set: route changes made \
                     since the configuration was written are NOT in force (they are in {})",
                    aside.display()
                );
                self.persisted = None;
                Ok(())
            }
        }
    }

    /// First start with this state dir (or after a set-aside): record the
    /// route set in force, so the state dir always holds it.
    fn save_initial(&self, rib: &Rib) -> anyhow::Result<()> {
        if let (Some(store), None) = (&self.store, &self.persisted) {
            let (generation, routes) = rib.routes();
            store.save_routes(generation, &routes).with_context(|| {
                format!(
                    "persisting the initial route set to {}",
                    store.routes_path().display()
                )
            })?;
        }
        Ok(())
    }
}

/// A start refused because the persisted route set no longer validates.
fn persisted_invalid(e: &anyhow::Error) -> Option<String> {
    e.chain()
        .find_map(|c| match c.downcast_ref::<InitialRibError>() {
            Some(p @ InitialRibError::Persisted(_)) => Some(p.to_string()),
            _ => None,
        })
}

/// Starts the API (from the calling thread's namespace: call it after the
/// dataplane returned to the original one).
fn serve(
    cp: &ControlPlane,
    rib: Rib,
    view: DataplaneView,
    mode: &'static str,
    listen: Option<std::net::SocketAddr>,
    clusters: &[Arc<overpass::cluster::Status>],
    attacher: Option<overpass::control::attach::Attacher>,
) -> anyhow::Result<Server> {
    let api = cp.config.api.clone().unwrap_or_default();
    let state = ApiState::new(rib, view, cp.auth.clone(), api.body_limit, mode);
    state.set_sources(overpass::cluster::RouteSources {
        config: overpass::control::sources::config_routes(&cp.config),
        clusters: clusters.to_vec(),
    });
    if let Some(a) = attacher {
        state.set_attacher(a);
    }
    if let Some(warning) = overpass::api::server::descriptor_shortfall(api.max_connections) {
        tracing::warn!("{warning}");
    }
    let server = Server::start_with(
        listen.unwrap_or(api.listen),
        state,
        ServerOptions::from_config(&api),
    )?;
    // For scripts and tests: the address actually bound (port 0 → real port).
    println!("overpass: API listening on http://{}", server.addr);
    Ok(server)
}

/// The serving loop of `run` and `api-only`, once everything is up (and
/// READY=1 sent): until SIGINT/SIGTERM, apply SIGHUP reloads (one that
/// arrived during start included) and feed the watchdog while every
/// worker (`progress`, one round counter each) makes progress.
fn serve_until_stopped(
    cp: &ControlPlane,
    rib: &Rib,
    signals: &Signals,
    notifier: &mut Notifier,
    status: &dyn Fn(&Rib) -> String,
    progress: &dyn Fn() -> Vec<u64>,
) {
    if signals.hup.load(Ordering::Relaxed) && !signals.stop.load(Ordering::Relaxed) {
        tracing::info!("SIGHUP arrived during start: reloading the configuration now");
    }
    while !signals.stop.load(Ordering::Relaxed) {
        notifier.tick(Instant::now(), &progress());
        if signals.hup.swap(false, Ordering::Relaxed) {
            notifier.reloading();
            let store = cp.store.as_deref();
            match overpass::control::reload::reload(&cp.path, &cp.config, rib, store) {
                Ok(r) => {
                    tracing::info!(
                        generation = r.generation,
                        routes = r.routes,
                        "configuration reloaded"
                    );
                    if !r.restart_needed.is_empty() {
                        tracing::warn!(keys = ?r.restart_needed, "changed keys take effect only after a restart");
                    }
                }
                Err(e) => tracing::error!(
                    "reload refused, the running configuration stays in force: {e:#}"
                ),
            }
            notifier.ready(&status(rib));
            continue;
        }
        std::thread::sleep(notifier.tick_period());
    }
    notifier.stopping();
}

fn run(path: &Path) -> anyhow::Result<()> {
    let signals = Signals::install()?;
    let mut notifier = Notifier::from_env();
    let mut cp = match control_plane(path, &signals.stop) {
        // SIGINT/SIGTERM while waiting for the cluster (etcd away, or a
        // standby waiting for the lease): a clean stop.
        Err(e) if signals.stop.load(Ordering::Relaxed) => {
            tracing::info!("stopped before serving: {e:#}");
            return Ok(());
        }
        cp => cp?,
    };
    // The persisted route set is validated and applied before the API
    // starts accepting writes.
    let gw = match Gateway::start_with(&cp.config, cp.persisted.clone()) {
        Ok(gw) => gw,
        Err(e) => match persisted_invalid(&e) {
            Some(problem) => {
                // Nothing was attached yet: the route set is built first.
                cp.unusable_routes(&problem)?;
                Gateway::start_with(&cp.config, None)?
            }
            None => return Err(e),
        },
    };
    tracing::info!(info = ?gw.info, "gateway running");
    cp.save_initial(gw.rib())?;
    // Route changes (API, reload) go through this handle: it persists.
    let rib = cp.persisting(gw.rib().clone());
    let cluster = overpass::cluster::run_all(std::mem::take(&mut cp.cluster), rib.clone())?;
    // Attachments change the route set too: through the persisting handle.
    if let Some(a) = gw.attacher() {
        a.use_rib(rib.clone());
    }
    let server = match cp.config.api.is_some() {
        true => Some(serve(
            &cp,
            rib.clone(),
            gw.view(),
            "dataplane",
            None,
            &cluster
                .iter()
                .map(|c| c.status().clone())
                .collect::<Vec<_>>(),
            gw.attacher().cloned(),
        )?),
        false => None,
    };
    let workers = gw.info.pinning.len();
    let status = move |rib: &Rib| {
        format!(
            "forwarding: {workers} workers, route set generation {}",
            rib.routes().0
        )
    };
    notifier.ready(&status(&rib));
    serve_until_stopped(&cp, &rib, &signals, &mut notifier, &status, &|| {
        gw.worker_progress()
    });
    tracing::info!("stopping: cluster, API, then dataplane");
    for c in cluster {
        c.stop();
    }
    if let Some(s) = server {
        s.stop();
    }
    let counters = gw.counters();
    let (generation, routes) = gw.rib().routes();
    gw.stop();
    if let Some(store) = &cp.store {
        match store.save_routes(generation, &routes) {
            Ok(()) => tracing::info!(generation, routes = routes.len(), "route set persisted"),
            Err(e) => tracing::error!("persisting the route set on shutdown: {e}"),
        }
    }
    eprint!("final counters:\n{}", counters.render());
    Ok(())
}

fn api_only(path: &Path, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    use overpass::control::sources::{initial_rib, offline_rib_context};
    let signals = Signals::install()?;
    let mut notifier = Notifier::from_env();
    let mut cp = match control_plane(path, &signals.stop) {
        // SIGINT/SIGTERM while waiting for the cluster (etcd away, or a
        // standby waiting for the lease): a clean stop.
        Err(e) if signals.stop.load(Ordering::Relaxed) => {
            tracing::info!("stopped before serving: {e:#}");
            return Ok(());
        }
        cp => cp?,
    };
    let ctx = offline_rib_context(&cp.config);
    let rib = match initial_rib(ctx.clone(), &cp.config, cp.persisted.clone()) {
        Err(e @ InitialRibError::Persisted(_)) => {
            cp.unusable_routes(&e.to_string())?;
            initial_rib(ctx, &cp.config, None)?
        }
        r => r?,
    };
    cp.save_initial(&rib)?;
    let view = DataplaneView::offline();
    let rib = cp.persisting(rib.with_peer_stats(Arc::new(view.clone())));
    let cluster = overpass::cluster::run_all(std::mem::take(&mut cp.cluster), rib.clone())?;
    let statuses: Vec<_> = cluster.iter().map(|c| c.status().clone()).collect();
    let server = serve(&cp, rib.clone(), view, "api-only", listen, &statuses, None)?;
    let status = |rib: &Rib| {
        format!(
            "serving the API only (no dataplane), route set generation {}",
            rib.routes().0
        )
    };
    notifier.ready(&status(&rib));
    serve_until_stopped(&cp, &rib, &signals, &mut notifier, &status, &Vec::new);
    for c in cluster {
        c.stop();
    }
    server.stop();
    Ok(())
}

fn routes_cmd(args: &ClientArgs, action: RoutesAction) -> anyhow::Result<()> {
    let client = Client::from_args(args.api.as_deref(), args.token_file.as_deref())?;
    match action {
        RoutesAction::List { json } => {
            let set = client.routes()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&set)?);
                return Ok(());
            }
            println!("generation {}", set.generation);
            for (i, r) in set.routes.iter().enumerate() {
                let source = set.sources.get(i).map_or("?", String::as_str);
                println!("  {:<10} {}", source, describe_route(r));
            }
        }
        RoutesAction::Add {
            prefix,
            node,
            name,
            encap,
            vni,
            port,
            vtep_mac,
            mtu,
            pod,
            interface,
            mac,
            replace,
        } => {
            let route = if pod {
                RouteSpec {
                    prefix,
                    node: None,
                    pod: Some(PodSpec {
                        name,
                        interface: interface.expect("clap requires --interface with --pod"),
                        mac: mac.expect("clap requires --mac with --pod"),
                    }),
                }
            } else {
                let underlay_ip =
                    node.ok_or_else(|| anyhow::anyhow!("give --node IP (or --pod)"))?;
                RouteSpec {
                    prefix,
                    node: Some(NodeSpec {
                        name,
                        underlay_ip,
                        encap: match encap {
                            EncapArg::Vxlan => Encap::Vxlan,
                            EncapArg::Ipip => Encap::Ipip,
                        },
                        vni,
                        port,
                        vtep_mac,
                        mtu,
                    }),
                    pod: None,
                }
            };
            let r = if replace {
                client.put_route(&route)?
            } else {
                client.add_route(&route)?
            };
            println!("generation {}: {}", r.generation, describe_route(&r.route));
        }
        RoutesAction::Del { prefix } => {
            let r = client.delete_route(&prefix)?;
            println!(
                "generation {}: deleted {}",
                r.generation,
                describe_route(&r.route)
            );
        }
        RoutesAction::Apply {
            file,
            dry_run,
            if_match,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let routes: Vec<RouteSpec> =
                match serde_json::from_str::<overpass::api::RouteSetInput>(&text) {
                    Ok(set) => set.routes,
                    Err(_) => serde_json::from_str(&text).with_context(|| {
                        format!(
                            "{}: expected {{\"routes\": [...]}} or [...]",
                            file.display()
                        )
                    })?,
                };
            let r = client.replace_routes(&routes, if_match, dry_run)?;
            let d = &r.diff;
            println!(
                "{} generation {}: {} added, {} removed, {} changed, {} unchanged",
                if r.dry_run {
                    "dry run at"
                } else {
                    "applied as"
                },
                r.generation,
                d.added.len(),
                d.removed.len(),
                d.changed.len(),
                d.unchanged
            );
            for a in &d.added {
                println!("  + {}", describe_route(a));
            }
            for x in &d.removed {
                println!("  - {}", describe_route(x));
            }
            for c in &d.changed {
                println!(
                    "  ~ {}  (was {})",
                    describe_route(&c.after),
                    describe_route(&c.before)
                );
            }
        }
    }
    Ok(())
}

fn describe_route(r: &RouteSpec) -> String {
    match (&r.node, &r.pod) {
        (Some(n), _) => format!(
            "{:<18} -> node {} {} ({:?}, vni {}, port {}{}{})",
            r.prefix.to_string(),
            n.name,
            n.underlay_ip,
            n.encap,
            n.vni,
            n.port,
            n.vtep_mac.map_or(String::new(), |m| format!(", vtep {m}")),
            n.mtu.map_or(String::new(), |m| format!(", mtu {m}")),
        ),
        (None, Some(p)) => format!(
            "{:<18} -> pod {} on {} ({})",
            r.prefix.to_string(),
            p.name,
            p.interface,
            p.mac
        ),
        (None, None) => format!("{} -> ?", r.prefix),
    }
}

fn stats_cmd(args: &ClientArgs, json: bool) -> anyhow::Result<()> {
    use overpass::api::observe::{Counters, LatencyReport, LatencySummary, PeerList};
    let client = Client::from_args(args.api.as_deref(), args.token_file.as_deref())?;
    let counters: Counters = client.get("/api/v1/counters")?;
    let peers: PeerList = client.get("/api/v1/peers")?;
    let latency: LatencyReport = client.get("/api/v1/latency")?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "counters": counters, "peers": peers, "latency": latency
            }))?
        );
        return Ok(());
    }
    println!("counters:");
    for c in counters.events.iter().filter(|c| c.value != 0) {
        println!("  {:<28} {}", c.name, c.value);
    }
    println!("drops (total {}):", counters.total_drops);
    for c in counters.drops.iter().filter(|c| c.value != 0) {
        println!("  {:<28} {}", c.name, c.value);
    }
    println!("peers (route set generation {}):", peers.generation);
    for p in &peers.peers {
        println!(
            "  {:<12} {:<15} {:?} mtu {:<5} next hop {:<17} rx {} pkts / tx {} pkts / drops {}",
            p.name,
            p.underlay_ip,
            p.encap,
            p.mtu,
            p.next_hop_mac.as_deref().unwrap_or("unresolved"),
            p.counters.rx_packets,
            p.counters.tx_packets,
            p.counters.drops
        );
    }
    let line = |what: &str, s: &LatencySummary| {
        println!(
            "  {what:<22} n={:<9} p50 {:>7} p99 {:>7} p99.9 {:>7} p99.99 {:>7} max {:>7}",
            s.count,
            ns(s.p50_ns),
            ns(s.p99_ns),
            ns(s.p99_9_ns),
            ns(s.p99_99_ns),
            ns(s.max_ns)
        )
    };
    println!("latency (processing time inside the gateway):");
    line("all", &latency.total);
    for d in latency.directions.iter().filter(|d| d.summary.count > 0) {
        line(&d.direction, &d.summary);
    }
    for p in &latency.peers {
        line(
            &format!("peer {}", p.underlay_ip.as_deref().unwrap_or("?")),
            &p.summary,
        );
    }
    Ok(())
}

fn ns(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.1}ms", v as f64 / 1e6)
    } else if v >= 1_000 {
        format!("{:.1}us", v as f64 / 1e3)
    } else {
        format!("{v}ns")
    }
}

/// `overpass demo` runs `overpass-demo`, the test support's binary beside
/// this one (the product carries no test code), with the same arguments.
fn demo(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().context("locating the overpass binary")?;
    let demo = me.with_file_name("overpass-demo");
    if !demo.exists() {
        anyhow::bail!(
            "{} not found: the demo is part of the test support; build it with \
             `cargo build --release -p overpass-testkit` (./deploy/demo.sh does)",
            demo.display()
        );
    }
    let err = std::process::Command::new(&demo).args(args).exec();
    Err(anyhow::anyhow!("running {}: {err}", demo.display()))
}
