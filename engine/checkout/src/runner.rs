//! Runs a consumer: reads its topics in its group, hands each event to the service, and
//! commits the offsets only after the service's transactions are durable. An event that fails
//! transiently is retried with bounded backoff; it holds back the later events of its order and
//! the next batch, so the events of one order stay in order. An event that fails permanently,
//! or still fails after [`ATTEMPTS_MAX`] attempts, is parked (`saga_parked`) for an admin to
//! retry or discard, and the consumer moves on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_actors::actor::Clock;
use holdfast_bus::{Bus, Delivery, Subscription};
use holdfast_persistence::{CheckoutTx, ParkedRow, Store};
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Kind};
use crate::events::Envelope;

/// A service that consumes saga events.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// The consumer group (also the consumer's name in `processed_events`).
    fn group(&self) -> &'static str;
    fn topics(&self) -> &'static [&'static str];
    /// Whether handling `envelope` is database work only, which [`Consumer::handle_in`] does
    /// inside a transaction shared with the other deliveries at hand (group commit).
    fn in_tx(&self, _envelope: &Envelope) -> bool {
        false
    }
    /// Handles `envelope` inside `tx`, recording its id there; the caller commits. Only for
    /// events [`Consumer::in_tx`] names.
    async fn handle_in(&self, _tx: &mut CheckoutTx, envelope: &Envelope) -> Result<(), Error> {
        Err(Error::permanent(format!(
            "{} is not handled inside a shared transaction",
            envelope.event.name()
        )))
    }
    /// After the transaction that handled `envelope` with [`Consumer::handle_in`] committed.
    fn committed(&self, _envelope: &Envelope) {}
    /// Handles one event alone; must be idempotent by `envelope.id`. A transient error is
    /// retried, a permanent one parks the event.
    async fn handle(&self, envelope: &Envelope) -> Result<(), Error>;
}

/// Handles one event once, alone: those [`Consumer::in_tx`] names in a transaction of their
/// own.
pub(crate) async fn handle_once(
    consumer: &dyn Consumer,
    store: &Store,
    envelope: &Envelope,
) -> Result<(), Error> {
    if !consumer.in_tx(envelope) {
        return consumer.handle(envelope).await;
    }
    let mut tx = store.checkout_tx().await?;
    consumer.handle_in(&mut tx, envelope).await?;
    tx.commit().await?;
    consumer.committed(envelope);
    Ok(())
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Deliveries handled together (then committed together) at most.
const BATCH_MAX: usize = 64;
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Attempts at an event that keeps failing transiently before it is parked (about 33 s).
pub(crate) const ATTEMPTS_MAX: u32 = 10;

/// The pause after `failures` failed attempts, or `None` when the attempts are spent.
pub(crate) fn backoff(failures: u32) -> Option<Duration> {
    if failures == 0 || failures >= ATTEMPTS_MAX {
        return None;
    }
    let doublings = (failures - 1).min(20);
    Some(BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX))
}

/// Where a consumer parks what it cannot handle.
#[derive(Clone)]
pub struct Parking {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Parking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parking").finish_non_exhaustive()
    }
}

/// One delivery at hand, decoded.
struct Message {
    envelope: Envelope,
    topic: String,
    key: String,
    payload: Vec<u8>,
}

/// What became of one event.
enum Handled {
    Done,
    Parked,
    Stopped,
}

