//! What the gateway needs from the checkout saga's services (orders, payments, tickets), as one
//! trait. The engine implements it over the services of its node.

use async_trait::async_trait;
use holdfast_actors::{EventId, HoldRef, OrderId, UserId};

use crate::backend::BackendError;

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderLine {
    pub ticket_type: String,
    pub quantity: u32,
    /// Unit price in the currency's minor unit.
    pub price: i64,
}

/// An order as its buyer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderView {
    pub id: OrderId,
    pub user: UserId,
    pub hold: HoldRef,
    /// `pending_payment`, `confirmed`, `cancelled`, `refunded` or `expired` (the hold and the
    /// payment window passed without a payment; `note` says so).
    pub status: String,
    pub amount: i64,
    pub currency: String,
    pub items: Vec<OrderLine>,
    /// VNPAY's payment page for this order, once the payment service has created it.
    pub payment_url: Option<String>,
    /// Why the order ended as it did (e.g. an automatic refund).
    pub note: Option<String>,
    pub created_at_ms: i64,
}

/// A ticket as its holder sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketView {
    pub id: uuid::Uuid,
    pub order_id: OrderId,
    pub event_id: EventId,
    pub user: UserId,
    pub ticket_type: String,
    /// The signed text the QR image encodes.
    pub code: String,
    /// `valid`, `admitted` or `void`.
    pub status: String,
}

/// A ticket admitted at the door, with the holder's name for the door staff to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admission {
    pub ticket: TicketView,
    /// `None` when the tickets service does not know the account (it keeps its own tables).
    pub holder_name: Option<String>,
}

/// A refund of some or all of an order's tickets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundView {
    pub id: uuid::Uuid,
    pub order_id: OrderId,
    /// What goes back to the buyer, after `fee`.
    pub amount: i64,
    pub fee: i64,
    pub currency: String,
    /// `processing`, `refunded` or `failed`.
    pub status: String,
    pub ticket_ids: Vec<uuid::Uuid>,
    pub reason: String,
    pub by_organizer: bool,
    pub note: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A refund VNPAY kept refusing, kept for an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedRefundView {
    pub id: uuid::Uuid,
    pub order_id: OrderId,
    pub amount: i64,
    pub attempts: i64,
    pub response_code: Option<String>,
    pub message: Option<String>,
    pub failed_at_ms: i64,
}

/// Who asks for a refund, which decides what is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundBy {
    /// The buyer of the order: within the event's refund policy, and never for an admitted
    /// ticket.
    Buyer,
    /// The event's organizer or an admin: any time, in full; seats already admitted at the
    /// door stay sold.
    Organizer,
}

/// VNPAY's answer to an IPN call: `RspCode` and `Message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpnAnswer {
    pub rsp_code: String,
    pub message: String,
}

/// What the buyer's browser is shown on the return URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReturnPage {
    /// False when the parameters are not VNPAY's (bad signature).
    pub verified: bool,
    pub order_id: Option<String>,
    /// Paid according to the (signed) parameters.
    pub paid: bool,
    /// The order's status now, if the order is known.
    pub order_status: Option<String>,
}

/// A saga message a consumer could not handle, kept for an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedView {
    pub id: uuid::Uuid,
    /// The consumer (service) that parked it: `orders`, `payments`, `tickets`, `notifications`.
    pub service: String,
    pub topic: String,
    /// The saga event's id (`offset:…` for a record that was not a saga event).
    pub event_id: String,
    pub order_id: Option<String>,
    pub error: String,
    pub attempts: i64,
    pub parked_at_ms: i64,
}

