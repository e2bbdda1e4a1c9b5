//! One cluster membership: the gateway's own lease and the peers' leases,
//! against a real etcd (v3 API, `etcd-client`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use overpass_dataplane::wire::ethernet::MacAddr;

use super::network::{self, Network, Peer};
use super::{ClusterConfig, Status};
use crate::config::{Config, pod_cidr_is_unset};
use crate::control::rib::{ChangeError, NodeSpec, Rib, RibError, RouteSpec};

/// Timeout of one unary etcd call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection backoff: first wait, and the longest.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How often a pinned subnet held by another node is looked at again
/// (a standby waiting for the active gateway's lease to lapse).
const PINNED_POLL: Duration = Duration::from_millis(200);

/// `cluster-<name>.json` in the state dir: the subnet this gateway leased,
/// so a restart asks for the same one even if its lease has lapsed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubnetFile {
    version: u32,
    subnet: Ipv4Net,
    public_ip: Ipv4Addr,
}

/// A joined cluster: the network, our lease, and the connection.
pub struct Member {
    cfg: ClusterConfig,
    network: Network,
    subnet: Ipv4Net,
    public_ip: Ipv4Addr,
    /// Full key of our lease and the value we keep there.
    key: String,
    value: Vec<u8>,
    /// The etcd lease our key (and our transit leases) are held by.
    lease: i64,
    /// The etcd lease of a previous run whose key we reused: revoked once
    /// our transit leases have moved to ours.
    stale_lease: Option<i64>,
    /// When our lease must be renewed next.
    renew_at: Instant,
    status: Arc<Status>,
    runtime: tokio::runtime::Runtime,
    client: Client,
}

/// Joins the first `[[cluster]]` of `config` (see [`join_all`]); `None`
/// without one.
pub fn join(config: &mut Config, state_dir: Option<&Path>) -> anyhow::Result<Option<Member>> {
    Ok(join_all(config, state_dir)?.into_iter().next())
}

/// Joins every `[[cluster]]` of `config`, in order: connects, reads the
/// network, takes the gateway's subnet lease (blocking, retried while etcd
/// is unreachable or a pinned subnet is held by another node). The first
/// cluster's lease is the podCIDR: `gateway.pod_cidr` pins it, or is set
/// to it. Every other cluster's lease is pinned by its own `subnet`, or
/// chosen as flanneld does. `state_dir` keeps each subnet for the next
/// start. A network the gateway cannot serve is an error naming the key
/// and the reason.
pub fn join_all(config: &mut Config, state_dir: Option<&Path>) -> anyhow::Result<Vec<Member>> {
    join_all_until(config, state_dir, &AtomicBool::new(false))
}

/// As [`join_all`], giving up (an error) once `stop` is set: a stop
/// requested while the gateway waits for etcd, or for a pinned subnet
/// another gateway holds (a standby), ends the wait.
pub fn join_all_until(
    config: &mut Config,
    state_dir: Option<&Path>,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<Member>> {
    let mut members = vec![];
    for (i, cfg) in config.cluster.clone().into_iter().enumerate() {
        let pinned =
            match i {
                0 => cfg.subnet.or((!pod_cidr_is_unset(&config.gateway.pod_cidr))
                    .then_some(config.gateway.pod_cidr)),
                _ => cfg.subnet,
            };
        let m = join_one(config, i, cfg, pinned, state_dir, stop)?;
        if i == 0 {
            config.gateway.pod_cidr = m.subnet;
        }
        members.push(m);
    }
    Ok(members)
}

fn join_one(
    config: &Config,
    index: usize,
    cfg: ClusterConfig,
    pinned: Option<Ipv4Net>,
    state_dir: Option<&Path>,
    stop: &AtomicBool,
) -> anyhow::Result<Member> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("overpass-cluster-{}", cfg.name))
        .build()
        .context("starting the cluster runtime")?;
    let vtep_mac = config.gateway.vtep_mac;
    let public_ip = cfg.public_ip.unwrap_or(config.gateway.underlay_ip);
    let file = state_dir.map(|d| d.join(format!("cluster-{}.json", cfg.name)));
    let remembered = match &file {
        Some(f) => read_subnet_file(f)?,
        None => None,
    };
    let options = connect_options(&cfg, index)?;
    let status = Arc::new(Status {
        name: cfg.name.clone(),
        ..Status::default()
    });
    let member = runtime.block_on(async {
        let mut backoff = BACKOFF_MIN;
        loop {
            // Why the last try failed: logged, and the reason a stop gives.
            let last = match Client::connect(&cfg.endpoints, Some(options.clone())).await {
                Ok(client) => {
                    match acquire(&cfg, index, client.clone(), (public_ip, vtep_mac), pinned, remembered.as_ref(), stop).await {
                        Ok(got) => return Ok::<_, anyhow::Error>((client, got)),
                        Err(Acquire::Fatal(e)) => return Err(e),
                        Err(Acquire::Retry(e)) => {
                            tracing::warn!(
                                cluster = %cfg.name, "joining the cluster: {e:#}; retrying in {backoff:?}"
                            );
                            format!("{e:#}")
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        cluster = %cfg.name, endpoints = ?cfg.endpoints,
                        "connecting to etcd: {e}; retrying in {backoff:?}"
                    );
                    format!("connecting to etcd: {e}")
                }
            };
            sleep_unless_stopped(backoff, stop)
                .await
                .map_err(|e| anyhow!("{e}; cluster[{index}] ({}), the last try: {last}", cfg.name))?;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })?;
    let (client, (network, subnet, key, value, lease, stale_lease)) = member;
    if let (Some(dir), Some(f)) = (state_dir, &file) {
        let body = serde_json::to_vec_pretty(&SubnetFile {
            version: 1,
            subnet,
            public_ip,
        })?;
        crate::control::store::write_atomic(dir, &file_name(f), &body)
            .with_context(|| format!("writing {}", f.display()))?;
    }
    *status.subnet.lock().unwrap_or_else(|e| e.into_inner()) = Some(subnet);
    tracing::info!(
        cluster = %cfg.name, %subnet, %public_ip, %vtep_mac, backend = network.backend.name(),
        vni = network.vni, port = network.port, key = %key,
        "joined the cluster{}", if index == 0 { ": our subnet lease is the podCIDR" } else { "" }
    );
    Ok(Member {
        renew_at: Instant::now() + renew_after(cfg.lease_ttl),
        cfg,
        network,
        subnet,
        public_ip,
        key,
        value,
        lease,
        stale_lease,
        status,
        runtime,
        client,
    })
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("cluster", &self.cfg.name)
            .field("subnet", &self.subnet)
            .field("public_ip", &self.public_ip)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_subnet_file(path: &Path) -> anyhow::Result<Option<SubnetFile>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{}: not a subnet file of this version", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("reading {}: {e}", path.display())),
    }
}

