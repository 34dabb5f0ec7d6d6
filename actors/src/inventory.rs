//! The inventory state machine of one event.
//!
//! [`Inventory::apply`] checks a [`Command`] against the state at `now` and returns the
//! [`Event`]s it caused, already applied. [`Inventory::replay`] applies journaled events and is
//! the only code that mutates state, so live state and `snapshot + replay(journal tail)` agree.
//! Nothing here reads a clock, sleeps, allocates ids or performs I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::domain::{EventId, HoldId, Line, OrderId, Quantity, TicketCode, Timestamp, UserId};
use crate::invariants;
use crate::queue::{
    Queue, QueueCommand, QueueError, QueueEvent, QueueRead, QueueSettings, QueueStatus,
};

/// At most this many ticket types per event.
pub const TICKET_TYPES_MAX: usize = 64;
/// At most this many lines in one hold.
pub const HOLD_LINES_MAX: usize = 16;
/// Released and expired holds stay readable (`GET /v1/holds/{id}`) this long, then are forgotten.
pub const ENDED_HOLD_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// Forgetting happens in batches: only once the oldest ended hold is this much past retention.
const FORGET_SLACK_MS: i64 = 60 * 60 * 1000;

/// The stock of one ticket type. `available + held + sold == capacity` always holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeStock {
    pub capacity: u32,
    pub available: u32,
    pub held: u32,
    pub sold: u32,
    /// Seats one user may hold and buy together; `None` is unlimited.
    pub per_user_limit: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HoldStatus {
    Active,
    Released,
    Expired,
    Confirmed,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Released => "released",
            Self::Expired => "expired",
            Self::Confirmed => "confirmed",
        }
    }
}

/// A hold as callers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldView {
    pub id: HoldId,
    pub event_id: EventId,
    pub user: UserId,
    pub items: Vec<Line>,
    pub placed_at: Timestamp,
    pub expires_at: Timestamp,
    pub status: HoldStatus,
    pub order_id: Option<OrderId>,
}

/// When holds may be placed: from `starts_at` (inclusive) to `ends_at` (exclusive); an open
/// end does not bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleWindow {
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
}

impl SaleWindow {
    /// Whether a hold placed at `now` is inside the window.
    pub fn is_open(&self, now: Timestamp) -> bool {
        self.starts_at.is_none_or(|s| s <= now) && self.ends_at.is_none_or(|e| now < e)
    }
}

/// What a caller asks of the inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Adds a ticket type; a type that exists already is left as it is.
    DefineTicketType {
        code: TicketCode,
        capacity: u32,
        per_user_limit: Option<u32>,
    },
    /// Sets the capacity of a ticket type; it cannot drop below what is held and sold.
    AdjustCapacity {
        ticket_type: TicketCode,
        capacity: u32,
    },
    /// Holds seats for `ttl_ms`, all lines or none. Idempotent by `hold_id`. On an event with
    /// a waiting room, `admission` must be the number of the buyer's admission, still running.
    Hold {
        hold_id: HoldId,
        user: UserId,
        items: Vec<Line>,
        ttl_ms: i64,
        admission: Option<u64>,
    },
    /// Gives an active hold's seats back. Idempotent.
    Release { hold_id: HoldId },
    /// Turns an active hold into a sale (held → sold). Idempotent by `order_id`.
    Confirm { hold_id: HoldId, order_id: OrderId },
    /// Puts a confirmed order's seats back on sale (a refund). Idempotent by `order_id`.
    Return { order_id: OrderId },
    /// Ends every hold whose expiry is at or before `now`.
    Expire,
    /// Puts a confirmed order's seats back on sale except `keep`, which stay sold to the order
    /// (seats already used at the door). Afterwards the order holds just `keep`; with `keep`
    /// empty this is [`Command::Return`]. Idempotent: `keep` is clamped to what the order holds,
    /// so once the order holds no more than `keep`, nothing changes.
    ReturnPart { order_id: OrderId, keep: Vec<Line> },
    /// Sets when holds may be placed. Holds placed already are kept.
    SetSaleWindow { window: SaleWindow },
    /// Cancels the event: every active hold is released and no hold is placed any more.
    /// Confirmed orders keep their seats until they are returned. Idempotent.
    Cancel,
    /// Sets how many seats of a type one user may hold and buy; refused below what a user has
    /// already.
    SetPerUserLimit {
        ticket_type: TicketCode,
        per_user_limit: Option<u32>,
    },
    /// Sets up (or changes, or with `None` removes) the event's waiting room: holds need an
    /// admission from it. `seed` orders the pre-queue; it counts only when the queue is new.
    SetQueue { queue: Option<QueueSetup> },
    /// Joins the waiting room; joining again keeps the place.
    JoinQueue { user: UserId },
}

