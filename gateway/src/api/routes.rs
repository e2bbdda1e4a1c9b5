//! `/api/v1/routes`: the route set.
//!
//! The set has a generation number, bumped by every accepted change and
//! returned as the `ETag` (`"7"`). Every mutation may carry `If-Match: "7"`
//! (or `*`): if the set has moved on meanwhile it is refused with 412 and
//! nothing changes. A whole-set replace with `?dry_run=true` validates the
//! new set and returns the diff without applying it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, ErrorBody, parse_bool, parse_json, parse_query, read_body};
use crate::control::rib::{ChangeError, RibError, RouteSpec};

/// The whole route set and its generation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouteSet {
    pub generation: u64,
    pub routes: Vec<RouteSpec>,
    /// The source of each route, in the same order: `config`, `api`, or
    /// the name of the `[[cluster]]` whose datastore owns it.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// A replacement route set.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteSetInput {
    pub routes: Vec<RouteSpec>,
}

/// One route whose next hop changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouteChange {
    pub before: RouteSpec,
    pub after: RouteSpec,
}

/// What a replacement changes, by prefix.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RouteDiff {
    pub added: Vec<RouteSpec>,
    pub removed: Vec<RouteSpec>,
    pub changed: Vec<RouteChange>,
    /// Routes present and identical in both sets.
    pub unchanged: usize,
}

/// The result of a whole-set replacement (or its dry run).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplaceResult {
    pub dry_run: bool,
    /// The new generation; for a dry run, the current one (unchanged).
    pub generation: u64,
    pub diff: RouteDiff,
}

/// One route and the generation of the set it is (or was) part of.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RouteResult {
    pub generation: u64,
    pub route: RouteSpec,
}

/// Computes what replacing `old` by `new` changes.
pub fn diff(old: &[RouteSpec], new: &[RouteSpec]) -> RouteDiff {
    let old_by: HashMap<Ipv4Net, &RouteSpec> = old.iter().map(|r| (r.prefix, r)).collect();
    let new_by: HashMap<Ipv4Net, &RouteSpec> = new.iter().map(|r| (r.prefix, r)).collect();
    let mut d = RouteDiff::default();
    for r in new {
        match old_by.get(&r.prefix) {
            None => d.added.push(r.clone()),
            Some(o) if *o == r => d.unchanged += 1,
            Some(o) => d.changed.push(RouteChange {
                before: (*o).clone(),
                after: r.clone(),
            }),
        }
    }
    d.removed = old
        .iter()
        .filter(|r| !new_by.contains_key(&r.prefix))
        .cloned()
        .collect();
    d
}

/// `If-Match`: `None` when absent or `*`.
fn expected_generation(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "If-Match",
            "must be a route set generation as returned in ETag, e.g. \"7\", or *",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s == "*" {
        return Ok(None);
    }
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    s.parse::<u64>().map(Some).map_err(|_| bad())
}

fn etag(generation: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{generation}\"")).expect("digits are a valid header")
}

fn with_etag(status: StatusCode, generation: u64, body: impl Serialize) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut().insert(header::ETAG, etag(generation));
    r
}

/// The prefix named by `/api/v1/routes/{addr}/{len}`.
fn path_prefix(addr: &str, len: &str) -> Result<Ipv4Net, ApiError> {
    let ip: Ipv4Addr = addr
        .parse()
        .map_err(|_| ApiError::bad_request("prefix", format!("{addr:?} is not an IPv4 address")))?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| {
        ApiError::bad_request("prefix", format!("{len:?} is not a prefix length 0..=32"))
    })?;
    let net = Ipv4Net::new(ip, len).expect("length checked");
    if net.trunc() != net {
        return Err(ApiError::bad_request(
            "prefix",
            format!("host bits set in {net} (did you mean {}?)", net.trunc()),
        ));
    }
    Ok(net)
}