/// Why a checkout call was refused.
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
    /// A ticket of the order was used at the door: the buyer cannot refund it.
    #[error("a ticket of this order was admitted at the door; it cannot be refunded")]
    TicketAdmitted { ticket_id: uuid::Uuid },
    /// The refund is outside what the buyer may do by themselves (e.g. the event started).
    #[error("{0}")]
    RefundNotAllowed(String),
    /// A genuine ticket, of another event than the one checked in.
    #[error("the ticket is for event {ticket_event}, not this one")]
    WrongEvent { ticket_event: EventId },
    /// The event's ticket types are priced in more than one currency.
    #[error("{0}")]
    Invalid(String),
    /// This node does not run the service that answers this call.
    #[error("the {0} service does not run on this node")]
    NotServedHere(&'static str),
    #[error("no parked saga message with this id")]
    ParkedNotFound,
    #[error("no failed refund with this id")]
    RefundNotFound,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The saga's services as the gateway sees them.
#[async_trait]
pub trait Checkout: Send + Sync + 'static {
    /// Places order `order` for the caller's active hold; a hold that has an order already
    /// answers with that order (`false`: not created now).
    async fn create_order(
        &self,
        user: UserId,
        hold: HoldRef,
        order: OrderId,
    ) -> Result<(OrderView, bool), CheckoutError>;
    async fn order(&self, id: OrderId) -> Result<Option<OrderView>, CheckoutError>;
    async fn orders(&self, user: UserId) -> Result<Vec<OrderView>, CheckoutError>;
    /// Refunds a confirmed order as `by` may: its tickets stop admitting, the seats not yet
    /// admitted at the door go back on sale.
    async fn refund(
        &self,
        id: OrderId,
        reason: String,
        by: RefundBy,
    ) -> Result<OrderView, CheckoutError>;

    /// Refunds `ticket_ids` (empty: every ticket left) of a confirmed order as `by` may: they
    /// stop admitting and their seats not admitted at the door go back on sale at once; the
    /// money goes back through VNPAY (`processing` until then).
    async fn refund_tickets(
        &self,
        _id: OrderId,
        _reason: String,
        _by: RefundBy,
        _ticket_ids: Vec<uuid::Uuid>,
    ) -> Result<RefundView, CheckoutError> {
        Err(CheckoutError::NotServedHere("orders"))
    }
    /// An order's refunds, oldest first.
    async fn refunds(&self, _id: OrderId) -> Result<Vec<RefundView>, CheckoutError> {
        Err(CheckoutError::NotServedHere("orders"))
    }

    async fn tickets(&self, order: OrderId) -> Result<Vec<TicketView>, CheckoutError>;
    async fn ticket(&self, id: uuid::Uuid) -> Result<Option<TicketView>, CheckoutError>;
    /// The QR image (PNG) of a ticket code.
    fn qr_png(&self, code: &str) -> Result<Vec<u8>, CheckoutError>;
    /// Admits the holder of `code` to event `event` once.
    async fn checkin(&self, code: &str, event: EventId) -> Result<Admission, CheckoutError>;

    async fn vnpay_ipn(&self, query: Vec<(String, String)>) -> IpnAnswer;
    async fn vnpay_return(&self, query: Vec<(String, String)>) -> ReturnPage;

    /// Saga messages parked by this node's consumers' database, oldest first.
    async fn parked(&self) -> Result<Vec<ParkedView>, CheckoutError> {
        Err(CheckoutError::NotServedHere("saga"))
    }
    /// Runs the handler of a parked message again: `None` when it succeeded (the message is
    /// gone), else the message with the new error.
    async fn retry_parked(&self, _id: uuid::Uuid) -> Result<Option<ParkedView>, CheckoutError> {
        Err(CheckoutError::NotServedHere("saga"))
    }
    /// Refunds VNPAY kept refusing, most recent first.
    async fn failed_refunds(&self) -> Result<Vec<FailedRefundView>, CheckoutError> {
        Err(CheckoutError::NotServedHere("payments"))
    }
    /// Queues a failed refund again with a fresh set of attempts.
    async fn retry_refund(&self, _id: uuid::Uuid) -> Result<(), CheckoutError> {
        Err(CheckoutError::NotServedHere("payments"))
    }
    /// Drops a parked message.
    async fn discard_parked(&self, _id: uuid::Uuid) -> Result<(), CheckoutError> {
        Err(CheckoutError::NotServedHere("saga"))
    }
}

/// For a node (or a benchmark baseline) that runs none of the saga's services: every call says
/// so with a retryable 503.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCheckout;

#[async_trait]
impl Checkout for NoCheckout {
    async fn create_order(
        &self,
        _: UserId,
        _: HoldRef,
        _: OrderId,
    ) -> Result<(OrderView, bool), CheckoutError> {
        Err(CheckoutError::NotServedHere("orders"))
    }
    async fn order(&self, _: OrderId) -> Result<Option<OrderView>, CheckoutError> {
        Err(CheckoutError::NotServedHere("orders"))
    }
    async fn orders(&self, _: UserId) -> Result<Vec<OrderView>, CheckoutError> {
        Err(CheckoutError::NotServedHere("orders"))
    }
    async fn refund(&self, _: OrderId, _: String, _: RefundBy) -> Result<OrderView, CheckoutError> {
        Err(CheckoutError::NotServedHere("orders"))
    }
    async fn tickets(&self, _: OrderId) -> Result<Vec<TicketView>, CheckoutError> {
        Err(CheckoutError::NotServedHere("tickets"))
    }
    async fn ticket(&self, _: uuid::Uuid) -> Result<Option<TicketView>, CheckoutError> {
        Err(CheckoutError::NotServedHere("tickets"))
    }
    fn qr_png(&self, _: &str) -> Result<Vec<u8>, CheckoutError> {
        Err(CheckoutError::NotServedHere("tickets"))
    }
    async fn checkin(&self, _: &str, _: EventId) -> Result<Admission, CheckoutError> {
        Err(CheckoutError::NotServedHere("tickets"))
    }
    async fn vnpay_ipn(&self, _: Vec<(String, String)>) -> IpnAnswer {
        IpnAnswer {
            rsp_code: "99".to_owned(),
            message: "Unknown error".to_owned(),
        }
    }
    async fn vnpay_return(&self, _: Vec<(String, String)>) -> ReturnPage {
        ReturnPage {
            verified: false,
            order_id: None,
            paid: false,
            order_status: None,
        }
    }
}
