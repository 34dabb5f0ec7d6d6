//! REST handlers, one module per API.md section.

pub mod accounts;
pub mod admin;
pub mod events;
pub mod holds;
pub mod lifecycle;
pub mod ops;
pub mod orders;
pub mod organizer;
pub mod payments;
pub mod queue;
pub mod saga;
pub mod staff;
pub mod tickets;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC, as every time in the API is written.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_default()
}

pub use holdfast_actors::domain::rfc3339_millis;
