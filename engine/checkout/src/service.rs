//! The saga's services of one node, started by role, and what callers (the engine's adapter to
//! the gateway) ask of them.

use std::sync::Arc;
use std::time::Duration;

use holdfast_actors::actor::Clock;
use holdfast_actors::{EventId, HoldRef, OrderId, UserId};
use holdfast_bus::Bus;
use holdfast_persistence::Store;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::api::{
    Admission, CheckoutError, FailedRefundView, IpnAnswer, OrderView, ParkedView, RefundBy,
    RefundView, ReturnPage, TicketView,
};
use crate::inventory::Inventory;
use crate::notifications::{Notifications, NotifySettings};
use crate::orders::Orders;
use crate::payments::{PaymentSettings, Payments};
use crate::relay;
use crate::runner::{self, Consumer};
use crate::scheduler::{Scheduler, SchedulerSettings};
use crate::tickets::Tickets;

/// Which of the saga's services this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub orders: bool,
    pub payments: bool,
    pub tickets: bool,
    pub notifications: bool,
    /// The scheduled jobs: reminders, sales summaries, retention.
    pub scheduler: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        orders: true,
        payments: true,
        tickets: true,
        notifications: true,
        scheduler: true,
    };

    pub const NONE: Roles = Roles {
        orders: false,
        payments: false,
        tickets: false,
        notifications: false,
        scheduler: false,
    };

    pub fn any(&self) -> bool {
        self.consumes() || self.scheduler
    }

    /// A service that reads the bus and writes the outbox.
    fn consumes(&self) -> bool {
        self.orders || self.payments || self.tickets || self.notifications
    }
}

/// What the services need besides the store and the bus.
#[derive(Clone, Debug)]
pub struct Settings {
    pub roles: Roles,
    pub payments: PaymentSettings,
    pub notify: NotifySettings,
    pub signer: Option<Arc<holdfast_tickets::Signer>>,
    pub verifier: Arc<holdfast_tickets::Verifier>,
    /// How long `POST /v1/orders` waits for the payment URL before answering without it.
    pub payment_url_wait: Duration,
    /// Prefix of consumer group names (the bus prefixes topics itself).
    pub group_prefix: String,
    /// The scheduled jobs (the scheduler role).
    pub scheduler: SchedulerSettings,
    /// Orders a consumer handles at once (PostgreSQL commits them side by side; SQLite has
    /// one writer, so 1 is best there).
    pub consumer_concurrency: usize,
}

/// Shared by the services of a node.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// Wakes the outbox relay after a commit that wrote to the outbox.
    pub relay: Arc<Notify>,
}

impl Ctx {
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now().as_millis()
    }
}

/// The saga's services running on this node.
pub struct CheckoutNode {
    orders: Option<Arc<Orders>>,
    payments: Option<Arc<Payments>>,
    tickets: Option<Arc<Tickets>>,
    /// This node's consumers, for retrying what they parked.
    consumers: Vec<Arc<dyn Consumer>>,
    store: Store,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for CheckoutNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckoutNode")
            .field("orders", &self.orders.is_some())
            .field("payments", &self.payments.is_some())
            .field("tickets", &self.tickets.is_some())
            .finish_non_exhaustive()
    }
}

