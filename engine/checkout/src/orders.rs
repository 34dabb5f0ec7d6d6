//! The orders service: places orders for active holds and turns payment results into sales
//! (`Confirm` in the event's actor), cancellations (release) or automatic refunds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_actors::domain::derived_id;
use holdfast_actors::{EventId, HoldId, HoldRef, Line, OrderId, Quantity, TicketCode, UserId};
use holdfast_bus::{PAYMENTS, TICKETS};
use holdfast_persistence::{CheckoutTx, OrderRow, OutboxRecord};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::api::{CheckoutError, OrderView, RefundBy};
use crate::decide::{self, HoldUse, RefundDecision, Seats, Transition};
use crate::error::Error;
use crate::events::{Envelope, Item, SagaEvent, SeatCount};
use crate::inventory::Inventory;
use crate::model::{OrderStatus, ReadStatus};
use crate::order::Order;
use crate::runner::Consumer;
use crate::service::Ctx;

const CONSUMER: &str = "orders";
/// Orders listed per `GET /v1/orders`.
const LIST_MAX: u32 = 100;
/// While `POST /v1/orders` waits for its payment URL, it reads the order again after this,
/// then at doubling intervals up to [`POLL_MAX`], besides being woken by this node's consumer.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(200);

pub(crate) struct Orders {
    ctx: Ctx,
    inventory: Arc<dyn Inventory>,
    writer: OrderWriter,
    /// `POST /v1/orders` requests waiting for their payment URL, by order.
    waiting: std::sync::Mutex<std::collections::HashMap<Uuid, Arc<Notify>>>,
    payment_url_wait: Duration,
    /// The payments service's longest payment window (it never outlasts the hold).
    payment_window: Duration,
}

