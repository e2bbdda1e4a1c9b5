//! Read-side endpoints: peers, pods, interfaces, counters, latency
//! histograms, and Prometheus `/metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorBody, parse_query};
use crate::afxdp::latency::{ALL_DIRECTIONS, LatencySnapshot, direction_name, parse_direction};
use overpass_dataplane::counters::{CounterKind, DropReason, Event, PeerStat};
use overpass_dataplane::fib::Encap;
use overpass_dataplane::fib::NextHop;

/// Per-peer counters, summed over workers, since the node joined the route
/// set (a node that leaves and comes back starts again from zero).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames from this peer that were dropped.
    pub drops: u64,
}

/// A remote node the route set uses.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerInfo {
    pub name: String,
    pub underlay_ip: String,
    pub encap: Encap,
    pub vni: u32,
    pub port: u16,
    pub vtep_mac: String,
    /// Effective tunnel MTU: the override, or underlay MTU minus overhead.
    pub mtu: u16,
    /// Underlay next-hop MAC from the neighbour table; null until resolved.
    pub next_hop_mac: Option<String>,
    /// Counter slot: kept while the node is in the route set; a removed
    /// node's slot may later be given to another node.
    pub slot: u16,
    /// Prefixes routed to this node.
    pub prefixes: Vec<String>,
    pub counters: PeerCounters,
}

/// `GET /api/v1/peers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerList {
    /// Generation of the route set the list comes from.
    pub generation: u64,
    pub peers: Vec<PeerInfo>,
}

/// A local pod.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PodInfo {
    pub name: String,
    pub ip: String,
    pub mac: String,
    /// Host end of the pod's veth.
    pub interface: String,
    /// MAC of the host end (source MAC toward the pod).
    pub host_mac: String,
    /// Worker port frames to the pod leave on.
    pub tx_port: u16,
    /// Worker ports frames from the pod arrive on (one per veth RX queue).
    pub rx_ports: Vec<u16>,
}

/// `GET /api/v1/pods`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PodList {
    pub generation: u64,
    pub pods: Vec<PodInfo>,
}

/// An AF_XDP socket on one queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SocketInfo {
    pub queue: u32,
    /// `zero-copy` or `copy`.
    pub xsk_mode: String,
}

/// A dataplane interface.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InterfaceInfo {
    pub name: String,
    /// `underlay` or `pod`.
    pub role: String,
    /// XDP attach mode: `native` or `generic`.
    pub xdp_mode: String,
    pub sockets: Vec<SocketInfo>,
}

/// A worker and the core it is pinned to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    pub worker: usize,
    pub core: usize,
}

/// `GET /api/v1/interfaces`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InterfaceList {
    /// `dataplane`, or `api-only` (no interfaces).
    pub mode: String,
    pub interfaces: Vec<InterfaceInfo>,
    pub workers: Vec<WorkerInfo>,
}

/// One named counter.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Counter {
    pub name: String,
    pub description: String,
    pub value: u64,
}

/// `GET /api/v1/counters`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Counters {
    /// Forwarding events (received, decapsulated, encapsulated, …).
    pub events: Vec<Counter>,
    /// Every drop reason, zero or not.
    pub drops: Vec<Counter>,
    pub total_drops: u64,
    /// XDP steering counters (empty without a dataplane).
    pub xdp: Vec<Counter>,
}

/// Percentiles of one histogram, in nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ns: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p99_9_ns: u64,
    pub p99_99_ns: u64,
    pub max_ns: u64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            min_ns: h.min(),
            mean_ns: h.mean(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p99_9_ns: h.value_at_quantile(0.999),
            p99_99_ns: h.value_at_quantile(0.9999),
            max_ns: h.max(),
        }
    }
}

/// Latency of one direction.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DirectionLatency {
    /// `decap`, `encap`, `transit`, `local` or `none`.
    pub direction: String,
    pub summary: LatencySummary,
}

/// Latency of packets to or from one peer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerLatency {
    pub slot: u16,
    /// Null if no current route uses the node.
    pub underlay_ip: Option<String>,
    pub name: Option<String>,
    pub summary: LatencySummary,
}

