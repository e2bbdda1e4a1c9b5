//! A Flannel-style node agent for the test bed (in-process as
//! [`FlannelNode`], or as the `overpass-flannel-node` binary).
//!
//! It does, for one node namespace, what flanneld's etcd subnet manager
//! and VXLAN backend do (see shared INTEROP.md, "Flannel, VXLAN backend"):
//! - makes sure `flannel.1` exists with the node's VtepMAC and PublicIP
//!   (VNI and port from the network config, no learning, MTU 1450, the
//!   subnet's `.0/32` on it);
//! - registers the node's subnet lease `{PublicIP, BackendType: vxlan,
//!   BackendData{VNI, VtepMAC}}` under an etcd lease (`--ttl`), created
//!   with a `Version(key) == 0` transaction (reused when it carries our
//!   PublicIP), renewed at three quarters of its life;
//! - lists `<prefix>/subnets/` and watches from the next revision; for
//!   every other vxlan lease (the gateway's included) installs route
//!   `S via S.0 dev flannel.1 onlink`, neighbour `S.0 lladdr M nud
//!   permanent` and FDB `M dev flannel.1 dst P`, and removes them on delete
//!   using what it cached for the key; a watch past compaction re-lists and
//!   applies the difference. Leases of other backends are ignored, as a
//!   vxlan flanneld ignores them.
//!
//! Its subnet is given ([`AgentSpec::subnet`]), as the bed's pods are
//! built in it. It reports `ready` once its lease is registered and the
//! leases listed at start are installed, and each later applied event as
//! `applied put|delete <key>`. Stopping it ([`FlannelNode::kill`]) is a
//! crash: no goodbye, its lease stays until it expires or is deleted.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};
use ipnet::Ipv4Net;

/// What one node agent is.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentSpec {
    /// etcd endpoint.
    #[arg(long)]
    pub etcd: String,
    #[arg(long, default_value = "/coreos.com/network")]
    pub prefix: String,
    /// The node's network namespace.
    #[arg(long)]
    pub netns: String,
    /// The node's underlay address (its PublicIP); must be on its eth0.
    #[arg(long)]
    pub public_ip: Ipv4Addr,
    /// The node's VtepMAC (flannel.1's address).
    #[arg(long)]
    pub vtep_mac: String,
    /// The node's subnet.
    #[arg(long)]
    pub subnet: Ipv4Net,
    /// Seconds of the etcd lease (flanneld: 86400).
    #[arg(long, default_value_t = 86400)]
    pub ttl: i64,
}

type Args = AgentSpec;

/// What a lease installed, kept per key (a delete event carries nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    subnet: Ipv4Net,
    public_ip: Ipv4Addr,
    vtep_mac: String,
}

