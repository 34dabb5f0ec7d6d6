//! `holdfast-bench compare`: starts Holdfast and each baseline in turn as child processes on
//! free loopback ports, runs the same scenario against each, and reports them side by side.
//! Every child is stopped when its run ends, on error too (and killed if the harness itself is
//! dropped: `kill_on_drop`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::client::{Conn, Target};
use crate::cpu;
use crate::load::Model;
use crate::report::RunResult;
use crate::scenario::{self, CpuProbe, Scenario};

/// What can be compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum TargetKind {
    /// Holdfast on SQLite, durability = sync (the default configuration).
    HoldfastSync,
    /// Holdfast on SQLite, durability = async.
    HoldfastAsync,
    /// Holdfast on PostgreSQL, durability = sync.
    HoldfastPg,
    BaselinePg,
    BaselineRedis,
    BaselineNoop,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::HoldfastSync => "holdfast-sync",
            Self::HoldfastAsync => "holdfast-async",
            Self::HoldfastPg => "holdfast-pg-sync",
            Self::BaselinePg => "baseline-pg",
            Self::BaselineRedis => "baseline-redis",
            Self::BaselineNoop => "baseline-noop",
        }
    }

    pub fn is_holdfast(self) -> bool {
        matches!(
            self,
            Self::HoldfastSync | Self::HoldfastAsync | Self::HoldfastPg
        )
    }

    /// Whose CPU a run of this target counts: the started server, and the PostgreSQL or Redis
    /// server it works on.
    pub fn cpu_probe(self, pid: Option<u32>) -> CpuProbe {
        CpuProbe {
            probe: cpu::Probe {
                pids: pid.into_iter().collect(),
                include_self: false,
                postgres: matches!(self, Self::HoldfastPg | Self::BaselinePg),
                redis: self == Self::BaselineRedis,
            },
            processes: if self.is_holdfast() {
                "holdfast serve".to_owned()
            } else {
                format!("{} server", self.name())
            },
        }
    }
}

/// What starting a server needs.
#[derive(Clone, Debug)]
pub struct Launch {
    pub holdfast_bin: Option<PathBuf>,
    pub database_url: String,
    pub redis_url: String,
}

/// The VNPAY terminal code of the merchant a benchmarked Holdfast is configured with.
pub const BENCH_VNPAY_TMN_CODE: &str = "HFBENCH";

/// The VNPAY hash secret of a benchmarked Holdfast, derived from the run's random secret (the
/// harness signs the IPN calls of its buyers with it).
pub fn vnpay_secret(secret: &str) -> String {
    format!("{secret}-vnpay")
}

/// Settings of a comparison.
#[derive(Clone, Debug)]
pub struct Options {
    pub targets: Vec<TargetKind>,
    pub scenario: Scenario,
    pub holdfast_bin: Option<PathBuf>,
    pub database_url: String,
    pub redis_url: String,
    /// Also run each Holdfast target in the open model at this share of its closed-model peak.
    pub open_at: Option<f64>,
    pub progress: bool,
}

impl Options {
    pub fn launch(&self) -> Launch {
        Launch {
            holdfast_bin: self.holdfast_bin.clone(),
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
        }
    }
}

/// A child server, stopped on [`Server::stop`] or killed when dropped.
#[derive(Debug)]
pub(crate) struct Server {
    name: String,
    child: Child,
    log: PathBuf,
    pub(crate) target: Target,
    /// The ops listener (admin API, metrics) of a Holdfast node.
    pub(crate) ops: Option<Target>,
}

impl Server {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub(crate) async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SIGTERM first: Holdfast snapshots its events and exits cleanly.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
            if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.child.kill().await;
    }

    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A port nobody listens on right now (the child binds it a moment later).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A fresh secret for one comparison: 64 hex digits.
pub fn random_secret() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// `postgres://u@h:p/db?x` → the same server with database `name`.
pub fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (base, _) = url.split_once('?').unwrap_or((url, ""));
    let scheme_end = base.find("://").context("a postgres:// URL")? + 3;
    let path = base[scheme_end..].find('/').map(|i| i + scheme_end);
    Ok(match path {
        Some(slash) => format!("{}/{name}", &base[..slash]),
        None => format!("{base}/{name}"),
    })
}

