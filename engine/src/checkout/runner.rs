//! Runs a consumer: reads its topics in its group, hands each event to the service, and
//! commits the offset only after the service's transaction is durable. A failing event is
//! retried with backoff (it blocks its partition: events of one order stay in order).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_bus::{Bus, Subscription};
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
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Consumes until `stop` turns true. `group_prefix` keeps deployments sharing a broker apart.
pub async fn run(
    bus: Arc<dyn Bus>,
    consumer: Arc<dyn Consumer>,
    group_prefix: String,
    mut stop: watch::Receiver<bool>,
) {
    let group = format!("{group_prefix}{}", consumer.group());
    loop {
        let subscription = tokio::select! {
            s = bus.subscribe(&group, consumer.topics()) => s,
            _ = stop.wait_for(|s| *s) => return,
        };
        match subscription {
            Ok(mut subscription) => {
                if consume(subscription.as_mut(), consumer.as_ref(), &mut stop).await {
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
async fn consume(
    subscription: &mut dyn Subscription,
    consumer: &dyn Consumer,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        let delivery = tokio::select! {
            d = subscription.next() => d,
            _ = stop.wait_for(|s| *s) => return true,
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(group = consumer.group(), error = %e, "reading the bus failed");
                return false;
            }
        };
        match Envelope::decode(&delivery.payload) {
            Err(e) => tracing::error!(
                group = consumer.group(),
                topic = %delivery.topic,
                offset = delivery.offset,
                error = %e,
                "skipping a record that is not a saga event"
            ),
            Ok(envelope) => {
                let mut backoff = BACKOFF_MIN;
                let mut attempts = 0u32;
                loop {
                    match consumer.handle(&envelope).await {
                        Ok(()) => break,
                        Err(e) => {
                            attempts += 1;
                            let level_error = attempts >= 5;
                            if level_error {
                                tracing::error!(group = consumer.group(), event = envelope.event.name(), order = %envelope.order_id, attempts, error = %e, "handling an event keeps failing; retrying");
                            } else {
                                tracing::warn!(group = consumer.group(), event = envelope.event.name(), order = %envelope.order_id, error = %e, "handling an event failed; retrying");
                            }
                            metrics::counter!("holdfast_saga_retries_total", "consumer" => consumer.group()).increment(1);
                            tokio::select! {
                                () = tokio::time::sleep(backoff) => {}
                                _ = stop.wait_for(|s| *s) => return true,
                            }
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                        }
                    }
                }
                metrics::counter!("holdfast_saga_events_total", "consumer" => consumer.group(), "event" => envelope.event.name()).increment(1);
            }
        }
        if let Err(e) = subscription.commit(&delivery).await {
            // The side effect is durable; the event will come again and be recognised.
            tracing::warn!(group = consumer.group(), error = %e, "committing the offset failed");
            return false;
        }
    }
}