/// A waiting room as [`Command::SetQueue`] sets it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSetup {
    pub settings: QueueSettings,
    /// When the pre-queue is drawn and admissions start: the sale's start.
    pub opens_at: Timestamp,
    pub seed: [u8; 32],
}

/// What happened; the journal stores these and replay applies them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    TicketTypeDefined {
        code: TicketCode,
        capacity: u32,
        per_user_limit: Option<u32>,
    },
    CapacityAdjusted {
        ticket_type: TicketCode,
        capacity: u32,
    },
    HoldPlaced {
        hold_id: HoldId,
        user: UserId,
        items: Vec<Line>,
        placed_at: Timestamp,
        expires_at: Timestamp,
    },
    HoldReleased {
        hold_id: HoldId,
        at: Timestamp,
    },
    HoldExpired {
        hold_id: HoldId,
        at: Timestamp,
    },
    HoldConfirmed {
        hold_id: HoldId,
        order_id: OrderId,
        at: Timestamp,
    },
    StockReturned {
        order_id: OrderId,
        at: Timestamp,
    },
    /// Released and expired holds that ended before `before` are dropped from memory.
    HoldsForgotten {
        before: Timestamp,
    },
    /// The seats of the order beyond `keep` went back on sale; the order now holds `keep`.
    StockPartlyReturned {
        order_id: OrderId,
        keep: Vec<Line>,
        at: Timestamp,
    },
    // New variants go last: the journal stores the variant's index.
    SaleWindowSet {
        window: SaleWindow,
    },
    /// Follows the release of every hold that was active.
    SaleCancelled {
        at: Timestamp,
    },
    PerUserLimitSet {
        ticket_type: TicketCode,
        per_user_limit: Option<u32>,
    },
    // New variants go last: the journal stores events in bincode.
    QueueSet {
        queue: Option<QueueSetup>,
    },
    Queue(QueueEvent),
}

/// Why a command was refused. A refused command changes nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum Error {
    #[error("not enough seats left")]
    SoldOut {
        /// Seats available now for each requested ticket type.
        available: Vec<(TicketCode, u32)>,
    },
    #[error("at most {limit} seats of {ticket_type} per user; {already} already held or bought")]
    LimitExceeded {
        ticket_type: TicketCode,
        limit: u32,
        already: u32,
    },
    #[error("unknown ticket type {0}")]
    UnknownTicketType(TicketCode),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("hold not found")]
    HoldNotFound,
    #[error("hold id already used by another user")]
    HoldIdTaken,
    #[error("hold is {}", .0.as_str())]
    HoldNotActive(HoldStatus),
    #[error("order not found")]
    OrderNotFound,
    #[error("order id already confirmed another hold")]
    OrderIdTaken,
    #[error("capacity cannot drop below the {committed} seats held or sold")]
    CapacityBelowCommitted { committed: u32 },
    #[error("an event has at most {TICKET_TYPES_MAX} ticket types")]
    TooManyTicketTypes,
    // New variants go last: errors cross the node-to-node API in bincode.
    #[error("the sale is not open")]
    SaleNotOpen { window: SaleWindow },
    #[error("the event is cancelled")]
    EventCancelled,
    #[error("a buyer holds or bought {most} seats of this type already")]
    LimitBelowHeld { most: u32 },
    #[error("the event sells only to buyers admitted from its waiting room")]
    NotAdmitted,
    #[error("the event has no waiting room")]
    NoQueue,
    #[error("the waiting room is full")]
    QueueFull,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HoldRecord {
    pub(crate) user: UserId,
    pub(crate) items: Vec<Line>,
    pub(crate) placed_at: Timestamp,
    pub(crate) expires_at: Timestamp,
    pub(crate) status: HoldStatus,
    pub(crate) ended_at: Option<Timestamp>,
    pub(crate) order_id: Option<OrderId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderRecord {
    pub(crate) hold_id: HoldId,
    pub(crate) user: UserId,
    pub(crate) items: Vec<Line>,
    pub(crate) returned: bool,
}

/// The stock of one event and everything needed to decide the next command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub(crate) event_id: EventId,
    /// Sequence number of the last event applied; the journal's position.
    pub(crate) seq: u64,
    pub(crate) types: BTreeMap<TicketCode, TypeStock>,
    pub(crate) holds: HashMap<HoldId, HoldRecord>,
    /// Active holds ordered by expiry: the timer only ever needs the first.
    pub(crate) expiries: BTreeSet<(Timestamp, HoldId)>,
    /// Released and expired holds ordered by when they ended, for forgetting.
    pub(crate) ended: BTreeSet<(Timestamp, HoldId)>,
    /// Seats each user holds or has bought, per ticket type, for `per_user_limit`.
    pub(crate) per_user: HashMap<UserId, BTreeMap<TicketCode, u32>>,
    pub(crate) orders: HashMap<OrderId, OrderRecord>,
    pub(crate) sale: SaleWindow,
    /// When the event was cancelled; no hold is placed after.
    pub(crate) cancelled_at: Option<Timestamp>,
    /// The waiting room, if the event sells through one.
    pub(crate) queue: Option<Queue>,
}

