//! [`SqlBus`]: the durable bus in the application's own database, SQLite or PostgreSQL.
//!
//! Every record goes into one table, `bus_records`, in one transaction per `publish`; its `seq`
//! (autoincrement) is the offset and orders the records of a topic. A consumer group's progress
//! is one row per topic in `bus_offsets`. Both tables come from the persistence crate's
//! migrations (`0009_bus.sql`), so the database must be migrated (`holdfast migrate`, or
//! `Store::migrate`) before the bus is used.
//!
//! The outbox gap: on PostgreSQL two publishers could take seqs 10 and 11 and commit 11 first; a
//! reader that saw 11 would skip 10 forever. So publishers of a topic are serialised by a
//! transaction-scoped advisory lock taken before the insert: within a topic, seqs commit in
//! order. SQLite has one writer at a time, so there is no gap to close there.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::any::Any;
use sqlx::{AnyPool, Row, Transaction};
use tokio::sync::Notify;

use crate::{Bus, Delivery, Error, Record, Subscription};

/// Settings of a [`SqlBus`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlBusOptions {
    /// How often an idle subscription looks for records published by another process. Records
    /// published through the same [`SqlBus`] (or a clone) wake its subscriptions at once.
    pub poll_interval_ms: u64,
    /// Records read per query.
    pub fetch_max: u32,
    /// Prepended to every topic and group name in the database; deliveries carry the names
    /// without it. Lets several deployments or test runs share one database.
    pub prefix: String,
}

impl Default for SqlBusOptions {
    fn default() -> Self {
        Self {
            poll_interval_ms: 200,
            fetch_max: 256,
            prefix: String::new(),
        }
    }
}

/// The database behind a [`SqlBus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn of_url(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(Error::Backend(
                "unsupported database url: expected sqlite:// or postgres://".to_owned(),
            ))
        }
    }
}

/// The durable bus over SQL; cheap to clone, and clones share their wake-ups.
///
/// One partition (0) per topic; a delivery's offset is the record's `seq`. Several members of one
/// group at once each read from the group's last commit, so they may see the same records:
/// there is no partition assignment. Consumers are idempotent anyway (see the crate docs), and
/// a commit never moves a group's offset backwards.
#[derive(Clone, Debug)]
pub struct SqlBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: AnyPool,
    backend: Backend,
    options: SqlBusOptions,
    /// Woken after every publish through this bus.
    published: Notify,
    /// The write turn shared with the other writers of this process on SQLite (see
    /// [`SqlBus::with_writer`]).
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Where writes go, when not to `pool` (see [`SqlBus::with_writer`]).
    write_pool: Option<AnyPool>,
}

/// Rows per `INSERT`: 1 + 3 × 300 bind parameters stay below the limits of both backends.
const INSERT_ROWS_MAX: usize = 300;

/// The high half of the advisory lock keys of bus topics, "HFBS", so they do not collide with
/// other users of advisory locks in the same database.
const ADVISORY_LOCK_SPACE: i64 = 0x4846_4253 << 32;

impl SqlBus {
    /// The bus on an existing, migrated pool (SQLite or PostgreSQL, told apart by its URL).
    pub fn new(pool: AnyPool, options: SqlBusOptions) -> Result<Self, Error> {
        let backend = Backend::of_url(pool.connect_options().database_url.as_str())?;
        Ok(Self::with_backend(pool, backend, options))
    }

    fn with_backend(pool: AnyPool, backend: Backend, options: SqlBusOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                backend,
                options,
                published: Notify::new(),
                write_gate: None,
                write_pool: None,
            }),
        }
    }

    /// Takes the write turn `gate` before each write, shared with the other writers of the
    /// same SQLite database in this process (`holdfast_persistence::Store::write_gate`), so
    /// writers queue in order instead of sleeping in SQLite's busy handler, and writes through
    /// `write_pool` (`Store::write_pool`, SQLite's one writing connection) when given. Set it
    /// before the bus is cloned or subscribed to.
    pub fn with_writer(
        mut self,
        gate: Option<Arc<tokio::sync::Mutex<()>>>,
        write_pool: Option<AnyPool>,
    ) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.write_gate = gate;
            inner.write_pool = write_pool;
        }
        self
    }

    /// Closes the pool; later calls fail.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }

    /// Deletes this bus's records published before `before_ms` that every group reading their
    /// topic has committed (retention, like a Kafka topic's). Returns how many went.
    ///
    /// A group that starts reading a topic after its records were trimmed starts at the oldest
    /// record left.
    pub async fn trim(&self, before_ms: i64) -> Result<u64, Error> {
        let prefix = format!("{}%", self.inner.options.prefix.replace('%', "\\%"));
        let _turn = match &self.inner.write_gate {
            Some(gate) => Some(write_turn(gate).await),
            None => None,
        };
        let done = sqlx::query(
            "DELETE FROM bus_records WHERE published_at < $1 AND topic LIKE $2 \
             AND seq <= (SELECT MIN(o.committed_seq) FROM bus_offsets o \
                         WHERE o.topic = bus_records.topic)",
        )
        .bind(before_ms)
        .bind(prefix)
        .execute(self.inner.writes())
        .await
        .map_err(backend_error)?;
        Ok(done.rows_affected())
    }
}

