//! Fresh, migrated stores for tests: a SQLite file in a temporary directory, or a new
//! PostgreSQL database per test. Panics on failure, as test setup should.

use std::path::Path;

use sqlx::{AnyConnection, Connection, Executor, Row};
use uuid::Uuid;

use crate::Store;

/// The server on which [`postgres_store`] creates databases, unless `HOLDFAST_TEST_DATABASE_URL`
/// names another.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Connections per test store: enough for the concurrency tests, few enough for parallel tests.
const TEST_POOL_CONNECTIONS: u32 = 4;

/// The URL of the database file `holdfast.db` in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("holdfast.db").display())
}

/// A migrated SQLite store in a new temporary directory, deleted when the `TempDir` drops.
pub async fn sqlite_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::connect(&sqlite_url(dir.path()), TEST_POOL_CONNECTIONS)
        .await
        .expect("open sqlite store");
    store.migrate().await.expect("migrate sqlite store");
    (store, dir)
}

fn admin_url() -> String {
    std::env::var("HOLDFAST_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `url` with its database name replaced by `database`, keeping any query string.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A migrated store on a new database `holdfast_t_<uuid>` of the test server.
pub async fn postgres_store() -> Store {
    sqlx::any::install_default_drivers();
    let admin_url = admin_url();
    let database = format!("holdfast_t_{}", Uuid::new_v4().simple());
    let mut admin = AnyConnection::connect(&admin_url)
        .await
        .expect("connect to the test postgres server (HOLDFAST_TEST_DATABASE_URL)");
    admin
        .execute(format!("CREATE DATABASE {database}").as_str())
        .await
        .expect("create test database");
    let _ = admin.close().await;
    let store = Store::connect(&with_database(&admin_url, &database), TEST_POOL_CONNECTIONS)
        .await
        .expect("open postgres store");
    store.migrate().await.expect("migrate postgres store");
    store
}

/// Closes `store` and drops its database, which [`postgres_store`] created.
pub async fn drop_postgres_store(store: Store) {
    let database: String = sqlx::query("SELECT current_database()::text AS name")
        .fetch_one(&store.pool)
        .await
        .and_then(|row| row.try_get("name"))
        .expect("name of the test database");
    assert!(
        database.starts_with("holdfast_t_"),
        "not a test database: {database}"
    );
    store.close().await;
    let mut admin = AnyConnection::connect(&admin_url())
        .await
        .expect("connect to the test postgres server");
    // FORCE: the server may not have reaped the pool's sessions yet, moments after they closed.
    admin
        .execute(format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)").as_str())
        .await
        .expect("drop test database");
    let _ = admin.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
