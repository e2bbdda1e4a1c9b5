//! The HTTP control plane: REST API under `/api/v1`, Prometheus text at
//! `/metrics`, `/healthz`, `/readyz`, and the OpenAPI document (generated
//! from the handlers' annotations) at `/api/v1/openapi.json`, and the web
//! dashboard (embedded `web-ui/`, see [`ui`]) at `/`.
//!
//! Contracts:
//! - mutations need the bearer token (see [`auth`]); reads need it only if
//!   `api.read_requires_token` is set; health endpoints are always open;
//! - request bodies are limited (`api.body_limit`), parsed strictly (unknown
//!   fields are refused) and every 4xx carries
//!   `{"error": {"field": ..., "message": ...}}` naming what to fix;
//! - a refused request changes nothing: route changes go through
//!   [`Rib::update_with`], which validates the whole new set, persists it,
//!   and only then publishes it and answers.
//!
//! The server ([`server`]) runs on its own small tokio runtime, on threads
//! of the namespace it was started from (start it after
//! [`crate::lifecycle::Gateway::start`] returned, so 127.0.0.1 is the host's
//! loopback), never on dataplane cores' hot paths. It caps connections,
//! times out slow and idle clients, stops within `api.shutdown_timeout`
//! whatever clients do, and on a loopback listener answers only loopback
//! `Host` names ([`host`], against DNS rebinding).

pub mod attachments;
pub mod auth;
pub mod client;
pub mod host;
pub mod observe;
pub mod routes;
pub mod server;
pub mod ui;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::Auth;
pub use routes::{ReplaceResult, RouteDiff, RouteResult, RouteSet, RouteSetInput};
pub use server::{ConnStats, Server, ServerOptions};

use crate::control::rib::{ChangeError, Rib};
use crate::lifecycle::DataplaneView;

/// Everything the handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// The RIB every route change goes through (it persists, publishes and
    /// waits for the workers; give it its store with `Rib::with_store`).
    pub rib: Rib,
    pub dataplane: DataplaneView,
    pub auth: Auth,
    pub body_limit: usize,
    /// "dataplane" or "api-only".
    pub mode: &'static str,
    /// The HTTP server's connection counters (in `/metrics`).
    pub connections: ConnStats,
    ready: AtomicBool,
    started: Instant,
    /// Route sources and cluster health (set once, when the gateway has
    /// joined its clusters).
    sources: std::sync::OnceLock<crate::cluster::RouteSources>,
    /// Pods attached at run time (set when the gateway has `[attach]`).
    attach: std::sync::OnceLock<crate::control::attach::Attacher>,
}

impl ApiState {
    pub fn new(
        rib: Rib,
        dataplane: DataplaneView,
        auth: Auth,
        body_limit: usize,
        mode: &'static str,
    ) -> Arc<ApiState> {
        Arc::new(ApiState {
            rib,
            dataplane,
            auth,
            body_limit,
            mode,
            connections: ConnStats::default(),
            ready: AtomicBool::new(true),
            started: Instant::now(),
            sources: std::sync::OnceLock::new(),
            attach: std::sync::OnceLock::new(),
        })
    }

    /// What tells route sources apart (config, API, each cluster) and the
    /// clusters' health, for `/readyz`, `/metrics` and the route list.
    pub fn set_sources(&self, sources: crate::cluster::RouteSources) {
        let _ = self.sources.set(sources);
    }

    /// The route sources (empty until [`ApiState::set_sources`]).
    pub fn sources(&self) -> crate::cluster::RouteSources {
        self.sources.get().cloned().unwrap_or_default()
    }

    /// Serves `/api/v1/attachments` with `attacher`.
    pub fn set_attacher(&self, attacher: crate::control::attach::Attacher) {
        let _ = self.attach.set(attacher);
    }

    /// The attacher, when the gateway attaches pods at run time.
    pub fn attacher(&self) -> Option<&crate::control::attach::Attacher> {
        self.attach.get()
    }

