//! The orders service: places orders for active holds and turns payment results into sales
//! (`Confirm` in the event's actor), cancellations (release) or automatic refunds.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use holdfast_actors::inventory::{self, HoldStatus};
use holdfast_actors::{EventId, HoldId, HoldRef, Line, OrderId, Quantity, TicketCode, UserId};
use holdfast_bus::{PAYMENTS, TICKETS};
use holdfast_gateway::backend::{Backend, BackendError};
use holdfast_gateway::checkout::{CheckoutError, OrderLine, OrderView, RefundBy};
use holdfast_persistence::OrderRow;
use tokio::sync::Notify;
use uuid::Uuid;

use super::error::Error;
use super::events::{Envelope, Item, SagaEvent, SeatCount};
use super::runner::Consumer;
use super::service::{Ctx, store_error};
use crate::backend::NodeBackend;

pub const PENDING: &str = "pending_payment";
pub const CONFIRMED: &str = "confirmed";
pub const CANCELLED: &str = "cancelled";
pub const REFUNDED: &str = "refunded";
/// Read-only: a pending order whose hold and payment window have both passed. It is never
/// stored; a late payment still settles the stored `pending_payment` order (re-reserve or
/// refund), after which it reads as what it became.
pub const EXPIRED: &str = "expired";
const EXPIRED_NOTE: &str = "the hold and the payment window ended before the payment arrived";

const CONSUMER: &str = "orders";
/// Orders listed per `GET /v1/orders`.
const LIST_MAX: u32 = 100;

pub(crate) struct Orders {
    ctx: Ctx,
    node: Arc<NodeBackend>,
    /// `POST /v1/orders` requests waiting for their payment URL, by order.
    waiting: std::sync::Mutex<std::collections::HashMap<Uuid, Arc<Notify>>>,
    payment_url_wait: Duration,
    /// The payments service's longest payment window (it never outlasts the hold).
    payment_window: Duration,
}

/// What a payment turned into.
enum Outcome {
    Confirmed { rereserved: bool },
    Refunded,
}

/// What an order reads as at `now_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadStatus {
    /// As stored.
    Stored,
    /// Pending, but the hold and the payment window have both ended: nothing can be paid now.
    Expired,
}

/// The status to show for an order stored as `stored`, whose hold ends at `hold_expires_at_ms`
/// and payment window at `window_ends_at_ms`, read at `now_ms`. Both ends are exclusive, as
/// the inventory's: at `expires_at` a hold is over.
fn read_status(
    stored: &str,
    hold_expires_at_ms: i64,
    window_ends_at_ms: i64,
    now_ms: i64,
) -> ReadStatus {
    if stored == PENDING && now_ms >= hold_expires_at_ms && now_ms >= window_ends_at_ms {
        ReadStatus::Expired
    } else {
        ReadStatus::Stored
    }
}

pub(crate) fn view(row: &OrderRow) -> Result<OrderView, CheckoutError> {
    let corrupt = |what: &str| {
        CheckoutError::Backend(BackendError::Internal(format!(
            "order {} has an invalid {what}",
            row.id
        )))
    };
    let items: Vec<Item> = serde_json::from_str(&row.items).map_err(|_| corrupt("item list"))?;
    Ok(OrderView {
        id: OrderId(row.id),
        user: UserId(row.user_id),
        hold: row.hold_id.parse().map_err(|_| corrupt("hold id"))?,
        status: row.status.clone(),
        amount: row.amount,
        currency: row.currency.clone(),
        items: items
            .into_iter()
            .map(|i| OrderLine {
                ticket_type: i.ticket_type,
                quantity: i.quantity,
                price: i.price,
            })
            .collect(),
        payment_url: row.payment_url.clone(),
        note: row.note.clone(),
        created_at_ms: row.created_at,
    })
}

fn lines(items: &[Item]) -> anyhow::Result<Vec<Line>> {
    items
        .iter()
        .map(|i| {
            Ok(Line {
                ticket_type: TicketCode::parse(&i.ticket_type).map_err(|e| {
                    Error::permanent(format!("ticket type {:?}: {e}", i.ticket_type))
                })?,
                quantity: Quantity::new(i.quantity)
                    .map_err(|e| Error::permanent(format!("quantity {}: {e}", i.quantity)))?,
            })
        })
        .collect()
}

