//! The PostgreSQL row-lock baseline: what most teams write first. One transaction per hold:
//! insert the hold row, then `UPDATE stock SET available = available - $n WHERE … AND
//! available >= $n`, commit with the server's default `synchronous_commit`. The hot event's row
//! lock is held from the UPDATE to the commit's WAL flush, so holds of one event serialise on it.

use std::str::FromStr as _;

use async_trait::async_trait;
use holdfast_actors::{HoldRef, HoldStatus, HoldView, TicketCode, Timestamp, TypeStock, UserId};
use holdfast_gateway::backend::{BackendError, EventInfo};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{HoldStore, decode_items, encode_items, sold_out, stock};

/// Tables live in their own schema, dropped and created afresh when a baseline starts.
pub const SCHEMA: &str = "holdfast_bench_baseline";

#[derive(Debug)]
pub struct PgHolds {
    pool: PgPool,
}

fn db(e: sqlx::Error) -> BackendError {
    BackendError::Unavailable(format!("postgresql: {e}"))
}

impl PgHolds {
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect(url)
            .await?;
        for statement in [
            format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"),
            format!("CREATE SCHEMA {SCHEMA}"),
            format!(
                "CREATE TABLE {SCHEMA}.stock (event_id TEXT NOT NULL, code TEXT NOT NULL, \
                 capacity INTEGER NOT NULL, available INTEGER NOT NULL CHECK (available >= 0), \
                 PRIMARY KEY (event_id, code))"
            ),
            format!(
                "CREATE TABLE {SCHEMA}.holds (id TEXT PRIMARY KEY, event_id TEXT NOT NULL, \
                 user_id TEXT NOT NULL, items TEXT NOT NULL, placed_at BIGINT NOT NULL, \
                 expires_at BIGINT NOT NULL, status TEXT NOT NULL)"
            ),
            format!("CREATE INDEX holds_event ON {SCHEMA}.holds (event_id, status)"),
        ] {
            sqlx::query(&statement).execute(&pool).await?;
        }
        Ok(Self { pool })
    }
}

fn uuid_text(id: uuid::Uuid) -> String {
    id.simple().to_string()
}

