//! One Holdfast node: store, event actors and the HTTP gateway, started and stopped together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use holdfast_actors::actor::{Clock, Journal, SystemClock};
use holdfast_actors::group_commit::GroupCommit;
use holdfast_gateway::AppState;
use holdfast_persistence::Store;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::backend::NodeBackend;
use crate::cluster::{self, Cluster};
use crate::config::Config;
use crate::deny_list::DenyList;
use crate::inventories::Inventories;
use holdfast_checkout::notifications::NotifySettings;
use holdfast_checkout::payments::PaymentSettings;
use holdfast_checkout::{CheckoutNode, Settings};

/// Event batches written in one group commit at most.
const GROUP_COMMIT_EVENTS_MAX: usize = 256;
/// Event batches waiting for the journal writer at most.
const GROUP_COMMIT_QUEUE_MAX: usize = 4096;

/// The process-wide Prometheus recorder (a process has one, however many nodes it runs).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let batch = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &seconds)
                // Every `…_events` histogram is a group commit's size.
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_events".to_owned()), &batch));
            match builder {
                Ok(b) => b.install_recorder().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "metrics recorder already installed; /metrics shows nothing from this one");
                    PrometheusBuilder::new().build_recorder().handle()
                }),
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Opens (and migrates) the store the settings name; creates the data directory if embedded.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.is_embedded() {
        private_dir(&config.data_dir)?;
    }
    let url = config.database_url();
    let sqlite_file = sqlite_path(&url);
    if let Some(path) = &sqlite_file {
        private_file(path)?;
    }
    let store = Store::connect(&url, config.database_max_connections)
        .await
        .with_context(|| format!("connecting to {}", redact(&url)))?;
    if let Some(path) = &sqlite_file {
        // SQLite gives its -wal and -shm files the database file's mode; older installs
        // created them world-readable, so every start makes sure.
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = PathBuf::from(format!("{}{suffix}", path.display()));
            if file.exists() {
                set_mode(&file, 0o600)?;
            }
        }
    }
    store
        .migrate()
        .await
        .context("running database migrations")?;
    Ok(store)
}

/// The SQLite file the settings name when it does not exist yet (operator commands other than
/// `migrate` refuse to create one).
pub fn missing_sqlite_file(config: &Config) -> Option<PathBuf> {
    sqlite_path(&config.database_url()).filter(|path| !path.exists())
}

/// The file of a `sqlite:` URL (`None` for other databases and in-memory SQLite).
pub(crate) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("making {} private (mode {mode:o})", path.display()))
}

/// The data directory, created if missing, readable by this user only (it holds the
/// database with password hashes and e-mails, and the generated secrets).
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    // The working directory itself is not ours to lock down; a directory of someone else's
    // (a mounted volume) is reported, not fatal.
    if !matches!(dir.to_str(), Some("" | "."))
        && let Err(e) = set_mode(dir, 0o700)
    {
        tracing::warn!(error = %format!("{e:#}"), "the data directory could not be made private");
    }
    Ok(())
}

/// The SQLite database file, created empty with mode 0600 if missing, so SQLite and its
/// journal files start private.
fn private_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.exists() {
        return set_mode(path, 0o600);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    Ok(())
}

/// The database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}{}@{}",
                &url[..scheme + 3],
                if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    user.to_owned()
                },
                &url[at + 1..]
            )
        }
        _ => url.to_owned(),
    }
}

/// The token secret: from settings, or from a file generated on first start.
fn jwt_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(previous) = &config.jwt_previous_secret {
        crate::secrets::refuse_published("HOLDFAST_JWT_PREVIOUS_SECRET", previous.as_bytes())?;
    }
    if let Some(secret) = &config.jwt_secret {
        anyhow::ensure!(
            secret.len() >= 32,
            "HOLDFAST_JWT_SECRET must be at least 32 bytes"
        );
        crate::secrets::refuse_published("HOLDFAST_JWT_SECRET", secret.as_bytes())?;
        return Ok(secret.as_bytes().to_vec());
    }
    let path = config
        .jwt_secret_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("jwt.secret"));
    let secret = read_or_generate_secret(&path)?;
    anyhow::ensure!(
        secret.len() >= 32,
        "{} must hold at least 32 bytes",
        path.display()
    );
    Ok(secret)
}

