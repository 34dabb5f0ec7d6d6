//! The checkout saga (DESIGN.md "The checkout saga"): orders, payments, tickets and
//! notifications, four services that share nothing but the bus.
//!
//! Every service changes its tables and writes the events it publishes to the outbox in one
//! transaction; the [`relay`] publishes the outbox to the bus. Every consumer records the id of
//! the event it handled in the same transaction as its side effect, so a redelivered event
//! changes nothing; it commits its bus offset only after that transaction.

pub mod error;
pub mod events;
pub mod notifications;
pub mod orders;
pub mod payments;
pub mod relay;
pub mod runner;
pub mod service;
pub mod tickets;

pub use events::{Envelope, Item, SagaEvent};
pub use service::{CheckoutNode, Roles, Settings};
