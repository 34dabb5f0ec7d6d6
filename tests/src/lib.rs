//! Harness of the cross-crate tests: a fresh database per test on either backend, a node run
//! in-process or as a real `holdfast` process, and a small HTTP client for the REST API.
//!
//! Every wait has a deadline and every failure of a process test prints the server's log.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_engine::{Config, RunningNode};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sqlx::{AnyConnection, Connection as _, Executor as _, PgConnection, Row as _};
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

/// The token secret every test node signs with (at least 32 bytes).
pub const JWT_SECRET: &str = "holdfast-tests-jwt-secret-0123456789abcdef";
/// The VNPAY merchant of every test node; tests that play VNPAY sign with the same secret.
pub const VNPAY_TMN_CODE: &str = "HFTEST01";
pub const VNPAY_HASH_SECRET: &str = "holdfast-tests-vnpay-secret-0123456789";
/// The ticket signing seed of every test node (Ed25519, hex). Not a published test vector:
/// nodes refuse those (`holdfast_engine::secrets`).
pub const TICKET_SIGNING_KEY: &str =
    "80e7b0907a666216d5eab7ad8387458f155723124e83fb8fc9bcd383a370f338";
/// A password every check accepts.
pub const PASSWORD: &str = "correct horse battery staple";
/// The server on which PostgreSQL test databases are created, unless
/// `HOLDFAST_TEST_DATABASE_URL` names another.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Database connections per test node: enough for the load tests, few enough for parallel tests.
pub const NODE_DB_CONNECTIONS: u32 = 8;
/// How long a node may take to become ready on a busy 2-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest any single HTTP request of a test may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every listed async test function `fn(Backend)` on SQLite and on PostgreSQL, one test
/// per backend (like Quickwit's `metastore_test_suite!`).
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Polls `check` every `every` until it returns `Some` or `timeout` passes.
pub async fn poll_until<T, F, Fut>(timeout: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// A unique address for a test account.
pub fn unique_email(prefix: &str) -> String {
    format!("{prefix}-{}@example.com", uuid::Uuid::new_v4().simple())
}

// ---------------------------------------------------------------------------------------------
// Databases

/// The database behind a test node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

fn admin_url() -> String {
    std::env::var("HOLDFAST_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// `url` with its database name replaced by `database`, keeping any query string.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let server = base[authority..]
        .find('/')
        .map_or(base, |slash| &base[..authority + slash]);
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// A fresh database for one test: a SQLite file in the test's directory, or a new PostgreSQL
/// database `holdfast_t_<uuid>` that is dropped (`WITH (FORCE)`) when this value drops, even when
/// the test panicked.
#[derive(Debug)]
pub struct TestDatabase {
    backend: Backend,
    url: String,
    postgres_name: Option<String>,
}

impl TestDatabase {
    pub async fn create(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => Self {
                backend,
                url: format!("sqlite://{}", dir.join("holdfast.db").display()),
                postgres_name: None,
            },
            Backend::Postgres => {
                let name = format!("holdfast_t_{}", uuid::Uuid::new_v4().simple());
                let admin = admin_url();
                let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("connect to the test PostgreSQL server {admin} (HOLDFAST_TEST_DATABASE_URL): {e}")
                });
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create the test database");
                let _ = conn.close().await;
                Self {
                    backend,
                    url: with_database(&admin, &name),
                    postgres_name: Some(name),
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The last journal position of `event_id`, from the journal or its snapshot (records up to
    /// a snapshot may be trimmed); 0 if neither has any. Read straight from the database.
    pub async fn journal_position(&self, event_id: &str) -> i64 {
        let sql = "SELECT MAX(seq) AS seq FROM (SELECT seq FROM journal WHERE event_id = $1 \
                   UNION ALL SELECT seq FROM snapshots WHERE event_id = $1) AS positions";
        self.query_i64(sql, event_id).await.unwrap_or(0)
    }

    /// Snapshots stored for `event_id`.
    pub async fn snapshot_count(&self, event_id: &str) -> i64 {
        self.query_i64(
            "SELECT COUNT(*) AS n FROM snapshots WHERE event_id = $1",
            event_id,
        )
        .await
        .unwrap_or(0)
    }

    /// Rows in `table` (a name from the migrations, never input).
    pub async fn count_rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE '' = $1");
        self.query_i64(&sql, "").await.unwrap_or(0)
    }

    async fn query_i64(&self, sql: &str, bind: &str) -> Option<i64> {
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect(&self.url)
            .await
            .expect("connect to the test database");
        let row = sqlx::query(sql)
            .bind(bind)
            .fetch_one(&mut conn)
            .await
            .expect("query the test database");
        let value: Option<i64> = row.try_get(0).expect("an integer column");
        let _ = conn.close().await;
        value
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.postgres_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime: a thread of its own may block on a new one.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let mut conn = PgConnection::connect(&admin_url())
                    .await
                    .map_err(|e| e.to_string())?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        if let Ok(Err(e)) | Err(e) = dropped.map_err(|_| "panicked".to_owned()) {
            eprintln!("warning: could not drop a test database: {e}");
        }
    }
}

/// A test's own directory and database.
#[derive(Debug)]
pub struct Sandbox {
    // Declared first so the database drops before the directory holding a SQLite file.
    database: TestDatabase,
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("holdfast-test-")
            .tempdir()
            .expect("temporary directory");
        std::fs::create_dir_all(dir.path().join("data")).expect("data directory");
        let database = TestDatabase::create(backend, &dir.path().join("data")).await;
        Self { database, dir }
    }

    pub fn backend(&self) -> Backend {
        self.database.backend()
    }

    pub fn database(&self) -> &TestDatabase {
        &self.database
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Where processes run: not the data directory, so that a default `./data` would show (and
    /// nothing lands in the source tree).
    pub fn working_dir(&self) -> PathBuf {
        self.dir.path().join("cwd")
    }

    /// Settings of an in-process node on this sandbox, on a port the OS picks.
    pub fn config(&self) -> Config {
        Config {
            http_addr: "127.0.0.1:0".parse().expect("address"),
            ops_addr: "127.0.0.1:0".parse().expect("address"),
            data_dir: self.data_dir(),
            database_url: Some(self.database.url().to_owned()),
            database_max_connections: NODE_DB_CONNECTIONS,
            jwt_secret: Some(JWT_SECRET.to_owned()),
            vnpay_tmn_code: Some(VNPAY_TMN_CODE.to_owned()),
            vnpay_hash_secret: Some(VNPAY_HASH_SECRET.to_owned()),
            ticket_signing_key: Some(TICKET_SIGNING_KEY.to_owned()),
            // Tests register and hold quickly from one address; tests/ratelimits.rs turns them on.
            rate_limits: holdfast_engine::config::Switch::Off,
            ..Config::default()
        }
    }

    /// The settings of a `holdfast` process on this sandbox, as `HOLDFAST_*` variables.
    pub fn env(&self, port: u16) -> Vec<(String, String)> {
        [
            ("HOLDFAST_HTTP_ADDR", format!("127.0.0.1:{port}")),
            ("HOLDFAST_DATA_DIR", self.data_dir().display().to_string()),
            ("HOLDFAST_DATABASE_URL", self.database.url().to_owned()),
            (
                "HOLDFAST_DATABASE_MAX_CONNECTIONS",
                NODE_DB_CONNECTIONS.to_string(),
            ),
            ("HOLDFAST_JWT_SECRET", JWT_SECRET.to_owned()),
            ("HOLDFAST_VNPAY_TMN_CODE", VNPAY_TMN_CODE.to_owned()),
            ("HOLDFAST_VNPAY_HASH_SECRET", VNPAY_HASH_SECRET.to_owned()),
            ("HOLDFAST_TICKET_SIGNING_KEY", TICKET_SIGNING_KEY.to_owned()),
            ("HOLDFAST_LOG", "info".to_owned()),
            ("HOLDFAST_RATE_LIMITS", "off".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// A node started in this process with `holdfast_engine::start`.
#[derive(Debug)]
pub struct InProcessNode {
    node: Option<RunningNode>,
    config: Config,
    client: Client,
    ops_client: Client,
    // Last: the node stops using the database before it is dropped.
    sandbox: Sandbox,
}

impl InProcessNode {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a node whose settings `adjust` may change.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let sandbox = Sandbox::new(backend).await;
        let mut config = sandbox.config();
        adjust(&mut config);
        let node = holdfast_engine::start(config.clone())
            .await
            .expect("start an in-process node");
        let client = Client::new(format!(
            "http://{}",
            node.addr().expect("the node serves the API")
        ));
        let ops_client = Client::new(format!("http://{}", node.ops_addr()));
        Self {
            node: Some(node),
            config,
            client,
            ops_client,
            sandbox,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A client of the node's ops listener (`/metrics`, `/v1/admin/*`).
    pub fn ops_client(&self) -> &Client {
        &self.ops_client
    }

    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Graceful shutdown (final snapshots), then a new node on the same database and a new port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Graceful shutdown; [`start_again`](Self::start_again) starts the node once more.
    pub async fn stop(&mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("graceful shutdown");
        }
    }

    /// A new node on the same database and a new port, after [`stop`](Self::stop).
    pub async fn start_again(&mut self) {
        let node = holdfast_engine::start(self.config.clone())
            .await
            .expect("restart the in-process node");
        self.client = Client::new(format!(
            "http://{}",
            node.addr().expect("the node serves the API")
        ));
        self.ops_client = Client::new(format!("http://{}", node.ops_addr()));
        self.node = Some(node);
    }

    pub async fn shutdown(mut self) {
        if let Some(node) = self.node.take() {
            node.shutdown().await.expect("graceful shutdown");
        }
    }

    /// Adds an account with `role` straight to the store (what `holdfast users add` does) and
    /// returns an access token for it.
    pub async fn user_token(&self, role: holdfast_gateway::auth::Role) -> String {
        use holdfast_gateway::backend::Account;
        let email = unique_email(role.as_str());
        let mut config = self.config.clone();
        config.database_max_connections = 1;
        let store = holdfast_engine::node::open_store(&config)
            .await
            .expect("open the store");
        let hash = tokio::task::spawn_blocking(|| holdfast_gateway::auth::hash_password(PASSWORD))
            .await
            .expect("hashing task")
            .expect("hash the password");
        let account = Account {
            id: holdfast_actors::UserId::generate(),
            email: email.clone(),
            name: role.as_str().to_owned(),
            role,
            phone: None,
            language: "vi".to_owned(),
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        holdfast_engine::backend::add_user(&store, &account, &hash, now_ms)
            .await
            .expect("add the account");
        store.close().await;
        self.client.login_token(&email, PASSWORD).await
    }

    pub async fn organizer_token(&self) -> String {
        self.user_token(holdfast_gateway::auth::Role::Organizer)
            .await
    }
}

/// The `holdfast` binary the process tests run.
pub fn holdfast_bin() -> PathBuf {
    let path = std::env::var_os("HOLDFAST_BIN").map_or_else(
        || {
            let exe = std::env::current_exe().expect("path of the test binary");
            // Tests run from target/<profile>/deps; the binary sits in target/<profile>.
            exe.parent()
                .and_then(Path::parent)
                .expect("target directory")
                .join("holdfast")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "no holdfast binary at {}: build it first: cargo build --bin holdfast",
        path.display()
    );
    path
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    // Drawn below the kernel's ephemeral range (32768-60999 by default): a port the kernel
    // handed out for port 0 is as likely to be handed to the next outgoing connection (to
    // PostgreSQL, say) before the server binds it, and the server then fails with "address in
    // use". Ports here are only ever taken by a bind that names them.
    const PORTS: std::ops::Range<u32> = 20_000..32_000;
    for _ in 0..1_000 {
        let draw = uuid::Uuid::new_v4().as_u128() % u128::from(PORTS.end - PORTS.start);
        let port = u16::try_from(u128::from(PORTS.start) + draw).expect("ports fit in u16");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?} after 1,000 draws")
}

/// A `holdfast` command run in `cwd` with `env` and no stray `HOLDFAST_*` settings.
pub fn holdfast_command(env: &[(String, String)], cwd: &Path) -> Command {
    let mut command = Command::new(holdfast_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("HOLDFAST_") {
            command.env_remove(key);
        }
    }
    command.env_remove("RUST_LOG");
    // Plain logs, readable when a failing test prints them.
    command.env("NO_COLOR", "1");
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command.current_dir(cwd);
    command
}

/// A real `holdfast serve` process on its own port, database and directory, run in the
/// sandbox's directory. Its stdout and stderr go to `server.log` there, printed when a test
/// fails.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    client: Client,
    ops_client: Client,
    starts: u32,
    // Last: dropped after the process is killed.
    sandbox: Sandbox,
}

impl ServerProcess {
    /// Starts `holdfast serve` with the sandbox's settings plus `extra_env`, and waits until it
    /// is ready.
    pub async fn start(backend: Backend, extra_env: &[(&str, &str)]) -> Self {
        Self::start_without(backend, &[], extra_env).await
    }

    /// Like [`start`](Self::start), without the sandbox's settings named in `unset` (e.g. the
    /// VNPAY merchant's, to run the embedded default's demo merchant).
    pub async fn start_without(
        backend: Backend,
        unset: &[&str],
        extra_env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(Sandbox::new(backend).await, unset, extra_env).await
    }

    /// Like [`start_without`](Self::start_without), on a sandbox made before (a database
    /// restored from a backup).
    pub async fn start_on(sandbox: Sandbox, unset: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let ops_port = free_port();
        let mut env = sandbox.env(port);
        env.push((
            "HOLDFAST_OPS_ADDR".to_owned(),
            format!("127.0.0.1:{ops_port}"),
        ));
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env.retain(|(k, _)| !unset.contains(&k.as_str()));
        std::fs::create_dir_all(sandbox.working_dir()).expect("working directory");
        let log_path = sandbox.dir().join("server.log");
        let mut server = Self {
            child: None,
            env,
            log_path,
            client: Client::new(format!("http://127.0.0.1:{port}")),
            ops_client: Client::new(format!("http://127.0.0.1:{ops_port}")),
            starts: 0,
            sandbox,
        };
        server.spawn().await;
        server
    }

    /// A client of the current process (a new one after each restart).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A client of the process's ops listener (`/metrics`, `/v1/admin/*`).
    pub fn ops_client(&self) -> &Client {
        &self.ops_client
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .expect("the server is running")
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Everything the server wrote so far, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("server log file");
        {
            use std::io::Write as _;
            let _ = writeln!(log, "===== holdfast serve, start {} =====", self.starts);
        }
        let stderr = log.try_clone().expect("server log file");
        let child = holdfast_command(&self.env, &self.sandbox.working_dir())
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", holdfast_bin().display()));
        self.child = Some(child);
        // A new connection pool: connections to a killed process must not be reused.
        self.client = Client::new(self.client.base_url().to_owned());
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "holdfast serve exited with {status} before it was ready; log:\n{}",
                    self.log()
                );
            }
            // The ops listener: every process has one, with or without the gateway role.
            if let Ok(reply) = self.ops_client.try_get("/readyz", None).await
                && reply.status == 200
            {
                return;
            }
            // A server that came up elsewhere never answers here: fail now, not at the deadline.
            let log = self.log();
            let expected = self.client.base_url().trim_start_matches("http://");
            if let Some(line) = log
                .lines()
                .skip_while(|l| !l.contains(&format!("start {} =====", self.starts)))
                .find(|l| l.contains("holdfast node serving"))
                && !line.contains(expected)
                // Without the gateway role there is no API to listen elsewhere.
                && !line.contains("addr=None")
            {
                panic!("holdfast serve listens elsewhere than {expected}; log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "holdfast serve not ready within {READY_TIMEOUT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no graceful shutdown, no final snapshot.
    pub async fn kill9(&mut self) {
        let mut child = self.child.take().expect("the server is running");
        // `Child::kill` sends SIGKILL on unix, then reaps the process.
        child.kill().await.expect("SIGKILL the server");
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the server process with `kill -s`.
    pub fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {signal} {pid} failed");
    }

    /// Starts the server again with the same settings and port, and waits until it is ready.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.kill9().await;
        }
        self.spawn().await;
    }

    /// Runs `holdfast <args>` with the server's settings, feeding `stdin`.
    pub async fn cli(&self, args: &[&str], stdin: &str) -> Output {
        run_cli(&self.env, &self.sandbox.working_dir(), args, stdin).await
    }

    /// Adds an account with `role` through `holdfast users add` and returns an access token.
    pub async fn user_token(&self, role: &str) -> String {
        let email = unique_email(role);
        let out = self
            .cli(
                &["users", "add", &email, "--role", role, "--password-stdin"],
                &format!("{PASSWORD}\n"),
            )
            .await;
        assert!(
            out.status.success(),
            "holdfast users add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.client.login_token(&email, PASSWORD).await
    }

    pub async fn organizer_token(&self) -> String {
        self.user_token("organizer").await
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "----- server log ({}) -----\n{}\n----- end of server log -----",
                self.log_path.display(),
                self.log()
            );
        }
    }
}

/// Runs the `holdfast` binary in `cwd` with `env`, feeding `stdin`, within a deadline.
pub async fn run_cli(env: &[(String, String)], cwd: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = holdfast_command(env, cwd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", holdfast_bin().display()));
    if let Some(mut input) = child.stdin.take() {
        // A command that refuses before it reads its input (no database) closes the pipe
        // first: what it said is in its output.
        match input.write_all(stdin.as_bytes()).await {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                panic!("write the CLI's stdin: {e}")
            }
            _ => {}
        }
    }
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("holdfast {args:?} did not finish within 60 s"))
        .expect("run the CLI")
}

// ---------------------------------------------------------------------------------------------
// HTTP client

/// One HTTP answer, read completely.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as JSON; `Value::Null` when empty, a string when it is not JSON.
    pub body: Value,
    /// The body as it came (images, pages).
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem slug: `type` without its `/problems/` prefix.
    pub fn slug(&self) -> Option<&str> {
        self.body["type"]
            .as_str()
            .and_then(|t| t.rsplit_once("/problems/").map(|(_, slug)| slug))
    }

    /// Asserts a problem+json answer with `status` and `slug`.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, slug: &str) -> &Self {
        assert_eq!(
            (self.status, self.slug()),
            (status, Some(slug)),
            "expected {status} {slug}, got {self}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "problem content type: {self}"
        );
        let problem = &self.body;
        assert_eq!(problem["status"], json!(status), "problem status: {self}");
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!("/problems/{slug}"))),
            "{self}"
        );
        assert!(problem["title"].is_string(), "problem title: {self}");
        assert!(problem["detail"].is_string(), "problem detail: {self}");
        self
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "expected {status}, got {self}");
        self
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

/// One ticket type of a test event.
#[derive(Clone, Debug)]
pub struct TicketType {
    pub code: &'static str,
    pub capacity: u32,
    pub per_user_limit: Option<u32>,
}

impl TicketType {
    pub fn new(code: &'static str, capacity: u32, per_user_limit: Option<u32>) -> Self {
        Self {
            code,
            capacity,
            per_user_limit,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "code": self.code,
            "name": format!("{} seats", self.code),
            "price": 500_000,
            "currency": "VND",
            "capacity": self.capacity,
            "per_user_limit": self.per_user_limit,
        })
    }
}

/// The stock of one ticket type as `/availability` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stock {
    pub capacity: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
}

/// A client of the REST API. Every answer is checked for an `x-request-id` header, and every
/// error answer of the API for the problem+json content type.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
}

impl Client {
    pub fn new(base_url: String) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Self { http, base_url }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a request; `Err` only when no HTTP answer came back (refused, reset, timed out).
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body<'_>>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match body {
            Some(Body::Json(value)) => request = request.json(value),
            Some(Body::Raw(text)) => {
                request = request
                    .header("content-type", "application/json")
                    .body(text.to_owned());
            }
            None => {}
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        let reply = Reply {
            status,
            headers,
            body,
            bytes: bytes.to_vec(),
        };
        assert!(
            reply
                .header("x-request-id")
                .is_some_and(|id| !id.is_empty()),
            "no x-request-id on {path}: {reply}"
        );
        if status >= 400 && path.starts_with("/v1/") {
            assert_eq!(
                reply.header("content-type"),
                Some("application/problem+json"),
                "error without problem+json on {path}: {reply}"
            );
        }
        Ok(reply)
    }

    /// Sends a request; panics when no HTTP answer came back.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body<'_>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let what = format!("{method} {path}");
        self.try_send(method, path, token, body, headers)
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"))
    }

    pub async fn try_get(&self, path: &str, token: Option<&str>) -> Result<Reply, reqwest::Error> {
        self.try_send(Method::GET, path, token, None, &[]).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None, &[]).await
    }

    /// A POST with an `Idempotency-Key`.
    pub async fn post_with_key(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
        key: &str,
    ) -> Reply {
        let headers = [("idempotency-key", key)];
        self.send(Method::POST, path, token, Some(Body::Json(body)), &headers)
            .await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(Method::POST, path, token, Some(Body::Json(body)), &[])
            .await
    }

    pub async fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::DELETE, path, token, None, &[]).await
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Reply {
        self.post(
            "/v1/auth/register",
            None,
            &json!({"email": email, "password": password, "name": name}),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.post(
            "/v1/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// Logs in and returns the access token.
    /// Two access tokens of one login of `email` (the second from a refresh) and the refresh
    /// token that was used, so a second use of it is a reuse.
    pub async fn two_tokens_of_one_login(&self, email: &str) -> (String, String, String) {
        let login = self.login(email, PASSWORD).await;
        login.assert_status(200);
        let refreshed = self
            .post(
                "/v1/auth/refresh",
                None,
                &json!({"refresh_token": login.body["refresh_token"]}),
            )
            .await;
        refreshed.assert_status(200);
        let text = |v: &Value| v.as_str().expect("a token").to_owned();
        (
            text(&login.body["access_token"]),
            text(&refreshed.body["access_token"]),
            text(&login.body["refresh_token"]),
        )
    }

    pub async fn login_token(&self, email: &str, password: &str) -> String {
        let reply = self.login(email, password).await;
        reply.assert_status(200);
        reply.body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("login without access_token: {reply}"))
            .to_owned()
    }

    /// Registers a new customer and returns its access token.
    pub async fn customer_token(&self) -> String {
        let email = unique_email("customer");
        self.register(&email, PASSWORD, "Customer")
            .await
            .assert_status(201);
        self.login_token(&email, PASSWORD).await
    }

    /// Adds a staff member of the organizer `organizer_token` signs in as
    /// (`POST /v1/organizer/staff`) and returns the staff member's access token.
    pub async fn staff_token(&self, organizer_token: &str) -> String {
        let email = unique_email("staff");
        let body = json!({"email": email, "password": PASSWORD, "name": "Door Staff"});
        self.post("/v1/organizer/staff", Some(organizer_token), &body)
            .await
            .assert_status(201);
        self.login_token(&email, PASSWORD).await
    }

    /// Registers and logs in `n` customers, at most `concurrency` at a time (Argon2 is costly).
    pub async fn customer_tokens(&self, n: usize, concurrency: usize) -> Vec<String> {
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            let client = self.clone();
            let permits = Arc::clone(&permits);
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                client.customer_token().await
            });
        }
        let mut tokens = Vec::with_capacity(n);
        while let Some(token) = tasks.join_next().await {
            tokens.push(token.expect("registration task"));
        }
        tokens
    }

    /// Creates an event and returns its reply (201 expected by callers).
    pub async fn create_event_reply(&self, token: &str, types: &[TicketType]) -> Reply {
        let body = json!({
            "name": "New Year Live",
            "venue": "My Dinh",
            "starts_at": "2030-12-31T20:00:00Z",
            "ticket_types": types.iter().map(TicketType::json).collect::<Vec<_>>(),
        });
        self.post("/v1/events", Some(token), &body).await
    }

    /// Creates an event and returns its id.
    pub async fn create_event(&self, token: &str, types: &[TicketType]) -> String {
        let reply = self.create_event_reply(token, types).await;
        reply.assert_status(201);
        reply.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("event without id: {reply}"))
            .to_owned()
    }

    /// An event with one ticket type `GA`.
    pub async fn create_ga_event(
        &self,
        token: &str,
        capacity: u32,
        per_user_limit: Option<u32>,
    ) -> String {
        self.create_event(token, &[TicketType::new("GA", capacity, per_user_limit)])
            .await
    }

    pub async fn try_hold(
        &self,
        token: &str,
        event_id: &str,
        items: &[(&str, i64)],
    ) -> Result<Reply, reqwest::Error> {
        let body = hold_body(items);
        self.try_send(
            Method::POST,
            &format!("/v1/events/{event_id}/holds"),
            Some(token),
            Some(Body::Json(&body)),
            &[],
        )
        .await
    }

    /// Asks for a hold of `items` (ticket type, quantity).
    pub async fn hold(&self, token: &str, event_id: &str, items: &[(&str, i64)]) -> Reply {
        self.post(
            &format!("/v1/events/{event_id}/holds"),
            Some(token),
            &hold_body(items),
        )
        .await
    }

    pub async fn get_hold(&self, token: &str, hold_id: &str) -> Reply {
        self.get(&format!("/v1/holds/{hold_id}"), Some(token)).await
    }

    pub async fn release_hold(&self, token: &str, hold_id: &str) -> Reply {
        self.delete(&format!("/v1/holds/{hold_id}"), Some(token))
            .await
    }

    /// Stock per ticket type code; panics unless the answer is 200 and well-formed.
    pub async fn availability(&self, event_id: &str) -> BTreeMap<String, Stock> {
        let reply = self
            .get(&format!("/v1/events/{event_id}/availability"), None)
            .await;
        reply.assert_status(200);
        parse_availability(&reply.body)
    }

    /// The stock of ticket type `code`.
    pub async fn stock(&self, event_id: &str, code: &str) -> Stock {
        *self
            .availability(event_id)
            .await
            .get(code)
            .unwrap_or_else(|| panic!("no ticket type {code} in the availability"))
    }
}