impl Inner {
    /// The pool writes go through.
    fn writes(&self) -> &AnyPool {
        self.write_pool.as_ref().unwrap_or(&self.pool)
    }

    fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.options.prefix)
    }

    /// Begins a transaction that writes: SQLite takes its write lock up front, PostgreSQL then
    /// takes the advisory lock of each topic in `topics`, in one global order (no deadlock).
    async fn begin_publish(
        &self,
        topics: &[&str],
    ) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.writes().begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let mut keys: Vec<i64> = topics.iter().map(|t| advisory_lock_key(t)).collect();
                keys.sort_unstable();
                keys.dedup();
                for key in keys {
                    sqlx::query("SELECT 1 AS locked FROM pg_advisory_xact_lock($1)")
                        .bind(key)
                        .fetch_one(&mut *tx)
                        .await?;
                }
                Ok(tx)
            }
        }
    }
}

/// Waits for the process's SQLite write turn, recording the wait as the store's own write
/// transactions do (`holdfast_sqlite_write_wait_seconds{writer="bus"}`).
async fn write_turn(gate: &tokio::sync::Mutex<()>) -> tokio::sync::MutexGuard<'_, ()> {
    let asked = std::time::Instant::now();
    let turn = gate.lock().await;
    metrics::histogram!("holdfast_sqlite_write_wait_seconds", "writer" => "bus")
        .record(asked.elapsed().as_secs_f64());
    turn
}

/// The advisory lock of `topic` (its full name): FNV-1a, 32 bits, in the bus's key space.
fn advisory_lock_key(topic: &str) -> i64 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in topic.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    ADVISORY_LOCK_SPACE | i64::from(hash)
}

/// `INSERT` of `rows` records: `$1` published at is shared; each row binds topic, key, payload.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(80 + rows * 20);
    sql.push_str("INSERT INTO bus_records (topic, key, payload, published_at) VALUES ");
    for row in 0..rows {
        let p = 2 + 3 * row;
        if row > 0 {
            sql.push_str(", ");
        }
        let _ = write!(sql, "(${p}, ${}, ${}, $1)", p + 1, p + 2);
    }
    sql
}

/// The next records of `topics` after their positions: `$(2i+1)` topic, `$(2i+2)` position,
/// and the last parameter the limit.
fn fetch_sql(topics: usize) -> String {
    let mut sql = String::from("SELECT seq, topic, key, payload FROM bus_records WHERE ");
    for i in 0..topics {
        if i > 0 {
            sql.push_str(" OR ");
        }
        let _ = write!(sql, "(topic = ${} AND seq > ${})", 2 * i + 1, 2 * i + 2);
    }
    let _ = write!(sql, " ORDER BY seq LIMIT ${}", 2 * topics + 1);
    sql
}

fn backend_error(error: sqlx::Error) -> Error {
    Error::Backend(error.to_string())
}

fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl Bus for SqlBus {
    async fn publish(&self, records: &[Record]) -> Result<(), Error> {
        if records.is_empty() {
            return Ok(());
        }
        let inner = &*self.inner;
        let topics: Vec<String> = records.iter().map(|r| inner.full_name(&r.topic)).collect();
        let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let _turn = match &inner.write_gate {
            Some(gate) => Some(write_turn(gate).await),
            None => None,
        };
        let mut tx = inner
            .begin_publish(&topic_refs)
            .await
            .map_err(backend_error)?;
        let published_at = now_ms();
        // Rows of one multi-row INSERT take their seqs in the order of the VALUES list.
        for (chunk, topics) in records
            .chunks(INSERT_ROWS_MAX)
            .zip(topic_refs.chunks(INSERT_ROWS_MAX))
        {
            let sql = insert_sql(chunk.len());
            let mut query = sqlx::query(&sql).bind(published_at);
            for (record, topic) in chunk.iter().zip(topics) {
                query = query
                    .bind(*topic)
                    .bind(record.key.as_str())
                    .bind(record.payload.as_slice());
            }
            query.execute(&mut *tx).await.map_err(backend_error)?;
        }
        tx.commit().await.map_err(backend_error)?;
        inner.published.notify_waiters();
        Ok(())
    }

    async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
    ) -> Result<Box<dyn Subscription>, Error> {
        if topics.is_empty() {
            return Err(Error::Backend("subscribe to no topic".to_owned()));
        }
        let inner = &self.inner;
        let group = inner.full_name(group);
        let mut positions: Vec<(String, i64)> = Vec::with_capacity(topics.len());
        for topic in topics {
            let topic = inner.full_name(topic);
            if positions.iter().any(|(t, _)| *t == topic) {
                continue;
            }
            let committed = sqlx::query(
                "SELECT committed_seq FROM bus_offsets WHERE group_name = $1 AND topic = $2",
            )
            .bind(group.as_str())
            .bind(topic.as_str())
            .fetch_optional(&inner.pool)
            .await
            .map_err(backend_error)?
            .map(|row| row.try_get::<i64, _>("committed_seq"))
            .transpose()
            .map_err(backend_error)?
            .unwrap_or(0);
            positions.push((topic, committed));
        }
        tracing::debug!(%group, ?positions, "sql bus subscription");
        Ok(Box::new(SqlSubscription {
            bus: Arc::clone(inner),
            group,
            positions,
            buffered: VecDeque::new(),
        }))
    }
}

/// A member of a consumer group of a [`SqlBus`]: reads from the group's last commit on.
#[derive(Debug)]
struct SqlSubscription {
    bus: Arc<Inner>,
    /// Full (prefixed) group name.
    group: String,
    /// Full topic name and the seq of the last record read (buffered or delivered).
    positions: Vec<(String, i64)>,
    buffered: VecDeque<Delivery>,
}