    /// Marks the gateway (not) ready; `/readyz` answers 503 while not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

type AppState = Arc<ApiState>;

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// The offending field, e.g. `routes[2].node.vni`, `If-Match`,
    /// `authorization`, `body`, `prefix`.
    pub field: String,
    pub message: String,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status,
            field: field.into(),
            message: message.into(),
        }
    }

    fn bad_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, field, message)
    }

    /// A refused route change, by kind: invalid set (422, the field named
    /// relative to `focus`'s route when the caller changed one route),
    /// stale generation (412), conflict (409), not found (404), persisting
    /// failed (500; 507 when the state dir's file system is full).
    fn from_change(e: ChangeError, focus: Option<ipnet::Ipv4Net>) -> Self {
        match e {
            ChangeError::Invalid(e) => {
                let e = match focus {
                    Some(prefix) => e.relative_to(prefix),
                    None => e,
                };
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.field, e.message)
            }
            e @ ChangeError::Stale { .. } => {
                Self::new(StatusCode::PRECONDITION_FAILED, "If-Match", e.to_string())
            }
            ChangeError::Conflict(e) => Self::new(StatusCode::CONFLICT, e.field, e.message),
            ChangeError::NotFound(e) => Self::new(StatusCode::NOT_FOUND, e.field, e.message),
            e @ ChangeError::Persist(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "store", e.to_string())
            }
            e @ ChangeError::StorageFull(_) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "store", e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut resp = (
            self.status,
            Json(ErrorBody {
                error: ErrorDetail {
                    field: self.field,
                    message: self.message,
                },
            }),
        )
            .into_response();
        if unauthorized {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"overpass\""),
            );
        }
        resp
    }
}

/// Reads a request body of at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        // The only failure besides the limit is a broken connection.
        let too_big = format!("{e:?} {e}").contains("length limit");
        if too_big {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
                format!("larger than the {limit}-byte limit (api.body_limit)"),
            )
        } else {
            ApiError::bad_request("body", format!("could not read the body: {e}"))
        }
    })
}

/// Parses JSON strictly; errors name the field by its path under `root`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8], root: &str) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let field = match (root.is_empty(), path.as_str()) {
            (_, ".") | (_, "") if root.is_empty() => "body".to_string(),
            (_, ".") | (_, "") => root.to_string(),
            (true, p) => p.to_string(),
            (false, p) => format!("{root}.{p}"),
        };
        let inner = e.into_inner();
        // serde_json appends " at line L column C"; the field says where.
        let msg = inner.to_string();
        let msg = msg
            .rsplit_once(" at line ")
            .map_or(msg.as_str(), |(m, _)| m)
            .to_string();
        ApiError::bad_request(field, msg)
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("body", format!("trailing data after JSON: {e}")))?;
    Ok(value)
}

/// Parses a query string against the allowed keys: `(key, value)` pairs;
/// an unknown key or a repeated one is a 400 naming it.
fn parse_query(raw: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out: Vec<(String, String)> = vec![];
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k);
        let v = percent_decode(v);
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad_request(
                k.clone(),
                format!("unknown query parameter (allowed: {allowed:?})"),
            ));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(ApiError::bad_request(k, "given more than once"));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_bool(field: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(
            field,
            format!("{v:?} is not a boolean (true or false)"),
        )),
    }
}

/// `{"status": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "alive", body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// Readiness: the route set is loaded and applied (and, with a dataplane,
/// the workers run). `degraded`: a cluster datastore is unreachable or
/// resynchronising; forwarding goes on with the last known routes.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ready, or degraded (a cluster datastore is unreachable; forwarding continues)", body = Status),
              (status = 503, description = "not ready", body = ErrorBody)))]