/// The `holdfast` binary: `--holdfast-bin`, else next to this binary (`target/release`).
pub fn holdfast_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(path.exists(), "{} does not exist", path.display());
        return Ok(path.to_owned());
    }
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("holdfast");
    anyhow::ensure!(
        sibling.exists(),
        "no holdfast binary at {}: build it with `cargo build --release -p holdfast-engine` or pass --holdfast-bin",
        sibling.display()
    );
    Ok(sibling)
}

async fn wait_ready(server: &mut Server, within: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = Conn::new(server.target.clone());
    loop {
        if let Some(status) = server.child.try_wait()? {
            anyhow::bail!(
                "{} exited with {status} before it was ready:\n{}",
                server.name,
                server.log_tail()
            );
        }
        if let Ok(answer) = conn
            .send(Method::GET, "/readyz", None, None, Duration::from_secs(2))
            .await
            && answer.status.is_success()
        {
            return Ok(());
        }
        if started.elapsed() > within {
            anyhow::bail!(
                "{} was not ready within {within:?}:\n{}",
                server.name,
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A command with no inherited `HOLDFAST_*` settings, its output going to `log`.
pub(crate) fn command(program: &Path, log: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars() {
        if key.starts_with("HOLDFAST_") {
            cmd.env_remove(key);
        }
    }
    let out = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true);
    Ok(cmd)
}

pub(crate) struct Started {
    pub(crate) server: Server,
    /// A database created for this run, dropped afterwards.
    pub(crate) database: Option<String>,
}

impl Started {
    /// Stops the server and drops its database.
    pub(crate) async fn stop(self, launch: &Launch) {
        self.server.stop().await;
        if let Some(name) = &self.database
            && let Err(e) = drop_database(&launch.database_url, name).await
        {
            eprintln!("dropping database {name}: {e:#}");
        }
    }
}

/// Starts `kind` on a free port with a fresh data directory (and database) under `dir`, and
/// waits until it is ready. Holdfast gets its ops listener on a free port too and a VNPAY
/// merchant whose secret is [`vnpay_secret`] of `secret`.
pub(crate) async fn start(
    kind: TargetKind,
    options: &Launch,
    secret: &str,
    dir: &Path,
) -> anyhow::Result<Started> {
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    // Every start of a target gets a data directory (and log) of its own: a second run of the
    // same target (the open model after the closed) starts empty too.
    let run = (1..)
        .find(|n| !dir.join(format!("{}-{n}.log", kind.name())).exists())
        .unwrap_or(0);
    let log = dir.join(format!("{}-{run}.log", kind.name()));
    let mut database = None;
    let mut ops = None;
    let mut cmd = if kind.is_holdfast() {
        let bin = holdfast_binary(options.holdfast_bin.as_deref())?;
        let data = dir.join(format!("{}-{run}-data", kind.name()));
        std::fs::create_dir_all(&data)?;
        let mut cmd = command(&bin, &log)?;
        // The ops listener on a port of its own, so a node already on 8180 does not clash.
        let ops_addr = format!("127.0.0.1:{}", free_port()?);
        ops = Some(Target::resolve(&format!("http://{ops_addr}"), false).await?);
        cmd.arg("serve")
            .env("HOLDFAST_HTTP_ADDR", &addr)
            .env("HOLDFAST_DATA_DIR", &data)
            .env("HOLDFAST_OPS_ADDR", &ops_addr)
            .env("HOLDFAST_JWT_SECRET", secret)
            .env("HOLDFAST_VNPAY_TMN_CODE", BENCH_VNPAY_TMN_CODE)
            .env("HOLDFAST_VNPAY_HASH_SECRET", vnpay_secret(secret))
            // Only the embedded default generates its own ticket key; PostgreSQL needs one.
            .env("HOLDFAST_TICKET_SIGNING_KEY", random_secret())
            // One load generator on one IP is not the crowd the limits are for.
            .env("HOLDFAST_RATE_LIMITS", "off")
            .env(
                "HOLDFAST_DURABILITY",
                if kind == TargetKind::HoldfastAsync {
                    "async"
                } else {
                    "sync"
                },
            );
        if kind == TargetKind::HoldfastPg {
            let name = format!("holdfast_bench_{}", std::process::id());
            create_database(&options.database_url, &name).await?;
            cmd.env(
                "HOLDFAST_DATABASE_URL",
                with_database(&options.database_url, &name)?,
            );
            database = Some(name);
        }
        cmd
    } else {
        let me = std::env::current_exe()?;
        let mut cmd = command(&me, &log)?;
        let baseline = match kind {
            TargetKind::BaselinePg => "pg",
            TargetKind::BaselineRedis => "redis",
            _ => "noop",
        };
        cmd.args(["baseline", "--kind", baseline, "--addr", &addr])
            .args(["--database-url", &options.database_url])
            .args(["--redis-url", &options.redis_url])
            .env("HOLDFAST_JWT_SECRET", secret);
        cmd
    };
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", kind.name()))?;
    let target = Target::resolve(&format!("http://{addr}"), false).await?;
    let mut server = Server {
        name: kind.name().to_owned(),
        child,
        log,
        target,
        ops,
    };
    if let Err(e) = wait_ready(&mut server, Duration::from_secs(60)).await {
        server.stop().await;
        if let Some(name) = &database {
            let _ = drop_database(&options.database_url, name).await;
        }
        return Err(e);
    }
    Ok(Started { server, database })
}

async fn admin(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(url)
        .await
        .context("connecting to PostgreSQL")
}

async fn create_database(url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = admin(url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

async fn drop_database(url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = admin(url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Runs `scenario` against a freshly started `kind`, then stops it whatever happened.
async fn run_target(
    kind: TargetKind,
    label: &str,
    scenario: &Scenario,
    options: &Options,
    secret: &str,
    dir: &Path,
) -> anyhow::Result<RunResult> {
    let launch = options.launch();
    let started = start(kind, &launch, secret, dir).await?;
    if options.progress {
        eprintln!("{label}: {} at {}", kind.name(), started.server.target.addr);
    }
    let result = scenario::measure(
        scenario,
        &started.server.target,
        secret.as_bytes(),
        label,
        options.progress,
        &kind.cpu_probe(started.server.pid()),
    )
    .await;
    started.stop(&launch).await;
    result
}

/// Runs every target in turn and returns their results in order.
pub async fn run(options: &Options) -> anyhow::Result<Vec<RunResult>> {
    let dir = tempfile::Builder::new()
        .prefix("holdfast-bench-")
        .tempdir()
        .context("creating a working directory")?;
    let secret = random_secret();
    let mut results = Vec::new();
    for &kind in &options.targets {
        let mut scenario = options.scenario.clone();
        if kind == TargetKind::BaselineNoop {
            scenario.skip_audit = Some("no-op stores nothing".to_owned());
        }
        let result = run_target(kind, kind.name(), &scenario, options, &secret, dir.path())
            .await
            .with_context(|| format!("running {}", kind.name()))?;
        if options.progress {
            eprintln!(
                "{}: {:.0} holds/s, p99 {:.2} ms, {} errors",
                result.target,
                result.holds_per_sec,
                result.hold_latency().p99_ms,
                result.errors
            );
        }
        let peak = result.holds_per_sec;
        results.push(result);
        if let (Some(share), true) = (options.open_at, kind.is_holdfast())
            && peak > 0.0
        {
            let mut open = options.scenario.clone();
            // Requests per second: holds, plus the releases and orders that follow a share.
            let rate = share
                * peak
                * (1.0
                    + open.load.release_ratio
                    + (1.0 - open.load.release_ratio) * open.load.order_ratio);
            open.load.model = Model::Open { rate };
            let label = format!("{}-open@{:.0}%", kind.name(), share * 100.0);
            let result = run_target(kind, &label, &open, options, &secret, dir.path())
                .await
                .with_context(|| format!("running {label}"))?;
            results.push(result);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_rewritten() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x")
                .ok()
                .as_deref(),
            Some("postgres://postgres@127.0.0.1:5432/x")
        );
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x")
                .ok()
                .as_deref(),
            Some("postgres://u@h/x")
        );
        assert_eq!(
            with_database("postgres://u@h:5432", "x").ok().as_deref(),
            Some("postgres://u@h:5432/x")
        );
    }

    #[test]
    fn secrets_are_long_enough_and_ports_free() {
        assert_eq!(random_secret().len(), 64);
        assert!(free_port().is_ok_and(|p| p > 0));
    }
}
