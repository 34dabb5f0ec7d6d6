//! `holdfast`: the one binary of a Holdfast node and its operator commands.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use holdfast_actors::UserId;
use holdfast_engine::config::{Config, LogFormat};
use holdfast_engine::{backend, node};
use holdfast_gateway::backend::Account;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Ticket reservation engine for flash sales"
)]
struct Cli {
    /// TOML settings file; HOLDFAST_* environment variables override it.
    #[arg(long, global = true, env = "HOLDFAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a node: the REST API and the event actors (SQLite in ./data unless configured).
    Serve {
        /// Services this process runs, comma-separated: all, or some of gateway, inventory,
        /// orders, payments, tickets, notifications (default: HOLDFAST_ROLES, else all).
        #[arg(long)]
        roles: Option<String>,
    },
    /// Creates or upgrades the database schema, then exits.
    Migrate,
    /// Manages accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Runs a local stand-in of the VNPAY sandbox: a payment page whose Pay and Cancel buttons
    /// call the merchant's IPN with a correctly signed result and send the browser back.
    VnpaySim {
        /// Where the simulated payment page listens; point HOLDFAST_VNPAY_PAY_URL at
        /// http://ADDR/paymentv2/vpcpay.html.
        #[arg(
            long,
            env = "HOLDFAST_VNPAY_SIM_ADDR",
            default_value = "127.0.0.1:9090"
        )]
        addr: std::net::SocketAddr,
        /// The merchant's terminal code (vnp_TmnCode).
        #[arg(long, env = "HOLDFAST_VNPAY_TMN_CODE", default_value = holdfast_engine::node::DEMO_VNPAY_TMN_CODE)]
        tmn_code: String,
        /// The HMAC-SHA512 secret shared with the merchant; unset: the embedded default's demo
        /// merchant.
        #[arg(
            long,
            env = "HOLDFAST_VNPAY_HASH_SECRET",
            hide_env_values = true,
            default_value = holdfast_engine::node::DEMO_VNPAY_HASH_SECRET,
            hide_default_value = true
        )]
        hash_secret: String,
        /// The merchant's IPN endpoint; defaults to HOLDFAST_PUBLIC_URL + /v1/payments/vnpay/ipn.
        #[arg(long)]
        merchant_ipn_url: Option<String>,
        #[arg(
            long,
            env = "HOLDFAST_PUBLIC_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        public_url: String,
    },
    /// Operates the cluster's shards through any node's admin API.
    Shards {
        /// A node's public URL.
        #[arg(
            long,
            global = true,
            env = "HOLDFAST_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        url: String,
        /// An admin's access token.
        #[arg(long, global = true, env = "HOLDFAST_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ShardsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ShardsCommand {
    /// Shows every shard's owner, epoch and events, and every node.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Moves SHARD to NODE with a live handoff.
    Move { shard: u32, node: String },
    /// Evens out shards across live nodes (least-loaded first); shows the plan first.
    Rebalance {
        /// Show the plan, move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Moves every shard off NODE (before maintenance).
    Drain {
        node: String,
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Adds an account with a privileged role; the password is read from standard input.
    Add {
        email: String,
        /// organizer, staff, admin (or customer).
        #[arg(long)]
        role: String,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Display name; defaults to the part of the email before '@'.
        #[arg(long)]
        name: Option<String>,
    },
}

fn init_tracing(config: &Config) {
    let filter = config
        .log
        .as_deref()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

async fn serve(mut config: Config, roles: Option<String>) -> anyhow::Result<()> {
    if let Some(roles) = roles {
        holdfast_engine::config::parse_roles(&roles).map_err(anyhow::Error::msg)?;
        config.roles = roles;
    }
    let node = holdfast_engine::start(config).await?;
    let stop = node.shutdown_sender();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests, snapshotting events");
        let _ = stop.send(true);
    });
    node.wait().await
}

async fn add_user(
    config: Config,
    email: &str,
    role: &str,
    name: Option<String>,
) -> anyhow::Result<()> {
    let role = backend::parse_role(role).map_err(anyhow::Error::msg)?;
    let email = holdfast_gateway::routes::accounts::parse_email(email)
        .map_err(|p| anyhow::anyhow!(p.detail))?;
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\n', '\r']).to_owned();
    holdfast_gateway::auth::check_password(&password, &email)?;
    let name = name.unwrap_or_else(|| email.split('@').next().unwrap_or("").to_owned());
    let name = holdfast_gateway::routes::accounts::parse_name(&name)
        .map_err(|p| anyhow::anyhow!(p.detail))?;
    let hash =
        tokio::task::spawn_blocking(move || holdfast_gateway::auth::hash_password(&password))
            .await?
            .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    let store = node::open_store(&config).await?;
    let account = Account {
        id: UserId::generate(),
        email,
        name,
        role,
        phone: None,
    };
    let now = holdfast_actors::actor::Clock::now(&holdfast_actors::actor::SystemClock).as_millis();
    backend::add_user(&store, &account, &hash, now)
        .await
        .map_err(|e| anyhow::anyhow!("adding {}: {e}", account.email))?;
    store.close().await;
    eprintln!(
        "added {} ({}) with id {}",
        account.email,
        account.role.as_str(),
        account.id
    );
    Ok(())
}

async fn shards(url: &str, token: Option<String>, command: ShardsCommand) -> anyhow::Result<()> {
    use holdfast_engine::shards_cli as cli;
    let admin = cli::Admin::new(url, token)?;
    match command {
        ShardsCommand::List { json } => cli::list(&admin, json).await,
        ShardsCommand::Move { shard, node } => {
            cli::run_moves(
                &admin,
                &[cli::Move {
                    shard,
                    from: None,
                    to: node,
                }],
                false,
            )
            .await
        }
        ShardsCommand::Rebalance { dry_run } => {
            let (shards, nodes) = (admin.shards().await?, admin.nodes().await?);
            cli::run_moves(&admin, &cli::plan_rebalance(&shards, &nodes), dry_run).await
        }
        ShardsCommand::Drain { node, dry_run } => {
            let (shards, nodes) = (admin.shards().await?, admin.nodes().await?);
            cli::run_moves(&admin, &cli::plan_drain(&shards, &nodes, &node)?, dry_run).await
        }
    }
}

async fn vnpay_sim(
    addr: std::net::SocketAddr,
    config: holdfast_vnpay::sim::SimConfig,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.hash_secret.is_empty(),
        "the hash secret must not be empty"
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let ipn = config.merchant_ipn_url.clone();
    eprintln!(
        "VNPAY sandbox stand-in on http://{}/paymentv2/vpcpay.html, IPN to {ipn}",
        listener.local_addr()?
    );
    axum::serve(listener, holdfast_vnpay::sim::router(config))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the VNPAY stand-in")
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let load = || -> anyhow::Result<Config> {
        let config = Config::load(cli.config.as_deref())?;
        init_tracing(&config);
        Ok(config)
    };
    match cli.command {
        Command::Shards {
            url,
            token,
            command,
        } => shards(&url, token, command).await,
        Command::VnpaySim {
            addr,
            tmn_code,
            hash_secret,
            merchant_ipn_url,
            public_url,
        } => {
            let merchant_ipn_url = merchant_ipn_url.unwrap_or_else(|| {
                format!("{}/v1/payments/vnpay/ipn", public_url.trim_end_matches('/'))
            });
            vnpay_sim(
                addr,
                holdfast_vnpay::sim::SimConfig {
                    hash_secret,
                    tmn_code,
                    merchant_ipn_url,
                },
            )
            .await
        }
        Command::Serve { roles } => serve(load()?, roles).await,
        Command::Migrate => {
            let config = load()?;
            let store = node::open_store(&config).await?;
            store.close().await;
            eprintln!(
                "database {} is up to date",
                node::redact(&config.database_url())
            );
            Ok(())
        }
        Command::Users {
            command:
                UsersCommand::Add {
                    email,
                    role,
                    password_stdin: _,
                    name,
                },
        } => add_user(load()?, &email, &role, name).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