/// Consumes until `stop` turns true. `group_prefix` keeps deployments sharing a broker apart.
/// Orders of one batch handled at once at most: `concurrency` (1 handles them one by one).
pub async fn run(
    bus: Arc<dyn Bus>,
    consumer: Arc<dyn Consumer>,
    group_prefix: String,
    concurrency: usize,
    parking: Parking,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let group = format!("{group_prefix}{}", consumer.group());
    loop {
        let subscription = tokio::select! {
            s = bus.subscribe(&group, consumer.topics()) => s,
            _ = stop.wait_for(|s| *s) => return,
        };
        match subscription {
            Ok(mut subscription) => {
                if consume(
                    subscription.as_mut(),
                    &consumer,
                    &permits,
                    &parking,
                    &mut stop,
                )
                .await
                {
                    return;
                }
            }
            Err(e) => tracing::warn!(%group, error = %e, "subscribing failed; retrying"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Returns true when stopped, false when the subscription failed and must be renewed.
///
/// The deliveries at hand (up to [`BATCH_MAX`]) are handled together: those of one key (one
/// order) in order, different keys concurrently, so a burst of orders does not queue behind one
/// transaction at a time. Then the offsets are committed, once per (topic, partition). A crash
/// in between redelivers the batch, which the handlers absorb.
async fn consume(
    subscription: &mut dyn Subscription,
    consumer: &Arc<dyn Consumer>,
    permits: &Arc<tokio::sync::Semaphore>,
    parking: &Parking,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        let mut batch = Vec::new();
        loop {
            let delivery = tokio::select! {
                d = subscription.next() => d,
                _ = stop.wait_for(|s| *s) => return true,
            };
            match delivery {
                Ok(d) => batch.push(d),
                Err(e) => {
                    tracing::warn!(group = consumer.group(), error = %e, "reading the bus failed");
                    return false;
                }
            }
            if batch.len() >= BATCH_MAX || !subscription.has_buffered() {
                break;
            }
        }
        // Events by key, in delivery order within each key.
        let mut by_key: Vec<(String, Vec<Message>)> = Vec::new();
        for delivery in &batch {
            match Envelope::decode(&delivery.payload) {
                Err(e) => {
                    tracing::error!(
                        group = consumer.group(),
                        topic = %delivery.topic,
                        offset = delivery.offset,
                        error = %e,
                        "parking a record that is not a saga event"
                    );
                    let row = ParkedRow {
                        id: Uuid::new_v4(),
                        group: consumer.group().to_owned(),
                        topic: delivery.topic.clone(),
                        key: delivery.key.clone(),
                        event_id: format!(
                            "offset:{}:{}:{}",
                            delivery.topic, delivery.partition, delivery.offset
                        ),
                        order_id: None,
                        payload: delivery.payload.clone(),
                        error: format!("not a saga event: {e}"),
                        attempts: 1,
                        parked_at: parking.clock.now().as_millis(),
                    };
                    if !park(parking, consumer.group(), row, stop.clone()).await {
                        return true;
                    }
                }
                Ok(envelope) => {
                    let message = Message {
                        envelope,
                        topic: delivery.topic.clone(),
                        key: delivery.key.clone(),
                        payload: delivery.payload.clone(),
                    };
                    match by_key.iter_mut().find(|(k, _)| *k == delivery.key) {
                        Some((_, events)) => events.push(message),
                        None => by_key.push((delivery.key.clone(), vec![message])),
                    }
                }
            }
        }
        // In rounds, the first event of every order at hand in each: those that are database
        // work only share one transaction (one commit for the round), the rest run one by one,
        // different orders concurrently. An order's next event waits for the next round.
        let mut queues: Vec<std::collections::VecDeque<Message>> =
            by_key.into_iter().map(|(_, m)| m.into()).collect();
        loop {
            let heads: Vec<Message> = queues.iter_mut().filter_map(|q| q.pop_front()).collect();
            if heads.is_empty() {
                break;
            }
            let (together, apart): (Vec<Message>, Vec<Message>) =
                heads.into_iter().partition(|m| consumer.in_tx(&m.envelope));
            let mut apart = apart;
            if !together.is_empty() && !handle_together(consumer.as_ref(), &together, parking).await
            {
                // Something in the round failed: each again alone, with retries and parking.
                apart.extend(together);
            }
            if !handle_apart(consumer, apart, permits, parking, stop).await {
                return true;
            }
        }
        let mut last: Vec<&Delivery> = Vec::new();
        for delivery in &batch {
            match last
                .iter_mut()
                .find(|d| d.topic == delivery.topic && d.partition == delivery.partition)
            {
                Some(slot) => *slot = delivery,
                None => last.push(delivery),
            }
        }
        for delivery in last {
            if let Err(e) = subscription.commit(delivery).await {
                // The side effects are durable; the events will come again and be recognised.
                tracing::warn!(group = consumer.group(), error = %e, "committing the offset failed");
                return false;
            }
        }
    }
}

/// Handles `messages` (each the next event of its order) in one transaction and commits it
/// once; false (and nothing of it kept) when any of them, or the commit, failed.
async fn handle_together(consumer: &dyn Consumer, messages: &[Message], parking: &Parking) -> bool {
    let mut tx = match parking.store.checkout_tx().await {
        Ok(tx) => tx,
        Err(e) => {
            tracing::debug!(group = consumer.group(), error = %e, "no shared transaction");
            return false;
        }
    };
    for message in messages {
        if let Err(e) = consumer.handle_in(&mut tx, &message.envelope).await {
            tracing::debug!(group = consumer.group(), order = %message.envelope.order_id, error = %e, "a shared transaction failed; handling its events alone");
            return false;
        }
    }
    if let Err(e) = tx.commit().await {
        tracing::debug!(group = consumer.group(), error = %e, "a shared commit failed; handling its events alone");
        return false;
    }
    metrics::histogram!("holdfast_saga_group_commit_events", "consumer" => consumer.group())
        .record(messages.len() as f64);
    for message in messages {
        consumer.committed(&message.envelope);
        metrics::counter!("holdfast_saga_events_total", "consumer" => consumer.group(), "event" => message.envelope.event.name()).increment(1);
    }
    true
}

/// Handles `messages` one by one, different orders concurrently; false when stopped.
async fn handle_apart(
    consumer: &Arc<dyn Consumer>,
    messages: Vec<Message>,
    permits: &Arc<tokio::sync::Semaphore>,
    parking: &Parking,
    stop: &watch::Receiver<bool>,
) -> bool {
    let mut tasks = tokio::task::JoinSet::new();
    for message in messages {
        let consumer = Arc::clone(consumer);
        let stop = stop.clone();
        let permits = Arc::clone(permits);
        let parking = parking.clone();
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return false;
            };
            !matches!(
                handle(consumer.as_ref(), &message, &parking, stop).await,
                Handled::Stopped
            )
        });
    }
    let mut going = true;
    while let Some(done) = tasks.join_next().await {
        going &= done.unwrap_or(false);
    }
    going
}

