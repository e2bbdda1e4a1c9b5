//! Joining a cluster from its datastore: Flannel's etcd subnet manager.
//!
//! A `[[cluster]]` entry names an etcd (endpoints, TLS as flanneld's
//! `--etcd-*` options) and a key prefix (default `/coreos.com/network`).
//! The gateway then behaves as a flanneld node of that network:
//!
//! - [`join`] (blocking, before the dataplane starts) reads
//!   `<prefix>/config`, refuses a network it cannot serve, and takes its
//!   own subnet lease: the lease carrying its PublicIP if there is one,
//!   else the subnet it had before (kept in the state dir), else a free
//!   one picked as flanneld does; created with a transaction that succeeds
//!   only if the key does not exist, retried (never fatal) on a lost race.
//!   That subnet is the gateway's podCIDR.
//! - [`Member::run`] (a thread with its own tokio runtime) keeps the lease
//!   (renewed before expiry, re-registered if the key is deleted) and
//!   learns every other node's lease: list, then watch from the next
//!   revision; each change goes through [`Rib::change`], the hitless
//!   path. A watch that falls behind compaction, or a lost connection,
//!   re-lists and applies the difference. While etcd is unreachable the
//!   routes in force stay; [`Status`] says degraded.
//!
//! Routes a cluster owns are node routes whose name is `<cluster name>/<lease
//! key>` (e.g. `flannel/10.244.1.0-24`); see [`owner_of`]. The API refuses
//! to edit or delete them (409 naming the owner) and a reload keeps them.
//! Overlaps between sources: a route of the configuration or the API for
//! the very prefix a lease names wins, and the lease is not applied
//! (counted as a conflict and logged with both owners); a lease overlapping
//! the local podCIDR is never applied. Other overlaps (a shorter and a
//! longer prefix) are legal and resolved by longest match, as always.

mod member;
pub mod network;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, pod_cidr_is_unset};
use crate::control::rib::{ChangeError, RibError, RouteSpec};

pub use member::{Member, MemberHandle, join, join_all, join_all_until, run_all};

/// `[[cluster]]`: a Flannel network in etcd the gateway joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The route source name: routes learned here are owned by it
    /// (`<name>/<lease key>`). 1 to 20 characters of `[a-z0-9-]`.
    #[serde(default = "default_name")]
    pub name: String,
    /// etcd client URLs (flanneld's `--etcd-endpoints`), `http://` or
    /// `https://`.
    pub endpoints: Vec<String>,
    /// The etcd key prefix (flanneld's `--etcd-prefix`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// CA certificate (PEM) that signs etcd's server certificate
    /// (`--etcd-cafile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) (`--etcd-certfile`); with `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) (`--etcd-keyfile`); with `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Pin the gateway's subnet lease to this subnet (it must be one the
    /// network hands out). Unset: `gateway.pod_cidr` when given, else the
    /// lease carrying our PublicIP, the one kept in the state dir, or a
    /// free one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    /// The PublicIP published in the lease. Default `gateway.underlay_ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    /// Seconds of the etcd lease that holds the gateway's subnet (flanneld:
    /// 24 h). Renewed at ttl − min(1 h, ttl / 4). An active/standby pair
    /// uses a short one: the standby takes over at most this long after
    /// the active gateway died.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: u64,
}

