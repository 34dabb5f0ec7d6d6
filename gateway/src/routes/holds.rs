//! `POST /v1/events/{id}/holds`, `GET /v1/holds/{id}`, `DELETE /v1/holds/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use holdfast_actors::{HoldId, HoldRef, HoldView, Line, Quantity, TicketCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::parse_event_id;
use super::rfc3339_millis;
use crate::AppState;
use crate::auth::AuthUser;
use crate::extract::ApiJson;
use crate::problem::Problem;
use crate::rate_limit::Limit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    pub items: Vec<ItemRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemRequest {
    pub ticket_type: String,
    pub quantity: i64,
}

fn parse_items(items: &[ItemRequest]) -> Result<Vec<Line>, Problem> {
    if items.is_empty() {
        return Err(Problem::invalid("items must hold at least one line"));
    }
    if items.len() > holdfast_actors::inventory::HOLD_LINES_MAX {
        return Err(Problem::invalid(format!(
            "a hold has at most {} lines",
            holdfast_actors::inventory::HOLD_LINES_MAX
        )));
    }
    items
        .iter()
        .map(|item| {
            let ticket_type = TicketCode::parse(&item.ticket_type).map_err(|_| {
                Problem::invalid(format!("unknown ticket type {:?}", item.ticket_type))
            })?;
            let quantity = u32::try_from(item.quantity)
                .ok()
                .and_then(|q| Quantity::new(q).ok())
                .ok_or_else(|| {
                    Problem::invalid(format!("quantity must be between 1 and {}", Quantity::MAX))
                })?;
            Ok(Line {
                ticket_type,
                quantity,
            })
        })
        .collect()
}

pub fn hold_json(hold: &HoldView) -> Value {
    json!({
        "id": HoldRef { event_id: hold.event_id, hold_id: hold.id }.to_string(),
        "event_id": hold.event_id,
        "items": hold.items.iter().map(|l| json!({"ticket_type": l.ticket_type.as_str(), "quantity": l.quantity.get()})).collect::<Vec<_>>(),
        "expires_at": rfc3339_millis(hold.expires_at.as_millis()),
        "status": hold.status.as_str(),
    })
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Path(event): Path<String>,
    request_headers: HeaderMap,
    ApiJson(req): ApiJson<HoldRequest>,
) -> Result<(StatusCode, HeaderMap, Json<Value>), Problem> {
    let limits = state.rate_limits();
    limits.check(Limit::Holds, &user.id.to_string()).await?;
    let event_id = parse_event_id(&event)?;
    limits
        .check(Limit::EventHolds, &event_id.to_string())
        .await?;
    let items = parse_items(&req.items)?;
    let key = request_headers
        .get(crate::idempotency::HEADER)
        .and_then(|v| v.to_str().ok());
    let hold_id = match key {
        Some(key) => HoldId(holdfast_actors::domain::derived_id(
            &user.id.to_string(),
            key,
        )),
        None => HoldId::generate(),
    };
    let hold_ref = HoldRef { event_id, hold_id };
    let admission = admission_of(&state, &request_headers, event_id, &user)?;
    let hold = state
        .backend()
        .hold(hold_ref, user.id, items, admission)
        .await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/holds/{hold_ref}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(hold_json(&hold))))
}

/// The header a hold on a queued event carries the buyer's admission token in.
pub const ADMISSION_HEADER: &str = "holdfast-admission";

/// The number of the admission `Holdfast-Admission` grants the caller on `event`, if the
/// header is there; a token that is not valid for them and this event now is 403
/// `not-admitted` at once. (Whether the event needs one, and whether that admission still
/// runs, its actor decides.)
fn admission_of(
    state: &AppState,
    headers: &HeaderMap,
    event: holdfast_actors::EventId,
    user: &AuthUser,
) -> Result<Option<u64>, Problem> {
    let Some(raw) = headers.get(ADMISSION_HEADER) else {
        return Ok(None);
    };
    let token = raw
        .to_str()
        .map_err(|_| Problem::not_admitted("the admission token is malformed"))?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    state
        .tokens()
        .admissions()
        .verify(token, event, user.id, now)
        .map(|a| Some(a.n))
        .map_err(|e| Problem::not_admitted(e.to_string()))
}

/// The caller's hold; another user's hold is reported as missing, not forbidden.
async fn own_hold(
    state: &AppState,
    user: &AuthUser,
    raw: &str,
) -> Result<(HoldRef, HoldView), Problem> {
    let hold_ref: HoldRef = raw.parse().map_err(|_| Problem::hold_not_found())?;
    match state.backend().get_hold(hold_ref).await {
        Ok(Some(hold)) if hold.user == user.id => Ok((hold_ref, hold)),
        Ok(_) | Err(crate::backend::BackendError::EventNotFound) => Err(Problem::hold_not_found()),
        Err(e) => Err(e.into()),
    }
}

pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (_, hold) = own_hold(&state, &user, &id).await?;
    Ok(Json(hold_json(&hold)))
}

pub async fn release(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    let (hold_ref, _) = own_hold(&state, &user, &id).await?;
    state.backend().release(hold_ref).await?;
    Ok(StatusCode::NO_CONTENT)
}
