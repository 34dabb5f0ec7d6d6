//! The SQL stores of Holdfast: event journals and snapshots, accounts, the event catalog and
//! idempotency keys.
//!
//! One code path serves both backends through sqlx's `Any` driver: PostgreSQL in production,
//! SQLite as the embedded default. To stay portable every query uses `$N` placeholders and binds
//! only integers, text and bytes; uuids are stored as text and times as milliseconds since the
//! Unix epoch. Each backend has its own migrations (`migrations/{sqlite,postgres}`) because the
//! column types differ (`BLOB` / `BYTEA`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{Any, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Transaction};
use uuid::Uuid;

mod accounts;
pub mod backup;
mod catalog;
mod checkout;
mod cluster;
mod idempotency;
mod journal;
mod organizer;
mod parked;
mod scheduler;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
mod tokens;

#[cfg(test)]
mod conformance;

pub use accounts::{NewUser, UserRow};
pub use catalog::{
    CategoryRow, EVENTS_PAGE_MAX, EventFilter, EventPatch, EventRow, TicketTypePatch, TicketTypeRow,
};
pub use checkout::{
    CheckoutTx, NotificationRow, OrderRow, OutboxLease, OutboxRecord, PaymentRefundRow, PaymentRow,
    PendingRecord, REFUNDS_PER_ORDER_MAX, RefundRow, TicketRow,
};
pub use cluster::{NodeRow, ShardRow};
pub use idempotency::{Idempotency, StoredResponse};
pub use journal::SqlJournal;
pub use organizer::{AttendeeRow, CancelledOrderRow, EventOrderRow, ORGANIZER_PAGE_MAX};
pub use parked::{PARKED_PAGE_MAX, ParkedRow};
pub use scheduler::{
    HoldingRow, LiveEventSalesRow, REMINDER_EVENTS_MAX, SUMMARY_EVENTS_MAX, UpcomingEventRow,
};
pub use tokens::Rotation;

/// How long [`Store::connect`] waits for the database's first answer.
const CONNECT_TIMEOUT_SECS: u64 = 10;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported database url: expected sqlite:// or postgres://")]
    UnsupportedUrl,
    /// A row with the same unique key exists (a user's email, an event id).
    #[error("already exists")]
    Conflict,
    /// A value does not fit its column (e.g. a `u64` above `i64::MAX`).
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
    /// A stored value cannot be read back (e.g. a malformed uuid).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error(
        "the cluster was created with {stored} shards, this node is configured with {configured}"
    )]
    ShardCountMismatch { stored: String, configured: u32 },
    /// The first connection got no answer in time (a refused one fails at once).
    #[error("the database did not answer within {secs} s")]
    ConnectTimeout { secs: u64 },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A database that is not what it should be (the check after a restore).
    #[error("{0}")]
    Check(String),
}

impl Error {
    /// Whether trying again later may succeed: the database was unreachable, busy or chose
    /// this transaction as a victim. Bad data, constraints and configuration are not.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::ConnectTimeout { .. } => true,
            Error::Database(e) => sqlx_is_transient(e),
            Error::UnsupportedUrl
            | Error::Conflict
            | Error::OutOfRange(_)
            | Error::Corrupt(_)
            | Error::ShardCountMismatch { .. }
            | Error::Migrate(_)
            | Error::Check(_) => false,
        }
    }
}

/// Connection, pool and I/O failures, PostgreSQL's serialization failures, deadlocks and
/// connection classes, and SQLite's busy or locked database are transient.
fn sqlx_is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| database_code_is_transient(&code)),
        _ => false,
    }
}

/// A PostgreSQL SQLSTATE has five characters; SQLite's (extended) result codes are numbers
/// below 10 000.
fn database_code_is_transient(code: &str) -> bool {
    if code.len() == 5 {
        // Serialization failure, deadlock, too many connections, shutting down, and the
        // connection exception class.
        return matches!(
            code,
            "40001" | "40P01" | "53300" | "57P01" | "57P02" | "57P03"
        ) || code.starts_with("08");
    }
    // SQLITE_BUSY 5 and SQLITE_LOCKED 6, with their extended codes.
    code.parse::<i64>()
        .is_ok_and(|sqlite| matches!(sqlite & 0xff, 5 | 6))
}