#[async_trait]
impl HoldStore for PgHolds {
    async fn add_event(&self, event: &EventInfo) -> Result<(), BackendError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        for t in &event.ticket_types {
            sqlx::query(&format!(
                "INSERT INTO {SCHEMA}.stock (event_id, code, capacity, available) VALUES ($1, $2, $3, $3)"
            ))
            .bind(uuid_text(event.id.0))
            .bind(t.code.as_str())
            .bind(i32::try_from(t.capacity).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn availability(
        &self,
        event: &EventInfo,
    ) -> Result<Vec<(TicketCode, TypeStock)>, BackendError> {
        let event_id = uuid_text(event.id.0);
        // Held seats are counted from the hold rows, independently of `available`, so the audit's
        // conservation check means something.
        let mut held = std::collections::HashMap::<String, u32>::new();
        let rows = sqlx::query(&format!(
            "SELECT items FROM {SCHEMA}.holds WHERE event_id = $1 AND status = 'active'"
        ))
        .bind(&event_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        for row in rows {
            let items: String = row.try_get("items").map_err(db)?;
            for line in decode_items(&items)? {
                *held
                    .entry(line.ticket_type.as_str().to_owned())
                    .or_default() += line.quantity.get();
            }
        }
        let rows = sqlx::query(&format!(
            "SELECT code, capacity, available FROM {SCHEMA}.stock WHERE event_id = $1"
        ))
        .bind(&event_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = Vec::new();
        for t in &event.ticket_types {
            let row = rows
                .iter()
                .find(|r| {
                    r.try_get::<String, _>("code")
                        .is_ok_and(|c| c == t.code.as_str())
                })
                .ok_or_else(|| BackendError::Internal(format!("no stock row for {}", t.code)))?;
            let capacity: i32 = row.try_get("capacity").map_err(db)?;
            let available: i32 = row.try_get("available").map_err(db)?;
            out.push((
                t.code.clone(),
                stock(
                    u32::try_from(capacity).unwrap_or(0),
                    u32::try_from(available).unwrap_or(0),
                    held.get(t.code.as_str()).copied().unwrap_or(0),
                ),
            ));
        }
        Ok(out)
    }

    async fn hold(&self, hold: &HoldView) -> Result<(), BackendError> {
        let event_id = uuid_text(hold.event_id.0);
        let hold_ref = HoldRef {
            event_id: hold.event_id,
            hold_id: hold.id,
        };
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The insert goes first so the row lock taken by the UPDATE is held as briefly as
        // possible: from the UPDATE to the commit.
        sqlx::query(&format!(
            "INSERT INTO {SCHEMA}.holds (id, event_id, user_id, items, placed_at, expires_at, status) \
             VALUES ($1, $2, $3, $4, $5, $6, 'active')"
        ))
        .bind(hold_ref.to_string())
        .bind(&event_id)
        .bind(uuid_text(hold.user.0))
        .bind(encode_items(&hold.items))
        .bind(hold.placed_at.as_millis())
        .bind(hold.expires_at.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let mut short = false;
        for line in &hold.items {
            let updated = sqlx::query(&format!(
                "UPDATE {SCHEMA}.stock SET available = available - $3 \
                 WHERE event_id = $1 AND code = $2 AND available >= $3"
            ))
            .bind(&event_id)
            .bind(line.ticket_type.as_str())
            .bind(i32::try_from(line.quantity.get()).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if updated.rows_affected() == 0 {
                short = true;
                break;
            }
        }
        if !short {
            return tx.commit().await.map_err(db);
        }
        tx.rollback().await.map_err(db)?;
        // Why not: an unknown event or type, or too few seats.
        let rows = sqlx::query(&format!(
            "SELECT code, available FROM {SCHEMA}.stock WHERE event_id = $1"
        ))
        .bind(&event_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if rows.is_empty() {
            return Err(BackendError::EventNotFound);
        }
        let mut available = Vec::new();
        for line in &hold.items {
            let row = rows
                .iter()
                .find(|r| {
                    r.try_get::<String, _>("code")
                        .is_ok_and(|c| c == line.ticket_type.as_str())
                })
                .ok_or_else(|| {
                    BackendError::Inventory(holdfast_actors::Error::UnknownTicketType(
                        line.ticket_type.clone(),
                    ))
                })?;
            let left: i32 = row.try_get("available").map_err(db)?;
            available.push((line.ticket_type.clone(), u32::try_from(left).unwrap_or(0)));
        }
        Err(sold_out(available))
    }

    async fn get_hold(&self, hold: HoldRef) -> Result<Option<HoldView>, BackendError> {
        let row = sqlx::query(&format!(
            "SELECT user_id, items, placed_at, expires_at, status FROM {SCHEMA}.holds WHERE id = $1"
        ))
        .bind(hold.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let user: String = row.try_get("user_id").map_err(db)?;
        let items: String = row.try_get("items").map_err(db)?;
        let status: String = row.try_get("status").map_err(db)?;
        Ok(Some(HoldView {
            id: hold.hold_id,
            event_id: hold.event_id,
            user: UserId(
                uuid::Uuid::from_str(&user).map_err(|e| BackendError::Internal(e.to_string()))?,
            ),
            items: decode_items(&items)?,
            placed_at: Timestamp(row.try_get("placed_at").map_err(db)?),
            expires_at: Timestamp(row.try_get("expires_at").map_err(db)?),
            status: if status == "released" {
                HoldStatus::Released
            } else {
                HoldStatus::Active
            },
            order_id: None,
        }))
    }

    async fn release(&self, hold: HoldRef) -> Result<(), BackendError> {
        let event_id = uuid_text(hold.event_id.0);
        let mut tx = self.pool.begin().await.map_err(db)?;
        let row = sqlx::query(&format!(
            "UPDATE {SCHEMA}.holds SET status = 'released' WHERE id = $1 AND status = 'active' RETURNING items"
        ))
        .bind(hold.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        // Released already: nothing to give back (idempotent, as in Holdfast).
        let Some(row) = row else {
            return tx.commit().await.map_err(db);
        };
        let items: String = row.try_get("items").map_err(db)?;
        for line in decode_items(&items)? {
            sqlx::query(&format!(
                "UPDATE {SCHEMA}.stock SET available = available + $3 WHERE event_id = $1 AND code = $2"
            ))
            .bind(&event_id)
            .bind(line.ticket_type.as_str())
            .bind(i32::try_from(line.quantity.get()).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }
}
