//! Rate limits every node shares through Redis: one Lua script runs the GCRA step of
//! [`holdfast_gateway::rate_limit::gcra`] atomically on Redis's own clock, so nodes with
//! skewed clocks still count together. A key is `holdfast:rl:<limit>:<client>` holding the
//! theoretical arrival time in microseconds, expiring once it is in the past.
//!
//! One [`RedisLink`] connection; while it is down, checks fail at once and the gateway counts
//! locally.

use async_trait::async_trait;
use holdfast_gateway::rate_limit::{self, Outcome, Quota, Shared};

use crate::redis_link::RedisLink;

const KEY_PREFIX: &str = "holdfast:rl:";

/// KEYS[1] the bucket; ARGV: emission interval T (µs), burst, cost, force (1/0).
/// Returns {allowed, remaining, reset µs, retry-after µs}, as `gcra::charge` computes them.
const GCRA_SCRIPT: &str = r"
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tau = t * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local earliest = tat + t * (cost - 1) - tau
if now < earliest and not force then
  return {0, 0, tat - now, earliest - now}
end
local nxt = tat + t * cost
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1)
local remaining = math.floor((now + tau + t - nxt) / t)
if remaining < 0 then remaining = 0 end
if remaining > burst then remaining = burst end
return {1, remaining, nxt - now, 0}
";

#[derive(Debug)]
pub struct RedisRateLimits {
    redis: RedisLink,
    script: redis::Script,
}

impl RedisRateLimits {
    /// Parses `url`; connects on first use, so a node starts while Redis is down.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            redis: RedisLink::new(url)?,
            script: redis::Script::new(GCRA_SCRIPT),
        })
    }
}

fn failed(e: redis::RedisError) -> rate_limit::Error {
    rate_limit::Error(format!("redis: {e}"))
}

#[async_trait]
impl Shared for RedisRateLimits {
    async fn charge(
        &self,
        key: &str,
        quota: Quota,
        cost: u32,
        force: bool,
    ) -> Result<Outcome, rate_limit::Error> {
        let mut connection = self.redis.connection().await.map_err(failed)?;
        let answer: Result<(i64, i64, i64, i64), _> = self
            .script
            .key(format!("{KEY_PREFIX}{key}"))
            .arg(quota.emission_interval_us())
            .arg(quota.burst)
            .arg(cost)
            .arg(u8::from(force))
            .invoke_async(&mut connection)
            .await;
        match answer {
            Ok((allowed, remaining, reset_us, retry_after_us)) => Ok(Outcome {
                allowed: allowed == 1,
                remaining: u32::try_from(remaining).unwrap_or(0),
                reset_us: u64::try_from(reset_us).unwrap_or(0),
                retry_after_us: u64::try_from(retry_after_us).unwrap_or(0),
            }),
            Err(e) => {
                self.redis.broken().await;
                Err(failed(e))
            }
        }
    }
}
