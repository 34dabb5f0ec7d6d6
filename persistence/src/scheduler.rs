//! The scheduler's tables: `job_runs` (one row per job and due time, claimed in the
//! transaction that queues what the run sends) and `scheduler_holdings` (each order's valid
//! seats and holder, from the bus); and its reads of the catalog (events near their start, the
//! organizers' live events and their sales).

use sqlx::Row as _;
use uuid::Uuid;

use crate::{CheckoutTx, Error, Store, parse_uuid, uuid_text};

/// Events one reminder round looks at, at most; the rest wait for the next round.
pub const REMINDER_EVENTS_MAX: i64 = 200;
/// Live events one sales summary covers, at most.
pub const SUMMARY_EVENTS_MAX: i64 = 10_000;

/// An event whose start is near.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpcomingEventRow {
    pub id: Uuid,
    pub name: String,
    pub venue: String,
    pub starts_at: i64,
    pub time_zone: String,
    /// Ticket type code → display name, in the organizer's order.
    pub ticket_types: Vec<(String, String)>,
}

/// An order of an event as the scheduler keeps it from the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldingRow {
    pub order_id: Uuid,
    pub email: String,
    pub phone: Option<String>,
    pub language: String,
    /// JSON `[["GA", 2], …]`: the valid seats by ticket type.
    pub seats: String,
}

/// An organizer's live event with its sales.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveEventSalesRow {
    pub organizer_id: Uuid,
    pub organizer_email: String,
    pub organizer_language: String,
    pub event_id: Uuid,
    pub name: String,
    pub starts_at: i64,
    pub time_zone: String,
    /// Seats (still valid) issued in the summary's window, and before its end in all.
    pub sold_in_window: i64,
    pub sold_total: i64,
    /// Orders confirmed in the window: amount in minor units per currency.
    pub revenue: Vec<(String, i64)>,
}

impl Store {
    /// Events not cancelled that start after `after_ms` and at the latest at `until_ms` and
    /// whose reminder for that start has not run (`job_runs`, key `id@starts_at`), soonest
    /// first, with their ticket types' names.
    pub async fn upcoming_events(
        &self,
        after_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<UpcomingEventRow>, Error> {
        let rows = sqlx::query(
            "SELECT id, name, venue, starts_at, time_zone FROM events e \
             WHERE cancelled_at IS NULL AND starts_at > $1 AND starts_at <= $2 \
             AND NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.job = 'reminder' \
                 AND r.due_key = e.id || '@' || CAST(e.starts_at AS TEXT)) \
             ORDER BY starts_at, id LIMIT $3",
        )
        .bind(after_ms)
        .bind(until_ms)
        .bind(REMINDER_EVENTS_MAX)
        .fetch_all(&self.pool)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: String = row.try_get("id")?;
            let types = sqlx::query(
                "SELECT code, name FROM ticket_types WHERE event_id = $1 ORDER BY position",
            )
            .bind(&id)
            .fetch_all(&self.pool)
            .await?;
            events.push(UpcomingEventRow {
                id: parse_uuid("events.id", &id)?,
                name: row.try_get("name")?,
                venue: row.try_get("venue")?,
                starts_at: row.try_get("starts_at")?,
                time_zone: row.try_get("time_zone")?,
                ticket_types: types
                    .iter()
                    .map(|t| Ok((t.try_get("code")?, t.try_get("name")?)))
                    .collect::<Result<_, sqlx::Error>>()?,
            });
        }
        Ok(events)
    }

