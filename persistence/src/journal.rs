//! The event journal and snapshots: the SQL implementation of [`Journal`].
//!
//! An append is the group commit of one actor batch: one transaction, one multi-row `INSERT` per
//! [`INSERT_ROWS_MAX`] records, fenced by the writer's epoch. A snapshot replaces the previous
//! one only if it is newer, and trims the journal it covers.

use std::fmt::Write as _;

use async_trait::async_trait;
use holdfast_actors::EventId;
use holdfast_actors::actor::{
    Append, Journal, JournalError, Record, Snapshot, Stored, append_each,
};
use sqlx::{AnyConnection, Row};

use crate::{Error, Store, is_unique_violation, now_ms, to_i64, uuid_text};

/// Rows per `INSERT` statement: 3 + 2 × 500 bind parameters stay far below the limits of both
/// backends (SQLite 32766, PostgreSQL 65535).
pub(crate) const INSERT_ROWS_MAX: usize = 500;

/// The journal of every event in one [`Store`]; cheap to clone.
#[derive(Clone, Debug)]
pub struct SqlJournal {
    store: Store,
    /// `Some(shards)` on a clustered node: fence by the shard's epoch.
    shards: Option<u32>,
}

impl SqlJournal {
    pub(crate) fn new(store: Store, shards: Option<u32>) -> Self {
        Self { store, shards }
    }

    /// The fence of this journal, run inside the writer's transaction. A node that is not
    /// clustered is the only writer of its events (its epoch never changes; the primary key
    /// still refuses a second writer's rows), so only a clustered journal checks: against the
    /// shard's epoch, a one-row lookup.
    async fn fence(
        &self,
        conn: &mut AnyConnection,
        event_id: EventId,
        epoch: u64,
    ) -> Result<(), JournalError> {
        match self.shards {
            None => Ok(()),
            Some(shards) => {
                check_shard_fence(conn, self.store.backend(), event_id.shard(shards), epoch).await
            }
        }
    }
}

/// Fails with [`JournalError::Fenced`] unless `epoch` is the shard's current epoch. On
/// PostgreSQL the row is read `FOR SHARE`, so a claim of the shard waits for this transaction:
/// a write is either committed before the move or refused after it.
async fn check_shard_fence(
    conn: &mut AnyConnection,
    backend: crate::Backend,
    shard: u32,
    epoch: u64,
) -> Result<(), JournalError> {
    let sql = match backend {
        crate::Backend::Postgres => "SELECT epoch FROM cluster_shards WHERE shard = $1 FOR SHARE",
        // SQLite writers are serialised by BEGIN IMMEDIATE already.
        crate::Backend::Sqlite => "SELECT epoch FROM cluster_shards WHERE shard = $1",
    };
    let row = sqlx::query(sql)
        .bind(i64::from(shard))
        .fetch_optional(&mut *conn)
        .await
        .map_err(storage)?;
    let current = match row {
        Some(row) => to_u64(row.try_get::<i64, _>("epoch").map_err(storage)?, "epoch")?,
        None => return Err(JournalError::Fenced { epoch }),
    };
    if current == epoch {
        Ok(())
    } else {
        Err(JournalError::Fenced { epoch })
    }
}

fn storage(error: impl Into<Error>) -> JournalError {
    JournalError::Storage(Box::new(error.into()))
}

fn to_u64(value: i64, what: &str) -> Result<u64, JournalError> {
    u64::try_from(value).map_err(|_| storage(Error::Corrupt(format!("negative {what} {value}"))))
}

/// `INSERT` of `rows` records. `$1` event id, `$2` epoch, `$3` written at are shared; each row
/// then binds its seq and payload. Built by hand because `QueryBuilder` on `Any` emits `?`,
/// which PostgreSQL rejects.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 24);
    sql.push_str("INSERT INTO journal (event_id, seq, epoch, payload, written_at) VALUES ");
    for row in 0..rows {
        let seq = 4 + 2 * row;
        if row > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "($1, ${seq}, $2, ${}, $3)", seq + 1);
    }
    sql
}

/// `INSERT` of `rows` records of any events: `$1` written at is shared; each row binds its event
/// id, seq, epoch and payload.
fn insert_many_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 32);
    sql.push_str("INSERT INTO journal (event_id, seq, epoch, payload, written_at) VALUES ");
    for row in 0..rows {
        let p = 2 + 4 * row;
        if row > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "(${p}, ${}, ${}, ${}, $1)", p + 1, p + 2, p + 3);
    }
    sql
}

/// Rows per multi-event `INSERT`: 1 + 4 × 400 bind parameters.
const INSERT_MANY_ROWS_MAX: usize = 400;

