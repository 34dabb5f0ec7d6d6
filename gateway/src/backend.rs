//! What the gateway needs from the rest of a node, as one trait. The engine implements it; the
//! gateway never depends on the engine, storage or the actor runtime.

use async_trait::async_trait;
use holdfast_actors::{EventId, HoldRef, HoldView, Line, TicketCode, TypeStock, UserId, inventory};
use time::OffsetDateTime;

use crate::auth::Role;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
}

/// An account with its password hash, for login only.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub account: Account,
    pub password_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketTypeSpec {
    pub code: TicketCode,
    pub name: String,
    /// In the currency's minor unit.
    pub price: i64,
    pub currency: String,
    pub capacity: u32,
    pub per_user_limit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: EventId,
    pub organizer: UserId,
    pub name: String,
    pub venue: String,
    pub starts_at: OffsetDateTime,
    pub ticket_types: Vec<TicketTypeSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInfo {
    pub id: EventId,
    pub organizer: UserId,
    pub name: String,
    pub venue: String,
    pub starts_at: OffsetDateTime,
    pub created_at: OffsetDateTime,
    pub ticket_types: Vec<TicketTypeSpec>,
}

/// A response kept for an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Where an idempotency key stands when a request arrives with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyState {
    /// First use: the request runs and its response is kept.
    Started,
    /// The first request with this key has not finished.
    InProgress,
    /// The key was used with another body.
    Mismatch,
    /// The first request finished with this response.
    Done(StoredResponse),
}

/// Why the node could not do what the gateway asked.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The inventory refused the command.
    #[error(transparent)]
    Inventory(#[from] inventory::Error),
    #[error("event not found")]
    EventNotFound,
    #[error("email already registered")]
    EmailTaken,
    /// Admission control: the event's mailbox is full.
    #[error("event is overloaded")]
    Overloaded,
    /// Retryable: the event's actor or a store is not available right now.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The node as the gateway sees it.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn create_account(
        &self,
        account: &Account,
        password_hash: &str,
    ) -> Result<(), BackendError>;
    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, BackendError>;

    async fn create_event(&self, event: NewEvent) -> Result<EventInfo, BackendError>;
    async fn event(&self, id: EventId) -> Result<Option<EventInfo>, BackendError>;
    async fn events(&self, limit: u32, offset: u32) -> Result<Vec<EventInfo>, BackendError>;

    async fn availability(&self, id: EventId)
    -> Result<Vec<(TicketCode, TypeStock)>, BackendError>;
    /// Places hold `hold` for `user`; idempotent by the hold id.
    async fn hold(
        &self,
        hold: HoldRef,
        user: UserId,
        items: Vec<Line>,
    ) -> Result<HoldView, BackendError>;
    async fn get_hold(&self, hold: HoldRef) -> Result<Option<HoldView>, BackendError>;
    async fn release(&self, hold: HoldRef) -> Result<(), BackendError>;

    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        request_hash: &[u8],
    ) -> Result<IdempotencyState, BackendError>;
    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<(), BackendError>;
    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<(), BackendError>;

    /// True once the node serves traffic (stores reachable, recovery done).
    async fn ready(&self) -> bool;
}