impl ClusterConfig {
    /// A cluster at `endpoints` with every other key at its default (as a
    /// `[[cluster]]` entry giving only `endpoints`): name `flannel`, prefix
    /// `/coreos.com/network`, no TLS, nothing pinned, a 24 h lease.
    pub fn new(endpoints: Vec<String>) -> ClusterConfig {
        ClusterConfig {
            name: default_name(),
            endpoints,
            prefix: default_prefix(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            subnet: None,
            public_ip: None,
            lease_ttl: default_lease_ttl(),
        }
    }
}

fn default_name() -> String {
    "flannel".into()
}

fn default_prefix() -> String {
    "/coreos.com/network".into()
}

fn default_lease_ttl() -> u64 {
    86_400
}

/// The most `[[cluster]]` entries.
pub const MAX_CLUSTERS: usize = 8;

/// The longest `lease_ttl` (flanneld's 24 h).
pub const MAX_LEASE_TTL: u64 = 86_400;
/// The shortest `lease_ttl`: an active/standby pair's failover time (etcd
/// itself refuses leases shorter than 1.5 election ticks).
pub const MIN_LEASE_TTL: u64 = 2;

/// Checks the `[[cluster]]` entries; errors name the key (`cluster[0].endpoints`).
pub fn validate_config(config: &Config) -> Result<(), ConfigError> {
    let gw = &config.gateway;
    if config.cluster.is_empty() {
        if pod_cidr_is_unset(&gw.pod_cidr) {
            return Err(ConfigError::new(
                "gateway.pod_cidr",
                "required unless a [[cluster]] lease gives it",
            ));
        }
        return Ok(());
    }
    if config.cluster.len() > MAX_CLUSTERS {
        return Err(ConfigError::new(
            "cluster",
            format!(
                "{} [[cluster]] entries, at most {MAX_CLUSTERS} are supported",
                config.cluster.len()
            ),
        ));
    }
    for (i, c) in config.cluster.iter().enumerate() {
        if let Some(j) = config.cluster[..i].iter().position(|o| o.name == c.name) {
            return Err(ConfigError::new(
                format!("cluster[{i}].name"),
                format!(
                    "{:?} is cluster[{j}]'s name too: each cluster needs its own",
                    c.name
                ),
            ));
        }
        let key = |k: &str| format!("cluster[{i}].{k}");
        if c.name.is_empty()
            || c.name.len() > 20
            || !c
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(ConfigError::new(
                key("name"),
                format!("{:?} must be 1 to 20 characters of a-z, 0-9 and -", c.name),
            ));
        }
        if c.endpoints.is_empty() {
            return Err(ConfigError::new(
                key("endpoints"),
                "needs at least one etcd URL",
            ));
        }
        for (j, e) in c.endpoints.iter().enumerate() {
            let rest = e
                .strip_prefix("http://")
                .or_else(|| e.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                return Err(ConfigError::new(
                    format!("cluster[{i}].endpoints[{j}]"),
                    format!("{e:?} is not an http:// or https:// URL"),
                ));
            }
        }
        if !c.prefix.starts_with('/') || c.prefix.ends_with('/') || c.prefix.len() < 2 {
            return Err(ConfigError::new(
                key("prefix"),
                format!("{:?} must start with / and not end with /", c.prefix),
            ));
        }
        if c.cert_file.is_some() != c.key_file.is_some() {
            return Err(ConfigError::new(
                key(if c.cert_file.is_some() {
                    "key_file"
                } else {
                    "cert_file"
                }),
                "cert_file and key_file go together",
            ));
        }
        let tls = c.ca_file.is_some() || c.cert_file.is_some();
        if tls && c.endpoints.iter().any(|e| e.starts_with("http://")) {
            return Err(ConfigError::new(
                key("endpoints"),
                "TLS files are set: the endpoints must be https:// URLs",
            ));
        }
        if let Some(s) = c.subnet {
            if s.trunc() != s {
                return Err(ConfigError::new(
                    key("subnet"),
                    format!("host bits set in {s}"),
                ));
            }
            if i == 0 && !pod_cidr_is_unset(&gw.pod_cidr) && gw.pod_cidr != s {
                return Err(ConfigError::new(
                    key("subnet"),
                    format!(
                        "{s} differs from gateway.pod_cidr {}: the lease is the podCIDR",
                        gw.pod_cidr
                    ),
                ));
            }
        }
        if let Some(ip) = c.public_ip
            && (ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback())
        {
            return Err(ConfigError::new(
                key("public_ip"),
                format!("{ip} is not a unicast address"),
            ));
        }
        if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&c.lease_ttl) {
            return Err(ConfigError::new(
                key("lease_ttl"),
                format!(
                    "{} is out of range: seconds from {MIN_LEASE_TTL} to {MAX_LEASE_TTL}",
                    c.lease_ttl
                ),
            ));
        }
    }
    Ok(())
}

/// The route source that owns a route, by its node name: a cluster's
/// name for `<cluster>/<lease key>`, else `None` (configuration or API).
pub fn owner_of(node_name: &str) -> Option<&str> {
    let (owner, key) = node_name.split_once('/')?;
    network::parse_key(key).ok()?;
    Some(owner)
}

/// The state of one cluster membership, shared with the API and tests.
#[derive(Debug, Default)]
pub struct Status {
    /// The cluster's name (`[[cluster]] name`).
    pub name: String,
    /// The gateway's subnet lease (its podCIDR).
    pub subnet: std::sync::Mutex<Option<Ipv4Net>>,
    /// Connected and in sync (the watch runs); false while etcd is
    /// unreachable or a resync is pending: forwarding continues on the last
    /// known routes.
    pub synced: AtomicBool,
    /// Node routes this cluster has in the route set.
    pub routes: AtomicU64,
    /// Leases of a backend the gateway does not speak (ignored).
    pub ignored_type: AtomicU64,
    /// Leases that do not parse or validate (ignored; logged with the key).
    pub bad_leases: AtomicU64,
    /// Leases not applied because another source routes the prefix, or
    /// the RIB refused them (logged with both owners / the reason).
    pub conflicts: AtomicU64,
    /// Watch events applied.
    pub events: AtomicU64,
    /// Full re-lists (start, reconnect, compaction).
    pub resyncs: AtomicU64,
    /// Times the connection to etcd was lost.
    pub disconnects: AtomicU64,
    /// Successful renewals of our lease.
    pub renewals: AtomicU64,
    /// Renewal attempts that failed (retried).
    pub renew_failures: AtomicU64,
    /// Times our key was found deleted and put back.
    pub reregistrations: AtomicU64,
}

