//! `holdfast-bench`: load a running server, serve a baseline, or compare them all.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use holdfast_bench::args::{QuantityRange, parse_duration, parse_ratio};
use holdfast_bench::baseline::{self, Kind};
use holdfast_bench::client::Target;
use holdfast_bench::compare::{self, TargetKind};
use holdfast_bench::load::{LoadSpec, Model};
use holdfast_bench::report::{self, CompareRow, RunResult};
use holdfast_bench::scenario::{self, Scenario};
use holdfast_bench::setup::EventSpec;

/// The same allocator as the `holdfast` binary, so that the in-process baselines and Holdfast
/// differ only in the reservation engine.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "holdfast-bench",
    version,
    about = "Flash-sale load tests for Holdfast and its peer baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Loads a running server over HTTP, audits it and reports.
    Run(RunArgs),
    /// Serves a peer baseline behind Holdfast's own HTTP stack.
    Baseline(BaselineArgs),
    /// Starts Holdfast and each baseline in turn, loads each the same way, and compares.
    Compare(CompareArgs),
    /// Many wrong-password logins at once against a fresh `holdfast serve`: its memory,
    /// `/healthz` latency and correct logins, with the default bound and with a wide one.
    LoginStorm(StormArgs),
    /// The whole purchase: hold, order, pay (a signed VNPAY IPN), tickets, against freshly
    /// started servers, audited; and the PostgreSQL order path of a monolith beside it.
    Journey(JourneyArgs),
    /// A timed on-sale through the waiting room: buyers join before the opening, poll, are
    /// admitted, hold and order; against a freshly started `holdfast serve`, audited.
    Queue(QueueArgs),
}

#[derive(Debug, Args)]
struct QueueArgs {
    /// Buyers in the queue.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// Seats of the event (free seats: an order confirms at once).
    #[arg(long, default_value_t = 1_000)]
    capacity: u32,
    #[arg(long, default_value_t = 6_000)]
    admit_per_minute: u32,
    #[arg(long, default_value_t = 200)]
    active_max: u32,
    #[arg(long, default_value_t = 600)]
    admission_ttl_secs: u32,
    /// The polling window before the opening (where a poll's CPU is measured).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    poll_window: Duration,
    /// After the opening, a buyer polls at most this often.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    poll_interval: Duration,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long the sale runs after the opening at most.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    sale_duration: Duration,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    #[arg(long)]
    holdfast_bin: Option<PathBuf>,
    /// Write the result as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
}

async fn queue(args: QueueArgs) -> anyhow::Result<bool> {
    use holdfast_bench::queue;
    anyhow::ensure!(
        (1..=1_000_000).contains(&args.users),
        "--users must be 1 to 1000000"
    );
    anyhow::ensure!(
        (1..=10_000).contains(&args.connections),
        "--connections must be 1 to 10000"
    );
    let options = queue::Options {
        users: args.users,
        capacity: args.capacity,
        admit_per_minute: args.admit_per_minute,
        active_max: args.active_max,
        admission_ttl_secs: args.admission_ttl_secs,
        poll_window: args.poll_window,
        poll_interval: args.poll_interval,
        connections: args.connections,
        sale_duration: args.sale_duration,
        timeout: args.timeout,
        launch: holdfast_bench::compare::Launch {
            holdfast_bin: args.holdfast_bin,
            database_url: String::new(),
            redis_url: String::new(),
        },
        progress: !args.quiet,
    };
    let result = queue::run(&options).await?;
    print!("{}", queue::text(&result));
    println!("{}", machine_note());
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(result.audit_ok)
}

