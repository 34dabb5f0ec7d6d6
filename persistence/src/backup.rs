//! What `holdfast backup` and `holdfast restore` ask of the database itself: SQLite's online
//! copy (`VACUUM INTO`), whether a PostgreSQL database is in use or holds tables, and the
//! check of a restored database. The engine runs the rest (files, `pg_dump`, `pg_restore`).

use std::path::Path;

use sqlx::{Connection as _, Row as _};

use crate::{Backend, Error};

/// What [`check`] found in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Migrations the database has applied (all of this binary's once the check passed).
    pub applied: usize,
    pub journal_records: i64,
    pub journaled_events: i64,
    pub snapshots: i64,
    pub events: i64,
    pub orders: i64,
    /// Orders by status, most first.
    pub orders_by_status: Vec<(String, i64)>,
}

async fn connect(url: &str) -> Result<sqlx::AnyConnection, Error> {
    sqlx::any::install_default_drivers();
    Ok(sqlx::AnyConnection::connect(url).await?)
}

/// Writes a consistent copy of the SQLite database at `url` to the new file `out` while
/// others go on writing (one read transaction).
pub async fn sqlite_vacuum_into(url: &str, out: &Path) -> Result<(), Error> {
    let path = out
        .to_str()
        .ok_or_else(|| Error::Check(format!("{} is not valid UTF-8", out.display())))?;
    let mut conn = connect(url).await?;
    // A literal: SQLite takes any expression here, and sqlx's Any driver prepares it either way.
    let sql = format!("VACUUM INTO '{}'", path.replace('\'', "''"));
    let done = sqlx::query(&sql).execute(&mut conn).await;
    let _ = conn.close().await;
    done?;
    Ok(())
}

/// A PostgreSQL database's other sessions (a running node has some) and its tables.
pub async fn postgres_use(url: &str) -> Result<(i64, i64), Error> {
    let mut conn = connect(url).await?;
    let state = async {
        let others: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> \
             pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
        let tables: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', \
             'information_schema')",
        )
        .fetch_one(&mut conn)
        .await?
        .try_get(0)?;
        Ok::<_, sqlx::Error>((others, tables))
    }
    .await;
    let _ = conn.close().await;
    Ok(state?)
}

/// Checks the database at `url`: SQLite's `quick_check`; every migration it applied
/// succeeded and is one this binary knows, and none of this binary's is missing; then counts
/// what it holds.
pub async fn check(url: &str) -> Result<Report, Error> {
    let backend = Backend::of_url(url)?;
    let mut conn = connect(url).await?;
    let report = check_on(&mut conn, backend).await;
    let _ = conn.close().await;
    report
}

async fn check_on(conn: &mut sqlx::AnyConnection, backend: Backend) -> Result<Report, Error> {
    if backend == Backend::Sqlite {
        let row = sqlx::query("PRAGMA quick_check")
            .fetch_one(&mut *conn)
            .await?;
        let result: String = row.try_get(0)?;
        if result != "ok" {
            return Err(Error::Check(format!(
                "SQLite's quick_check found damage: {result}"
            )));
        }
    }
    let rows = sqlx::query("SELECT version, CASE WHEN success THEN 1 ELSE 0 END FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| {
            Error::Check(format!(
                "cannot read the applied migrations (_sqlx_migrations), is this a Holdfast \
                 database? {e}"
            ))
        })?;
    let expected = crate::migration_versions(backend);
    let mut applied = Vec::new();
    for row in rows {
        let version: i64 = row.try_get(0)?;
        // As an integer: sqlx's Any driver maps no boolean of SQLite.
        let success: i64 = row.try_get(1)?;
        if success == 0 {
            return Err(Error::Check(format!(
                "migration {version} did not complete in this database"
            )));
        }
        if !expected.contains(&version) {
            return Err(Error::Check(format!(
                "the database has migration {version}, which this binary does not know: it was \
                 made by a newer Holdfast"
            )));
        }
        applied.push(version);
    }
    let missing: Vec<_> = expected.iter().filter(|v| !applied.contains(v)).collect();
    if !missing.is_empty() {
        return Err(Error::Check(format!(
            "the database lacks migrations {missing:?} of this binary (an older schema): run \
             `holdfast migrate` to upgrade it"
        )));
    }
    let journal_records = count(conn, "SELECT COUNT(*) FROM journal").await?;
    let journaled_events = count(conn, "SELECT COUNT(DISTINCT event_id) FROM journal").await?;
    let snapshots = count(conn, "SELECT COUNT(*) FROM snapshots").await?;
    let events = count(conn, "SELECT COUNT(*) FROM events").await?;
    let orders = count(conn, "SELECT COUNT(*) FROM orders").await?;
    let orders_by_status = sqlx::query(
        "SELECT status, COUNT(*) AS n FROM orders GROUP BY status ORDER BY n DESC, status",
    )
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(Report {
        applied: applied.len(),
        journal_records,
        journaled_events,
        snapshots,
        events,
        orders,
        orders_by_status,
    })
}

async fn count(conn: &mut sqlx::AnyConnection, sql: &str) -> Result<i64, Error> {
    let row = sqlx::query(sql).fetch_one(&mut *conn).await?;
    Ok(row.try_get::<i64, _>(0)?)
}
