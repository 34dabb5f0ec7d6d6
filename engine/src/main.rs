//! `holdfast`: the one binary of a Holdfast node and its operator commands.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use holdfast_actors::UserId;
use holdfast_engine::config::{Config, LogFormat};
use holdfast_engine::{backend, node};
use holdfast_gateway::auth::Role;
use holdfast_gateway::backend::Account;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than the system allocator: a hold allocates and frees a few dozen small
/// blocks across threads (request, actor, journal writer), where glibc's malloc spent about a
/// quarter of the node's CPU (BENCHMARKS.md, "The hold path").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Services this process runs, comma-separated: all, or some of gateway (the public
        /// API), inventory (the event actors, shards), orders, payments, tickets, notifications,
        /// scheduler (default: HOLDFAST_ROLES, else all).
        #[arg(long)]
        roles: Option<String>,
    },
    /// Creates or upgrades the database schema, then exits.
    Migrate,
    /// Writes a consistent copy of the server's database to FILE while it serves: SQLite's
    /// online backup (VACUUM INTO), or pg_dump's custom format for PostgreSQL.
    Backup {
        /// The backup file to write (refused when it exists, unless --force).
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Puts a backup in place of the server's database (its node stopped), then checks it:
    /// migrations at this binary's schema, the journal's and the orders' counts.
    Restore {
        /// A file made by `holdfast backup` for the same kind of database.
        file: PathBuf,
        /// Replace a database that exists and holds data (SQLite: the file; PostgreSQL: its
        /// objects). A database in use by a running node is refused all the same.
        #[arg(long)]
        force: bool,
    },
    /// Manages accounts.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Runs a local stand-in of the VNPAY sandbox: a payment page whose Pay and Cancel buttons
    /// call the merchant's IPN with a correctly signed result and send the browser back. It
    /// reads the server's settings (the same --config file and HOLDFAST_* variables), so with
    /// none it plays VNPAY for the embedded default on this machine.
    VnpaySim(VnpaySimArgs),
    /// Operates the cluster's shards through any node's admin API.
    Shards {
        /// A node's ops listener (its HOLDFAST_OPS_ADDR), where the admin API is served.
        #[arg(
            long,
            global = true,
            env = "HOLDFAST_URL",
            default_value = "http://127.0.0.1:8180"
        )]
        url: String,
        /// An admin's access token.
        #[arg(long, global = true, env = "HOLDFAST_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: ShardsCommand,
    },
}