/// [`Inventory`] as snapshots stored it before the waiting room (snapshot format 2).
#[derive(Deserialize)]
pub(crate) struct InventoryV2 {
    event_id: EventId,
    seq: u64,
    types: BTreeMap<TicketCode, TypeStock>,
    holds: HashMap<HoldId, HoldRecord>,
    expiries: BTreeSet<(Timestamp, HoldId)>,
    ended: BTreeSet<(Timestamp, HoldId)>,
    per_user: HashMap<UserId, BTreeMap<TicketCode, u32>>,
    orders: HashMap<OrderId, OrderRecord>,
    sale: SaleWindow,
    cancelled_at: Option<Timestamp>,
}

impl From<InventoryV2> for Inventory {
    fn from(v: InventoryV2) -> Self {
        Self {
            event_id: v.event_id,
            seq: v.seq,
            types: v.types,
            holds: v.holds,
            expiries: v.expiries,
            ended: v.ended,
            per_user: v.per_user,
            orders: v.orders,
            sale: v.sale,
            cancelled_at: v.cancelled_at,
            queue: None,
        }
    }
}

/// [`Inventory`] as snapshots stored it before the sale window and cancellation (snapshot
/// format 1, unversioned). Recovery reads old snapshots through it.
#[derive(Deserialize)]
pub(crate) struct InventoryV1 {
    event_id: EventId,
    seq: u64,
    types: BTreeMap<TicketCode, TypeStock>,
    holds: HashMap<HoldId, HoldRecord>,
    expiries: BTreeSet<(Timestamp, HoldId)>,
    ended: BTreeSet<(Timestamp, HoldId)>,
    per_user: HashMap<UserId, BTreeMap<TicketCode, u32>>,
    orders: HashMap<OrderId, OrderRecord>,
}

impl From<InventoryV1> for Inventory {
    fn from(v: InventoryV1) -> Self {
        Self {
            event_id: v.event_id,
            seq: v.seq,
            types: v.types,
            holds: v.holds,
            expiries: v.expiries,
            ended: v.ended,
            per_user: v.per_user,
            orders: v.orders,
            sale: SaleWindow::default(),
            cancelled_at: None,
            queue: None,
        }
    }
}

impl Inventory {
    pub fn new(event_id: EventId) -> Self {
        Self {
            event_id,
            seq: 0,
            types: BTreeMap::new(),
            holds: HashMap::new(),
            expiries: BTreeSet::new(),
            ended: BTreeSet::new(),
            per_user: HashMap::new(),
            orders: HashMap::new(),
            sale: SaleWindow::default(),
            cancelled_at: None,
            queue: None,
        }
    }

    /// The waiting room, if the event has one.
    pub fn queue(&self) -> Option<&Queue> {
        self.queue.as_ref()
    }

    /// Whether no seat of any type is left to hold.
    pub fn sold_out(&self) -> bool {
        self.types.values().all(|t| t.available == 0)
    }

    /// The seats a buyer could hold at `now`: none outside the sale window or once cancelled.
    pub fn seats_to_sell(&self, now: Timestamp) -> u32 {
        if self.cancelled_at.is_some() || !self.sale.is_open(now) {
            return 0;
        }
        self.types
            .values()
            .fold(0u32, |sum, t| sum.saturating_add(t.available))
    }

    /// Whether the waiting room has buyers waiting or admitted (its actor must keep running).
    pub fn queue_busy(&self) -> bool {
        self.queue
            .as_ref()
            .is_some_and(|q| q.waiting() > 0 || q.active() > 0)
    }

    /// What `user` reads of the waiting room at `now`: `None` without a queue, `Some(None)`
    /// if they have not joined.
    pub fn queue_status(&self, user: UserId, now: Timestamp) -> Option<Option<QueueStatus>> {
        let queue = self.queue.as_ref()?;
        Some(queue.status(user, now, self.sold_out()))
    }