/// When a lease of `ttl` seconds is renewed: flanneld renews an hour
/// before expiry; shorter leases at three quarters of their life.
fn renew_after(ttl: u64) -> Duration {
    let ttl = Duration::from_secs(ttl);
    ttl - (ttl / 4).min(Duration::from_secs(3600))
}

/// How soon a failed renewal is retried: often enough for several tries
/// before the lease could lapse.
fn renew_retry(ttl: u64) -> Duration {
    (Duration::from_secs(ttl) / 20).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

fn connect_options(cfg: &ClusterConfig, index: usize) -> anyhow::Result<ConnectOptions> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if cfg.ca_file.is_some() || cfg.cert_file.is_some() {
        let mut tls = TlsOptions::new();
        let read = |p: &PathBuf, key: &str| {
            std::fs::read(p)
                .with_context(|| format!("cluster[{index}].{key}: reading {}", p.display()))
        };
        if let Some(ca) = &cfg.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "ca_file")?));
        }
        if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "cert_file")?,
                read(key, "key_file")?,
            ));
        }
        o = o.with_tls(tls);
    }
    Ok(o)
}

enum Acquire {
    /// The configuration or the network cannot work: stop the start.
    Fatal(anyhow::Error),
    /// etcd trouble, a lost race, a pinned subnet held by another node.
    Retry(anyhow::Error),
}

impl From<etcd_client::Error> for Acquire {
    fn from(e: etcd_client::Error) -> Acquire {
        Acquire::Retry(anyhow!("etcd: {e}"))
    }
}

async fn timed<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, anyhow::Error> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| anyhow!("etcd {what}: {e}")),
        Err(_) => Err(anyhow!("etcd {what}: no answer within {CALL_TIMEOUT:?}")),
    }
}

