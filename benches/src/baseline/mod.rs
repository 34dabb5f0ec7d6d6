//! Peer baselines behind the same HTTP stack as Holdfast: `holdfast_gateway::router` over a
//! [`Backend`] whose accounts, catalog and idempotency keys are a real Holdfast
//! [`NodeBackend`] on a temporary SQLite file, and whose hold path (`hold`, `availability`,
//! `get_hold`, `release`) is the baseline's own. So the only difference from Holdfast under
//! load is the reservation engine.
//!
//! Baselines ignore `per_user_limit` and never expire holds: the harness creates events without
//! limits and runs far shorter than a hold's lifetime.

pub mod noop;
pub mod pg;
pub mod redis;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use holdfast_actors::actor::{self, Clock, SystemClock};
use holdfast_actors::inventory;
use holdfast_actors::{EventId, HoldRef, HoldView, Line, TicketCode, Timestamp, TypeStock, UserId};
use holdfast_engine::backend::NodeBackend;
use holdfast_engine::inventories::Inventories;
use holdfast_gateway::AppState;
use holdfast_gateway::backend::{
    Account, Backend, BackendError, Credentials, EventInfo, EventQuery, IdempotencyState, NewEvent,
    RefreshOutcome, StoredResponse,
};
use holdfast_persistence::Store;
use serde::{Deserialize, Serialize};

/// Which reservation engine a baseline uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// PostgreSQL row lock: `UPDATE … SET available = available - $n WHERE … AND available >= $n`.
    Pg,
    /// A Redis Lua check-and-decrement script (EVALSHA).
    Redis,
    /// Answers 201 without reserving anything: the HTTP ceiling.
    Noop,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Pg => "pg",
            Self::Redis => "redis",
            Self::Noop => "noop",
        }
    }
}

/// The hold path of a baseline.
#[async_trait]
pub trait HoldStore: Send + Sync + 'static {
    /// Called after the catalog stored `event`: set up its stock.
    async fn add_event(&self, event: &EventInfo) -> Result<(), BackendError>;
    async fn availability(
        &self,
        event: &EventInfo,
    ) -> Result<Vec<(TicketCode, TypeStock)>, BackendError>;
    /// Places `hold` (lines merged, every ticket type known) or answers `SoldOut`.
    async fn hold(&self, hold: &HoldView) -> Result<(), BackendError>;
    async fn get_hold(&self, hold: HoldRef) -> Result<Option<HoldView>, BackendError>;
    async fn release(&self, hold: HoldRef) -> Result<(), BackendError>;
}

/// Merges lines of the same ticket type, as Holdfast does, so a hold touches each row once.
pub fn merge_lines(items: Vec<Line>) -> Result<Vec<Line>, BackendError> {
    let mut merged: Vec<Line> = Vec::with_capacity(items.len());
    for line in items {
        match merged
            .iter_mut()
            .find(|l| l.ticket_type == line.ticket_type)
        {
            Some(existing) => {
                existing.quantity =
                    holdfast_actors::Quantity::new(existing.quantity.get() + line.quantity.get())
                        .map_err(|_| {
                        BackendError::Inventory(inventory::Error::Invalid(
                            "too many seats of one ticket type".to_owned(),
                        ))
                    })?;
            }
            None => merged.push(line),
        }
    }
    Ok(merged)
}

/// Encodes lines as `GA:2,VIP:1` (ticket codes never contain `:` or `,`).
pub fn encode_items(items: &[Line]) -> String {
    items
        .iter()
        .map(|l| format!("{}:{}", l.ticket_type, l.quantity.get()))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn decode_items(text: &str) -> Result<Vec<Line>, BackendError> {
    let bad = || BackendError::Internal(format!("stored items {text:?} are malformed"));
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|part| {
            let (code, quantity) = part.split_once(':').ok_or_else(bad)?;
            Ok(Line {
                ticket_type: TicketCode::parse(code).map_err(|_| bad())?,
                quantity: quantity
                    .parse()
                    .ok()
                    .and_then(|q| holdfast_actors::Quantity::new(q).ok())
                    .ok_or_else(bad)?,
            })
        })
        .collect()
}

