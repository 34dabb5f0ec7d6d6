//! Cluster membership and shard ownership: nodes heartbeat into `cluster_nodes`, shards are
//! claimed by compare-and-set on `cluster_shards.epoch`, under the previous owner's fence lock
//! (see [`crate::SqlJournal`]). Clustering needs PostgreSQL; the
//! tables exist on SQLite too so one schema serves both.

use sqlx::Row;
use uuid::Uuid;

use crate::{Backend, Error, Store, to_i64};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: String,
    /// Internal (node-to-node) address other nodes dial.
    pub addr: String,
    /// Public HTTP address, for operators.
    pub http_addr: String,
    pub heartbeat_at_ms: i64,
    pub started_at_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRow {
    pub shard: u32,
    pub owner: Option<String>,
    pub epoch: u64,
}

/// Takes `node`'s fence lock for the rest of the transaction (PostgreSQL: migration 0014),
/// before an epoch of one of its shards is bumped. SQLite serialises writers already.
async fn take_fence(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    node: &str,
) -> Result<(), Error> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT holdfast_fence_take($1) AS taken")
            .bind(node)
            .fetch_one(&mut *conn)
            .await?;
    }
    Ok(())
}

fn shard_row(row: &sqlx::any::AnyRow) -> Result<ShardRow, Error> {
    let shard: i64 = row.try_get("shard")?;
    let epoch: i64 = row.try_get("epoch")?;
    Ok(ShardRow {
        shard: u32::try_from(shard).map_err(|_| Error::Corrupt(format!("shard {shard}")))?,
        owner: row.try_get("owner")?,
        epoch: u64::try_from(epoch).map_err(|_| Error::Corrupt(format!("epoch {epoch}")))?,
    })
}

impl Store {
    /// Creates the shard table for `shards` shards, or checks that an existing cluster has
    /// that many: the count is fixed when the cluster is created.
    pub async fn cluster_init(&self, shards: u32) -> Result<(), Error> {
        let mut tx = self.begin_write(crate::Writer::Cluster).await?;
        sqlx::query("INSERT INTO cluster_meta (name, value) VALUES ('shards', $1) ON CONFLICT (name) DO NOTHING")
            .bind(shards.to_string())
            .execute(&mut *tx)
            .await?;
        let stored: String = sqlx::query("SELECT value FROM cluster_meta WHERE name = 'shards'")
            .fetch_one(&mut *tx)
            .await?
            .try_get("value")?;
        if stored != shards.to_string() {
            return Err(Error::ShardCountMismatch {
                stored,
                configured: shards,
            });
        }
        for first in (0..shards).step_by(500) {
            let last = (first + 500).min(shards);
            let values: Vec<String> = (first..last).map(|s| format!("({s}, NULL, 0)")).collect();
            let sql = format!(
                "INSERT INTO cluster_shards (shard, owner, epoch) VALUES {} ON CONFLICT (shard) DO NOTHING",
                values.join(", ")
            );
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Registers `node` or refreshes its heartbeat and addresses.
    pub async fn node_heartbeat(&self, node: &NodeRow) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO cluster_nodes (node_id, addr, http_addr, heartbeat_at, started_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (node_id) DO UPDATE SET addr = excluded.addr, http_addr = excluded.http_addr, \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(node.node_id.as_str())
        .bind(node.addr.as_str())
        .bind(node.http_addr.as_str())
        .bind(node.heartbeat_at_ms)
        .bind(node.started_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a node that left cleanly and gives up its shards (a new epoch fences it).
    pub async fn node_leave(&self, node_id: &str) -> Result<u64, Error> {
        let mut tx = self.begin_write(crate::Writer::Cluster).await?;
        take_fence(&mut tx, self.backend(), node_id).await?;
        let released = sqlx::query(
            "UPDATE cluster_shards SET owner = NULL, epoch = epoch + 1 WHERE owner = $1",
        )
        .bind(node_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM cluster_nodes WHERE node_id = $1")
            .bind(node_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(released)
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRow>, Error> {
        let rows = sqlx::query("SELECT node_id, addr, http_addr, heartbeat_at, started_at FROM cluster_nodes ORDER BY node_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(NodeRow {
                    node_id: r.try_get("node_id")?,
                    addr: r.try_get("addr")?,
                    http_addr: r.try_get("http_addr")?,
                    heartbeat_at_ms: r.try_get("heartbeat_at")?,
                    started_at_ms: r.try_get("started_at")?,
                })
            })
            .collect()
    }

    pub async fn shards(&self) -> Result<Vec<ShardRow>, Error> {
        let rows = sqlx::query("SELECT shard, owner, epoch FROM cluster_shards ORDER BY shard")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(shard_row).collect()
    }

    pub async fn shard(&self, shard: u32) -> Result<Option<ShardRow>, Error> {
        let row = sqlx::query("SELECT shard, owner, epoch FROM cluster_shards WHERE shard = $1")
            .bind(i64::from(shard))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(shard_row).transpose()
    }

    /// Gives `shard` to `owner` if its epoch is still `expected_epoch`; returns the new epoch,
    /// or `None` when someone else moved it first. The claim holds the previous owner's fence
    /// lock while it bumps the epoch: it waits for that owner's journal writes in flight.
    pub async fn claim_shard(
        &self,
        shard: u32,
        expected_epoch: u64,
        owner: &str,
    ) -> Result<Option<u64>, Error> {
        let shard = i64::from(shard);
        let expected = to_i64(expected_epoch, "epoch")?;
        let mut tx = self.begin_write(crate::Writer::Cluster).await?;
        let previous =
            sqlx::query("SELECT owner FROM cluster_shards WHERE shard = $1 AND epoch = $2")
                .bind(shard)
                .bind(expected)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(previous) = previous else {
            return Ok(None);
        };
        // An epoch without an owner was never written with: nobody to fence.
        if let Some(previous) = previous.try_get::<Option<String>, _>("owner")? {
            take_fence(&mut tx, self.backend(), &previous).await?;
        }
        // `epoch = $3` again: a claim that committed meanwhile took the same lock and bumped it.
        let row = sqlx::query("UPDATE cluster_shards SET owner = $1, epoch = epoch + 1 WHERE shard = $2 AND epoch = $3 RETURNING epoch")
            .bind(owner)
            .bind(shard)
            .bind(expected)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        match row {
            Some(r) => {
                let epoch: i64 = r.try_get("epoch")?;
                Ok(Some(
                    u64::try_from(epoch).map_err(|_| Error::Corrupt(format!("epoch {epoch}")))?,
                ))
            }
            None => Ok(None),
        }
    }

    /// Ids of every event in the catalog (for per-shard counts).
    pub async fn event_ids(&self) -> Result<Vec<Uuid>, Error> {
        let rows = sqlx::query("SELECT id FROM events")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                Uuid::parse_str(&id).map_err(|_| Error::Corrupt(format!("event id {id}")))
            })
            .collect()
    }
}
