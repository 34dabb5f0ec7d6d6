//! The checkout saga (DESIGN.md "The checkout saga"): orders, payments, tickets and
//! notifications, four services that share nothing but the bus.
//!
//! Each service is a pure decision ([`decide`], over the typed values of [`model`] and
//! [`order`], the time an argument) and a shell that loads what the decision needs, calls it
//! and commits what it returns. Every service changes its tables and writes the events it
//! publishes to the outbox in one transaction; the [`relay`] publishes the outbox to the bus.
//! Every consumer records the id of the event it handled in the same transaction as its side
//! effect, so a redelivered event changes nothing; it commits its bus offset only after that
//! transaction. The saga reaches the events' stock through its own [`Inventory`] trait, which
//! the engine implements; it knows nothing of HTTP (the engine adapts [`CheckoutNode`] to the
//! gateway).

pub mod api;
pub mod breaker;
pub mod decide;
pub mod error;
pub mod events;
pub mod inventory;
pub mod messages;
pub mod model;
pub mod notifications;
pub mod order;
pub mod orders;
pub mod payments;
pub mod relay;
pub mod runner;
pub mod scheduler;
pub mod service;
pub mod tickets;

pub use api::{
    Admission, CheckoutError, FailedRefundView, IpnAnswer, OrderLine, OrderView, ParkedView,
    RefundBy, RefundView, ReturnPage, TicketView,
};
pub use events::{Envelope, Item, SagaEvent};
pub use inventory::{EventTerms, Inventory, InventoryError};
pub use service::{CheckoutNode, Roles, Settings};