    /// What `user` reads of the waiting room at `now`, with the estimated wait; `None`
    /// without a queue.
    pub fn queue_read(&self, user: UserId, now: Timestamp) -> Option<QueueRead> {
        let queue = self.queue.as_ref()?;
        let status = queue.status(user, now, self.sold_out());
        let estimated_wait_secs = match status {
            Some(QueueStatus::Waiting {
                position: Some(position),
            }) => Some(queue.estimated_wait_secs(position)),
            // The pre-queue's places are drawn at the opening: the wait of the middle one.
            Some(QueueStatus::Waiting { position: None }) => {
                let until_open = (queue.opens_at().0 - now.0).max(0) / 1000;
                Some(
                    u64::try_from(until_open).unwrap_or(0)
                        + queue.estimated_wait_secs(queue.waiting() as u64 / 2),
                )
            }
            _ => None,
        };
        Some(QueueRead {
            status,
            estimated_wait_secs,
        })
    }

    /// When the actor must wake next at or after `now`: the earliest hold expiry, or the
    /// waiting room's next step.
    pub fn next_timer(&self, now: Timestamp) -> Option<Timestamp> {
        let queue = self
            .queue
            .as_ref()
            .and_then(|q| q.next_due(now, self.seats_to_sell(now)));
        match (self.next_expiry(), queue) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When holds may be placed.
    pub fn sale_window(&self) -> SaleWindow {
        self.sale
    }

    /// When the event was cancelled, if it was.
    pub fn cancelled_at(&self) -> Option<Timestamp> {
        self.cancelled_at
    }

    pub fn event_id(&self) -> EventId {
        self.event_id
    }

    /// Sequence number of the last applied event (0 before any).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn stock(&self) -> impl Iterator<Item = (&TicketCode, &TypeStock)> {
        self.types.iter()
    }

    pub fn hold(&self, hold_id: HoldId) -> Option<HoldView> {
        self.holds.get(&hold_id).map(|h| HoldView {
            id: hold_id,
            event_id: self.event_id,
            user: h.user,
            items: h.items.clone(),
            placed_at: h.placed_at,
            expires_at: h.expires_at,
            status: h.status,
            order_id: h.order_id,
        })
    }

    /// When the earliest active hold expires: the only timer the actor needs.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Holds kept in memory, active or ended: what the size of a snapshot grows with.
    pub fn holds_kept(&self) -> usize {
        self.holds.len()
    }

    pub fn active_holds(&self) -> usize {
        self.expiries.len()
    }

    /// Seats `user` holds or bought of `ticket_type`, as counted against its limit.
    pub fn seats_of_user(&self, user: UserId, ticket_type: &TicketCode) -> u32 {
        self.per_user
            .get(&user)
            .and_then(|m| m.get(ticket_type))
            .copied()
            .unwrap_or(0)
    }

    /// Decides `command` at `now`. On success the returned events are already applied.
    pub fn apply(&mut self, now: Timestamp, command: Command) -> Result<Vec<Event>, Error> {
        let queued = match &command {
            Command::JoinQueue { user } => {
                if self.cancelled_at.is_some() {
                    return Err(Error::EventCancelled);
                }
                return self.apply_queue(now, &QueueCommand::Join { user: *user });
            }
            Command::Expire => None,
            Command::Confirm { hold_id, .. } => self.holds.get(hold_id).map(|h| h.user),
            _ => return self.apply_decided(now, command),
        };
        let is_expire = matches!(command, Command::Expire);
        let mut events = self.apply_decided(now, command)?;
        if self.queue.is_some() {
            // Expiry also moves the queue on (seats that came back count at once); a buyer
            // who bought is done with their admission.
            let step = if is_expire {
                Some(QueueCommand::Admit {
                    seats: self.seats_to_sell(now),
                })
            } else {
                queued
                    .filter(|user| {
                        matches!(
                            self.queue_status(*user, now),
                            Some(Some(QueueStatus::Admitted { .. }))
                        )
                    })
                    .map(|user| QueueCommand::Done { user })
            };
            if let Some(step) = step {
                events.extend(self.apply_queue(now, &step)?);
            }
        }
        Ok(events)
    }

    fn apply_decided(&mut self, now: Timestamp, command: Command) -> Result<Vec<Event>, Error> {
        let events = self.decide(now, command)?;
        for event in &events {
            self.replay(event);
        }
        Ok(events)
    }

