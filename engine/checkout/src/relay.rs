//! The outbox relay: publishes committed outbox records to the bus, in order, and marks them
//! published. A crash between the publish and the mark publishes them again, which consumers
//! absorb (they deduplicate by event id).

use std::sync::Arc;
use std::time::Duration;

use holdfast_bus::{Bus, Record};
use holdfast_persistence::Store;
use tokio::sync::{Notify, watch};

/// Records published per round at most.
const BATCH_MAX: u32 = 256;
/// A round runs at least this often, for records written by other processes.
const POLL: Duration = Duration::from_millis(250);

/// Runs until `stop` turns true. `wake` is notified by local writers after their commit.
pub async fn run(
    store: Store,
    bus: Arc<dyn Bus>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match round(&store, bus.as_ref()).await {
            Ok(published) => {
                backoff = Duration::from_millis(100);
                if published == BATCH_MAX as usize {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Publishes one batch; returns how many records it published.
pub async fn round(store: &Store, bus: &dyn Bus) -> anyhow::Result<usize> {
    // Relays of other nodes on the same database take turns, so each record goes out once
    // and in order.
    let Some(lease) = store.outbox_lease(BATCH_MAX).await? else {
        return Ok(0);
    };
    if lease.records.is_empty() {
        return Ok(0);
    }
    let records: Vec<Record> = lease
        .records
        .iter()
        .map(|p| Record {
            topic: p.record.topic.clone(),
            key: p.record.key.clone(),
            payload: p.record.payload.clone(),
        })
        .collect();
    bus.publish(&records).await?;
    lease.published().await?;
    metrics::counter!("holdfast_outbox_published_total").increment(records.len() as u64);
    Ok(records.len())
}