/// A node agent running on a thread of this process.
#[derive(Debug)]
pub struct FlannelNode {
    pub spec: AgentSpec,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl FlannelNode {
    /// Starts the agent and waits (up to 30 s) until it is ready.
    pub fn start(spec: AgentSpec) -> anyhow::Result<FlannelNode> {
        let (tx, lines) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let s = spec.clone();
        let thread = std::thread::Builder::new()
            .name(format!("flannel-{}", spec.netns))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(run(s, tx, stopped))
            })?;
        let mut node = FlannelNode {
            spec,
            stop: Some(stop),
            thread: Some(thread),
            lines,
        };
        node.wait_line("ready", Duration::from_secs(30))?;
        Ok(node)
    }

    /// Waits for a line starting with `prefix` (`ready`, `applied put
    /// 10.244.0.0-24`); fails if the agent ended.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return Ok(()),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "agent {} did not say {prefix:?} within {timeout:?}",
                        self.spec.netns
                    )
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let r = self.thread.take().map(|t| t.join());
                    bail!("agent {} ended: {r:?}", self.spec.netns)
                }
            }
        }
    }

    /// Stops the agent as a crash would: no goodbye (its lease stays in
    /// etcd, its kernel entries stay in the namespace).
    pub fn kill(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FlannelNode {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The network config a test bed cluster uses: 10.244.0.0/16, /24
/// subnets, vxlan VNI 1 on port 8472 (Port 0: the Linux default).
pub fn network_config() -> String {
    r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":0}}"#
        .to_string()
}

fn sh(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Node {
    args: Args,
    key: String,
    value: String,
    vni: u32,
    port: u16,
    installed: HashMap<String, Entry>,
}

impl Node {
    fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut v = vec!["ip", "-n", &self.args.netns];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// flannel.1 as flanneld's VXLAN backend makes it; recreated when its
    /// MAC or local address differ from ours (a node that came back
    /// renumbered).
    fn ensure_device(&self) -> anyhow::Result<()> {
        let want_mac = self.args.vtep_mac.to_lowercase();
        let local = self.args.public_ip.to_string();
        if let Ok(d) = self.ip(&["-d", "link", "show", "flannel.1"]) {
            if d.contains(&want_mac)
                && d.contains(&format!("local {local} "))
                && d.contains(&format!("id {} ", self.vni))
                && d.contains(&format!("dstport {} ", self.port))
            {
                return Ok(());
            }
            self.ip(&["link", "del", "flannel.1"])?;
        }
        self.ip(&[
            "link",
            "add",
            "flannel.1",
            "address",
            &want_mac,
            "mtu",
            "1450",
            "type",
            "vxlan",
            "id",
            &self.vni.to_string(),
            "local",
            &local,
            "dev",
            "eth0",
            "dstport",
            &self.port.to_string(),
            "nolearning",
        ])?;
        self.ip(&[
            "addr",
            "add",
            &format!("{}/32", self.args.subnet.network()),
            "dev",
            "flannel.1",
        ])?;
        self.ip(&["link", "set", "flannel.1", "up"])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            &self.args.netns,
            "ethtool",
            "-K",
            "flannel.1",
            "tx",
            "off",
        ])?;
        Ok(())
    }

    fn install(&mut self, name: &str, e: Entry) -> anyhow::Result<()> {
        if self.installed.get(name) == Some(&e) {
            return Ok(());
        }
        self.remove(name)?;
        let s0 = e.subnet.network().to_string();
        self.ip(&[
            "route",
            "replace",
            &e.subnet.to_string(),
            "via",
            &s0,
            "dev",
            "flannel.1",
            "onlink",
        ])?;
        self.ip(&[
            "neigh",
            "replace",
            &s0,
            "lladdr",
            &e.vtep_mac,
            "dev",
            "flannel.1",
            "nud",
            "permanent",
        ])?;
        sh(&[
            "bridge",
            "-n",
            &self.args.netns,
            "fdb",
            "replace",
            &e.vtep_mac,
            "dev",
            "flannel.1",
            "dst",
            &e.public_ip.to_string(),
        ])?;
        self.installed.insert(name.to_string(), e);
        Ok(())
    }

    fn remove(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(e) = self.installed.remove(name) else {
            return Ok(());
        };
        let s0 = e.subnet.network().to_string();
        // Each may already be gone (a device recreated); not an error.
        let _ = self.ip(&["route", "del", &e.subnet.to_string()]);
        let _ = self.ip(&["neigh", "del", &s0, "dev", "flannel.1"]);
        // One FDB entry per (VtepMAC, PublicIP): a node with several
        // leases (a gateway's transit leases) keeps it while any is left.
        let shared = self
            .installed
            .values()
            .any(|o| o.vtep_mac == e.vtep_mac && o.public_ip == e.public_ip);
        if !shared {
            let _ = sh(&[
                "bridge",
                "-n",
                &self.args.netns,
                "fdb",
                "del",
                &e.vtep_mac,
                "dev",
                "flannel.1",
                "dst",
                &e.public_ip.to_string(),
            ]);
        }
        Ok(())
    }

    /// A peer lease as a vxlan flanneld reads it; None for other backends
    /// and bad values (flanneld logs and skips them).
    fn entry(name: &str, value: &[u8]) -> Option<Entry> {
        let (addr, len) = name.split('&').next()?.split_once('-')?;
        let subnet = Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
        let v: serde_json::Value = serde_json::from_slice(value).ok()?;
        if v["BackendType"] != "vxlan" {
            return None;
        }
        Some(Entry {
            subnet,
            public_ip: v["PublicIP"].as_str()?.parse().ok()?,
            vtep_mac: v["BackendData"]["VtepMAC"].as_str()?.to_lowercase(),
        })
    }

    fn apply(&mut self, name: &str, value: Option<&[u8]>) -> anyhow::Result<()> {
        match value.and_then(|v| Self::entry(name, v)) {
            Some(e) => self.install(name, e),
            None => self.remove(name),
        }
    }
}

/// Runs an agent until `stop` says so; reports on `out`.
pub async fn run(
    args: Args,
    out: std::sync::mpsc::Sender<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut client = Client::connect([args.etcd.as_str()], None)
        .await
        .map_err(|e| anyhow!("connecting to {}: {e}", args.etcd))?;
    let config_key = format!("{}/config", args.prefix);
    let cfg = client.get(config_key.as_str(), None).await?;
    let cfg: serde_json::Value = serde_json::from_slice(
        cfg.kvs()
            .first()
            .ok_or_else(|| anyhow!("{config_key} is not set"))?
            .value(),
    )?;
    let vni = cfg["Backend"]["VNI"].as_u64().unwrap_or(1) as u32;
    let port = match cfg["Backend"]["Port"].as_u64().unwrap_or(0) {
        0 => 8472,
        p => p as u16,
    };
    let subnets = format!("{}/subnets/", args.prefix);
    let key = format!(
        "{subnets}{}-{}",
        args.subnet.network(),
        args.subnet.prefix_len()
    );
    let value = serde_json::json!({
        "PublicIP": args.public_ip.to_string(),
        "BackendType": "vxlan",
        "BackendData": {"VNI": vni, "VtepMAC": args.vtep_mac.to_lowercase()},
    })
    .to_string();
    let mut node = Node {
        args,
        key,
        value,
        vni,
        port,
        installed: HashMap::new(),
    };
    node.ensure_device()?;
    register(&mut client, &node).await?;
    let ttl = node.args.ttl;
    let mut renew = tokio::time::interval(Duration::from_secs((ttl as u64 * 3 / 4).max(1)));
    renew.tick().await;
    let mut ready = false;
    loop {
        // List, apply the difference, watch from the next revision.
        let list = client
            .get(subnets.as_str(), Some(GetOptions::new().with_prefix()))
            .await?;
        let rev = list.header().map_or(0, |h| h.revision());
        let mut present: HashMap<String, Vec<u8>> = HashMap::new();
        for kv in list.kvs() {
            let k = kv.key_str()?;
            if k != node.key {
                present.insert(
                    k.trim_start_matches(&subnets).to_string(),
                    kv.value().to_vec(),
                );
            }
        }
        let gone: Vec<String> = node
            .installed
            .keys()
            .filter(|k| !present.contains_key(*k))
            .cloned()
            .collect();
        for k in gone {
            node.remove(&k)?;
        }
        for (k, v) in &present {
            node.apply(k, Some(v))?;
        }
        if !ready {
            let _ = out.send("ready".into());
            ready = true;
        }
        let mut watch = client
            .watch(
                subnets.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(rev + 1),
                ),
            )
            .await?;
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = renew.tick() => register(&mut client, &node).await?,
                m = watch.message() => {
                    let Some(resp) = m? else { bail!("watch ended") };
                    if resp.compact_revision() > 0 {
                        eprintln!("watch fell behind compaction at {}: re-listing", resp.compact_revision());
                        break;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let k = kv.key_str()?.to_string();
                        let deleted = ev.event_type() == EventType::Delete;
                        if k == node.key {
                            if deleted {
                                // flanneld re-registers when its lease goes.
                                register(&mut client, &node).await?;
                            }
                            continue;
                        }
                        let name = k.trim_start_matches(&subnets).to_string();
                        node.apply(&name, (!deleted).then(|| kv.value()))?;
                        let _ = out.send(format!("applied {} {name}", if deleted { "delete" } else { "put" }));
                    }
                }
            }
        }
    }
}

