//! What the saga answers its callers (the engine's adapter turns these into the gateway's
//! types): views of orders, tickets and parked messages, and the refusals.

use holdfast_actors::{EventId, HoldRef, OrderId, UserId};

use crate::inventory::InventoryError;

/// One line of an order: what was bought at what unit price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    pub ticket_type: String,
    pub quantity: u32,
    /// Unit price in the currency's minor unit.
    pub price: i64,
}

/// An order as a buyer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub user: UserId,
    pub hold: HoldRef,
    /// What the order reads as now (see [`crate::decide::read_status`]).
    pub status: crate::model::ReadStatus,
    pub total: crate::model::Money,
    pub items: Vec<OrderLine>,
    pub payment_url: Option<String>,
    pub note: Option<String>,
    pub created_at_ms: i64,
}

/// A ticket: one seat of a paid order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketView {
    pub id: uuid::Uuid,
    pub order_id: OrderId,
    pub event_id: EventId,
    pub user: UserId,
    pub ticket_type: String,
    /// The signed code its QR image carries.
    pub code: String,
    pub status: crate::model::TicketStatus,
}

/// A ticket admitted at the door, with whom to greet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub ticket: TicketView,
    pub holder_name: Option<String>,
}

/// A refund of an order (some or all of its tickets), as the buyer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundView {
    pub id: uuid::Uuid,
    pub order_id: OrderId,
    /// What goes back to the buyer, after `fee`.
    pub amount: crate::model::Money,
    /// What the event's refund policy kept.
    pub fee: i64,
    pub status: crate::model::RefundStatus,
    pub ticket_ids: Vec<uuid::Uuid>,
    pub reason: String,
    /// Asked by the event's organizer or an admin (else by the buyer, or automatic).
    pub by_organizer: bool,
    /// VNPAY's last word when the refund failed.
    pub note: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A refund VNPAY kept refusing, for an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRefundView {
    pub id: uuid::Uuid,
    pub order_id: OrderId,
    pub amount: i64,
    pub attempts: i64,
    /// VNPAY's last `vnp_ResponseCode` and message (none: no verifiable answer).
    pub response_code: Option<String>,
    pub message: Option<String>,
    pub failed_at_ms: i64,
}

/// Who asks for a refund; buyers are bound by the event's rules, organizers and admins are not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundBy {
    Buyer,
    Organizer,
}

/// What the IPN webhook answers VNPAY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpnAnswer {
    pub rsp_code: String,
    pub message: String,
}

/// What the buyer's browser is shown on return from VNPAY.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnPage {
    pub verified: bool,
    pub order_id: Option<String>,
    pub paid: bool,
    pub order_status: Option<String>,
}

/// A saga message a consumer could not handle and set aside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedView {
    pub id: uuid::Uuid,
    pub service: String,
    pub topic: String,
    pub event_id: String,
    pub order_id: Option<String>,
    pub error: String,
    pub attempts: i64,
    pub parked_at_ms: i64,
}

/// Why the saga refused or could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum CheckoutError {
    #[error("the hold is not active")]
    HoldNotActive { status: String },
    #[error("hold not found")]
    HoldNotFound,
    #[error("order not found")]
    OrderNotFound,
    #[error("ticket not found")]
    TicketNotFound,
    #[error("invalid ticket: {0}")]
    InvalidTicket(String),
    #[error("ticket already admitted")]
    AlreadyAdmitted { ticket_id: uuid::Uuid },
    #[error("the order cannot be refunded: it is {status}")]
    NotRefundable { status: String },
    #[error("a ticket of this order was admitted at the door; it cannot be refunded")]
    TicketAdmitted { ticket_id: uuid::Uuid },
    #[error("{0}")]
    RefundNotAllowed(String),
    #[error("the ticket is for event {ticket_event}, not this one")]
    WrongEvent { ticket_event: EventId },
    #[error("{0}")]
    Invalid(String),
    #[error("the {0} service does not run on this node")]
    NotServedHere(&'static str),
    #[error("no parked saga message with this id")]
    ParkedNotFound,
    #[error("no failed refund with this id")]
    RefundNotFound,
    /// A stored row the saga cannot read: a broken invariant, never the caller's fault.
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Store(#[from] holdfast_persistence::Error),
}

impl CheckoutError {
    /// Whether asking again later may succeed (a store or the inventory out of reach).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Inventory(e) => e.is_transient(),
            Self::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}