impl CheckoutNode {
    /// Starts the services `settings.roles` names, their consumers and the outbox relay.
    pub fn start(
        settings: Settings,
        store: Store,
        bus: Arc<dyn Bus>,
        sql_bus: Option<holdfast_bus::SqlBus>,
        inventory: Option<Arc<dyn Inventory>>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let ctx = Ctx {
            store: store.clone(),
            clock,
            relay: Arc::new(Notify::new()),
        };
        let mut consumers: Vec<Arc<dyn Consumer>> = Vec::new();
        let mut tasks = Vec::new();
        let orders = if settings.roles.orders {
            let inventory = inventory.ok_or_else(|| {
                anyhow::anyhow!("the orders role needs the inventory on the same node")
            })?;
            let orders = Arc::new(Orders::new(
                ctx.clone(),
                inventory,
                settings.payment_url_wait,
                settings.payments.window,
            ));
            consumers.push(orders.clone());
            Some(orders)
        } else {
            None
        };
        let payments = if settings.roles.payments {
            let payments = Arc::new(Payments::new(ctx.clone(), settings.payments.clone()));
            consumers.push(payments.clone());
            tasks.push(tokio::spawn(
                Arc::clone(&payments).reconcile(stopped.clone()),
            ));
            tasks.push(tokio::spawn(
                Arc::clone(&payments).refund_loop(stopped.clone()),
            ));
            Some(payments)
        } else {
            None
        };
        let tickets = if settings.roles.tickets {
            let tickets = Arc::new(Tickets::new(
                ctx.clone(),
                settings.signer.clone(),
                Arc::clone(&settings.verifier),
            ));
            consumers.push(tickets.clone());
            Some(tickets)
        } else {
            None
        };
        let notifications = if settings.roles.notifications || settings.roles.scheduler {
            Some(Arc::new(Notifications::new(
                ctx.clone(),
                settings.notify.clone(),
            )?))
        } else {
            None
        };
        if let Some(notifications) = &notifications {
            if settings.roles.notifications {
                consumers.push(notifications.clone());
            }
            // The scheduler's reminders go out through the same outbox and sender.
            tasks.push(tokio::spawn(
                Arc::clone(notifications).send_loop(stopped.clone()),
            ));
        }
        if settings.roles.scheduler {
            consumers.push(Arc::new(crate::scheduler::HoldingsFeed {
                ctx: ctx.clone(),
            }));
        }
        let parking = runner::Parking {
            store: store.clone(),
            clock: Arc::clone(&ctx.clock),
        };
        for consumer in &consumers {
            tasks.push(tokio::spawn(runner::run(
                Arc::clone(&bus),
                Arc::clone(consumer),
                settings.group_prefix.clone(),
                settings.consumer_concurrency,
                parking.clone(),
                stopped.clone(),
            )));
        }
        if settings.roles.scheduler
            && let Some(notifications) = notifications
        {
            let scheduler = Scheduler::new(ctx.clone(), settings.scheduler.clone(), notifications)
                .with_bus(sql_bus);
            tasks.push(tokio::spawn(Arc::new(scheduler).run(stopped.clone())));
        }
        if settings.roles.consumes() {
            tasks.push(tokio::spawn(relay::run(
                store.clone(),
                bus,
                Arc::clone(&ctx.relay),
                stopped,
            )));
        }
        Ok(Self {
            orders,
            payments,
            tickets,
            consumers,
            store,
            tasks: std::sync::Mutex::new(tasks),
            stop,
        })
    }

    /// Stops the consumers, the relay and the background loops.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Whether the orders service runs on this node.
    pub fn serves_orders(&self) -> bool {
        self.orders.is_some()
    }

    fn orders_service(&self) -> Result<&Orders, CheckoutError> {
        self.orders
            .as_deref()
            .ok_or(CheckoutError::NotServedHere("orders"))
    }

    fn payments_service(&self) -> Result<&Payments, CheckoutError> {
        self.payments
            .as_deref()
            .ok_or(CheckoutError::NotServedHere("payments"))
    }

    fn tickets_service(&self) -> Result<&Tickets, CheckoutError> {
        self.tickets
            .as_deref()
            .ok_or(CheckoutError::NotServedHere("tickets"))
    }
}

/// What the gateway asks of the saga (the engine adapts it to the gateway's `Checkout`).
impl CheckoutNode {
    pub async fn create_order(
        &self,
        user: UserId,
        hold: HoldRef,
        order: OrderId,
    ) -> Result<(OrderView, bool), CheckoutError> {
        self.orders_service()?.create(user, hold, order).await
    }

    pub async fn order(&self, id: OrderId) -> Result<Option<OrderView>, CheckoutError> {
        self.orders_service()?.get(id).await
    }

    pub async fn orders(&self, user: UserId) -> Result<Vec<OrderView>, CheckoutError> {
        self.orders_service()?.of_user(user).await
    }

    /// Refunds every ticket left of the order, as `by` may (the event's cancellation calls
    /// this for each confirmed order, as the organizer), and answers the order as it is then.
    /// See [`CheckoutNode::refund_tickets`].
    pub async fn refund(
        &self,
        id: OrderId,
        reason: String,
        by: RefundBy,
    ) -> Result<OrderView, CheckoutError> {
        self.refund_tickets(id, reason, by, &[]).await?;
        self.orders_service()?
            .get(id)
            .await?
            .ok_or(CheckoutError::OrderNotFound)
    }

    /// `POST /v1/orders/{id}/refund`: refunds `ticket_ids` (empty: every ticket left) of the
    /// order, as `by` may. In one transaction (with the tickets service on this node) the
    /// refunded tickets are voided under their row locks, which refuses the buyer an
    /// admitted ticket, and the refund and the order are stored. Run apart, the tickets
    /// service voids on `OrderRefunded` and admitted seats still stay sold, but the buyer's
    /// refund is not refused. The money goes back through VNPAY afterwards (the payments
    /// service); the refund reads `processing` until then.
    pub async fn refund_tickets(
        &self,
        id: OrderId,
        reason: String,
        by: RefundBy,
        ticket_ids: &[uuid::Uuid],
    ) -> Result<RefundView, CheckoutError> {
        let void_tickets = self.tickets.is_some().then_some(by == RefundBy::Buyer);
        self.orders_service()?
            .refund(id, reason, by, ticket_ids, void_tickets)
            .await
    }

