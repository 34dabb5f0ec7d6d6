//! The node as the gateway sees it: [`holdfast_gateway::backend::Backend`] over the store and
//! the event actors.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use holdfast_actors::actor::Clock;
use holdfast_actors::queue::{QueueConfig, QueueRead};
use holdfast_actors::{
    EventId, HoldRef, HoldView, Line, OrderId, SaleWindow, TicketCode, Timestamp, TypeStock, UserId,
};
use holdfast_gateway::auth::Role;
use holdfast_gateway::backend::{
    Account, Attendee, Backend, BackendError, CaptchaVerdict, Category, ClusterProblem,
    Credentials, EventChanges, EventInfo, EventOrder, EventQuery, IdempotencyState, MoveReport,
    NewEvent, NodeInfo, Page, RefreshOutcome, SalePeriod, ShardInfo, StoredResponse,
    TicketTypeChanges, TicketTypeSpec,
};
use holdfast_persistence::{
    self as store, EventFilter, EventPatch, EventRow, Idempotency, NewUser, Rotation, Store,
    TicketTypePatch, TicketTypeRow, UserRow,
};
use time::OffsetDateTime;

use crate::cluster::{self, Cluster};
use crate::deny_list::DenyList;
use crate::inventories::{Inventories, SINGLE_NODE_EPOCH};
use crate::ops::{InventoryOp, InventoryReply};

pub struct NodeBackend {
    store: Store,
    inventories: Arc<Inventories>,
    cluster: Option<Arc<Cluster>>,
    deny_list: Arc<DenyList>,
    clock: Arc<dyn Clock>,
    hold_ttl_ms: i64,
    ready: AtomicBool,
    /// Woken by a cancel: the refunds of cancelled events' paid orders
    /// ([`crate::cancel_refunds`]) go on at once, not at their next round.
    cancelled: Arc<tokio::sync::Notify>,
    /// The CAPTCHA check at queue join, when configured.
    captcha: Option<crate::captcha::Captcha>,
    /// False on a standalone node without the inventory role: inventory operations answer
    /// 503 `service-unavailable` (a clustered node forwards them to the shards' owners).
    serves_inventory: bool,
}

impl std::fmt::Debug for NodeBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBackend")
            .field("hold_ttl_ms", &self.hold_ttl_ms)
            .finish_non_exhaustive()
    }
}

impl NodeBackend {
    pub fn new(
        store: Store,
        inventories: Arc<Inventories>,
        cluster: Option<Arc<Cluster>>,
        deny_list: Arc<DenyList>,
        clock: Arc<dyn Clock>,
        hold_ttl_secs: u64,
    ) -> Self {
        Self {
            store,
            inventories,
            cluster,
            deny_list,
            clock,
            hold_ttl_ms: i64::try_from(hold_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
            ready: AtomicBool::new(false),
            cancelled: Arc::default(),
            captcha: None,
            serves_inventory: true,
        }
    }

    /// Checks a CAPTCHA at every queue join with `captcha`.
    #[must_use]
    pub fn with_captcha(mut self, captcha: Option<crate::captcha::Captcha>) -> Self {
        self.captcha = captcha;
        self
    }

    /// What a cancel wakes (see [`crate::cancel_refunds::run`]).
    pub fn cancels(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.cancelled)
    }

    /// A node without the inventory role: without a cluster to forward to, inventory
    /// operations answer 503 `service-unavailable`.
    #[must_use]
    pub fn without_inventory(mut self) -> Self {
        self.serves_inventory = false;
        self
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().as_millis()
    }

    /// Runs an inventory operation where its event lives: this node, or its shard's owner.
    async fn execute(
        &self,
        event_id: EventId,
        op: InventoryOp,
    ) -> Result<InventoryReply, BackendError> {
        let reply = match &self.cluster {
            Some(cluster) => cluster.execute(event_id, op).await,
            None if !self.serves_inventory => {
                return Err(BackendError::NotServedHere("inventory"));
            }
            None => {
                self.inventories
                    .execute(event_id, SINGLE_NODE_EPOCH, op)
                    .await
            }
        };
        reply.map_err(BackendError::from)
    }

