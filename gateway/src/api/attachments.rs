//! `/api/v1/attachments`: pods attached at run time (`[attach]`), the same
//! operations `overpass-cni` performs over the local socket
//! (`control::cni_socket`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState, ErrorBody, parse_json, read_body};
use crate::afxdp::xsk::PortRemoval;
use crate::control::attach::{
    AttachError, AttachErrorKind, AttachRequest, AttachStatus, Attacher, Attachment,
};

fn attacher(st: &AppState) -> Result<Attacher, ApiError> {
    st.attacher().cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "attach",
            "pods cannot be attached at run time: the configuration has no [attach] section (or this is api-only)",
        )
    })
}

fn from_attach(e: AttachError) -> ApiError {
    let status = match e.kind {
        AttachErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        AttachErrorKind::Conflict => StatusCode::CONFLICT,
        AttachErrorKind::NotFound => StatusCode::NOT_FOUND,
        AttachErrorKind::Full => StatusCode::INSUFFICIENT_STORAGE,
        AttachErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        AttachErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.field, e.message)
}

/// Blocking attach work (sockets, XDP, a route change that fsyncs and
/// waits for the workers) on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AttachError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "attach", e.to_string()))?
        .map_err(from_attach)
}

/// Attached pods, capacity (`attach.max_pods`), memory per pod, total
/// UMEM, and each worker's frame and socket accounting.
#[utoipa::path(get, path = "/api/v1/attachments", tag = "attachments",
    responses(
        (status = 200, description = "Attachments and accounting", body = AttachStatus),
        (status = 401, description = "Token required and missing or wrong", body = ErrorBody),
        (status = 403, description = "Token required but none configured", body = ErrorBody),
        (status = 409, description = "No [attach] section", body = ErrorBody),
        (status = 503, description = "The gateway is stopping", body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn list_attachments(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<AttachStatus>, ApiError> {
    st.auth.read(&headers)?;
    let a = attacher(&st)?;
    blocking(move || {
        a.status().ok_or_else(|| AttachError {
            kind: AttachErrorKind::Unavailable,
            field: "gateway".into(),
            message: "the gateway is stopping".into(),
        })
    })
    .await
    .map(Json)
}

/// Attach a pod: sockets on every worker, XSK slots, XDP on the veth, then
/// its /32 route (one route change). Nothing is left behind on failure.
#[utoipa::path(post, path = "/api/v1/attachments", tag = "attachments",
    request_body = AttachRequest,
    responses(
        (status = 201, description = "Attached", body = Attachment),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No token configured", body = ErrorBody),
        (status = 409, description = "Already attached, address routed, or no [attach]", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "The request does not fit this host (no such veth, wrong queue count, MTU)", body = ErrorBody),
        (status = 500, description = "A step failed (undone)", body = ErrorBody),
        (status = 503, description = "The gateway is stopping", body = ErrorBody),
        (status = 507, description = "attach.max_pods reached", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_attachment(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    st.auth.write(&headers)?;
    let bytes = read_body(body, st.body_limit).await?;
    let req: AttachRequest = parse_json(&bytes, "")?;
    let a = attacher(&st)?;
    let done = blocking(move || a.attach(req)).await?;
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

/// Detach the pod on host interface `interface`: route, XDP, XSK slots and
/// sockets go, every frame returns to its worker's free list.
#[utoipa::path(delete, path = "/api/v1/attachments/{interface}", tag = "attachments",
    params(("interface" = String, Path, description = "Host end of the pod's veth")),
    responses(
        (status = 200, description = "Detached; frames returned", body = PortRemoval),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "No token configured", body = ErrorBody),
        (status = 404, description = "Not attached", body = ErrorBody),
        (status = 409, description = "No [attach] section", body = ErrorBody),
        (status = 500, description = "Persisting the route change failed (nothing changed)", body = ErrorBody),
        (status = 503, description = "The gateway is stopping", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_attachment(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(interface): Path<String>,
) -> Result<Json<PortRemoval>, ApiError> {
    st.auth.write(&headers)?;
    let a = attacher(&st)?;
    blocking(move || a.detach(&interface)).await.map(Json)
}
