//! Node settings: defaults, then an optional TOML file, then `HOLDFAST_*` environment variables
//! (which win). With nothing set, a node serves on 127.0.0.1:8080 with SQLite in `./data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use holdfast_actors::actor::{self, Durability};
use serde::{Deserialize, Serialize};

pub use crate::addr::BindAddr;

/// Every setting of a node. Each field is also the lower-case tail of its environment
/// variable: `hold_ttl` is `HOLDFAST_HOLD_TTL`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the REST API listens: `host:port`, a host name resolved when it binds.
    pub http_addr: BindAddr,
    /// Where the embedded default keeps its SQLite database and generated keys.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; unset means `sqlite://<data_dir>/holdfast.db`.
    pub database_url: Option<String>,
    pub database_max_connections: u32,
    /// Seconds a hold lasts.
    pub hold_ttl: u64,
    /// HS256 secret for access tokens; unset means `jwt_secret_file`.
    pub jwt_secret: Option<String>,
    /// File holding the secret; unset means `<data_dir>/jwt.secret`, generated on first start.
    pub jwt_secret_file: Option<PathBuf>,
    /// The secret tokens were signed with before a rotation: still accepted, never used to
    /// sign. Drop it one access-token lifetime after the rotation.
    pub jwt_previous_secret: Option<String>,
    /// Password hashes (Argon2id, 19 MiB each) computed at once; 0: one per CPU core.
    pub password_hash_concurrency: usize,
    /// Longest a login or registration waits for a hashing turn before a 503 `overloaded`.
    pub password_hash_wait_ms: u64,
    /// Logins and registrations waiting for a turn at most; more get a 503 at once.
    pub password_hash_waiting_max: usize,
    /// Where `/metrics` and `/v1/admin/*` are served (and `/healthz`, `/readyz` too); keep it
    /// off the public network.
    pub ops_addr: BindAddr,
    /// Origins allowed to call the API from a browser (CORS), comma-separated; unset: none.
    pub cors_origins: Option<String>,
    /// A connection that has not sent a whole request head within this many seconds is closed.
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request for this many seconds is closed.
    pub idle_timeout_secs: u64,
    /// Open client connections at most; more are answered 503 and closed at once.
    pub connections_max: usize,
    /// Idempotency keys one signed-in caller may have stored per hour; past it, POSTs with a
    /// key are answered 429.
    pub idempotency_keys_per_user_max: u32,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub request_timeout_secs: u64,
    pub body_limit_bytes: usize,
    /// `sync`: reply after the journal commit; `async`: reply before it.
    pub durability: Durability,
    pub mailbox_capacity: usize,
    pub batch_size_max: usize,
    pub snapshot_every_events: u64,
    pub snapshot_every_secs: u64,
    /// Idempotency keys are kept this long.
    pub idempotency_ttl_secs: u64,
    /// Idle event actors snapshot and stop after this many seconds (0: never).
    pub idle_passivate_secs: u64,
    /// Setting this joins a cluster (needs PostgreSQL): this node's unique, stable name.
    pub node_id: Option<String>,
    /// Where the node-to-node API listens (cluster mode).
    pub internal_addr: BindAddr,
    /// What other nodes dial to reach `internal_addr`; unset means `internal_addr`.
    pub advertise_addr: Option<String>,
    /// PEM certificate (chain) and private key of this node's internal API: with both set it
    /// speaks TLS, and dials the other nodes over TLS too (every node needs them then).
    pub internal_tls_cert: Option<PathBuf>,
    pub internal_tls_key: Option<PathBuf>,
    /// PEM CA bundle the other nodes' certificates must chain to; unset: `internal_tls_cert`
    /// itself (one self-signed certificate shared by every node).
    pub internal_tls_ca: Option<PathBuf>,
    /// Number of shards; fixed when the cluster is created.
    pub shards: u32,
    /// A node whose heartbeat is older than this loses its shards to the others.
    pub lease_secs: u64,
    /// Services this process runs: `all`, or a comma-separated subset of `gateway`,
    /// `inventory`, `orders`, `payments`, `tickets`, `notifications`, `scheduler` (`--roles`
    /// wins).
    pub roles: String,
    /// Hours before an event's start its ticket holders are reminded (scheduler role).
    pub reminder_hours_before: u64,
    /// Hour of the day (UTC, 0-23) the daily sales summary goes to organizers.
    pub sales_summary_hour_utc: u32,
    /// How often the scheduler looks for due jobs.
    pub scheduler_tick_secs: u64,
    /// `host:port,…` of Kafka brokers: the saga's bus is Kafka. Unset: the durable in-process
    /// bus in the node's own database.
    pub kafka_brokers: Option<String>,
    /// Hours published outbox records, processed event ids and (in-process bus) bus records
    /// that every group read are kept.
    pub saga_retention_hours: u64,
    /// Extra librdkafka producer properties, `key=value,…` (e.g. `linger.ms=5`).
    pub kafka_producer_config: Option<String>,
    /// Database of the in-process bus when services run as separate processes without Kafka
    /// (each with its own `database_url`): every process names the same one. Unset: the
    /// node's own database.
    pub bus_database_url: Option<String>,
    /// Prefix of bus topic and consumer group names (several deployments on one broker).
    pub bus_prefix: String,
    /// The node's public base URL: VNPAY's return URL and links in messages derive from it.
    /// Unset: `http://<http_addr>`.
    pub public_url: Option<String>,
    /// VNPAY merchant terminal code. Unset on the embedded default: the demo merchant that
    /// `holdfast vnpay-sim` also uses.
    pub vnpay_tmn_code: Option<String>,
    /// VNPAY HMAC-SHA512 secret (required with PostgreSQL when the payments service runs).
    pub vnpay_hash_secret: Option<String>,
    /// A CAPTCHA at every queue join: the provider's `siteverify` URL (Turnstile's is
    /// `https://challenges.cloudflare.com/turnstile/v0/siteverify`, hCaptcha's
    /// `https://api.hcaptcha.com/siteverify`) and the site's secret. Both or neither.
    pub captcha_siteverify_url: Option<String>,
    pub captcha_secret: Option<String>,
    /// VNPAY's payment page. Unset on the embedded default: a local `holdfast vnpay-sim`.
    pub vnpay_pay_url: Option<String>,
    /// VNPAY's API endpoint (`querydr`). Unset: pending payments past their window fail,
    /// except on the embedded default: the `holdfast vnpay-sim` at `vnpay_sim_addr`.
    pub vnpay_api_url: Option<String>,
    /// Where `holdfast vnpay-sim` listens; the embedded default's demo merchant sends buyers
    /// (and `querydr`) there.
    pub vnpay_sim_addr: SocketAddr,
    /// Longest payment window in seconds; never past the hold's expiry.
    pub payment_window_secs: u64,
    /// Seconds after a payment window closes before a payment without result is reconciled.
    pub payment_reconcile_grace_secs: u64,
    /// Milliseconds `POST /v1/orders` waits for the payment URL before answering without it.
    pub payment_url_wait_ms: u64,
    /// Ed25519 seed (64 hex digits) signing ticket codes. Unset on the embedded default:
    /// generated in `<data_dir>/ticket-signing.key` on first start.
    pub ticket_signing_key: Option<String>,
    /// Key id written into ticket codes signed by `ticket_signing_key`.
    pub ticket_key_id: String,
    /// Further keys check-in trusts (rotation): `kid=public-key-hex,…`.
    pub ticket_trusted_keys: Option<String>,
    /// SMTP server for e-mail: `smtp://host:port`, `smtp://host?tls=required`, `smtps://host`.
    /// Unset: messages are recorded as skipped.
    pub smtp_url: Option<String>,
    /// Sender of e-mail.
    pub mail_from: String,
    /// SMS provider (the Twilio Messages API or a compatible one): base URL, account SID, auth
    /// token and sender. Without `sms_account_sid` no SMS are sent.
    pub sms_base_url: Option<String>,
    pub sms_account_sid: Option<String>,
    pub sms_auth_token: Option<String>,
    pub sms_from: Option<String>,
    /// Attempts at sending a message before it is given up.
    pub notify_attempts_max: u32,
    /// First retry delay of a message in seconds; doubles per attempt up to an hour.
    pub notify_backoff_secs: u64,
    /// Attempts at paying a refund back through VNPAY's refund API before it is `failed` (for
    /// an admin).
    pub refund_attempts_max: u32,
    /// First retry delay of a refund in milliseconds; doubles per attempt up to ten minutes.
    pub refund_backoff_ms: u64,
    /// How long one call of VNPAY's API (a refund, a `querydr`) waits for the answer, in
    /// seconds.
    pub refund_timeout_secs: u64,
    /// Failures in a row of a provider (VNPAY's API, SMTP, SMS) that open its circuit breaker.
    pub circuit_failures_max: u32,
    /// How long an open breaker refuses calls before one probe goes through, in milliseconds.
    pub circuit_open_ms: u64,
    /// `off` turns every rate limit off (load tests).
    pub rate_limits: Switch,
    /// Peers whose `X-Forwarded-For` names the client (the right-most address that is not one
    /// of them): IPs or CIDRs, comma-separated. Unset: none, the TCP peer is the client.
    pub trusted_proxies: Option<String>,
    /// `redis://host:port`: every node counts its rate limits there and hears every revocation
    /// (logout) from there at once. Unset: each node counts alone and learns revocations from
    /// the database within a second.
    pub redis_url: Option<String>,
    /// Longest a rate-limit check waits for Redis before counting on this node alone.
    pub rate_limit_redis_timeout_ms: u64,
    /// Rate limits: so many per minute (per second for a whole event's holds), at most
    /// `…_burst` at once; 0 turns that limit off. Login, register and refresh count per client
    /// IP (a failed login counts double), holds, orders and queue joins per user.
    pub rate_limit_login_per_minute: u32,
    pub rate_limit_login_burst: u32,
    pub rate_limit_register_per_minute: u32,
    pub rate_limit_register_burst: u32,
    pub rate_limit_refresh_per_minute: u32,
    pub rate_limit_refresh_burst: u32,
    pub rate_limit_holds_per_minute: u32,
    pub rate_limit_holds_burst: u32,
    pub rate_limit_orders_per_minute: u32,
    pub rate_limit_orders_burst: u32,
    pub rate_limit_event_holds_per_second: u32,
    pub rate_limit_event_holds_burst: u32,
    pub rate_limit_queue_joins_per_minute: u32,
    pub rate_limit_queue_joins_burst: u32,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// A tracing filter such as `info,holdfast=debug`; `RUST_LOG` is used when unset.
    pub log: Option<String>,
}