#[derive(Debug, clap::Args)]
struct VnpaySimArgs {
    /// Where the payment page listens [default: HOLDFAST_VNPAY_SIM_ADDR, else 127.0.0.1:9090,
    /// where the embedded default sends buyers].
    #[arg(long)]
    addr: Option<std::net::SocketAddr>,
    /// The merchant's terminal code (vnp_TmnCode) [default: HOLDFAST_VNPAY_TMN_CODE, else the
    /// embedded default's demo merchant].
    #[arg(long)]
    tmn_code: Option<String>,
    /// The HMAC-SHA512 secret shared with the merchant [default: HOLDFAST_VNPAY_HASH_SECRET,
    /// else the file of --hash-secret-file].
    #[arg(long, conflicts_with = "hash_secret_file")]
    hash_secret: Option<String>,
    /// A file holding the secret [default: DATA_DIR/vnpay-demo.secret, which `holdfast serve`
    /// generates on the embedded default].
    #[arg(long)]
    hash_secret_file: Option<PathBuf>,
    /// The server's data directory [default: HOLDFAST_DATA_DIR, else ./data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The server's public base URL, which IPNs and buyers return to [default:
    /// HOLDFAST_PUBLIC_URL, else http://HOLDFAST_HTTP_ADDR].
    #[arg(long)]
    public_url: Option<String>,
    /// The merchant's IPN endpoint [default: PUBLIC_URL/v1/payments/vnpay/ipn].
    #[arg(long)]
    merchant_ipn_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ShardsCommand {
    /// Shows every shard's owner, epoch and events, and every node.
    List {
        /// Print {"shards": [...], "nodes": [...]} as JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Moves SHARD to NODE with a live handoff.
    Move {
        /// The shard's number (`holdfast shards list` shows them).
        shard: u32,
        /// The node id (HOLDFAST_NODE_ID) of a live member to move it to.
        node: String,
    },
    /// Evens out shards across live nodes (least-loaded first); shows the plan first.
    Rebalance {
        /// Show the plan, move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Moves every shard off NODE (before maintenance).
    Drain {
        /// The node id (HOLDFAST_NODE_ID) to empty.
        node: String,
        /// Show the plan, move nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Adds an account with a privileged role to the server's database (which must exist:
    /// `holdfast migrate` or `holdfast serve` creates it); the password is read from standard
    /// input.
    Add {
        /// The account's e-mail address, which it logs in with.
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
        /// For staff (required): the e-mail of the organizer they check tickets in for.
        #[arg(long, value_name = "ORGANIZER_EMAIL")]
        organizer: Option<String>,
        /// The server's data directory, where its embedded database is [default:
        /// HOLDFAST_DATA_DIR, else ./data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
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
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: none in files, pipes and log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Its fallback for a failed write is `eprintln!`, which panics on a closed pipe
        // (`holdfast serve 2>&1 | head`); a log line that cannot be written is dropped.
        .log_internal_errors(false);
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
    mut config: Config,
    data_dir: Option<PathBuf>,
    email: &str,
    role: &str,
    name: Option<String>,
    organizer: Option<String>,
) -> anyhow::Result<()> {
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(path) = node::missing_sqlite_file(&config) {
        anyhow::bail!(
            "no database at {}: run `holdfast migrate` (or `holdfast serve`) to create it, or \
             name the server's data directory with --data-dir or HOLDFAST_DATA_DIR",
            path.display()
        );
    }
    let role = backend::parse_role(role).map_err(anyhow::Error::msg)?;
    match (role, &organizer) {
        (Role::Staff, None) => {
            anyhow::bail!("staff belong to an organizer: add --organizer ORGANIZER_EMAIL")
        }
        (Role::Staff, Some(_)) | (_, None) => {}
        (other, Some(_)) => anyhow::bail!(
            "--organizer is for staff only, not for the role {}",
            other.as_str()
        ),
    }
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
    let organizer = match organizer {
        Some(email) => Some(organizer_id(&store, &email).await?),
        None => None,
    };
    let account = Account {
        id: UserId::generate(),
        email,
        name,
        role,
        phone: None,
        language: "vi".to_owned(),
    };
    let now = holdfast_actors::actor::Clock::now(&holdfast_actors::actor::SystemClock).as_millis();
    let added = match organizer {
        Some(organizer) => backend::add_staff(&store, &account, &hash, organizer, now).await,
        None => backend::add_user(&store, &account, &hash, now).await,
    };
    added.map_err(|e| anyhow::anyhow!("adding {}: {e}", account.email))?;
    store.close().await;
    holdfast_engine::errln!(
        "added {} ({}) with id {} to {}",
        account.email,
        account.role.as_str(),
        account.id,
        node::redact(&config.database_url())
    );
    Ok(())
}

/// The id of the organizer account registered with `email`.
async fn organizer_id(store: &holdfast_persistence::Store, email: &str) -> anyhow::Result<UserId> {
    let user = store
        .user_by_email(email.trim())
        .await
        .with_context(|| format!("looking up the organizer {email}"))?
        .ok_or_else(|| anyhow::anyhow!("no account is registered with {email}"))?;
    if user.role != Role::Organizer.as_str() {
        anyhow::bail!(
            "{email} is a {} account, not an organizer: staff belong to an organizer",
            user.role
        );
    }
    Ok(UserId(user.id))
}

async fn shards(url: &str, token: Option<String>, command: ShardsCommand) -> anyhow::Result<()> {
    use holdfast_engine::shards_cli as cli;
    let admin = cli::Admin::new(url, token)?;
    match command {
        ShardsCommand::List { json } => cli::list(&admin, json).await,
        ShardsCommand::Move { shard, node } => {
            let (shards, nodes) = (admin.shards().await?, admin.nodes().await?);
            cli::run_moves(
                &admin,
                &[cli::plan_move(&shards, &nodes, shard, &node)?],
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

/// The stand-in's address and merchant: flags first, then the server's settings.
fn sim_config(
    config: &Config,
    args: VnpaySimArgs,
) -> anyhow::Result<(std::net::SocketAddr, holdfast_vnpay::sim::SimConfig)> {
    let hash_secret = match (args.hash_secret, args.hash_secret_file) {
        (Some(secret), _) => secret,
        (None, Some(path)) => read_secret_file(&path)?,
        (None, None) => match &config.vnpay_hash_secret {
            Some(secret) => secret.clone(),
            None => {
                let data_dir = args.data_dir.as_deref().unwrap_or(&config.data_dir);
                read_secret_file(&node::vnpay_demo_secret_path(data_dir))?
            }
        },
    };
    let public_url = args.public_url.unwrap_or_else(|| config.public_url());
    let merchant_ipn_url = args
        .merchant_ipn_url
        .unwrap_or_else(|| format!("{}/v1/payments/vnpay/ipn", public_url.trim_end_matches('/')));
    let tmn_code = args
        .tmn_code
        .or_else(|| config.vnpay_tmn_code.clone())
        .unwrap_or_else(|| node::DEMO_VNPAY_TMN_CODE.to_owned());
    Ok((
        args.addr.unwrap_or(config.vnpay_sim_addr),
        holdfast_vnpay::sim::SimConfig {
            hash_secret,
            tmn_code,
            merchant_ipn_url,
        },
    ))
}

/// A merchant secret kept in a file (surrounding whitespace is not part of it).
fn read_secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(secret) => Ok(secret.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "no VNPAY merchant secret at {} (the embedded default generates it there): start \
             `holdfast serve` first, or pass --hash-secret-file",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
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
    holdfast_engine::errln!(
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
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        for warning in Config::unknown_variables(names) {
            tracing::warn!("{warning}");
        }
        Ok(config)
    };
    match cli.command {
        Command::Shards {
            url,
            token,
            command,
        } => shards(&url, token, command).await,
        Command::VnpaySim(args) => {
            let (addr, config) = sim_config(&load()?, args)?;
            vnpay_sim(addr, config).await
        }
        Command::Serve { roles } => serve(load()?, roles).await,
        Command::Migrate => {
            let config = load()?;
            let store = node::open_store(&config).await?;
            store.close().await;
            holdfast_engine::errln!(
                "database {} is up to date",
                node::redact(&config.database_url())
            );
            Ok(())
        }
        Command::Backup { file, force } => {
            holdfast_engine::backup::backup(&load()?, &file, force).await
        }
        Command::Restore { file, force } => {
            holdfast_engine::backup::restore(&load()?, &file, force)
                .await
                .map(|_| ())
        }
        Command::Users {
            command:
                UsersCommand::Add {
                    email,
                    role,
                    password_stdin: _,
                    name,
                    organizer,
                    data_dir,
                },
        } => add_user(load()?, data_dir, &email, &role, name, organizer).await,
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
            holdfast_engine::errln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // `holdfast shards list | head`: the reader has what it wanted.
        Err(e) if holdfast_engine::output::is_closed(&e) => ExitCode::SUCCESS,
        Err(e) => {
            holdfast_engine::errln!("error: {}", holdfast_engine::output::chain(&e));
            ExitCode::FAILURE
        }
    }
}