impl Status {
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// The gateway's subnet, once leased.
    pub fn subnet(&self) -> Option<Ipv4Net> {
        *self.subnet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `(metric suffix, help, value)` of every counter, for `/metrics`.
    pub fn counters(&self) -> Vec<(&'static str, &'static str, u64)> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            (
                "routes",
                "node routes learned from the datastore",
                g(&self.routes),
            ),
            (
                "ignored_type_total",
                "leases of a backend type the gateway does not speak",
                g(&self.ignored_type),
            ),
            (
                "bad_leases_total",
                "leases that do not parse or validate",
                g(&self.bad_leases),
            ),
            (
                "conflicts_total",
                "leases not applied: prefix owned by another source or refused",
                g(&self.conflicts),
            ),
            ("events_total", "watch events applied", g(&self.events)),
            (
                "resyncs_total",
                "full re-lists of the leases",
                g(&self.resyncs),
            ),
            (
                "disconnects_total",
                "connections to the datastore lost",
                g(&self.disconnects),
            ),
            (
                "renewals_total",
                "renewals of the gateway's own lease",
                g(&self.renewals),
            ),
            (
                "renew_failures_total",
                "failed renewal attempts (retried)",
                g(&self.renew_failures),
            ),
            (
                "reregistrations_total",
                "times the gateway's own lease key was deleted and put back",
                g(&self.reregistrations),
            ),
        ]
    }
}

/// Appends the clusters' metrics (Prometheus text): `overpass_cluster_synced`
/// (1 in sync, 0 degraded: the datastore is unreachable or a resync is
/// pending) and one family per [`Status::counters`] entry, labelled by
/// cluster.
pub fn render_metrics(o: &mut String, clusters: &[Arc<Status>]) {
    use std::fmt::Write as _;
    if clusters.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "# HELP overpass_cluster_synced 1 while in sync with the cluster datastore, 0 while degraded (unreachable or resynchronising; forwarding continues on the last known routes).\n# TYPE overpass_cluster_synced gauge"
    );
    for c in clusters {
        let _ = writeln!(
            o,
            "overpass_cluster_synced{{cluster=\"{}\"}} {}",
            c.name,
            u8::from(c.is_synced())
        );
    }
    let families = clusters[0].counters();
    for (i, (suffix, help, _)) in families.iter().enumerate() {
        let kind = if suffix.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(
            o,
            "# HELP overpass_cluster_{suffix} Cluster datastore: {help}.\n# TYPE overpass_cluster_{suffix} {kind}"
        );
        for c in clusters {
            let v = c.counters()[i].2;
            let _ = writeln!(o, "overpass_cluster_{suffix}{{cluster=\"{}\"}} {v}", c.name);
        }
    }
}

/// What the API needs to tell route sources apart and report the
/// datastores' health (see [`crate::api::ApiState::set_sources`]).
#[derive(Debug, Clone, Default)]
pub struct RouteSources {
    /// The configuration's route set as the gateway started with it: a
    /// route equal to one of these is labelled `config`.
    pub config: Vec<RouteSpec>,
    /// Every cluster membership.
    pub clusters: Vec<Arc<Status>>,
}

impl RouteSources {
    /// The source of a route: its cluster's name, `config`, or `api`.
    pub fn source_of(&self, route: &RouteSpec) -> String {
        if let Some(owner) = route.node.as_ref().and_then(|n| owner_of(&n.name)) {
            return owner.to_string();
        }
        if self.config.contains(route) {
            "config".into()
        } else {
            "api".into()
        }
    }

    /// The clusters not in sync with their datastore (unreachable or
    /// resynchronising): forwarding goes on with the last known routes.
    pub fn degraded(&self) -> Vec<&str> {
        self.clusters
            .iter()
            .filter(|s| !s.is_synced())
            .map(|s| s.name.as_str())
            .collect()
    }
}

/// Refuses an API change that would touch a route a cluster owns: a 409
/// naming the owner (the datastore is the truth for those; change the
/// lease there). `route` is the route in the set, or the one proposed.
pub fn refuse_owned(route: &RouteSpec) -> Result<(), ChangeError> {
    match route.node.as_ref().and_then(|n| owner_of(&n.name)) {
        Some(owner) => Err(ChangeError::Conflict(RibError::new(
            "prefix",
            format!(
                "{} is owned by cluster {owner} (its etcd subnet lease {}): change or delete \
                 the lease in the datastore, not through the API",
                route.prefix,
                route
                    .node
                    .as_ref()
                    .map(|n| n.name.as_str())
                    .unwrap_or_default()
            ),
        ))),
        None => Ok(()),
    }
}

