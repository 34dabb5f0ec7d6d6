//! What a run needs before the clock starts: tokens minted with the server's secret, the events
//! created through the API, and every actor warmed up by one availability read.
//!
//! Buyers are not registered: a hold only needs a valid token naming a user id, and minting
//! tokens keeps Argon2 (hundreds of milliseconds per login) out of the setup.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use holdfast_actors::UserId;
use holdfast_gateway::auth::{Role, TokenKeys};
use hyper::Method;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use serde_json::json;

use crate::client::{Conn, Target, bearer};

/// A buyer: its id and ready-made `Authorization` header.
#[derive(Clone, Debug)]
pub struct Buyer {
    pub id: UserId,
    pub auth: HeaderValue,
}

/// What the events look like.
#[derive(Clone, Debug)]
pub struct EventSpec {
    pub count: usize,
    pub ticket_type: String,
    pub capacity: u32,
    pub per_user_limit: Option<u32>,
}

/// The events of a run, by id.
#[derive(Clone, Debug)]
pub struct CreatedEvent {
    pub id: String,
    pub capacity: u32,
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Token keys minting what the server issues: tokens live as long as its default access-token
/// lifetime (a server refuses longer-lived ones), which must outlast the run.
pub fn token_keys(secret: &[u8], run: Duration) -> anyhow::Result<TokenKeys> {
    let ttl_secs = holdfast_gateway::Options::default().access_token_ttl_secs;
    anyhow::ensure!(
        run.as_secs() + 60 < ttl_secs,
        "runs are limited to {} s: the buyers' tokens live {ttl_secs} s",
        ttl_secs - 60
    );
    Ok(TokenKeys::from_secret(secret, ttl_secs))
}

pub fn mint(keys: &TokenKeys, user: UserId, role: Role) -> anyhow::Result<HeaderValue> {
    let token = keys
        .issue(user, role, now_secs())
        .context("signing a token")?;
    bearer(&token)
}

pub fn buyers(keys: &TokenKeys, count: usize) -> anyhow::Result<Vec<Buyer>> {
    (0..count.max(1))
        .map(|_| {
            let id = UserId(uuid::Uuid::new_v4());
            Ok(Buyer {
                id,
                auth: mint(keys, id, Role::Customer)?,
            })
        })
        .collect()
}

pub fn event_body(spec: &EventSpec, index: usize) -> serde_json::Value {
    json!({
        "name": format!("Flash sale {index}"),
        "venue": "holdfast-bench",
        "starts_at": "2030-12-31T20:00:00Z",
        "ticket_types": [{
            "code": spec.ticket_type,
            "name": "General admission",
            "price": 500_000,
            "currency": "VND",
            "capacity": spec.capacity,
            "per_user_limit": spec.per_user_limit,
        }],
    })
}

/// Creates the events as an organizer and reads each one's availability once, which starts
/// its actor in Holdfast, so the first timed hold does not pay for recovery.
pub async fn create_events(
    target: &Target,
    organizer: &HeaderValue,
    spec: &EventSpec,
) -> anyhow::Result<Vec<CreatedEvent>> {
    let mut conn = Conn::new(target.clone());
    let timeout = Duration::from_secs(30);
    let mut events = Vec::with_capacity(spec.count);
    for index in 0..spec.count.max(1) {
        let body = Bytes::from(serde_json::to_vec(&event_body(spec, index))?);
        let answer = conn
            .send(
                Method::POST,
                "/v1/events",
                Some(organizer),
                Some(body),
                timeout,
            )
            .await
            .context("creating an event")?;
        anyhow::ensure!(
            answer.status.as_u16() == 201,
            "creating an event answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        let created: serde_json::Value = serde_json::from_slice(&answer.body)?;
        let id = created["id"]
            .as_str()
            .context("the created event has no id")?
            .to_owned();
        let path = format!("/v1/events/{id}/availability");
        let warm = conn.send(Method::GET, &path, None, None, timeout).await?;
        anyhow::ensure!(
            warm.status.is_success(),
            "availability of a new event answered {}",
            warm.status
        );
        events.push(CreatedEvent {
            id,
            capacity: spec.capacity,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_with_the_same_secret() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let keys = token_keys(secret, Duration::from_secs(30)).expect("keys");
        let buyers = buyers(&keys, 3).expect("mint");
        assert_eq!(buyers.len(), 3);
        let header = buyers[0].auth.to_str().expect("ascii");
        let token = header.strip_prefix("Bearer ").expect("bearer");
        let claims = TokenKeys::from_secret(secret, 900)
            .verify(token)
            .expect("valid");
        assert_eq!(claims.sub, buyers[0].id.to_string());
        assert_eq!(claims.role, Role::Customer);
    }

    #[test]
    fn event_bodies_follow_the_api() {
        let spec = EventSpec {
            count: 1,
            ticket_type: "GA".to_owned(),
            capacity: 5000,
            per_user_limit: None,
        };
        let body = event_body(&spec, 0);
        assert_eq!(body["ticket_types"][0]["capacity"], 5000);
        assert!(body["ticket_types"][0]["per_user_limit"].is_null());
    }
}