/// The database behind a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend a database URL names (`sqlite:…`, `postgres://…`).
    pub fn of_url(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(Error::UnsupportedUrl)
        }
    }
}

/// The versions of the migrations this binary embeds for `backend`, in the order they run:
/// what a database at the current schema has applied (`_sqlx_migrations`).
pub fn migration_versions(backend: Backend) -> Vec<i64> {
    let migrator = match backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    };
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect()
}

/// Time a write transaction waited for the process's SQLite write turn, by `writer`: how the
/// one writer is shared (the gate is first come, first served, so no writer starves).
pub const WRITE_WAIT_METRIC: &str = "holdfast_sqlite_write_wait_seconds";

/// Who asks for a write turn, as [`WRITE_WAIT_METRIC`] labels it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Writer {
    Journal,
    Checkout,
    Cluster,
    Catalog,
    Tokens,
}

impl Writer {
    fn as_str(self) -> &'static str {
        match self {
            Self::Journal => "journal",
            Self::Checkout => "checkout",
            Self::Cluster => "cluster",
            Self::Catalog => "catalog",
            Self::Tokens => "tokens",
        }
    }
}

/// A connection pool to one database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    /// SQLite: the one connection every write transaction uses (`None` on PostgreSQL).
    write_pool: Option<AnyPool>,
    backend: Backend,
    /// SQLite has one writer: write transactions of this process queue here, in order, instead
    /// of sleeping in SQLite's busy handler (1 to 100 ms steps) while another one commits.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// A write transaction; on SQLite it also holds the process's write turn until it ends.
/// Dereferences to the connection, as sqlx's `Transaction` does.
#[derive(Debug)]
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Store {
    /// Connects to `sqlite://path/to/file.db` (created if missing; its directory must exist) or
    /// `postgres://…`, and opens one connection to check the settings.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let (pool, write_pool) = match backend {
            Backend::Sqlite => {
                let url = sqlite_create_url(url);
                // Every write goes through one connection of its own. SQLite drops a
                // connection's page cache whenever another connection has written, so writes
                // spread over a pool would each begin by reading their pages back from the
                // WAL; the one writer keeps its pages.
                // (An in-memory database is one per connection: it keeps its one pool.)
                let in_memory = url.contains(":memory:") || url.contains("mode=memory");
                let write_pool = match in_memory {
                    true => None,
                    false => Some(sqlite_pool(&url, 1).await?),
                };
                (sqlite_pool(&url, max_connections).await?, write_pool)
            }
            Backend::Postgres => {
                // The pool retries a refused connection until its acquire timeout, then reports
                // only "pool timed out"; one direct connection first fails at once with the cause.
                let first = tokio::time::timeout(
                    Duration::from_secs(CONNECT_TIMEOUT_SECS),
                    <sqlx::AnyConnection as sqlx::Connection>::connect(url),
                )
                .await
                .map_err(|_| Error::ConnectTimeout {
                    secs: CONNECT_TIMEOUT_SECS,
                })??;
                let _ = sqlx::Connection::close(first).await;
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections.max(1))
                    .connect(url)
                    .await?;
                (pool, None)
            }
        };
        let write_gate =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Store {
            pool,
            write_pool,
            backend,
            write_gate,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for stores of other crates that share this database (the bus).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the migrations this binary embeds for the store's backend.
    pub async fn migrate(&self) -> Result<(), Error> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Checks that the database answers (readiness).
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// The event journal on this store.
    pub fn journal(&self) -> SqlJournal {
        SqlJournal::new(self.clone(), None)
    }

    /// The journal of clustered node `node_id`: every write is fenced by its shard's epoch
    /// in `cluster_shards`, of `shards` shards, which must still be owned by `node_id`.
    pub fn cluster_journal(&self, shards: u32, node_id: &str) -> SqlJournal {
        SqlJournal::new(
            self.clone(),
            Some(journal::Writer {
                shards,
                node_id: node_id.into(),
            }),
        )
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        if let Some(write_pool) = &self.write_pool {
            write_pool.close().await;
        }
        self.pool.close().await;
    }

    /// Begins a transaction that will write.
    ///
    /// SQLite takes the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction that
    /// reads and then writes fails at once with `SQLITE_BUSY`, without waiting for the busy
    /// timeout, when another connection committed in between.
    pub(crate) async fn begin_write(&self, writer: Writer) -> Result<WriteTx, sqlx::Error> {
        let turn = match &self.write_gate {
            Some(gate) => {
                let asked = std::time::Instant::now();
                let turn = Arc::clone(gate).lock_owned().await;
                metrics::histogram!(WRITE_WAIT_METRIC, "writer" => writer.as_str())
                    .record(asked.elapsed().as_secs_f64());
                Some(turn)
            }
            None => None,
        };
        let tx = match self.backend {
            Backend::Sqlite => {
                let pool = self.write_pool.as_ref().unwrap_or(&self.pool);
                pool.begin_with("BEGIN IMMEDIATE").await?
            }
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(WriteTx { tx, _turn: turn })
    }

    /// SQLite's one writing connection (`None` on PostgreSQL, or for an in-memory database),
    /// for other crates that write to the same database (the in-process bus).
    pub fn write_pool(&self) -> Option<&AnyPool> {
        self.write_pool.as_ref()
    }

    /// The write turn of this process on SQLite (`None` on PostgreSQL), for other crates that
    /// write to the same database (the in-process bus).
    pub fn write_gate(&self) -> Option<Arc<tokio::sync::Mutex<()>>> {
        self.write_gate.clone()
    }

    /// Begins a read-only transaction whose statements all see one snapshot.
    async fn begin_read(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            // A deferred SQLite transaction reads one WAL snapshot from its first statement on.
            Backend::Sqlite => self.pool.begin().await,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .await
            }
        }
    }
}

