//! Errors as `application/problem+json` (RFC 9457), mapped in one place. The `type` slug is
//! stable: clients match on it.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use holdfast_actors::inventory;
use serde_json::{Map, Value, json};

use crate::backend::{BackendError, ClusterProblem};

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem response.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub extensions: Map<String, Value>,
    pub retry_after_secs: Option<u32>,
    /// Further headers of the answer (a 429's `RateLimit` fields).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        slug: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
            title,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after_secs: None,
            headers: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "Invalid request",
            detail,
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Authentication required",
            detail,
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn event_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "event-not-found",
            "Event not found",
            "no event has this id",
        )
    }

    /// 403 `not-admitted`: a queued event's hold without a running admission of the buyer.
    pub fn not_admitted(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "not-admitted",
            "Not admitted",
            detail,
        )
    }

    pub fn hold_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "hold-not-found",
            "Hold not found",
            "no hold of yours has this id",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the server failed; the request id in x-request-id helps us find out why",
        )
    }

    pub fn body(&self) -> Value {
        let mut body = json!({
            "type": format!("/problems/{}", self.slug),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Value::Object(map) = &mut body {
            // Extensions never replace the members RFC 9457 defines.
            for (key, value) in &self.extensions {
                if !matches!(key.as_str(), "type" | "title" | "status" | "detail") {
                    map.insert(key.clone(), value.clone());
                }
            }
        }
        body
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.extend(self.headers);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<inventory::Error> for Problem {
    fn from(error: inventory::Error) -> Self {
        use inventory::Error as E;
        let detail = error.to_string();
        match error {
            E::SoldOut { available } => {
                Self::new(StatusCode::CONFLICT, "sold-out", "Sold out", detail).with(
                    "available",
                    available
                        .into_iter()
                        .map(|(code, n)| json!({"ticket_type": code.as_str(), "available": n}))
                        .collect(),
                )
            }
            E::LimitExceeded {
                ticket_type,
                limit,
                already,
            } => Self::new(
                StatusCode::CONFLICT,
                "limit-exceeded",
                "Purchase limit exceeded",
                detail,
            )
            .with("ticket_type", json!(ticket_type.as_str()))
            .with("limit", json!(limit))
            .with("already", json!(already)),
            E::UnknownTicketType(_) | E::Invalid(_) | E::TooManyTicketTypes => {
                Self::invalid(detail)
            }
            E::HoldNotFound => Self::hold_not_found(),
            E::HoldNotActive(status) => Self::new(
                StatusCode::CONFLICT,
                "hold-not-active",
                "Hold is not active",
                detail,
            )
            .with("hold_status", json!(status.as_str())),
            E::OrderNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "order-not-found",
                "Order not found",
                detail,
            ),
            E::HoldIdTaken | E::OrderIdTaken => {
                Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
            }
            E::CapacityBelowCommitted { committed } => Self::new(
                StatusCode::CONFLICT,
                "capacity-below-sold",
                "Capacity below held and sold seats",
                detail,
            )
            .with("committed", json!(committed)),
            E::SaleNotOpen { window } => {
                let at = |t: Option<holdfast_actors::Timestamp>| {
                    t.map(|t| holdfast_actors::domain::rfc3339_millis(t.as_millis()))
                };
                Self::new(
                    StatusCode::CONFLICT,
                    "sale-not-open",
                    "Sale not open",
                    "tickets of this event are not on sale now",
                )
                .with("sale_starts_at", json!(at(window.starts_at)))
                .with("sale_ends_at", json!(at(window.ends_at)))
            }
            E::LimitBelowHeld { most } => Self::new(
                StatusCode::CONFLICT,
                "limit-below-held",
                "Limit below seats held",
                detail,
            )
            .with("most", json!(most)),
            E::EventCancelled => Self::new(
                StatusCode::CONFLICT,
                "event-cancelled",
                "Event cancelled",
                "the event is cancelled: nothing is sold or changed any more",
            ),
            E::NotAdmitted => Self::not_admitted(
                "this event sells only to buyers admitted from its waiting room: join it with \
                 POST /v1/events/{id}/queue and send the admission token of GET \
                 /v1/events/{id}/queue/me in the Holdfast-Admission header",
            ),
            E::NoQueue => Self::new(
                StatusCode::NOT_FOUND,
                "queue-not-found",
                "No waiting room",
                "this event sells without a waiting room: place holds directly",
            ),
            E::QueueFull => Self::new(
                StatusCode::CONFLICT,
                "queue-full",
                "Waiting room full",
                detail,
            ),
        }
    }
}

impl From<BackendError> for Problem {
    fn from(error: BackendError) -> Self {
        match error {
            BackendError::Inventory(e) => e.into(),
            BackendError::EventNotFound => Self::event_not_found(),
            BackendError::EmailTaken => Self::new(
                StatusCode::CONFLICT,
                "email-taken",
                "Email already registered",
                "an account with this email exists",
            ),
            BackendError::Overloaded => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded",
                "too many requests for this event right now; retry after the delay in Retry-After",
            )
            .retry_after(1),
            BackendError::Unavailable(why) => {
                tracing::warn!(%why, "backend unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "Temporarily unavailable",
                    "the service is recovering; retry shortly",
                )
                .retry_after(1)
            }
            BackendError::NotServedHere(what) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Service unavailable",
                format!("the {what} service does not run in this process"),
            )
            .retry_after(5),
            BackendError::Cluster(problem) => {
                let detail = problem.to_string();
                match problem {
                    ClusterProblem::NotClustered => Self::new(
                        StatusCode::CONFLICT,
                        "not-clustered",
                        "Not clustered",
                        detail,
                    ),
                    ClusterProblem::ShardNotFound(_) => Self::new(
                        StatusCode::NOT_FOUND,
                        "shard-not-found",
                        "Shard not found",
                        detail,
                    ),
                    ClusterProblem::UnknownNode(_) => Self::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "unknown-node",
                        "Unknown node",
                        detail,
                    ),
                    ClusterProblem::NodeNotLive(_) => Self::new(
                        StatusCode::CONFLICT,
                        "node-not-live",
                        "Node not alive",
                        detail,
                    ),
                    ClusterProblem::MoveFailed(_) => Self::new(
                        StatusCode::CONFLICT,
                        "move-failed",
                        "Shard move failed",
                        detail,
                    )
                    .retry_after(1),
                }
            }
            BackendError::Internal(why) => {
                tracing::error!(%why, "backend failed");
                Self::internal()
            }
            e @ BackendError::UnknownCategory(_) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-category",
                "Unknown category",
                e.to_string(),
            ),
            e @ BackendError::TicketTypeExists(_) => Self::new(
                StatusCode::CONFLICT,
                "ticket-type-exists",
                "Ticket type exists",
                e.to_string(),
            ),
            e @ BackendError::TicketTypeNotFound(_) => Self::new(
                StatusCode::NOT_FOUND,
                "ticket-type-not-found",
                "Ticket type not found",
                e.to_string(),
            ),
            BackendError::Invalid(why) => Self::invalid(why),
        }
    }
}

