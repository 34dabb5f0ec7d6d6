//! `POST /v1/events`, `GET /v1/events[/{id}]`, `GET /v1/events/{id}/availability`,
//! `GET /v1/categories`, `GET /v1/organizer/events`.

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use holdfast_actors::queue::QueueConfig;
use holdfast_actors::{EventId, TicketCode};
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::rfc3339;
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::backend::{EventInfo, EventQuery, NewEvent, SalePeriod, TicketTypeSpec};
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
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub sale_starts_at: Option<String>,
    #[serde(default)]
    pub sale_ends_at: Option<String>,
    /// The IANA time zone its messages show the start in; Vietnam's by default.
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The waiting room: holds only by buyers it admits.
    #[serde(default)]
    pub queue: Option<QueueConfig>,
}

/// The most a queue setting may say: a million admissions a minute or at once, a day's TTL.
const QUEUE_RATE_MAX: u32 = 1_000_000;
const QUEUE_TTL_MAX_SECS: u32 = 86_400;

/// Queue settings that admit someone, within bounds; a 422 otherwise.
pub fn check_queue(queue: QueueConfig) -> Result<QueueConfig, Problem> {
    if !(1..=QUEUE_RATE_MAX).contains(&queue.admit_per_minute) {
        return Err(Problem::invalid(format!(
            "queue.admit_per_minute must be between 1 and {QUEUE_RATE_MAX}"
        )));
    }
    if !(1..=QUEUE_RATE_MAX).contains(&queue.active_max) {
        return Err(Problem::invalid(format!(
            "queue.active_max must be between 1 and {QUEUE_RATE_MAX}"
        )));
    }
    if !(1..=QUEUE_TTL_MAX_SECS).contains(&queue.admission_ttl_secs) {
        return Err(Problem::invalid(format!(
            "queue.admission_ttl_secs must be between 1 and {QUEUE_TTL_MAX_SECS}"
        )));
    }
    Ok(queue)
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

/// Longest event description, in characters.
pub const DESCRIPTION_MAX: usize = 5000;

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

/// `GET /v1/events` query: filters and a page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub category: Option<String>,
    pub q: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

/// Longest search text of `q`, in characters.
pub const SEARCH_MAX: usize = 100;

/// A path segment that is not an event id names no event.
pub fn parse_event_id(raw: &str) -> Result<EventId, Problem> {
    raw.parse().map_err(|_| Problem::event_not_found())
}

pub fn text(field: &str, value: &str, max: usize, required: bool) -> Result<String, Problem> {
    let value = value.trim();
    if (required && value.is_empty()) || value.chars().count() > max {
        return Err(Problem::invalid(format!(
            "{field} must be {} to {max} characters",
            usize::from(required)
        )));
    }
    Ok(value.to_owned())
}

pub fn parse_ticket_type(t: &TicketTypeRequest) -> Result<TicketTypeSpec, Problem> {
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

/// An RFC 3339 time given as `field`.
pub fn parse_time(field: &str, raw: &str) -> Result<OffsetDateTime, Problem> {
    OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
        Problem::invalid(format!(
            "{field} must be an RFC 3339 time like 2030-12-31T20:00:00Z"
        ))
    })
}

/// A sale period that ends after it starts.
pub fn check_sale(sale: SalePeriod) -> Result<SalePeriod, Problem> {
    if let (Some(s), Some(e)) = (sale.starts_at, sale.ends_at)
        && e <= s
    {
        return Err(Problem::invalid(
            "sale_ends_at must be after sale_starts_at",
        ));
    }
    Ok(sale)
}

/// A category slug as written: 1 to 32 of a-z, 0-9, '-'. Whether it exists is the backend's.
pub fn parse_category(raw: &str) -> Result<String, Problem> {
    let ok = !raw.is_empty()
        && raw.len() <= 32
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-category",
            "Unknown category",
            format!("no category {raw:?}; GET /v1/categories lists them"),
        ))
    }
}

/// Where an event stands at `now`, as it reads `status`.
pub fn status(e: &EventInfo, now: OffsetDateTime) -> &'static str {
    if e.cancelled_at.is_some() {
        "cancelled"
    } else if e.sale.starts_at.is_some_and(|s| now < s) {
        "scheduled"
    } else if e.sale.ends_at.is_some_and(|end| now >= end) {
        "sale_ended"
    } else {
        "on_sale"
    }
}

