//! The inventory domain of Holdfast.
//!
//! [`inventory`] is the pure state machine of one event's stock: no async, no clock, no I/O.
//! [`actor`] is the shell around it: a single-writer task per event with a bounded mailbox,
//! group-committed journal writes, one expiry timer and periodic snapshots. Storage is reached
//! only through the [`actor::Journal`] trait, which `holdfast-persistence` implements.

pub mod actor;
pub mod domain;
pub mod group_commit;
pub mod invariants;
pub mod inventory;
pub mod queue;

pub use domain::{
    EventId, HoldId, HoldRef, Line, OrderId, Quantity, RefundPolicy, TicketCode, Timestamp, UserId,
};
pub use inventory::{
    Command, Error, Event, HoldStatus, HoldView, Inventory, QueueSetup, SaleWindow, TypeStock,
};