impl From<crate::checkout::CheckoutError> for Problem {
    fn from(error: crate::checkout::CheckoutError) -> Self {
        use crate::checkout::CheckoutError as E;
        let detail = error.to_string();
        match error {
            E::HoldNotActive { status } => Self::new(
                StatusCode::CONFLICT,
                "hold-not-active",
                "Hold is not active",
                detail,
            )
            .with("hold_status", json!(status)),
            E::HoldNotFound => Self::hold_not_found(),
            E::OrderNotFound => Self::order_not_found(),
            E::TicketNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "ticket-not-found",
                "Ticket not found",
                "no ticket with this id",
            ),
            E::InvalidTicket(why) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-ticket",
                "Invalid ticket",
                why,
            ),
            E::AlreadyAdmitted { ticket_id } => Self::new(
                StatusCode::CONFLICT,
                "already-admitted",
                "Ticket already admitted",
                detail,
            )
            .with("ticket_id", json!(ticket_id)),
            E::NotRefundable { status } => Self::new(
                StatusCode::CONFLICT,
                "not-refundable",
                "Order cannot be refunded",
                detail,
            )
            .with("order_status", json!(status)),
            E::TicketAdmitted { ticket_id } => Self::new(
                StatusCode::CONFLICT,
                "ticket-admitted",
                "Ticket already used",
                detail,
            )
            .with("ticket_id", json!(ticket_id)),
            E::RefundNotAllowed(why) => Self::new(
                StatusCode::CONFLICT,
                "refund-not-allowed",
                "Refund not allowed",
                why,
            ),
            E::WrongEvent { ticket_event } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong-event",
                "Ticket of another event",
                detail,
            )
            .with("ticket_event_id", json!(ticket_event)),
            E::Invalid(why) => Self::invalid(why),
            E::NotServedHere(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Service unavailable",
                detail,
            )
            .retry_after(5),
            E::ParkedNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "parked-not-found",
                "Parked message not found",
                detail,
            ),
            E::RefundNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "refund-not-found",
                "Failed refund not found",
                detail,
            ),
            E::Backend(e) => e.into(),
        }
    }
}

impl Problem {
    pub fn order_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "order-not-found",
            "Order not found",
            "no order with this id",
        )
    }
}