/// A feature turned `on` or `off`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    #[default]
    On,
    Off,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        let actors = actor::Options::default();
        let gateway = holdfast_gateway::Options::default();
        let limits = gateway.rate_limits.clone();
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)).into(),
            data_dir: PathBuf::from("data"),
            database_url: None,
            database_max_connections: 16,
            hold_ttl: 900,
            jwt_secret: None,
            jwt_secret_file: None,
            jwt_previous_secret: None,
            password_hash_concurrency: gateway.passwords.concurrency,
            password_hash_wait_ms: gateway.passwords.wait_ms,
            password_hash_waiting_max: gateway.passwords.waiting_max,
            ops_addr: SocketAddr::from(([127, 0, 0, 1], 8180)).into(),
            cors_origins: None,
            header_read_timeout_secs: gateway.header_read_timeout_secs,
            idle_timeout_secs: gateway.idle_timeout_secs,
            connections_max: gateway.connections_max,
            idempotency_keys_per_user_max: gateway.idempotency_keys_per_user_max,
            access_token_ttl_secs: gateway.access_token_ttl_secs,
            refresh_token_ttl_secs: gateway.refresh_token_ttl_secs,
            request_timeout_secs: gateway.request_timeout_secs,
            body_limit_bytes: gateway.body_limit_bytes,
            durability: actors.durability,
            mailbox_capacity: actors.mailbox_capacity,
            batch_size_max: actors.batch_size_max,
            snapshot_every_events: actors.snapshot_every_events,
            snapshot_every_secs: actors.snapshot_every_secs,
            idempotency_ttl_secs: 24 * 60 * 60,
            idle_passivate_secs: actors.idle_passivate_secs,
            node_id: None,
            internal_addr: SocketAddr::from(([127, 0, 0, 1], 7070)).into(),
            advertise_addr: None,
            internal_tls_cert: None,
            internal_tls_key: None,
            internal_tls_ca: None,
            shards: 256,
            lease_secs: 10,
            roles: "all".to_owned(),
            reminder_hours_before: 24,
            sales_summary_hour_utc: 0,
            scheduler_tick_secs: 30,
            kafka_brokers: None,
            bus_database_url: None,
            kafka_producer_config: None,
            saga_retention_hours: 7 * 24,
            bus_prefix: String::new(),
            public_url: None,
            vnpay_tmn_code: None,
            vnpay_hash_secret: None,
            captcha_siteverify_url: None,
            captcha_secret: None,
            vnpay_pay_url: None,
            vnpay_api_url: None,
            vnpay_sim_addr: SocketAddr::from(([127, 0, 0, 1], 9090)),
            payment_window_secs: 900,
            payment_reconcile_grace_secs: 300,
            payment_url_wait_ms: 3000,
            ticket_signing_key: None,
            ticket_key_id: "k1".to_owned(),
            ticket_trusted_keys: None,
            smtp_url: None,
            mail_from: "Holdfast <tickets@holdfast.invalid>".to_owned(),
            sms_base_url: None,
            sms_account_sid: None,
            sms_auth_token: None,
            sms_from: None,
            notify_attempts_max: 8,
            notify_backoff_secs: 5,
            refund_attempts_max: 8,
            refund_backoff_ms: 5_000,
            refund_timeout_secs: 15,
            circuit_failures_max: 5,
            circuit_open_ms: 30_000,
            rate_limits: Switch::On,
            trusted_proxies: None,
            redis_url: None,
            rate_limit_redis_timeout_ms: limits.shared_timeout_ms,
            rate_limit_login_per_minute: limits.login.rate,
            rate_limit_login_burst: limits.login.burst,
            rate_limit_register_per_minute: limits.register.rate,
            rate_limit_register_burst: limits.register.burst,
            rate_limit_refresh_per_minute: limits.refresh.rate,
            rate_limit_refresh_burst: limits.refresh.burst,
            rate_limit_holds_per_minute: limits.holds.rate,
            rate_limit_holds_burst: limits.holds.burst,
            rate_limit_orders_per_minute: limits.orders.rate,
            rate_limit_orders_burst: limits.orders.burst,
            rate_limit_event_holds_per_second: limits.event_holds.rate,
            rate_limit_event_holds_burst: limits.event_holds.burst,
            rate_limit_queue_joins_per_minute: limits.queue_joins.rate,
            rate_limit_queue_joins_burst: limits.queue_joins.burst,
            log_format: LogFormat::Text,
            log: None,
        }
    }
}