/// A secret kept in `path`: read, or generated (mode 0600) on first start. Refused when it is
/// one this project publishes.
fn read_or_generate_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let secret = if path.exists() {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    } else {
        write_new_secret(path)?
    };
    crate::secrets::refuse_published(&path.display().to_string(), &secret)?;
    Ok(secret)
}

fn write_new_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let secret: String = (0..64)
        .map(|_| char::from(b"0123456789abcdef"[rand::random::<usize>() % 16]))
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    tracing::info!(path = %path.display(), "generated a new secret");
    Ok(secret.into_bytes())
}

/// Checks every setting that can be wrong on its own (merchant, ticket keys, TLS files, SMS,
/// secrets given explicitly) without generating anything; returns the internal API's TLS.
fn check_settings(config: &Config) -> anyhow::Result<Option<cluster::tls::Tls>> {
    let roles = config.roles().map_err(anyhow::Error::msg)?;
    if let Some(previous) = &config.jwt_previous_secret {
        crate::secrets::refuse_published("HOLDFAST_JWT_PREVIOUS_SECRET", previous.as_bytes())?;
    }
    if config.jwt_secret.is_some() {
        jwt_secret(config)?;
    }
    // Off the embedded default's demo merchant these only read settings.
    let demo = config.is_embedded() && config.vnpay_hash_secret.is_none();
    if roles.saga.payments && !demo {
        vnpay_config(config)?;
    }
    if config.ticket_signing_key.is_some() || !config.is_embedded() {
        let (signer, _) = ticket_keys(config)?;
        check_ticket_signer(roles, signer.as_deref())?;
    }
    sms_settings(config)?;
    pairs(
        config.kafka_producer_config.as_deref(),
        "HOLDFAST_KAFKA_PRODUCER_CONFIG",
    )?;
    config
        .internal_tls()
        .map(|files| cluster::tls::Tls::load(&files))
        .transpose()
        .context("loading the internal API's TLS certificate")
}

/// The API's (with the gateway role), the ops' and (in cluster mode, with the inventory role)
/// the internal API's listeners.
async fn bind_listeners(
    config: &Config,
    roles: crate::config::Roles,
) -> anyhow::Result<(Option<TcpListener>, TcpListener, Option<TcpListener>)> {
    let api = if roles.gateway {
        let what = format!("binding the API to {}", config.http_addr);
        Some(config.http_addr.bind().await.context(what)?)
    } else {
        None
    };
    let ops = config.ops_addr.bind().await.with_context(|| {
        format!(
            "binding the ops listener (metrics, admin API) to {}; set HOLDFAST_OPS_ADDR",
            config.ops_addr
        )
    })?;
    let internal = if config.node_id.is_some() && roles.inventory {
        let what = format!("binding the internal API to {}", config.internal_addr);
        Some(config.internal_addr.bind().await.context(what)?)
    } else {
        None
    };
    Ok((api, ops, internal))
}

fn check_ticket_signer(
    roles: crate::config::Roles,
    signer: Option<&holdfast_tickets::Signer>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !roles.saga.tickets || signer.is_some(),
        "the tickets service needs HOLDFAST_TICKET_SIGNING_KEY (64 hex digits; every node must \
         share it) unless it runs on the embedded default"
    );
    Ok(())
}

/// A started node.
#[derive(Debug)]
pub struct RunningNode {
    addr: Option<SocketAddr>,
    ops_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl RunningNode {
    /// Where the HTTP API listens (`None` without the gateway role).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Where `/metrics` and the admin API listen.
    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_addr
    }

