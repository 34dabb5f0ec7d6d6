//! Rate limits (GCRA) per client IP (login, register, refresh), per user (holds, orders) and
//! per event (holds). Answers past a limit are 429 `rate-limited`, checked before any costly
//! work (a refused login never reaches Argon2).
//!
//! Each node counts in memory with `governor`. With a [`Shared`] store (Redis, built by the
//! engine) every node counts together; when that store fails or takes longer than
//! `shared_timeout_ms`, the node-local count answers instead, with a warning (at most one per
//! [`WARN_EVERY`]) and `holdfast_rate_limit_redis_errors_total`: a broken store never turns
//! into a 5xx.

pub mod client_ip;
pub mod gcra;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use self::gcra::{Outcome, Quota};
use crate::AppState;
use crate::problem::Problem;

/// Longest quiet time between two warnings about the shared store.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// How often idle keys are dropped from the node-local limiters.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);
/// Keys with a penalty carried over at most, per limit; past it penalties are dropped.
const OWED_MAX: usize = 65_536;

/// What is limited, and under which policy name it is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `POST /v1/auth/login` per client IP; a failed login counts double.
    Login,
    /// `POST /v1/auth/register` per client IP.
    Register,
    /// `POST /v1/auth/refresh` per client IP.
    Refresh,
    /// `POST /v1/events/{id}/holds` per user.
    Holds,
    /// `POST /v1/orders` per user.
    Orders,
    /// `POST /v1/events/{id}/holds` per event, all users together.
    EventHolds,
    /// `POST /v1/events/{id}/queue` per user.
    QueueJoins,
}

impl Limit {
    pub const ALL: [Self; 7] = [
        Self::Login,
        Self::Register,
        Self::Refresh,
        Self::Holds,
        Self::Orders,
        Self::EventHolds,
        Self::QueueJoins,
    ];

    /// The policy name in `RateLimit-Policy` and in shared-store keys.
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::Refresh => "refresh",
            Self::Holds => "holds",
            Self::Orders => "orders",
            Self::EventHolds => "event-holds",
            Self::QueueJoins => "queue-joins",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Settings of the rate limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Off: no limit at all (load tests).
    pub enabled: bool,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Longest a check waits for the shared store before counting locally.
    pub shared_timeout_ms: u64,
    pub login: Quota,
    pub register: Quota,
    pub refresh: Quota,
    pub holds: Quota,
    pub orders: Quota,
    pub event_holds: Quota,
    pub queue_joins: Quota,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            enabled: true,
            trusted_proxies: Vec::new(),
            shared_timeout_ms: 50,
            login: Quota::per_minute(10, 10),
            register: Quota::per_minute(10, 10),
            refresh: Quota::per_minute(30, 30),
            holds: Quota::per_minute(60, 20),
            orders: Quota::per_minute(30, 10),
            event_holds: Quota::per_second(20_000, 20_000),
            queue_joins: Quota::per_minute(30, 10),
        }
    }
}

impl Options {
    pub fn quota(&self, limit: Limit) -> Quota {
        match limit {
            Limit::Login => self.login,
            Limit::Register => self.register,
            Limit::Refresh => self.refresh,
            Limit::Holds => self.holds,
            Limit::Orders => self.orders,
            Limit::EventHolds => self.event_holds,
            Limit::QueueJoins => self.queue_joins,
        }
    }
}

/// Why the shared store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit store failed: {0}")]
pub struct Error(pub String);

/// Limits every node shares: one atomic GCRA step per charge, as [`gcra::charge`] computes it,
/// on a key such as `login:198.51.100.7`.
#[async_trait]
pub trait Shared: Send + Sync + std::fmt::Debug + 'static {
    async fn charge(
        &self,
        key: &str,
        quota: Quota,
        cost: u32,
        force: bool,
    ) -> Result<Outcome, Error>;
}

type Keyed = governor::RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One node-local limit: governor's keyed limiter, and the penalties it could not charge yet
/// (governor only charges what fits, so a penalty past the limit is added to the next check).
#[derive(Debug)]
struct Local {
    quota: Quota,
    limiter: Keyed,
    owed: Mutex<HashMap<String, u32>>,
    any_owed: AtomicBool,
}

impl Local {
    fn new(quota: Quota) -> Option<Self> {
        if quota.is_off() {
            return None;
        }
        let burst = NonZeroU32::new(quota.burst)?;
        let interval = Duration::from_micros(quota.emission_interval_us());
        let governor_quota = governor::Quota::with_period(interval)?.allow_burst(burst);
        Some(Self {
            quota,
            limiter: governor::RateLimiter::keyed(governor_quota)
                .with_middleware::<StateInformationMiddleware>(),
            owed: Mutex::new(HashMap::new()),
            any_owed: AtomicBool::new(false),
        })
    }