#[derive(Debug, Args)]
struct JourneyArgs {
    /// What to run, in order: holdfast-sync, holdfast-async, holdfast-pg, baseline-pg.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "holdfast-sync,holdfast-pg,baseline-pg"
    )]
    targets: Vec<TargetKind>,
    /// Open model: journeys started per second, latency from each one's intended start.
    /// Without it, the closed model: every connection buys flat out.
    #[arg(long)]
    rate: Option<f64>,
    /// Connections (the closed model's buyers at once; the open model's most in flight).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Seats per purchase: 1, or a range drawn uniformly: 1-4.
    #[arg(long, default_value = "1")]
    quantity: QuantityRange,
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Seats of the one event on sale.
    #[arg(long, default_value_t = 1_000_000)]
    capacity: u32,
    /// Pause before each read of an order's tickets (and between IPN retries).
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// A request without an answer after this long fails its journey.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// A journey without its tickets after this long fails.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    journey_timeout: Duration,
    /// How long the audit waits for paid orders to be confirmed with their tickets.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    settle: Duration,
    /// Also run every target in the open model at this share of its closed-model peak.
    #[arg(long, value_parser = parse_ratio)]
    open_at: Option<f64>,
    /// Connections of those open-model runs (journeys in flight at most); default:
    /// --connections. A journey holds its connection from hold to tickets, so an open model
    /// needs more of them than the closed model's peak used.
    #[arg(long)]
    open_connections: Option<usize>,
    /// PostgreSQL connections of the baseline's pool.
    #[arg(long, default_value_t = 32)]
    pool_size: u32,
    #[arg(long)]
    holdfast_bin: Option<PathBuf>,
    /// PostgreSQL for holdfast-pg (a database is created and dropped) and the baseline (its
    /// own schema).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
}

impl JourneyArgs {
    fn options(&self) -> anyhow::Result<holdfast_bench::journey::Options> {
        let model = match self.rate {
            Some(rate) => {
                anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
                Model::Open { rate }
            }
            None => Model::Closed,
        };
        anyhow::ensure!(
            (1..=10_000).contains(&self.connections),
            "--connections must be 1 to 10000"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.users),
            "--users must be 1 to 1000000"
        );
        Ok(holdfast_bench::journey::Options {
            targets: self.targets.clone(),
            model,
            connections: self.connections,
            duration: self.duration,
            quantity: self.quantity,
            users: self.users,
            capacity: self.capacity,
            poll_interval: self.poll_interval,
            timeout: self.timeout,
            journey_timeout: self.journey_timeout,
            settle: self.settle,
            open_at: self.open_at,
            open_connections: self.open_connections,
            pool_size: self.pool_size,
            launch: holdfast_bench::compare::Launch {
                holdfast_bin: self.holdfast_bin.clone(),
                database_url: self.database_url.clone(),
                redis_url: String::new(),
            },
            progress: !self.quiet,
        })
    }
}

#[derive(Debug, Args)]
struct StormArgs {
    /// Concurrent wrong-password logins, each on its own connection.
    #[arg(long, default_value_t = 1000)]
    logins: usize,
    /// The `holdfast` binary; default: next to this one.
    #[arg(long)]
    holdfast_bin: Option<PathBuf>,
    /// Also run with this many hashes at once (and no wait bound), to show what the bound buys;
    /// 0 skips it.
    #[arg(long, default_value_t = 64)]
    wide: usize,
    /// Seconds to watch the memory after each storm.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    settle: Duration,
    /// Write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The load and the events, shared by `run` and `compare`.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Open model: requests per second, latency measured from each request's intended send
    /// time. Without it, the closed model: every connection flat out.
    #[arg(long)]
    rate: Option<f64>,
    /// Connections (the closed model's concurrency; the open model's most in flight).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long the load runs: 30s, 500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Seats per hold: 2, or a range drawn uniformly: 1-4.
    #[arg(long, default_value = "1")]
    quantity: QuantityRange,
    /// Share of placed holds released again (each release is one more request).
    #[arg(long, default_value = "0", value_parser = parse_ratio)]
    release_ratio: f64,
    /// Share of the other placed holds ordered (`POST /v1/orders`, one more request each;
    /// Holdfast only: the baselines answer 503 to orders).
    #[arg(long, default_value = "0", value_parser = parse_ratio)]
    order_ratio: f64,
    /// Distinct buyers (tokens minted with the server's secret; no accounts are registered).
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Events on sale: 1 is the hot-event flash sale, more spreads the load.
    #[arg(long, default_value_t = 1)]
    events: usize,
    /// Seats per event (Holdfast accepts at most 1,000,000 per ticket type).
    #[arg(long, default_value_t = 1_000_000)]
    capacity: u32,
    #[arg(long)]
    per_user_limit: Option<u32>,
    #[arg(long, default_value = "GA")]
    ticket_type: String,
    /// A request without an answer after this long counts as a `timeout` error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Read back at most this many acknowledged holds in the audit (a random sample beyond).
    #[arg(long, default_value_t = 50_000)]
    audit_holds_max: usize,
    #[arg(long)]
    no_audit: bool,
}