    /// Runs `command` in the waiting room, which applies its events itself; each becomes an
    /// [`Event::Queue`] of the journal.
    fn apply_queue(&mut self, now: Timestamp, command: &QueueCommand) -> Result<Vec<Event>, Error> {
        let queue = self.queue.as_mut().ok_or(Error::NoQueue)?;
        let events = queue.apply(now, command).map_err(|e| match e {
            QueueError::Full => Error::QueueFull,
            QueueError::NotAdmitted => Error::NotAdmitted,
            QueueError::InvalidSettings(why) => Error::Invalid(why.to_owned()),
        })?;
        self.seq += events.len() as u64;
        Ok(events.into_iter().map(Event::Queue).collect())
    }

    fn decide(&self, now: Timestamp, command: Command) -> Result<Vec<Event>, Error> {
        match command {
            Command::DefineTicketType {
                code,
                capacity,
                per_user_limit,
            } => {
                if self.types.contains_key(&code) {
                    return Ok(vec![]);
                }
                if self.types.len() >= TICKET_TYPES_MAX {
                    return Err(Error::TooManyTicketTypes);
                }
                Ok(vec![Event::TicketTypeDefined {
                    code,
                    capacity,
                    per_user_limit,
                }])
            }
            Command::AdjustCapacity {
                ticket_type,
                capacity,
            } => {
                if self.cancelled_at.is_some() {
                    return Err(Error::EventCancelled);
                }
                let stock = self
                    .types
                    .get(&ticket_type)
                    .ok_or_else(|| Error::UnknownTicketType(ticket_type.clone()))?;
                let committed = stock.held + stock.sold;
                if capacity < committed {
                    return Err(Error::CapacityBelowCommitted { committed });
                }
                if capacity == stock.capacity {
                    return Ok(vec![]);
                }
                Ok(vec![Event::CapacityAdjusted {
                    ticket_type,
                    capacity,
                }])
            }
            Command::Hold {
                hold_id,
                user,
                items,
                ttl_ms,
                admission,
            } => self.decide_hold(now, hold_id, user, items, ttl_ms, admission),
            Command::Release { hold_id } => {
                let hold = self.holds.get(&hold_id).ok_or(Error::HoldNotFound)?;
                match hold.status {
                    HoldStatus::Active => Ok(vec![Event::HoldReleased { hold_id, at: now }]),
                    HoldStatus::Released | HoldStatus::Expired => Ok(vec![]),
                    HoldStatus::Confirmed => Err(Error::HoldNotActive(HoldStatus::Confirmed)),
                }
            }
            Command::Confirm { hold_id, order_id } => {
                let hold = self.holds.get(&hold_id).ok_or(Error::HoldNotFound)?;
                match hold.status {
                    HoldStatus::Confirmed if hold.order_id == Some(order_id) => Ok(vec![]),
                    HoldStatus::Active if hold.expires_at <= now => {
                        Err(Error::HoldNotActive(HoldStatus::Expired))
                    }
                    HoldStatus::Active if self.orders.contains_key(&order_id) => {
                        Err(Error::OrderIdTaken)
                    }
                    HoldStatus::Active => Ok(vec![Event::HoldConfirmed {
                        hold_id,
                        order_id,
                        at: now,
                    }]),
                    status => Err(Error::HoldNotActive(status)),
                }
            }
            Command::Return { order_id } => {
                let order = self.orders.get(&order_id).ok_or(Error::OrderNotFound)?;
                if order.returned {
                    Ok(vec![])
                } else {
                    Ok(vec![Event::StockReturned { order_id, at: now }])
                }
            }
            Command::Expire => Ok(self.decide_expire(now)),
            Command::ReturnPart { order_id, keep } => self.decide_return_part(now, order_id, keep),
            Command::SetSaleWindow { window } => {
                if let (Some(s), Some(e)) = (window.starts_at, window.ends_at)
                    && e <= s
                {
                    return Err(Error::Invalid(
                        "the sale must end after it starts".to_owned(),
                    ));
                }
                if window == self.sale {
                    return Ok(vec![]);
                }
                Ok(vec![Event::SaleWindowSet { window }])
            }
            Command::Cancel => Ok(self.decide_cancel(now)),
            Command::SetQueue { queue } => {
                if let Some(setup) = &queue {
                    setup
                        .settings
                        .check()
                        .map_err(|e| Error::Invalid(e.to_string()))?;
                }
                let same = match (&self.queue, &queue) {
                    (None, None) => true,
                    (Some(q), Some(setup)) => {
                        q.settings() == setup.settings && q.opens_at() == setup.opens_at
                    }
                    _ => false,
                };
                Ok(if same {
                    vec![]
                } else {
                    vec![Event::QueueSet { queue }]
                })
            }
            Command::JoinQueue { .. } => Err(Error::NoQueue),
            Command::SetPerUserLimit {
                ticket_type,
                per_user_limit,
            } => {
                let stock = self
                    .types
                    .get(&ticket_type)
                    .ok_or_else(|| Error::UnknownTicketType(ticket_type.clone()))?;
                if per_user_limit == Some(0) {
                    return Err(Error::Invalid("a limit is at least 1".to_owned()));
                }
                if stock.per_user_limit == per_user_limit {
                    return Ok(vec![]);
                }
                if let Some(limit) = per_user_limit {
                    let most = self
                        .per_user
                        .values()
                        .filter_map(|m| m.get(&ticket_type))
                        .copied()
                        .max()
                        .unwrap_or(0);
                    if most > limit {
                        return Err(Error::LimitBelowHeld { most });
                    }
                }
                Ok(vec![Event::PerUserLimitSet {
                    ticket_type,
                    per_user_limit,
                }])
            }
        }
    }