async fn readyz(State(st): State<AppState>) -> Response {
    if st.ready.load(Ordering::Relaxed) {
        let in_sync = st.sources().degraded().is_empty();
        Json(Status {
            status: if in_sync { "ready" } else { "degraded" }.into(),
        })
        .into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "readyz",
            "the gateway is starting or stopping",
        )
        .into_response()
    }
}

struct SecurityAddon;

impl Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The token in the gateway's api.token_file (mutations; reads too when api.read_requires_token)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Overpass gateway API",
        description = "Route table, peers, pods, interfaces, counters and latency of an Overpass AF_XDP overlay gateway. Every 4xx carries {\"error\": {\"field\", \"message\"}}. On a loopback listener a request whose Host is not a loopback name (or in api.allowed_hosts) gets 421 with field host; a connection beyond api.max_connections gets 503.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecurityAddon),
    tags(
        (name = "routes", description = "The route set: podCIDR → remote node or local pod"),
        (name = "dataplane", description = "Peers, pods, interfaces, counters"),
        (name = "attachments", description = "Pods attached at run time ([attach], overpass-cni)"),
        (name = "latency", description = "Per-packet processing latency histograms"),
        (name = "health", description = "Liveness and readiness")
    )
)]
struct ApiDoc;

/// The router and the OpenAPI document it was built from.
pub fn router_and_spec(state: AppState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, spec) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            routes::list_routes,
            routes::replace_routes,
            routes::create_route
        ))
        .routes(routes!(
            routes::get_route,
            routes::put_route,
            routes::delete_route
        ))
        .routes(routes!(observe::list_peers))
        .routes(routes!(observe::list_pods))
        .routes(routes!(
            attachments::list_attachments,
            attachments::create_attachment
        ))
        .routes(routes!(attachments::delete_attachment))
        .routes(routes!(observe::list_interfaces))
        .routes(routes!(observe::get_counters))
        .routes(routes!(observe::get_latency))
        .routes(routes!(observe::get_latency_histogram))
        .routes(routes!(observe::get_latency_log))
        .routes(routes!(observe::reset_latency))
        .routes(routes!(observe::metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .with_state(state)
        .split_for_parts();
    let doc = serde_json::to_string(&spec).expect("the OpenAPI document serialises");
    let router = router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .merge(ui::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    (router, spec)
}

/// The router serving the whole API over `state`.
pub fn router(state: AppState) -> axum::Router {
    router_and_spec(state).0
}

/// The OpenAPI document (as served at `/api/v1/openapi.json`).
pub fn openapi_json(state: AppState) -> String {
    router_and_spec(state)
        .1
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "path",
        format!("no such endpoint: {}", req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_path() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            routes: Vec<crate::control::rib::RouteSpec>,
        }
        let e = parse_json::<Body>(br#"{"routes":[{"prefix":"10.1/8"}]}"#, "").unwrap_err();
        assert_eq!(e.field, "routes[0].prefix", "{e:?}");
        let e = parse_json::<Body>(br#"{"routes":[{"prefix":"10.0.0.0/8","bogus":1}]}"#, "")
            .unwrap_err();
        assert_eq!(e.field, "routes[0].bogus", "{e:?}");
        let e = parse_json::<Body>(br#"{"routes":[]} x"#, "").unwrap_err();
        assert_eq!(e.field, "body");
        let e = parse_json::<Body>(br#"{"routes":[{"prefix":"10.0.0.0/8","node":{"name":"a","underlay_ip":"1.2.3.4","encap":"gre"}}]}"#, "").unwrap_err();
        assert_eq!(e.field, "routes[0].node.encap", "{e:?}");
    }

    #[test]
    fn query_and_percent_decoding() {
        let q = parse_query(Some("dry_run=true&x%3Dy=1"), &["dry_run", "x=y"]).unwrap();
        assert_eq!(q[1].0, "x=y");
        assert_eq!(
            parse_query(Some("nope=1"), &["dry_run"]).unwrap_err().field,
            "nope"
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