    fn charge(&self, key: &str, cost: u32, force: bool) -> Outcome {
        let owed = if !force && self.any_owed.load(Ordering::Relaxed) {
            self.lock_owed().remove(key).unwrap_or(0)
        } else {
            0
        };
        let key = key.to_owned();
        let t = Duration::from_micros(self.quota.emission_interval_us());
        let total = (cost + owed).clamp(1, self.quota.burst);
        let n = NonZeroU32::new(total).unwrap_or(NonZeroU32::MIN);
        match self.limiter.check_key_n(&key, n) {
            Ok(Ok(snapshot)) => {
                let remaining = snapshot.remaining_burst_capacity();
                let used = u64::from(self.quota.burst.saturating_sub(remaining));
                Outcome {
                    allowed: true,
                    remaining,
                    reset_us: duration_us(t) * used,
                    retry_after_us: 0,
                }
            }
            Ok(Err(not_until)) => {
                if force || owed > 0 {
                    self.owe(key, if force { cost } else { owed });
                }
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Outcome {
                    allowed: false,
                    remaining: 0,
                    reset_us: duration_us(wait) + self.quota.tolerance_us(),
                    retry_after_us: duration_us(wait),
                }
            }
            // A cost above the burst: never allowed.
            Err(_) => Outcome {
                allowed: false,
                remaining: 0,
                reset_us: self.quota.tolerance_us(),
                retry_after_us: self.quota.tolerance_us(),
            },
        }
    }

    fn owe(&self, key: String, units: u32) {
        let mut owed = self.lock_owed();
        if owed.len() < OWED_MAX || owed.contains_key(&key) {
            let entry = owed.entry(key).or_insert(0);
            *entry = (*entry + units).min(self.quota.burst);
            self.any_owed.store(true, Ordering::Relaxed);
        }
    }