/// A request body: JSON, or raw text sent as `application/json`.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    Json(&'a Value),
    Raw(&'a str),
}

pub fn hold_body(items: &[(&str, i64)]) -> Value {
    json!({
        "items": items
            .iter()
            .map(|(code, quantity)| json!({"ticket_type": code, "quantity": quantity}))
            .collect::<Vec<_>>(),
    })
}

/// Parses an `/availability` answer, checking that the counts add up to the capacity.
pub fn parse_availability(body: &Value) -> BTreeMap<String, Stock> {
    let types = body["ticket_types"]
        .as_array()
        .unwrap_or_else(|| panic!("availability without ticket_types: {body}"));
    types
        .iter()
        .map(|t| {
            let n = |key: &str| {
                t[key]
                    .as_u64()
                    .unwrap_or_else(|| panic!("availability without {key}: {body}"))
            };
            let stock = Stock {
                capacity: n("capacity"),
                available: n("available"),
                held: n("held"),
                sold: n("sold"),
            };
            assert_eq!(
                stock.available + stock.held + stock.sold,
                stock.capacity,
                "available + held + sold != capacity: {body}"
            );
            let code = t["code"]
                .as_str()
                .unwrap_or_else(|| panic!("availability without code: {body}"));
            (code.to_owned(), stock)
        })
        .collect()
}

