//! Revocations told to every node through Redis, so a logout is honoured cluster-wide within
//! milliseconds rather than at the next database pull. Each revocation is written as
//! `holdfast:revoked:<key>` (its expiry in ms, expiring with the token) and published on
//! [`CHANNEL`] as `<key> <expires_at_ms>`; every node keeps one subscription open and inserts
//! what it hears into its [`DenyList`].
//!
//! Redis is a shortcut, never the record: the database write comes first and the one-second
//! pull still runs, so a node that was disconnected catches up from there. A failure is
//! counted in `holdfast_deny_list_redis_errors_total` and logged at most once per
//! [`WARN_EVERY`]; it never fails the caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::watch;

use super::DenyList;
use crate::redis_link::RedisLink;

/// Where every node listens for revocations.
const CHANNEL: &str = "holdfast:revocations";
const KEY_PREFIX: &str = "holdfast:revoked:";
/// Longest a logout waits for Redis before leaving the news to the database pull.
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(250);
/// The subscription is opened again after `BACKOFF_MIN`, doubling up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const WARN_EVERY: Duration = Duration::from_secs(10);
/// How often the subscription is pinged, and how long a pong may take.
const PING_EVERY: Duration = Duration::from_secs(5);
const PING_TIMEOUT: Duration = Duration::from_secs(2);
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Broadcast {
    redis: RedisLink,
    started: Instant,
    /// When the last warning was logged, in ms since `started` (0: never).
    warned_ms: AtomicU64,
}

/// What is published for a revocation of `key` until `expires_at_ms`.
fn message(key: &str, expires_at_ms: i64) -> String {
    format!("{key} {expires_at_ms}")
}

/// The key and expiry of a published revocation; keys hold no space.
fn parse_message(payload: &str) -> Option<(&str, i64)> {
    let (key, expires_at_ms) = payload.split_once(' ')?;
    if key.is_empty() {
        return None;
    }
    Some((key, expires_at_ms.parse().ok()?))
}

impl Broadcast {
    /// Parses `url`; connects on first use, so a node starts while Redis is down.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: RedisLink::new(url)?,
            started: Instant::now(),
            warned_ms: AtomicU64::new(0),
        })
    }

    /// Tells every node that `key` is revoked until `expires_at_ms`; failures are only counted.
    pub async fn publish(&self, key: &str, expires_at_ms: i64, now_ms: i64) {
        let remaining_ms = expires_at_ms.saturating_sub(now_ms);
        if remaining_ms <= 0 {
            return;
        }
        match tokio::time::timeout(
            PUBLISH_TIMEOUT,
            self.try_publish(key, expires_at_ms, remaining_ms),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.redis.broken().await;
                self.failed("publish", &e.to_string());
            }
            Err(_) => {
                self.redis.broken().await;
                let why = format!("no answer within {} ms", PUBLISH_TIMEOUT.as_millis());
                self.failed("publish", &why);
            }
        }
    }

    async fn try_publish(
        &self,
        key: &str,
        expires_at_ms: i64,
        remaining_ms: i64,
    ) -> Result<(), redis::RedisError> {
        let mut connection = self.redis.connection().await?;
        redis::pipe()
            .cmd("SET")
            .arg(format!("{KEY_PREFIX}{key}"))
            .arg(expires_at_ms)
            .arg("PX")
            .arg(remaining_ms)
            .ignore()
            .cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(message(key, expires_at_ms))
            .ignore()
            .query_async::<()>(&mut connection)
            .await
    }

    /// Inserts every revocation published on [`CHANNEL`] into `list` until `shutdown`,
    /// subscribing again (with bounded backoff) whenever the subscription breaks.
    pub async fn listen(&self, list: &DenyList, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let subscribed = tokio::select! {
                subscribed = tokio::time::timeout(SUBSCRIBE_TIMEOUT, self.subscribe()) => subscribed,
                () = stopped(&mut shutdown) => return,
            };
            match subscribed {
                Ok(Ok(pubsub)) => {
                    backoff = BACKOFF_MIN;
                    match self.hear(list, pubsub, &mut shutdown).await {
                        Some(lost) => self.failed("subscribe", &lost),
                        None => return,
                    }
                }
                Ok(Err(e)) => self.failed("subscribe", &e.to_string()),
                Err(_) => self.failed("subscribe", "no answer within the subscribe timeout"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut shutdown) => return,
            }
            backoff = backoff.saturating_mul(2).min(BACKOFF_MAX);
        }
    }

    /// Inserts what `pubsub` hears into `list` until the subscription is lost (why) or
    /// `shutdown` (`None`). A ping every [`PING_EVERY`] finds a connection that died silently.
    async fn hear(
        &self,
        list: &DenyList,
        pubsub: redis::aio::PubSub,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<String> {
        let (mut sink, mut messages) = pubsub.split();
        let mut ping_every = tokio::time::interval(PING_EVERY);
        ping_every.tick().await;
        loop {
            tokio::select! {
                message = messages.next() => match message {
                    Some(message) => self.receive(list, &message),
                    None => return Some("subscription closed".to_owned()),
                },
                _ = ping_every.tick() => {
                    match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Some(format!("ping failed: {e}")),
                        Err(_) => return Some(format!("no pong within {} ms", PING_TIMEOUT.as_millis())),
                    }
                }
                () = stopped(shutdown) => return None,
            }
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        let mut pubsub = self.redis.client().get_async_pubsub().await?;
        pubsub.subscribe(CHANNEL).await?;
        Ok(pubsub)
    }

    fn receive(&self, list: &DenyList, message: &redis::Msg) {
        let payload = message.get_payload::<String>().unwrap_or_default();
        match parse_message(&payload) {
            Some((key, expires_at_ms)) => list.insert(key.to_owned(), expires_at_ms),
            None => self.failed("receive", "a malformed revocation message"),
        }
    }

    fn failed(&self, op: &'static str, why: &str) {
        metrics::counter!("holdfast_deny_list_redis_errors_total", "op" => op).increment(1);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.warned_ms.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .warned_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(op, %why, "deny list redis unavailable: revocations travel through the database pull (within a second)");
        }
    }
}

/// Until the node's shutdown signal (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::{message, parse_message};

    #[test]
    fn messages_round_trip() {
        assert_eq!(
            parse_message(&message("fam:abc", 1_700_000_000_000)),
            Some(("fam:abc", 1_700_000_000_000))
        );
        assert_eq!(parse_message("jti-1 42"), Some(("jti-1", 42)));
        for bad in ["", "jti", " 42", "jti x", "jti 42 extra"] {
            assert_eq!(parse_message(bad), None, "{bad:?}");
        }
    }
}