    /// Held → sold for paid order `order` (idempotent).
    pub async fn confirm(&self, hold: HoldRef, order: OrderId) -> Result<(), BackendError> {
        let op = InventoryOp::Confirm {
            hold_id: hold.hold_id,
            order_id: order,
        };
        self.execute(hold.event_id, op).await.map(|_| ())
    }

    /// Puts refunded order `order`'s seats back on sale except `keep`, which stay sold
    /// (idempotent).
    pub async fn return_stock_except(
        &self,
        event: EventId,
        order: OrderId,
        keep: Vec<Line>,
    ) -> Result<(), BackendError> {
        self.execute(
            event,
            InventoryOp::ReturnPart {
                order_id: order,
                keep,
            },
        )
        .await
        .map(|_| ())
    }

    async fn check_category(&self, slug: &str) -> Result<(), BackendError> {
        let categories = self.store.categories().await.map_err(unavailable)?;
        if categories.iter().any(|c| c.slug == slug) {
            Ok(())
        } else {
            Err(BackendError::UnknownCategory(slug.to_owned()))
        }
    }

    async fn event_or_missing(&self, id: EventId) -> Result<EventInfo, BackendError> {
        match self.store.event(id.0).await.map_err(unavailable)? {
            Some(row) => event_info(row),
            None => Err(BackendError::EventNotFound),
        }
    }

    /// The store of this node.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn cluster(&self) -> Result<&Cluster, BackendError> {
        self.cluster
            .as_deref()
            .ok_or(BackendError::Cluster(ClusterProblem::NotClustered))
    }
}

fn unexpected(reply: InventoryReply) -> BackendError {
    BackendError::Internal(format!("unexpected inventory reply {reply:?}"))
}

fn cluster_problem(e: cluster::Error) -> BackendError {
    match e {
        cluster::Error::ShardNotFound(s) => ClusterProblem::ShardNotFound(s).into(),
        cluster::Error::UnknownNode(n) => ClusterProblem::UnknownNode(n).into(),
        cluster::Error::NodeNotLive(n) => ClusterProblem::NodeNotLive(n).into(),
        cluster::Error::Store(e) => unavailable(e),
        e => ClusterProblem::MoveFailed(e.to_string()).into(),
    }
}

fn unavailable(e: store::Error) -> BackendError {
    match e {
        store::Error::Database(_) => BackendError::Unavailable(e.to_string()),
        e => BackendError::Internal(e.to_string()),
    }
}

fn datetime(millis: i64) -> Result<OffsetDateTime, BackendError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .map_err(|e| BackendError::Internal(format!("stored time {millis}: {e}")))
}

pub(crate) fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn account(row: &UserRow) -> Result<Account, BackendError> {
    Ok(Account {
        id: UserId(row.id),
        email: row.email.clone(),
        name: row.name.clone(),
        role: row.role.parse().map_err(|_| {
            BackendError::Internal(format!("user {} has role {:?}", row.id, row.role))
        })?,
        phone: row.phone.clone(),
        language: row.language.clone(),
    })
}

fn event_info(row: EventRow) -> Result<EventInfo, BackendError> {
    let ticket_types = row
        .ticket_types
        .into_iter()
        .map(|t| {
            Ok(TicketTypeSpec {
                code: TicketCode::parse(&t.code).map_err(|e| {
                    BackendError::Internal(format!("ticket type {:?}: {e}", t.code))
                })?,
                name: t.name,
                price: t.price,
                currency: t.currency,
                capacity: u32::try_from(t.capacity).unwrap_or(u32::MAX),
                per_user_limit: t
                    .per_user_limit
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            })
        })
        .collect::<Result<_, BackendError>>()?;
    let refund_policy = row
        .refund_policy
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| {
            BackendError::Internal(format!("event {} has a bad refund policy: {e}", row.id))
        })?;
    let queue = row
        .queue
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| {
            BackendError::Internal(format!("event {} has bad queue settings: {e}", row.id))
        })?;
    let optional = |ms: Option<i64>| ms.map(datetime).transpose();
    Ok(EventInfo {
        id: EventId(row.id),
        organizer: UserId(row.organizer_id),
        name: row.name,
        venue: row.venue,
        starts_at: datetime(row.starts_at_ms)?,
        created_at: datetime(row.created_at_ms)?,
        ticket_types,
        refund_policy,
        description: row.description,
        category: row.category,
        sale: SalePeriod {
            starts_at: optional(row.sale_starts_at_ms)?,
            ends_at: optional(row.sale_ends_at_ms)?,
        },
        cancelled_at: optional(row.cancelled_at_ms)?,
        time_zone: row.time_zone,
        queue,
    })
}