/// `GET /api/v1/latency`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LatencyReport {
    /// What is measured.
    pub metric: String,
    /// Start of the accumulation (process start or last reset), Unix seconds.
    pub since: f64,
    /// When this report was taken, Unix seconds.
    pub taken: f64,
    pub total: LatencySummary,
    pub directions: Vec<DirectionLatency>,
    pub peers: Vec<PeerLatency>,
}

/// One histogram bucket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Bucket {
    /// Highest value (ns) equivalent to the bucket's values.
    pub value_ns: u64,
    pub count: u64,
}

/// `GET /api/v1/latency/histogram`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistogramReport {
    /// `total`, `direction=<name>` or `peer=<underlay ip>`.
    pub selector: String,
    pub since: f64,
    pub summary: LatencySummary,
    /// Every non-empty bucket at the histogram's resolution.
    pub buckets: Vec<Bucket>,
}

/// `POST /api/v1/latency/reset`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResetResult {
    pub since: f64,
}

fn unix(t: std::time::SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// List the remote nodes with their counters and effective MTU.
#[utoipa::path(get, path = "/api/v1/peers", tag = "dataplane",
    responses(
        (status = 200, description = "Peers", body = PeerList),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn list_peers(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<PeerList>, ApiError> {
    st.auth.read(&headers)?;
    let table = st.rib.fib().current();
    let dp = &st.dataplane;
    let peers = table
        .peers
        .iter()
        .enumerate()
        .map(|(i, p)| PeerInfo {
            name: p.name.clone(),
            underlay_ip: p.underlay_ip.to_string(),
            encap: p.encap,
            vni: p.vni,
            port: p.port,
            vtep_mac: p.vtep_mac.to_string(),
            mtu: p.mtu,
            next_hop_mac: p.next_hop_mac.map(|m| m.to_string()),
            slot: p.slot,
            prefixes: table
                .routes
                .iter()
                .filter(|r| r.next_hop == NextHop::Peer(i as u32))
                .map(|r| r.prefix.to_string())
                .collect(),
            counters: {
                let c = dp.peer_counts(p);
                PeerCounters {
                    rx_packets: c[PeerStat::RxPackets as usize],
                    rx_bytes: c[PeerStat::RxBytes as usize],
                    tx_packets: c[PeerStat::TxPackets as usize],
                    tx_bytes: c[PeerStat::TxBytes as usize],
                    drops: c[PeerStat::Drops as usize],
                }
            },
        })
        .collect();
    Ok(Json(PeerList {
        generation: table.generation,
        peers,
    }))
}

/// List the local pods.
#[utoipa::path(get, path = "/api/v1/pods", tag = "dataplane",
    responses(
        (status = 200, description = "Pods", body = PodList),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn list_pods(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<PodList>, ApiError> {
    st.auth.read(&headers)?;
    let (generation, routes) = st.rib.routes();
    let ctx = st.rib.context();
    let pods = routes
        .iter()
        .filter_map(|r| r.pod.as_ref().map(|p| (r, p)))
        .map(|(r, p)| {
            let port = ctx.pod_ports.get(&p.interface);
            PodInfo {
                name: p.name.clone(),
                ip: r.prefix.network().to_string(),
                mac: p.mac.to_string(),
                interface: p.interface.clone(),
                host_mac: port.map(|pp| pp.host_mac.to_string()).unwrap_or_default(),
                tx_port: port.map_or(0, |pp| pp.port),
                rx_ports: port.map(|pp| pp.rx_ports.clone()).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Json(PodList { generation, pods }))
}

/// List the dataplane's interfaces: XDP mode, AF_XDP sockets and their
/// bind mode (zero-copy or copy), and worker pinning.
#[utoipa::path(get, path = "/api/v1/interfaces", tag = "dataplane",
    responses(
        (status = 200, description = "Interfaces", body = InterfaceList),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn list_interfaces(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<InterfaceList>, ApiError> {
    st.auth.read(&headers)?;
    let info = &st.dataplane.info;
    let interfaces = info
        .xdp
        .iter()
        .enumerate()
        .map(|(i, (name, mode))| InterfaceInfo {
            name: name.clone(),
            // Gateway::start attaches the underlay first, then the pods.
            role: if i == 0 { "underlay" } else { "pod" }.to_string(),
            xdp_mode: mode.as_str().to_string(),
            sockets: info
                .xsk
                .iter()
                .filter_map(|(port, m)| {
                    let (ifname, queue) = port.rsplit_once('/')?;
                    (ifname == name).then(|| SocketInfo {
                        queue: queue.parse().unwrap_or(0),
                        xsk_mode: match m {
                            crate::afxdp::xsk::XskMode::ZeroCopy => "zero-copy",
                            crate::afxdp::xsk::XskMode::Copy => "copy",
                        }
                        .to_string(),
                    })
                })
                .collect(),
        })
        .collect();
    Ok(Json(InterfaceList {
        mode: st.mode.to_string(),
        interfaces,
        workers: info
            .pinning
            .iter()
            .map(|&(worker, core)| WorkerInfo { worker, core })
            .collect(),
    }))
}

/// Every counter: forwarding events, every drop reason, XDP steering.
#[utoipa::path(get, path = "/api/v1/counters", tag = "dataplane",
    responses(
        (status = 200, description = "Counters", body = Counters),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn get_counters(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Counters>, ApiError> {
    st.auth.read(&headers)?;
    Ok(Json(counters(&st)))
}

fn counters(st: &AppState) -> Counters {
    let s = st.dataplane.snapshot();
    Counters {
        events: Event::all()
            .map(|e| Counter {
                name: e.name().to_string(),
                description: e.description().to_string(),
                value: s.event_count(e),
            })
            .collect(),
        drops: DropReason::all()
            .map(|r| Counter {
                name: r.name().to_string(),
                description: r.description().to_string(),
                value: s.drop_count(r),
            })
            .collect(),
        total_drops: s.total_drops(),
        xdp: st
            .dataplane
            .xdp_counters()
            .into_iter()
            .map(|(name, value)| Counter {
                name: name.to_string(),
                description: String::new(),
                value,
            })
            .collect(),
    }
}

/// Slot → (underlay ip, name) of the current table's peers.
fn peer_names(st: &AppState) -> HashMap<u16, (Ipv4Addr, String)> {
    st.rib
        .fib()
        .current()
        .peers
        .iter()
        .map(|p| (p.slot, (p.underlay_ip, p.name.clone())))
        .collect()
}

const METRIC: &str = "per-packet processing time inside the gateway (poll round carrying the packet: receive to transmit queued), ns";

/// Latency percentiles: total, per direction, per peer.
#[utoipa::path(get, path = "/api/v1/latency", tag = "latency",
    responses(
        (status = 200, description = "Latency summaries", body = LatencyReport),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn get_latency(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<LatencyReport>, ApiError> {
    st.auth.read(&headers)?;
    let snap = st.dataplane.latency.snapshot();
    let names = peer_names(&st);
    Ok(Json(LatencyReport {
        metric: METRIC.to_string(),
        since: unix(snap.since),
        taken: unix(snap.taken),
        total: LatencySummary::of(&snap.total()),
        directions: snap
            .directions
            .iter()
            .map(|(d, h)| DirectionLatency {
                direction: direction_name(*d).to_string(),
                summary: LatencySummary::of(h),
            })
            .collect(),
        peers: snap
            .peers
            .iter()
            .map(|(slot, h)| {
                let n = names.get(slot);
                PeerLatency {
                    slot: *slot,
                    underlay_ip: n.map(|(ip, _)| ip.to_string()),
                    name: n.map(|(_, name)| name.clone()),
                    summary: LatencySummary::of(h),
                }
            })
            .collect(),
    }))
}

/// Picks one histogram of a snapshot from `direction=` or `peer=`.
fn select(
    st: &AppState,
    snap: &LatencySnapshot,
    query: Option<&str>,
) -> Result<(String, Histogram<u64>), ApiError> {
    let q = parse_query(query, &["direction", "peer"])?;
    match q.as_slice() {
        [] => Ok(("total".to_string(), snap.total())),
        [(k, v)] if k == "direction" => {
            let d = parse_direction(v).ok_or_else(|| {
                ApiError::bad_request(
                    "direction",
                    format!(
                        "{v:?} is not one of {:?}",
                        ALL_DIRECTIONS.map(direction_name)
                    ),
                )
            })?;
            Ok((format!("direction={v}"), snap.direction(d).clone()))
        }
        [(k, v)] if k == "peer" => {
            let ip: Ipv4Addr = v.parse().map_err(|_| {
                ApiError::bad_request("peer", format!("{v:?} is not an IPv4 address"))
            })?;
            let slot = st.rib.peer_slot(ip).ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "peer",
                    format!("{ip} is not a node of the current route set"),
                )
            })?;
            let h = snap.peer(slot).cloned().unwrap_or_else(|| {
                let mut h = snap
                    .direction(overpass_dataplane::pipeline::Direction::None)
                    .clone();
                h.reset();
                h
            });
            Ok((format!("peer={ip}"), h))
        }
        _ => Err(ApiError::bad_request(
            "direction",
            "give at most one of direction= or peer=",
        )),
    }
}

/// One histogram's full distribution: every non-empty bucket. Select with
/// `direction=` or `peer=` (underlay IP); neither: all packets.
#[utoipa::path(get, path = "/api/v1/latency/histogram", tag = "latency",
    params(
        ("direction" = Option<String>, Query, description = "decap, encap, transit, local or none"),
        ("peer" = Option<String>, Query, description = "A node's underlay IPv4 address")),
    responses(
        (status = 200, description = "The distribution", body = HistogramReport),
        (status = 400, description = "Bad selector", body = ErrorBody),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody),
        (status = 404, description = "Unknown peer", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn get_latency_histogram(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<HistogramReport>, ApiError> {
    st.auth.read(&headers)?;
    let snap = st.dataplane.latency.snapshot();
    let (selector, h) = select(&st, &snap, query.as_deref())?;
    Ok(Json(HistogramReport {
        selector,
        since: unix(snap.since),
        summary: LatencySummary::of(&h),
        buckets: h
            .iter_recorded()
            .map(|v| Bucket {
                value_ns: h.highest_equivalent(v.value_iterated_to()),
                count: v.count_since_last_iteration(),
            })
            .collect(),
    }))
}

/// Every histogram in the standard HdrHistogram interval log format
/// (V2, deflate-compressed, base64; values in ns, max column in ms), one
/// line per histogram, tagged `total`, `direction=<name>`, `peer=<ip>`.
#[utoipa::path(get, path = "/api/v1/latency/log", tag = "latency",
    responses(
        (status = 200, description = "HdrHistogram interval log", body = String, content_type = "text/plain"),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn get_latency_log(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.read(&headers)?;
    let snap = st.dataplane.latency.snapshot();
    let names = peer_names(&st);
    let text = interval_log(&snap, &names)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "log", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Encodes a snapshot as an HdrHistogram interval log.
pub fn interval_log(
    snap: &LatencySnapshot,
    names: &HashMap<u16, (Ipv4Addr, String)>,
) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let duration = snap
        .taken
        .duration_since(snap.since)
        .unwrap_or(Duration::ZERO);
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("overpass: per-packet processing time inside the gateway, values in ns")
            .with_start_time(snap.since)
            .with_base_time(snap.since)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut buf, &mut ser)?;
        let mut put = |h: &Histogram<u64>, tag: &str| -> anyhow::Result<()> {
            w.write_histogram(h, Duration::ZERO, duration, Tag::new(tag))
                .map_err(|e| anyhow::anyhow!("{e}"))
        };
        put(&snap.total(), "total")?;
        for (d, h) in &snap.directions {
            put(h, &format!("direction={}", direction_name(*d)))?;
        }
        for (slot, h) in &snap.peers {
            let tag = match names.get(slot) {
                Some((ip, _)) => format!("peer={ip}"),
                None => format!("slot={slot}"),
            };
            put(h, &tag)?;
        }
    }
    Ok(String::from_utf8(buf)?)
}

/// Start a new accumulation: clears every latency histogram.
#[utoipa::path(post, path = "/api/v1/latency/reset", tag = "latency",
    responses(
        (status = 200, description = "Reset; the new accumulation's start", body = ResetResult),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No token configured", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reset_latency(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ResetResult>, ApiError> {
    st.auth.write(&headers)?;
    st.dataplane.latency.reset();
    Ok(Json(ResetResult {
        since: unix(st.dataplane.latency.snapshot().since),
    }))
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition: counters, gauges, latency summaries.
#[utoipa::path(get, path = "/metrics", tag = "dataplane",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.auth.read(&headers)?;
    let text = render_metrics(&st);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn render_metrics(st: &AppState) -> String {
    let mut o = String::new();
    let c = counters(st);
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        &mut o,
        "overpass_events_total",
        "counter",
        "Forwarding events by kind.",
    );
    for e in &c.events {
        let _ = writeln!(
            o,
            "overpass_events_total{{event=\"{}\"}} {}",
            e.name, e.value
        );
    }
    family(
        &mut o,
        "overpass_drops_total",
        "counter",
        "Dropped frames by reason.",
    );
    for d in &c.drops {
        let _ = writeln!(
            o,
            "overpass_drops_total{{reason=\"{}\"}} {}",
            d.name, d.value
        );
    }
    family(
        &mut o,
        "overpass_xdp_steer_total",
        "counter",
        "XDP steering verdicts.",
    );
    for x in &c.xdp {
        let _ = writeln!(
            o,
            "overpass_xdp_steer_total{{counter=\"{}\"}} {}",
            x.name, x.value
        );
    }
    let table = st.rib.fib().current();
    let dp = &st.dataplane;
    family(
        &mut o,
        "overpass_xsk_bind_mode",
        "gauge",
        "AF_XDP sockets by interface/queue and the mode the kernel bound them in (XDP_OPTIONS); always 1.",
    );
    for (socket, mode) in &dp.info.xsk {
        let mode = match mode {
            crate::afxdp::xsk::XskMode::ZeroCopy => "zero-copy",
            crate::afxdp::xsk::XskMode::Copy => "copy",
        };
        let _ = writeln!(
            o,
            "overpass_xsk_bind_mode{{socket=\"{socket}\",mode=\"{mode}\"}} 1"
        );
    }
    let (generation, routes) = st.rib.routes();
    family(
        &mut o,
        "overpass_route_generation",
        "gauge",
        "Generation of the route set.",
    );
    let _ = writeln!(o, "overpass_route_generation {generation}");
    family(
        &mut o,
        "overpass_routes",
        "gauge",
        "Routes in the route set.",
    );
    let _ = writeln!(o, "overpass_routes {}", routes.len());
    family(
        &mut o,
        "overpass_peers",
        "gauge",
        "Remote nodes the route set uses.",
    );
    let _ = writeln!(o, "overpass_peers {}", table.peers.len());
    let stats = [
        (
            "overpass_peer_rx_packets_total",
            "Packets received from the peer.",
            PeerStat::RxPackets,
        ),
        (
            "overpass_peer_rx_bytes_total",
            "Bytes received from the peer.",
            PeerStat::RxBytes,
        ),
        (
            "overpass_peer_tx_packets_total",
            "Packets sent to the peer.",
            PeerStat::TxPackets,
        ),
        (
            "overpass_peer_tx_bytes_total",
            "Bytes sent to the peer.",
            PeerStat::TxBytes,
        ),
        (
            "overpass_peer_drops_total",
            "Frames from the peer that were dropped.",
            PeerStat::Drops,
        ),
    ];
    for (name, help, stat) in stats {
        family(&mut o, name, "counter", help);
        for p in &table.peers {
            let _ = writeln!(
                o,
                "{name}{{peer=\"{}\",underlay_ip=\"{}\"}} {}",
                esc(&p.name),
                p.underlay_ip,
                dp.peer_counts(p)[stat as usize]
            );
        }
    }
    family(
        &mut o,
        "overpass_peer_mtu_bytes",
        "gauge",
        "Effective tunnel MTU toward the peer.",
    );
    for p in &table.peers {
        let _ = writeln!(
            o,
            "overpass_peer_mtu_bytes{{peer=\"{}\",underlay_ip=\"{}\"}} {}",
            esc(&p.name),
            p.underlay_ip,
            p.mtu
        );
    }
    family(
        &mut o,
        "overpass_peer_resolved",
        "gauge",
        "1 when the peer's underlay next-hop MAC is resolved.",
    );
    for p in &table.peers {
        let _ = writeln!(
            o,
            "overpass_peer_resolved{{peer=\"{}\",underlay_ip=\"{}\"}} {}",
            esc(&p.name),
            p.underlay_ip,
            u8::from(p.next_hop_mac.is_some())
        );
    }
    let conns = &st.connections;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    for (name, kind, help, value) in [
        (
            "overpass_api_connections",
            "gauge",
            "API connections being served.",
            load(&conns.open),
        ),
        (
            "overpass_api_connections_max",
            "gauge",
            "API connections served at once at most (api.max_connections).",
            load(&conns.max),
        ),
        (
            "overpass_api_connections_accepted_total",
            "counter",
            "API connections admitted.",
            load(&conns.accepted),
        ),
        (
            "overpass_api_connections_refused_total",
            "counter",
            "API connections refused because api.max_connections were open.",
            load(&conns.refused),
        ),
        (
            "overpass_api_connections_timed_out_total",
            "counter",
            "API connections closed by api.header_timeout or api.idle_timeout.",
            load(&conns.timed_out),
        ),
    ] {
        family(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {value}");
    }
    let snap = dp.latency.snapshot();
    let summary = |o: &mut String, name: &str, labels: &str, h: &Histogram<u64>| {
        for (q, qs) in [
            (0.5, "0.5"),
            (0.9, "0.9"),
            (0.99, "0.99"),
            (0.999, "0.999"),
            (0.9999, "0.9999"),
            (1.0, "1"),
        ] {
            let v = if h.is_empty() {
                0
            } else {
                h.value_at_quantile(q)
            };
            let _ = writeln!(o, "{name}{{{labels}quantile=\"{qs}\"}} {}", v as f64 / 1e9);
        }
        let sum = h.mean() * h.len() as f64 / 1e9;
        let _ = writeln!(o, "{name}_sum{{{}}} {sum}", labels.trim_end_matches(','));
        let _ = writeln!(
            o,
            "{name}_count{{{}}} {}",
            labels.trim_end_matches(','),
            h.len()
        );
    };
    family(
        &mut o,
        "overpass_latency_seconds",
        "summary",
        "Per-packet processing time inside the gateway, by direction.",
    );
    for (d, h) in &snap.directions {
        summary(
            &mut o,
            "overpass_latency_seconds",
            &format!("direction=\"{}\",", direction_name(*d)),
            h,
        );
    }
    family(
        &mut o,
        "overpass_peer_latency_seconds",
        "summary",
        "Per-packet processing time inside the gateway, by peer.",
    );
    let names = peer_names(st);
    for (slot, h) in &snap.peers {
        let labels = match names.get(slot) {
            Some((ip, name)) => format!("peer=\"{}\",underlay_ip=\"{ip}\",", esc(name)),
            None => format!("slot=\"{slot}\","),
        };
        summary(&mut o, "overpass_peer_latency_seconds", &labels, h);
    }
    family(
        &mut o,
        "overpass_uptime_seconds",
        "gauge",
        "Seconds since the API started.",
    );
    let _ = writeln!(
        o,
        "overpass_uptime_seconds {}",
        st.started.elapsed().as_secs_f64()
    );
    crate::cluster::render_metrics(&mut o, &st.sources().clusters);
    o
}