    /// Stops accepting requests, finishes those in flight, snapshots every event and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("node task panicked")?
    }

    /// Runs until the task ends (after a shutdown signal).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("node task panicked")?
    }

    pub fn shutdown_sender(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Opens the store, binds the API (and in cluster mode the internal API, then joins the
/// cluster) and serves until shut down.
pub async fn start(config: Config) -> anyhow::Result<RunningNode> {
    // Settings and ports first: a mistake must not leave generated secrets, a joined cluster
    // or claimed shards behind.
    let tls = check_settings(&config)?;
    let roles = config.roles().map_err(anyhow::Error::msg)?;
    let (listener, ops_listener, internal) = bind_listeners(&config, roles).await?;
    let store = open_store(&config).await?;
    let secret = jwt_secret(&config)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store_journal: Arc<dyn Journal> = match &config.node_id {
        Some(node_id) => Arc::new(store.cluster_journal(config.shards, node_id)),
        None => Arc::new(store.journal()),
    };
    // Every actor of the node appends through one writer: batches that arrive together share
    // one transaction.
    let journal: Arc<dyn Journal> = Arc::new(GroupCommit::start(
        store_journal,
        GROUP_COMMIT_EVENTS_MAX,
        GROUP_COMMIT_QUEUE_MAX,
    ));
    let inventories = Arc::new(Inventories::new(
        store.clone(),
        journal,
        Arc::clone(&clock),
        config.actor_options(),
    ));
    let addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
    let ops_addr = ops_listener.local_addr()?;
    let (shutdown, mut stopped) = watch::channel(false);
    let (cluster, internal_task) = match &config.node_id {
        Some(node_id) => {
            let internal_addr = internal.as_ref().map(TcpListener::local_addr).transpose()?;
            let settings = cluster::Settings {
                node_id: node_id.clone(),
                advertise_addr: config.advertise_addr.clone().unwrap_or_else(|| {
                    internal_addr
                        .map_or_else(|| config.internal_addr.to_string(), |a| a.to_string())
                }),
                http_addr: addr.map_or_else(String::new, |a| a.to_string()),
                shards: config.shards,
                lease: Duration::from_secs(config.lease_secs),
                tls_roots: tls.as_ref().map(|t| t.roots.clone()),
                hosts_shards: roles.inventory,
            };
            let cluster = Cluster::join(
                settings,
                store.clone(),
                Arc::clone(&inventories),
                Arc::clone(&clock),
                &secret,
            )
            .await
            .context("joining the cluster")?;
            let task = internal.map(|internal| {
                serve_internal(internal, Arc::clone(&cluster), tls, shutdown.subscribe())
            });
            (Some(cluster), task)
        }
        None => (None, None),
    };
    let deny_list = Arc::new(match config.redis_url.as_deref() {
        Some(url) => DenyList::with_broadcast(
            crate::deny_list::Broadcast::new(url).context("reading redis_url")?,
        ),
        None => DenyList::default(),
    });
    let deny_sync = tokio::spawn(Arc::clone(&deny_list).sync(store.clone(), Arc::clone(&clock)));
    let deny_listen = tokio::spawn(Arc::clone(&deny_list).listen(shutdown.subscribe()));
    let backend = NodeBackend::new(
        store.clone(),
        Arc::clone(&inventories),
        cluster.clone(),
        deny_list,
        Arc::clone(&clock),
        config.hold_ttl,
    )
    .with_captcha(
        match (&config.captcha_siteverify_url, &config.captcha_secret) {
            (Some(url), Some(secret)) => Some(
                crate::captcha::Captcha::new(url.clone(), secret.clone())
                    .context("the CAPTCHA client")?,
            ),
            _ => None,
        },
    );
    let backend = Arc::new(if roles.inventory {
        backend
    } else {
        backend.without_inventory()
    });
    // Links in the buyers' messages: the public URL, else the address served (port 0 bound).
    let public_url = match (&config.public_url, addr) {
        (None, Some(addr)) => served_url(&config.http_addr, addr),
        _ => config.public_url(),
    };
    let checkout = Arc::new(crate::saga::SagaCheckout(
        start_checkout(
            &config,
            &store,
            Arc::clone(&backend),
            Arc::clone(&clock),
            public_url.clone(),
        )
        .await
        .context("starting the checkout services")?,
    ));
    let metrics = metrics_handle();
    let mut gateway_options = config.gateway_options();
    gateway_options.public_url = Some(public_url.clone());
    gateway_options.ops_url = Some(served_url(&config.ops_addr, ops_addr));
    let tokens = holdfast_gateway::auth::TokenKeys::with_previous(
        &secret,
        config.jwt_previous_secret.as_deref().map(str::as_bytes),
        gateway_options.access_token_ttl_secs,
    );
    let serve_options = gateway_options.serve_options();
    let shared_rate_limits = config
        .redis_url
        .as_deref()
        .map(crate::rate_limits::RedisRateLimits::new)
        .transpose()
        .context("reading redis_url")?
        .map(|redis| Arc::new(redis) as Arc<dyn holdfast_gateway::rate_limit::Shared>);
    let state = AppState::new(
        backend.clone(),
        checkout.clone(),
        tokens,
        gateway_options,
        Arc::new(move || metrics.render()),
        shared_rate_limits,
    );
    let app = holdfast_gateway::router(state.clone());
    let ops_app = holdfast_gateway::ops_router(state);
    let mut ops_stop = shutdown.subscribe();
    let ops_task = tokio::spawn(holdfast_gateway::serve::serve(
        ops_listener,
        ops_app,
        serve_options.clone(),
        async move {
            let _ = ops_stop.wait_for(|s| *s).await;
        },
    ));
    let cancel_refunds = checkout.0.serves_orders().then(|| {
        tokio::spawn(crate::cancel_refunds::run(
            store.clone(),
            Arc::clone(&checkout),
            Arc::clone(&clock),
            backend.cancels(),
            shutdown.subscribe(),
        ))
    });
    backend.set_ready(true);
    tracing::info!(addr = ?addr, %ops_addr, roles = %config.roles, node = config.node_id.as_deref().unwrap_or("standalone"), database = %redact(&config.database_url()), durability = ?config.durability, "holdfast node serving");
    let task = tokio::spawn(async move {
        let until_stopped = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let served = match listener {
            Some(listener) => {
                holdfast_gateway::serve::serve(listener, app, serve_options, until_stopped).await
            }
            None => {
                until_stopped.await;
                Ok(())
            }
        };
        let _ = ops_task.await;
        backend.set_ready(false);
        if let Some(task) = cancel_refunds {
            task.abort();
        }
        checkout.0.stop().await;
        deny_sync.abort();
        let _ = deny_listen.await;
        match &cluster {
            Some(cluster) => cluster.leave().await,
            None => inventories.stop_all().await,
        }
        if let Some(task) = internal_task {
            let _ = task.await;
        }
        store.close().await;
        tracing::info!("holdfast node stopped");
        served.context("serving HTTP")
    });
    Ok(RunningNode {
        addr,
        ops_addr,
        shutdown,
        task,
    })
}

/// Serves the node-to-node API (TLS when certificates are configured) until shut down.
fn serve_internal(
    internal: TcpListener,
    cluster: Arc<Cluster>,
    tls: Option<cluster::tls::Tls>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let router = cluster::wire::router(cluster);
    match tls {
        Some(tls) => tokio::spawn(cluster::tls::serve(internal, router, tls.acceptor, stop)),
        None => tokio::spawn(async move {
            let served = axum::serve(internal, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "internal API failed");
            }
        }),
    }
}

/// The VNPAY terminal code of the embedded default's demo merchant, which `holdfast vnpay-sim`
/// plays VNPAY for, so a purchase can be clicked through on one machine. Not a secret: the
/// merchant's secret is generated per data directory ([`vnpay_demo_secret_path`]).
pub const DEMO_VNPAY_TMN_CODE: &str = "HOLDFAST";

/// Where the embedded default keeps its demo merchant's VNPAY secret, generated on first start;
/// `holdfast vnpay-sim` reads it from there.
pub fn vnpay_demo_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join("vnpay-demo.secret")
}

