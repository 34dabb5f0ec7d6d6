//! One multiplexed Redis connection shared by a node's Redis users (rate limits, the deny
//! list's publishing side): opened on first use and again after a failure, at most once per
//! [`RECONNECT_EVERY`]. Between attempts a caller fails at once and falls back to what the node
//! has on its own, so a dead Redis never makes a request wait.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// A broken connection is opened again at most this often.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct RedisLink {
    client: redis::Client,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    last_attempt: Mutex<Option<Instant>>,
}

impl RedisLink {
    /// Parses `url`; connects on first use, so a node starts while Redis is down.
    pub fn new(url: &str) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: tokio::sync::Mutex::new(None),
            last_attempt: Mutex::new(None),
        })
    }

    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The open connection, or a new one unless the last attempt was under
    /// [`RECONNECT_EVERY`] ago.
    pub async fn connection(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        let mut connection = self.connection.lock().await;
        if let Some(connection) = connection.as_ref() {
            return Ok(connection.clone());
        }
        {
            let mut last = self
                .last_attempt
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "not connected to redis",
                )));
            }
            *last = Some(Instant::now());
        }
        let opened = self.client.get_multiplexed_async_connection().await?;
        *connection = Some(opened.clone());
        Ok(opened)
    }

    /// Whatever broke, the next use (after the reconnect pause) starts afresh.
    pub async fn broken(&self) {
        *self.connection.lock().await = None;
    }
}