/// What a refund request turns into.
#[derive(Debug, PartialEq, Eq)]
enum RefundDecision {
    Refund,
    /// Refunded before: the same answer again.
    AlreadyDone,
}

/// Whether `by` may refund an order in `status` at `now_ms`, for an event starting at
/// `starts_at_ms` (unknown: no limit). Buyers refund only before the event starts, until
/// events carry refund policies; the organizer and admins any time.
fn decide_refund(
    status: &str,
    by: RefundBy,
    now_ms: i64,
    starts_at_ms: Option<i64>,
) -> Result<RefundDecision, CheckoutError> {
    match status {
        CONFIRMED => {}
        REFUNDED => return Ok(RefundDecision::AlreadyDone),
        other => {
            return Err(CheckoutError::NotRefundable {
                status: other.to_owned(),
            });
        }
    }
    if by == RefundBy::Buyer && starts_at_ms.is_some_and(|starts| now_ms >= starts) {
        return Err(CheckoutError::RefundNotAllowed(
            "the event has started: ask the organizer for a refund".to_owned(),
        ));
    }
    Ok(RefundDecision::Refund)
}

/// The id of the hold that re-reserves a paid order's seats: derived from the order, so a
/// redelivered payment finds the same hold.
fn rereserve_hold_id(order: Uuid) -> HoldId {
    HoldId(holdfast_gateway::idempotency::derived_id(
        "rereserve",
        &order.to_string(),
    ))
}

impl Orders {
    pub(crate) fn new(
        ctx: Ctx,
        node: Arc<NodeBackend>,
        payment_url_wait: Duration,
        payment_window: Duration,
    ) -> Self {
        Self {
            ctx,
            node,
            waiting: std::sync::Mutex::default(),
            payment_url_wait,
            payment_window,
        }
    }

    /// The order as it reads now (see [`read_status`]).
    fn view_now(&self, row: &OrderRow) -> Result<OrderView, CheckoutError> {
        let mut view = view(row)?;
        let window_ms = i64::try_from(self.payment_window.as_millis()).unwrap_or(i64::MAX);
        // The payments service opens the window when it hears of the order, never past the hold.
        let window_ends_at = row
            .hold_expires_at
            .min(row.created_at.saturating_add(window_ms));
        if read_status(
            &row.status,
            row.hold_expires_at,
            window_ends_at,
            self.ctx.now_ms(),
        ) == ReadStatus::Expired
        {
            view.status = EXPIRED.to_owned();
            view.note = Some(EXPIRED_NOTE.to_owned());
        }
        Ok(view)
    }

