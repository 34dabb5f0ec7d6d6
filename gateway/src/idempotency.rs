//! `Idempotency-Key` on POST: the same key with the same body returns the first response again;
//! with another body it is refused. Keys are scoped to the caller and the route, and responses
//! are kept by the backend so a retry on another node or after a restart still replays.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::bearer;
use crate::backend::{IdempotencyState, StoredResponse};
use crate::problem::Problem;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const KEY_LEN_MAX: usize = 255;
/// Responses larger than this are not kept (none of ours come near it).
const RESPONSE_KEPT_MAX: usize = 1 << 20;

/// Routes whose answer is a credential: the key is accepted but nothing is stored.
const EXEMPT: &[&str] = &["/v1/auth/login", "/v1/auth/refresh"];

/// The hold id of a hold request that carries an Idempotency-Key: derived from the caller and
/// the key, so even a retry that runs again (after a 5xx) places the same hold, not a second one.
pub fn derived_id(caller: &str, key: &str) -> uuid::Uuid {
    let digest = Sha256::new()
        .chain_update(caller.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes)
}

pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST || EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k)
            if !k.is_empty()
                && k.len() <= KEY_LEN_MAX
                && k.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            k.to_owned()
        }
        _ => {
            return Problem::invalid("Idempotency-Key must be 1 to 255 printable ASCII characters")
                .into_response();
        }
    };
    let (parts, body) = request.into_parts();
    // The caller is named by its token's subject when it has a valid one; anonymous calls
    // (register) share one scope per route.
    let caller = bearer(&parts)
        .and_then(|t| state.tokens().verify(t).ok())
        .map_or_else(|| "anonymous".to_owned(), |c| c.sub);
    let scope = format!("{caller} {} {}", parts.method, parts.uri.path());
    let body = match to_bytes(body, state.options().body_limit_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "Payload too large",
                "the request body is larger than this server accepts",
            )
            .into_response();
        }
    };
    let hash = Sha256::digest(&body);
    match state.backend().idempotency_begin(&scope, &key, &hash).await {
        Ok(IdempotencyState::Started) => {}
        Ok(IdempotencyState::InProgress) => {
            return Problem::new(
                StatusCode::CONFLICT,
                "idempotency-key-in-progress",
                "Request in progress",
                "a request with this Idempotency-Key is still running",
            )
            .retry_after(1)
            .into_response();
        }
        Ok(IdempotencyState::Mismatch) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was used with a different request body",
            )
            .into_response();
        }
        Ok(IdempotencyState::Done(stored)) => return replay(stored),
        Err(e) => return Problem::from(e).into_response(),
    }
    // The request runs to its end in a task of its own and its answer is kept, even when the
    // client disconnects or the request times out: a retry with the same key then gets it.
    let request = Request::from_parts(parts, Body::from(body));
    let task = tokio::spawn(run_and_keep(state, scope, key, request, next));
    task.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "idempotent request task failed");
        Problem::internal().into_response()
    })
}

async fn run_and_keep(
    state: AppState,
    scope: String,
    key: String,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.is_server_error() {
        // Nothing was promised: let a retry run the request again.
        if let Err(e) = state.backend().idempotency_abandon(&scope, &key).await {
            tracing::warn!(error = %e, "could not abandon idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes: Bytes = match to_bytes(body, RESPONSE_KEPT_MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "response body unreadable");
            let _ = state.backend().idempotency_abandon(&scope, &key).await;
            return Problem::internal().into_response();
        }
    };
    let header_text = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let stored = StoredResponse {
        status: status.as_u16(),
        content_type: header_text(header::CONTENT_TYPE),
        location: header_text(header::LOCATION),
        body: bytes.to_vec(),
    };
    if let Err(e) = state
        .backend()
        .idempotency_complete(&scope, &key, stored)
        .await
    {
        tracing::warn!(error = %e, "could not store idempotent response");
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    if let Some(ct) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    if let Some(location) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    response
}