/// Runs a route change on the blocking pool: [`crate::control::rib::Rib::change`]
/// fsyncs and waits for the workers, which must not stall the runtime's
/// two async workers.
async fn change<T: Send + 'static>(
    st: &AppState,
    expected: Option<u64>,
    edit: impl FnOnce(&mut Vec<RouteSpec>) -> Result<T, ChangeError> + Send + 'static,
) -> Result<(u64, T), ChangeError> {
    let rib = st.rib.clone();
    tokio::task::spawn_blocking(move || rib.change(expected, edit))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// List the route set.
#[utoipa::path(get, path = "/api/v1/routes", tag = "routes",
    responses(
        (status = 200, description = "The route set; ETag is its generation", body = RouteSet,
            headers(("ETag" = String, description = "Generation, quoted"))),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn list_routes(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    st.auth.read(&headers)?;
    let (generation, routes) = st.rib.routes();
    let src = st.sources();
    let sources = routes.iter().map(|r| src.source_of(r)).collect();
    Ok(with_etag(
        StatusCode::OK,
        generation,
        RouteSet {
            generation,
            routes,
            sources,
        },
    ))
}

/// Replace the whole route set in one transaction (or, with
/// `dry_run=true`, validate it and return the diff without applying it).
#[utoipa::path(put, path = "/api/v1/routes", tag = "routes",
    request_body = RouteSetInput,
    params(
        ("dry_run" = Option<bool>, Query, description = "Validate and diff only"),
        ("If-Match" = Option<String>, Header, description = "Expected generation, e.g. \"7\", or *")),
    responses(
        (status = 200, description = "Replaced (or dry run passed)", body = ReplaceResult),
        (status = 400, description = "Malformed body, header or query", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No token configured", body = ErrorBody),
        (status = 409, description = "The set names a route a cluster datastore owns", body = ErrorBody),
        (status = 412, description = "Stale generation", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The set does not validate", body = ErrorBody),
        (status = 500, description = "Persisting failed (nothing changed)", body = ErrorBody),
        (status = 507, description = "The state dir's file system is full (nothing changed)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn replace_routes(
    State(st): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    st.auth.write(&headers)?;
    let mut dry_run = false;
    for (k, v) in parse_query(query.as_deref(), &["dry_run"])? {
        dry_run = parse_bool(&k, &v)?;
    }
    let expected = expected_generation(&headers)?;
    let bytes = read_body(body, st.body_limit).await?;
    let input: RouteSetInput = parse_json(&bytes, "")?;
    if dry_run {
        let (generation, current) = st.rib.routes();
        if let Some(e) = expected
            && e != generation
        {
            return Err(ApiError::from_change(
                ChangeError::Stale {
                    expected: e,
                    current: generation,
                },
                None,
            ));
        }
        let new = crate::cluster::keep_owned(&current, input.routes)
            .map_err(|e| ApiError::from_change(e, None))?;
        st.rib
            .check(&new)
            .map_err(|e| ApiError::from_change(ChangeError::Invalid(e), None))?;
        let d = diff(&current, &new);
        return Ok(with_etag(
            StatusCode::OK,
            generation,
            ReplaceResult {
                dry_run: true,
                generation,
                diff: d,
            },
        ));
    }
    let (generation, d) = change(&st, expected, move |current| {
        // Routes a cluster owns stay (the datastore is their truth).
        let new = crate::cluster::keep_owned(current, input.routes)?;
        let d = diff(current, &new);
        *current = new;
        Ok(d)
    })
    .await
    .map_err(|e| ApiError::from_change(e, None))?;
    Ok(with_etag(
        StatusCode::OK,
        generation,
        ReplaceResult {
            dry_run: false,
            generation,
            diff: d,
        },
    ))
}

/// Add one route (its prefix must not be routed yet).
#[utoipa::path(post, path = "/api/v1/routes", tag = "routes",
    request_body = RouteSpec,
    params(("If-Match" = Option<String>, Header, description = "Expected generation, or *")),
    responses(
        (status = 201, description = "Created", body = RouteResult),
        (status = 400, description = "Malformed body or header", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No token configured", body = ErrorBody),
        (status = 409, description = "The prefix is already routed", body = ErrorBody),
        (status = 412, description = "Stale generation", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The route (or the set with it) does not validate", body = ErrorBody),
        (status = 500, description = "Persisting failed (nothing changed)", body = ErrorBody),
        (status = 507, description = "The state dir's file system is full (nothing changed)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_route(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.auth.write(&headers)?;
    let expected = expected_generation(&headers)?;
    let bytes = read_body(body, st.body_limit).await?;
    let route: RouteSpec = parse_json(&bytes, "")?;
    let r = route.clone();
    let generation = change(&st, expected, move |current| {
        crate::cluster::refuse_owned(&r)?;
        if let Some(i) = current.iter().position(|c| c.prefix == r.prefix) {
            crate::cluster::refuse_owned(&current[i])?;
            return Err(ChangeError::Conflict(RibError::new(
                "prefix",
                format!(
                    "{} is already routed (routes[{i}]): replace it with PUT /api/v1/routes/{}",
                    r.prefix, r.prefix
                ),
            )));
        }
        current.push(r);
        Ok(())
    })
    .await
    .map_err(|e| ApiError::from_change(e, Some(route.prefix)))?
    .0;
    let mut resp = with_etag(
        StatusCode::CREATED,
        generation,
        RouteResult {
            generation,
            route: route.clone(),
        },
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/routes/{}", route.prefix)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

/// Get the route for one prefix (`/api/v1/routes/10.244.1.0/24`).
#[utoipa::path(get, path = "/api/v1/routes/{addr}/{len}", tag = "routes",
    params(
        ("addr" = String, Path, description = "Prefix address, e.g. 10.244.1.0"),
        ("len" = u8, Path, description = "Prefix length 0..=32", minimum = 0, maximum = 32)),
    responses(
        (status = 200, description = "The route", body = RouteResult),
        (status = 400, description = "Malformed prefix", body = ErrorBody),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody),
        (status = 404, description = "No route for that prefix", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn get_route(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((addr, len)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.auth.read(&headers)?;
    let prefix = path_prefix(&addr, &len)?;
    let (generation, routes) = st.rib.routes();
    let route = routes
        .into_iter()
        .find(|r| r.prefix == prefix)
        .ok_or_else(|| not_routed(prefix))?;
    Ok(with_etag(
        StatusCode::OK,
        generation,
        RouteResult { generation, route },
    ))
}

fn not_routed(prefix: Ipv4Net) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "prefix",
        format!("no route for {prefix}"),
    )
}

/// Create or replace the route for one prefix (the body's prefix must be
/// the path's).
#[utoipa::path(put, path = "/api/v1/routes/{addr}/{len}", tag = "routes",
    request_body = RouteSpec,
    params(
        ("addr" = String, Path, description = "Prefix address, e.g. 10.244.1.0"),
        ("len" = u8, Path, description = "Prefix length 0..=32", minimum = 0, maximum = 32),
        ("If-Match" = Option<String>, Header, description = "Expected generation, or *")),
    responses(
        (status = 200, description = "Replaced", body = RouteResult),
        (status = 201, description = "Created", body = RouteResult),
        (status = 400, description = "Malformed prefix, body or header", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No token configured", body = ErrorBody),
        (status = 409, description = "The route is owned by a cluster datastore", body = ErrorBody),
        (status = 412, description = "Stale generation", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The route (or the set with it) does not validate", body = ErrorBody),
        (status = 500, description = "Persisting failed (nothing changed)", body = ErrorBody),
        (status = 507, description = "The state dir's file system is full (nothing changed)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_route(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((addr, len)): Path<(String, String)>,
    body: Body,
) -> Result<Response, ApiError> {
    st.auth.write(&headers)?;
    let prefix = path_prefix(&addr, &len)?;
    let expected = expected_generation(&headers)?;
    let bytes = read_body(body, st.body_limit).await?;
    let route: RouteSpec = parse_json(&bytes, "")?;
    if route.prefix != prefix {
        return Err(ApiError::bad_request(
            "prefix",
            format!("{} does not match the path's {prefix}", route.prefix),
        ));
    }
    let r = route.clone();
    let (generation, created) = change(&st, expected, move |current| {
        crate::cluster::refuse_owned(&r)?;
        Ok(match current.iter().position(|c| c.prefix == prefix) {
            Some(i) => {
                crate::cluster::refuse_owned(&current[i])?;
                current[i] = r;
                false
            }
            None => {
                current.push(r);
                true
            }
        })
    })
    .await
    .map_err(|e| ApiError::from_change(e, Some(prefix)))?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(
        status,
        generation,
        RouteResult { generation, route },
    ))
}

/// Delete the route for one prefix.
#[utoipa::path(delete, path = "/api/v1/routes/{addr}/{len}", tag = "routes",
    params(
        ("addr" = String, Path, description = "Prefix address, e.g. 10.244.1.0"),
        ("len" = u8, Path, description = "Prefix length 0..=32", minimum = 0, maximum = 32),
        ("If-Match" = Option<String>, Header, description = "Expected generation, or *")),
    responses(
        (status = 200, description = "Deleted; the body is the removed route", body = RouteResult),
        (status = 400, description = "Malformed prefix or header", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No token configured", body = ErrorBody),
        (status = 404, description = "No route for that prefix", body = ErrorBody),
        (status = 409, description = "The route is owned by a cluster datastore", body = ErrorBody),
        (status = 412, description = "Stale generation", body = ErrorBody),
        (status = 422, description = "The set without it does not validate", body = ErrorBody),
        (status = 500, description = "Persisting failed (nothing changed)", body = ErrorBody),
        (status = 507, description = "The state dir's file system is full (nothing changed)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_route(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((addr, len)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    st.auth.write(&headers)?;
    let prefix = path_prefix(&addr, &len)?;
    let expected = expected_generation(&headers)?;
    let (generation, route) = change(&st, expected, move |current| {
        match current.iter().position(|c| c.prefix == prefix) {
            Some(i) => {
                crate::cluster::refuse_owned(&current[i])?;
                Ok(current.remove(i))
            }
            None => Err(ChangeError::NotFound(RibError::new(
                "prefix",
                format!("no route for {prefix}"),
            ))),
        }
    })
    .await
    .map_err(|e| ApiError::from_change(e, None))?;
    Ok(with_etag(
        StatusCode::OK,
        generation,
        RouteResult { generation, route },
    ))
}
