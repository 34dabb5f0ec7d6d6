//! What the gateway needs from the rest of a node, as one trait. The engine implements it; the
//! gateway never depends on the engine, storage or the actor runtime.

use async_trait::async_trait;
use holdfast_actors::queue::{QueueConfig, QueueRead};
use holdfast_actors::{
    EventId, HoldRef, HoldView, Line, OrderId, TicketCode, TypeStock, UserId, inventory,
};
use time::OffsetDateTime;

use crate::auth::Role;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// Mobile number in E.164 form (`+84…`), for SMS; optional.
    pub phone: Option<String>,
    /// `vi` or `en`: the language of the account's messages.
    pub language: String,
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

/// When an event's tickets are on sale: `[starts_at, ends_at)`, an open end unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SalePeriod {
    pub starts_at: Option<OffsetDateTime>,
    pub ends_at: Option<OffsetDateTime>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    pub id: EventId,
    pub organizer: UserId,
    pub name: String,
    pub venue: String,
    pub starts_at: OffsetDateTime,
    pub ticket_types: Vec<TicketTypeSpec>,
    /// `None`: buyers cannot refund by themselves.
    pub refund_policy: Option<holdfast_actors::RefundPolicy>,
    pub description: String,
    /// A slug of [`Backend::categories`].
    pub category: Option<String>,
    pub sale: SalePeriod,
    /// IANA name, checked at the edge.
    pub time_zone: String,
    /// The waiting room; `None`: sold without one.
    pub queue: Option<QueueConfig>,
}

/// A CAPTCHA check's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptchaVerdict {
    /// No CAPTCHA is configured.
    NotRequired,
    Passed,
    /// A CAPTCHA is configured and the request carries no answer.
    Missing,
    /// The provider refused the answer (its error codes).
    Failed(String),
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
    pub refund_policy: Option<holdfast_actors::RefundPolicy>,
    pub description: String,
    pub category: Option<String>,
    pub sale: SalePeriod,
    pub cancelled_at: Option<OffsetDateTime>,
    pub time_zone: String,
    pub queue: Option<QueueConfig>,
}

/// What an edit of an event changes; `None` keeps a field, `Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventChanges {
    pub name: Option<String>,
    pub venue: Option<String>,
    pub description: Option<String>,
    pub category: Option<Option<String>>,
    pub starts_at: Option<OffsetDateTime>,
    pub sale_starts_at: Option<Option<OffsetDateTime>>,
    pub sale_ends_at: Option<Option<OffsetDateTime>>,
    pub refund_policy: Option<Option<holdfast_actors::RefundPolicy>>,
    pub queue: Option<Option<QueueConfig>>,
}

/// What an edit of a ticket type changes; `None` keeps a field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TicketTypeChanges {
    pub name: Option<String>,
    /// Applies to holds placed from now on.
    pub price: Option<i64>,
    pub capacity: Option<u32>,
    pub per_user_limit: Option<Option<u32>>,
}

/// Which events a listing shows; `None` does not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    pub organizer: Option<UserId>,
    pub category: Option<String>,
    /// Matches name or venue, case-insensitively.
    pub text: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub limit: u32,
    pub offset: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Category {
    pub slug: String,
    pub name: String,
}

/// One page of a longer list, with the length of the whole list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// An order of an event, as its organizer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventOrder {
    pub id: OrderId,
    pub buyer: UserId,
    pub buyer_email: String,
    pub buyer_name: Option<String>,
    /// As the buyer reads it: `pending_payment`, `confirmed`, `cancelled`, `refunded`,
    /// `expired`.
    pub status: String,
    pub amount: i64,
    pub refunded_amount: i64,
    pub currency: String,
    /// (ticket type, quantity, unit price).
    pub items: Vec<(String, u32, i64)>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A ticket of an event that admits, with its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attendee {
    pub ticket_id: uuid::Uuid,
    pub order_id: OrderId,
    pub holder: UserId,
    pub holder_name: Option<String>,
    pub holder_email: Option<String>,
    pub ticket_type: String,
    pub ticket_type_name: Option<String>,
    pub checked_in_at: Option<OffsetDateTime>,
}