/// The base URL of a `holdfast vnpay-sim` listening on `addr` (loopback when it listens on
/// every interface).
pub fn vnpay_sim_url(addr: SocketAddr) -> String {
    http_url(addr)
}

/// The URL of a listener bound to `bound` as configured: the host the settings name (a host
/// name stays one), loopback for every interface, and the port actually bound.
fn served_url(configured: &crate::config::BindAddr, bound: SocketAddr) -> String {
    match configured.as_str().rsplit_once(':') {
        Some((host, _)) if !matches!(host, "0.0.0.0" | "[::]") => {
            format!("http://{host}:{}", bound.port())
        }
        _ => http_url(bound),
    }
}

/// `http://addr`, with loopback for an address that listens on every interface.
fn http_url(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

/// The VNPAY merchant settings: from settings, or the demo merchant on the embedded default.
fn vnpay_config(config: &Config) -> anyhow::Result<(holdfast_vnpay::Config, Option<String>)> {
    let demo = config.is_embedded() && config.vnpay_hash_secret.is_none();
    let sim = vnpay_sim_url(config.vnpay_sim_addr);
    let hash_secret = match (&config.vnpay_hash_secret, demo) {
        (Some(secret), _) => {
            crate::secrets::refuse_published("HOLDFAST_VNPAY_HASH_SECRET", secret.as_bytes())?;
            secret.clone()
        }
        (None, true) => {
            let path = vnpay_demo_secret_path(&config.data_dir);
            let secret = read_or_generate_secret(&path)?;
            tracing::warn!(
                "VNPAY is not configured: payments go to the demo merchant of `holdfast vnpay-sim` \
                 ({sim}, secret in {}); set HOLDFAST_VNPAY_TMN_CODE, HOLDFAST_VNPAY_HASH_SECRET \
                 and HOLDFAST_VNPAY_PAY_URL for real payments",
                path.display()
            );
            String::from_utf8(secret)
                .with_context(|| format!("{} is not text", path.display()))?
                .trim()
                .to_owned()
        }
        (None, false) => anyhow::bail!(
            "the payments service needs HOLDFAST_VNPAY_TMN_CODE and HOLDFAST_VNPAY_HASH_SECRET \
             (the demo merchant is only used on the embedded default)"
        ),
    };
    let tmn_code = match (&config.vnpay_tmn_code, demo) {
        (Some(code), _) => code.clone(),
        (None, true) => DEMO_VNPAY_TMN_CODE.to_owned(),
        (None, false) => anyhow::bail!("the payments service needs HOLDFAST_VNPAY_TMN_CODE"),
    };
    let pay_url = match (&config.vnpay_pay_url, demo) {
        (Some(url), _) => url.clone(),
        (None, true) => format!("{sim}/paymentv2/vpcpay.html"),
        (None, false) => holdfast_vnpay::SANDBOX_PAY_URL.to_owned(),
    };
    let api_url = match (&config.vnpay_api_url, demo) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => Some(format!("{sim}/merchant_webapi/api/transaction")),
        (None, false) => None,
    };
    let public_url = config.public_url();
    Ok((
        holdfast_vnpay::Config {
            tmn_code,
            hash_secret,
            pay_url,
            return_url: format!("{public_url}/v1/payments/vnpay/return"),
            ipn_url: Some(format!("{public_url}/v1/payments/vnpay/ipn")),
            version: holdfast_vnpay::VERSION.to_owned(),
            locale: holdfast_vnpay::Locale::default(),
        },
        api_url,
    ))
}

