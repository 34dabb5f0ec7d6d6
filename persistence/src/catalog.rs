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
    pub description: String,
    /// A slug of `categories`.
    pub category: Option<String>,
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
    pub cancelled_at_ms: Option<i64>,
    pub cancel_reason: Option<String>,
    /// The IANA time zone its messages show the start in.
    pub time_zone: String,
    /// The waiting room's settings as JSON (`{"admit_per_minute", "active_max",
    /// "admission_ttl_secs"}`); `None`: sold without a queue.
    pub queue: Option<String>,
}

/// A category events are filed under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryRow {
    pub slug: String,
    pub name: String,
}

/// Which events [`Store::find_events`] lists; `None` does not filter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub organizer_id: Option<Uuid>,
    pub category: Option<String>,
    /// Matches name or venue, case-insensitively (Unicode), anywhere in the text.
    pub text: Option<String>,
    /// `starts_at` at or after.
    pub from_ms: Option<i64>,
    /// `starts_at` at or before.
    pub to_ms: Option<i64>,
}

/// What [`Store::update_event`] changes; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPatch {
    pub name: Option<String>,
    pub venue: Option<String>,
    pub description: Option<String>,
    pub category: Option<Option<String>>,
    pub starts_at_ms: Option<i64>,
    pub sale_starts_at_ms: Option<Option<i64>>,
    pub sale_ends_at_ms: Option<Option<i64>>,
    /// The refund policy as JSON; `Some(None)` removes it.
    pub refund_policy: Option<Option<String>>,
    /// The waiting room's settings as JSON; `Some(None)` removes it.
    pub queue: Option<Option<String>>,
}

/// What [`Store::update_ticket_type`] changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TicketTypePatch {
    pub name: Option<String>,
    pub price: Option<i64>,
    pub capacity: Option<i64>,
    pub per_user_limit: Option<Option<i64>>,
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

