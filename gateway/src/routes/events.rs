//! `POST /v1/events`, `GET /v1/events[/{id}]`, `GET /v1/events/{id}/availability`.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use holdfast_actors::{EventId, TicketCode};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::rfc3339;
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::backend::{EventInfo, NewEvent, TicketTypeSpec};
use crate::extract::ApiJson;
use crate::problem::Problem;

pub const CAPACITY_MAX: u64 = 1_000_000;
/// Currencies tickets may be priced in: those the payment provider takes. VNPAY settles in
/// VND only; an order in any other currency could never be paid.
pub const CURRENCIES: &[&str] = &["VND"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    pub name: String,
    #[serde(default)]
    pub venue: String,
    pub starts_at: String,
    pub ticket_types: Vec<TicketTypeRequest>,
    /// No policy: buyers cannot refund by themselves.
    #[serde(default)]
    pub refund_policy: Option<holdfast_actors::RefundPolicy>,
    /// The IANA time zone its messages show the start in; Vietnam's by default.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// The time zone of events created without one.
pub const DEFAULT_TIME_ZONE: &str = "Asia/Ho_Chi_Minh";

/// An IANA time zone name the bundled zone database knows; a 422 otherwise.
pub fn parse_time_zone(raw: Option<&str>) -> Result<String, Problem> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_TIME_ZONE.to_owned());
    };
    match jiff::tz::TimeZone::get(raw) {
        Ok(_) if !raw.is_empty() && raw.len() <= 64 => Ok(raw.to_owned()),
        _ => Err(Problem::invalid(format!(
            "time_zone must be an IANA time zone name such as Asia/Ho_Chi_Minh, not {:?}",
            raw.chars().take(64).collect::<String>()
        ))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketTypeRequest {
    pub code: String,
    pub name: String,
    pub price: i64,
    pub currency: String,
    pub capacity: u64,
    #[serde(default)]
    pub per_user_limit: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// A path segment that is not an event id names no event.
pub fn parse_event_id(raw: &str) -> Result<EventId, Problem> {
    raw.parse().map_err(|_| Problem::event_not_found())
}

fn text(field: &str, value: &str, max: usize, required: bool) -> Result<String, Problem> {
    let value = value.trim();
    if (required && value.is_empty()) || value.chars().count() > max {
        return Err(Problem::invalid(format!(
            "{field} must be {} to {max} characters",
            usize::from(required)
        )));
    }
    Ok(value.to_owned())
}

fn parse_ticket_type(t: &TicketTypeRequest) -> Result<TicketTypeSpec, Problem> {
    let code = TicketCode::parse(&t.code)
        .map_err(|e| Problem::invalid(format!("ticket type {:?}: {e}", t.code)))?;
    if t.price < 0 {
        return Err(Problem::invalid(format!(
            "ticket type {code}: price must not be negative"
        )));
    }
    if t.currency.len() != 3 || !t.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Problem::invalid(format!(
            "ticket type {code}: currency must be a 3-letter ISO 4217 code like VND"
        )));
    }
    if !CURRENCIES.contains(&t.currency.as_str()) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "currency-not-supported",
            "Currency not supported",
            format!(
                "ticket type {code}: the payment provider (VNPAY) takes {} only, not {}",
                CURRENCIES.join(", "),
                t.currency
            ),
        )
        .with("supported", json!(CURRENCIES)));
    }
    if t.capacity > CAPACITY_MAX {
        return Err(Problem::invalid(format!(
            "ticket type {code}: capacity must be at most {CAPACITY_MAX}"
        )));
    }
    let per_user_limit = match t.per_user_limit {
        None => None,
        Some(0) => {
            return Err(Problem::invalid(format!(
                "ticket type {code}: per_user_limit must be at least 1"
            )));
        }
        Some(n) => Some(u32::try_from(n).unwrap_or(u32::MAX)),
    };
    Ok(TicketTypeSpec {
        name: text("ticket type name", &t.name, 100, true)?,
        code,
        price: t.price,
        currency: t.currency.clone(),
        capacity: u32::try_from(t.capacity).unwrap_or(u32::MAX),
        per_user_limit,
    })
}

/// When an event starts: an RFC 3339 time after `now` (an event in the past never sells).
fn parse_starts_at(raw: &str, now: OffsetDateTime) -> Result<OffsetDateTime, Problem> {
    let starts_at = OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
        Problem::invalid("starts_at must be an RFC 3339 time like 2030-12-31T20:00:00Z")
    })?;
    if starts_at <= now {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "event-in-past",
            "Event in the past",
            format!(
                "starts_at {} is not in the future: nobody could buy a ticket for it",
                rfc3339(starts_at)
            ),
        ));
    }
    Ok(starts_at)
}