    /// `POST /v1/orders`: one order per hold; the order and `OrderCreated` commit together.
    pub(crate) async fn create(
        &self,
        user: UserId,
        hold: HoldRef,
        order_id: OrderId,
    ) -> Result<(OrderView, bool), CheckoutError> {
        let store = &self.ctx.store;
        if let Some(existing) = store
            .order_by_hold(&hold.to_string())
            .await
            .map_err(store_error)?
        {
            return if existing.user_id == user.0 {
                Ok((self.view_now(&existing)?, false))
            } else {
                Err(CheckoutError::HoldNotFound)
            };
        }
        let held = match self.node.get_hold(hold).await {
            Ok(Some(h)) if h.user == user => h,
            Ok(_) | Err(BackendError::EventNotFound) => return Err(CheckoutError::HoldNotFound),
            Err(e) => return Err(e.into()),
        };
        let now = self.ctx.now_ms();
        let status = match held.status {
            HoldStatus::Active if held.expires_at.as_millis() <= now => HoldStatus::Expired,
            s => s,
        };
        // A confirmed hold without an order: a free order whose row a crash lost after its
        // hold was confirmed (see `create_free`); it is completed under the same order id.
        let lost_free_order = match (status, held.order_id) {
            (HoldStatus::Confirmed, Some(id)) => Some(id),
            _ => None,
        };
        if status != HoldStatus::Active && lost_free_order.is_none() {
            return Err(CheckoutError::HoldNotActive {
                status: status.as_str().to_owned(),
            });
        }
        let event = self
            .node
            .event(hold.event_id)
            .await?
            .ok_or(CheckoutError::HoldNotFound)?;
        let mut items = Vec::with_capacity(held.items.len());
        let mut currency: Option<String> = None;
        let mut amount: i64 = 0;
        for line in &held.items {
            let spec = event
                .ticket_types
                .iter()
                .find(|t| t.code == line.ticket_type)
                .ok_or_else(|| {
                    CheckoutError::Invalid(format!(
                        "ticket type {} is not on sale",
                        line.ticket_type.as_str()
                    ))
                })?;
            match &currency {
                Some(c) if *c != spec.currency => {
                    return Err(CheckoutError::Invalid(
                        "the hold mixes currencies; hold each currency separately".to_owned(),
                    ));
                }
                _ => currency = Some(spec.currency.clone()),
            }
            amount = spec
                .price
                .checked_mul(i64::from(line.quantity.get()))
                .and_then(|a| a.checked_add(amount))
                .ok_or_else(|| CheckoutError::Invalid("the order total is too large".to_owned()))?;
            items.push(Item {
                ticket_type: line.ticket_type.as_str().to_owned(),
                quantity: line.quantity.get(),
                price: spec.price,
            });
        }
        let currency = currency.unwrap_or_else(|| "VND".to_owned());
        let order_id = match lost_free_order {
            None => order_id,
            Some(lost) if amount == 0 => lost,
            Some(_) => {
                return Err(CheckoutError::HoldNotActive {
                    status: HoldStatus::Confirmed.as_str().to_owned(),
                });
            }
        };
        // The token is the authority; an account row (for the e-mail and phone the buyer is
        // told things at) may be missing, e.g. for tokens minted by the load harness.
        let (email, phone) = store
            .user_by_id(user.0)
            .await
            .map_err(store_error)?
            .map(|u| (u.email, u.phone))
            .unwrap_or_default();
        let row = OrderRow {
            id: order_id.0,
            user_id: user.0,
            email: email.clone(),
            event_id: hold.event_id.0,
            hold_id: hold.to_string(),
            status: PENDING.to_owned(),
            amount,
            currency: currency.clone(),
            items: serde_json::to_string(&items).expect("items serialise"),
            hold_expires_at: held.expires_at.as_millis(),
            payment_url: None,
            note: None,
            phone: phone.clone(),
            created_at: now,
            updated_at: now,
        };
        if amount == 0 {
            return self.create_free(row, hold, items).await;
        }
        let created = Envelope::new(
            order_id.0,
            now,
            SagaEvent::OrderCreated {
                phone,
                user_id: user.0,
                email,
                event_id: hold.event_id.0,
                hold_id: hold.to_string(),
                amount,
                currency,
                hold_expires_at: row.hold_expires_at,
                items,
            },
        );
        if let Some(existing) = self.insert_new(&row, &created).await? {
            return Ok(existing);
        }
        Ok((self.wait_for_payment_url(order_id, row).await?, true))
    }

    /// Stores a new order and its first event together; when a concurrent request for the
    /// same hold won, its answer instead.
    async fn insert_new(
        &self,
        row: &OrderRow,
        first: &Envelope,
    ) -> Result<Option<(OrderView, bool)>, CheckoutError> {
        let store = &self.ctx.store;
        let mut tx = store.checkout_tx().await.map_err(store_error)?;
        if !tx.insert_order(row).await.map_err(store_error)? {
            drop(tx);
            return match store
                .order_by_hold(&row.hold_id)
                .await
                .map_err(store_error)?
            {
                Some(existing) if existing.user_id == row.user_id => {
                    Ok(Some((self.view_now(&existing)?, false)))
                }
                _ => Err(CheckoutError::HoldNotFound),
            };
        }
        tx.outbox(&[first.record()]).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        self.ctx.relay.notify_one();
        metrics::counter!("holdfast_orders_created_total").increment(1);
        Ok(None)
    }