/// A response kept for an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub location: Option<String>,
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

/// One shard as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard: u32,
    pub owner: Option<String>,
    pub epoch: u64,
    /// Events of the catalog that live in this shard.
    pub events: u64,
}

/// One cluster member as operators see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub node_id: String,
    pub addr: String,
    pub http_addr: String,
    pub live: bool,
    pub shards: u32,
    pub heartbeat_age_ms: i64,
}

/// The outcome of a shard move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveReport {
    pub shard: u32,
    pub from: String,
    pub to: String,
    pub epoch: u64,
    /// How long requests for the shard were held back.
    pub pause_ms: u64,
}

/// Why a cluster operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClusterProblem {
    #[error("this node is not clustered (set HOLDFAST_NODE_ID and a PostgreSQL database)")]
    NotClustered,
    #[error("shard {0} does not exist")]
    ShardNotFound(u32),
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(String),
    #[error("node {0} is not alive")]
    NodeNotLive(String),
    #[error("{0}")]
    MoveFailed(String),
}

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// Valid: the successor is stored; here is whose it is.
    Rotated { account: Account, family: String },
    /// Unknown, expired or revoked.
    Invalid,
    /// Used before: the refresh tokens of the login `family` are now revoked.
    Reused { family: String },
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
    /// This process does not run the service (`--roles`).
    #[error("the {0} service does not run in this process")]
    NotServedHere(&'static str),
    #[error(transparent)]
    Cluster(#[from] ClusterProblem),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("no category {0:?}; GET /v1/categories lists them")]
    UnknownCategory(String),
    #[error("the event has a ticket type {0} already")]
    TicketTypeExists(TicketCode),
    #[error("the event has no ticket type {0}")]
    TicketTypeNotFound(TicketCode),
    /// An edit that does not fit the event as it is (e.g. a sale that would end before it
    /// starts).
    #[error("{0}")]
    Invalid(String),
}

fn not_here(what: &str) -> BackendError {
    BackendError::Unavailable(format!("{what} are not served by this node"))
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

    /// The account with id `id`.
    async fn account(&self, _id: UserId) -> Result<Option<Account>, BackendError> {
        Ok(None)
    }
    /// Creates a staff account working for `organizer`.
    async fn create_staff(
        &self,
        _account: &Account,
        _password_hash: &str,
        _organizer: UserId,
    ) -> Result<(), BackendError> {
        Err(BackendError::Unavailable(
            "this node keeps no staff accounts".to_owned(),
        ))
    }
    /// The organizer staff account `staff` works for; `None` for unknown accounts and other
    /// roles.
    async fn staff_organizer(&self, _staff: UserId) -> Result<Option<UserId>, BackendError> {
        Ok(None)
    }

    async fn create_event(&self, event: NewEvent) -> Result<EventInfo, BackendError>;
    async fn event(&self, id: EventId) -> Result<Option<EventInfo>, BackendError>;
    async fn events(&self, query: &EventQuery) -> Result<Vec<EventInfo>, BackendError>;

    async fn categories(&self) -> Result<Vec<Category>, BackendError> {
        Err(not_here("categories"))
    }
    /// Edits the event's catalog entry; the sale window reaches its stock too.
    async fn update_event(
        &self,
        _id: EventId,
        _changes: EventChanges,
    ) -> Result<EventInfo, BackendError> {
        Err(not_here("event edits"))
    }
    async fn add_ticket_type(
        &self,
        _id: EventId,
        _spec: TicketTypeSpec,
    ) -> Result<EventInfo, BackendError> {
        Err(not_here("event edits"))
    }
    /// A capacity is refused below the seats held and sold.
    async fn update_ticket_type(
        &self,
        _id: EventId,
        _code: TicketCode,
        _changes: TicketTypeChanges,
    ) -> Result<EventInfo, BackendError> {
        Err(not_here("event edits"))
    }
    /// Marks the event cancelled and releases every hold; no hold is placed after. Refunds
    /// are the caller's (the checkout's).
    async fn cancel_event(&self, _id: EventId, _reason: &str) -> Result<EventInfo, BackendError> {
        Err(not_here("event edits"))
    }
    async fn event_orders(
        &self,
        _id: EventId,
        _limit: u32,
        _offset: u32,
    ) -> Result<Page<EventOrder>, BackendError> {
        Err(not_here("the organizer's view"))
    }
    async fn event_attendees(
        &self,
        _id: EventId,
        _limit: u32,
        _offset: u32,
    ) -> Result<Page<Attendee>, BackendError> {
        Err(not_here("the organizer's view"))
    }

    async fn availability(&self, id: EventId)
    -> Result<Vec<(TicketCode, TypeStock)>, BackendError>;
    /// Places hold `hold` for `user`; idempotent by the hold id. `admission`: the number of
    /// the buyer's admission from the event's waiting room (a queued event needs it).
    async fn hold(
        &self,
        hold: HoldRef,
        user: UserId,
        items: Vec<Line>,
        admission: Option<u64>,
    ) -> Result<HoldView, BackendError>;

    /// What the CAPTCHA provider says of `token` from `client`, before a queue join.
    async fn verify_captcha(
        &self,
        _token: Option<&str>,
        _client: std::net::IpAddr,
    ) -> Result<CaptchaVerdict, BackendError> {
        Ok(CaptchaVerdict::NotRequired)
    }

    /// Whether queue joins need a CAPTCHA ([`Backend::verify_captcha`]).
    fn captcha_required(&self) -> bool {
        false
    }

    /// Joins `user` to the event's waiting room (idempotent) and answers what they read then,
    /// and whether this call joined (`false`: in the queue already).
    async fn queue_join(
        &self,
        _event: EventId,
        _user: UserId,
    ) -> Result<(QueueRead, bool), BackendError> {
        Err(not_here("the waiting room"))
    }

    /// What `user` reads of the event's waiting room (`status: None`: not in it).
    async fn queue_read(&self, _event: EventId, _user: UserId) -> Result<QueueRead, BackendError> {
        Err(not_here("the waiting room"))
    }
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

    /// Stores a new refresh token (its hash) of login `family`.
    async fn issue_refresh(
        &self,
        user: UserId,
        family: &str,
        token_hash: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), BackendError>;
    /// Uses refresh token `old_hash` and stores `new_hash` as its successor.
    async fn rotate_refresh(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        expires_at_ms: i64,
    ) -> Result<RefreshOutcome, BackendError>;
    /// Logout: the access token `jti` is refused until `expires_at_ms`, and the login's refresh
    /// tokens stop working.
    async fn logout(
        &self,
        jti: &str,
        expires_at_ms: i64,
        family: Option<&str>,
    ) -> Result<(), BackendError>;
    /// Every access token of the login `family` is refused until `until_ms` (when the last
    /// one the login may have issued expires), on every node within about a second.
    async fn revoke_login(&self, family: &str, until_ms: i64) -> Result<(), BackendError>;
    /// Whether access token `jti`, or its whole login `family`, was revoked (answered from
    /// memory: it runs per request).
    async fn is_access_revoked(&self, jti: &str, family: Option<&str>) -> bool;

    /// True once the node serves traffic (stores reachable, recovery done).
    async fn ready(&self) -> bool;

    /// The shard map; a node that is not clustered has none.
    async fn shards(&self) -> Result<Vec<ShardInfo>, BackendError> {
        Err(ClusterProblem::NotClustered.into())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, BackendError> {
        Err(ClusterProblem::NotClustered.into())
    }

    async fn move_shard(&self, _shard: u32, _to: &str) -> Result<MoveReport, BackendError> {
        Err(ClusterProblem::NotClustered.into())
    }
}