/// Why settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid settings: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` if given, then `HOLDFAST_*` variables from the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, Error> {
        let env = Env::prefixed("HOLDFAST_");
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only our own keys: HOLDFAST_URL and HOLDFAST_TOKEN belong to the CLI.
        let known = Self::keys();
        let config: Self = figment
            .merge(
                env.filter(move |key| known.iter().any(|k| key.as_str().eq_ignore_ascii_case(k))),
            )
            .extract()
            .map_err(|e| Error::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn keys() -> Vec<String> {
        match serde_json::to_value(Self::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// A warning for each `HOLDFAST_*` name in `names` that is no setting (a typo is ignored
    /// otherwise, while a TOML typo is an error), with the nearest setting when one is close.
    /// The CLI's own variables and the test and benchmark harnesses' are not settings.
    pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<String> {
        const NOT_SETTINGS: &[&str] = &["URL", "TOKEN", "CONFIG", "BIN"];
        let known = Self::keys();
        names
            .into_iter()
            .filter_map(|name| {
                let tail = name.strip_prefix("HOLDFAST_")?.to_ascii_lowercase();
                let ours = NOT_SETTINGS.iter().any(|n| n.eq_ignore_ascii_case(&tail))
                    || tail.starts_with("test_")
                    || tail.starts_with("bench_")
                    || known.contains(&tail);
                if ours {
                    return None;
                }
                let nearest = known
                    .iter()
                    .map(|k| (edit_distance(k, &tail), k))
                    .filter(|(d, k)| *d <= 3 && *d < k.len() / 2)
                    .min();
                Some(match nearest {
                    Some((_, k)) => format!(
                        "{name} is not a setting and is ignored; did you mean HOLDFAST_{}?",
                        k.to_ascii_uppercase()
                    ),
                    None => format!("{name} is not a setting and is ignored"),
                })
            })
            .collect()
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Invalid(what.to_owned()));
        if self.hold_ttl == 0 || self.hold_ttl > 7 * 24 * 3600 {
            return bad("hold_ttl must be between 1 second and 7 days");
        }
        if self.mailbox_capacity == 0 || self.batch_size_max == 0 {
            return bad("mailbox_capacity and batch_size_max must be at least 1");
        }
        if self.database_max_connections == 0 {
            return bad("database_max_connections must be at least 1");
        }
        if self.shards == 0 || self.shards > 65_536 {
            return bad("shards must be between 1 and 65536");
        }
        if self.lease_secs == 0 {
            return bad("lease_secs must be at least 1");
        }
        if let Some(node) = &self.node_id {
            if node.is_empty()
                || node.len() > 64
                || !node
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return bad("node_id must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'");
            }
            if self.is_embedded() {
                return bad(
                    "cluster mode (node_id set) needs PostgreSQL: set HOLDFAST_DATABASE_URL=postgres://…",
                );
            }
        }
        if self.payment_window_secs < 60 {
            return bad("payment_window_secs must be at least 60 (VNPAY's minimum is a minute)");
        }
        if self.internal_tls_cert.is_some() != self.internal_tls_key.is_some() {
            return bad("internal_tls_cert and internal_tls_key go together: set both or neither");
        }
        if self.internal_tls_ca.is_some() && self.internal_tls_cert.is_none() {
            return bad("internal_tls_ca needs internal_tls_cert and internal_tls_key");
        }
        if self
            .jwt_previous_secret
            .as_ref()
            .is_some_and(|s| s.len() < 32)
        {
            return bad("jwt_previous_secret must be at least 32 bytes");
        }
        if self.header_read_timeout_secs == 0 || self.idle_timeout_secs == 0 {
            return bad("header_read_timeout_secs and idle_timeout_secs must be at least 1");
        }
        if self.connections_max == 0 {
            return bad("connections_max must be at least 1");
        }
        if let Some(origins) = &self.cors_origins {
            for origin in origins.split(',').map(str::trim).filter(|o| !o.is_empty()) {
                if origin == "*"
                    || !(origin.starts_with("https://") || origin.starts_with("http://"))
                    || origin.trim_end_matches('/').len() != origin.len()
                    || axum::http::HeaderValue::from_str(origin).is_err()
                {
                    return Err(Error::Invalid(format!(
                        "cors_origins: {origin:?} is not an origin such as https://shop.example.com"
                    )));
                }
            }
        }
        if self.notify_attempts_max == 0 {
            return bad("notify_attempts_max must be at least 1");
        }
        match (&self.captcha_siteverify_url, &self.captcha_secret) {
            (None, None) => {}
            (Some(url), Some(secret)) => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return bad("captcha_siteverify_url must be an http(s) URL");
                }
                if secret.trim().is_empty() {
                    return bad("captcha_secret is empty");
                }
            }
            _ => {
                return bad(
                    "captcha_siteverify_url and captcha_secret go together: set both or neither",
                );
            }
        }
        if self.refund_attempts_max == 0 || self.refund_backoff_ms == 0 {
            return bad("refund_attempts_max and refund_backoff_ms must be at least 1");
        }
        if self.refund_timeout_secs == 0 {
            return bad("refund_timeout_secs must be at least 1");
        }
        if self.circuit_failures_max == 0 {
            return bad("circuit_failures_max must be at least 1");
        }
        self.roles().map_err(Error::Invalid)?;
        if self.reminder_hours_before == 0 || self.reminder_hours_before > 24 * 366 {
            return bad("reminder_hours_before must be between 1 and 8784 (a year)");
        }
        if self.sales_summary_hour_utc > 23 {
            return bad("sales_summary_hour_utc must be an hour of the day, 0 to 23");
        }
        if self.scheduler_tick_secs == 0 || self.scheduler_tick_secs > 3600 {
            return bad("scheduler_tick_secs must be between 1 and 3600");
        }
        self.trusted_proxies()
            .map_err(|e| Error::Invalid(format!("trusted_proxies: {e}")))?;
        if let Some(url) = &self.redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return bad("redis_url must start with redis:// or rediss://");
        }
        if let Some(url) = &self.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return bad("database_url must start with sqlite:, postgres:// or postgresql://");
        }
        Ok(())
    }

    /// The database this node uses.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("holdfast.db").display()))
    }

    pub fn is_embedded(&self) -> bool {
        self.database_url().starts_with("sqlite:")
    }

    /// When the circuit breakers around the providers open, and for how long.
    pub fn circuit_options(&self) -> holdfast_checkout::breaker::Options {
        holdfast_checkout::breaker::Options {
            failures_max: self.circuit_failures_max,
            open_ms: i64::try_from(self.circuit_open_ms).unwrap_or(i64::MAX),
        }
    }

    pub fn actor_options(&self) -> actor::Options {
        actor::Options {
            mailbox_capacity: self.mailbox_capacity,
            batch_size_max: self.batch_size_max,
            snapshot_every_events: self.snapshot_every_events,
            snapshot_every_secs: self.snapshot_every_secs,
            durability: self.durability,
            idle_passivate_secs: self.idle_passivate_secs,
        }
    }

    /// The roles `roles` names.
    pub fn roles(&self) -> Result<Roles, String> {
        parse_roles(&self.roles)
    }

    /// The public base URL, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.http_addr))
            .trim_end_matches('/')
            .to_owned()
    }

    /// The internal API's TLS files, when configured.
    pub fn internal_tls(&self) -> Option<crate::cluster::tls::Files> {
        Some(crate::cluster::tls::Files {
            cert: self.internal_tls_cert.clone()?,
            key: self.internal_tls_key.clone()?,
            ca: self.internal_tls_ca.clone(),
        })
    }

    /// The address other nodes dial for this node's internal API.
    pub fn advertised(&self) -> String {
        self.advertise_addr
            .clone()
            .unwrap_or_else(|| self.internal_addr.to_string())
    }

    /// The trusted proxies `trusted_proxies` names.
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        holdfast_gateway::rate_limit::client_ip::parse_trusted(
            self.trusted_proxies.as_deref().unwrap_or(""),
        )
    }

    pub fn rate_limit_options(&self) -> holdfast_gateway::rate_limit::Options {
        use holdfast_gateway::rate_limit::Quota;
        holdfast_gateway::rate_limit::Options {
            enabled: self.rate_limits == Switch::On,
            trusted_proxies: self.trusted_proxies().unwrap_or_default(),
            shared_timeout_ms: self.rate_limit_redis_timeout_ms,
            login: Quota::per_minute(
                self.rate_limit_login_per_minute,
                self.rate_limit_login_burst,
            ),
            register: Quota::per_minute(
                self.rate_limit_register_per_minute,
                self.rate_limit_register_burst,
            ),
            refresh: Quota::per_minute(
                self.rate_limit_refresh_per_minute,
                self.rate_limit_refresh_burst,
            ),
            holds: Quota::per_minute(
                self.rate_limit_holds_per_minute,
                self.rate_limit_holds_burst,
            ),
            orders: Quota::per_minute(
                self.rate_limit_orders_per_minute,
                self.rate_limit_orders_burst,
            ),
            event_holds: Quota::per_second(
                self.rate_limit_event_holds_per_second,
                self.rate_limit_event_holds_burst,
            ),
            queue_joins: Quota::per_minute(
                self.rate_limit_queue_joins_per_minute,
                self.rate_limit_queue_joins_burst,
            ),
        }
    }

    pub fn gateway_options(&self) -> holdfast_gateway::Options {
        holdfast_gateway::Options {
            access_token_ttl_secs: self.access_token_ttl_secs,
            refresh_token_ttl_secs: self.refresh_token_ttl_secs,
            request_timeout_secs: self.request_timeout_secs,
            body_limit_bytes: self.body_limit_bytes,
            passwords: holdfast_gateway::passwords::Options {
                concurrency: self.password_hash_concurrency,
                wait_ms: self.password_hash_wait_ms,
                waiting_max: self.password_hash_waiting_max,
            },
            cors_origins: self
                .cors_origins
                .as_deref()
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect(),
            hsts: self.public_url().starts_with("https://"),
            header_read_timeout_secs: self.header_read_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            connections_max: self.connections_max,
            idempotency_keys_per_user_max: self.idempotency_keys_per_user_max,
            rate_limits: self.rate_limit_options(),
            // The node sets them once its listeners are bound.
            public_url: None,
            ops_url: None,
        }
    }
}

