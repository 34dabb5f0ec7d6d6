//! `GET /v1/admin/saga/parked`, `POST /v1/admin/saga/parked/{id}/retry` and
//! `POST /v1/admin/saga/parked/{id}/discard` (admin, ops listener): the saga messages a
//! consumer parked instead of retrying them forever; `GET /v1/admin/refunds/failed` and
//! `POST /v1/admin/refunds/{id}/retry`: the refunds VNPAY kept refusing.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::checkout::{CheckoutError, FailedRefundView, ParkedView};
use crate::problem::Problem;

fn parked_json(p: &ParkedView) -> Value {
    json!({
        "id": p.id,
        "service": p.service,
        "topic": p.topic,
        "event_id": p.event_id,
        "order_id": p.order_id,
        "error": p.error,
        "attempts": p.attempts,
        "parked_at": super::rfc3339_millis(p.parked_at_ms),
    })
}

fn parked_id(id: &str) -> Result<uuid::Uuid, Problem> {
    id.parse().map_err(|_| CheckoutError::ParkedNotFound.into())
}

pub async fn parked(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, Problem> {
    user.require(&[Role::Admin])?;
    let parked = state.checkout().parked().await?;
    Ok(Json(json!({
        "parked": parked.iter().map(parked_json).collect::<Vec<_>>(),
    })))
}

/// 200 `{"id", "resolved": true}` when the handler succeeded (the message is gone), or
/// `{"id", "resolved": false, "parked": {…}}` with the new error.
pub async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    user.require(&[Role::Admin])?;
    let id = parked_id(&id)?;
    let still = state.checkout().retry_parked(id).await?;
    tracing::info!(parked = %id, resolved = still.is_none(), admin = %user.id, "parked saga message retried");
    Ok(Json(match still {
        None => json!({"id": id, "resolved": true}),
        Some(p) => json!({"id": id, "resolved": false, "parked": parked_json(&p)}),
    }))
}

pub async fn discard(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    user.require(&[Role::Admin])?;
    let id = parked_id(&id)?;
    state.checkout().discard_parked(id).await?;
    tracing::warn!(parked = %id, admin = %user.id, "parked saga message discarded");
    Ok(StatusCode::NO_CONTENT)
}

fn failed_refund_json(r: &FailedRefundView) -> Value {
    json!({
        "id": r.id,
        "order_id": r.order_id,
        "amount": r.amount,
        "attempts": r.attempts,
        "response_code": r.response_code,
        "message": r.message,
        "failed_at": super::rfc3339_millis(r.failed_at_ms),
    })
}

pub async fn failed_refunds(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Value>, Problem> {
    user.require(&[Role::Admin])?;
    let refunds = state.checkout().failed_refunds().await?;
    Ok(Json(json!({
        "refunds": refunds.iter().map(failed_refund_json).collect::<Vec<_>>(),
    })))
}

/// 202 `{"id", "status": "processing"}`: the refund is tried again with a fresh set of attempts.
pub async fn retry_refund(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    user.require(&[Role::Admin])?;
    let id: uuid::Uuid = id
        .parse()
        .map_err(|_| Problem::from(CheckoutError::RefundNotFound))?;
    state.checkout().retry_refund(id).await?;
    tracing::info!(refund = %id, admin = %user.id, "failed refund retried");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "status": "processing"})),
    ))
}