/// An event's `queue` as the catalog stores it.
fn queue_json(queue: &QueueConfig) -> String {
    serde_json::to_string(queue).expect("queue settings serialise")
}

fn ticket_type_row(t: TicketTypeSpec) -> TicketTypeRow {
    TicketTypeRow {
        code: t.code.as_str().to_owned(),
        name: t.name,
        price: t.price,
        currency: t.currency,
        capacity: i64::from(t.capacity),
        per_user_limit: t.per_user_limit.map(i64::from),
    }
}

fn sale_window(sale: SalePeriod) -> SaleWindow {
    SaleWindow {
        starts_at: sale.starts_at.map(|t| Timestamp(millis(t))),
        ends_at: sale.ends_at.map(|t| Timestamp(millis(t))),
    }
}

fn event_order(row: store::EventOrderRow, now_ms: i64) -> Result<EventOrder, BackendError> {
    use holdfast_checkout::model::OrderStatus;
    let stored = OrderStatus::parse(&row.status)
        .map_err(|e| BackendError::Internal(format!("order {}: {e}", row.id)))?;
    // The payment window never outlasts the hold, so the hold's end decides `expired`.
    let status = holdfast_checkout::decide::read_status(
        stored,
        row.hold_expires_at,
        row.hold_expires_at,
        now_ms,
    );
    let items: Vec<holdfast_checkout::Item> = serde_json::from_str(&row.items)
        .map_err(|e| BackendError::Internal(format!("order {} items: {e}", row.id)))?;
    Ok(EventOrder {
        id: OrderId(row.id),
        buyer: UserId(row.user_id),
        buyer_email: row.email,
        buyer_name: row.buyer_name,
        status: status.as_str().to_owned(),
        amount: row.amount,
        refunded_amount: row.refunded_amount,
        currency: row.currency,
        items: items
            .into_iter()
            .map(|i| (i.ticket_type, i.quantity, i.price))
            .collect(),
        created_at: datetime(row.created_at)?,
        updated_at: datetime(row.updated_at)?,
    })
}

fn attendee(row: store::AttendeeRow) -> Result<Attendee, BackendError> {
    Ok(Attendee {
        ticket_id: row.ticket_id,
        order_id: OrderId(row.order_id),
        holder: UserId(row.user_id),
        holder_name: row.holder_name,
        holder_email: row.holder_email,
        ticket_type: row.ticket_type,
        ticket_type_name: row.ticket_type_name,
        checked_in_at: match (row.status.as_str(), row.admitted_at) {
            ("admitted", Some(at)) => Some(datetime(at)?),
            _ => None,
        },
    })
}

/// Creates an account outside HTTP (the `users add` command).
pub async fn add_user(
    store: &Store,
    account: &Account,
    password_hash: &str,
    now_ms: i64,
) -> Result<(), BackendError> {
    insert_user(store, account, password_hash, None, now_ms).await
}

/// Creates a staff account that works for organizer `organizer`.
pub async fn add_staff(
    store: &Store,
    account: &Account,
    password_hash: &str,
    organizer: UserId,
    now_ms: i64,
) -> Result<(), BackendError> {
    if account.role != Role::Staff {
        return Err(BackendError::Internal(format!(
            "only staff work for an organizer, not {}",
            account.role.as_str()
        )));
    }
    insert_user(store, account, password_hash, Some(organizer), now_ms).await
}