/// A pool of at most `max_connections` to SQLite database `url`, each set up for WAL.
async fn sqlite_pool(url: &str, max_connections: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .after_connect(|conn, _| {
            Box::pin(async move {
                // WAL lets readers run beside the one writer; FULL makes every commit durable,
                // which is what an acknowledged hold promises.
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA busy_timeout = 5000").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// Adds `mode=rwc` so that SQLite creates a missing database file.
fn sqlite_create_url(url: &str) -> Cow<'_, str> {
    if url.contains("mode=") || url.contains(":memory:") {
        Cow::Borrowed(url)
    } else if url.contains('?') {
        Cow::Owned(format!("{url}&mode=rwc"))
    } else {
        Cow::Owned(format!("{url}?mode=rwc"))
    }
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn parse_uuid(column: &str, text: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(text).map_err(|e| Error::Corrupt(format!("{column} {text:?}: {e}")))
}

fn to_i64(value: u64, what: &'static str) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::OutOfRange(what))
}

/// Wall-clock milliseconds for bookkeeping columns (`written_at`, `taken_at`) that no logic reads.
fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_the_ones_worth_a_retry() {
        assert!(Error::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(Error::ConnectTimeout { secs: 1 }.is_transient());
        assert!(!Error::Corrupt("x".to_owned()).is_transient());
        assert!(!Error::Conflict.is_transient());
        assert!(!Error::Database(sqlx::Error::RowNotFound).is_transient());
        for (code, transient) in [
            ("5", true),
            ("517", true),
            ("6", true),
            ("19", false),
            ("2067", false),
            ("40001", true),
            ("40P01", true),
            ("08006", true),
            ("23505", false),
        ] {
            assert_eq!(database_code_is_transient(code), transient, "{code}");
        }
    }

    #[test]
    fn backend_follows_the_url_scheme() {
        assert_eq!(
            Backend::of_url("sqlite://data/holdfast.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::of_url("sqlite:holdfast.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::of_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("postgresql://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(matches!(
            Backend::of_url("mysql://u@h/db"),
            Err(Error::UnsupportedUrl)
        ));
    }

    #[test]
    fn sqlite_files_are_created_if_missing() {
        assert_eq!(sqlite_create_url("sqlite://a.db"), "sqlite://a.db?mode=rwc");
        assert_eq!(
            sqlite_create_url("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_create_url("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }
}