const EVENT_COLUMNS: &str = "id, organizer_id, name, venue, starts_at, created_at, description, \
     category, sale_starts_at, sale_ends_at, cancelled_at, cancel_reason, refund_policy, time_zone, \
     queue";
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
            description: row.try_get("description")?,
            category: row.try_get("category")?,
            sale_starts_at_ms: row.try_get("sale_starts_at")?,
            sale_ends_at_ms: row.try_get("sale_ends_at")?,
            cancelled_at_ms: row.try_get("cancelled_at")?,
            cancel_reason: row.try_get("cancel_reason")?,
            time_zone: row.try_get("time_zone")?,
            queue: row.try_get("queue")?,
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
        let mut tx = self.begin_write(crate::Writer::Catalog).await?;
        sqlx::query(
            "INSERT INTO events (id, organizer_id, name, venue, starts_at, created_at, description, \
             category, sale_starts_at, sale_ends_at, search_text, refund_policy, time_zone, queue) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(uuid_text(event.id))
        .bind(uuid_text(event.organizer_id))
        .bind(event.name.as_str())
        .bind(event.venue.as_str())
        .bind(event.starts_at_ms)
        .bind(event.created_at_ms)
        .bind(event.description.as_str())
        .bind(event.category.as_deref())
        .bind(event.sale_starts_at_ms)
        .bind(event.sale_ends_at_ms)
        .bind(search_text(&event.name, &event.venue))
        .bind(event.refund_policy.as_deref())
        .bind(event.time_zone.as_str())
        .bind(event.queue.as_deref())
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
        self.find_events(&EventFilter::default(), limit, offset)
            .await
    }

    /// A page of the events `filter` selects, ordered by start time, then id. `limit` is
    /// capped at [`EVENTS_PAGE_MAX`].
    pub async fn find_events(
        &self,
        filter: &EventFilter,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<EventRow>, Error> {
        let mut clauses: Vec<String> = Vec::new();
        let mut texts: Vec<String> = Vec::new();
        let mut numbers: Vec<i64> = Vec::new();
        // Text parameters first ($1…), then numbers: each kind binds in its own order.
        if let Some(organizer) = filter.organizer_id {
            texts.push(uuid_text(organizer));
            clauses.push(format!("organizer_id = ${}", texts.len()));
        }
        if let Some(category) = &filter.category {
            texts.push(category.clone());
            clauses.push(format!("category = ${}", texts.len()));
        }
        if let Some(text) = &filter.text {
            texts.push(format!("%{}%", like_escape(&text.to_lowercase())));
            clauses.push(format!("search_text LIKE ${} ESCAPE '\\'", texts.len()));
        }
        let mut next = texts.len();
        let mut number = |value: i64, clause: &str| {
            next += 1;
            numbers.push(value);
            clauses.push(format!("{clause} ${next}"));
        };
        if let Some(from) = filter.from_ms {
            number(from, "starts_at >=");
        }
        if let Some(to) = filter.to_ms {
            number(to, "starts_at <=");
        }
        let condition = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events {condition} ORDER BY starts_at, id LIMIT ${} OFFSET ${}",
            next + 1,
            next + 2
        );
        let mut query = sqlx::query(&sql);
        for text in texts {
            query = query.bind(text);
        }
        for n in numbers {
            query = query.bind(n);
        }
        let rows = query
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

    /// The categories events may be filed under, in their listing order.
    pub async fn categories(&self) -> Result<Vec<CategoryRow>, Error> {
        let rows = sqlx::query("SELECT slug, name FROM categories ORDER BY position, slug")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(CategoryRow {
                    slug: row.try_get("slug")?,
                    name: row.try_get("name")?,
                })
            })
            .collect()
    }

    /// Changes what `patch` names of event `id`; false if there is no such event.
    pub async fn update_event(&self, id: Uuid, patch: &EventPatch) -> Result<bool, Error> {
        let mut query_sets = String::new();
        // (column, value) in bind order after `$1` (the id).
        enum Value<'a> {
            Text(Option<&'a str>),
            Number(Option<i64>),
        }
        let mut values: Vec<(&str, Value<'_>)> = Vec::new();
        if let Some(v) = &patch.name {
            values.push(("name", Value::Text(Some(v))));
        }
        if let Some(v) = &patch.venue {
            values.push(("venue", Value::Text(Some(v))));
        }
        if let Some(v) = &patch.description {
            values.push(("description", Value::Text(Some(v))));
        }
        if let Some(v) = &patch.category {
            values.push(("category", Value::Text(v.as_deref())));
        }
        if let Some(v) = patch.starts_at_ms {
            values.push(("starts_at", Value::Number(Some(v))));
        }
        if let Some(v) = patch.sale_starts_at_ms {
            values.push(("sale_starts_at", Value::Number(v)));
        }
        if let Some(v) = patch.sale_ends_at_ms {
            values.push(("sale_ends_at", Value::Number(v)));
        }
        if let Some(v) = &patch.refund_policy {
            values.push(("refund_policy", Value::Text(v.as_deref())));
        }
        if let Some(v) = &patch.queue {
            values.push(("queue", Value::Text(v.as_deref())));
        }
        for (i, (column, _)) in values.iter().enumerate() {
            if i > 0 {
                query_sets.push_str(", ");
            }
            let _ = write!(query_sets, "{column} = ${}", i + 2);
        }
        if values.is_empty() {
            return Ok(self.event(id).await?.is_some());
        }
        let sql = format!("UPDATE events SET {query_sets} WHERE id = $1");
        let mut query = sqlx::query(&sql).bind(uuid_text(id));
        for (_, value) in values {
            query = match value {
                Value::Text(v) => query.bind(v.map(str::to_owned)),
                Value::Number(v) => query.bind(v),
            };
        }
        let mut tx = self.begin_write(crate::Writer::Catalog).await?;
        let done = query.execute(&mut *tx).await?;
        if patch.name.is_some() || patch.venue.is_some() {
            let row = sqlx::query("SELECT name, venue FROM events WHERE id = $1")
                .bind(uuid_text(id))
                .fetch_one(&mut *tx)
                .await?;
            let (name, venue): (String, String) = (row.try_get("name")?, row.try_get("venue")?);
            sqlx::query("UPDATE events SET search_text = $2 WHERE id = $1")
                .bind(uuid_text(id))
                .bind(search_text(&name, &venue))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Adds a ticket type after the others; [`Error::Conflict`] if its code is taken.
    pub async fn add_ticket_type(&self, event_id: Uuid, t: &TicketTypeRow) -> Result<(), Error> {
        let mut tx = self.begin_write(crate::Writer::Catalog).await?;
        sqlx::query(
            "INSERT INTO ticket_types \
             (event_id, position, code, name, price, currency, capacity, per_user_limit) \
             SELECT $1, COALESCE(MAX(position) + 1, 0), $2, $3, $4, $5, $6, $7 \
             FROM ticket_types WHERE event_id = $1",
        )
        .bind(uuid_text(event_id))
        .bind(t.code.as_str())
        .bind(t.name.as_str())
        .bind(t.price)
        .bind(t.currency.as_str())
        .bind(t.capacity)
        .bind(t.per_user_limit)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                Error::Conflict
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes what `patch` names of a ticket type; false if there is no such type. A new price
    /// records the old one as of `now_ms`, for holds placed before ([`Store::prices_at`]).
    pub async fn update_ticket_type(
        &self,
        event_id: Uuid,
        code: &str,
        patch: &TicketTypePatch,
        now_ms: i64,
    ) -> Result<bool, Error> {
        let mut tx = self.begin_write(crate::Writer::Catalog).await?;
        let current: Option<i64> =
            sqlx::query_scalar("SELECT price FROM ticket_types WHERE event_id = $1 AND code = $2")
                .bind(uuid_text(event_id))
                .bind(code)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Ok(false);
        };
        if let Some(price) = patch.price
            && price != current
        {
            // Two changes in one millisecond: the first one's old price is what held before.
            sqlx::query(
                "INSERT INTO ticket_type_price_changes (event_id, code, changed_at, old_price) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(uuid_text(event_id))
            .bind(code)
            .bind(now_ms)
            .bind(current)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE ticket_types SET name = COALESCE($3, name), price = COALESCE($4, price), \
             capacity = COALESCE($5, capacity), \
             per_user_limit = CASE WHEN $6 = 1 THEN $7 ELSE per_user_limit END \
             WHERE event_id = $1 AND code = $2",
        )
        .bind(uuid_text(event_id))
        .bind(code)
        .bind(patch.name.clone())
        .bind(patch.price)
        .bind(patch.capacity)
        .bind(i64::from(patch.per_user_limit.is_some()))
        .bind(patch.per_user_limit.flatten())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The unit price of each ticket type for a hold placed at `placed_at_ms`: the price then,
    /// which a later change does not touch.
    pub async fn prices_at(
        &self,
        event_id: Uuid,
        placed_at_ms: i64,
    ) -> Result<HashMap<String, i64>, Error> {
        let rows = sqlx::query(
            "SELECT code, old_price FROM ticket_type_price_changes \
             WHERE event_id = $1 AND changed_at > $2 ORDER BY changed_at DESC",
        )
        .bind(uuid_text(event_id))
        .bind(placed_at_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut prices = HashMap::new();
        // Newest first, so the earliest change after the hold is the one kept.
        for row in rows {
            prices.insert(row.try_get("code")?, row.try_get("old_price")?);
        }
        Ok(prices)
    }

    /// Marks event `id` cancelled at `at_ms` (a second cancel keeps the first time and
    /// reason); false if there is no such event.
    pub async fn cancel_event(&self, id: Uuid, at_ms: i64, reason: &str) -> Result<bool, Error> {
        let mut tx = self.begin_write(crate::Writer::Catalog).await?;
        let done = sqlx::query(
            "UPDATE events SET cancelled_at = COALESCE(cancelled_at, $2), \
             cancel_reason = COALESCE(cancel_reason, $3) WHERE id = $1",
        )
        .bind(uuid_text(id))
        .bind(at_ms)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
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

/// What `q` searches: name and venue, lower-cased here so both backends fold alike.
fn search_text(name: &str, venue: &str) -> String {
    format!("{}\n{}", name.to_lowercase(), venue.to_lowercase())
}

/// `text` with LIKE's wildcards and the escape character escaped (escape `\\`).
fn like_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(like_escape("rock"), "rock");
    }

    #[test]
    fn placeholders_are_numbered_from_first() {
        assert_eq!(placeholders(1, 1), "$1");
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
    }
}
