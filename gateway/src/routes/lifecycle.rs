//! `PATCH /v1/events/{id}`, `POST /v1/events/{id}/ticket-types`,
//! `PATCH /v1/events/{id}/ticket-types/{code}`, `POST /v1/events/{id}/cancel`: the owner's (or
//! an admin's) edits. Another organizer finds no such event.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use holdfast_actors::TicketCode;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use time::OffsetDateTime;

use super::events::{
    CAPACITY_MAX, DESCRIPTION_MAX, TicketTypeRequest, check_sale, event_json, parse_category,
    parse_event_id, parse_starts_at, parse_ticket_type, parse_time, text,
};
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::backend::{EventChanges, EventInfo, SalePeriod, TicketTypeChanges};
use crate::extract::ApiJson;
use crate::problem::Problem;

/// A field that may be absent (keep), `null` (clear) or a value.
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventPatch {
    pub name: Option<String>,
    pub venue: Option<String>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub category: Option<Option<String>>,
    pub starts_at: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub sale_starts_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    pub sale_ends_at: Option<Option<String>>,
    /// null: buyers can no longer refund by themselves (orders already refunded stay so).
    #[serde(default, deserialize_with = "nullable")]
    pub refund_policy: Option<Option<holdfast_actors::RefundPolicy>>,
    /// null: sold without a waiting room from now on.
    #[serde(default, deserialize_with = "nullable")]
    pub queue: Option<Option<holdfast_actors::queue::QueueConfig>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketTypePatch {
    pub name: Option<String>,
    pub price: Option<i64>,
    pub capacity: Option<u64>,
    #[serde(default, deserialize_with = "nullable")]
    pub per_user_limit: Option<Option<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    pub reason: String,
}

/// The event `raw` names if `user` may edit it: an admin, or the organizer who owns it.
/// Anyone else (another organizer) finds no such event.
pub async fn owned_event(
    state: &AppState,
    user: &AuthUser,
    raw: &str,
) -> Result<EventInfo, Problem> {
    user.require(&[Role::Organizer, Role::Admin])?;
    let id = parse_event_id(raw)?;
    match state.backend().event(id).await? {
        Some(e) if user.role == Role::Admin || e.organizer == user.id => Ok(e),
        _ => Err(Problem::event_not_found()),
    }
}

fn not_cancelled(event: &EventInfo) -> Result<(), Problem> {
    if event.cancelled_at.is_some() {
        return Err(holdfast_actors::inventory::Error::EventCancelled.into());
    }
    Ok(())
}

fn optional_time(
    field: &str,
    raw: Option<Option<String>>,
) -> Result<Option<Option<OffsetDateTime>>, Problem> {
    raw.map(|t| t.as_deref().map(|t| parse_time(field, t)).transpose())
        .transpose()
}

fn event_changes(event: &EventInfo, req: EventPatch) -> Result<EventChanges, Problem> {
    let changes = EventChanges {
        name: req.name.map(|n| text("name", &n, 200, true)).transpose()?,
        venue: req
            .venue
            .map(|v| text("venue", &v, 200, false))
            .transpose()?,
        description: req
            .description
            .map(|d| text("description", &d, DESCRIPTION_MAX, false))
            .transpose()?,
        category: req
            .category
            .map(|c| c.as_deref().map(parse_category).transpose())
            .transpose()?,
        starts_at: req
            .starts_at
            .map(|t| parse_starts_at(&t, OffsetDateTime::now_utc()))
            .transpose()?,
        sale_starts_at: optional_time("sale_starts_at", req.sale_starts_at)?,
        sale_ends_at: optional_time("sale_ends_at", req.sale_ends_at)?,
        refund_policy: req.refund_policy,
        queue: req
            .queue
            .map(|q| q.map(super::events::check_queue).transpose())
            .transpose()?,
    };
    check_sale(SalePeriod {
        starts_at: changes.sale_starts_at.unwrap_or(event.sale.starts_at),
        ends_at: changes.sale_ends_at.unwrap_or(event.sale.ends_at),
    })?;
    Ok(changes)
}

/// `PATCH /v1/events/{id}`.
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<EventPatch>,
) -> Result<Json<Value>, Problem> {
    let event = owned_event(&state, &user, &id).await?;
    not_cancelled(&event)?;
    let changes = event_changes(&event, req)?;
    let updated = state.backend().update_event(event.id, changes).await?;
    tracing::info!(event = %event.id, by = %user.id, "event edited");
    Ok(Json(event_json(&updated)))
}

