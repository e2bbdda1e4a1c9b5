//! Route sources. Today: the configuration file, whose `[[peer]]` and
//! `[[pod]]` entries become a route set ([`config_routes`]), and the RIB
//! context (what the RIB must know of this host to validate a route set).

use std::collections::HashMap;

use anyhow::Context;
use ipnet::Ipv4Net;
use overpass_dataplane::fib::{LocalNode, PortId};
use overpass_dataplane::wire::ethernet::MacAddr;

use crate::config::Config;
use crate::control::ports::PortPlan;
use crate::control::rib::{NodeSpec, PodPort, PodSpec, Rib, RibContext, RibError, RouteSpec};
use crate::control::store::RoutesFile;
use crate::host::iface;

/// Why a gateway cannot start with the route set it was given.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InitialRibError {
    /// The persisted set (`routes.json`) no longer validates against this
    /// host and configuration (say, a pod interface went away). The caller
    /// decides what to do with the file (`[state] on_corrupt`).
    #[error("persisted route set (routes.json) no longer validates: {0}")]
    Persisted(RibError),
    /// The configuration's own set does not validate.
    #[error("{0}")]
    Config(RibError),
}

/// The RIB a gateway starts with: the persisted route set (and its
/// generation) when there is one, else the configuration's at generation 1.
pub fn initial_rib(
    ctx: RibContext,
    config: &Config,
    persisted: Option<RoutesFile>,
) -> Result<Rib, InitialRibError> {
    match persisted {
        Some(f) => {
            let n = f.routes.len();
            let rib = Rib::new(ctx, f.routes, f.generation).map_err(InitialRibError::Persisted)?;
            tracing::info!(
                routes = n,
                generation = f.generation,
                "loaded the persisted route set"
            );
            Ok(rib)
        }
        None => Rib::new(ctx, config_routes(config), 1).map_err(InitialRibError::Config),
    }
}

/// A RIB context for a gateway without a dataplane (`overpass api-only`):
/// no interface is read. The underlay MTU is taken as 1500, pod interfaces
/// are the configured ones with placeholder ports and host MACs. Route
/// validation otherwise runs exactly as in a real gateway.
pub fn offline_rib_context(config: &Config) -> RibContext {
    let pod_ports = config
        .pod
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let port = (i + 1) as PortId;
            (
                p.interface.clone(),
                PodPort {
                    port,
                    rx_ports: vec![port],
                    host_mac: MacAddr([0x02, 0, 0, 0, 0, (i + 1) as u8]),
                    mtu: 1500,
                },
            )
        })
        .collect();
    RibContext {
        local: LocalNode {
            pod_cidr: config.gateway.pod_cidr,
            underlay_ip: config.gateway.underlay_ip,
            underlay_mac: MacAddr([0x02, 0, 0, 0, 0, 0xfe]),
            vtep_mac: config.gateway.vtep_mac,
            outer_ttl: config.gateway.outer_ttl,
        },
        underlay_mtu: 1500,
        pod_ports,
        max_routes: config.gateway.max_routes,
    }
}

/// The route set a configuration describes: one route per `[[peer]]`
/// podCIDR and one /32 per `[[pod]]`.
pub fn config_routes(config: &Config) -> Vec<RouteSpec> {
    let mut routes: Vec<RouteSpec> = config
        .peer
        .iter()
        .map(|p| RouteSpec {
            prefix: p.pod_cidr,
            node: Some(NodeSpec {
                name: p.name.clone(),
                underlay_ip: p.underlay_ip,
                encap: p.encap,
                vni: p.vni,
                port: p.port,
                vtep_mac: p.vtep_mac,
                mtu: p.mtu,
            }),
            pod: None,
        })
        .collect();
    routes.extend(config.pod.iter().map(|p| RouteSpec {
        prefix: Ipv4Net::new(p.ip, 32).expect("/32 is a valid prefix length"),
        node: None,
        pod: Some(PodSpec {
            name: p.name.clone(),
            interface: p.interface.clone(),
            mac: p.mac,
        }),
    }));
    routes
}

/// What the RIB needs to know about this host: the underlay interface's
/// MAC and MTU, and the worker port and host-end MAC of every pod veth.
/// Reads the interfaces of the calling thread's network namespace.
pub fn rib_context(config: &Config, plan: &PortPlan) -> anyhow::Result<RibContext> {
    let ul = &config.underlay[0];
    let underlay_mac = iface::interface_mac(&ul.interface).context("underlay[0].interface")?;
    let underlay_mtu = iface::interface_mtu(&ul.interface).context("underlay[0].interface")?;
    let mut pod_ports = HashMap::new();
    for (i, p) in config.pod.iter().enumerate() {
        let host_mac =
            iface::interface_mac(&p.interface).with_context(|| format!("pod[{i}].interface"))?;
        // Same layout on every worker (see PortPlan).
        let port = (i + 1) as PortId;
        debug_assert_eq!(plan.specs[0][port as usize].ifname, p.interface);
        pod_ports.insert(
            p.interface.clone(),
            PodPort {
                port,
                rx_ports: vec![port],
                host_mac,
                mtu: iface::interface_mtu(&p.interface)
                    .with_context(|| format!("pod[{i}].interface"))?
                    .min(u16::MAX as u32) as u16,
            },
        );
    }
    Ok(RibContext {
        local: LocalNode {
            pod_cidr: config.gateway.pod_cidr,
            underlay_ip: config.gateway.underlay_ip,
            underlay_mac,
            vtep_mac: config.gateway.vtep_mac,
            outer_ttl: config.gateway.outer_ttl,
        },
        underlay_mtu: underlay_mtu.min(u16::MAX as u32) as u16,
        pod_ports,
        max_routes: config.gateway.max_routes,
    })
}