/// A whole-set replacement from the API or a reload: `new` plus the
/// cluster-owned routes of `current` whose prefix `new` does not route (the
/// configuration or the API wins a prefix both route; each such loss is
/// logged). A cluster-owned route in `new` must be the very one in force
/// (a set read from the API and sent back); any other is refused (409).
pub fn keep_owned(
    current: &[RouteSpec],
    new: Vec<RouteSpec>,
) -> Result<Vec<RouteSpec>, ChangeError> {
    let mut out = Vec::with_capacity(new.len());
    for r in new {
        if refuse_owned(&r).is_err() {
            if current.contains(&r) {
                continue; // kept below, as it is
            }
            refuse_owned(&r)?;
        }
        out.push(r);
    }
    for r in current {
        let Some(owner) = r.node.as_ref().and_then(|n| owner_of(&n.name)) else {
            continue;
        };
        if out.iter().any(|x| x.prefix == r.prefix) {
            tracing::warn!(
                prefix = %r.prefix, cluster = owner,
                "a configured or API route takes the prefix of a cluster lease: the lease's \
                 route is withdrawn (configuration and API win)"
            );
            continue;
        }
        out.push(r.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[gateway]
underlay_ip = "198.18.0.1"
vtep_mac = "02:0f:00:00:00:01"

[[underlay]]
interface = "ul0"
"#;

    fn with(cluster: &str) -> Result<Config, ConfigError> {
        Config::from_toml(&format!("{BASE}\n[[cluster]]\n{cluster}\n"))
    }

    #[test]
    fn defaults_and_round_trip() {
        let c = with(r#"endpoints = ["http://127.0.0.1:2379"]"#).unwrap();
        let k = &c.cluster[0];
        assert_eq!(k.name, "flannel");
        assert_eq!(k.prefix, "/coreos.com/network");
        assert_eq!(k.lease_ttl, 86_400);
        assert!(pod_cidr_is_unset(&c.gateway.pod_cidr), "the lease gives it");
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml(BASE).unwrap_err();
        assert_eq!(e.key, "gateway.pod_cidr");
        for (body, key) in [
            ("endpoints = []", "cluster[0].endpoints"),
            (
                r#"endpoints = ["127.0.0.1:2379"]"#,
                "cluster[0].endpoints[0]",
            ),
            (
                r#"endpoints = ["http://e:2379"]
name = "Bad Name""#,
                "cluster[0].name",
            ),
            (
                r#"endpoints = ["http://e:2379"]
prefix = "coreos.com/network""#,
                "cluster[0].prefix",
            ),
            (
                r#"endpoints = ["https://e:2379"]
cert_file = "/c.pem""#,
                "cluster[0].key_file",
            ),
            (
                r#"endpoints = ["http://e:2379"]
ca_file = "/ca.pem""#,
                "cluster[0].endpoints",
            ),
            (
                r#"endpoints = ["http://e:2379"]
subnet = "10.244.0.1/24""#,
                "cluster[0].subnet",
            ),
            (
                r#"endpoints = ["http://e:2379"]
public_ip = "0.0.0.0""#,
                "cluster[0].public_ip",
            ),
            (
                r#"endpoints = ["http://e:2379"]
lease_ttl = 86401"#,
                "cluster[0].lease_ttl",
            ),
            (
                r#"endpoints = ["http://e:2379"]
etcd_endpoints = []"#,
                "cluster[0]",
            ),
        ] {
            let e = with(body).unwrap_err();
            assert!(e.key.starts_with(key), "{body}: {e}");
        }
        let two = format!(
            "{BASE}\n[[cluster]]\nendpoints = [\"http://a:1\"]\n[[cluster]]\nendpoints = [\"http://b:1\"]\n"
        );
        assert_eq!(Config::from_toml(&two).unwrap_err().key, "cluster[1].name");
        let two = two.replace(
            "[[cluster]]\nendpoints = [\"http://b:1\"]",
            "[[cluster]]\nname = \"b\"\nendpoints = [\"http://b:1\"]",
        );
        assert_eq!(Config::from_toml(&two).unwrap().cluster.len(), 2);
        // A pinned subnet must agree with gateway.pod_cidr.
        let pinned = BASE.replace("[gateway]", "[gateway]\npod_cidr = \"10.244.0.0/24\"");
        let e = Config::from_toml(&format!(
            "{pinned}\n[[cluster]]\nendpoints = [\"http://e:1\"]\nsubnet = \"10.244.5.0/24\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "cluster[0].subnet");
    }

    #[test]
    fn owners_come_from_route_names() {
        assert_eq!(owner_of("flannel/10.244.1.0-24"), Some("flannel"));
        assert_eq!(owner_of("node1"), None);
        assert_eq!(owner_of("a/b"), None);
    }
}
