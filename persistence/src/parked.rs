//! Parked saga messages: records a consumer could not handle, kept for an admin to retry or
//! discard while the consumer moves on (table `saga_parked`).

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use crate::{Error, Store, parse_uuid, uuid_text};

/// Parked rows listed at most per call.
pub const PARKED_PAGE_MAX: u32 = 500;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedRow {
    pub id: Uuid,
    /// The consumer group without the deployment's prefix (`orders`, `payments`, ...).
    pub group: String,
    pub topic: String,
    pub key: String,
    /// The saga event id, or `offset:<topic>:<partition>:<offset>` for a record that did not decode.
    pub event_id: String,
    pub order_id: Option<String>,
    pub payload: Vec<u8>,
    pub error: String,
    pub attempts: i64,
    pub parked_at: i64,
}

const COLUMNS: &str =
    "id, group_name, topic, record_key, event_id, order_id, payload, error, attempts, parked_at";

fn parked_row(row: &AnyRow) -> Result<ParkedRow, Error> {
    Ok(ParkedRow {
        id: parse_uuid("saga_parked.id", &row.try_get::<String, _>("id")?)?,
        group: row.try_get("group_name")?,
        topic: row.try_get("topic")?,
        key: row.try_get("record_key")?,
        event_id: row.try_get("event_id")?,
        order_id: row.try_get("order_id")?,
        payload: row.try_get("payload")?,
        error: row.try_get("error")?,
        attempts: row.try_get("attempts")?,
        parked_at: row.try_get("parked_at")?,
    })
}

impl Store {
    /// Parks a record. Parking the same (group, event) again keeps the first row and adds the
    /// attempts, with the latest error: a redelivered poison record does not pile up.
    pub async fn park(&self, row: &ParkedRow) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO saga_parked (id, group_name, topic, record_key, event_id, order_id, \
             payload, error, attempts, parked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (group_name, event_id) DO UPDATE SET error = excluded.error, \
             attempts = saga_parked.attempts + excluded.attempts, parked_at = excluded.parked_at",
        )
        .bind(uuid_text(row.id))
        .bind(row.group.clone())
        .bind(row.topic.clone())
        .bind(row.key.clone())
        .bind(row.event_id.clone())
        .bind(row.order_id.clone())
        .bind(row.payload.clone())
        .bind(row.error.clone())
        .bind(row.attempts)
        .bind(row.parked_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The oldest parked records first, at most `limit` (capped at [`PARKED_PAGE_MAX`]).
    pub async fn parked(&self, limit: u32) -> Result<Vec<ParkedRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM saga_parked ORDER BY parked_at, id LIMIT $1"
        ))
        .bind(i64::from(limit.min(PARKED_PAGE_MAX)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(parked_row).collect()
    }

    pub async fn parked_one(&self, id: Uuid) -> Result<Option<ParkedRow>, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM saga_parked WHERE id = $1"))
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(parked_row).transpose()
    }

    /// A retry failed: the new error, one more attempt. False when the row is gone.
    pub async fn parked_failed_again(&self, id: Uuid, error: &str) -> Result<bool, Error> {
        let done =
            sqlx::query("UPDATE saga_parked SET error = $1, attempts = attempts + 1 WHERE id = $2")
                .bind(error.to_owned())
                .bind(uuid_text(id))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a parked record (retried successfully, or discarded). False when it was gone.
    pub async fn parked_remove(&self, id: Uuid) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM saga_parked WHERE id = $1")
            .bind(uuid_text(id))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