    fn decide_cancel(&self, now: Timestamp) -> Vec<Event> {
        if self.cancelled_at.is_some() {
            return vec![];
        }
        self.expiries
            .iter()
            .map(|(_, hold_id)| Event::HoldReleased {
                hold_id: *hold_id,
                at: now,
            })
            .chain([Event::SaleCancelled { at: now }])
            .collect()
    }

    fn decide_return_part(
        &self,
        now: Timestamp,
        order_id: OrderId,
        keep: Vec<Line>,
    ) -> Result<Vec<Event>, Error> {
        let order = self.orders.get(&order_id).ok_or(Error::OrderNotFound)?;
        if order.returned {
            return Ok(vec![]);
        }
        let sold = line_totals(&order.items);
        // Never more than the order holds now: a retried or stale `keep` (after an earlier
        // partial return) keeps what is left and returns nothing more.
        let kept: BTreeMap<TicketCode, u32> = line_totals(&keep)
            .into_iter()
            .filter_map(|(code, q)| {
                let held = sold.get(&code).copied().unwrap_or(0);
                (held > 0).then(|| (code, q.min(held)))
            })
            .collect();
        if kept == sold {
            return Ok(vec![]);
        }
        if kept.is_empty() {
            return Ok(vec![Event::StockReturned { order_id, at: now }]);
        }
        let keep = kept
            .into_iter()
            .map(|(ticket_type, q)| Line {
                ticket_type,
                quantity: Quantity::new(q).expect("a kept total is at least 1"),
            })
            .collect();
        Ok(vec![Event::StockPartlyReturned {
            order_id,
            keep,
            at: now,
        }])
    }

    fn decide_hold(
        &self,
        now: Timestamp,
        hold_id: HoldId,
        user: UserId,
        items: Vec<Line>,
        ttl_ms: i64,
        admission: Option<u64>,
    ) -> Result<Vec<Event>, Error> {
        if let Some(existing) = self.holds.get(&hold_id) {
            // A retry of a hold that was placed: same answer, no new seats.
            return if existing.user == user {
                Ok(vec![])
            } else {
                Err(Error::HoldIdTaken)
            };
        }
        if ttl_ms <= 0 {
            return Err(Error::Invalid("hold ttl must be positive".to_owned()));
        }
        if self.cancelled_at.is_some() {
            return Err(Error::EventCancelled);
        }
        if !self.sale.is_open(now) {
            return Err(Error::SaleNotOpen { window: self.sale });
        }
        if let Some(queue) = &self.queue {
            let admitted = match queue.status(user, now, false) {
                Some(QueueStatus::Admitted { number, .. }) => Some(number),
                _ => None,
            };
            if admitted.is_none() || admitted != admission {
                return Err(Error::NotAdmitted);
            }
        }
        let items = merge_lines(items)?;
        let mut short = false;
        for line in &items {
            let stock = self
                .types
                .get(&line.ticket_type)
                .ok_or_else(|| Error::UnknownTicketType(line.ticket_type.clone()))?;
            if let Some(limit) = stock.per_user_limit {
                let already = self.seats_of_user(user, &line.ticket_type);
                if already + line.quantity.get() > limit {
                    return Err(Error::LimitExceeded {
                        ticket_type: line.ticket_type.clone(),
                        limit,
                        already,
                    });
                }
            }
            short |= line.quantity.get() > stock.available;
        }
        if short {
            let available = items
                .iter()
                .map(|l| (l.ticket_type.clone(), self.types[&l.ticket_type].available))
                .collect();
            return Err(Error::SoldOut { available });
        }
        Ok(vec![Event::HoldPlaced {
            hold_id,
            user,
            items,
            placed_at: now,
            expires_at: now.plus_millis(ttl_ms),
        }])
    }

