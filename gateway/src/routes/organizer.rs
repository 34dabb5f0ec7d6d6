//! `GET /v1/events/{id}/orders` and `GET /v1/events/{id}/attendees`: the organizer's view of
//! an event, as JSON pages or as CSV (`?format=csv`). Only the event's organizer and admins
//! see it; to anyone else the event is missing.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use holdfast_actors::EventId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::parse_event_id;
use super::rfc3339;
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::backend::{Attendee, EventOrder};
use crate::problem::Problem;

/// Rows of a JSON page: 100 unless asked, at most 1000.
const PAGE_DEFAULT: u32 = 100;
const PAGE_MAX: u32 = 1000;
/// Rows of one CSV export at most (all of them unless `limit` says fewer).
pub const CSV_ROWS_MAX: u32 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewQuery {
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    pub format: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

/// The event, if `user` manages it (its organizer or an admin); else 404.
async fn managed_event(state: &AppState, user: &AuthUser, raw: &str) -> Result<EventId, Problem> {
    let id = parse_event_id(raw)?;
    let manages = match user.role {
        Role::Admin => state.backend().event(id).await?.is_some(),
        Role::Organizer => state
            .backend()
            .event(id)
            .await?
            .is_some_and(|e| e.organizer == user.id),
        Role::Customer | Role::Staff => false,
    };
    if manages {
        Ok(id)
    } else {
        Err(Problem::event_not_found())
    }
}

fn view_query(
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> Result<(Format, u32, u32), Problem> {
    let Query(q) = query.map_err(|e| Problem::invalid(e.body_text()))?;
    let format = match q.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(Problem::invalid(format!(
                "format must be json or csv, not {other:?}"
            )));
        }
    };
    let max = match format {
        Format::Json => PAGE_MAX,
        Format::Csv => CSV_ROWS_MAX,
    };
    let limit = q.limit.unwrap_or(match format {
        Format::Json => PAGE_DEFAULT,
        Format::Csv => CSV_ROWS_MAX,
    });
    if !(1..=max).contains(&limit) {
        return Err(Problem::invalid(format!(
            "limit must be between 1 and {max}"
        )));
    }
    Ok((format, limit, q.offset.unwrap_or(0)))
}

/// One CSV field as RFC 4180 writes it: quoted when it holds a comma, a quote or a line
/// break, quotes doubled. A field that a spreadsheet would run as a formula is prefixed with
/// `'` (OWASP "CSV injection").
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

fn csv_line(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&csv_field(field));
    }
    out.push_str("\r\n");
}

fn csv_response(body: String, name: &str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    response
}

fn order_json(o: &EventOrder) -> Value {
    json!({
        "id": o.id,
        "buyer": {"id": o.buyer, "email": o.buyer_email, "name": o.buyer_name},
        "status": o.status,
        "amount": o.amount,
        "refunded_amount": o.refunded_amount,
        "currency": o.currency,
        "items": o.items.iter().map(|(t, q, p)| json!({"ticket_type": t, "quantity": q, "price": p})).collect::<Vec<_>>(),
        "created_at": rfc3339(o.created_at),
        "updated_at": rfc3339(o.updated_at),
    })
}

pub const ORDERS_CSV_HEADER: &[&str] = &[
    "order_id",
    "buyer_id",
    "buyer_email",
    "buyer_name",
    "status",
    "amount",
    "refunded_amount",
    "currency",
    "tickets",
    "items",
    "created_at",
    "updated_at",
];

fn orders_csv(orders: &[EventOrder]) -> String {
    let mut out = String::with_capacity(64 * (orders.len() + 1));
    csv_line(&mut out, ORDERS_CSV_HEADER);
    for o in orders {
        let tickets: u32 = o.items.iter().map(|(_, q, _)| q).sum();
        let items = o
            .items
            .iter()
            .map(|(t, q, p)| format!("{t} x{q} @{p}"))
            .collect::<Vec<_>>()
            .join("; ");
        csv_line(
            &mut out,
            &[
                &o.id.to_string(),
                &o.buyer.to_string(),
                &o.buyer_email,
                o.buyer_name.as_deref().unwrap_or(""),
                &o.status,
                &o.amount.to_string(),
                &o.refunded_amount.to_string(),
                &o.currency,
                &tickets.to_string(),
                &items,
                &rfc3339(o.created_at),
                &rfc3339(o.updated_at),
            ],
        );
    }
    out
}

/// `GET /v1/events/{id}/orders`.
pub async fn orders(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let event = managed_event(&state, &user, &id).await?;
    let (format, limit, offset) = view_query(query)?;
    let page = state.backend().event_orders(event, limit, offset).await?;
    Ok(match format {
        Format::Csv => csv_response(orders_csv(&page.items), &format!("orders-{event}.csv")),
        Format::Json => Json(json!({
            "event_id": event,
            "total": page.total,
            "limit": limit,
            "offset": offset,
            "orders": page.items.iter().map(order_json).collect::<Vec<_>>(),
        }))
        .into_response(),
    })
}

fn attendee_json(a: &Attendee) -> Value {
    json!({
        "ticket_id": a.ticket_id,
        "order_id": a.order_id,
        "holder": {"id": a.holder, "email": a.holder_email, "name": a.holder_name},
        "ticket_type": a.ticket_type,
        "ticket_type_name": a.ticket_type_name,
        "checked_in": a.checked_in_at.is_some(),
        "checked_in_at": a.checked_in_at.map(rfc3339),
    })
}

pub const ATTENDEES_CSV_HEADER: &[&str] = &[
    "ticket_id",
    "order_id",
    "holder_id",
    "holder_email",
    "holder_name",
    "ticket_type",
    "ticket_type_name",
    "checked_in",
    "checked_in_at",
];

fn attendees_csv(attendees: &[Attendee]) -> String {
    let mut out = String::with_capacity(64 * (attendees.len() + 1));
    csv_line(&mut out, ATTENDEES_CSV_HEADER);
    for a in attendees {
        csv_line(
            &mut out,
            &[
                &a.ticket_id.to_string(),
                &a.order_id.to_string(),
                &a.holder.to_string(),
                a.holder_email.as_deref().unwrap_or(""),
                a.holder_name.as_deref().unwrap_or(""),
                &a.ticket_type,
                a.ticket_type_name.as_deref().unwrap_or(""),
                if a.checked_in_at.is_some() {
                    "true"
                } else {
                    "false"
                },
                &a.checked_in_at.map(rfc3339).unwrap_or_default(),
            ],
        );
    }
    out
}

/// `GET /v1/events/{id}/attendees`.
pub async fn attendees(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    query: Result<Query<ViewQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let event = managed_event(&state, &user, &id).await?;
    let (format, limit, offset) = view_query(query)?;
    let page = state
        .backend()
        .event_attendees(event, limit, offset)
        .await?;
    Ok(match format {
        Format::Csv => csv_response(
            attendees_csv(&page.items),
            &format!("attendees-{event}.csv"),
        ),
        Format::Json => Json(json!({
            "event_id": event,
            "total": page.total,
            "limit": limit,
            "offset": offset,
            "attendees": page.items.iter().map(attendee_json).collect::<Vec<_>>(),
        }))
        .into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-1,2"), "\"'-1,2\"");
    }
}