pub fn event_json(e: &EventInfo) -> Value {
    json!({
        "id": e.id,
        "organizer_id": e.organizer,
        "name": e.name,
        "venue": e.venue,
        "starts_at": rfc3339(e.starts_at),
        "created_at": rfc3339(e.created_at),
        "ticket_types": e.ticket_types.iter().map(|t| json!({
            "code": t.code.as_str(),
            "name": t.name,
            "price": t.price,
            "currency": t.currency,
            "capacity": t.capacity,
            "per_user_limit": t.per_user_limit,
        })).collect::<Vec<_>>(),
        "refund_policy": e.refund_policy,
        "time_zone": e.time_zone,
    })
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateEvent>,
) -> Result<(StatusCode, HeaderMap, Json<Value>), Problem> {
    user.require(&[Role::Organizer, Role::Admin])?;
    let starts_at = parse_starts_at(&req.starts_at, OffsetDateTime::now_utc())?;
    let time_zone = parse_time_zone(req.time_zone.as_deref())?;
    if req.ticket_types.is_empty()
        || req.ticket_types.len() > holdfast_actors::inventory::TICKET_TYPES_MAX
    {
        return Err(Problem::invalid(format!(
            "an event needs 1 to {} ticket types",
            holdfast_actors::inventory::TICKET_TYPES_MAX
        )));
    }
    let ticket_types = req
        .ticket_types
        .iter()
        .map(parse_ticket_type)
        .collect::<Result<Vec<_>, _>>()?;
    let mut codes = BTreeSet::new();
    if let Some(dup) = ticket_types.iter().find(|t| !codes.insert(&t.code)) {
        return Err(Problem::invalid(format!(
            "ticket type code {} appears twice",
            dup.code
        )));
    }
    let event = NewEvent {
        id: EventId::generate(),
        organizer: user.id,
        name: text("name", &req.name, 200, true)?,
        venue: text("venue", &req.venue, 200, false)?,
        starts_at,
        ticket_types,
        refund_policy: req.refund_policy,
        time_zone,
    };
    let created = state.backend().create_event(event).await?;
    tracing::info!(event = %created.id, organizer = %user.id, "event created");
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/events/{}", created.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(event_json(&created))))
}

pub async fn list(
    State(state): State<AppState>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(page) = page.map_err(|e| Problem::invalid(e.body_text()))?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Problem::invalid("limit must be between 1 and 200"));
    }
    let events = state
        .backend()
        .events(limit, page.offset.unwrap_or(0))
        .await?;
    Ok(Json(Value::Array(events.iter().map(event_json).collect())))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id = parse_event_id(&id)?;
    let event = state
        .backend()
        .event(id)
        .await?
        .ok_or_else(Problem::event_not_found)?;
    Ok(Json(event_json(&event)))
}

pub async fn availability(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let id = parse_event_id(&id)?;
    let stock = state.backend().availability(id).await?;
    Ok(Json(json!({
        "event_id": id,
        "ticket_types": stock.iter().map(|(code, s)| json!({
            "code": code.as_str(),
            "capacity": s.capacity,
            "available": s.available,
            "held": s.held,
            "sold": s.sold,
        })).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket_type(price: i64, currency: &str) -> TicketTypeRequest {
        TicketTypeRequest {
            code: "GA".to_owned(),
            name: "General".to_owned(),
            price,
            currency: currency.to_owned(),
            capacity: 10,
            per_user_limit: None,
        }
    }

    #[test]
    fn events_start_in_the_future() {
        let now = OffsetDateTime::parse("2026-06-01T12:00:00Z", &Rfc3339).unwrap();
        assert!(parse_starts_at("2026-06-01T12:00:01Z", now).is_ok());
        for past in ["2026-06-01T12:00:00Z", "2020-01-01T00:00:00Z"] {
            assert_eq!(
                parse_starts_at(past, now).unwrap_err().slug,
                "event-in-past"
            );
        }
        assert_eq!(
            parse_starts_at("tomorrow", now).unwrap_err().slug,
            "invalid-request"
        );
    }

    #[test]
    fn tickets_are_priced_in_a_currency_the_payment_provider_takes() {
        assert!(parse_ticket_type(&ticket_type(500_000, "VND")).is_ok());
        assert!(parse_ticket_type(&ticket_type(0, "VND")).is_ok());
        let usd = parse_ticket_type(&ticket_type(10, "USD")).unwrap_err();
        assert_eq!(usd.slug, "currency-not-supported");
        assert!(usd.detail.contains("VND"), "{}", usd.detail);
        assert_eq!(
            parse_ticket_type(&ticket_type(10, "vnd")).unwrap_err().slug,
            "invalid-request"
        );
    }
}