impl LoadArgs {
    fn scenario(&self) -> anyhow::Result<Scenario> {
        let model = match self.rate {
            Some(rate) => {
                anyhow::ensure!(rate > 0.0 && rate.is_finite(), "--rate must be positive");
                Model::Open { rate }
            }
            None => Model::Closed,
        };
        anyhow::ensure!(
            (1..=10_000).contains(&self.connections),
            "--connections must be 1 to 10000"
        );
        anyhow::ensure!(
            (1..=10_000).contains(&self.events),
            "--events must be 1 to 10000"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.users),
            "--users must be 1 to 1000000"
        );
        Ok(Scenario {
            load: LoadSpec {
                model,
                connections: self.connections,
                duration: self.duration,
                quantity: self.quantity,
                release_ratio: self.release_ratio,
                order_ratio: self.order_ratio,
                timeout: self.timeout,
                ticket_type: self.ticket_type.clone(),
            },
            events: EventSpec {
                count: self.events,
                ticket_type: self.ticket_type.clone(),
                capacity: self.capacity,
                per_user_limit: self.per_user_limit,
            },
            users: self.users,
            audit_holds_max: self.audit_holds_max,
            skip_audit: self.no_audit.then(|| "--no-audit".to_owned()),
        })
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The server's base URL, e.g. http://127.0.0.1:8080 (loopback only unless --allow-remote).
    #[arg(long)]
    url: String,
    /// The server's HOLDFAST_JWT_SECRET, to mint tokens.
    #[arg(long, env = "HOLDFAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    /// Name of the run in reports.
    #[arg(long, default_value = "run")]
    label: String,
    #[command(flatten)]
    load: LoadArgs,
    /// Write the result JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[arg(long)]
    allow_remote: bool,
    /// The server's process id (repeatable, or comma-separated): its CPU time over the load,
    /// per answered operation, goes into the report.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Count the CPU of every `postgres` process too (the server's journal is there).
    #[arg(long)]
    cpu_postgres: bool,
    /// Count the CPU of `redis-server` too.
    #[arg(long)]
    cpu_redis: bool,
}