impl SqlJournal {
    /// Every batch of `appends` in one transaction: fenced batches are refused one by one, the
    /// others are inserted together. Any other failure fails the whole transaction.
    async fn try_append_many(
        &self,
        appends: &[Append],
    ) -> Result<Vec<Result<(), JournalError>>, JournalError> {
        let mut tx = self.store.begin_write().await.map_err(storage)?;
        let mut results = Vec::with_capacity(appends.len());
        let mut rows: Vec<(String, i64, i64, &[u8])> = Vec::new();
        for a in appends {
            match self.fence(&mut tx, a.event_id, a.epoch).await {
                Ok(()) => {}
                Err(fenced @ JournalError::Fenced { .. }) => {
                    results.push(Err(fenced));
                    continue;
                }
                Err(e) => return Err(e),
            }
            let event_id = uuid_text(a.event_id.0);
            let epoch = to_i64(a.epoch, "epoch").map_err(storage)?;
            for r in &a.records {
                rows.push((
                    event_id.clone(),
                    to_i64(r.seq, "seq").map_err(storage)?,
                    epoch,
                    r.payload.as_slice(),
                ));
            }
            results.push(Ok(()));
        }
        let written_at = now_ms();
        for chunk in rows.chunks(INSERT_MANY_ROWS_MAX) {
            let sql = insert_many_sql(chunk.len());
            let mut query = sqlx::query(&sql).bind(written_at);
            for (event_id, seq, epoch, payload) in chunk {
                query = query
                    .bind(event_id.as_str())
                    .bind(*seq)
                    .bind(*epoch)
                    .bind(*payload);
            }
            query.execute(&mut *tx).await.map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(results)
    }
}

#[async_trait]
impl Journal for SqlJournal {
    /// One transaction for all; if it fails (a position written twice, say), each batch is
    /// retried alone so only the faulty one fails.
    async fn append_many(&self, appends: &[Append]) -> Vec<Result<(), JournalError>> {
        if appends.len() > 1 {
            match self.try_append_many(appends).await {
                Ok(results) => return results,
                Err(e) => tracing::debug!(error = %e, "group commit failed; appending one by one"),
            }
        }
        append_each(self, appends).await
    }

    async fn append(
        &self,
        event_id: EventId,
        epoch: u64,
        records: &[Record],
    ) -> Result<(), JournalError> {
        let Some(first) = records.first() else {
            return Ok(());
        };
        let event = event_id;
        let event_id = uuid_text(event_id.0);
        let epoch_db = to_i64(epoch, "epoch").map_err(storage)?;
        let seqs = records
            .iter()
            .map(|r| to_i64(r.seq, "seq"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        let written_at = now_ms();

        let mut tx = self.store.begin_write().await.map_err(storage)?;
        self.fence(&mut tx, event, epoch).await?;
        let mut seqs = seqs.into_iter();
        for chunk in records.chunks(INSERT_ROWS_MAX) {
            let sql = insert_sql(chunk.len());
            let mut query = sqlx::query(&sql)
                .bind(event_id.as_str())
                .bind(epoch_db)
                .bind(written_at);
            for (record, seq) in chunk.iter().zip(seqs.by_ref()) {
                query = query.bind(seq).bind(record.payload.as_slice());
            }
            // On error the dropped transaction rolls back: a batch is stored whole or not at all.
            query.execute(&mut *tx).await.map_err(|e| {
                if is_unique_violation(&e) {
                    JournalError::Conflict { seq: first.seq }
                } else {
                    storage(e)
                }
            })?;
        }
        tx.commit().await.map_err(storage)?;
        Ok(())
    }

    async fn load(&self, event_id: EventId) -> Result<Stored, JournalError> {
        let event_id = uuid_text(event_id.0);
        // One read snapshot, so a concurrent trim cannot open a gap between the two reads.
        let mut tx = self.store.begin_read().await.map_err(storage)?;
        let snapshot = sqlx::query("SELECT seq, state FROM snapshots WHERE event_id = $1")
            .bind(event_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?
            .map(|row| -> Result<Snapshot, JournalError> {
                Ok(Snapshot {
                    seq: to_u64(row.try_get("seq").map_err(storage)?, "seq")?,
                    state: row.try_get("state").map_err(storage)?,
                })
            })
            .transpose()?;
        let after = match &snapshot {
            Some(s) => to_i64(s.seq, "seq").map_err(storage)?,
            None => 0,
        };
        let tail = sqlx::query(
            "SELECT seq, payload FROM journal WHERE event_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(event_id.as_str())
        .bind(after)
        .fetch_all(&mut *tx)
        .await
        .map_err(storage)?
        .into_iter()
        .map(|row| {
            Ok(Record {
                seq: to_u64(row.try_get("seq").map_err(storage)?, "seq")?,
                payload: row.try_get("payload").map_err(storage)?,
            })
        })
        .collect::<Result<Vec<_>, JournalError>>()?;
        tx.commit().await.map_err(storage)?;
        Ok(Stored { snapshot, tail })
    }

    async fn save_snapshot(
        &self,
        event_id: EventId,
        epoch: u64,
        snapshot: Snapshot,
    ) -> Result<(), JournalError> {
        let event = event_id;
        let event_id = uuid_text(event_id.0);
        let epoch_db = to_i64(epoch, "epoch").map_err(storage)?;
        let seq = to_i64(snapshot.seq, "seq").map_err(storage)?;

        let mut tx = self.store.begin_write().await.map_err(storage)?;
        self.fence(&mut tx, event, epoch).await?;
        sqlx::query(
            "INSERT INTO snapshots (event_id, seq, epoch, state, taken_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (event_id) DO UPDATE SET seq = excluded.seq, epoch = excluded.epoch, \
             state = excluded.state, taken_at = excluded.taken_at \
             WHERE snapshots.seq < excluded.seq",
        )
        .bind(event_id.as_str())
        .bind(seq)
        .bind(epoch_db)
        .bind(snapshot.state)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        // Whether or not it replaced the stored one, a snapshot at `seq` covers the rows up to it.
        sqlx::query("DELETE FROM journal WHERE event_id = $1 AND seq <= $2")
            .bind(event_id.as_str())
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        tx.commit().await.map_err(storage)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_numbers_shared_then_per_row_parameters() {
        assert_eq!(
            insert_sql(2),
            "INSERT INTO journal (event_id, seq, epoch, payload, written_at) VALUES \
             ($1, $4, $2, $5, $3), ($1, $6, $2, $7, $3)"
        );
    }
}