/// Takes or renews the node's lease: created only if absent, or put again
/// (new etcd lease) while it still carries our PublicIP; a subnet held by
/// another PublicIP is waited for.
async fn register(client: &mut Client, node: &Node) -> anyhow::Result<()> {
    loop {
        let lease = client.lease_grant(node.args.ttl, None).await?.id();
        let put = TxnOp::put(
            node.key.as_str(),
            node.value.as_str(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let create = Txn::new()
            .when([Compare::version(node.key.as_str(), CompareOp::Equal, 0)])
            .and_then([put.clone()]);
        if client.txn(create).await?.succeeded() {
            return Ok(());
        }
        let current = client.get(node.key.as_str(), None).await?;
        let ours = current.kvs().first().is_some_and(|kv| {
            serde_json::from_slice::<serde_json::Value>(kv.value())
                .is_ok_and(|v| v["PublicIP"] == node.args.public_ip.to_string())
        });
        if ours {
            let replace = Txn::new()
                .when([Compare::version(
                    node.key.as_str(),
                    CompareOp::Equal,
                    current.kvs()[0].version(),
                )])
                .and_then([put]);
            if client.txn(replace).await?.succeeded() {
                return Ok(());
            }
        }
        let _ = client.lease_revoke(lease).await;
        eprintln!(
            "subnet {} is held by another node; waiting",
            node.args.subnet
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
