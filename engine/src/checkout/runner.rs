//! Runs a consumer: reads its topics in its group, hands each event to the service, and
//! commits the offsets only after the service's transactions are durable. A failing event is
//! retried with backoff; it holds back the later events of its order and the next batch, so
//! the events of one order stay in order.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_bus::{Bus, Delivery, Subscription};
use tokio::sync::watch;

use super::events::Envelope;

/// A service that consumes saga events.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// The consumer group (also the consumer's name in `processed_events`).
    fn group(&self) -> &'static str;
    fn topics(&self) -> &'static [&'static str];
    /// Handles one event; must be idempotent by `envelope.id`. An error is retried.
    async fn handle(&self, envelope: &Envelope) -> anyhow::Result<()>;
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Deliveries handled together (then committed together) at most.
const BATCH_MAX: usize = 64;
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Consumes until `stop` turns true. `group_prefix` keeps deployments sharing a broker apart.
/// Orders of one batch handled at once at most: `concurrency` (1 handles them one by one).
pub async fn run(
    bus: Arc<dyn Bus>,
    consumer: Arc<dyn Consumer>,
    group_prefix: String,
    concurrency: usize,
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
                if consume(subscription.as_mut(), &consumer, &permits, &mut stop).await {
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
        let mut by_key: Vec<(String, Vec<Envelope>)> = Vec::new();
        for delivery in &batch {
            match Envelope::decode(&delivery.payload) {
                Err(e) => tracing::error!(
                    group = consumer.group(),
                    topic = %delivery.topic,
                    offset = delivery.offset,
                    error = %e,
                    "skipping a record that is not a saga event"
                ),
                Ok(envelope) => match by_key.iter_mut().find(|(k, _)| *k == delivery.key) {
                    Some((_, events)) => events.push(envelope),
                    None => by_key.push((delivery.key.clone(), vec![envelope])),
                },
            }
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (_, events) in by_key {
            let consumer = Arc::clone(consumer);
            let stop = stop.clone();
            let permits = Arc::clone(permits);
            tasks.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return false;
                };
                for envelope in events {
                    if !handle(consumer.as_ref(), &envelope, stop.clone()).await {
                        return false;
                    }
                }
                true
            });
        }
        let mut stopped = false;
        while let Some(done) = tasks.join_next().await {
            stopped |= !done.unwrap_or(false);
        }
        if stopped {
            return true;
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

/// Handles one event, retrying with backoff until it succeeds; false when stopped first.
async fn handle(
    consumer: &dyn Consumer,
    envelope: &Envelope,
    mut stop: watch::Receiver<bool>,
) -> bool {
    let mut backoff = BACKOFF_MIN;
    let mut attempts = 0u32;
    loop {
        match consumer.handle(envelope).await {
            Ok(()) => {
                metrics::counter!("holdfast_saga_events_total", "consumer" => consumer.group(), "event" => envelope.event.name()).increment(1);
                return true;
            }
            Err(e) => {
                attempts += 1;
                if attempts >= 5 {
                    tracing::error!(group = consumer.group(), event = envelope.event.name(), order = %envelope.order_id, attempts, error = %e, "handling an event keeps failing; retrying");
                } else {
                    tracing::warn!(group = consumer.group(), event = envelope.event.name(), order = %envelope.order_id, error = %e, "handling an event failed; retrying");
                }
                metrics::counter!("holdfast_saga_retries_total", "consumer" => consumer.group())
                    .increment(1);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return false,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