    fn decide_expire(&self, now: Timestamp) -> Vec<Event> {
        let mut events: Vec<Event> = self
            .expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, hold_id)| Event::HoldExpired {
                hold_id: *hold_id,
                at: now,
            })
            .collect();
        let horizon = now.plus_millis(-ENDED_HOLD_RETENTION_MS);
        if let Some((oldest, _)) = self.ended.first()
            && oldest.plus_millis(FORGET_SLACK_MS) < horizon
        {
            events.push(Event::HoldsForgotten { before: horizon });
        }
        events
    }

    /// Applies one journaled event. Events come from [`Inventory::apply`], so an event that
    /// does not fit the state is a bug or a corrupt journal: it panics.
    pub fn replay(&mut self, event: &Event) {
        self.seq += 1;
        match event {
            Event::TicketTypeDefined {
                code,
                capacity,
                per_user_limit,
            } => {
                self.types.insert(
                    code.clone(),
                    TypeStock {
                        capacity: *capacity,
                        available: *capacity,
                        held: 0,
                        sold: 0,
                        per_user_limit: *per_user_limit,
                    },
                );
            }
            Event::CapacityAdjusted {
                ticket_type,
                capacity,
            } => {
                let stock = self.stock_mut(ticket_type);
                stock.available = capacity
                    .checked_sub(stock.held + stock.sold)
                    .expect("capacity adjusted below committed seats");
                stock.capacity = *capacity;
            }
            Event::HoldPlaced {
                hold_id,
                user,
                items,
                placed_at,
                expires_at,
            } => {
                for line in items {
                    let q = line.quantity.get();
                    let stock = self.stock_mut(&line.ticket_type);
                    stock.available = stock.available.checked_sub(q).expect("hold oversells");
                    stock.held += q;
                    *self
                        .per_user
                        .entry(*user)
                        .or_default()
                        .entry(line.ticket_type.clone())
                        .or_default() += q;
                }
                self.expiries.insert((*expires_at, *hold_id));
                let previous = self.holds.insert(
                    *hold_id,
                    HoldRecord {
                        user: *user,
                        items: items.clone(),
                        placed_at: *placed_at,
                        expires_at: *expires_at,
                        status: HoldStatus::Active,
                        ended_at: None,
                        order_id: None,
                    },
                );
                assert!(previous.is_none(), "hold placed twice");
            }
            Event::HoldReleased { hold_id, at } => {
                self.end_hold(*hold_id, *at, HoldStatus::Released)
            }
            Event::HoldExpired { hold_id, at } => self.end_hold(*hold_id, *at, HoldStatus::Expired),
            Event::HoldConfirmed {
                hold_id,
                order_id,
                at,
            } => {
                let hold = self.holds.get_mut(hold_id).expect("confirmed hold exists");
                assert_eq!(hold.status, HoldStatus::Active, "confirmed hold is active");
                hold.status = HoldStatus::Confirmed;
                hold.ended_at = Some(*at);
                hold.order_id = Some(*order_id);
                let (user, items, expires_at) = (hold.user, hold.items.clone(), hold.expires_at);
                self.expiries.remove(&(expires_at, *hold_id));
                for line in &items {
                    let q = line.quantity.get();
                    let stock = self.stock_mut(&line.ticket_type);
                    stock.held = stock.held.checked_sub(q).expect("confirm more than held");
                    stock.sold += q;
                }
                self.orders.insert(
                    *order_id,
                    OrderRecord {
                        hold_id: *hold_id,
                        user,
                        items,
                        returned: false,
                    },
                );
            }
            Event::StockReturned { order_id, .. } => {
                let order = self
                    .orders
                    .get_mut(order_id)
                    .expect("returned order exists");
                assert!(!order.returned, "order returned twice");
                order.returned = true;
                let (user, items) = (order.user, order.items.clone());
                for line in &items {
                    let q = line.quantity.get();
                    let stock = self.stock_mut(&line.ticket_type);
                    stock.sold = stock.sold.checked_sub(q).expect("return more than sold");
                    stock.available += q;
                    self.uncount_user(user, &line.ticket_type, q);
                }
            }
            Event::StockPartlyReturned { order_id, keep, .. } => {
                let order = self
                    .orders
                    .get_mut(order_id)
                    .expect("returned order exists");
                assert!(!order.returned, "order returned twice");
                let (user, sold) = (order.user, line_totals(&order.items));
                order.items.clone_from(keep);
                let kept = line_totals(keep);
                for (code, q) in sold {
                    let back = q - kept.get(&code).copied().unwrap_or(0);
                    if back == 0 {
                        continue;
                    }
                    let stock = self.stock_mut(&code);
                    stock.sold = stock.sold.checked_sub(back).expect("return more than sold");
                    stock.available += back;
                    self.uncount_user(user, &code, back);
                }
            }
            Event::SaleWindowSet { window } => self.sale = *window,
            Event::PerUserLimitSet {
                ticket_type,
                per_user_limit,
            } => self.stock_mut(ticket_type).per_user_limit = *per_user_limit,
            Event::SaleCancelled { at } => {
                assert!(self.expiries.is_empty(), "cancelled with active holds");
                self.cancelled_at = Some(*at);
            }
            Event::HoldsForgotten { before } => {
                while let Some(&(ended_at, hold_id)) = self.ended.first() {
                    if ended_at >= *before {
                        break;
                    }
                    self.ended.pop_first();
                    self.holds.remove(&hold_id);
                }
            }
            Event::QueueSet { queue } => match (queue, self.queue.as_mut()) {
                (None, _) => self.queue = None,
                (Some(setup), Some(existing)) => {
                    existing.reconfigure(setup.settings, setup.opens_at);
                }
                (Some(setup), None) => {
                    self.queue = Some(
                        Queue::new(setup.settings, setup.opens_at, setup.seed)
                            .expect("queue settings checked when decided"),
                    );
                }
            },
            Event::Queue(event) => self
                .queue
                .as_mut()
                .expect("a queue event without a queue")
                .replay(event),
        }
        debug_assert_eq!(invariants::check_stock(self), Ok(()));
    }

    fn end_hold(&mut self, hold_id: HoldId, at: Timestamp, status: HoldStatus) {
        let hold = self.holds.get_mut(&hold_id).expect("ended hold exists");
        assert_eq!(hold.status, HoldStatus::Active, "ended hold is active");
        hold.status = status;
        hold.ended_at = Some(at);
        let (user, items, expires_at) = (hold.user, hold.items.clone(), hold.expires_at);
        self.expiries.remove(&(expires_at, hold_id));
        self.ended.insert((at, hold_id));
        for line in &items {
            let q = line.quantity.get();
            let stock = self.stock_mut(&line.ticket_type);
            stock.held = stock.held.checked_sub(q).expect("release more than held");
            stock.available += q;
            self.uncount_user(user, &line.ticket_type, q);
        }
    }

    fn stock_mut(&mut self, code: &TicketCode) -> &mut TypeStock {
        self.types
            .get_mut(code)
            .expect("event names a known ticket type")
    }

    fn uncount_user(&mut self, user: UserId, code: &TicketCode, q: u32) {
        let counts = self.per_user.get_mut(&user).expect("user has seats");
        let n = counts.get_mut(code).expect("user has seats of this type");
        *n = n.checked_sub(q).expect("user count underflow");
        if *n == 0 {
            counts.remove(code);
            if counts.is_empty() {
                self.per_user.remove(&user);
            }
        }
    }
}

/// Sums lines of the same ticket type; refuses empty and oversized holds.
fn merge_lines(items: Vec<Line>) -> Result<Vec<Line>, Error> {
    if items.is_empty() {
        return Err(Error::Invalid("a hold needs at least one line".to_owned()));
    }
    if items.len() > HOLD_LINES_MAX {
        return Err(Error::Invalid("too many lines in one hold".to_owned()));
    }
    let mut merged: BTreeMap<TicketCode, u32> = BTreeMap::new();
    for line in items {
        *merged.entry(line.ticket_type).or_default() += line.quantity.get();
    }
    merged
        .into_iter()
        .map(|(ticket_type, n)| {
            Quantity::new(n)
                .map(|quantity| Line {
                    ticket_type,
                    quantity,
                })
                .map_err(|_| Error::Invalid("quantity too large".to_owned()))
        })
        .collect()
}

/// Seats per ticket type of `lines` (a type may appear on several lines).
fn line_totals(lines: &[Line]) -> BTreeMap<TicketCode, u32> {
    let mut totals = BTreeMap::new();
    for line in lines {
        *totals.entry(line.ticket_type.clone()).or_default() += line.quantity.get();
    }
    totals
}
