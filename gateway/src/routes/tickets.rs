//! `GET /v1/tickets/{id}/qr.png` and `POST /v1/checkin`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::checkout::{CheckoutError, TicketView};
use crate::extract::ApiJson;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    pub code: String,
}

pub fn ticket_json(ticket: &TicketView) -> Value {
    json!({
        "id": ticket.id,
        "order_id": ticket.order_id,
        "ticket_type": ticket.ticket_type,
        "code": ticket.code,
        "status": ticket.status,
    })
}

/// The QR image of the caller's ticket (staff and admins may fetch any).
pub async fn qr_png(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let not_found = || Problem::from(CheckoutError::TicketNotFound);
    let id: uuid::Uuid = id.parse().map_err(|_| not_found())?;
    let ticket = match state.checkout().ticket(id).await? {
        Some(t) if t.user == user.id || matches!(user.role, Role::Admin | Role::Staff) => t,
        _ => return Err(not_found()),
    };
    let png = state.checkout().qr_png(&ticket.code)?;
    let mut response = png.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    Ok(response)
}

/// Staff scan a code at the door: admitted once, then `already-admitted`.
pub async fn checkin(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CheckinRequest>,
) -> Result<Json<Value>, Problem> {
    user.require(&[Role::Staff, Role::Admin])?;
    let ticket = state.checkout().checkin(req.code.trim()).await?;
    Ok(Json(json!({
        "ticket_id": ticket.id,
        "order_id": ticket.order_id,
        "ticket_type": ticket.ticket_type,
        "status": ticket.status,
    })))
}