/// Levenshtein distance of two ASCII names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// What a process runs, from `all` or a comma-separated list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// The public REST listener (`http_addr`).
    pub gateway: bool,
    /// The event actors; in a cluster, claiming and serving shards.
    pub inventory: bool,
    /// The saga's services and the scheduled jobs.
    pub saga: holdfast_checkout::Roles,
}

pub const ROLE_NAMES: &[&str] = &[
    "all",
    "gateway",
    "inventory",
    "orders",
    "payments",
    "tickets",
    "notifications",
    "scheduler",
];

pub fn parse_roles(text: &str) -> Result<Roles, String> {
    let mut roles = Roles {
        gateway: false,
        inventory: false,
        saga: holdfast_checkout::Roles::NONE,
    };
    for role in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        match role {
            "all" => {
                return Ok(Roles {
                    gateway: true,
                    inventory: true,
                    saga: holdfast_checkout::Roles::ALL,
                });
            }
            "gateway" => roles.gateway = true,
            "inventory" => roles.inventory = true,
            "orders" => roles.saga.orders = true,
            "payments" => roles.saga.payments = true,
            "tickets" => roles.saga.tickets = true,
            "notifications" => roles.saga.notifications = true,
            "scheduler" => roles.saga.scheduler = true,
            other => {
                return Err(format!(
                    "unknown role {other:?}: roles are {}",
                    ROLE_NAMES.join(", ")
                ));
            }
        }
    }
    if !(roles.gateway || roles.inventory || roles.saga.any()) {
        return Err("roles names no role".to_owned());
    }
    if roles.saga.orders && !roles.inventory {
        return Err(
            "the orders role runs beside the inventory (it confirms holds in the event actors): \
             add inventory"
                .to_owned(),
        );
    }
    Ok(roles)
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail's closures return figment::Error, as its API requires"
)]
mod tests {
    use figment::Jail;