    fn lock_owed(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.owed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn housekeeping(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        let mut owed = self.lock_owed();
        // A debt older than the housekeeping period has been paid by time already.
        owed.clear();
        owed.shrink_to_fit();
        self.any_owed.store(false, Ordering::Relaxed);
    }
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The rate limits of a node; cheap to share behind the [`AppState`].
#[derive(Debug)]
pub struct RateLimits {
    options: Options,
    local: Vec<Option<Local>>,
    shared: Option<Arc<dyn Shared>>,
    started: Instant,
    housekept_ms: AtomicU64,
    warned_ms: AtomicU64,
}

impl RateLimits {
    pub fn new(options: Options, shared: Option<Arc<dyn Shared>>) -> Self {
        let local = Limit::ALL
            .iter()
            .map(|&limit| Local::new(options.quota(limit)))
            .collect();
        Self {
            options,
            local,
            shared,
            started: Instant::now(),
            housekept_ms: AtomicU64::new(0),
            warned_ms: AtomicU64::new(0),
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Charges one unit to `key` under `limit`: `Err` is the 429 to answer.
    pub async fn check(&self, limit: Limit, key: &str) -> Result<(), Problem> {
        match self.charge(limit, key, 1, false).await {
            Some(outcome) if !outcome.allowed => {
                metrics::counter!("holdfast_rate_limited_total", "limit" => limit.name())
                    .increment(1);
                Err(rate_limited(limit, &self.options.quota(limit), &outcome))
            }
            _ => Ok(()),
        }
    }

    /// Charges one more unit to `key` even past the limit (a failed login counts double).
    pub async fn penalize(&self, limit: Limit, key: &str) {
        let _ = self.charge(limit, key, 1, true).await;
    }

    /// The client IP of a request from `peer` (see [`client_ip`]).
    pub fn client_ip(&self, peer: IpAddr, headers: &axum::http::HeaderMap) -> IpAddr {
        client_ip::client_ip(&self.options.trusted_proxies, peer, headers)
    }

    async fn charge(&self, limit: Limit, key: &str, cost: u32, force: bool) -> Option<Outcome> {
        if !self.options.enabled {
            return None;
        }
        let local = self.local[limit.index()].as_ref()?;
        self.housekeep_when_due();
        if let Some(shared) = &self.shared {
            let key = format!("{}:{key}", limit.name());
            let timeout = Duration::from_millis(self.options.shared_timeout_ms.max(1));
            let failure =
                match tokio::time::timeout(timeout, shared.charge(&key, local.quota, cost, force))
                    .await
                {
                    Ok(Ok(outcome)) => return Some(outcome),
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {} ms", timeout.as_millis()),
                };
            self.shared_failed(&failure);
        }
        Some(local.charge(key, cost, force))
    }

    fn shared_failed(&self, why: &str) {
        metrics::counter!("holdfast_rate_limit_redis_errors_total").increment(1);
        let now = self.elapsed_ms();
        let last = self.warned_ms.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .warned_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%why, "shared rate limits unavailable: counting on this node only");
        }
    }

    fn housekeep_when_due(&self) {
        let now = self.elapsed_ms();
        let last = self.housekept_ms.load(Ordering::Relaxed);
        let every = u64::try_from(HOUSEKEEPING_EVERY.as_millis()).unwrap_or(u64::MAX);
        if now.saturating_sub(last) >= every
            && self
                .housekept_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.local.iter().flatten().for_each(Local::housekeeping);
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The 429 answer: `Retry-After` and the draft's `RateLimit-Policy` / `RateLimit` headers.
pub fn rate_limited(limit: Limit, quota: &Quota, outcome: &Outcome) -> Problem {
    let retry = outcome.retry_after_secs();
    let (policy, state) = gcra::headers(limit.name(), quota, outcome);
    let mut problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!(
            "the {} limit is {} per {} s; retry after the delay in Retry-After",
            limit.name(),
            quota.rate,
            quota.period_secs
        ),
    )
    .retry_after(u32::try_from(retry).unwrap_or(u32::MAX))
    .with("limit", serde_json::json!(limit.name()));
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            problem = problem.with_header(HeaderName::from_static(name), value);
        }
    }
    problem
}

/// The client's IP address (see [`client_ip`]): the TCP peer or, behind a trusted proxy, the
/// right-most untrusted `X-Forwarded-For` hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The key of this client in the per-IP limits.
    pub fn key(&self) -> String {
        client_ip::limit_key(self.0)
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Served without a socket (router tests): everyone is one unspecified client.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        Ok(Self(state.rate_limits().client_ip(peer, &parts.headers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(options: Options) -> RateLimits {
        RateLimits::new(options, None)
    }

    #[tokio::test]
    async fn the_local_limiter_refuses_past_the_burst_with_headers() {
        let limits = limits(Options::default());
        for _ in 0..10 {
            limits
                .check(Limit::Login, "198.51.100.7")
                .await
                .expect("within the burst");
        }
        let problem = limits
            .check(Limit::Login, "198.51.100.7")
            .await
            .expect_err("past it");
        assert_eq!(problem.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(problem.slug, "rate-limited");
        assert!(
            problem
                .retry_after_secs
                .is_some_and(|s| (5..=6).contains(&s))
        );
        let header = |name: &str| {
            let found = problem.headers.iter().find(|(n, _)| n == name);
            found.and_then(|(_, v)| v.to_str().ok()).unwrap_or_default()
        };
        assert_eq!(header("ratelimit-policy"), "\"login\";q=10;w=60");
        let state = header("ratelimit");
        assert!(state.starts_with("\"login\";r=0;t="), "{state}");
        // Another client and another limit are counted apart.
        limits
            .check(Limit::Login, "198.51.100.8")
            .await
            .expect("another key");
        limits
            .check(Limit::Register, "198.51.100.7")
            .await
            .expect("another limit");
    }

    #[tokio::test]
    async fn local_penalties_past_the_limit_are_carried_over() {
        let limits = limits(Options {
            login: Quota::per_second(1, 2),
            ..Options::default()
        });
        limits.check(Limit::Login, "a").await.expect("first");
        limits.penalize(Limit::Login, "a").await;
        // Full: the next penalty is owed and charged with the next check.
        limits.penalize(Limit::Login, "a").await;
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        // One unit came back, but the check costs itself plus the debt.
        assert!(limits.check(Limit::Login, "a").await.is_err());
    }

    #[tokio::test]
    async fn off_and_zero_quotas_never_refuse() {
        let off = limits(Options {
            enabled: false,
            ..Options::default()
        });
        let zero = limits(Options {
            holds: Quota::per_minute(0, 0),
            ..Options::default()
        });
        for _ in 0..100 {
            off.check(Limit::Login, "a").await.expect("off");
            zero.check(Limit::Holds, "u").await.expect("zero quota");
        }
    }

    #[derive(Debug)]
    struct Broken;

    #[async_trait]
    impl Shared for Broken {
        async fn charge(&self, _: &str, _: Quota, _: u32, _: bool) -> Result<Outcome, Error> {
            Err(Error("connection refused".to_owned()))
        }
    }

    #[derive(Debug)]
    struct Stuck;

    #[async_trait]
    impl Shared for Stuck {
        async fn charge(&self, _: &str, _: Quota, _: u32, _: bool) -> Result<Outcome, Error> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn a_failing_or_stuck_store_falls_back_to_local_counts() {
        for shared in [Arc::new(Broken) as Arc<dyn Shared>, Arc::new(Stuck)] {
            let limits = RateLimits::new(Options::default(), Some(shared));
            for _ in 0..10 {
                limits.check(Limit::Login, "a").await.expect("local burst");
            }
            assert!(limits.check(Limit::Login, "a").await.is_err());
        }
    }
}