/// The ticket signing key (from settings, or generated on the embedded default) and the keys
/// check-in trusts.
fn ticket_keys(
    config: &Config,
) -> anyhow::Result<(
    Option<Arc<holdfast_tickets::Signer>>,
    holdfast_tickets::Verifier,
)> {
    let seed = match &config.ticket_signing_key {
        Some(seed) => {
            crate::secrets::refuse_published("HOLDFAST_TICKET_SIGNING_KEY", seed.as_bytes())?;
            Some(seed.clone())
        }
        None if config.is_embedded() => {
            let path = config.data_dir.join("ticket-signing.key");
            let seed = read_or_generate_secret(&path)?;
            Some(String::from_utf8(seed).context("ticket-signing.key is not hex")?)
        }
        None => None,
    };
    let signer = seed
        .map(|seed| {
            holdfast_tickets::Signer::from_seed_hex(config.ticket_key_id.clone(), seed.trim())
                .map_err(|e| anyhow::anyhow!("HOLDFAST_TICKET_SIGNING_KEY: {e}"))
        })
        .transpose()?
        .map(Arc::new);
    let mut verifier = match &signer {
        Some(signer) => holdfast_tickets::Verifier::from_signers([signer.as_ref()]),
        None => holdfast_tickets::Verifier::new(),
    };
    for (kid, key) in pairs(
        config.ticket_trusted_keys.as_deref(),
        "HOLDFAST_TICKET_TRUSTED_KEYS",
    )? {
        crate::secrets::refuse_published_public_key("HOLDFAST_TICKET_TRUSTED_KEYS", &key)?;
        verifier
            .add_public_key_hex(kid.as_str(), &key)
            .map_err(|e| anyhow::anyhow!("HOLDFAST_TICKET_TRUSTED_KEYS {kid}: {e}"))?;
    }
    Ok((signer, verifier))
}

