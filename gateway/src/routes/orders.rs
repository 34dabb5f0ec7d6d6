//! `POST /v1/orders`, `GET /v1/orders`, `GET /v1/orders/{id}`, `POST /v1/orders/{id}/refund`,
//! `GET /v1/orders/{id}/refunds`,
//! `GET /v1/orders/{id}/tickets`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use holdfast_actors::{EventId, HoldRef, OrderId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::rfc3339_millis;
use super::tickets::ticket_json;
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::checkout::{OrderView, RefundBy, RefundView};
use crate::extract::ApiJson;
use crate::problem::Problem;
use crate::rate_limit::Limit;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub hold_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    pub reason: String,
    /// Some of the order's tickets; absent: every ticket left.
    #[serde(default)]
    pub ticket_ids: Option<Vec<String>>,
}

/// Tickets one refund names at most (an order has at most this many seats per line).
const REFUND_TICKETS_MAX: usize = 1_000;

pub fn refund_json(r: &RefundView) -> Value {
    json!({
        "id": r.id,
        "order_id": r.order_id,
        "amount": r.amount,
        "fee": r.fee,
        "currency": r.currency,
        "status": r.status,
        "ticket_ids": r.ticket_ids,
        "reason": r.reason,
        "by": if r.by_organizer { "organizer" } else { "buyer" },
        "note": r.note,
        "created_at": rfc3339_millis(r.created_at_ms),
        "updated_at": rfc3339_millis(r.updated_at_ms),
    })
}

pub fn order_json(order: &OrderView) -> Value {
    json!({
        "id": order.id,
        "hold_id": order.hold.to_string(),
        "event_id": order.hold.event_id,
        "status": order.status,
        "amount": order.amount,
        "currency": order.currency,
        "items": order.items.iter().map(|l| json!({"ticket_type": l.ticket_type, "quantity": l.quantity, "price": l.price})).collect::<Vec<_>>(),
        "payment_url": order.payment_url,
        "note": order.note,
        "created_at": rfc3339_millis(order.created_at_ms),
    })
}

pub fn parse_order_id(raw: &str) -> Result<OrderId, Problem> {
    raw.parse::<uuid::Uuid>()
        .map(OrderId)
        .map_err(|_| Problem::order_not_found())
}

/// How the caller stands to an order it may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderAccess {
    /// The buyer.
    Buyer,
    /// The event's organizer, or an admin.
    Manager,
}

/// Whether `user` manages event `event`: an admin, or the organizer who owns it.
pub async fn manages_event(
    state: &AppState,
    user: &AuthUser,
    event: EventId,
) -> Result<bool, Problem> {
    Ok(match user.role {
        Role::Admin => true,
        Role::Organizer => state
            .backend()
            .event(event)
            .await?
            .is_some_and(|e| e.organizer == user.id),
        Role::Customer | Role::Staff => false,
    })
}

/// An order the caller may see: its buyer, the event's organizer and admins; to anyone else
/// (staff included) it is missing.
async fn visible_order(
    state: &AppState,
    user: &AuthUser,
    raw: &str,
) -> Result<(OrderView, OrderAccess), Problem> {
    let id = parse_order_id(raw)?;
    let Some(order) = state.checkout().order(id).await? else {
        return Err(Problem::order_not_found());
    };
    if manages_event(state, user, order.hold.event_id).await? {
        Ok((order, OrderAccess::Manager))
    } else if order.user == user.id {
        Ok((order, OrderAccess::Buyer))
    } else {
        Err(Problem::order_not_found())
    }
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    request_headers: HeaderMap,
    ApiJson(req): ApiJson<OrderRequest>,
) -> Result<(StatusCode, HeaderMap, Json<Value>), Problem> {
    state
        .rate_limits()
        .check(Limit::Orders, &user.id.to_string())
        .await?;
    let hold: HoldRef = req
        .hold_id
        .parse()
        .map_err(|_| Problem::invalid(format!("hold_id {:?} is not a hold id", req.hold_id)))?;
    let key = request_headers
        .get(crate::idempotency::HEADER)
        .and_then(|v| v.to_str().ok());
    let order_id = match key {
        Some(key) => OrderId(holdfast_actors::domain::derived_id(
            &format!("order:{}", user.id),
            key,
        )),
        None => OrderId(uuid::Uuid::now_v7()),
    };
    let (order, created) = state
        .checkout()
        .create_order(user.id, hold, order_id)
        .await?;
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/orders/{}", order.id)) {
        headers.insert(header::LOCATION, location);
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, headers, Json(order_json(&order))))
}

pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (order, _) = visible_order(&state, &user, &id).await?;
    Ok(Json(order_json(&order)))
}

pub async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, Problem> {
    let orders = state.checkout().orders(user.id).await?;
    Ok(Json(json!({
        "orders": orders.iter().map(order_json).collect::<Vec<_>>(),
    })))
}

pub async fn refund(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RefundRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let (order, access) = visible_order(&state, &user, &id).await?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(Problem::invalid("reason must be 1-500 characters"));
    }
    let ticket_ids = match &req.ticket_ids {
        None => Vec::new(),
        Some(ids) if ids.is_empty() || ids.len() > REFUND_TICKETS_MAX => {
            return Err(Problem::invalid(format!(
                "ticket_ids names 1 to {REFUND_TICKETS_MAX} tickets; leave it out to refund them all"
            )));
        }
        Some(ids) => ids
            .iter()
            .map(|t| {
                t.parse::<uuid::Uuid>()
                    .map_err(|_| Problem::invalid(format!("ticket id {t:?} is not a ticket id")))
            })
            .collect::<Result<_, _>>()?,
    };
    let by = match access {
        OrderAccess::Buyer => RefundBy::Buyer,
        OrderAccess::Manager => RefundBy::Organizer,
    };
    let refund = state
        .checkout()
        .refund_tickets(order.id, reason.to_owned(), by, ticket_ids)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(refund_json(&refund))))
}

/// `GET /v1/orders/{id}/refunds`: who sees the order sees its refunds.
pub async fn refunds(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let (order, _) = visible_order(&state, &user, &id).await?;
    let refunds = state.checkout().refunds(order.id).await?;
    Ok(Json(json!({
        "refunds": refunds.iter().map(refund_json).collect::<Vec<_>>(),
    })))
}

pub async fn tickets(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, Problem> {
    let tickets = match visible_order(&state, &user, &id).await {
        Ok((order, _)) => state.checkout().tickets(order.id).await?,
        // The tickets service runs apart from the orders service: ownership is on the tickets.
        Err(p) if p.slug == "service-unavailable" => {
            let tickets = state.checkout().tickets(parse_order_id(&id)?).await?;
            if let Some(first) = tickets.first()
                && first.user != user.id
                && !manages_event(&state, &user, first.event_id).await?
            {
                return Err(Problem::order_not_found());
            }
            tickets
        }
        Err(p) => return Err(p),
    };
    Ok(Json(Value::Array(
        tickets.iter().map(ticket_json).collect(),
    )))
}