/// Reads the network and takes our lease (see [`join`]).
async fn acquire(
    cfg: &ClusterConfig,
    index: usize,
    mut client: Client,
    (public_ip, vtep_mac): (Ipv4Addr, MacAddr),
    pinned: Option<Ipv4Net>,
    remembered: Option<&SubnetFile>,
    stop: &AtomicBool,
) -> Result<(Network, Ipv4Net, String, Vec<u8>, i64, Option<i64>), Acquire> {
    let config_key = format!("{}/config", cfg.prefix);
    let resp = timed("get", client.get(config_key.as_str(), None))
        .await
        .map_err(Acquire::Retry)?;
    let Some(kv) = resp.kvs().first() else {
        return Err(Acquire::Retry(anyhow!(
            "{config_key} does not exist yet (the network is not configured)"
        )));
    };
    let network =
        Network::parse(kv.value()).map_err(|e| Acquire::Fatal(anyhow!("{config_key}: {e}")))?;
    if let Some(p) = pinned
        && !network.holds(&p)
    {
        return Err(Acquire::Fatal(anyhow!(
            "cluster[{index}].subnet{} {p} is not a /{} inside the cluster's Network {} ({config_key})",
            if index == 0 {
                " (or gateway.pod_cidr)"
            } else {
                ""
            },
            network.subnet_len,
            network.network
        )));
    }
    let value = network::own_value(public_ip, &network, vtep_mac);
    let subnets_prefix = format!("{}/subnets/", cfg.prefix);
    loop {
        let resp = timed(
            "list",
            client.get(
                subnets_prefix.as_str(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await
        .map_err(Acquire::Retry)?;
        // Taken subnets, and who holds them.
        let mut taken: HashMap<Ipv4Net, Option<Ipv4Addr>> = HashMap::new();
        let mut leases: HashMap<Ipv4Net, i64> = HashMap::new();
        for kv in resp.kvs() {
            let name = kv
                .key_str()
                .unwrap_or("")
                .trim_start_matches(&subnets_prefix);
            let Ok(subnet) = network::parse_key(name) else {
                continue;
            };
            let holder = serde_json::from_slice::<network::LeaseValue>(kv.value())
                .ok()
                .map(|v| v.public_ip);
            taken.insert(subnet, holder);
            leases.insert(subnet, kv.lease());
        }
        let ours = taken
            .iter()
            .filter(|(s, ip)| **ip == Some(public_ip) && network.holds(s))
            .map(|(s, _)| *s)
            .min();
        let choice = match (pinned, ours) {
            (Some(p), _) => match taken.get(&p) {
                Some(Some(ip)) if *ip == public_ip => Choice::Reuse(p),
                Some(holder) => {
                    tracing::info!(
                        cluster = %cfg.name, subnet = %p, holder = ?holder,
                        "our pinned subnet is leased by another node: waiting for that lease to end"
                    );
                    sleep_unless_stopped(PINNED_POLL, stop)
                        .await
                        .map_err(Acquire::Fatal)?;
                    continue;
                }
                None => Choice::Create(p),
            },
            (None, Some(s)) => Choice::Reuse(s),
            (None, None) => {
                let remembered = remembered
                    .map(|f| f.subnet)
                    .filter(|s| network.holds(s) && !taken.contains_key(s));
                match remembered.or_else(|| pick_free(&network, &taken)) {
                    Some(s) => Choice::Create(s),
                    None => {
                        return Err(Acquire::Retry(anyhow!(
                            "no free /{} subnet left in {} ({}..{})",
                            network.subnet_len,
                            network.network,
                            network.subnet_min,
                            network.subnet_max
                        )));
                    }
                }
            }
        };
        let (subnet, create) = match choice {
            Choice::Reuse(s) => (s, false),
            Choice::Create(s) => (s, true),
        };
        let key = format!("{subnets_prefix}{}", network::key_name(&subnet));
        let lease = timed(
            "lease grant",
            client.lease_grant(cfg.lease_ttl as i64, None),
        )
        .await
        .map_err(Acquire::Retry)?
        .id();
        let put = TxnOp::put(
            key.as_str(),
            value.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let txn = if create {
            Txn::new()
                .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                .and_then([put])
        } else {
            // Ours: replace it only while it still carries our PublicIP.
            Txn::new().and_then([put])
        };
        let resp = timed("txn", client.txn(txn))
            .await
            .map_err(Acquire::Retry)?;
        if resp.succeeded() {
            // Reusing our lease of a previous run: its etcd lease may still
            // hold our transit leases; it is revoked once they have moved.
            let stale = leases
                .get(&subnet)
                .copied()
                .filter(|&old| !create && old != 0 && old != lease);
            tracing::info!(
                cluster = %cfg.name, %key, lease = format!("{lease:x}"), ttl = cfg.lease_ttl,
                reused = !create, "subnet lease taken"
            );
            return Ok((network, subnet, key, value, lease, stale));
        }
        // Another node created it between our list and our transaction:
        // flanneld exits here; we list again and pick another.
        tracing::warn!(cluster = %cfg.name, %key, "lost the race for this subnet to another node; picking again");
        let _ = timed("lease revoke", client.lease_revoke(lease)).await;
    }
}

/// Sleeps `d` (in steps of at most 100 ms), or fails once `stop` is set.
async fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            bail!("stopped while joining the cluster");
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(100))).await;
    }
}

enum Choice {
    Reuse(Ipv4Net),
    Create(Ipv4Net),
}

/// As flanneld: a random one of (up to) the first 100 free subnets.
fn pick_free(network: &Network, taken: &HashMap<Ipv4Net, Option<Ipv4Addr>>) -> Option<Ipv4Net> {
    use std::hash::BuildHasher;
    let free: Vec<Ipv4Net> = network
        .subnets()
        .filter(|s| !taken.contains_key(s))
        .take(100)
        .collect();
    if free.is_empty() {
        return None;
    }
    let r = std::collections::hash_map::RandomState::new().hash_one(free.len()) as usize;
    Some(free[r % free.len()])
}

