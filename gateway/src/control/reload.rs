//! SIGHUP: re-reading the configuration file into a running gateway.
//!
//! The file's `[[peer]]` and `[[pod]]` entries become the route set, applied
//! like an API change: validated as a whole, persisted (when a state dir is
//! configured), published atomically, and acknowledged only once no worker
//! still uses the previous table — so forwarding never stops. A file that
//! does not parse or validate is refused with the offending key named, and
//! the running configuration stays as it was. Keys that shape the dataplane
//! itself (interfaces, namespace, pods' veths, cores, addresses) cannot
//! change under a running gateway: a change to them is reported as needing
//! a restart and otherwise ignored.
//!
//! Route changes made through the API that the file does not contain are
//! replaced: after a reload the file is the truth, as it is at a first
//! start without persisted state.

use std::path::Path;

use crate::config::Config;
use crate::control::rib::{ChangeError, Rib};
use crate::control::sources::config_routes;
use crate::control::store::Store;

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Generation of the route set now in force.
    pub generation: u64,
    pub routes: usize,
    /// Keys that changed but only take effect after a restart.
    pub restart_needed: Vec<String>,
}

/// Re-reads `path` and applies it to a gateway started with `running`.
pub fn reload(
    path: &Path,
    running: &Config,
    rib: &Rib,
    store: Option<&Store>,
) -> anyhow::Result<Reloaded> {
    let mut new = Config::load(path)?;
    crate::control::store::resolve_vtep_mac(&mut new, store)?;
    // A [[cluster]] lease gave the running podCIDR: the file leaves it out.
    if crate::config::pod_cidr_is_unset(&new.gateway.pod_cidr) && !new.cluster.is_empty() {
        new.gateway.pod_cidr = running.gateway.pod_cidr;
    }
    let restart_needed = restart_keys(running, &new);
    let routes = config_routes(&new);
    let n = routes.len();
    let peers = new.peer.len();
    // One RIB call: validated, persisted (the RIB's store), published, in
    // force on every worker when it returns.
    // Routes a [[cluster]] datastore owns stay: the file is the truth for
    // its own routes only (a [[peer]] taking a lease's prefix wins it).
    // Pods attached at run time (`[attach]`) are not in the file either:
    // their routes stay. They are the pod routes on interfaces the gateway
    // serves that the running configuration's `[[pod]]` entries do not name.
    let configured: std::collections::HashSet<&str> =
        running.pod.iter().map(|p| p.interface.as_str()).collect();
    let generation = rib
        .change(None, |current| {
            let ctx = rib.context();
            let attached: Vec<_> = current
                .iter()
                .filter(|r| {
                    r.pod.as_ref().is_some_and(|p| {
                        !configured.contains(p.interface.as_str())
                            && ctx.pod_ports.contains_key(&p.interface)
                    })
                })
                .cloned()
                .collect();
            *current = crate::cluster::keep_owned(current, routes)?;
            current.extend(attached);
            Ok(())
        })
        .map(|(generation, ())| generation)
        .map_err(|e| match e {
            ChangeError::Invalid(e) => anyhow::anyhow!(
                "{}: {}: {}",
                path.display(),
                config_key(&e.field, peers),
                e.message
            ),
            other => anyhow::anyhow!("{}: {other}", path.display()),
        })?;
    Ok(Reloaded {
        generation,
        routes: n,
        restart_needed,
    })
}

/// Maps a RIB field path (`routes[3].node.vni`) of a configuration's route
/// set back to the configuration key (`peer[3].vni`, or `pod[i].…` for the
/// /32 routes that follow the peers).
fn config_key(field: &str, peers: usize) -> String {
    let Some(rest) = field.strip_prefix("routes[") else {
        return field.to_string();
    };
    let Some((index, tail)) = rest.split_once(']') else {
        return field.to_string();
    };
    let Ok(i) = index.parse::<usize>() else {
        return field.to_string();
    };
    let tail = tail
        .strip_prefix(".node")
        .or_else(|| tail.strip_prefix(".pod"))
        .unwrap_or(tail);
    let tail = if tail == ".prefix" {
        if i < peers { ".pod_cidr" } else { ".ip" }
    } else {
        tail
    };
    if i < peers {
        format!("peer[{i}]{tail}")
    } else {
        format!("pod[{}]{tail}", i - peers)
    }
}

/// Top-level keys whose change needs a restart.
fn restart_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = vec![];
    let (a, b) = (&old.gateway, &new.gateway);
    for (key, changed) in [
        ("gateway.netns", a.netns != b.netns),
        ("gateway.pod_cidr", a.pod_cidr != b.pod_cidr),
        ("gateway.underlay_ip", a.underlay_ip != b.underlay_ip),
        ("gateway.vtep_mac", a.vtep_mac != b.vtep_mac),
        ("gateway.outer_ttl", a.outer_ttl != b.outer_ttl),
        ("gateway.cores", a.cores != b.cores),
        ("gateway.busy_poll", a.busy_poll != b.busy_poll),
        (
            "gateway.napi_busy_poll",
            a.napi_busy_poll != b.napi_busy_poll,
        ),
        (
            "gateway.napi_busy_poll_usecs",
            a.napi_busy_poll_usecs != b.napi_busy_poll_usecs,
        ),
        (
            "gateway.napi_busy_poll_budget",
            a.napi_busy_poll_budget != b.napi_busy_poll_budget,
        ),
        // Given to each worker's pipeline when it starts.
        ("gateway.rp_filter", a.rp_filter != b.rp_filter),
        ("gateway.max_routes", a.max_routes != b.max_routes),
        ("underlay", old.underlay != new.underlay),
        ("api", old.api != new.api),
        ("attach", old.attach != new.attach),
        ("state", old.state != new.state),
        // Memberships (connections, leases) are made at start.
        ("cluster", old.cluster != new.cluster),
    ] {
        if changed {
            keys.push(key.to_string());
        }
    }
    // Pods are routes, but their veths carry sockets bound at start.
    let ifaces = |c: &Config| {
        c.pod
            .iter()
            .map(|p| p.interface.clone())
            .collect::<Vec<_>>()
    };
    if ifaces(old) != ifaces(new) {
        keys.push("pod[].interface".to_string());
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rp_filter_change_needs_a_restart() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/overpass.toml"
        ))
        .unwrap();
        let old = Config::from_toml(&text).unwrap();
        let mut new = old.clone();
        assert!(restart_keys(&old, &new).is_empty());
        new.gateway.rp_filter = overpass_dataplane::pipeline::RpFilter::Off;
        assert_eq!(restart_keys(&old, &new), ["gateway.rp_filter"]);
    }

    #[test]
    fn rib_fields_map_back_to_config_keys() {
        assert_eq!(config_key("routes[1].node.vni", 2), "peer[1].vni");
        assert_eq!(config_key("routes[0].prefix", 2), "peer[0].pod_cidr");
        assert_eq!(config_key("routes[2].prefix", 2), "pod[0].ip");
        assert_eq!(config_key("routes[3].pod.interface", 2), "pod[1].interface");
        assert_eq!(config_key("store", 2), "store");
    }
}