impl SqlSubscription {
    /// Reads the next records into the buffer and moves the positions past them.
    async fn fetch(&mut self) -> Result<(), Error> {
        let bus = &*self.bus;
        let sql = fetch_sql(self.positions.len());
        let mut query = sqlx::query(&sql);
        for (topic, position) in &self.positions {
            query = query.bind(topic.as_str()).bind(*position);
        }
        let rows = query
            .bind(i64::from(bus.options.fetch_max.max(1)))
            .fetch_all(&bus.pool)
            .await
            .map_err(backend_error)?;
        for row in rows {
            let seq: i64 = row.try_get("seq").map_err(backend_error)?;
            let topic: String = row.try_get("topic").map_err(backend_error)?;
            let key: String = row.try_get("key").map_err(backend_error)?;
            let payload: Vec<u8> = row.try_get("payload").map_err(backend_error)?;
            if let Some((_, position)) = self.positions.iter_mut().find(|(t, _)| *t == topic) {
                *position = (*position).max(seq);
            }
            let topic = match topic.strip_prefix(bus.options.prefix.as_str()) {
                Some(name) => name.to_owned(),
                None => topic,
            };
            self.buffered.push_back(Delivery {
                topic,
                key,
                payload,
                partition: 0,
                offset: seq,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Subscription for SqlSubscription {
    /// Cancel safe: a delivery is handed out only when this returns.
    async fn next(&mut self) -> Result<Delivery, Error> {
        let poll_interval = Duration::from_millis(self.bus.options.poll_interval_ms.max(1));
        loop {
            if let Some(delivery) = self.buffered.pop_front() {
                return Ok(delivery);
            }
            // Registered before the query, so a publish that commits after it still wakes us.
            let bus = Arc::clone(&self.bus);
            let published = bus.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            self.fetch().await?;
            if self.buffered.is_empty() {
                tokio::select! {
                    () = &mut published => {}
                    () = tokio::time::sleep(poll_interval) => {}
                }
            }
        }
    }

    async fn commit(&mut self, delivery: &Delivery) -> Result<(), Error> {
        let bus = &*self.bus;
        let topic = bus.full_name(&delivery.topic);
        if !self.positions.iter().any(|(t, _)| *t == topic) {
            return Err(Error::Backend(format!(
                "commit of topic {:?}, which this subscription does not read",
                delivery.topic
            )));
        }
        let _turn = match &bus.write_gate {
            Some(gate) => Some(write_turn(gate).await),
            None => None,
        };
        // Never backwards: another member of the group may have committed further already.
        sqlx::query(
            "INSERT INTO bus_offsets (group_name, topic, committed_seq, committed_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (group_name, topic) DO UPDATE \
             SET committed_seq = excluded.committed_seq, committed_at = excluded.committed_at \
             WHERE bus_offsets.committed_seq < excluded.committed_seq",
        )
        .bind(self.group.as_str())
        .bind(topic.as_str())
        .bind(delivery.offset)
        .bind(now_ms())
        .execute(bus.writes())
        .await
        .map_err(backend_error)?;
        Ok(())
    }

    fn has_buffered(&self) -> bool {
        !self.buffered.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use holdfast_persistence::testing;

    use super::*;
    use crate::conformance::{
        assert_quiet, payloads, postgres_bus, receive, receive_n, record, sql_options, subscribe,
    };

    #[test]
    fn insert_binds_three_parameters_per_row() {
        assert_eq!(
            insert_sql(2),
            "INSERT INTO bus_records (topic, key, payload, published_at) VALUES \
             ($2, $3, $4, $1), ($5, $6, $7, $1)"
        );
    }

    #[test]
    fn fetch_reads_each_topic_after_its_position() {
        assert_eq!(
            fetch_sql(2),
            "SELECT seq, topic, key, payload FROM bus_records WHERE \
             (topic = $1 AND seq > $2) OR (topic = $3 AND seq > $4) ORDER BY seq LIMIT $5"
        );
    }

    #[test]
    fn lock_keys_are_stable_and_in_the_bus_key_space() {
        let key = advisory_lock_key("orders.events");
        assert_eq!(key, advisory_lock_key("orders.events"));
        assert_ne!(key, advisory_lock_key("payments.events"));
        assert_eq!(key >> 32, 0x4846_4253);
    }

    #[test]
    fn backend_follows_the_url_scheme() {
        assert_eq!(Backend::of_url("sqlite://a.db").ok(), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::of_url("mysql://u@h/db").is_err());
    }

    /// A bus with a poll interval so long that only a wake-up can deliver in time.
    fn no_polling() -> SqlBusOptions {
        SqlBusOptions {
            poll_interval_ms: 600_000,
            ..sql_options()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_publish_wakes_the_subscriptions_of_the_same_bus_at_once() {
        let (store, _dir) = testing::sqlite_store().await;
        let bus = SqlBus::new(store.pool().clone(), no_polling()).expect("bus");
        let mut subscription = subscribe(&bus, "waiter", &["orders"]).await;
        let waiting = tokio::time::timeout(Duration::from_secs(5), subscription.next());
        let publishing = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            // A clone shares the wake-ups.
            bus.clone()
                .publish(&[record("orders", "order-1", "placed")])
                .await
                .expect("publish");
        };
        let (delivered, ()) = tokio::join!(waiting, publishing);
        let delivery = delivered.expect("woken at once").expect("next");
        assert_eq!(delivery.payload, b"placed");
        drop(subscription);
        bus.close().await;
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_another_process_arrive_by_polling() {
        let (store, dir) = testing::sqlite_store().await;
        let url = testing::sqlite_url(dir.path());
        let options = SqlBusOptions {
            poll_interval_ms: 100,
            ..sql_options()
        };
        // Two pools on one database file, as two processes would have.
        let other = holdfast_persistence::Store::connect(&url, 2)
            .await
            .expect("second store");
        let publisher = SqlBus::new(store.pool().clone(), options.clone()).expect("bus");
        let consumer = SqlBus::new(other.pool().clone(), options).expect("bus");
        let mut subscription = subscribe(&consumer, "poller", &["orders"]).await;
        let waiting = tokio::time::timeout(Duration::from_secs(5), subscription.next());
        let publishing = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            publisher
                .publish(&[record("orders", "order-1", "placed")])
                .await
                .expect("publish");
        };
        let (delivered, ()) = tokio::join!(waiting, publishing);
        assert_eq!(delivered.expect("polled").expect("next").payload, b"placed");
        drop(subscription);
        publisher.close().await;
        consumer.close().await;
        store.close().await;
    }

    /// Retention: only records every reading group has committed go, and only those of this
    /// bus's prefix; a topic nobody reads keeps everything.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn trim_removes_only_what_every_group_committed() {
        let (store, _dir) = testing::sqlite_store().await;
        let bus = SqlBus::new(store.pool().clone(), sql_options()).expect("bus");
        bus.publish(&[
            record("orders", "k", "one"),
            record("orders", "k", "two"),
            record("orders", "k", "three"),
            record("unread", "k", "kept"),
        ])
        .await
        .expect("publish");
        let mut fast = subscribe(&bus, "fast", &["orders"]).await;
        let got = receive_n(fast.as_mut(), 3).await;
        fast.commit(&got[2]).await.expect("commit");
        let mut slow = subscribe(&bus, "slow", &["orders"]).await;
        let got = receive_n(slow.as_mut(), 2).await;
        slow.commit(&got[1]).await.expect("commit");
        drop((fast, slow));
        let far_future = i64::MAX / 2;
        assert_eq!(bus.trim(0).await.expect("trim"), 0, "nothing is old enough");
        assert_eq!(
            bus.trim(far_future).await.expect("trim"),
            2,
            "what both groups read"
        );
        let mut slow = subscribe(&bus, "slow", &["orders"]).await;
        assert_eq!(payloads(&[receive(slow.as_mut()).await]), ["three"]);
        let mut late = subscribe(&bus, "late", &["unread"]).await;
        assert_eq!(payloads(&[receive(late.as_mut()).await]), ["kept"]);
        drop((slow, late));
        bus.close().await;
        store.close().await;
    }

    /// Two members of one group read the same records; the group's offset is the furthest
    /// commit, whatever the order of the commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_offset_never_moves_backwards() {
        let (store, _dir) = testing::sqlite_store().await;
        let bus = SqlBus::new(store.pool().clone(), sql_options()).expect("bus");
        let records: Vec<Record> = (0..4)
            .map(|i| record("orders", "order-1", format!("event {i}")))
            .collect();
        bus.publish(&records).await.expect("publish");
        let mut fast = subscribe(&bus, "members", &["orders"]).await;
        let mut slow = subscribe(&bus, "members", &["orders"]).await;
        let fast_got = receive_n(&mut *fast, 4).await;
        let slow_got = receive_n(&mut *slow, 4).await;
        assert_eq!(payloads(&fast_got), payloads(&slow_got));
        fast.commit(&fast_got[2]).await.expect("commit");
        slow.commit(&slow_got[0]).await.expect("commit");
        drop((fast, slow));
        let mut next = subscribe(&bus, "members", &["orders"]).await;
        assert_eq!(receive(&mut *next).await.payload, b"event 3");
        assert_quiet(&mut *next).await;
        bus.close().await;
        store.close().await;
    }

    /// The outbox gap on PostgreSQL: while a transaction that took seq N of a topic is open, a
    /// later publisher of that topic waits, so no reader sees N + 1 before N.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_publishers_of_a_topic_commit_in_seq_order() {
        let (store, bus) = postgres_bus().await;
        let inner = &bus.inner;
        let mut subscription = subscribe(&bus, "reader", &["orders"]).await;

        // An earlier publisher, stalled between its insert and its commit.
        let topic = inner.full_name("orders");
        let mut stalled = inner.begin_publish(&[topic.as_str()]).await.expect("begin");
        sqlx::query(&insert_sql(1))
            .bind(now_ms())
            .bind(topic.as_str())
            .bind("order-1")
            .bind(&b"first"[..])
            .execute(&mut *stalled)
            .await
            .expect("insert");

        let late = bus.clone();
        let mut publishing =
            tokio::spawn(
                async move { late.publish(&[record("orders", "order-2", "second")]).await },
            );
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut publishing)
                .await
                .is_err(),
            "a second publisher of the topic must wait for the first"
        );
        assert_quiet(&mut *subscription).await;
        // Another topic is not held up.
        bus.publish(&[record("payments", "order-3", "paid")])
            .await
            .expect("publish to another topic");

        stalled.commit().await.expect("commit");
        publishing.await.expect("task").expect("publish");
        let deliveries = receive_n(&mut *subscription, 2).await;
        assert_eq!(payloads(&deliveries), ["first", "second"]);
        assert!(deliveries[0].offset < deliveries[1].offset);
        drop(subscription);
        testing::drop_postgres_store(store).await;
    }
}