    /// Refunds VNPAY kept refusing (`GET /v1/admin/refunds/failed`).
    pub async fn failed_refunds(&self) -> Result<Vec<FailedRefundView>, CheckoutError> {
        self.payments_service()?.failed_refunds().await
    }

    /// Tries a failed refund again (`POST /v1/admin/refunds/{id}/retry`).
    pub async fn retry_refund(&self, id: uuid::Uuid) -> Result<(), CheckoutError> {
        self.payments_service()?.retry_refund(id).await
    }

    /// `GET /v1/orders/{id}/refunds`.
    pub async fn refunds(&self, id: OrderId) -> Result<Vec<RefundView>, CheckoutError> {
        self.orders_service()?.refunds(id).await
    }

    pub async fn tickets(&self, order: OrderId) -> Result<Vec<TicketView>, CheckoutError> {
        self.tickets_service()?.of_order(order).await
    }

    pub async fn ticket(&self, id: uuid::Uuid) -> Result<Option<TicketView>, CheckoutError> {
        self.tickets_service()?.get(id).await
    }

    pub fn qr_png(&self, code: &str) -> Result<Vec<u8>, CheckoutError> {
        holdfast_tickets::qr_png(code).map_err(|e| CheckoutError::Corrupt(e.to_string()))
    }

    pub async fn checkin(&self, code: &str, event: EventId) -> Result<Admission, CheckoutError> {
        self.tickets_service()?.checkin(code, event).await
    }

    pub async fn vnpay_ipn(&self, query: Vec<(String, String)>) -> IpnAnswer {
        match &self.payments {
            Some(payments) => payments.ipn(&query).await,
            None => IpnAnswer {
                rsp_code: "99".to_owned(),
                message: "Unknown error".to_owned(),
            },
        }
    }

    pub async fn parked(&self) -> Result<Vec<ParkedView>, CheckoutError> {
        let rows = self
            .store
            .parked(holdfast_persistence::PARKED_PAGE_MAX)
            .await?;
        Ok(rows.iter().map(parked_view).collect())
    }

    /// Runs the parked message through its consumer's handler once, as the runner would.
    pub async fn retry_parked(&self, id: uuid::Uuid) -> Result<Option<ParkedView>, CheckoutError> {
        let row = self
            .store
            .parked_one(id)
            .await?
            .ok_or(CheckoutError::ParkedNotFound)?;
        let consumer = self
            .consumers
            .iter()
            .find(|c| c.group() == row.group)
            .ok_or(CheckoutError::NotServedHere("parked message's"))?;
        let handled = match crate::Envelope::decode(&row.payload) {
            Ok(envelope) => runner::handle_once(consumer.as_ref(), &self.store, &envelope)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("not a saga event: {e}")),
        };
        match handled {
            Ok(()) => {
                self.store.parked_remove(id).await?;
                tracing::info!(parked = %id, group = %row.group, order = ?row.order_id, "parked saga message handled on retry");
                metrics::counter!("holdfast_saga_parked_resolved_total", "service" => consumer.group()).increment(1);
                Ok(None)
            }
            Err(error) => {
                tracing::warn!(parked = %id, group = %row.group, order = ?row.order_id, %error, "parked saga message failed again");
                if !self.store.parked_failed_again(id, &error).await? {
                    return Err(CheckoutError::ParkedNotFound);
                }
                // What the update wrote; no second read.
                let attempts = row.attempts + 1;
                Ok(Some(parked_view(&holdfast_persistence::ParkedRow {
                    error,
                    attempts,
                    ..row
                })))
            }
        }
    }

    pub async fn discard_parked(&self, id: uuid::Uuid) -> Result<(), CheckoutError> {
        if self.store.parked_remove(id).await? {
            Ok(())
        } else {
            Err(CheckoutError::ParkedNotFound)
        }
    }

    pub async fn vnpay_return(&self, query: Vec<(String, String)>) -> ReturnPage {
        match &self.payments {
            Some(payments) => payments.return_page(&query).await,
            None => ReturnPage {
                verified: false,
                order_id: None,
                paid: false,
                order_status: None,
            },
        }
    }
}

fn parked_view(row: &holdfast_persistence::ParkedRow) -> ParkedView {
    ParkedView {
        id: row.id,
        service: row.group.clone(),
        topic: row.topic.clone(),
        event_id: row.event_id.clone(),
        order_id: row.order_id.clone(),
        error: row.error.clone(),
        attempts: row.attempts,
        parked_at_ms: row.parked_at,
    }
}