/// A running membership (see [`Member::run`]).
#[derive(Debug)]
pub struct MemberHandle {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    status: Arc<Status>,
}

impl MemberHandle {
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// Stops following the cluster. The lease is left in etcd (it expires
    /// on its own; a restart takes it back), and so are the routes.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MemberHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Member {
    /// The subnet leased (the gateway's podCIDR).
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// The network read from `<prefix>/config`.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Follows the cluster on a thread of its own until stopped: keeps our
    /// lease, applies every peer lease to `rib` (through [`Rib::change`]).
    pub fn run(self, rib: Rib) -> anyhow::Result<MemberHandle> {
        let mut v = run_all(vec![self], rib)?;
        Ok(v.remove(0))
    }

    fn spawn(
        self,
        rib: Rib,
        notify: Arc<tokio::sync::Notify>,
        others: Vec<Arc<tokio::sync::Notify>>,
    ) -> anyhow::Result<MemberHandle> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let status = self.status.clone();
        let name = format!("overpass-cl-{}", self.cfg.name);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let Member {
                    cfg,
                    network,
                    subnet,
                    key,
                    value,
                    lease,
                    stale_lease,
                    renew_at,
                    status,
                    runtime,
                    client,
                    ..
                } = self;
                let mut follower = Follower {
                    subnets_prefix: format!("{}/subnets/", cfg.prefix),
                    cfg,
                    network,
                    subnet,
                    key,
                    value,
                    lease,
                    stale_lease,
                    renew_at,
                    status,
                    client,
                    rib,
                    stopped,
                    last_seen: None,
                    resume: None,
                    notify,
                    others,
                };
                runtime.block_on(follower.run());
            })
            .context("spawning the cluster thread")?;
        Ok(MemberHandle {
            stop,
            thread: Some(thread),
            status,
        })
    }
}

/// Runs every membership (see [`Member::run`]). With two or more, each
/// cluster's nodes are told to route the others' subnets through the
/// gateway: for every route a cluster learned, the gateway keeps a lease
/// for that subnet in each other cluster, carrying its own PublicIP and
/// VtepMAC in that cluster's backend (a transit lease, held by its own
/// etcd lease there and created only where no node holds the key). The
/// gateway then carries the transit traffic, converting between the two
/// overlays.
pub fn run_all(members: Vec<Member>, rib: Rib) -> anyhow::Result<Vec<MemberHandle>> {
    let notifies: Vec<Arc<tokio::sync::Notify>> = members.iter().map(|_| Arc::default()).collect();
    members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let others = notifies
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n.clone())
                .collect();
            m.spawn(rib.clone(), notifies[i].clone(), others)
        })
        .collect()
}

struct Follower {
    cfg: ClusterConfig,
    network: Network,
    subnet: Ipv4Net,
    key: String,
    value: Vec<u8>,
    lease: i64,
    stale_lease: Option<i64>,
    /// Woken when another cluster changed its routes (transit leases).
    notify: Arc<tokio::sync::Notify>,
    /// The other memberships' wake-ups.
    others: Vec<Arc<tokio::sync::Notify>>,
    subnets_prefix: String,
    renew_at: Instant,
    status: Arc<Status>,
    client: Client,
    rib: Rib,
    stopped: tokio::sync::watch::Receiver<bool>,
    /// The last revision seen on the watch (None: not watching yet, or a
    /// re-list is due).
    last_seen: Option<i64>,
    /// Where the next session resumes the watch (None: list first).
    resume: Option<i64>,
}

/// How a session with etcd ended.
enum End {
    Stopped,
    /// The watch fell behind compaction: re-list at once.
    Compacted,
}