/// When an event starts: an RFC 3339 time after `now` (an event in the past never sells).
pub fn parse_starts_at(raw: &str, now: OffsetDateTime) -> Result<OffsetDateTime, Problem> {
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
        "description": e.description,
        "category": e.category,
        "starts_at": rfc3339(e.starts_at),
        "sale_starts_at": e.sale.starts_at.map(rfc3339),
        "sale_ends_at": e.sale.ends_at.map(rfc3339),
        "status": status(e, OffsetDateTime::now_utc()),
        "cancelled_at": e.cancelled_at.map(rfc3339),
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
        "queue": e.queue,
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
    let sale = check_sale(SalePeriod {
        starts_at: req
            .sale_starts_at
            .as_deref()
            .map(|t| parse_time("sale_starts_at", t))
            .transpose()?,
        ends_at: req
            .sale_ends_at
            .as_deref()
            .map(|t| parse_time("sale_ends_at", t))
            .transpose()?,
    })?;
    let event = NewEvent {
        id: EventId::generate(),
        organizer: user.id,
        name: text("name", &req.name, 200, true)?,
        venue: text("venue", &req.venue, 200, false)?,
        starts_at,
        ticket_types,
        refund_policy: req.refund_policy,
        description: text("description", &req.description, DESCRIPTION_MAX, false)?,
        category: req.category.as_deref().map(parse_category).transpose()?,
        sale,
        time_zone,
        queue: req.queue.map(check_queue).transpose()?,
    };
    let created = state.backend().create_event(event).await?;
    tracing::info!(event = %created.id, organizer = %user.id, "event created");
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/events/{}", created.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(event_json(&created))))
}

/// A page's `limit` (default 50, 1 to 200) and `offset`.
fn page_bounds(limit: Option<u32>, offset: Option<u32>) -> Result<(u32, u32), Problem> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(Problem::invalid("limit must be between 1 and 200"));
    }
    Ok((limit, offset.unwrap_or(0)))
}

fn event_query(q: ListQuery) -> Result<EventQuery, Problem> {
    let (limit, offset) = page_bounds(q.limit, q.offset)?;
    let text = match q.q.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) if t.chars().count() > SEARCH_MAX => {
            return Err(Problem::invalid(format!(
                "q must be at most {SEARCH_MAX} characters"
            )));
        }
        Some(t) => Some(t.to_owned()),
    };
    let from = q
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?;
    let to = q.to.as_deref().map(|t| parse_time("to", t)).transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && to < from
    {
        return Err(Problem::invalid("to must not be before from"));
    }
    Ok(EventQuery {
        organizer: None,
        category: q.category.as_deref().map(parse_category).transpose()?,
        text,
        from,
        to,
        limit,
        offset,
    })
}

/// `GET /v1/events`: public, filtered by category, text and start time.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    let Query(query) = query.map_err(|e| Problem::invalid(e.body_text()))?;
    let events = state.backend().events(&event_query(query)?).await?;
    Ok(Json(Value::Array(events.iter().map(event_json).collect())))
}

/// `GET /v1/organizer/events`: the caller's own events, with the public list's filters.
pub async fn list_own(
    State(state): State<AppState>,
    user: AuthUser,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, Problem> {
    user.require(&[Role::Organizer, Role::Admin])?;
    let Query(query) = query.map_err(|e| Problem::invalid(e.body_text()))?;
    let query = EventQuery {
        organizer: Some(user.id),
        ..event_query(query)?
    };
    let events = state.backend().events(&query).await?;
    Ok(Json(Value::Array(events.iter().map(event_json).collect())))
}

/// `GET /v1/categories`: what events may be filed under.
pub async fn categories(State(state): State<AppState>) -> Result<Json<Value>, Problem> {
    let categories = state.backend().categories().await?;
    Ok(Json(Value::Array(
        categories
            .iter()
            .map(|c| json!({"slug": c.slug, "name": c.name}))
            .collect(),
    )))
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