#[derive(Debug, Args)]
struct BaselineArgs {
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long, default_value = "127.0.0.1:8090")]
    addr: std::net::SocketAddr,
    #[arg(long, env = "HOLDFAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// PostgreSQL connections of the pg baseline.
    #[arg(long, default_value_t = 32)]
    pool_size: u32,
    #[arg(long, default_value_t = 900)]
    hold_ttl: u64,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// What to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "holdfast-sync,holdfast-async,baseline-pg,baseline-redis,baseline-noop"
    )]
    targets: Vec<TargetKind>,
    #[command(flatten)]
    load: LoadArgs,
    /// The holdfast binary; default: next to this one (target/release/holdfast).
    #[arg(long)]
    holdfast_bin: Option<PathBuf>,
    /// PostgreSQL for the pg baseline and holdfast-pg (a database is created and dropped).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Also run every Holdfast target in the open model at this share of its measured peak.
    #[arg(long, value_parser = parse_ratio)]
    open_at: Option<f64>,
    /// Print {"runs": [...]} on stdout instead of the table.
    #[arg(long)]
    json: bool,
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long)]
    quiet: bool,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn write_outputs(
    runs: &[RunResult],
    title: &str,
    notes: &[String],
    out: Option<&PathBuf>,
    html: Option<&PathBuf>,
) -> anyhow::Result<()> {
    if let Some(path) = out {
        let json = if runs.len() == 1 {
            serde_json::to_string_pretty(&runs[0])?
        } else {
            serde_json::to_string_pretty(&serde_json::json!({ "runs": runs }))?
        };
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = html {
        std::fs::write(path, report::html(title, notes, runs))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn machine_note() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "Machine: {cores} cores; the load generator runs on the same cores as the server, so every number here includes the generator's own CPU use."
    )
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let scenario = args.load.scenario()?;
    let target = Target::resolve(&args.url, args.allow_remote).await?;
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let cpu = scenario::CpuProbe {
        probe: holdfast_bench::cpu::Probe {
            pids: args.server_pid.clone(),
            include_self: false,
            postgres: args.cpu_postgres,
            redis: args.cpu_redis,
        },
        processes: "server".to_owned(),
    };
    let result = scenario::measure(
        &scenario,
        &target,
        args.jwt_secret.as_bytes(),
        &args.label,
        progress,
        &cpu,
    )
    .await?;
    let runs = [result];
    print!("{}", report::text_table(&runs));
    print_details(&runs[0]);
    write_outputs(
        &runs,
        &format!("holdfast-bench run: {}", args.label),
        &[machine_note()],
        args.out.as_ref(),
        args.report.as_ref(),
    )?;
    Ok(runs[0].audit.ok)
}

fn print_details(r: &RunResult) {
    for (op, l) in &r.latency {
        println!(
            "{op:>8}: n={} p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}",
            l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    }
    for (kind, n) in &r.outcomes {
        println!("  {kind}: {n}");
    }
    if r.unsent > 0 {
        println!(
            "  unsent (generator fell behind the schedule): {}",
            r.unsent
        );
    }
    if let Some(cpu) = &r.cpu {
        println!("  CPU: {}", cpu.text());
    }
    for v in &r.audit.violations {
        println!("  AUDIT: {v}");
    }
}

async fn compare(args: CompareArgs) -> anyhow::Result<bool> {
    let scenario = args.load.scenario()?;
    let progress = !args.quiet && std::io::stderr().is_terminal();
    let options = compare::Options {
        targets: args.targets,
        scenario,
        holdfast_bin: args.holdfast_bin,
        database_url: args.database_url,
        redis_url: args.redis_url,
        open_at: args.open_at,
        progress: !args.quiet,
    };
    let mut options = options;
    options.progress = options.progress && (progress || !args.json);
    let runs = compare::run(&options).await?;
    if args.json {
        let rows: Vec<CompareRow> = runs.iter().map(CompareRow::from).collect();
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "runs": rows }))?
        );
        eprint!("{}", report::text_table(&runs));
    } else {
        print!("{}", report::text_table(&runs));
    }
    write_outputs(
        &runs,
        "holdfast-bench compare",
        &[
            machine_note(),
            "Every target gets the same scenario through the same HTTP stack (holdfast_gateway::router); only the reservation engine differs.".to_owned(),
        ],
        args.out.as_ref(),
        args.report.as_ref(),
    )?;
    Ok(runs.iter().all(|r| r.audit.ok))
}