async fn insert_user(
    store: &Store,
    account: &Account,
    password_hash: &str,
    organizer: Option<UserId>,
    now_ms: i64,
) -> Result<(), BackendError> {
    let user = NewUser {
        organizer_id: organizer.map(|o| o.0),
        id: account.id.0,
        email: account.email.clone(),
        name: account.name.clone(),
        password_hash: password_hash.to_owned(),
        role: account.role.as_str().to_owned(),
        phone: account.phone.clone(),
        created_at_ms: now_ms,
        language: account.language.clone(),
    };
    store.create_user(&user).await.map_err(|e| match e {
        store::Error::Conflict => BackendError::EmailTaken,
        e => unavailable(e),
    })
}

#[async_trait]
impl Backend for NodeBackend {
    async fn create_account(
        &self,
        account: &Account,
        password_hash: &str,
    ) -> Result<(), BackendError> {
        add_user(&self.store, account, password_hash, self.now_ms()).await
    }

    async fn create_staff(
        &self,
        account: &Account,
        password_hash: &str,
        organizer: UserId,
    ) -> Result<(), BackendError> {
        add_staff(
            &self.store,
            account,
            password_hash,
            organizer,
            self.now_ms(),
        )
        .await
    }

    async fn account(&self, id: UserId) -> Result<Option<Account>, BackendError> {
        match self.store.user_by_id(id.0).await.map_err(unavailable)? {
            Some(row) => Ok(Some(account(&row)?)),
            None => Ok(None),
        }
    }

    async fn staff_organizer(&self, staff: UserId) -> Result<Option<UserId>, BackendError> {
        let row = self.store.user_by_id(staff.0).await.map_err(unavailable)?;
        Ok(row
            .filter(|r| r.role == Role::Staff.as_str())
            .and_then(|r| r.organizer_id)
            .map(UserId))
    }

    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, BackendError> {
        let Some(row) = self.store.user_by_email(email).await.map_err(unavailable)? else {
            return Ok(None);
        };
        Ok(Some(Credentials {
            account: account(&row)?,
            password_hash: row.password_hash,
        }))
    }

    async fn create_event(&self, event: NewEvent) -> Result<EventInfo, BackendError> {
        if let Some(category) = &event.category {
            self.check_category(category).await?;
        }
        let row = EventRow {
            id: event.id.0,
            organizer_id: event.organizer.0,
            name: event.name,
            venue: event.venue,
            starts_at_ms: millis(event.starts_at),
            created_at_ms: self.now_ms(),
            time_zone: event.time_zone,
            refund_policy: event
                .refund_policy
                .map(|p| serde_json::to_string(&p).expect("a refund policy serialises")),
            ticket_types: event
                .ticket_types
                .into_iter()
                .map(ticket_type_row)
                .collect(),
            description: event.description,
            category: event.category,
            sale_starts_at_ms: event.sale.starts_at.map(millis),
            sale_ends_at_ms: event.sale.ends_at.map(millis),
            cancelled_at_ms: None,
            cancel_reason: None,
            queue: event.queue.map(|q| queue_json(&q)),
        };
        self.store.create_event(&row).await.map_err(unavailable)?;
        event_info(row)
    }

