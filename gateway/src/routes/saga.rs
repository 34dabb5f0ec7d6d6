//! `GET /v1/admin/saga/parked`, `POST /v1/admin/saga/parked/{id}/retry` and
//! `POST /v1/admin/saga/parked/{id}/discard` (admin, ops listener): the saga messages a
//! consumer parked instead of retrying them forever.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::checkout::{CheckoutError, ParkedView};
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