/// `POST /v1/events/{id}/ticket-types`.
pub async fn add_ticket_type(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<TicketTypeRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let event = owned_event(&state, &user, &id).await?;
    not_cancelled(&event)?;
    let spec = parse_ticket_type(&req)?;
    if event.ticket_types.len() >= holdfast_actors::inventory::TICKET_TYPES_MAX {
        return Err(Problem::invalid(format!(
            "an event has at most {} ticket types",
            holdfast_actors::inventory::TICKET_TYPES_MAX
        )));
    }
    let currencies: BTreeSet<&str> = event
        .ticket_types
        .iter()
        .map(|t| t.currency.as_str())
        .collect();
    if !currencies.is_empty() && !currencies.contains(spec.currency.as_str()) {
        return Err(Problem::invalid(
            "every ticket type of an event is priced in the same currency",
        ));
    }
    let updated = state.backend().add_ticket_type(event.id, spec).await?;
    Ok((StatusCode::CREATED, Json(event_json(&updated))))
}

fn ticket_type_changes(
    code: &TicketCode,
    req: TicketTypePatch,
) -> Result<TicketTypeChanges, Problem> {
    if req.price.is_some_and(|p| p < 0) {
        return Err(Problem::invalid(format!(
            "ticket type {code}: price must not be negative"
        )));
    }
    if req.capacity.is_some_and(|c| c > CAPACITY_MAX) {
        return Err(Problem::invalid(format!(
            "ticket type {code}: capacity must be at most {CAPACITY_MAX}"
        )));
    }
    if req.per_user_limit == Some(Some(0)) {
        return Err(Problem::invalid(format!(
            "ticket type {code}: per_user_limit must be at least 1"
        )));
    }
    Ok(TicketTypeChanges {
        name: req
            .name
            .map(|n| text("ticket type name", &n, 100, true))
            .transpose()?,
        price: req.price,
        capacity: req.capacity.map(|c| u32::try_from(c).unwrap_or(u32::MAX)),
        per_user_limit: req
            .per_user_limit
            .map(|l| l.map(|n| u32::try_from(n).unwrap_or(u32::MAX))),
    })
}

/// `PATCH /v1/events/{id}/ticket-types/{code}`.
pub async fn update_ticket_type(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, code)): Path<(String, String)>,
    ApiJson(req): ApiJson<TicketTypePatch>,
) -> Result<Json<Value>, Problem> {
    let event = owned_event(&state, &user, &id).await?;
    not_cancelled(&event)?;
    let code = TicketCode::parse(&code).map_err(|_| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "ticket-type-not-found",
            "Ticket type not found",
            "the event has no ticket type with this code",
        )
    })?;
    let changes = ticket_type_changes(&code, req)?;
    let updated = state
        .backend()
        .update_ticket_type(event.id, code, changes)
        .await?;
    Ok(Json(event_json(&updated)))
}

/// `POST /v1/events/{id}/cancel`: 202 once the cancel is stored, no hold can be placed and
/// every hold is released. The paid orders are refunded in full right after, in the
/// background, by the node's cancel refunds (which go on after a restart too). Cancelling
/// again answers the same.
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let event = owned_event(&state, &user, &id).await?;
    let reason = text("reason", &req.reason, 500, true)?;
    let cancelled = state.backend().cancel_event(event.id, &reason).await?;
    tracing::info!(event = %event.id, by = %user.id, "event cancelled");
    Ok((StatusCode::ACCEPTED, Json(event_json(&cancelled))))
}