    async fn categories(&self) -> Result<Vec<Category>, BackendError> {
        let rows = self.store.categories().await.map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|c| Category {
                slug: c.slug,
                name: c.name,
            })
            .collect())
    }

    async fn update_event(
        &self,
        id: EventId,
        changes: EventChanges,
    ) -> Result<EventInfo, BackendError> {
        if let Some(Some(category)) = &changes.category {
            self.check_category(category).await?;
        }
        let window_changed = changes.sale_starts_at.is_some() || changes.sale_ends_at.is_some();
        let queue_changed = changes.queue.is_some();
        let patch = EventPatch {
            name: changes.name,
            venue: changes.venue,
            description: changes.description,
            category: changes.category,
            starts_at_ms: changes.starts_at.map(millis),
            sale_starts_at_ms: changes.sale_starts_at.map(|t| t.map(millis)),
            sale_ends_at_ms: changes.sale_ends_at.map(|t| t.map(millis)),
            refund_policy: changes
                .refund_policy
                .map(|p| p.map(|p| serde_json::to_string(&p)).transpose())
                .transpose()
                .map_err(|e| BackendError::Internal(format!("refund policy: {e}")))?,
            queue: changes.queue.map(|q| q.map(|q| queue_json(&q))),
        };
        // Catalog first: an actor that misses the change (down, or its answer lost) takes the
        // window from the catalog when it starts.
        if !self
            .store
            .update_event(id.0, &patch)
            .await
            .map_err(unavailable)?
        {
            return Err(BackendError::EventNotFound);
        }
        let event = self.event_or_missing(id).await?;
        if window_changed {
            self.execute(id, InventoryOp::SetSaleWindow(sale_window(event.sale)))
                .await?;
        }
        // A queue opens with the sale: a new window moves its opening (until it opened).
        if queue_changed || (window_changed && event.queue.is_some()) {
            let opens_at_ms = millis(event.sale.starts_at.unwrap_or(event.created_at));
            let queue = event
                .queue
                .map(|q| crate::inventories::queue_setup(q, opens_at_ms));
            self.execute(id, InventoryOp::SetQueue(queue)).await?;
        }
        Ok(event)
    }

    async fn add_ticket_type(
        &self,
        id: EventId,
        spec: TicketTypeSpec,
    ) -> Result<EventInfo, BackendError> {
        let code = spec.code.clone();
        let (capacity, per_user_limit) = (spec.capacity, spec.per_user_limit);
        self.store
            .add_ticket_type(id.0, &ticket_type_row(spec))
            .await
            .map_err(|e| match e {
                store::Error::Conflict => BackendError::TicketTypeExists(code.clone()),
                e => unavailable(e),
            })?;
        // A new actor defines it from the catalog; a running one is told.
        let define = InventoryOp::Define {
            code,
            capacity,
            per_user_limit,
        };
        self.execute(id, define).await?;
        self.event_or_missing(id).await
    }

    async fn update_ticket_type(
        &self,
        id: EventId,
        code: TicketCode,
        changes: TicketTypeChanges,
    ) -> Result<EventInfo, BackendError> {
        let event = self.event_or_missing(id).await?;
        if !event.ticket_types.iter().any(|t| t.code == code) {
            return Err(BackendError::TicketTypeNotFound(code));
        }
        // Stock first: the actor refuses a capacity below what is held and sold, or a limit
        // below what a buyer has, before the catalog says anything.
        if let Some(capacity) = changes.capacity {
            let adjust = InventoryOp::AdjustCapacity {
                ticket_type: code.clone(),
                capacity,
            };
            self.execute(id, adjust).await?;
        }
        if let Some(per_user_limit) = changes.per_user_limit {
            let set = InventoryOp::SetPerUserLimit {
                ticket_type: code.clone(),
                per_user_limit,
            };
            self.execute(id, set).await?;
        }
        let patch = TicketTypePatch {
            name: changes.name,
            price: changes.price,
            capacity: changes.capacity.map(i64::from),
            per_user_limit: changes.per_user_limit.map(|l| l.map(i64::from)),
        };
        self.store
            .update_ticket_type(id.0, code.as_str(), &patch, self.now_ms())
            .await
            .map_err(unavailable)?;
        self.event_or_missing(id).await
    }

    async fn cancel_event(&self, id: EventId, reason: &str) -> Result<EventInfo, BackendError> {
        if !self
            .store
            .cancel_event(id.0, self.now_ms(), reason)
            .await
            .map_err(unavailable)?
        {
            return Err(BackendError::EventNotFound);
        }
        self.execute(id, InventoryOp::Cancel).await?;
        self.cancelled.notify_one();
        self.event_or_missing(id).await
    }

    async fn event_orders(
        &self,
        id: EventId,
        limit: u32,
        offset: u32,
    ) -> Result<Page<EventOrder>, BackendError> {
        let (rows, total) = self
            .store
            .event_orders(id.0, limit, offset)
            .await
            .map_err(unavailable)?;
        let now = self.now_ms();
        let items = rows
            .into_iter()
            .map(|row| event_order(row, now))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, total })
    }

    async fn event_attendees(
        &self,
        id: EventId,
        limit: u32,
        offset: u32,
    ) -> Result<Page<Attendee>, BackendError> {
        let (rows, total) = self
            .store
            .event_attendees(id.0, limit, offset)
            .await
            .map_err(unavailable)?;
        let items = rows.into_iter().map(attendee).collect::<Result<_, _>>()?;
        Ok(Page { items, total })
    }

    async fn event(&self, id: EventId) -> Result<Option<EventInfo>, BackendError> {
        self.store
            .event(id.0)
            .await
            .map_err(unavailable)?
            .map(event_info)
            .transpose()
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<EventInfo>, BackendError> {
        let filter = EventFilter {
            organizer_id: query.organizer.map(|o| o.0),
            category: query.category.clone(),
            text: query.text.clone(),
            from_ms: query.from.map(millis),
            to_ms: query.to.map(millis),
        };
        self.store
            .find_events(&filter, query.limit, query.offset)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(event_info)
            .collect()
    }

    async fn availability(
        &self,
        id: EventId,
    ) -> Result<Vec<(TicketCode, TypeStock)>, BackendError> {
        match self.execute(id, InventoryOp::Stock).await? {
            InventoryReply::Stock(stock) => Ok(stock),
            other => Err(unexpected(other)),
        }
    }

    async fn hold(
        &self,
        hold: HoldRef,
        user: UserId,
        items: Vec<Line>,
        admission: Option<u64>,
    ) -> Result<HoldView, BackendError> {
        let op = match admission {
            None => InventoryOp::Hold {
                hold_id: hold.hold_id,
                user,
                items,
                ttl_ms: self.hold_ttl_ms,
            },
            Some(admission) => InventoryOp::HoldAdmitted {
                hold_id: hold.hold_id,
                user,
                items,
                ttl_ms: self.hold_ttl_ms,
                admission,
            },
        };
        match self.execute(hold.event_id, op).await? {
            InventoryReply::Hold(Some(view)) => Ok(view),
            other => Err(unexpected(other)),
        }
    }

    async fn verify_captcha(
        &self,
        token: Option<&str>,
        client: std::net::IpAddr,
    ) -> Result<CaptchaVerdict, BackendError> {
        match &self.captcha {
            Some(captcha) => captcha.verify(token, client).await,
            None => Ok(CaptchaVerdict::NotRequired),
        }
    }

    async fn queue_join(
        &self,
        event: EventId,
        user: UserId,
    ) -> Result<(QueueRead, bool), BackendError> {
        match self.execute(event, InventoryOp::JoinQueue { user }).await? {
            InventoryReply::Joined {
                joined,
                read: Some(read),
            } => Ok((read, joined)),
            InventoryReply::Joined { read: None, .. } => {
                Err(BackendError::Inventory(holdfast_actors::Error::NoQueue))
            }
            other => Err(unexpected(other)),
        }
    }

    fn captcha_required(&self) -> bool {
        self.captcha.is_some()
    }

    async fn queue_read(&self, event: EventId, user: UserId) -> Result<QueueRead, BackendError> {
        match self.execute(event, InventoryOp::ReadQueue { user }).await? {
            InventoryReply::Queue(Some(read)) => Ok(read),
            InventoryReply::Queue(None) => {
                Err(BackendError::Inventory(holdfast_actors::Error::NoQueue))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn get_hold(&self, hold: HoldRef) -> Result<Option<HoldView>, BackendError> {
        match self
            .execute(hold.event_id, InventoryOp::GetHold(hold.hold_id))
            .await?
        {
            InventoryReply::Hold(view) => Ok(view),
            other => Err(unexpected(other)),
        }
    }

    async fn release(&self, hold: HoldRef) -> Result<(), BackendError> {
        self.execute(hold.event_id, InventoryOp::Release(hold.hold_id))
            .await?;
        Ok(())
    }

    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        request_hash: &[u8],
    ) -> Result<IdempotencyState, BackendError> {
        let state = self
            .store
            .idempotency_begin(scope, key, request_hash, self.now_ms())
            .await
            .map_err(unavailable)?;
        Ok(match state {
            Idempotency::Started => IdempotencyState::Started,
            Idempotency::InProgress => IdempotencyState::InProgress,
            Idempotency::Mismatch => IdempotencyState::Mismatch,
            Idempotency::Done(r) => IdempotencyState::Done(StoredResponse {
                status: r.status,
                content_type: r.content_type,
                location: r.location,
                body: r.body,
            }),
        })
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<(), BackendError> {
        let stored = store::StoredResponse {
            status: response.status,
            content_type: response.content_type,
            location: response.location,
            body: response.body,
        };
        self.store
            .idempotency_complete(scope, key, &stored)
            .await
            .map_err(unavailable)
    }

    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<(), BackendError> {
        self.store
            .idempotency_abandon(scope, key)
            .await
            .map_err(unavailable)
    }

    async fn issue_refresh(
        &self,
        user: UserId,
        family: &str,
        token_hash: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), BackendError> {
        self.store
            .refresh_insert(token_hash, family, user.0, expires_at_ms, self.now_ms())
            .await
            .map_err(unavailable)
    }

    async fn rotate_refresh(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        expires_at_ms: i64,
    ) -> Result<RefreshOutcome, BackendError> {
        match self
            .store
            .refresh_rotate(old_hash, new_hash, expires_at_ms, self.now_ms())
            .await
            .map_err(unavailable)?
        {
            Rotation::Rotated { user_id, family } => {
                match self.store.user_by_id(user_id).await.map_err(unavailable)? {
                    Some(row) => Ok(RefreshOutcome::Rotated {
                        account: account(&row)?,
                        family,
                    }),
                    None => Ok(RefreshOutcome::Invalid),
                }
            }
            Rotation::Invalid => Ok(RefreshOutcome::Invalid),
            Rotation::Reused { family } => Ok(RefreshOutcome::Reused { family }),
        }
    }

    async fn logout(
        &self,
        jti: &str,
        expires_at_ms: i64,
        family: Option<&str>,
    ) -> Result<(), BackendError> {
        let now = self.now_ms();
        self.store
            .access_revoke(jti, expires_at_ms, now)
            .await
            .map_err(unavailable)?;
        self.deny_list
            .revoke(jti.to_owned(), expires_at_ms, now)
            .await;
        if let Some(family) = family {
            self.store
                .refresh_revoke_family(family, now)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn revoke_login(&self, family: &str, until_ms: i64) -> Result<(), BackendError> {
        let key = crate::deny_list::family_key(family);
        let now = self.now_ms();
        self.store
            .access_revoke(&key, until_ms, now)
            .await
            .map_err(unavailable)?;
        self.deny_list.revoke(key, until_ms, now).await;
        Ok(())
    }

    async fn is_access_revoked(&self, jti: &str, family: Option<&str>) -> bool {
        self.deny_list.is_revoked(jti, family, self.now_ms())
    }

    async fn ready(&self) -> bool {
        let cluster_ready = self.cluster.as_ref().is_none_or(|c| c.is_ready());
        self.ready.load(Ordering::Acquire) && cluster_ready && self.store.ping().await.is_ok()
    }

    async fn shards(&self) -> Result<Vec<ShardInfo>, BackendError> {
        let table = self
            .cluster()?
            .shard_table()
            .await
            .map_err(cluster_problem)?;
        Ok(table
            .into_iter()
            .map(|(s, events)| ShardInfo {
                shard: s.shard,
                owner: s.owner,
                epoch: s.epoch,
                events,
            })
            .collect())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, BackendError> {
        let now = self.now_ms();
        let table = self.cluster()?.node_table().await;
        Ok(table
            .into_iter()
            .map(|(n, live, shards)| NodeInfo {
                node_id: n.node_id,
                addr: n.addr,
                http_addr: n.http_addr,
                live,
                shards: u32::try_from(shards).unwrap_or(u32::MAX),
                heartbeat_age_ms: now - n.heartbeat_at_ms,
            })
            .collect())
    }

    async fn move_shard(&self, shard: u32, to: &str) -> Result<MoveReport, BackendError> {
        let r = self
            .cluster()?
            .move_shard(shard, to)
            .await
            .map_err(cluster_problem)?;
        Ok(MoveReport {
            shard: r.shard,
            from: r.from,
            to: r.to,
            epoch: r.epoch,
            pause_ms: r.pause_ms,
        })
    }
}

/// Roles an operator may give from the command line.
pub fn parse_role(role: &str) -> Result<Role, String> {
    role.parse()
        .map_err(|e: holdfast_gateway::auth::InvalidRole| e.to_string())
}