/// The [`Backend`] of a baseline: Holdfast for everything but the hold path.
pub struct BaselineBackend {
    inner: NodeBackend,
    holds: Box<dyn HoldStore>,
    clock: Arc<dyn Clock>,
    hold_ttl_ms: i64,
}

impl std::fmt::Debug for BaselineBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaselineBackend")
            .field("hold_ttl_ms", &self.hold_ttl_ms)
            .finish_non_exhaustive()
    }
}

impl BaselineBackend {
    async fn event_info(&self, id: EventId) -> Result<EventInfo, BackendError> {
        self.inner
            .event(id)
            .await?
            .ok_or(BackendError::EventNotFound)
    }
}

#[async_trait]
impl Backend for BaselineBackend {
    async fn create_account(&self, account: &Account, hash: &str) -> Result<(), BackendError> {
        self.inner.create_account(account, hash).await
    }

    async fn credentials(&self, email: &str) -> Result<Option<Credentials>, BackendError> {
        self.inner.credentials(email).await
    }

    async fn create_event(&self, event: NewEvent) -> Result<EventInfo, BackendError> {
        let info = self.inner.create_event(event).await?;
        self.holds.add_event(&info).await?;
        Ok(info)
    }

    async fn event(&self, id: EventId) -> Result<Option<EventInfo>, BackendError> {
        self.inner.event(id).await
    }

    async fn events(&self, query: &EventQuery) -> Result<Vec<EventInfo>, BackendError> {
        self.inner.events(query).await
    }

    async fn availability(
        &self,
        id: EventId,
    ) -> Result<Vec<(TicketCode, TypeStock)>, BackendError> {
        let info = self.event_info(id).await?;
        self.holds.availability(&info).await
    }

    async fn hold(
        &self,
        hold: HoldRef,
        user: UserId,
        items: Vec<Line>,
        _admission: Option<u64>,
    ) -> Result<HoldView, BackendError> {
        let items = merge_lines(items)?;
        let now = self.clock.now();
        let view = HoldView {
            id: hold.hold_id,
            event_id: hold.event_id,
            user,
            items,
            placed_at: now,
            expires_at: Timestamp(now.as_millis().saturating_add(self.hold_ttl_ms)),
            status: holdfast_actors::HoldStatus::Active,
            order_id: None,
        };
        self.holds.hold(&view).await?;
        Ok(view)
    }

    async fn get_hold(&self, hold: HoldRef) -> Result<Option<HoldView>, BackendError> {
        self.holds.get_hold(hold).await
    }

    async fn release(&self, hold: HoldRef) -> Result<(), BackendError> {
        self.holds.release(hold).await
    }

    async fn idempotency_begin(
        &self,
        scope: &str,
        key: &str,
        request_hash: &[u8],
    ) -> Result<IdempotencyState, BackendError> {
        self.inner.idempotency_begin(scope, key, request_hash).await
    }

    async fn idempotency_complete(
        &self,
        scope: &str,
        key: &str,
        response: StoredResponse,
    ) -> Result<(), BackendError> {
        self.inner.idempotency_complete(scope, key, response).await
    }

    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<(), BackendError> {
        self.inner.idempotency_abandon(scope, key).await
    }

    async fn issue_refresh(
        &self,
        user: UserId,
        family: &str,
        token_hash: &[u8],
        expires_at_ms: i64,
    ) -> Result<(), BackendError> {
        self.inner
            .issue_refresh(user, family, token_hash, expires_at_ms)
            .await
    }

    async fn rotate_refresh(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        expires_at_ms: i64,
    ) -> Result<RefreshOutcome, BackendError> {
        self.inner
            .rotate_refresh(old_hash, new_hash, expires_at_ms)
            .await
    }

    async fn logout(
        &self,
        jti: &str,
        expires_at_ms: i64,
        family: Option<&str>,
    ) -> Result<(), BackendError> {
        self.inner.logout(jti, expires_at_ms, family).await
    }

    async fn revoke_login(&self, family: &str, until_ms: i64) -> Result<(), BackendError> {
        self.inner.revoke_login(family, until_ms).await
    }

