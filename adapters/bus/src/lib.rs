//! The event bus of the checkout saga.
//!
//! Services never talk to each other directly: producers write records to their transactional
//! outbox, a relay publishes the outbox here, and consumers read the topics in consumer groups.
//! Delivery is at least once: a consumer commits a delivery only after its side effect is
//! durable, and a restarted consumer starts again after its last commit. Consumers make
//! redelivery harmless by recording the event ids they processed in the same transaction as the
//! side effect.
//!
//! Two implementations: [`SqlBus`], durable in the application's own database (SQLite or
//! PostgreSQL) for deployments without Kafka, and [`KafkaBus`] (feature `kafka`, on by default).
//! Both accept a name prefix, so several deployments or test runs can share one database or
//! cluster while the code uses the topic constants below. `conformance.rs` is one test suite run
//! against all three backends.

use std::fmt::Debug;

use async_trait::async_trait;

#[cfg(test)]
mod conformance;
#[cfg(feature = "kafka")]
mod kafka;
mod sql;

#[cfg(feature = "kafka")]
pub use kafka::{KafkaBus, KafkaBusOptions};
pub use sql::{SqlBus, SqlBusOptions};

/// Topics of the checkout saga, keyed by order id.
pub const ORDERS: &str = "orders.events";
pub const PAYMENTS: &str = "payments.events";
pub const TICKETS: &str = "tickets.events";

/// One record to publish. Records with the same key keep their order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// One record as a consumer receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    /// Where the record sits (partition and offset), for `commit`.
    pub partition: i32,
    pub offset: i64,
}

/// Why a bus operation failed. Every error is worth a retry after a pause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bus error: {0}")]
    Backend(String),
}

/// A message bus with topics and consumer groups.
#[async_trait]
pub trait Bus: Send + Sync + Debug + 'static {
    /// Publishes the records, in order per key, and returns once the bus holds them durably.
    async fn publish(&self, records: &[Record]) -> Result<(), Error>;

    /// Joins consumer group `group` on `topics`. A group that never committed starts at the
    /// beginning of each topic; otherwise it starts after its last commit.
    async fn subscribe(&self, group: &str, topics: &[&str])
    -> Result<Box<dyn Subscription>, Error>;
}

/// A member of a consumer group.
#[async_trait]
pub trait Subscription: Send + Debug {
    /// Waits for the next delivery.
    async fn next(&mut self) -> Result<Delivery, Error>;

    /// Records that `delivery` (and every earlier record of its partition) is processed.
    async fn commit(&mut self, delivery: &Delivery) -> Result<(), Error>;

    /// True when `next` has a delivery at hand without waiting, so a consumer may handle it
    /// before committing (one commit for a batch). False when unknown.
    fn has_buffered(&self) -> bool {
        false
    }
}