fn lines(items: &[Item]) -> Result<Vec<Line>, Error> {
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

/// The id of the hold that re-reserves a paid order's seats: derived from the order, so a
/// redelivered payment finds the same hold.
fn rereserve_hold_id(order: Uuid) -> HoldId {
    HoldId(derived_id("rereserve", &order.to_string()))
}

/// New orders placed at the same time share one transaction (group commit), as holds share
/// one journal commit: a task takes what is waiting, inserts every order with its first event,
/// commits once and answers each. A batch that fails is written again order by order, so one
/// order's failure is its own.
struct OrderWriter {
    orders: mpsc::Sender<NewOrder>,
}

struct NewOrder {
    row: OrderRow,
    first: OutboxRecord,
    /// Whether the order was stored (false: the hold has an order already).
    done: oneshot::Sender<Result<bool, holdfast_persistence::Error>>,
}

/// Orders one transaction takes at most.
const WRITE_BATCH_MAX: usize = 256;

impl OrderWriter {
    fn start(ctx: Ctx) -> Self {
        let (orders, waiting) = mpsc::channel(WRITE_BATCH_MAX * 4);
        tokio::spawn(write_orders(ctx, waiting));
        Self { orders }
    }

    async fn insert(&self, row: OrderRow, first: OutboxRecord) -> Result<bool, CheckoutError> {
        let (done, answer) = oneshot::channel();
        let gone = || CheckoutError::NotServedHere("orders");
        self.orders
            .send(NewOrder { row, first, done })
            .await
            .map_err(|_| gone())?;
        Ok(answer.await.map_err(|_| gone())??)
    }
}

/// Runs until every [`OrderWriter`] sender is gone.
async fn write_orders(ctx: Ctx, mut waiting: mpsc::Receiver<NewOrder>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH_MAX);
    while waiting.recv_many(&mut batch, WRITE_BATCH_MAX).await > 0 {
        metrics::histogram!("holdfast_orders_group_commit_events").record(batch.len() as f64);
        match write(&ctx, &batch).await {
            Ok(stored) => {
                for (order, stored) in batch.drain(..).zip(stored) {
                    let _ = order.done.send(Ok(stored));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(order) = batch.pop() {
                    let _ = order.done.send(Err(e));
                }
            }
            Err(e) => {
                tracing::debug!(orders = batch.len(), error = %e, "a batch of new orders failed; writing them one by one");
                for order in batch.drain(..) {
                    let stored = write(&ctx, std::slice::from_ref(&order))
                        .await
                        .map(|s| s.first().copied().unwrap_or(false));
                    let _ = order.done.send(stored);
                }
            }
        }
        ctx.relay.notify_one();
    }
}

/// Inserts `orders` with their first events in one transaction; which were stored.
async fn write(ctx: &Ctx, orders: &[NewOrder]) -> Result<Vec<bool>, holdfast_persistence::Error> {
    let mut tx = ctx.store.checkout_tx().await?;
    let mut stored = Vec::with_capacity(orders.len());
    let mut firsts = Vec::with_capacity(orders.len());
    for order in orders {
        let inserted = tx.insert_order(&order.row).await?;
        if inserted {
            firsts.push(order.first.clone());
        }
        stored.push(inserted);
    }
    tx.outbox(&firsts).await?;
    tx.commit().await?;
    Ok(stored)
}

/// Where a paid order's seats are: its hold confirmed, or (the hold had ended) a new hold
/// derived from the order confirmed at once, or gone.
pub(crate) async fn sell(inventory: &dyn Inventory, order: &Order) -> anyhow::Result<Seats> {
    if decide::confirmed(inventory.confirm(order.hold, order.id).await)? {
        return Ok(Seats::Sold);
    }
    let again = HoldRef {
        event_id: order.hold.event_id,
        hold_id: rereserve_hold_id(order.id.0),
    };
    let held = inventory
        .hold(again, order.user, lines(&order.items)?)
        .await;
    if !decide::reheld(held)? {
        return Ok(Seats::Gone);
    }
    if decide::reconfirmed(inventory.confirm(again, order.id).await)? {
        Ok(Seats::SoldAgain)
    } else {
        Ok(Seats::Gone)
    }
}

impl Orders {
    pub(crate) fn new(
        ctx: Ctx,
        inventory: Arc<dyn Inventory>,
        payment_url_wait: Duration,
        payment_window: Duration,
    ) -> Self {
        Self {
            writer: OrderWriter::start(ctx.clone()),
            ctx,
            inventory,
            waiting: std::sync::Mutex::default(),
            payment_url_wait,
            payment_window,
        }
    }

    /// The order as it reads now (see [`decide::read_status`]).
    fn view_now(&self, order: &Order) -> OrderView {
        let window_ms = i64::try_from(self.payment_window.as_millis()).unwrap_or(i64::MAX);
        // The payments service opens the window when it hears of the order, never past the hold.
        let window_ends_at =
            decide::window_ends_at(order.created_at, order.hold_expires_at, window_ms);
        order.view(decide::read_status(
            order.status,
            order.hold_expires_at,
            window_ends_at,
            self.ctx.now_ms(),
        ))
    }

    fn row_view(&self, row: &holdfast_persistence::OrderRow) -> Result<OrderView, CheckoutError> {
        Ok(self.view_now(&Order::from_row(row)?))
    }

    /// `POST /v1/orders`: one order per hold; the order and `OrderCreated` commit together.
    pub(crate) async fn create(
        &self,
        user: UserId,
        hold: HoldRef,
        asked: OrderId,
    ) -> Result<(OrderView, bool), CheckoutError> {
        let store = &self.ctx.store;
        // An active hold is ordered below, where a second order for it finds the first at its
        // insert; any other hold may have an order already, which is the answer then.
        let held = match self.inventory.hold_of(hold).await {
            Ok(held) => held,
            Err(crate::inventory::InventoryError::EventNotFound) => None,
            Err(e) => return Err(e.into()),
        };
        let now = self.ctx.now_ms();
        let hold_use = match &held {
            Some(h) => decide::use_hold(h, user, now),
            None => Err(CheckoutError::HoldNotFound),
        };
        if !matches!(hold_use, Ok(HoldUse::New))
            && let Some(existing) = store.order_by_hold(&hold.to_string()).await?
        {
            return if existing.user_id == user.0 {
                Ok((self.row_view(&existing)?, false))
            } else {
                Err(CheckoutError::HoldNotFound)
            };
        }
        let hold_use = hold_use?;
        let Some(held) = held else {
            return Err(CheckoutError::HoldNotFound);
        };
        let terms = self
            .inventory
            .terms_at(hold.event_id, held.placed_at.as_millis())
            .await?
            .ok_or(CheckoutError::HoldNotFound)?;
        let priced = decide::price(&held.items, &terms.prices)?;
        let order_id = decide::order_id(hold_use, priced.total, asked)?;
        // The token is the authority; an account row (for the e-mail and phone the buyer is
        // told things at) may be missing, e.g. for tokens minted by the load harness.
        let (email, phone) = store
            .user_by_id(user.0)
            .await?
            .map(|u| (u.email, u.phone))
            .unwrap_or_default();
        let order = Order {
            id: order_id,
            user,
            email,
            phone,
            hold,
            status: OrderStatus::PendingPayment,
            total: priced.total,
            items: priced.items,
            hold_expires_at: held.expires_at.as_millis(),
            payment_url: None,
            note: None,
            created_at: now,
            updated_at: now,
        };
        if order.total.is_zero() {
            return self.create_free(order).await;
        }
        let created = Envelope::new(
            order.id.0,
            now,
            SagaEvent::OrderCreated {
                phone: order.phone.clone(),
                user_id: user.0,
                email: order.email.clone(),
                event_id: hold.event_id.0,
                hold_id: hold.to_string(),
                amount: order.total.amount,
                currency: order.total.currency.to_string(),
                hold_expires_at: order.hold_expires_at,
                items: order.items.clone(),
            },
        );
        if let Some(existing) = self.insert_new(&order, &created).await? {
            return Ok(existing);
        }
        tracing::info!(order = %order.id.0, user = %user.0, event = %hold.event_id.0, hold = %hold.hold_id.0, total = %order.total, "order created");
        Ok((self.wait_for_payment_url(order).await?, true))
    }

    /// Stores a new order and its first event together; when a concurrent request for the
    /// same hold won, its answer instead.
    async fn insert_new(
        &self,
        order: &Order,
        first: &Envelope,
    ) -> Result<Option<(OrderView, bool)>, CheckoutError> {
        let store = &self.ctx.store;
        if !self.writer.insert(order.to_row(), first.record()).await? {
            return match store.order_by_hold(&order.hold.to_string()).await? {
                Some(existing) if existing.user_id == order.user.0 => {
                    Ok(Some((self.row_view(&existing)?, false)))
                }
                _ => Err(CheckoutError::HoldNotFound),
            };
        }
        metrics::counter!("holdfast_orders_created_total").increment(1);
        Ok(None)
    }

    /// A free order (every seat priced 0) has nothing to pay: its hold is confirmed in the
    /// event's actor at once, then the order is stored `confirmed` with `OrderConfirmed`, on
    /// which the tickets service issues the tickets as after a payment. The payments service
    /// never hears of it. A crash between the two steps leaves a confirmed hold without an
    /// order; the next `POST /v1/orders` for that hold completes it under the same order id.
    async fn create_free(&self, mut order: Order) -> Result<(OrderView, bool), CheckoutError> {
        if !decide::confirmed(self.inventory.confirm(order.hold, order.id).await)? {
            // A concurrent request confirmed it first: complete the order it confirmed.
            match self.inventory.hold_of(order.hold).await? {
                Some(h) if h.user == order.user => match decide::use_hold(&h, order.user, 0)? {
                    HoldUse::CompleteFree(id) => order.id = id,
                    HoldUse::New => {
                        return Err(CheckoutError::HoldNotActive {
                            status: h.status.as_str().to_owned(),
                        });
                    }
                },
                _ => return Err(CheckoutError::HoldNotFound),
            }
        }
        order.status = OrderStatus::Confirmed;
        let confirmed = Envelope::new(
            order.id.0,
            order.created_at,
            decide::order_confirmed(&order, false),
        );
        if let Some(existing) = self.insert_new(&order, &confirmed).await? {
            return Ok(existing);
        }
        metrics::counter!("holdfast_orders_free_total").increment(1);
        tracing::info!(order = %order.id.0, user = %order.user.0, event = %order.hold.event_id.0, "free order created and confirmed");
        Ok((order.view(ReadStatus::Confirmed), true))
    }

    /// The order once the payment service has created its payment page, or as it is after
    /// `payment_url_wait` (the URL then appears on `GET /v1/orders/{id}`).
    async fn wait_for_payment_url(&self, order: Order) -> Result<OrderView, CheckoutError> {
        let id = order.id;
        let deadline = tokio::time::Instant::now() + self.payment_url_wait;
        let ready = Arc::clone(
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(id.0)
                .or_default(),
        );
        let mut latest = order;
        let mut poll = POLL_FIRST;
        // Just stored: no URL yet, so the first read waits. A wake that comes before the wait
        // leaves a permit: it is not lost.
        loop {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // The wake comes from this node's orders consumer; in a cluster another node's
            // consumer may record the URL (Kafka gives each node its partitions), and nothing
            // here hears of it: the row is read again at growing intervals, too.
            let next = (tokio::time::Instant::now() + poll).min(deadline);
            let _ = tokio::time::timeout_at(next, ready.notified()).await;
            poll = (poll * 2).min(POLL_MAX);
            if let Ok(Some(row)) = self.ctx.store.order(id.0).await {
                latest = Order::from_row(&row)?;
            }
            if latest.payment_url.is_some() || latest.status != OrderStatus::PendingPayment {
                break;
            }
        }
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id.0);
        Ok(self.view_now(&latest))
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
        match self.ctx.store.order(id.0).await? {
            Some(row) => Ok(Some(self.row_view(&row)?)),
            None => Ok(None),
        }
    }

    pub(crate) async fn of_user(&self, user: UserId) -> Result<Vec<OrderView>, CheckoutError> {
        let rows = self.ctx.store.orders_of_user(user.0, LIST_MAX).await?;
        rows.iter().map(|row| self.row_view(row)).collect()
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
            .await?
            .ok_or(CheckoutError::OrderNotFound)?;
        let order = Order::from_row(&row)?;
        let starts_at_ms = match by {
            RefundBy::Organizer => None,
            RefundBy::Buyer => self
                .inventory
                .terms(order.hold.event_id)
                .await?
                .map(|t| t.starts_at_ms),
        };
        match decide::decide_refund(order.status, by, self.ctx.now_ms(), starts_at_ms)? {
            RefundDecision::AlreadyDone => Ok(Some(self.view_now(&order))),
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
        let mut tx = self.ctx.store.checkout_tx().await?;
        let row = tx.order(id.0).await?.ok_or(CheckoutError::OrderNotFound)?;
        let order = Order::from_row(&row)?;
        let Some(next) = decide::on_refund(&order, reason)? else {
            return Ok(self.view_now(&order));
        };
        if let Some(by_buyer) = void_tickets {
            crate::tickets::Tickets::void_in(&mut tx, id, by_buyer).await?;
        }
        let order = next.applied_to(&order, now);
        tx.update_order(&order.to_row()).await?;
        tx.outbox(&[Envelope::new(id.0, now, next.event).record()])
            .await?;
        tx.commit().await?;
        self.ctx.relay.notify_one();
        tracing::info!(order = %id.0, total = %order.total, note = order.note.as_deref().unwrap_or(""), "order refunded");
        Ok(self.view_now(&order))
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
        let returned = self
            .inventory
            .return_stock_except(EventId(row.event_id), OrderId(row.id), lines(&keep)?)
            .await;
        Ok(decide::returned(returned)?)
    }

    async fn payment_requested(
        &self,
        tx: &mut CheckoutTx,
        env: &Envelope,
        payment_url: &str,
    ) -> anyhow::Result<()> {
        // Recorded before (by this node or, over a shared bus, another): whoever waits here is
        // woken all the same after the commit, and may read it now.
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        tx.set_payment_url(env.order_id, payment_url, self.ctx.now_ms())
            .await?;
        Ok(())
    }

    /// Commits `decide(order)` (with the order read again under the transaction) once for
    /// `env`.
    async fn commit_transition(
        &self,
        env: &Envelope,
        decide: impl FnOnce(&Order) -> Option<Transition>,
    ) -> anyhow::Result<()> {
        let now = self.ctx.now_ms();
        let mut tx = self.ctx.store.checkout_tx().await?;
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        let Some(row) = tx.order(env.order_id).await? else {
            return Ok(());
        };
        let order = Order::from_row(&row).map_err(Error::permanent)?;
        let next = decide(&order);
        if let Some(next) = &next {
            tx.update_order(&next.applied_to(&order, now).to_row())
                .await?;
            tx.outbox(&[Envelope::new(order.id.0, now, next.event.clone()).record()])
                .await?;
        }
        tx.commit().await?;
        if let Some(next) = next {
            tracing::info!(order = %order.id.0, status = %next.status, note = next.note.as_deref().unwrap_or(""), "order {}", next.status);
        }
        self.ctx.relay.notify_one();
        self.wake(env.order_id);
        Ok(())
    }

    async fn pending(&self, env: &Envelope) -> anyhow::Result<Option<Order>> {
        let Some(row) = self.ctx.store.order(env.order_id).await? else {
            tracing::warn!(order = %env.order_id, "a payment result for an unknown order");
            return Ok(None);
        };
        let order = Order::from_row(&row).map_err(Error::permanent)?;
        Ok((order.status == OrderStatus::PendingPayment).then_some(order))
    }

    async fn payment_succeeded(&self, env: &Envelope) -> anyhow::Result<()> {
        let Some(order) = self.pending(env).await? else {
            return Ok(());
        };
        let seats = sell(self.inventory.as_ref(), &order).await?;
        if seats == Seats::Gone {
            metrics::counter!("holdfast_orders_auto_refunded_total").increment(1);
        }
        self.commit_transition(env, |order| decide::on_paid(order, seats))
            .await
    }

    async fn payment_failed(&self, env: &Envelope, reason: &str) -> anyhow::Result<()> {
        let Some(order) = self.pending(env).await? else {
            return Ok(());
        };
        decide::released(self.inventory.release(order.hold).await)?;
        self.commit_transition(env, |order| decide::on_payment_failed(order, reason))
            .await
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

    fn in_tx(&self, env: &Envelope) -> bool {
        matches!(env.event, SagaEvent::PaymentRequested { .. })
    }

    async fn handle_in(&self, tx: &mut CheckoutTx, env: &Envelope) -> Result<(), Error> {
        match &env.event {
            SagaEvent::PaymentRequested { payment_url, .. } => self
                .payment_requested(tx, env, payment_url)
                .await
                .map_err(Error::from),
            _ => Ok(()),
        }
    }

    fn committed(&self, env: &Envelope) {
        self.wake(env.order_id);
    }

    /// The events that change the inventory first, then the order.
    async fn handle(&self, env: &Envelope) -> Result<(), Error> {
        let handled: anyhow::Result<()> = match &env.event {
            SagaEvent::PaymentSucceeded { .. } => self.payment_succeeded(env).await,
            SagaEvent::PaymentFailed { reason, .. } => self.payment_failed(env, reason).await,
            SagaEvent::TicketsVoided { admitted } => self.tickets_voided(env, admitted).await,
            _ => Ok(()),
        };
        handled.map_err(Error::from)
    }
}