/// The seats of a hold's `items`, per ticket type.
pub fn hold_seats(hold: &Value) -> BTreeMap<String, u64> {
    let mut seats = BTreeMap::new();
    for item in hold["items"].as_array().into_iter().flatten() {
        let code = item["ticket_type"].as_str().unwrap_or_default().to_owned();
        *seats.entry(code).or_default() += item["quantity"].as_u64().unwrap_or_default();
    }
    seats
}

// ---------------------------------------------------------------------------------------------
// The VNPAY stand-in

/// Serves VNPAY's stand-in for the test merchant on `listener`, calling `ipn` with results.
pub fn serve_vnpay(listener: tokio::net::TcpListener, ipn: String) {
    let router = holdfast_vnpay::sim::router(holdfast_vnpay::sim::SimConfig {
        hash_secret: VNPAY_HASH_SECRET.to_owned(),
        tmn_code: VNPAY_TMN_CODE.to_owned(),
        merchant_ipn_url: ipn,
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// Presses Pay (or Cancel) on the stand-in's payment page; returns the return URL it
/// redirects the browser to.
pub async fn press(sim: &str, payment_url: &str, pay: bool) -> String {
    let query = payment_url.split_once('?').expect("signed query").1;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let page = http.get(payment_url).send().await.expect("payment page");
    assert_eq!(page.status(), 200, "the stand-in shows the payment page");
    let button = if pay { "pay" } else { "cancel" };
    let reply = http
        .post(format!("{}/paymentv2/{button}", sim))
        .form(&[("q", query)])
        .send()
        .await
        .expect("press the button");
    assert_eq!(reply.status(), 302, "{:?}", reply.text().await);
    reply
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect to the return URL")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// QR codes

/// Arguments of every zbarimg run: QR codes only. With every symbology on, zbarimg now and
/// then also reads a one-dimensional symbol (Codabar, `A00C`) among a code's modules.
pub const ZBARIMG_ARGS: [&str; 4] = ["--raw", "-q", "-Sdisable", "-Sqrcode.enable"];

/// The one text zbarimg (Debian's zbar-tools) reads in `png`, as a phone scanner would; fails
/// unless it reads exactly one QR code.
pub fn zbar_decode(png: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("ticket.png");
    std::fs::write(&path, png).expect("write the PNG");
    let out = std::process::Command::new("zbarimg")
        .args(ZBARIMG_ARGS)
        .arg(&path)
        .output()
        .expect("zbarimg (Debian's zbar-tools) decodes QR images; tests/run installs it");
    assert!(out.status.success(), "zbarimg failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("text");
    let symbol = text.strip_suffix('\n').unwrap_or(&text);
    assert!(
        !symbol.contains('\n'),
        "zbarimg read more than one symbol: {text:?}"
    );
    symbol.to_owned()
}

/// A `redis-server` of a test alone, on `port`, killed when dropped; ready once it returns.
pub async fn own_redis(port: u16) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server (./tests/run installs it)");
    let up = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    assert!(up.is_some(), "redis-server did not listen on {port}");
    child
}

/// The account of the SMS provider's stand-in the tests send through.
pub const SMS_SID: &str = "AC00000000000000000000000000000001";
pub const SMS_TOKEN: &str = "sms-test-token";
pub const SMS_FROM: &str = "+15005550006";

/// The SMS provider's stand-in (`holdfast_notify::sim`, its HTTP API) served on a port of its
/// own.
pub struct SmsStandIn {
    pub sim: holdfast_notify::sim::SmsSim,
    /// Its base URL.
    pub url: String,
}

impl fmt::Debug for SmsStandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsStandIn")
            .field("url", &self.url)
            .finish()
    }
}

impl SmsStandIn {
    pub async fn start() -> Self {
        let sim = holdfast_notify::sim::SmsSim::new(holdfast_notify::sim::SimConfig {
            account_sid: SMS_SID.to_owned(),
            auth_token: SMS_TOKEN.to_owned(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMS stand-in");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let router = sim.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self { sim, url }
    }

    /// Points a node's SMS settings at this stand-in.
    pub fn configure(&self, c: &mut Config) {
        c.sms_base_url = Some(self.url.clone());
        c.sms_account_sid = Some(SMS_SID.to_owned());
        c.sms_auth_token = Some(SMS_TOKEN.to_owned());
        c.sms_from = Some(SMS_FROM.to_owned());
    }
}