async fn login_storm(args: StormArgs) -> anyhow::Result<bool> {
    use holdfast_bench::storm;
    anyhow::ensure!(
        (1..=20_000).contains(&args.logins),
        "--logins must be 1 to 20000"
    );
    let mut plans = vec![("bounded (defaults)".to_owned(), Vec::new())];
    if args.wide > 0 {
        let env = vec![
            (
                "HOLDFAST_PASSWORD_HASH_CONCURRENCY".to_owned(),
                args.wide.to_string(),
            ),
            (
                "HOLDFAST_PASSWORD_HASH_WAIT_MS".to_owned(),
                "120000".to_owned(),
            ),
            (
                "HOLDFAST_PASSWORD_HASH_WAITING_MAX".to_owned(),
                "100000".to_owned(),
            ),
        ];
        plans.push((format!("{} hashes at once, no wait bound", args.wide), env));
    }
    let mut results = Vec::new();
    for (label, env) in plans {
        eprintln!("login storm: {label}, {} logins", args.logins);
        results.push(
            storm::run(&storm::Options {
                label,
                holdfast_bin: args.holdfast_bin.clone(),
                logins: args.logins,
                env,
                settle: args.settle,
            })
            .await?,
        );
    }
    print!("{}", storm::table(&results));
    println!("{}", machine_note());
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(true)
}

async fn journey(args: JourneyArgs) -> anyhow::Result<bool> {
    use holdfast_bench::journey;
    let options = args.options()?;
    let results = journey::run(&options).await?;
    print!("{}", journey::text_table(&results));
    println!("{}", machine_note());
    if let Some(path) = &args.out {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&serde_json::json!({ "runs": results }))?,
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(results.iter().all(|r| r.audit.ok))
}

fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let ok = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Baseline(args) => {
                init_tracing();
                baseline::serve(baseline::Options {
                    kind: args.kind,
                    addr: args.addr,
                    jwt_secret: args.jwt_secret,
                    database_url: args.database_url,
                    redis_url: args.redis_url,
                    pool_size: args.pool_size,
                    hold_ttl_secs: args.hold_ttl,
                })
                .await
                .map(|()| true)
            }
            Command::Compare(args) => compare(args).await,
            Command::LoginStorm(args) => login_storm(args).await,
            Command::Journey(args) => journey(args).await,
            Command::Queue(args) => queue(args).await,
        }
    })?;
    Ok(if ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("the audit found violations");
        std::process::ExitCode::from(2)
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_arguments_parse() {
        let cli = Cli::try_parse_from([
            "holdfast-bench",
            "run",
            "--url",
            "http://127.0.0.1:8080",
            "--jwt-secret",
            "s",
            "--rate",
            "5000",
            "--quantity",
            "1-4",
            "--release-ratio",
            "0.2",
            "--duration",
            "5s",
            "--events",
            "64",
        ])
        .expect("parses");
        let Command::Run(args) = cli.command else {
            panic!("run expected")
        };
        let scenario = args.load.scenario().expect("valid");
        assert_eq!(scenario.load.model, Model::Open { rate: 5000.0 });
        assert_eq!(scenario.load.quantity, QuantityRange { min: 1, max: 4 });
        assert_eq!(scenario.events.count, 64);
        assert_eq!(scenario.load.duration, Duration::from_secs(5));
        assert!(
            Cli::try_parse_from([
                "holdfast-bench",
                "run",
                "--url",
                "x",
                "--jwt-secret",
                "s",
                "--release-ratio",
                "2"
            ])
            .is_err()
        );
    }

    #[test]
    fn compare_targets_parse() {
        let cli = Cli::try_parse_from([
            "holdfast-bench",
            "compare",
            "--targets",
            "holdfast-sync,baseline-noop",
            "--json",
        ])
        .expect("parses");
        let Command::Compare(args) = cli.command else {
            panic!("compare expected")
        };
        assert_eq!(
            args.targets,
            vec![TargetKind::HoldfastSync, TargetKind::BaselineNoop]
        );
        assert!(args.json);
        assert!(
            args.load
                .scenario()
                .is_ok_and(|s| s.load.model == Model::Closed)
        );
    }
}
