//! The organizer's view of one event: its orders and its attendees, read across the orders
//! and tickets services' tables and the accounts (names), never written here.

use sqlx::Row;
use uuid::Uuid;

use crate::{Error, Store, parse_uuid, uuid_text};

/// Rows per page of [`Store::event_orders`] and [`Store::event_attendees`] at most.
pub const ORGANIZER_PAGE_MAX: u32 = 100_000;

/// A paid order of a cancelled event, with the event's cancel reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelledOrderRow {
    pub id: Uuid,
    pub created_at: i64,
    pub reason: String,
}

/// An order of the event with its buyer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventOrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    /// `None` when the account is not known to this store.
    pub buyer_name: Option<String>,
    pub status: String,
    pub amount: i64,
    /// What its refunds pay back or have paid back (all but the failed ones).
    pub refunded_amount: i64,
    pub currency: String,
    /// The ordered lines as JSON (`[{"ticket_type","quantity","price"}]`).
    pub items: String,
    pub hold_expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A ticket of the event (refunded tickets are left out) with its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttendeeRow {
    pub ticket_id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub holder_name: Option<String>,
    pub holder_email: Option<String>,
    pub ticket_type: String,
    pub ticket_type_name: Option<String>,
    /// `valid` or `admitted`.
    pub status: String,
    pub admitted_at: Option<i64>,
}

impl Store {
    /// A page of the event's orders, oldest first, and how many there are in all.
    pub async fn event_orders(
        &self,
        event_id: Uuid,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<EventOrderRow>, u64), Error> {
        let rows = sqlx::query(
            "SELECT o.id, o.user_id, o.email, u.name AS buyer_name, o.status, o.amount, \
             CAST(COALESCE((SELECT SUM(r.amount) FROM refunds r \
                            WHERE r.order_id = o.id AND r.status <> 'failed'), 0) AS BIGINT) \
               AS refunded_amount, \
             o.currency, o.items, o.hold_expires_at, o.created_at, o.updated_at \
             FROM orders o LEFT JOIN users u ON u.id = o.user_id \
             WHERE o.event_id = $1 ORDER BY o.created_at, o.id LIMIT $2 OFFSET $3",
        )
        .bind(uuid_text(event_id))
        .bind(i64::from(limit.min(ORGANIZER_PAGE_MAX)))
        .bind(i64::from(offset))
        .fetch_all(&self.pool)
        .await?;
        let orders = rows
            .iter()
            .map(|row| {
                Ok(EventOrderRow {
                    id: parse_uuid("orders.id", &row.try_get::<String, _>("id")?)?,
                    user_id: parse_uuid("orders.user_id", &row.try_get::<String, _>("user_id")?)?,
                    email: row.try_get("email")?,
                    buyer_name: row.try_get("buyer_name")?,
                    status: row.try_get("status")?,
                    amount: row.try_get("amount")?,
                    refunded_amount: row.try_get("refunded_amount")?,
                    currency: row.try_get("currency")?,
                    items: row.try_get("items")?,
                    hold_expires_at: row.try_get("hold_expires_at")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE event_id = $1")
            .bind(uuid_text(event_id))
            .fetch_one(&self.pool)
            .await?;
        Ok((orders, u64::try_from(total).unwrap_or(0)))
    }

    /// A page of the event's tickets that admit (valid or admitted), in the order they were
    /// issued, and how many there are in all.
    pub async fn event_attendees(
        &self,
        event_id: Uuid,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<AttendeeRow>, u64), Error> {
        let rows = sqlx::query(
            "SELECT t.id, t.order_id, t.user_id, u.name AS holder_name, u.email AS holder_email, \
             t.ticket_type, tt.name AS type_name, t.status, t.admitted_at \
             FROM tickets t LEFT JOIN users u ON u.id = t.user_id \
             LEFT JOIN ticket_types tt ON tt.event_id = t.event_id AND tt.code = t.ticket_type \
             WHERE t.event_id = $1 AND t.status <> 'void' \
             ORDER BY t.created_at, t.order_id, t.ticket_type, t.seat LIMIT $2 OFFSET $3",
        )
        .bind(uuid_text(event_id))
        .bind(i64::from(limit.min(ORGANIZER_PAGE_MAX)))
        .bind(i64::from(offset))
        .fetch_all(&self.pool)
        .await?;
        let attendees = rows
            .iter()
            .map(|row| {
                Ok(AttendeeRow {
                    ticket_id: parse_uuid("tickets.id", &row.try_get::<String, _>("id")?)?,
                    order_id: parse_uuid(
                        "tickets.order_id",
                        &row.try_get::<String, _>("order_id")?,
                    )?,
                    user_id: parse_uuid("tickets.user_id", &row.try_get::<String, _>("user_id")?)?,
                    holder_name: row.try_get("holder_name")?,
                    holder_email: row.try_get("holder_email")?,
                    ticket_type: row.try_get("ticket_type")?,
                    ticket_type_name: row.try_get("type_name")?,
                    status: row.try_get("status")?,
                    admitted_at: row.try_get("admitted_at")?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tickets WHERE event_id = $1 AND status <> 'void'",
        )
        .bind(uuid_text(event_id))
        .fetch_one(&self.pool)
        .await?;
        Ok((attendees, u64::try_from(total).unwrap_or(0)))
    }

    /// Orders of events cancelled at `since_ms` or later whose status is one of `statuses` now,
    /// oldest first from after `after` (the last `(created_at, id)` of the page before), at
    /// most `limit`: what a cancel still has to refund, with the event's cancel reason.
    pub async fn orders_of_cancelled_events(
        &self,
        since_ms: i64,
        statuses: &[&str],
        after: Option<(i64, Uuid)>,
        limit: u32,
    ) -> Result<Vec<CancelledOrderRow>, Error> {
        let placeholders: Vec<String> =
            (0..statuses.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "SELECT o.id, o.created_at, COALESCE(e.cancel_reason, '') FROM orders o \
             JOIN events e ON e.id = o.event_id \
             WHERE e.cancelled_at >= $1 AND (o.created_at > $2 OR (o.created_at = $2 AND o.id > $3)) \
             AND o.status IN ({}) \
             ORDER BY o.created_at, o.id LIMIT ${}",
            placeholders.join(", "),
            statuses.len() + 4
        );
        let (after_at, after_id) =
            after.map_or((i64::MIN, String::new()), |(at, id)| (at, uuid_text(id)));
        let mut query = sqlx::query(&sql)
            .bind(since_ms)
            .bind(after_at)
            .bind(after_id);
        for status in statuses {
            query = query.bind(*status);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                Ok(CancelledOrderRow {
                    id: parse_uuid("orders.id", &id)?,
                    created_at: row.try_get(1)?,
                    reason: row.try_get(2)?,
                })
            })
            .collect()
    }
}