/// A `key=value,key=value` setting as pairs; `setting` names it in errors.
fn pairs(text: Option<&str>, setting: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let (key, value) = entry
                .split_once('=')
                .with_context(|| format!("{setting} entry {entry:?} is not key=value"))?;
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The saga's bus: Kafka when brokers are set, else the durable bus in the node's database.
async fn saga_bus(
    config: &Config,
    store: &Store,
) -> anyhow::Result<(Arc<dyn holdfast_bus::Bus>, Option<holdfast_bus::SqlBus>)> {
    let bus_store = match (&config.kafka_brokers, &config.bus_database_url) {
        (None, Some(url)) => {
            let bus_store = Store::connect(url, 4)
                .await
                .with_context(|| format!("connecting to the bus database {}", redact(url)))?;
            bus_store
                .migrate()
                .await
                .context("migrating the bus database")?;
            bus_store
        }
        _ => store.clone(),
    };
    let store = &bus_store;
    Ok(match &config.kafka_brokers {
        Some(brokers) => {
            let producer_config = pairs(
                config.kafka_producer_config.as_deref(),
                "HOLDFAST_KAFKA_PRODUCER_CONFIG",
            )?
            .into_iter()
            .collect();
            let bus = holdfast_bus::KafkaBus::with_options(holdfast_bus::KafkaBusOptions {
                brokers: brokers.clone(),
                prefix: config.bus_prefix.clone(),
                producer_config,
                ..holdfast_bus::KafkaBusOptions::default()
            })
            .with_context(|| format!("connecting to Kafka at {brokers}"))?;
            (Arc::new(bus), None)
        }
        None => {
            let bus = holdfast_bus::SqlBus::new(
                store.pool().clone(),
                holdfast_bus::SqlBusOptions {
                    prefix: config.bus_prefix.clone(),
                    ..holdfast_bus::SqlBusOptions::default()
                },
            )
            .context("opening the in-process bus")?
            .with_writer(store.write_gate(), store.write_pool().cloned());
            (Arc::new(bus.clone()), Some(bus))
        }
    })
}

/// The SMS provider's settings, when an account is configured.
fn sms_settings(config: &Config) -> anyhow::Result<Option<holdfast_notify::SmsSettings>> {
    let Some(account_sid) = &config.sms_account_sid else {
        return Ok(None);
    };
    let (Some(auth_token), Some(from)) = (&config.sms_auth_token, &config.sms_from) else {
        anyhow::bail!(
            "SMS needs HOLDFAST_SMS_AUTH_TOKEN and HOLDFAST_SMS_FROM besides the account SID"
        );
    };
    Ok(Some(holdfast_notify::SmsSettings {
        base_url: config
            .sms_base_url
            .clone()
            .unwrap_or_else(|| holdfast_notify::sms::TWILIO_API_URL.to_owned()),
        account_sid: account_sid.clone(),
        auth_token: auth_token.clone(),
        from: from.clone(),
        timeout_secs: 15,
    }))
}

/// Starts the saga's services this process runs.
async fn start_checkout(
    config: &Config,
    store: &Store,
    backend: Arc<NodeBackend>,
    clock: Arc<dyn Clock>,
    public_url: String,
) -> anyhow::Result<CheckoutNode> {
    let roles = config.roles().map_err(anyhow::Error::msg)?;
    let (vnpay, api_url) = if roles.saga.payments {
        vnpay_config(config)?
    } else {
        (
            holdfast_vnpay::Config {
                tmn_code: String::new(),
                hash_secret: String::new(),
                pay_url: String::new(),
                return_url: String::new(),
                ipn_url: None,
                version: holdfast_vnpay::VERSION.to_owned(),
                locale: holdfast_vnpay::Locale::default(),
            },
            None,
        )
    };
    let (signer, verifier) = ticket_keys(config)?;
    check_ticket_signer(roles, signer.as_deref())?;
    let smtp = config
        .smtp_url
        .as_ref()
        .map(|url| holdfast_notify::MailerSettings {
            url: Some(url.clone()),
            host: None,
            port: None,
            tls: None,
            username: None,
            password: None,
            from: config.mail_from.clone(),
            helo_name: None,
            timeout_secs: 30,
        });
    let settings = Settings {
        roles: roles.saga,
        payments: PaymentSettings {
            vnpay,
            api_url,
            window: Duration::from_secs(config.payment_window_secs),
            reconcile_grace: Duration::from_secs(config.payment_reconcile_grace_secs),
            reconcile_every: Duration::from_secs(config.payment_reconcile_grace_secs.clamp(1, 30)),
            refunds: holdfast_checkout::payments::RefundSettings {
                backoff: holdfast_checkout::decide::Backoff {
                    first_ms: i64::try_from(config.refund_backoff_ms).unwrap_or(i64::MAX),
                    max_ms: 600_000,
                    attempts_max: config.refund_attempts_max,
                },
                every: Duration::from_millis(config.refund_backoff_ms.clamp(100, 5_000)),
                timeout: Duration::from_secs(config.refund_timeout_secs),
            },
            circuit: config.circuit_options(),
        },
        notify: NotifySettings {
            smtp,
            sms: sms_settings(config)?,
            attempts_max: config.notify_attempts_max,
            backoff_min: Duration::from_secs(config.notify_backoff_secs),
            backoff_max: Duration::from_secs(3600),
            public_url,
            circuit: config.circuit_options(),
        },
        signer,
        verifier: Arc::new(verifier),
        payment_url_wait: Duration::from_millis(config.payment_url_wait_ms),
        group_prefix: config.bus_prefix.clone(),
        scheduler: holdfast_checkout::scheduler::SchedulerSettings {
            reminder_before: Duration::from_secs(config.reminder_hours_before.saturating_mul(3600)),
            summary_hour_utc: config.sales_summary_hour_utc,
            tick: Duration::from_secs(config.scheduler_tick_secs),
            retention: Duration::from_secs(config.saga_retention_hours.saturating_mul(3600)),
            idempotency_ttl: Duration::from_secs(config.idempotency_ttl_secs),
            holder: config
                .node_id
                .clone()
                .unwrap_or_else(|| format!("pid-{}", std::process::id())),
        },
        consumer_concurrency: if store.backend() == holdfast_persistence::Backend::Sqlite {
            1
        } else {
            16
        },
    };
    let (bus, sql_bus) = saga_bus(config, store).await?;
    CheckoutNode::start(
        settings,
        store.clone(),
        bus,
        sql_bus,
        Some(backend as Arc<dyn holdfast_checkout::Inventory>),
        clock,
    )
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn key_value_settings_parse_and_explain_mistakes() {
        let parsed = super::pairs(Some(" a=1, b = two ,"), "X").unwrap();
        assert_eq!(
            parsed,
            [
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "two".to_owned())
            ]
        );
        assert!(super::pairs(None, "X").unwrap().is_empty());
        let err = super::pairs(Some("a=1,oops"), "HOLDFAST_X").unwrap_err();
        assert!(
            err.to_string().contains("HOLDFAST_X entry \"oops\""),
            "{err}"
        );
    }

    #[test]
    fn served_urls_keep_the_configured_host_and_the_bound_port() {
        let bound: std::net::SocketAddr = "127.0.0.1:28081".parse().expect("address");
        let url =
            |configured: &str| super::served_url(&configured.parse().expect("bind address"), bound);
        assert_eq!(url("localhost:0"), "http://localhost:28081");
        assert_eq!(url("127.0.0.1:28081"), "http://127.0.0.1:28081");
        assert_eq!(url("0.0.0.0:28081"), "http://127.0.0.1:28081");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact("postgres://app@db/x"), "postgres://app@db/x");
        assert_eq!(
            redact("sqlite://data/holdfast.db"),
            "sqlite://data/holdfast.db"
        );
    }
}
