//! Refunds of cancelled events' paid orders. A cancel is stored first (the event row's
//! `cancelled_at`), then the actor refuses new holds and releases the held ones; the refunds
//! follow here, from what the database says is still paid, so they are made whatever happened
//! in between: a node that stops mid-cancel refunds the rest when it starts again, and an
//! order whose payment was confirmed just before the cancel is refunded at the next round.
//!
//! Every node that runs the orders service sweeps: at start, when this node stores a cancel,
//! and every [`EVERY`]. Two nodes sweeping at once are safe: each refund decides under the
//! order's row lock, and an order refunded already answers its refund again, not a second one.

use std::sync::Arc;
use std::time::Duration;

use holdfast_actors::OrderId;
use holdfast_actors::actor::Clock;
use holdfast_checkout::RefundBy;
use holdfast_checkout::model::OrderStatus;
use holdfast_persistence::Store;
use tokio::sync::{Notify, watch};

use crate::saga::SagaCheckout;

/// A sweep at least this often, besides the ones a cancel wakes.
pub const EVERY: Duration = Duration::from_secs(30);
/// Orders read per page of a sweep.
const ROUND: u32 = 200;
/// Pages per sweep at most (a million orders); the next sweep goes on from the start.
const ROUNDS_MAX: u32 = 5_000;
/// Events cancelled longer ago than this are not swept any more (a sweep reads the orders of
/// every event cancelled within it); by then every refund was made long before.
pub const LOOK_BACK: Duration = Duration::from_secs(30 * 24 * 3600);

/// Sweeps until `stop` turns true; `wake` starts a sweep at once.
pub async fn run(
    store: Store,
    checkout: Arc<SagaCheckout>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let look_back_ms = i64::try_from(LOOK_BACK.as_millis()).unwrap_or(i64::MAX);
        let since_ms = clock.now().as_millis().saturating_sub(look_back_ms);
        sweep(&store, &checkout, since_ms).await;
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Refunds, in pages of [`ROUND`] and at most [`ROUNDS_MAX`] of them, every paid order of a
/// cancelled event; an order whose refund fails is passed over until the next sweep.
async fn sweep(store: &Store, checkout: &SagaCheckout, since_ms: i64) {
    // Partly refunded orders still have paid tickets: a cancel refunds the rest.
    let paid = [
        OrderStatus::Confirmed.as_str(),
        OrderStatus::PartiallyRefunded.as_str(),
    ];
    let mut refunded = 0u64;
    let mut after = None;
    for _ in 0..ROUNDS_MAX {
        let orders = match store
            .orders_of_cancelled_events(since_ms, &paid, after, ROUND)
            .await
        {
            Ok(orders) => orders,
            Err(error) => {
                tracing::warn!(%error, "listing cancelled events' paid orders failed; the next sweep tries again");
                break;
            }
        };
        for row in &orders {
            let order = OrderId(row.id);
            match checkout
                .0
                .refund(
                    order,
                    format!("event cancelled: {}", row.reason),
                    RefundBy::Organizer,
                )
                .await
            {
                Ok(_) => refunded += 1,
                Err(error) => {
                    tracing::warn!(%order, %error, "refund of a cancelled event's order failed; the next sweep tries again");
                }
            }
        }
        match orders.last() {
            Some(last) if orders.len() == ROUND as usize => {
                after = Some((last.created_at, last.id))
            }
            _ => break,
        }
    }
    if refunded > 0 {
        tracing::info!(refunded, "cancelled events' orders refunded");
    }
}
