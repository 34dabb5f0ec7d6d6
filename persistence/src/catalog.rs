//! The event catalog: events on sale and their ticket types, as organizers defined them.
//!
//! The stock itself (available, held, sold) is not here: it lives in each event's inventory
//! actor and its journal.

use std::collections::HashMap;
use std::fmt::Write as _;

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Error, Store, is_unique_violation, parse_uuid, uuid_text};

/// Events per [`Store::list_events`] page at most.
pub const EVENTS_PAGE_MAX: u32 = 500;

/// An event and its ticket types, in the order the organizer listed them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub id: Uuid,
    pub organizer_id: Uuid,
    pub name: String,
    pub venue: String,
    pub starts_at_ms: i64,
    pub created_at_ms: i64,
    pub ticket_types: Vec<TicketTypeRow>,
    /// The refund policy as JSON (`{"until_hours_before_start", "fee_percent", "fee_fixed"}`);
    /// `None`: buyers cannot refund by themselves.
    pub refund_policy: Option<String>,
    /// The IANA time zone its messages show the start in.
    pub time_zone: String,
}

/// One ticket type of an event. `price` is in the currency's minor unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketTypeRow {
    pub code: String,
    pub name: String,
    pub price: i64,
    pub currency: String,
    pub capacity: i64,
    pub per_user_limit: Option<i64>,
}

const EVENT_COLUMNS: &str =
    "id, organizer_id, name, venue, starts_at, created_at, refund_policy, time_zone";
const TICKET_TYPE_COLUMNS: &str = "event_id, code, name, price, currency, capacity, per_user_limit";
/// Bind parameters per ticket type row in [`Store::create_event`].
const TICKET_TYPE_PARAMS: usize = 7;

impl EventRow {
    fn from_row(row: &AnyRow) -> Result<Self, Error> {
        Ok(Self {
            id: parse_uuid("events.id", &row.try_get::<String, _>("id")?)?,
            organizer_id: parse_uuid(
                "events.organizer_id",
                &row.try_get::<String, _>("organizer_id")?,
            )?,
            name: row.try_get("name")?,
            venue: row.try_get("venue")?,
            starts_at_ms: row.try_get("starts_at")?,
            created_at_ms: row.try_get("created_at")?,
            ticket_types: Vec::new(),
            refund_policy: row.try_get("refund_policy")?,
            time_zone: row.try_get("time_zone")?,
        })
    }
}

impl TicketTypeRow {
    fn from_row(row: &AnyRow) -> Result<Self, Error> {
        Ok(Self {
            code: row.try_get("code")?,
            name: row.try_get("name")?,
            price: row.try_get("price")?,
            currency: row.try_get("currency")?,
            capacity: row.try_get("capacity")?,
            per_user_limit: row.try_get("per_user_limit")?,
        })
    }
}

/// `$first, $first+1, …` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    let mut list = String::with_capacity(n * 4);
    for i in first..first + n {
        if i > first {
            list.push_str(", ");
        }
        let _ = write!(list, "${i}");
    }
    list
}

impl Store {
    /// Stores `event` with its ticket types in one transaction; [`Error::Conflict`] if the id is
    /// taken or two ticket types share a code.
    pub async fn create_event(&self, event: &EventRow) -> Result<(), Error> {
        let conflict = |e: sqlx::Error| {
            if is_unique_violation(&e) {
                Error::Conflict
            } else {
                e.into()
            }
        };
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO events \
             (id, organizer_id, name, venue, starts_at, created_at, refund_policy, time_zone) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid_text(event.id))
        .bind(uuid_text(event.organizer_id))
        .bind(event.name.as_str())
        .bind(event.venue.as_str())
        .bind(event.starts_at_ms)
        .bind(event.created_at_ms)
        .bind(event.refund_policy.as_deref())
        .bind(event.time_zone.as_str())
        .execute(&mut *tx)
        .await
        .map_err(conflict)?;
        if !event.ticket_types.is_empty() {
            // `$1` is the event id, shared by every row.
            let mut sql = String::from(
                "INSERT INTO ticket_types \
                 (event_id, position, code, name, price, currency, capacity, per_user_limit) VALUES ",
            );
            for i in 0..event.ticket_types.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(
                    sql,
                    "($1, {})",
                    placeholders(2 + i * TICKET_TYPE_PARAMS, TICKET_TYPE_PARAMS)
                );
            }
            let mut query = sqlx::query(&sql).bind(uuid_text(event.id));
            for (position, t) in (0_i64..).zip(&event.ticket_types) {
                query = query
                    .bind(position)
                    .bind(t.code.as_str())
                    .bind(t.name.as_str())
                    .bind(t.price)
                    .bind(t.currency.as_str())
                    .bind(t.capacity)
                    .bind(t.per_user_limit);
            }
            query.execute(&mut *tx).await.map_err(conflict)?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn event(&self, id: Uuid) -> Result<Option<EventRow>, Error> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let mut events = vec![EventRow::from_row(&row)?];
        self.attach_ticket_types(&mut events).await?;
        Ok(events.pop())
    }

    /// A page of events ordered by start time, then id. `limit` is capped at
    /// [`EVENTS_PAGE_MAX`].
    pub async fn list_events(&self, limit: u32, offset: u32) -> Result<Vec<EventRow>, Error> {
        let sql =
            format!("SELECT {EVENT_COLUMNS} FROM events ORDER BY starts_at, id LIMIT $1 OFFSET $2");
        let rows = sqlx::query(&sql)
            .bind(i64::from(limit.min(EVENTS_PAGE_MAX)))
            .bind(i64::from(offset))
            .fetch_all(&self.pool)
            .await?;
        let mut events = rows
            .iter()
            .map(EventRow::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        self.attach_ticket_types(&mut events).await?;
        Ok(events)
    }

    /// Loads the ticket types of `events` in one query.
    async fn attach_ticket_types(&self, events: &mut [EventRow]) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT {TICKET_TYPE_COLUMNS} FROM ticket_types WHERE event_id IN ({}) ORDER BY event_id, position",
            placeholders(1, events.len())
        );
        let mut query = sqlx::query(&sql);
        for event in events.iter() {
            query = query.bind(uuid_text(event.id));
        }
        let mut by_event: HashMap<Uuid, Vec<TicketTypeRow>> = HashMap::new();
        for row in query.fetch_all(&self.pool).await? {
            let event_id = parse_uuid(
                "ticket_types.event_id",
                &row.try_get::<String, _>("event_id")?,
            )?;
            by_event
                .entry(event_id)
                .or_default()
                .push(TicketTypeRow::from_row(&row)?);
        }
        for event in events {
            event.ticket_types = by_event.remove(&event.id).unwrap_or_default();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(1, 1), "$1");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
