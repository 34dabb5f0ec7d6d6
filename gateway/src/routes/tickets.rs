//! `GET /v1/tickets/{id}/qr.png` and `POST /v1/checkin`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_actors::EventId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::orders::manages_event;
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::checkout::{CheckoutError, TicketView};
use crate::extract::ApiJson;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckinRequest {
    pub code: String,
    /// The event at whose door the code is scanned.
    pub event_id: String,
}

pub fn ticket_json(ticket: &TicketView) -> Value {
    json!({
        "id": ticket.id,
        "order_id": ticket.order_id,
        "event_id": ticket.event_id,
        "ticket_type": ticket.ticket_type,
        "code": ticket.code,
        "status": ticket.status,
    })
}

/// The QR image of a ticket, for its holder, the event's organizer and admins; anyone else
/// finds no such ticket. A refunded ticket's image is gone (410).
pub async fn qr_png(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let not_found = || Problem::from(CheckoutError::TicketNotFound);
    let id: uuid::Uuid = id.parse().map_err(|_| not_found())?;
    let ticket = match state.checkout().ticket(id).await? {
        Some(t) if t.user == user.id || manages_event(&state, &user, t.event_id).await? => t,
        _ => return Err(not_found()),
    };
    if ticket.status == "void" {
        return Err(Problem::new(
            StatusCode::GONE,
            "ticket-refunded",
            "Ticket refunded",
            "the ticket was refunded and no longer admits",
        ));
    }
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

/// Whether `user` may admit people to `event`: admins, the event's organizer, and staff of
/// that organizer. Others are refused (403) before the code is looked at.
async fn may_check_in(state: &AppState, user: &AuthUser, event: EventId) -> Result<(), Problem> {
    let organizer = match user.role {
        // Admins need no catalog: a node that runs only the tickets service serves them too.
        Role::Admin => return Ok(()),
        Role::Organizer => Some(user.id),
        Role::Staff => state.backend().staff_organizer(user.id).await?,
        Role::Customer => None,
    };
    let Some(organizer) = organizer else {
        return Err(Problem::forbidden(
            "check-in is for the event's organizer, its staff and admins",
        ));
    };
    let event = state
        .backend()
        .event(event)
        .await?
        .ok_or_else(Problem::event_not_found)?;
    if event.organizer != organizer {
        return Err(Problem::forbidden(
            "this event belongs to another organizer",
        ));
    }
    Ok(())
}

/// Door staff scan a code for an event: admitted once, then `already-admitted`.
pub async fn checkin(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CheckinRequest>,
) -> Result<Json<Value>, Problem> {
    let event: EventId =
        req.event_id.trim().parse().map_err(|_| {
            Problem::invalid(format!("event_id {:?} is not an event id", req.event_id))
        })?;
    may_check_in(&state, &user, event).await?;
    let admission = state.checkout().checkin(req.code.trim(), event).await?;
    let ticket = &admission.ticket;
    Ok(Json(json!({
        "ticket_id": ticket.id,
        "order_id": ticket.order_id,
        "event_id": ticket.event_id,
        "ticket_type": ticket.ticket_type,
        "status": ticket.status,
        "holder": {"name": admission.holder_name},
    })))
}