    /// A free order (every seat priced 0) has nothing to pay: its hold is confirmed in the
    /// event's actor at once, then the order is stored `confirmed` with `OrderConfirmed`, on
    /// which the tickets service issues the tickets as after a payment. The payments service
    /// never hears of it. A crash between the two steps leaves a confirmed hold without an
    /// order; the next `POST /v1/orders` for that hold completes it under the same order id.
    async fn create_free(
        &self,
        mut row: OrderRow,
        hold: HoldRef,
        items: Vec<Item>,
    ) -> Result<(OrderView, bool), CheckoutError> {
        match self.node.confirm(hold, OrderId(row.id)).await {
            Ok(()) => {}
            Err(BackendError::Inventory(inventory::Error::HoldNotActive(status))) => {
                // A concurrent request confirmed it first: complete the order it confirmed.
                match self.node.get_hold(hold).await? {
                    Some(h) if h.status == HoldStatus::Confirmed && h.user.0 == row.user_id => {
                        row.id = h.order_id.map_or(row.id, |id| id.0);
                    }
                    _ => {
                        return Err(CheckoutError::HoldNotActive {
                            status: status.as_str().to_owned(),
                        });
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
        row.status = CONFIRMED.to_owned();
        let confirmed = Envelope::new(row.id, row.created_at, confirmed(&row, items, false));
        if let Some(existing) = self.insert_new(&row, &confirmed).await? {
            return Ok(existing);
        }
        metrics::counter!("holdfast_orders_free_total").increment(1);
        Ok((view(&row)?, true))
    }

    /// The order once the payment service has created its payment page, or as it is after
    /// `payment_url_wait` (the URL then appears on `GET /v1/orders/{id}`).
    async fn wait_for_payment_url(
        &self,
        id: OrderId,
        row: OrderRow,
    ) -> Result<OrderView, CheckoutError> {
        let deadline = tokio::time::Instant::now() + self.payment_url_wait;
        let ready = Arc::clone(
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.0)
                .or_default(),
        );
        let mut latest = row;
        loop {
            // A wake between the read and the wait leaves a permit: it is not lost.
            if let Ok(Some(row)) = self.ctx.store.order(id.0).await {
                latest = row;
            }
            if latest.payment_url.is_some() || latest.status != PENDING {
                break;
            }
            if tokio::time::timeout_at(deadline, ready.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id.0);
        view(&latest)
    }

    /// Wakes the request waiting for this order's payment URL, if there is one.
    fn wake(&self, order: Uuid) {
        if let Some(ready) = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&order)
        {
            ready.notify_one();
        }
    }

    pub(crate) async fn get(&self, id: OrderId) -> Result<Option<OrderView>, CheckoutError> {
        match self.ctx.store.order(id.0).await.map_err(store_error)? {
            Some(row) => Ok(Some(self.view_now(&row)?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn of_user(&self, user: UserId) -> Result<Vec<OrderView>, CheckoutError> {
        let rows = self
            .ctx
            .store
            .orders_of_user(user.0, LIST_MAX)
            .await
            .map_err(store_error)?;
        rows.iter().map(|row| self.view_now(row)).collect()
    }

    /// The first half of `POST /v1/orders/{id}/refund`: whether `by` may refund the order now.
    /// `Some` is an order refunded already (asking again changes nothing).
    pub(crate) async fn refund_check(
        &self,
        id: OrderId,
        by: RefundBy,
    ) -> Result<Option<OrderView>, CheckoutError> {
        let row = self
            .ctx
            .store
            .order(id.0)
            .await
            .map_err(store_error)?
            .ok_or(CheckoutError::OrderNotFound)?;
        let starts_at_ms = match by {
            RefundBy::Organizer => None,
            RefundBy::Buyer => {
                let event = self.node.event(EventId(row.event_id)).await?;
                event.map(|e| crate::backend::millis(e.starts_at))
            }
        };
        match decide_refund(&row.status, by, self.ctx.now_ms(), starts_at_ms)? {
            RefundDecision::AlreadyDone => Ok(Some(view(&row)?)),
            RefundDecision::Refund => Ok(None),
        }
    }

    /// The second half: the order ends `refunded` and `OrderRefunded` goes out. The seats go
    /// back on sale when the tickets service answers with `TicketsVoided` (it knows which
    /// were used at the door). `void_tickets` (the tickets service runs here; `Some(by the
    /// buyer)`) voids the unused tickets in the same transaction, so a refund is never half
    /// done: tickets void and the order refunded, or neither.
    pub(crate) async fn refund(
        &self,
        id: OrderId,
        reason: String,
        void_tickets: Option<bool>,
    ) -> Result<OrderView, CheckoutError> {
        let now = self.ctx.now_ms();
        let mut tx = self.ctx.store.checkout_tx().await.map_err(store_error)?;
        let mut row = tx
            .order(id.0)
            .await
            .map_err(store_error)?
            .ok_or(CheckoutError::OrderNotFound)?;
        match row.status.as_str() {
            CONFIRMED => {}
            REFUNDED => return view(&row),
            other => {
                return Err(CheckoutError::NotRefundable {
                    status: other.to_owned(),
                });
            }
        }
        if let Some(by_buyer) = void_tickets {
            super::tickets::Tickets::void_in(&mut tx, id, by_buyer).await?;
        }
        row.status = REFUNDED.to_owned();
        row.note = Some(format!("refunded: {reason}"));
        row.updated_at = now;
        tx.update_order(&row).await.map_err(store_error)?;
        let refunded = Envelope::new(
            id.0,
            now,
            SagaEvent::OrderRefunded {
                email: row.email.clone(),
                phone: row.phone.clone(),
                amount: row.amount,
                currency: row.currency.clone(),
                reason,
                automatic: false,
            },
        );
        tx.outbox(&[refunded.record()]).await.map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        self.ctx.relay.notify_one();
        view(&row)
    }

    /// `TicketsVoided`: a refunded order's seats go back on sale, except those used at the
    /// door. Idempotent in the inventory, so a redelivery changes nothing.
    async fn tickets_voided(&self, env: &Envelope, admitted: &[SeatCount]) -> anyhow::Result<()> {
        let Some(row) = self.ctx.store.order(env.order_id).await? else {
            return Ok(());
        };
        let keep = admitted
            .iter()
            .map(|s| Item {
                ticket_type: s.ticket_type.clone(),
                quantity: s.quantity,
                price: 0,
            })
            .collect::<Vec<_>>();
        match self
            .node
            .return_stock_except(EventId(row.event_id), OrderId(row.id), lines(&keep)?)
            .await
        {
            // An automatic refund never sold the seats.
            Ok(()) | Err(BackendError::Inventory(inventory::Error::OrderNotFound)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn payment_requested(&self, env: &Envelope, payment_url: &str) -> anyhow::Result<()> {
        let mut tx = self.ctx.store.checkout_tx().await?;
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        if let Some(mut row) = tx.order(env.order_id).await?
            && row.payment_url.is_none()
        {
            row.payment_url = Some(payment_url.to_owned());
            row.updated_at = self.ctx.now_ms();
            tx.update_order(&row).await?;
        }
        tx.commit().await?;
        self.wake(env.order_id);
        Ok(())
    }

    /// Re-reserves a paid order's seats after its hold ended: a new hold (derived from the
    /// order) confirmed at once, or a refund when the seats are gone.
    async fn rereserve(&self, row: &OrderRow) -> anyhow::Result<Outcome> {
        let items: Vec<Item> = serde_json::from_str(&row.items).context("order items")?;
        let hold = HoldRef {
            event_id: holdfast_actors::EventId(row.event_id),
            hold_id: rereserve_hold_id(row.id),
        };
        match self
            .node
            .hold(hold, UserId(row.user_id), lines(&items)?)
            .await
        {
            Ok(_) => {}
            Err(BackendError::Inventory(
                inventory::Error::SoldOut { .. } | inventory::Error::LimitExceeded { .. },
            )) => return Ok(Outcome::Refunded),
            Err(e) => return Err(e.into()),
        }
        match self.node.confirm(hold, OrderId(row.id)).await {
            Ok(()) => Ok(Outcome::Confirmed { rereserved: true }),
            // The new hold ended before the confirm (a tiny TTL): the seats went back.
            Err(BackendError::Inventory(inventory::Error::HoldNotActive(_))) => {
                Ok(Outcome::Refunded)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn payment_succeeded(&self, env: &Envelope) -> anyhow::Result<()> {
        let Some(row) = self.ctx.store.order(env.order_id).await? else {
            tracing::warn!(order = %env.order_id, "payment for an unknown order");
            return Ok(());
        };
        if row.status != PENDING {
            return Ok(());
        }
        let hold: HoldRef = row
            .hold_id
            .parse()
            .map_err(|e| Error::permanent(format!("order hold id {:?}: {e}", row.hold_id)))?;
        let outcome = match self.node.confirm(hold, OrderId(row.id)).await {
            Ok(()) => Outcome::Confirmed { rereserved: false },
            Err(BackendError::Inventory(
                inventory::Error::HoldNotActive(_) | inventory::Error::HoldNotFound,
            )) => self.rereserve(&row).await?,
            Err(e) => return Err(e.into()),
        };
        let now = self.ctx.now_ms();
        let mut tx = self.ctx.store.checkout_tx().await?;
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        let Some(mut row) = tx.order(env.order_id).await? else {
            return Ok(());
        };
        if row.status != PENDING {
            tx.commit().await?;
            return Ok(());
        }
        let items: Vec<Item> = serde_json::from_str(&row.items).context("order items")?;
        let next = match outcome {
            Outcome::Confirmed { rereserved } => {
                row.status = CONFIRMED.to_owned();
                if rereserved {
                    row.note = Some(
                        "your hold had expired when the payment arrived; the seats were \
                         reserved again"
                            .to_owned(),
                    );
                }
                confirmed(&row, items, rereserved)
            }
            Outcome::Refunded => {
                let reason = "the payment arrived after the hold expired and the seats were \
                              sold; the amount is refunded automatically"
                    .to_owned();
                row.status = REFUNDED.to_owned();
                row.note = Some(reason.clone());
                metrics::counter!("holdfast_orders_auto_refunded_total").increment(1);
                SagaEvent::OrderRefunded {
                    email: row.email.clone(),
                    phone: row.phone.clone(),
                    amount: row.amount,
                    currency: row.currency.clone(),
                    reason,
                    automatic: true,
                }
            }
        };
        row.updated_at = now;
        tx.update_order(&row).await?;
        tx.outbox(&[Envelope::new(row.id, now, next).record()])
            .await?;
        tx.commit().await?;
        self.ctx.relay.notify_one();
        self.wake(env.order_id);
        Ok(())
    }

    async fn payment_failed(&self, env: &Envelope, reason: &str) -> anyhow::Result<()> {
        let Some(row) = self.ctx.store.order(env.order_id).await? else {
            return Ok(());
        };
        if row.status != PENDING {
            return Ok(());
        }
        let hold: HoldRef = row
            .hold_id
            .parse()
            .map_err(|e| Error::permanent(format!("order hold id {:?}: {e}", row.hold_id)))?;
        match self.node.release(hold).await {
            Ok(())
            | Err(BackendError::Inventory(
                inventory::Error::HoldNotActive(_) | inventory::Error::HoldNotFound,
            ))
            | Err(BackendError::EventNotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let now = self.ctx.now_ms();
        let mut tx = self.ctx.store.checkout_tx().await?;
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        let Some(mut row) = tx.order(env.order_id).await? else {
            return Ok(());
        };
        if row.status == PENDING {
            row.status = CANCELLED.to_owned();
            row.note = Some(format!("payment not completed: {reason}"));
            row.updated_at = now;
            tx.update_order(&row).await?;
            let cancelled = SagaEvent::OrderCancelled {
                email: row.email.clone(),
                phone: row.phone.clone(),
                reason: reason.to_owned(),
            };
            tx.outbox(&[Envelope::new(row.id, now, cancelled).record()])
                .await?;
        }
        tx.commit().await?;
        self.ctx.relay.notify_one();
        self.wake(env.order_id);
        Ok(())
    }
}

#[async_trait]
impl Consumer for Orders {
    fn group(&self) -> &'static str {
        CONSUMER
    }

    fn topics(&self) -> &'static [&'static str] {
        &[PAYMENTS, TICKETS]
    }

    async fn handle(&self, env: &Envelope) -> Result<(), Error> {
        let handled: anyhow::Result<()> = match &env.event {
            SagaEvent::PaymentRequested { payment_url, .. } => {
                self.payment_requested(env, payment_url).await
            }
            SagaEvent::PaymentSucceeded { .. } => self.payment_succeeded(env).await,
            SagaEvent::PaymentFailed { reason, .. } => self.payment_failed(env, reason).await,
            SagaEvent::TicketsVoided { admitted } => self.tickets_voided(env, admitted).await,
            _ => Ok(()),
        };
        handled.map_err(Error::from)
    }
}

/// `OrderConfirmed` for `row`: what the tickets and notifications services need of it.
fn confirmed(row: &OrderRow, items: Vec<Item>, rereserved: bool) -> SagaEvent {
    SagaEvent::OrderConfirmed {
        phone: row.phone.clone(),
        user_id: row.user_id,
        email: row.email.clone(),
        event_id: row.event_id,
        items,
        rereserved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_order_reads_expired_once_hold_and_window_have_passed() {
        use ReadStatus::{Expired, Stored};
        // (stored status, hold expires, window ends, now, reads)
        let cases: &[(&str, i64, i64, i64, ReadStatus)] = &[
            (PENDING, 1_000, 1_000, 999, Stored),
            (PENDING, 1_000, 1_000, 1_000, Expired),
            (PENDING, 1_000, 600, 800, Stored),
            (PENDING, 1_000, 600, 1_000, Expired),
            // A window that outlasts the hold (never set so, but the rule holds both ends).
            (PENDING, 1_000, 2_000, 1_500, Stored),
            (PENDING, 1_000, 2_000, 2_000, Expired),
            (CONFIRMED, 1_000, 1_000, 5_000, Stored),
            (CANCELLED, 1_000, 1_000, 5_000, Stored),
            (REFUNDED, 1_000, 1_000, 5_000, Stored),
        ];
        for &(status, hold, window, now, reads) in cases {
            assert_eq!(
                read_status(status, hold, window, now),
                reads,
                "{status} hold {hold} window {window} now {now}"
            );
        }
    }

    /// Status, who asks, now, the event's start, and the decision (or the refusal's slug).
    type Case = (
        &'static str,
        RefundBy,
        i64,
        Option<i64>,
        Result<RefundDecision, &'static str>,
    );

    #[test]
    fn who_may_refund_when() {
        let starts = Some(1_000);
        let cases: &[Case] = &[
            (
                CONFIRMED,
                RefundBy::Buyer,
                999,
                starts,
                Ok(RefundDecision::Refund),
            ),
            (
                CONFIRMED,
                RefundBy::Buyer,
                1_000,
                starts,
                Err("refund-not-allowed"),
            ),
            (
                CONFIRMED,
                RefundBy::Organizer,
                5_000,
                starts,
                Ok(RefundDecision::Refund),
            ),
            (
                CONFIRMED,
                RefundBy::Buyer,
                5_000,
                None,
                Ok(RefundDecision::Refund),
            ),
            (
                REFUNDED,
                RefundBy::Buyer,
                5_000,
                starts,
                Ok(RefundDecision::AlreadyDone),
            ),
            (
                PENDING,
                RefundBy::Organizer,
                0,
                starts,
                Err("not-refundable"),
            ),
            (CANCELLED, RefundBy::Buyer, 0, starts, Err("not-refundable")),
        ];
        for (status, by, now, starts_at, expected) in cases {
            let got = decide_refund(status, *by, *now, *starts_at);
            match (got, expected) {
                (Ok(d), Ok(e)) => assert_eq!(&d, e, "{status} {by:?} at {now}"),
                (Err(CheckoutError::RefundNotAllowed(_)), Err("refund-not-allowed"))
                | (Err(CheckoutError::NotRefundable { .. }), Err("not-refundable")) => {}
                (got, expected) => panic!("{status} {by:?} at {now}: {got:?}, not {expected:?}"),
            }
        }
    }
}
