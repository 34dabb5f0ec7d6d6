//! The Redis baseline: one Lua script per hold checks every line and decrements atomically
//! (Redis runs scripts one at a time), and stores the hold in the same script. Called with
//! EVALSHA (`redis::Script` loads the script once and falls back to EVAL on NOSCRIPT).
//!
//! Durability is whatever the Redis server is configured for; the default (no AOF) acknowledges
//! holds that a crash loses. BENCHMARKS.md states the setting of the run.

use std::collections::HashMap;
use std::str::FromStr as _;

use async_trait::async_trait;
use holdfast_actors::{HoldRef, HoldStatus, HoldView, TicketCode, Timestamp, TypeStock, UserId};
use holdfast_gateway::backend::{BackendError, EventInfo};
use redis::aio::MultiplexedConnection;

use super::{HoldStore, decode_items, encode_items, sold_out, stock};

/// Keys expire a day after they are written, so stale runs clean themselves up.
const KEY_TTL_SECS: u64 = 24 * 3600;

/// KEYS: stock, held, hold. ARGV: user, placed_at, expires_at, items text, ttl, n, then code and
/// quantity per line. Returns {1} when placed, {-1} for an unknown event, {-2, i} for an unknown
/// type at line i, or {0, available…} when any line is short.
const HOLD_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local n = tonumber(ARGV[6])
local short = false
for i = 0, n - 1 do
  local a = redis.call('HGET', KEYS[1], ARGV[7 + 2 * i])
  if not a then return {-2, i} end
  if tonumber(a) < tonumber(ARGV[8 + 2 * i]) then short = true end
end
if short then
  local out = {0}
  for i = 0, n - 1 do out[#out + 1] = tonumber(redis.call('HGET', KEYS[1], ARGV[7 + 2 * i])) end
  return out
end
for i = 0, n - 1 do
  local q = tonumber(ARGV[8 + 2 * i])
  redis.call('HINCRBY', KEYS[1], ARGV[7 + 2 * i], -q)
  redis.call('HINCRBY', KEYS[2], ARGV[7 + 2 * i], q)
end
redis.call('HSET', KEYS[3], 'user', ARGV[1], 'placed_at', ARGV[2], 'expires_at', ARGV[3], 'items', ARGV[4], 'status', 'active')
redis.call('EXPIRE', KEYS[3], ARGV[5])
return {1}
";

/// KEYS: stock, held, hold. Returns 1 when released now, 0 when it was not active, -1 when
/// there is no such hold.
const RELEASE_SCRIPT: &str = r"
local status = redis.call('HGET', KEYS[3], 'status')
if not status then return -1 end
if status ~= 'active' then return 0 end
local items = redis.call('HGET', KEYS[3], 'items')
for code, q in string.gmatch(items, '([^,:]+):(%d+)') do
  redis.call('HINCRBY', KEYS[1], code, tonumber(q))
  redis.call('HINCRBY', KEYS[2], code, -tonumber(q))
end
redis.call('HSET', KEYS[3], 'status', 'released')
return 1
";

pub struct RedisHolds {
    conn: MultiplexedConnection,
    prefix: String,
    hold: redis::Script,
    release: redis::Script,
}

impl std::fmt::Debug for RedisHolds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHolds")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn db(e: redis::RedisError) -> BackendError {
    BackendError::Unavailable(format!("redis: {e}"))
}

impl RedisHolds {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Self {
            conn,
            prefix: format!("holdfast-bench:{}:", uuid::Uuid::new_v4().simple()),
            hold: redis::Script::new(HOLD_SCRIPT),
            release: redis::Script::new(RELEASE_SCRIPT),
        })
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    fn keys(&self, hold: HoldRef) -> [String; 3] {
        let event = hold.event_id.0.simple().to_string();
        [
            self.key("stock", &event),
            self.key("held", &event),
            self.key("hold", &hold.to_string()),
        ]
    }
}

#[async_trait]
impl HoldStore for RedisHolds {
    async fn add_event(&self, event: &EventInfo) -> Result<(), BackendError> {
        let id = event.id.0.simple().to_string();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for t in &event.ticket_types {
            pipe.hset(self.key("stock", &id), t.code.as_str(), t.capacity)
                .hset(self.key("held", &id), t.code.as_str(), 0)
                .hset(self.key("capacity", &id), t.code.as_str(), t.capacity);
        }
        for kind in ["stock", "held", "capacity"] {
            pipe.expire(self.key(kind, &id), KEY_TTL_SECS as i64);
        }
        pipe.query_async::<()>(&mut conn).await.map_err(db)
    }

