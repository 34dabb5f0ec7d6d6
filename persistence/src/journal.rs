//! The event journal and snapshots: the SQL implementation of [`Journal`].
//!
//! An append is the group commit of one actor batch: one transaction, one multi-row `INSERT` per
//! [`INSERT_ROWS_MAX`] records, fenced by the writer's epochs in one statement. A snapshot replaces the previous
//! one only if it is newer, and trims the journal it covers.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

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
    /// `Some` on a clustered node: fence by the shard's epoch.
    cluster: Option<Writer>,
}

/// Who writes a clustered journal: the node, and the shard count that maps events to shards.
#[derive(Clone, Debug)]
pub(crate) struct Writer {
    pub(crate) shards: u32,
    pub(crate) node_id: Arc<str>,
}

/// (shard, epoch) pairs of one transaction.
type Fences = BTreeSet<(u32, u64)>;

impl SqlJournal {
    pub(crate) fn new(store: Store, cluster: Option<Writer>) -> Self {
        Self { store, cluster }
    }

    /// The fence of this journal, run inside the writer's transaction: of the (event, epoch)
    /// pairs the transaction writes, the (shard, epoch) pairs that are no longer this node's
    /// current ownership. A node that is not clustered is the only writer of its events (its
    /// epoch never changes; the primary key still refuses a second writer's rows), so only a
    /// clustered journal checks. On PostgreSQL that is one statement whatever the shards
    /// touched (`holdfast_journal_fence`, migration 0014); see ARCHITECTURE.md, "The fence".
    async fn fence(
        &self,
        conn: &mut AnyConnection,
        writes: impl IntoIterator<Item = (EventId, u64)>,
    ) -> Result<Fences, JournalError> {
        let Some(writer) = &self.cluster else {
            return Ok(Fences::new());
        };
        let pairs: Fences = writes
            .into_iter()
            .map(|(event, epoch)| (event.shard(writer.shards), epoch))
            .collect();
        if pairs.is_empty() {
            return Ok(pairs);
        }
        match self.store.backend() {
            crate::Backend::Postgres => postgres_fence(conn, &writer.node_id, &pairs).await,
            // SQLite writers are serialised by BEGIN IMMEDIATE already: a plain read is a fence.
            crate::Backend::Sqlite => sqlite_fence(conn, &writer.node_id, pairs).await,
        }
    }

    /// Fails with [`JournalError::Fenced`] unless `epoch` is still `event`'s shard's epoch
    /// owned by this node.
    async fn fence_one(
        &self,
        conn: &mut AnyConnection,
        event: EventId,
        epoch: u64,
    ) -> Result<(), JournalError> {
        if self.fence(conn, [(event, epoch)]).await?.is_empty() {
            Ok(())
        } else {
            Err(JournalError::Fenced { epoch })
        }
    }
}

/// One call of `holdfast_journal_fence`: takes this node's fence lock shared, then reads
/// every pair's shard row in a snapshot taken after the lock was granted.
async fn postgres_fence(
    conn: &mut AnyConnection,
    node_id: &str,
    pairs: &Fences,
) -> Result<Fences, JournalError> {
    let (shards, epochs) = fence_lists(pairs);
    let rows =
        sqlx::query("SELECT stale_shard, stale_epoch FROM holdfast_journal_fence($1, $2, $3)")
            .bind(node_id)
            .bind(shards)
            .bind(epochs)
            .fetch_all(&mut *conn)
            .await
            .map_err(storage)?;
    stale_pairs(&rows)
}

/// The fence's arguments: shards and epochs as comma-separated lists (the `Any` driver binds
/// no arrays).
fn fence_lists(pairs: &Fences) -> (String, String) {
    let mut shards = String::with_capacity(pairs.len() * 4);
    let mut epochs = String::with_capacity(pairs.len() * 4);
    for (i, (shard, epoch)) in pairs.iter().enumerate() {
        if i > 0 {
            shards.push(',');
            epochs.push(',');
        }
        let _ = write!(shards, "{shard}");
        let _ = write!(epochs, "{epoch}");
    }
    (shards, epochs)
}

/// The fence's answer: the (shard, epoch) pairs that are no longer the writer's.
fn stale_pairs(rows: &[sqlx::any::AnyRow]) -> Result<Fences, JournalError> {
    rows.iter()
        .map(|row| {
            let shard = to_u64(row.try_get("stale_shard").map_err(storage)?, "shard")?;
            let shard = u32::try_from(shard)
                .map_err(|_| storage(Error::Corrupt(format!("shard {shard}"))))?;
            Ok((
                shard,
                to_u64(row.try_get("stale_epoch").map_err(storage)?, "epoch")?,
            ))
        })
        .collect()
}

