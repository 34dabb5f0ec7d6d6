//! The orders service: places orders for active holds and turns payment results into sales
//! (`Confirm` in the event's actor), cancellations (release) or automatic refunds.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_actors::domain::derived_id;
use holdfast_actors::{EventId, HoldId, HoldRef, Line, OrderId, Quantity, TicketCode, UserId};
use holdfast_bus::{PAYMENTS, TICKETS};
use holdfast_persistence::{CheckoutTx, OrderRow, OutboxRecord, RefundRow};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::api::{CheckoutError, OrderView, RefundBy, RefundView};
use crate::decide::{self, HoldUse, RefundDecision, RefundTerms, Seats, Transition};
use crate::error::Error;
use crate::events::{Envelope, Item, OrderAbout, SagaEvent, SeatCount};
use crate::inventory::Inventory;
use crate::messages::Language;
use crate::model::{Currency, Money, OrderStatus, ReadStatus, RefundStatus};
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

fn refund_ticket_ids(row: &RefundRow) -> Result<Vec<Uuid>, CheckoutError> {
    serde_json::from_str(&row.ticket_ids)
        .map_err(|e| CheckoutError::Corrupt(format!("refund {} has bad ticket ids: {e}", row.id)))
}

fn refund_view(row: &RefundRow) -> Result<RefundView, CheckoutError> {
    let corrupt = |e: &dyn std::fmt::Display| {
        CheckoutError::Corrupt(format!("refund {} is unreadable: {e}", row.id))
    };
    Ok(RefundView {
        id: row.id,
        order_id: OrderId(row.order_id),
        amount: Money::new(
            row.amount,
            Currency::parse(&row.currency).map_err(|e| corrupt(&e))?,
        ),
        fee: row.fee,
        status: RefundStatus::parse(&row.status).map_err(|e| corrupt(&e))?,
        ticket_ids: refund_ticket_ids(row)?,
        reason: row.reason.clone(),
        by_organizer: row.by_organizer,
        note: row.note.clone(),
        created_at_ms: row.created_at,
        updated_at_ms: row.updated_at,
    })
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
        let (email, phone, language) = store
            .user_by_id(user.0)
            .await?
            .map(|u| {
                let language = Language::parse(&u.language).unwrap_or_default();
                (u.email, u.phone, language)
            })
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
        let about = OrderAbout {
            event_name: terms.name.clone(),
            venue: terms.venue.clone(),
            starts_at_ms: terms.starts_at_ms,
            time_zone: terms.time_zone.clone(),
            language,
            ticket_types: terms.ticket_type_names.clone(),
        };
        if order.total.is_zero() {
            return self.create_free(order, about).await;
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
                about: Some(about),
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
    async fn create_free(
        &self,
        mut order: Order,
        about: OrderAbout,
    ) -> Result<(OrderView, bool), CheckoutError> {
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
        // No OrderCreated goes out for a free order: its confirmation says what it is about.
        let mut event = decide::order_confirmed(&order, false);
        if let SagaEvent::OrderConfirmed { about: free, .. } = &mut event {
            *free = Some(about);
        }
        let confirmed = Envelope::new(order.id.0, order.created_at, event);
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

    /// The event's terms a refund by `by` is judged by (the organizer's need none).
    async fn refund_terms(
        &self,
        order: &Order,
        by: RefundBy,
    ) -> Result<RefundTerms, CheckoutError> {
        if by == RefundBy::Organizer {
            return Ok(RefundTerms {
                starts_at_ms: None,
                policy: None,
            });
        }
        let terms = self.inventory.terms(order.hold.event_id).await?;
        Ok(RefundTerms {
            starts_at_ms: terms.as_ref().map(|t| t.starts_at_ms),
            policy: terms.and_then(|t| t.refund_policy),
        })
    }

    /// `POST /v1/orders/{id}/refund`: decides the refund of `asked` (empty: every ticket left)
    /// under the order's row lock and commits, in one transaction, the refund (`processing`,
    /// or `refunded` when nothing is to be paid back), the order's next status and
    /// `OrderRefunded`. `void_tickets` (the tickets service runs here; `Some(by the buyer)`)
    /// voids the refunded tickets in the same transaction, refusing the buyer an admitted
    /// one, so a refund is never half done. The seats go back on sale when the tickets
    /// service answers with `TicketsVoided`; the money when the payments service hears of it.
    /// Asking again once every ticket is refunded answers the last refund.
    pub(crate) async fn refund(
        &self,
        id: OrderId,
        reason: String,
        by: RefundBy,
        asked: &[Uuid],
        void_tickets: Option<bool>,
    ) -> Result<RefundView, CheckoutError> {
        let row = self
            .ctx
            .store
            .order(id.0)
            .await?
            .ok_or(CheckoutError::OrderNotFound)?;
        let terms = self.refund_terms(&Order::from_row(&row)?, by).await?;
        let now = self.ctx.now_ms();
        let mut tx = self.ctx.store.checkout_tx().await?;
        let row = tx.order(id.0).await?.ok_or(CheckoutError::OrderNotFound)?;
        let order = Order::from_row(&row)?;
        let earlier_rows = tx.refunds_of_order(id.0).await?;
        let earlier = earlier_rows
            .iter()
            .map(refund_ticket_ids)
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let plan = match decide::decide_refund(&order, &earlier, asked, by, terms, now)? {
            RefundDecision::AlreadyDone => {
                return match earlier_rows.last() {
                    Some(last) => refund_view(last),
                    None => Err(CheckoutError::NotRefundable {
                        status: order.status.as_str().to_owned(),
                    }),
                };
            }
            RefundDecision::Refund(plan) => plan,
        };
        if let Some(by_buyer) = void_tickets {
            crate::tickets::Tickets::void_in(&mut tx, id, by_buyer, &plan.ticket_ids).await?;
        }
        let refund_id = Uuid::now_v7();
        let refund = RefundRow {
            id: refund_id,
            order_id: id.0,
            amount: plan.amount,
            fee: plan.fee,
            currency: order.total.currency.to_string(),
            ticket_ids: serde_json::to_string(&plan.ticket_ids).expect("ids serialise"),
            reason: reason.clone(),
            by_organizer: by == RefundBy::Organizer,
            status: plan.status.as_str().to_owned(),
            note: None,
            created_at: now,
            updated_at: now,
        };
        tx.insert_refund(&refund).await?;
        let next = decide::on_refund(&order, refund_id, &plan, reason);
        let order = next.applied_to(&order, now);
        tx.update_order(&order.to_row()).await?;
        tx.outbox(&[Envelope::new(id.0, now, next.event).record()])
            .await?;
        tx.commit().await?;
        self.ctx.relay.notify_one();
        metrics::counter!("holdfast_refunds_total", "by" => if by == RefundBy::Buyer { "buyer" } else { "organizer" }).increment(1);
        tracing::info!(order = %id.0, refund = %refund_id, amount = plan.amount, fee = plan.fee, tickets = plan.ticket_ids.len(), status = %order.status, "order refunded");
        refund_view(&refund)
    }

    /// `GET /v1/orders/{id}/refunds`, oldest first.
    pub(crate) async fn refunds(&self, id: OrderId) -> Result<Vec<RefundView>, CheckoutError> {
        let rows = self.ctx.store.refunds_of_order(id.0).await?;
        rows.iter().map(refund_view).collect()
    }

    /// `RefundSettled`: the refund's money went back (or VNPAY kept refusing).
    async fn refund_settled(
        &self,
        tx: &mut CheckoutTx,
        env: &Envelope,
        refund_id: Uuid,
        refunded: bool,
        message: Option<&str>,
    ) -> anyhow::Result<()> {
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        let status = if refunded {
            RefundStatus::Refunded
        } else {
            RefundStatus::Failed
        };
        if tx
            .settle_refund(refund_id, status.as_str(), message, self.ctx.now_ms())
            .await?
        {
            tracing::info!(order = %env.order_id, refund = %refund_id, status = %status, "refund settled");
        }
        Ok(())
    }

    /// `TicketsVoided`: a refunded order's seats go back on sale, except `kept` (those whose
    /// tickets still admit, or were used at the door). Idempotent in the inventory (it keeps
    /// at most what the order holds), and `kept` only shrinks as refunds void more tickets, so
    /// a redelivered or late answer of an earlier refund returns nothing twice.
    async fn tickets_voided(&self, env: &Envelope, kept: &[SeatCount]) -> anyhow::Result<()> {
        let Some(row) = self.ctx.store.order(env.order_id).await? else {
            return Ok(());
        };
        let keep = kept
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
            if let SagaEvent::OrderRefunded {
                refund_id: Some(refund_id),
                amount,
                reason,
                ..
            } = &next.event
            {
                // An automatic refund (paid after the seats were gone): the buyer sees it too.
                tx.insert_refund(&RefundRow {
                    id: *refund_id,
                    order_id: order.id.0,
                    amount: *amount,
                    fee: 0,
                    currency: order.total.currency.to_string(),
                    ticket_ids: "[]".to_owned(),
                    reason: reason.clone(),
                    by_organizer: false,
                    status: if *amount > 0 {
                        RefundStatus::Processing
                    } else {
                        RefundStatus::Refunded
                    }
                    .as_str()
                    .to_owned(),
                    note: None,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            }
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
        matches!(
            env.event,
            SagaEvent::PaymentRequested { .. } | SagaEvent::RefundSettled { .. }
        )
    }

    async fn handle_in(&self, tx: &mut CheckoutTx, env: &Envelope) -> Result<(), Error> {
        match &env.event {
            SagaEvent::PaymentRequested { payment_url, .. } => self
                .payment_requested(tx, env, payment_url)
                .await
                .map_err(Error::from),
            SagaEvent::RefundSettled {
                refund_id,
                refunded,
                message,
                ..
            } => self
                .refund_settled(tx, env, *refund_id, *refunded, message.as_deref())
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
            SagaEvent::TicketsVoided { admitted, kept } => {
                self.tickets_voided(env, kept.as_deref().unwrap_or(admitted))
                    .await
            }
            _ => Ok(()),
        };
        handled.map_err(Error::from)
    }
}