    use super::*;

    #[test]
    fn defaults_serve_the_embedded_store() {
        Jail::expect_with(|_jail| {
            let config = Config::load(None).expect("defaults");
            assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
            assert_eq!(config.database_url(), "sqlite://data/holdfast.db");
            assert!(config.is_embedded());
            assert_eq!(config.hold_ttl, 900);
            assert_eq!(config.durability, Durability::Sync);
            Ok(())
        });
    }

    #[test]
    fn file_then_environment_wins() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "holdfast.toml",
                "hold_ttl = 60\ndurability = \"async\"\nhttp_addr = \"0.0.0.0:9000\"\n",
            )?;
            let config = Config::load(Some(Path::new("holdfast.toml"))).expect("file");
            assert_eq!(
                (config.hold_ttl, config.durability),
                (60, Durability::Async)
            );
            assert_eq!(config.http_addr.to_string(), "0.0.0.0:9000");
            jail.set_env("HOLDFAST_HOLD_TTL", "5");
            jail.set_env("HOLDFAST_DATABASE_URL", "postgres://postgres@127.0.0.1/x");
            // Variables of the CLI share the prefix and must not trip the strict parser.
            jail.set_env("HOLDFAST_URL", "http://127.0.0.1:8080");
            jail.set_env("HOLDFAST_TOKEN", "t");
            let config = Config::load(Some(Path::new("holdfast.toml"))).expect("env");
            assert_eq!(config.hold_ttl, 5);
            assert!(!config.is_embedded());
            Ok(())
        });
    }

    #[test]
    fn listen_addresses_take_host_names() {
        Jail::expect_with(|jail| {
            jail.set_env("HOLDFAST_HTTP_ADDR", "localhost:28081");
            jail.set_env("HOLDFAST_OPS_ADDR", "[::1]:9091");
            let config = Config::load(None).expect("host names");
            assert_eq!(config.http_addr.as_str(), "localhost:28081");
            assert_eq!(config.public_url(), "http://localhost:28081");
            assert_eq!(config.ops_addr.as_str(), "[::1]:9091");
            jail.set_env("HOLDFAST_HTTP_ADDR", "localhost");
            let err = Config::load(None).expect_err("no port");
            assert!(err.to_string().contains("host:port"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_variables_are_named_with_the_nearest_setting() {
        let names = [
            "HOLDFAST_HOLD_TLL",
            "HOLDFAST_HTTP_ADR",
            "HOLDFAST_FROBNICATE",
            "HOLDFAST_HOLD_TTL",
            "HOLDFAST_URL",
            "HOLDFAST_TOKEN",
            "HOLDFAST_CONFIG",
            "HOLDFAST_BIN",
            "HOLDFAST_TEST_DATABASE_URL",
            "HOLDFAST_VNPAY_SIM_ADDR",
            "PATH",
        ]
        .map(str::to_owned);
        let warnings = Config::unknown_variables(names);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].contains("did you mean HOLDFAST_HOLD_TTL?"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("did you mean HOLDFAST_HTTP_ADDR?"),
            "{warnings:?}"
        );
        assert!(
            warnings[2].starts_with("HOLDFAST_FROBNICATE is not a setting")
                && !warnings[2].contains("did you mean"),
            "{warnings:?}"
        );
        assert_eq!(super::edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn rate_limits_are_settings_and_turn_off() {
        Jail::expect_with(|jail| {
            let limits = Config::load(None).expect("defaults").rate_limit_options();
            assert!(limits.enabled && limits.trusted_proxies.is_empty());
            assert_eq!((limits.login.rate, limits.login.period_secs), (10, 60));
            assert_eq!(limits.event_holds.period_secs, 1);
            jail.create_file(
                "limits.toml",
                "rate_limit_holds_per_minute = 5\nrate_limit_holds_burst = 2\n",
            )?;
            jail.set_env("HOLDFAST_RATE_LIMITS", "off");
            jail.set_env("HOLDFAST_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.7");
            let config = Config::load(Some(Path::new("limits.toml"))).expect("limits");
            let limits = config.rate_limit_options();
            assert!(!limits.enabled);
            assert_eq!((limits.holds.rate, limits.holds.burst), (5, 2));
            assert_eq!(limits.trusted_proxies.len(), 2);
            jail.set_env("HOLDFAST_TRUSTED_PROXIES", "10.0.0.0/40");
            let err = Config::load(None).expect_err("bad CIDR");
            assert!(err.to_string().contains("trusted_proxies"), "{err}");
            jail.set_env("HOLDFAST_TRUSTED_PROXIES", "");
            jail.set_env("HOLDFAST_REDIS_URL", "127.0.0.1:6379");
            assert!(Config::load(None).is_err());
            Ok(())
        });
    }

    #[test]
    fn roles_parse_and_explain_mistakes() {
        assert_eq!(
            parse_roles("all").unwrap().saga,
            holdfast_checkout::Roles::ALL
        );
        let tickets = parse_roles("tickets, notifications").unwrap();
        assert!(tickets.saga.tickets && tickets.saga.notifications);
        assert!(!tickets.gateway && !tickets.inventory && !tickets.saga.orders);
        assert!(parse_roles("tikets").unwrap_err().contains("unknown role"));
        assert!(parse_roles("orders").unwrap_err().contains("inventory"));
        assert!(parse_roles("").is_err());
        let scheduler = parse_roles("scheduler").unwrap();
        assert!(scheduler.saga.scheduler && !scheduler.gateway && !scheduler.inventory);
        assert!(!scheduler.saga.notifications);
        let gateway = parse_roles("gateway").unwrap();
        assert!(gateway.gateway && !gateway.inventory && !gateway.saga.any());
    }

    #[test]
    fn typos_and_bad_values_are_reported() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "hold_tll = 60\n")?;
            let err = Config::load(Some(Path::new("typo.toml"))).expect_err("typo");
            assert!(err.to_string().contains("hold_tll"), "{err}");
            jail.create_file("zero.toml", "hold_ttl = 0\n")?;
            assert!(Config::load(Some(Path::new("zero.toml"))).is_err());
            assert!(matches!(
                Config::load(Some(Path::new("missing.toml"))),
                Err(Error::MissingFile(_))
            ));
            jail.set_env("HOLDFAST_DURABILITY", "sometimes");
            assert!(Config::load(None).is_err());
            jail.set_env("HOLDFAST_DURABILITY", "sync");
            jail.set_env("HOLDFAST_NODE_ID", "n1");
            let err = Config::load(None).expect_err("cluster on sqlite");
            assert!(err.to_string().contains("PostgreSQL"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn scheduler_settings_are_checked() {
        Jail::expect_with(|jail| {
            for (name, value, says) in [
                (
                    "HOLDFAST_REMINDER_HOURS_BEFORE",
                    "0",
                    "reminder_hours_before",
                ),
                (
                    "HOLDFAST_SALES_SUMMARY_HOUR_UTC",
                    "24",
                    "sales_summary_hour_utc",
                ),
                ("HOLDFAST_SCHEDULER_TICK_SECS", "0", "scheduler_tick_secs"),
            ] {
                jail.set_env(name, value);
                let err = Config::load(None).expect_err(name);
                assert!(err.to_string().contains(says), "{err}");
                jail.set_env(name, "1");
            }
            jail.set_env("HOLDFAST_ROLES", "gateway,scheduler");
            let config = Config::load(None).expect("valid settings");
            assert_eq!(config.reminder_hours_before, 1);
            assert!(config.roles().expect("roles").saga.scheduler);
            Ok(())
        });
    }
}