    async fn availability(
        &self,
        event: &EventInfo,
    ) -> Result<Vec<(TicketCode, TypeStock)>, BackendError> {
        let id = event.id.0.simple().to_string();
        let mut conn = self.conn.clone();
        let (available, held, capacity): (
            HashMap<String, i64>,
            HashMap<String, i64>,
            HashMap<String, i64>,
        ) = redis::pipe()
            .hgetall(self.key("stock", &id))
            .hgetall(self.key("held", &id))
            .hgetall(self.key("capacity", &id))
            .query_async(&mut conn)
            .await
            .map_err(db)?;
        let get = |m: &HashMap<String, i64>, code: &TicketCode| {
            u32::try_from(m.get(code.as_str()).copied().unwrap_or(0)).unwrap_or(0)
        };
        Ok(event
            .ticket_types
            .iter()
            .map(|t| {
                (
                    t.code.clone(),
                    stock(
                        get(&capacity, &t.code),
                        get(&available, &t.code),
                        get(&held, &t.code),
                    ),
                )
            })
            .collect())
    }

    async fn hold(&self, hold: &HoldView) -> Result<(), BackendError> {
        let hold_ref = HoldRef {
            event_id: hold.event_id,
            hold_id: hold.id,
        };
        let [stock_key, held_key, hold_key] = self.keys(hold_ref);
        let mut invocation = self.hold.key(stock_key);
        invocation
            .key(held_key)
            .key(hold_key)
            .arg(hold.user.0.simple().to_string())
            .arg(hold.placed_at.as_millis())
            .arg(hold.expires_at.as_millis())
            .arg(encode_items(&hold.items))
            .arg(KEY_TTL_SECS)
            .arg(hold.items.len());
        for line in &hold.items {
            invocation
                .arg(line.ticket_type.as_str())
                .arg(line.quantity.get());
        }
        let mut conn = self.conn.clone();
        let answer: Vec<i64> = invocation.invoke_async(&mut conn).await.map_err(db)?;
        match answer.as_slice() {
            [1] => Ok(()),
            [-1] => Err(BackendError::EventNotFound),
            [-2, i] => Err(BackendError::Inventory(
                holdfast_actors::Error::UnknownTicketType(
                    hold.items[usize::try_from(*i).unwrap_or(0).min(hold.items.len() - 1)]
                        .ticket_type
                        .clone(),
                ),
            )),
            [0, left @ ..] => Err(sold_out(
                hold.items
                    .iter()
                    .zip(left)
                    .map(|(l, a)| (l.ticket_type.clone(), u32::try_from(*a).unwrap_or(0)))
                    .collect(),
            )),
            other => Err(BackendError::Internal(format!(
                "hold script answered {other:?}"
            ))),
        }
    }

    async fn get_hold(&self, hold: HoldRef) -> Result<Option<HoldView>, BackendError> {
        let [_, _, hold_key] = self.keys(hold);
        let mut conn = self.conn.clone();
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(hold_key)
            .query_async(&mut conn)
            .await
            .map_err(db)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| {
            fields
                .get(name)
                .cloned()
                .ok_or_else(|| BackendError::Internal(format!("stored hold lacks {name}")))
        };
        let millis = |name: &str| -> Result<Timestamp, BackendError> {
            field(name)?
                .parse()
                .map(Timestamp)
                .map_err(|_| BackendError::Internal(format!("stored hold {name} is not a number")))
        };
        Ok(Some(HoldView {
            id: hold.hold_id,
            event_id: hold.event_id,
            user: UserId(
                uuid::Uuid::from_str(&field("user")?)
                    .map_err(|e| BackendError::Internal(e.to_string()))?,
            ),
            items: decode_items(&field("items")?)?,
            placed_at: millis("placed_at")?,
            expires_at: millis("expires_at")?,
            status: if field("status")? == "released" {
                HoldStatus::Released
            } else {
                HoldStatus::Active
            },
            order_id: None,
        }))
    }

    async fn release(&self, hold: HoldRef) -> Result<(), BackendError> {
        let [stock_key, held_key, hold_key] = self.keys(hold);
        let mut conn = self.conn.clone();
        let answer: i64 = self
            .release
            .key(stock_key)
            .key(held_key)
            .key(hold_key)
            .invoke_async(&mut conn)
            .await
            .map_err(db)?;
        match answer {
            -1 => Err(BackendError::Inventory(
                holdfast_actors::Error::HoldNotFound,
            )),
            _ => Ok(()),
        }
    }
}