impl Follower {
    async fn run(&mut self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.session(&mut backoff).await {
                Ok(End::Stopped) => return,
                Ok(End::Compacted) => {
                    self.status.synced.store(false, Ordering::Relaxed);
                    self.last_seen = None;
                    self.resume = None;
                    continue;
                }
                Err(e) => {
                    self.resume = self.last_seen.take().map(|r| r + 1);
                    self.status.synced.store(false, Ordering::Relaxed);
                    self.status.disconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        cluster = %self.cfg.name,
                        "datastore unreachable or failing: {e:#}; forwarding continues on the \
                         last known routes; reconnecting in {backoff:?}"
                    );
                }
            }
            // Renewal must not wait for the reconnection: while etcd is
            // down nothing can be renewed anyway, and the first session
            // after it returns renews if due.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stopped.changed() => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Ensure our lease, list, reconcile, then watch until something ends
    /// the session.
    async fn session(&mut self, backoff: &mut Duration) -> anyhow::Result<End> {
        if *self.stopped.borrow() {
            return Ok(End::Stopped);
        }
        let start = match self.resume.take() {
            Some(rev) => self.resume_at(rev).await?,
            None => self.relist().await? + 1,
        };
        // Put under our current etcd lease (transit leases of a previous
        // run may still hang on its lease), then let that lease go.
        self.sync_proxies(self.stale_lease.is_some()).await?;
        if let Some(old) = self.stale_lease.take() {
            let _ = timed("lease revoke", self.client.lease_revoke(old)).await;
        }
        self.status.synced.store(true, Ordering::Relaxed);
        *backoff = BACKOFF_MIN;
        // From here on, a lost connection resumes the watch where it
        // stopped (etcd replays what was missed) instead of re-listing.
        self.last_seen = Some(start - 1);
        let mut stream = timed(
            "watch",
            self.client.watch(
                self.subnets_prefix.as_str(),
                Some(WatchOptions::new().with_prefix().with_start_revision(start)),
            ),
        )
        .await?;
        loop {
            let renew = tokio::time::sleep_until(self.renew_at);
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = renew => {
                    if let Err(e) = self.renew().await {
                        self.status.renew_failures.fetch_add(1, Ordering::Relaxed);
                        // Retry well before the lease could lapse.
                        let retry = renew_retry(self.cfg.lease_ttl);
                        tracing::warn!(
                            cluster = %self.cfg.name, key = %self.key,
                            "renewing our subnet lease failed: {e:#}; retrying in {retry:?}"
                        );
                        self.renew_at = Instant::now() + retry;
                    }
                    continue;
                }
                _ = self.stopped.changed() => return Ok(End::Stopped),
                _ = self.notify.notified() => {
                    self.sync_proxies(false).await?;
                    continue;
                }
            };
            let resp = msg
                .map_err(|e| anyhow!("watch: {e}"))?
                .ok_or_else(|| anyhow!("watch: the stream ended"))?;
            if resp.compact_revision() > 0 {
                tracing::warn!(
                    cluster = %self.cfg.name, compacted = resp.compact_revision(),
                    "the watch fell behind compaction: re-listing and applying the difference"
                );
                return Ok(End::Compacted);
            }
            if resp.canceled() {
                bail!("watch canceled: {}", resp.cancel_reason());
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                self.last_seen = Some(self.last_seen.unwrap_or(0).max(kv.mod_revision()));
                let key = kv.key_str().unwrap_or("").to_string();
                let deleted = event.event_type() == EventType::Delete;
                if key == self.key {
                    if deleted {
                        self.reregister("deleted (or its lease expired)").await?;
                    } else if kv.value() != self.value.as_slice() {
                        tracing::error!(
                            cluster = %self.cfg.name, %key,
                            value = %String::from_utf8_lossy(kv.value()),
                            "another writer replaced our subnet lease"
                        );
                    }
                    continue;
                }
                let Some(name) = key.strip_prefix(&self.subnets_prefix) else {
                    continue;
                };
                self.status.events.fetch_add(1, Ordering::Relaxed);
                if deleted {
                    self.apply_delete(name).await;
                    // It may have been one of our transit leases (expired):
                    // put it back if it is still wanted.
                    if !self.others.is_empty() {
                        self.sync_proxies(false).await?;
                    }
                } else {
                    self.apply_put(name, kv.value()).await;
                }
            }
        }
    }

    /// Lists the leases, makes sure ours is there, applies the difference
    /// to the route set; returns the list's revision.
    async fn relist(&mut self) -> anyhow::Result<i64> {
        let resp = timed(
            "list",
            self.client.get(
                self.subnets_prefix.as_str(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut leases: Vec<(String, Vec<u8>)> = vec![];
        let mut ours_present = false;
        for kv in resp.kvs() {
            let key = kv.key_str().unwrap_or("");
            if key == self.key {
                ours_present = kv.value() == self.value.as_slice();
                continue;
            }
            if let Some(name) = key.strip_prefix(&self.subnets_prefix) {
                leases.push((name.to_string(), kv.value().to_vec()));
            }
        }
        if !ours_present {
            self.reregister("missing from the list").await?;
        } else if Instant::now() >= self.renew_at {
            self.renew().await?;
        }
        self.reconcile(&leases).await;
        self.status.resyncs.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            cluster = %self.cfg.name, revision, leases = leases.len(),
            routes = self.status.routes.load(Ordering::Relaxed),
            "in sync with the datastore; watching from the next revision"
        );
        Ok(revision)
    }

    /// After a lost connection: makes sure our lease is there, and resumes
    /// the watch at `rev` (what was missed is replayed; if it was compacted
    /// away meanwhile, etcd says so and the session re-lists).
    async fn resume_at(&mut self, rev: i64) -> anyhow::Result<i64> {
        let ours = timed("get", self.client.get(self.key.as_str(), None)).await?;
        let present = ours
            .kvs()
            .first()
            .is_some_and(|kv| kv.value() == self.value.as_slice());
        if !present {
            self.reregister("missing after the reconnection").await?;
        } else if Instant::now() >= self.renew_at {
            self.renew().await?;
        }
        tracing::info!(
            cluster = %self.cfg.name, revision = rev,
            "reconnected to the datastore: resuming the watch where it stopped"
        );
        Ok(rev)
    }

    /// Makes this cluster's transit leases match the routes the other
    /// clusters own: one lease per such subnet, with our value, held by our
    /// etcd lease; created only where no node holds the key, deleted only
    /// while it is still ours. `force` puts every one again (after a
    /// renewal moved us to a new etcd lease).
    async fn sync_proxies(&mut self, force: bool) -> anyhow::Result<()> {
        if self.others.is_empty() {
            return Ok(());
        }
        let me = self.cfg.name.clone();
        let desired: std::collections::BTreeSet<String> = self
            .rib
            .routes()
            .1
            .iter()
            .filter_map(|r| r.node.as_ref())
            .filter_map(|n| {
                let (owner, key) = n.name.split_once('/')?;
                (super::owner_of(&n.name).is_some() && owner != me).then(|| key.to_string())
            })
            .collect();
        let resp = timed(
            "list",
            self.client.get(
                self.subnets_prefix.as_str(),
                Some(GetOptions::new().with_prefix()),
            ),
        )
        .await?;
        let mut current: HashMap<String, bool> = HashMap::new();
        for kv in resp.kvs() {
            let key = kv.key_str().unwrap_or("");
            if key == self.key {
                continue;
            }
            if let Some(name) = key.strip_prefix(&self.subnets_prefix) {
                current.insert(name.to_string(), kv.value() == self.value.as_slice());
            }
        }
        for name in &desired {
            let key = format!("{}{name}", self.subnets_prefix);
            let ours = current.get(name).copied();
            if ours == Some(false) {
                continue; // a node of this cluster holds that subnet
            }
            if ours == Some(true) && !force {
                continue;
            }
            let txn = Txn::new()
                .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key.as_str(),
                    self.value.clone(),
                    Some(PutOptions::new().with_lease(self.lease)),
                )])
                .or_else([TxnOp::txn(
                    Txn::new()
                        .when([Compare::value(
                            key.as_str(),
                            CompareOp::Equal,
                            self.value.clone(),
                        )])
                        .and_then([TxnOp::put(
                            key.as_str(),
                            self.value.clone(),
                            Some(PutOptions::new().with_lease(self.lease)),
                        )]),
                )]);
            timed("txn", self.client.txn(txn)).await?;
            if ours.is_none() {
                tracing::info!(
                    cluster = %self.cfg.name, %key,
                    "transit lease: this cluster's nodes route that subnet (another cluster's) through the gateway"
                );
            }
        }
        for (name, ours) in &current {
            if !*ours || desired.contains(name) {
                continue;
            }
            let key = format!("{}{name}", self.subnets_prefix);
            let txn = Txn::new()
                .when([Compare::value(
                    key.as_str(),
                    CompareOp::Equal,
                    self.value.clone(),
                )])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            timed("txn", self.client.txn(txn)).await?;
            tracing::info!(cluster = %self.cfg.name, %key, "transit lease withdrawn");
        }
        Ok(())
    }

    /// Puts our lease back with a fresh etcd lease, only if the key is
    /// absent (another node may have taken the subnet meanwhile: then it
    /// is an error, logged, retried by the session).
    async fn reregister(&mut self, why: &str) -> anyhow::Result<()> {
        let lease = timed(
            "lease grant",
            self.client.lease_grant(self.cfg.lease_ttl as i64, None),
        )
        .await?
        .id();
        let txn = Txn::new()
            .when([Compare::version(self.key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                self.key.as_str(),
                self.value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = timed("txn", self.client.txn(txn)).await?;
        if !resp.succeeded() {
            let _ = timed("lease revoke", self.client.lease_revoke(lease)).await;
            bail!(
                "our subnet lease {} was {why}, and another node holds the key now: \
                 the gateway keeps its podCIDR {} and retries",
                self.key,
                self.subnet
            );
        }
        self.status.reregistrations.fetch_add(1, Ordering::Relaxed);
        self.lease = lease;
        self.renew_at = Instant::now() + renew_after(self.cfg.lease_ttl);
        self.sync_proxies(true).await?;
        tracing::warn!(
            cluster = %self.cfg.name, key = %self.key, lease = format!("{lease:x}"),
            "our subnet lease was {why}: registered it again"
        );
        Ok(())
    }

    /// flanneld's renewal: a new etcd lease, the key put again under it
    /// (only while it is still ours).
    async fn renew(&mut self) -> anyhow::Result<()> {
        let lease = timed(
            "lease grant",
            self.client.lease_grant(self.cfg.lease_ttl as i64, None),
        )
        .await?
        .id();
        let txn = Txn::new()
            .when([Compare::value(
                self.key.as_str(),
                CompareOp::Equal,
                self.value.clone(),
            )])
            .and_then([TxnOp::put(
                self.key.as_str(),
                self.value.clone(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
        let resp = timed("txn", self.client.txn(txn)).await?;
        if !resp.succeeded() {
            let _ = timed("lease revoke", self.client.lease_revoke(lease)).await;
            return self.reregister("gone at renewal").await;
        }
        self.status.renewals.fetch_add(1, Ordering::Relaxed);
        let old = std::mem::replace(&mut self.lease, lease);
        self.renew_at = Instant::now() + renew_after(self.cfg.lease_ttl);
        // Transit leases move to the new etcd lease too; then the old one,
        // holding nothing now, goes.
        self.sync_proxies(true).await?;
        if old != 0 && old != lease {
            let _ = timed("lease revoke", self.client.lease_revoke(old)).await;
        }
        tracing::info!(
            cluster = %self.cfg.name, key = %self.key, lease = format!("{lease:x}"),
            ttl = self.cfg.lease_ttl, "subnet lease renewed"
        );
        Ok(())
    }

    /// The route a peer lease asks for, or `None` (ignored: counted and
    /// logged with the key).
    fn route_for(&self, name: &str, value: &[u8]) -> Option<RouteSpec> {
        if value == self.value.as_slice() {
            // One of our own transit leases (or an old lease of ours).
            return None;
        }
        match network::parse_peer(&self.network, name, value) {
            Ok(Peer::Node {
                subnet,
                public_ip,
                encap,
                vni,
                port,
                vtep_mac,
            }) => Some(RouteSpec {
                prefix: subnet,
                node: Some(NodeSpec {
                    name: self.route_name(name),
                    underlay_ip: public_ip,
                    encap,
                    vni,
                    port,
                    vtep_mac,
                    mtu: None,
                }),
                pod: None,
            }),
            Ok(Peer::OtherType(t)) => {
                self.status.ignored_type.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    cluster = %self.cfg.name, key = %format!("{}{name}", self.subnets_prefix),
                    backend = %t, "lease of a backend type the gateway does not speak: ignored"
                );
                None
            }
            Err(e) => {
                self.status.bad_leases.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    cluster = %self.cfg.name, key = %format!("{}{name}", self.subnets_prefix),
                    "bad lease ignored: {e}"
                );
                None
            }
        }
    }

    fn route_name(&self, key_name: &str) -> String {
        format!("{}/{key_name}", self.cfg.name)
    }

    fn owned(&self, r: &RouteSpec) -> bool {
        r.node
            .as_ref()
            .and_then(|n| n.name.split_once('/'))
            .is_some_and(|(owner, _)| owner == self.cfg.name)
    }

    /// One RIB change off the async thread (it fsyncs and waits for the
    /// workers' grace period).
    async fn change(
        &self,
        edit: impl FnOnce(&mut Vec<RouteSpec>) -> Result<(), ChangeError> + Send + 'static,
    ) -> Result<(), ChangeError> {
        let rib = self.rib.clone();
        let name = self.cfg.name.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = rib.change(None, edit).map(|_| ());
            let owned = rib
                .routes()
                .1
                .iter()
                .filter(|r| {
                    r.node
                        .as_ref()
                        .and_then(|n| n.name.split_once('/'))
                        .is_some_and(|(o, _)| o == name)
                })
                .count();
            (r, owned)
        })
        .await
        .unwrap_or_else(|e| {
            (
                Err(ChangeError::Persist(format!("route change task: {e}"))),
                0,
            )
        });
        self.status.routes.store(result.1 as u64, Ordering::Relaxed);
        if result.0.is_ok() {
            for n in &self.others {
                n.notify_one();
            }
        }
        result.0
    }

    async fn apply_put(&self, name: &str, value: &[u8]) {
        let Some(route) = self.route_for(name, value) else {
            // What the key held before is no longer valid either.
            self.apply_delete(name).await;
            return;
        };
        let full = self.route_name(name);
        let owner = self.cfg.name.clone();
        let r = route.clone();
        let result = self
            .change(move |routes| {
                routes.retain(|x| x.node.as_ref().is_none_or(|n| n.name != full));
                if let Some(other) = routes.iter().find(|x| x.prefix == r.prefix) {
                    return Err(ChangeError::Conflict(RibError::new(
                        "prefix",
                        format!(
                            "{} is already routed by {} (source {}): the route of the \
                             configuration or the API wins over cluster {owner}",
                            r.prefix,
                            describe(other),
                            source_of(other)
                        ),
                    )));
                }
                routes.push(r);
                Ok(())
            })
            .await;
        match result {
            Ok(()) => tracing::info!(
                cluster = %self.cfg.name, key = %name, prefix = %route.prefix,
                node = %route.node.as_ref().map(|n| n.underlay_ip.to_string()).unwrap_or_default(),
                "lease applied: route in force"
            ),
            Err(e) => {
                self.status.conflicts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(cluster = %self.cfg.name, key = %name, "lease not applied: {e}");
                if !matches!(e, ChangeError::Conflict(_)) {
                    // Whatever this key routed before no longer holds.
                    self.apply_delete(name).await;
                }
            }
        }
    }

    async fn apply_delete(&self, name: &str) {
        let full = self.route_name(name);
        let present = self
            .rib
            .routes()
            .1
            .iter()
            .any(|r| r.node.as_ref().is_some_and(|n| n.name == full));
        if !present {
            return;
        }
        let f = full.clone();
        match self
            .change(move |routes| {
                routes.retain(|x| x.node.as_ref().is_none_or(|n| n.name != f));
                Ok(())
            })
            .await
        {
            Ok(()) => {
                tracing::info!(cluster = %self.cfg.name, key = %name, "lease gone: route removed")
            }
            Err(e) => {
                tracing::error!(cluster = %self.cfg.name, key = %name, "removing the route failed: {e}")
            }
        }
    }

    /// Makes the owned routes what `leases` say: one change when it
    /// validates, else lease by lease (so one bad lease never holds the
    /// others back).
    async fn reconcile(&self, leases: &[(String, Vec<u8>)]) {
        let mut desired: HashMap<String, RouteSpec> = HashMap::new();
        for (name, value) in leases {
            if let Some(r) = self.route_for(name, value) {
                desired.insert(self.route_name(name), r);
            }
        }
        let (_, current) = self.rib.routes();
        let owned: HashMap<String, &RouteSpec> = current
            .iter()
            .filter(|r| self.owned(r))
            .map(|r| {
                (
                    r.node
                        .as_ref()
                        .expect("owned routes are node routes")
                        .name
                        .clone(),
                    r,
                )
            })
            .collect();
        let stale: Vec<String> = owned
            .iter()
            .filter(|(n, r)| desired.get(*n) != Some(**r))
            .map(|(n, _)| n.clone())
            .collect();
        let missing: Vec<RouteSpec> = desired
            .iter()
            .filter(|(n, r)| owned.get(*n) != Some(r))
            .map(|(_, r)| r.clone())
            .collect();
        if stale.is_empty() && missing.is_empty() {
            let n = owned.len() as u64;
            self.status.routes.store(n, Ordering::Relaxed);
            return;
        }
        tracing::info!(
            cluster = %self.cfg.name, remove = stale.len(), add = missing.len(),
            "applying the difference between the datastore and the route set"
        );
        let (s, m) = (stale.clone(), missing.clone());
        let whole = self
            .change(move |routes| {
                routes.retain(|x| x.node.as_ref().is_none_or(|n| !s.contains(&n.name)));
                for r in m {
                    if routes.iter().any(|x| x.prefix == r.prefix) {
                        return Err(ChangeError::Conflict(RibError::new(
                            "prefix",
                            format!("{} is routed by another source", r.prefix),
                        )));
                    }
                    routes.push(r);
                }
                Ok(())
            })
            .await;
        if whole.is_ok() {
            return;
        }
        // Remove what is stale, then add lease by lease.
        let s = stale.clone();
        if let Err(e) = self
            .change(move |routes| {
                routes.retain(|x| x.node.as_ref().is_none_or(|n| !s.contains(&n.name)));
                Ok(())
            })
            .await
        {
            tracing::error!(cluster = %self.cfg.name, "removing stale cluster routes failed: {e}");
        }
        for r in missing {
            let name = r.node.as_ref().expect("node route").name.clone();
            let key = name
                .split_once('/')
                .map(|(_, k)| k)
                .unwrap_or(&name)
                .to_string();
            if let Some((_, v)) = leases.iter().find(|(n, _)| *n == key) {
                self.apply_put(&key, v).await;
            }
        }
    }
}

/// The source of a route, for messages: its cluster, or config/API.
fn source_of(r: &RouteSpec) -> String {
    match r.node.as_ref().and_then(|n| super::owner_of(&n.name)) {
        Some(owner) => format!("cluster {owner}"),
        None => "configuration or API".into(),
    }
}

fn describe(r: &RouteSpec) -> String {
    match (&r.node, &r.pod) {
        (Some(n), _) => format!("node {} ({})", n.name, n.underlay_ip),
        (_, Some(p)) => format!("pod {}", p.name),
        _ => "?".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_before_expiry() {
        assert_eq!(renew_after(86_400), Duration::from_secs(86_400 - 3600));
        assert_eq!(renew_after(20), Duration::from_secs(15));
        assert_eq!(renew_after(2), Duration::from_millis(1500));
        assert_eq!(renew_retry(2), Duration::from_millis(100));
        assert_eq!(renew_retry(86_400), Duration::from_secs(30));
    }
}
