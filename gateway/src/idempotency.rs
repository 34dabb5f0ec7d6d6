//! `Idempotency-Key` on POST: the same key with the same body returns the first response again;
//! with another body it is refused. Keys are scoped to the caller and the route, and responses
//! are kept by the backend so a retry on another node or after a restart still replays.
//!
//! Only signed-in callers (a valid access token of a login that was not revoked) on routes
//! that exist get a stored answer, at most [`Quota`] new keys per caller and hour: nobody can
//! fill the table anonymously, and a logged-out token never replays an answer.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::{AuthUser, bearer};
use crate::backend::{IdempotencyState, StoredResponse};
use crate::problem::Problem;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
const KEY_LEN_MAX: usize = 255;
/// Responses larger than this are not kept (none of ours come near it).
const RESPONSE_KEPT_MAX: usize = 1 << 20;

/// Routes whose answer is a credential: the key is accepted but nothing is stored.
const EXEMPT: &[&str] = &["/v1/auth/login", "/v1/auth/refresh"];

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
    // Anonymous callers run without a stored answer.
    if bearer(&parts).is_none() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let caller = match AuthUser::from_parts(&parts, &state).await {
        Ok(user) => user.id,
        // The handler answers a bad or revoked token as it would without the key (a 401 where
        // it needs a caller); nothing is stored or replayed for it.
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
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
        // A new key counts against the caller's quota; replays of stored ones do not.
        Ok(IdempotencyState::Started) => {
            if let Err(retry_after_secs) = state.idempotency_quota().check(&caller.to_string()) {
                if let Err(e) = state.backend().idempotency_abandon(&scope, &key).await {
                    tracing::warn!(error = %e, "could not abandon idempotency key");
                }
                return Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate-limited",
                    "Too many idempotency keys",
                    "this account stored as many Idempotency-Keys this hour as it may; retry later or send the request without a key",
                )
                .retry_after(retry_after_secs)
                .into_response();
            }
        }
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
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        // Nothing was promised (or a rate limit refused it): let a retry run it again.
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

/// New idempotency keys per caller and hour, counted in this node's memory (fixed windows).
#[derive(Debug)]
pub struct Quota {
    per_hour_max: u32,
    windows: std::sync::Mutex<std::collections::HashMap<String, (u64, u32)>>,
}

/// Callers tracked at most before windows of past hours are dropped.
const QUOTA_CALLERS_MAX: usize = 100_000;
const HOUR_SECS: u64 = 3600;

impl Quota {
    pub fn new(per_hour_max: u32) -> Self {
        Self {
            per_hour_max,
            windows: std::sync::Mutex::default(),
        }
    }

    /// Counts one key for `caller`, or says in how many seconds the next one is allowed.
    pub fn check(&self, caller: &str) -> Result<(), u32> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.check_at(caller, now)
    }

    fn check_at(&self, caller: &str, now_secs: u64) -> Result<(), u32> {
        let window = now_secs / HOUR_SECS;
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if windows.len() >= QUOTA_CALLERS_MAX {
            windows.retain(|_, (w, _)| *w == window);
        }
        let entry = windows.entry(caller.to_owned()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 >= self.per_hour_max {
            let retry = (window + 1) * HOUR_SECS - now_secs;
            return Err(u32::try_from(retry).unwrap_or(u32::MAX).max(1));
        }
        entry.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Quota;

    #[test]
    fn a_caller_gets_its_quota_per_hour() {
        let quota = Quota::new(2);
        let t = 7200 + 100;
        assert_eq!(quota.check_at("a", t), Ok(()));
        assert_eq!(quota.check_at("a", t + 1), Ok(()));
        assert_eq!(quota.check_at("a", t + 2), Err(3600 - 102));
        assert_eq!(
            quota.check_at("b", t + 2),
            Ok(()),
            "callers are counted apart"
        );
        assert_eq!(
            quota.check_at("a", 3 * 3600),
            Ok(()),
            "a new hour, a new quota"
        );
    }
}