    async fn is_access_revoked(&self, jti: &str, family: Option<&str>) -> bool {
        self.inner.is_access_revoked(jti, family).await
    }

    async fn ready(&self) -> bool {
        self.inner.ready().await
    }
}

/// Settings of `holdfast-bench baseline`.
#[derive(Clone, Debug)]
pub struct Options {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub jwt_secret: String,
    pub database_url: String,
    pub redis_url: String,
    pub pool_size: u32,
    pub hold_ttl_secs: u64,
}

/// Serves a baseline until Ctrl-C or SIGTERM.
pub async fn serve(options: Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        options.jwt_secret.len() >= 32,
        "the JWT secret must be at least 32 bytes, as for Holdfast"
    );
    let data = tempfile::tempdir().context("creating a temporary data directory")?;
    let url = format!("sqlite://{}", data.path().join("catalog.db").display());
    let store = Store::connect(&url, 16).await?;
    store.migrate().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let journal: Arc<dyn actor::Journal> = Arc::new(store.journal());
    let inventories = Arc::new(Inventories::new(
        store.clone(),
        journal,
        Arc::clone(&clock),
        actor::Options::default(),
    ));
    let inner = NodeBackend::new(
        store.clone(),
        inventories,
        None,
        Arc::default(),
        Arc::clone(&clock),
        options.hold_ttl_secs,
    );
    inner.set_ready(true);
    let holds: Box<dyn HoldStore> = match options.kind {
        Kind::Pg => Box::new(pg::PgHolds::connect(&options.database_url, options.pool_size).await?),
        Kind::Redis => Box::new(redis::RedisHolds::connect(&options.redis_url).await?),
        Kind::Noop => Box::new(noop::NoopHolds),
    };
    let backend = Arc::new(BaselineBackend {
        inner,
        holds,
        clock,
        hold_ttl_ms: i64::try_from(options.hold_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
    });
    // The same Prometheus recorder as a Holdfast node, so the per-request metrics cost the same.
    let metrics = holdfast_engine::node::metrics_handle();
    // Like a node under HOLDFAST_RATE_LIMITS=off: a load test is one client hammering.
    let mut gateway = holdfast_gateway::Options::default();
    gateway.rate_limits.enabled = false;
    let state = AppState::new(
        backend,
        Arc::new(holdfast_gateway::checkout::NoCheckout),
        holdfast_gateway::auth::TokenKeys::from_secret(
            options.jwt_secret.as_bytes(),
            gateway.access_token_ttl_secs,
        ),
        gateway,
        Arc::new(move || metrics.render()),
        None,
    );
    let app = holdfast_gateway::router(state);
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("binding {}", options.addr))?;
    tracing::info!(addr = %listener.local_addr()?, kind = options.kind.name(), "baseline serving");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    store.close().await;
    drop(data);
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The 409 `sold-out` answer, with what is left of each requested line.
pub fn sold_out(available: Vec<(TicketCode, u32)>) -> BackendError {
    BackendError::Inventory(inventory::Error::SoldOut { available })
}

/// Stock of a type that only knows capacity and what is available (no sales in baselines).
pub fn stock(capacity: u32, available: u32, held: u32) -> TypeStock {
    TypeStock {
        capacity,
        available,
        held,
        sold: 0,
        per_user_limit: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_actors::Quantity;

    fn line(code: &str, q: u32) -> Line {
        Line {
            ticket_type: TicketCode::parse(code).expect("code"),
            quantity: Quantity::new(q).expect("quantity"),
        }
    }

    #[test]
    fn items_round_trip_and_merge() {
        let merged = merge_lines(vec![line("GA", 1), line("VIP", 2), line("GA", 3)]).expect("ok");
        assert_eq!(merged, vec![line("GA", 4), line("VIP", 2)]);
        let text = encode_items(&merged);
        assert_eq!(text, "GA:4,VIP:2");
        assert_eq!(decode_items(&text).expect("decode"), merged);
        assert!(decode_items("GA").is_err());
        assert!(decode_items("GA:0").is_err());
    }
}