    /// The orders of `event` the scheduler heard tickets of, with their holders' contact.
    pub async fn event_holdings(&self, event: Uuid) -> Result<Vec<HoldingRow>, Error> {
        let rows = sqlx::query(
            "SELECT order_id, email, phone, language, seats FROM scheduler_holdings \
             WHERE event_id = $1 AND email IS NOT NULL ORDER BY order_id",
        )
        .bind(uuid_text(event))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let order: String = row.try_get("order_id")?;
                Ok(HoldingRow {
                    order_id: parse_uuid("scheduler_holdings.order_id", &order)?,
                    email: row.try_get("email")?,
                    phone: row.try_get("phone")?,
                    language: row.try_get("language")?,
                    seats: row.try_get("seats")?,
                })
            })
            .collect()
    }

    /// Every event not cancelled that starts after `from_ms`, by organizer, with the seats still
    /// valid of those issued in `[from_ms, to_ms)` and before `to_ms`, and the amounts of the
    /// orders confirmed in `[from_ms, to_ms)` (from `scheduler_holdings`).
    pub async fn live_event_sales(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<LiveEventSalesRow>, Error> {
        let events = sqlx::query(
            "SELECT e.id, e.organizer_id, u.email, u.language, e.name, e.starts_at, e.time_zone \
             FROM events e JOIN users u ON u.id = e.organizer_id \
             WHERE e.cancelled_at IS NULL AND e.starts_at > $1 \
             ORDER BY e.organizer_id, e.starts_at, e.id LIMIT $2",
        )
        .bind(from_ms)
        .bind(SUMMARY_EVENTS_MAX)
        .fetch_all(&self.pool)
        .await?;
        let tickets = sqlx::query(
            "SELECT event_id, CAST(SUM(seat_count) AS BIGINT) AS total, \
             CAST(SUM(CASE WHEN issued_at >= $1 THEN seat_count ELSE 0 END) AS BIGINT) AS recent \
             FROM scheduler_holdings WHERE issued_at < $2 GROUP BY event_id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        let revenue = sqlx::query(
            "SELECT event_id, currency, CAST(SUM(amount) AS BIGINT) AS amount \
             FROM scheduler_holdings WHERE currency IS NOT NULL \
             AND confirmed_at >= $1 AND confirmed_at < $2 \
             GROUP BY event_id, currency ORDER BY event_id, currency",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(events.len());
        for row in &events {
            let id: String = row.try_get("id")?;
            let organizer: String = row.try_get("organizer_id")?;
            let (mut sold_in_window, mut sold_total) = (0, 0);
            for t in &tickets {
                if t.try_get::<String, _>("event_id")? == id {
                    sold_total = t.try_get::<Option<i64>, _>("total")?.unwrap_or(0);
                    sold_in_window = t.try_get::<Option<i64>, _>("recent")?.unwrap_or(0);
                }
            }
            let mut amounts = Vec::new();
            for r in &revenue {
                if r.try_get::<String, _>("event_id")? == id {
                    amounts.push((r.try_get("currency")?, r.try_get("amount")?));
                }
            }
            out.push(LiveEventSalesRow {
                organizer_id: parse_uuid("events.organizer_id", &organizer)?,
                organizer_email: row.try_get("email")?,
                organizer_language: row.try_get("language")?,
                event_id: parse_uuid("events.id", &id)?,
                name: row.try_get("name")?,
                starts_at: row.try_get("starts_at")?,
                time_zone: row.try_get("time_zone")?,
                sold_in_window,
                sold_total,
                revenue: amounts,
            });
        }
        Ok(out)
    }

    /// Whether `job` ran for `due_key` already.
    pub async fn job_ran(&self, job: &str, due_key: &str) -> Result<bool, Error> {
        let row = sqlx::query("SELECT 1 FROM job_runs WHERE job = $1 AND due_key = $2")
            .bind(job)
            .bind(due_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Forgets runs older than `before_ms`.
    pub async fn job_runs_purge(&self, before_ms: i64) -> Result<u64, Error> {
        let done = sqlx::query("DELETE FROM job_runs WHERE ran_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

impl CheckoutTx {
    /// The order's event and buyer's language, with its amount when it has one to pay (from
    /// `OrderCreated`, or a free order's `OrderConfirmed`), whichever event came first.
    pub async fn holding_about(
        &mut self,
        (order, event): (Uuid, Uuid),
        language: &str,
        amount: Option<(i64, &str)>,
        now_ms: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO scheduler_holdings (order_id, event_id, language, amount, currency, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (order_id) DO UPDATE \
             SET language = excluded.language, amount = excluded.amount, \
             currency = excluded.currency, updated_at = excluded.updated_at",
        )
        .bind(uuid_text(order))
        .bind(uuid_text(event))
        .bind(language)
        .bind(amount.map_or(0, |(a, _)| a))
        .bind(amount.map(|(_, c)| c))
        .bind(now_ms)
        .execute(self.connection())
        .await?;
        Ok(())
    }

    /// When the order was confirmed (from `OrderConfirmed`).
    pub async fn holding_confirmed(
        &mut self,
        (order, event): (Uuid, Uuid),
        at_ms: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO scheduler_holdings (order_id, event_id, confirmed_at, updated_at) \
             VALUES ($1, $2, $3, $3) ON CONFLICT (order_id) DO UPDATE \
             SET confirmed_at = excluded.confirmed_at, updated_at = excluded.updated_at",
        )
        .bind(uuid_text(order))
        .bind(uuid_text(event))
        .bind(at_ms)
        .execute(self.connection())
        .await?;
        Ok(())
    }

    /// The order's issued seats and the holder's contact (from `TicketsIssued` at `at_ms`).
    pub async fn holding_issued(
        &mut self,
        (order, event): (Uuid, Uuid),
        (email, phone): (&str, Option<&str>),
        (seats, seat_count): (&str, i64),
        at_ms: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO scheduler_holdings (order_id, event_id, email, phone, seats, seat_count, \
             issued_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (order_id) DO UPDATE SET email = excluded.email, phone = excluded.phone, \
             seats = excluded.seats, seat_count = excluded.seat_count, \
             issued_at = COALESCE(scheduler_holdings.issued_at, excluded.issued_at), \
             updated_at = excluded.updated_at",
        )
        .bind(uuid_text(order))
        .bind(uuid_text(event))
        .bind(email)
        .bind(phone)
        .bind(seats)
        .bind(seat_count)
        .bind(at_ms)
        .execute(self.connection())
        .await?;
        Ok(())
    }

    /// The seats still valid after a refund (from `TicketsVoided`).
    pub async fn holding_kept(
        &mut self,
        order: Uuid,
        (seats, seat_count): (&str, i64),
        now_ms: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE scheduler_holdings SET seats = $2, seat_count = $3, updated_at = $4 \
             WHERE order_id = $1",
        )
        .bind(uuid_text(order))
        .bind(seats)
        .bind(seat_count)
        .bind(now_ms)
        .execute(self.connection())
        .await?;
        Ok(())
    }

    /// Claims the run of `job` for `due_key`: true for the first claim, false when another
    /// scheduler's claim committed first (on PostgreSQL a concurrent claim waits for the first
    /// to commit or roll back).
    pub async fn claim_job_run(
        &mut self,
        job: &str,
        due_key: &str,
        holder: &str,
        now_ms: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO job_runs (job, due_key, holder, ran_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(job)
        .bind(due_key)
        .bind(holder)
        .bind(now_ms)
        .execute(self.connection())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
