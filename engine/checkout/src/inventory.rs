//! What the saga needs of the inventory (the events' actors), as a trait of its own: the engine
//! implements it over its node (local actors or their owners in the cluster).

use async_trait::async_trait;
use holdfast_actors::inventory::{self, HoldView};
use holdfast_actors::{EventId, HoldRef, Line, OrderId, TicketCode, UserId};

use crate::model::Money;

/// Why the inventory did not do what the saga asked.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The event's state machine refused the command.
    #[error(transparent)]
    Refused(#[from] inventory::Error),
    #[error("event not found")]
    EventNotFound,
    /// Admission control: the event's mailbox is full.
    #[error("event is overloaded")]
    Overloaded,
    /// The event's actor, its store or its owner is out of reach right now.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl InventoryError {
    /// Whether trying again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Overloaded | Self::Unavailable(_))
    }
}

/// An event's terms of sale, as far as the saga prices and refunds orders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventTerms {
    pub starts_at_ms: i64,
    /// The event's name, venue and IANA time zone, and its ticket types' names (code, name),
    /// for the buyer's messages.
    pub name: String,
    pub venue: String,
    pub time_zone: String,
    pub ticket_type_names: Vec<(String, String)>,
    /// The unit price of each ticket type on sale.
    pub prices: Vec<(TicketCode, Money)>,
    /// `None`: buyers cannot refund by themselves.
    pub refund_policy: Option<holdfast_actors::RefundPolicy>,
}

/// The events' stock, as the saga uses it.
#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    /// The hold, as its event's actor has it now.
    async fn hold_of(&self, hold: HoldRef) -> Result<Option<HoldView>, InventoryError>;
    async fn terms(&self, event: EventId) -> Result<Option<EventTerms>, InventoryError>;
    /// The terms as they were for a hold placed at `placed_at_ms`: a price changed since
    /// applies to later holds only.
    async fn terms_at(
        &self,
        event: EventId,
        _placed_at_ms: i64,
    ) -> Result<Option<EventTerms>, InventoryError> {
        self.terms(event).await
    }
    /// Places `hold` (idempotent by its id).
    async fn hold(
        &self,
        hold: HoldRef,
        user: UserId,
        items: Vec<Line>,
    ) -> Result<(), InventoryError>;
    /// Sells the hold's seats to `order`.
    async fn confirm(&self, hold: HoldRef, order: OrderId) -> Result<(), InventoryError>;
    async fn release(&self, hold: HoldRef) -> Result<(), InventoryError>;
    /// Puts `order`'s seats back on sale, except `keep`.
    async fn return_stock_except(
        &self,
        event: EventId,
        order: OrderId,
        keep: Vec<Line>,
    ) -> Result<(), InventoryError>;
}