async fn sqlite_fence(
    conn: &mut AnyConnection,
    node_id: &str,
    pairs: Fences,
) -> Result<Fences, JournalError> {
    let mut stale = Fences::new();
    for (shard, epoch) in pairs {
        let current = sqlx::query(
            "SELECT 1 FROM cluster_shards WHERE shard = $1 AND epoch = $2 AND owner = $3",
        )
        .bind(i64::from(shard))
        .bind(to_i64(epoch, "epoch").map_err(storage)?)
        .bind(node_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(storage)?;
        if current.is_none() {
            stale.insert((shard, epoch));
        }
    }
    Ok(stale)
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

/// [`insert_many_sql`] of `rows` rows fused with the fence: `$1` … `$(1 + 4 rows)` as there,
/// then the fence's writer, shards and epochs. Inserts only if no pair is stale; returns the
/// stale pairs. The fence is materialised once, before any row is inserted.
fn fused_insert_sql(rows: usize) -> String {
    let p = 2 + 4 * rows;
    let insert = insert_many_sql(rows);
    let values = insert
        .strip_prefix("INSERT INTO journal (event_id, seq, epoch, payload, written_at) ")
        .unwrap_or(&insert);
    format!(
        "WITH fence AS MATERIALIZED (SELECT stale_shard, stale_epoch FROM holdfast_journal_fence(${p}, ${}, ${})), \
         written AS (INSERT INTO journal (event_id, seq, epoch, payload, written_at) \
         SELECT * FROM ({values}) AS v WHERE NOT EXISTS (SELECT 1 FROM fence)) \
         SELECT stale_shard, stale_epoch FROM fence",
        p + 1,
        p + 2
    )
}

/// Rows per multi-event `INSERT`: 1 + 4 × 400 bind parameters.
const INSERT_MANY_ROWS_MAX: usize = 400;

/// One row of a multi-event `INSERT`: event id, seq, epoch, payload.
type InsertRow<'a> = (String, i64, i64, &'a [u8]);

/// One batch of a transaction: its event, its epoch, and its rows in the transaction's rows.
struct Batch {
    event_id: EventId,
    epoch: u64,
    rows: Range<usize>,
}

/// Why [`SqlJournal::write`] failed: the fence, or an `INSERT` (the caller maps conflicts).
enum WriteError {
    Fence(JournalError),
    Insert(sqlx::Error),
}

impl SqlJournal {
    /// Every batch of `appends` in one transaction: fenced batches are refused one by one, the
    /// others are inserted together. Any other failure fails the whole transaction.
    async fn try_append_many(
        &self,
        appends: &[Append],
    ) -> Result<Vec<Result<(), JournalError>>, JournalError> {
        let mut rows: Vec<InsertRow<'_>> = Vec::new();
        let mut batches = Vec::with_capacity(appends.len());
        for a in appends {
            let start = rows.len();
            push_rows(&mut rows, a.event_id, a.epoch, &a.records)?;
            batches.push(Batch {
                event_id: a.event_id,
                epoch: a.epoch,
                rows: start..rows.len(),
            });
        }
        let mut tx = self
            .store
            .begin_write(crate::Writer::Journal)
            .await
            .map_err(storage)?;
        let fenced = match self.write(&mut tx, &batches, &rows).await {
            Ok(fenced) => fenced,
            Err(WriteError::Fence(e)) => return Err(e),
            Err(WriteError::Insert(e)) => return Err(storage(e)),
        };
        tx.commit().await.map_err(storage)?;
        Ok(batches
            .iter()
            .zip(fenced)
            .map(|(b, fenced)| {
                if fenced {
                    Err(JournalError::Fenced { epoch: b.epoch })
                } else {
                    Ok(())
                }
            })
            .collect())
    }

    /// Whether the fence rides on the first `INSERT` (a clustered journal on PostgreSQL).
    fn fuses_fence(&self) -> bool {
        self.cluster.is_some() && self.store.backend() == crate::Backend::Postgres
    }

    /// Fences `batches` and inserts the rows of those that pass, in `conn`'s transaction;
    /// returns per batch whether it was fenced. On a clustered PostgreSQL journal the fence and
    /// the first `INSERT` are one statement, which inserts only if no batch is fenced: the usual
    /// group commit is then one statement whatever the shards it touches. If a batch is fenced,
    /// the others are inserted by the statements that follow (the fence lock is held from the
    /// first statement to the commit, so the fence's answer stays true until then).
    async fn write(
        &self,
        conn: &mut AnyConnection,
        batches: &[Batch],
        rows: &[InsertRow<'_>],
    ) -> Result<Vec<bool>, WriteError> {
        let writes = batches.iter().map(|b| (b.event_id, b.epoch));
        let stale = if self.fuses_fence() && !rows.is_empty() {
            let first = &rows[..rows.len().min(INSERT_MANY_ROWS_MAX)];
            let stale = self.fused_insert(conn, writes, first).await?;
            if stale.is_empty() {
                insert_rows(conn, &rows[first.len()..]).await?;
                return Ok(vec![false; batches.len()]);
            }
            stale
        } else {
            self.fence(conn, writes).await.map_err(WriteError::Fence)?
        };
        let fenced: Vec<bool> = batches
            .iter()
            .map(|b| self.is_stale(&stale, b.event_id, b.epoch))
            .collect();
        let kept: Vec<InsertRow<'_>> = batches
            .iter()
            .zip(&fenced)
            .filter(|(_, fenced)| !**fenced)
            .flat_map(|(b, _)| rows[b.rows.clone()].iter().cloned())
            .collect();
        insert_rows(conn, &kept).await?;
        Ok(fenced)
    }

    fn is_stale(&self, stale: &Fences, event_id: EventId, epoch: u64) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|w| stale.contains(&(event_id.shard(w.shards), epoch)))
    }

    /// `rows` (at most [`INSERT_MANY_ROWS_MAX`]) inserted by the statement that calls the
    /// fence, only if no batch is fenced; returns the stale pairs.
    async fn fused_insert(
        &self,
        conn: &mut AnyConnection,
        writes: impl IntoIterator<Item = (EventId, u64)>,
        rows: &[InsertRow<'_>],
    ) -> Result<Fences, WriteError> {
        let Some(writer) = &self.cluster else {
            return Ok(Fences::new());
        };
        let pairs: Fences = writes
            .into_iter()
            .map(|(event, epoch)| (event.shard(writer.shards), epoch))
            .collect();
        let (shards, epochs) = fence_lists(&pairs);
        let sql = fused_insert_sql(rows.len());
        let mut query = sqlx::query(&sql).bind(now_ms());
        for (event_id, seq, epoch, payload) in rows {
            query = query
                .bind(event_id.as_str())
                .bind(*seq)
                .bind(*epoch)
                .bind(*payload);
        }
        let stale = query
            .bind(writer.node_id.as_ref())
            .bind(shards)
            .bind(epochs)
            .fetch_all(&mut *conn)
            .await
            .map_err(WriteError::Insert)?;
        stale_pairs(&stale).map_err(WriteError::Fence)
    }
}

/// Appends `records` of one batch to `rows`.
fn push_rows<'a>(
    rows: &mut Vec<InsertRow<'a>>,
    event_id: EventId,
    epoch: u64,
    records: &'a [Record],
) -> Result<(), JournalError> {
    let event_id = uuid_text(event_id.0);
    let epoch = to_i64(epoch, "epoch").map_err(storage)?;
    for r in records {
        rows.push((
            event_id.clone(),
            to_i64(r.seq, "seq").map_err(storage)?,
            epoch,
            r.payload.as_slice(),
        ));
    }
    Ok(())
}

