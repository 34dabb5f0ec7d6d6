//! Idempotency keys of the API: a retried request (same scope, key and body) gets the first
//! response again instead of running twice.
//!
//! A row is inserted before the handler runs (in progress) and completed with the response.
//! Uniqueness of (scope, key) in the database decides which of two concurrent requests runs.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Error, Store};

/// A response kept for replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// The `Location` header of the first answer, if it had one.
    pub location: Option<String>,
    pub body: Vec<u8>,
}

/// What [`Store::idempotency_begin`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// The key is new and now marked in progress: run the handler, then complete or abandon.
    Started,
    /// The same request is still being handled.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
    /// The same request was handled already: answer with its response.
    Done(StoredResponse),
}

/// A key still in progress after this long belongs to a request that died with its process:
/// a retry takes it over. Far above any request timeout.
const IN_PROGRESS_STALE_MS: i64 = 60_000;

/// Times `idempotency_begin` re-inserts after finding the row gone (abandoned in between).
const BEGIN_ATTEMPTS_MAX: usize = 3;

fn classify(row: &AnyRow, request_hash: &[u8]) -> Result<Idempotency, Error> {
    let stored_hash: Vec<u8> = row.try_get("request_hash")?;
    if stored_hash != request_hash {
        return Ok(Idempotency::Mismatch);
    }
    let Some(status) = row.try_get::<Option<i64>, _>("status")? else {
        return Ok(Idempotency::InProgress);
    };
    let status = u16::try_from(status)
        .map_err(|_| Error::Corrupt(format!("idempotency_keys.status {status}")))?;
    Ok(Idempotency::Done(StoredResponse {
        status,
        content_type: row.try_get("content_type")?,
        location: row.try_get("location")?,
        body: row
            .try_get::<Option<Vec<u8>>, _>("body")?
            .unwrap_or_default(),
    }))
}

impl Store {
    /// Claims `key` in `scope` for a request whose body hashes to `request_hash`, or reports
    /// what an earlier request with the same key left.
    pub async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        request_hash: &[u8],
        now_ms: i64,
    ) -> Result<Idempotency, Error> {
        for _ in 0..BEGIN_ATTEMPTS_MAX {
            // Insert first, read only if that lost: no window where two requests both start.
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (scope, idempotency_key, request_hash, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (scope, idempotency_key) DO NOTHING",
            )
            .bind(scope)
            .bind(key)
            .bind(request_hash)
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(Idempotency::Started);
            }
            let row = sqlx::query(
                "SELECT request_hash, status, content_type, location, body, created_at FROM idempotency_keys \
                 WHERE scope = $1 AND idempotency_key = $2",
            )
            .bind(scope)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                let found = classify(&row, request_hash)?;
                let created_at: i64 = row.try_get("created_at")?;
                if found == Idempotency::InProgress && created_at < now_ms - IN_PROGRESS_STALE_MS {
                    // Take over only if nobody else did since we read it.
                    let taken = sqlx::query(
                        "UPDATE idempotency_keys SET created_at = $3 \
                         WHERE scope = $1 AND idempotency_key = $2 AND status IS NULL AND created_at = $4",
                    )
                    .bind(scope)
                    .bind(key)
                    .bind(now_ms)
                    .bind(created_at)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                    if taken == 1 {
                        return Ok(Idempotency::Started);
                    }
                    continue;
                }
                return Ok(found);
            }
        }
        // The key keeps being claimed and abandoned by others: it is busy.
        Ok(Idempotency::InProgress)
    }

    /// Stores the response of the request that started `key`.
    pub async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), Error> {
        let updated = sqlx::query(
            "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5, location = $6 \
             WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(scope)
        .bind(key)
        .bind(i64::from(response.status))
        .bind(response.content_type.as_deref())
        .bind(response.body.as_slice())
        .bind(response.location.as_deref())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            // Purged while the handler ran; the response was still sent, only replay is lost.
            tracing::warn!(
                scope,
                "idempotency key vanished before its response was stored"
            );
        }
        Ok(())
    }

    /// Forgets an in-progress `key` (its handler failed), so a retry runs again. A completed
    /// key is kept.
    pub async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND status IS NULL")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes keys created before `older_than_ms`, finished or not; returns how many.
    pub async fn idempotency_purge(&self, older_than_ms: i64) -> Result<u64, Error> {
        let deleted = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(older_than_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }
}