/// Handles one event: retries a transient error with backoff, parks the event after a
/// permanent error or when the attempts are spent.
async fn handle(
    consumer: &dyn Consumer,
    message: &Message,
    parking: &Parking,
    mut stop: watch::Receiver<bool>,
) -> Handled {
    let envelope = &message.envelope;
    let mut attempts = 0u32;
    loop {
        let error = match handle_once(consumer, &parking.store, envelope).await {
            Ok(()) => {
                metrics::counter!("holdfast_saga_events_total", "consumer" => consumer.group(), "event" => envelope.event.name()).increment(1);
                return Handled::Done;
            }
            Err(e) => e,
        };
        attempts += 1;
        let pause = match error.kind() {
            Kind::Transient => backoff(attempts),
            Kind::Permanent => None,
        };
        let Some(pause) = pause else {
            tracing::error!(group = consumer.group(), event = envelope.event.name(), order = %envelope.order_id, attempts, kind = ?error.kind(), error = %error, "parking an event that cannot be handled");
            let row = ParkedRow {
                id: Uuid::new_v4(),
                group: consumer.group().to_owned(),
                topic: message.topic.clone(),
                key: message.key.clone(),
                event_id: envelope.id.to_string(),
                order_id: Some(envelope.order_id.to_string()),
                payload: message.payload.clone(),
                error: error.to_string(),
                attempts: i64::from(attempts),
                parked_at: parking.clock.now().as_millis(),
            };
            return if park(parking, consumer.group(), row, stop).await {
                Handled::Parked
            } else {
                Handled::Stopped
            };
        };
        tracing::warn!(group = consumer.group(), event = envelope.event.name(), order = %envelope.order_id, attempts, error = %error, "handling an event failed; retrying");
        metrics::counter!("holdfast_saga_retries_total", "consumer" => consumer.group())
            .increment(1);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return Handled::Stopped,
        }
    }
}

/// Stores a parked record, retrying while the database is away (the offset is not committed
/// before it is stored, so nothing is lost); false when stopped first.
async fn park(
    parking: &Parking,
    group: &'static str,
    row: ParkedRow,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut pause = BACKOFF_MIN;
    loop {
        match parking.store.park(&row).await {
            Ok(()) => {
                metrics::counter!("holdfast_saga_parked_total", "service" => group).increment(1);
                return true;
            }
            Err(e) => {
                tracing::warn!(group, order = ?row.order_id, error = %e, "parking an event failed; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return false,
        }
        pause = (pause * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_ends() {
        let pauses: Vec<Option<Duration>> = (0..=ATTEMPTS_MAX).map(backoff).collect();
        assert_eq!(pauses[0], None);
        assert_eq!(pauses[1], Some(Duration::from_millis(100)));
        assert_eq!(pauses[2], Some(Duration::from_millis(200)));
        assert_eq!(pauses[8], Some(BACKOFF_MAX));
        assert_eq!(pauses[ATTEMPTS_MAX as usize - 1], Some(BACKOFF_MAX));
        assert_eq!(pauses[ATTEMPTS_MAX as usize], None);
        assert_eq!(backoff(u32::MAX), None);
        let total: Duration = pauses.iter().flatten().sum();
        assert!(total <= Duration::from_secs(60), "{total:?}");
    }
}