/// `rows` in multi-event `INSERT`s of at most [`INSERT_MANY_ROWS_MAX`] rows.
async fn insert_rows(conn: &mut AnyConnection, rows: &[InsertRow<'_>]) -> Result<(), WriteError> {
    for chunk in rows.chunks(INSERT_MANY_ROWS_MAX) {
        let sql = insert_many_sql(chunk.len());
        let mut query = sqlx::query(&sql).bind(now_ms());
        for (event_id, seq, epoch, payload) in chunk {
            query = query
                .bind(event_id.as_str())
                .bind(*seq)
                .bind(*epoch)
                .bind(*payload);
        }
        query
            .execute(&mut *conn)
            .await
            .map_err(WriteError::Insert)?;
    }
    Ok(())
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
        if self.fuses_fence() {
            let mut rows = Vec::with_capacity(records.len());
            push_rows(&mut rows, event_id, epoch, records)?;
            let batch = Batch {
                event_id,
                epoch,
                rows: 0..rows.len(),
            };
            let mut tx = self
                .store
                .begin_write(crate::Writer::Journal)
                .await
                .map_err(storage)?;
            // On error the dropped transaction rolls back: a batch is stored whole or not at all.
            let fenced = match self.write(&mut tx, &[batch], &rows).await {
                Ok(fenced) => fenced,
                Err(WriteError::Fence(e)) => return Err(e),
                Err(WriteError::Insert(e)) if is_unique_violation(&e) => {
                    return Err(JournalError::Conflict { seq: first.seq });
                }
                Err(WriteError::Insert(e)) => return Err(storage(e)),
            };
            if fenced.first().copied().unwrap_or(false) {
                return Err(JournalError::Fenced { epoch });
            }
            tx.commit().await.map_err(storage)?;
            return Ok(());
        }
        let event = event_id;
        let event_id = uuid_text(event_id.0);
        let epoch_db = to_i64(epoch, "epoch").map_err(storage)?;
        let seqs = records
            .iter()
            .map(|r| to_i64(r.seq, "seq"))
            .collect::<Result<Vec<_>, _>>()
            .map_err(storage)?;
        let written_at = now_ms();

        let mut tx = self
            .store
            .begin_write(crate::Writer::Journal)
            .await
            .map_err(storage)?;
        self.fence_one(&mut tx, event, epoch).await?;
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

        let mut tx = self
            .store
            .begin_write(crate::Writer::Journal)
            .await
            .map_err(storage)?;
        self.fence_one(&mut tx, event, epoch).await?;
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
