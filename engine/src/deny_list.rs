//! Logged-out access tokens and revoked logins, answered from memory on every request.
//! Revocations are stored in the database and pulled from it every second, so a logout on any
//! node of a cluster is honoured by every node within about a second (at once on the node that
//! took it). A revoked login (logout, or a refresh token presented twice) is one entry keyed
//! [`family_key`], which refuses every access token that login issued.
//!
//! With `redis_url` set, each revocation is also published through Redis ([`broadcast`]), so
//! every node refuses the token within milliseconds; the database stays the record.

mod broadcast;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use holdfast_actors::actor::Clock;
use holdfast_persistence::Store;
use tokio::sync::watch;

pub use broadcast::Broadcast;

/// How often the list is pulled from the database.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Revocations are pulled from a little before the last one seen: clocks of nodes differ.
const SYNC_OVERLAP_MS: i64 = 5_000;

#[derive(Debug, Default)]
pub struct DenyList {
    /// jti → expiry (ms); an entry is dropped once its token would have expired anyway.
    revoked: RwLock<HashMap<String, i64>>,
    /// Tells the other nodes at once; `None`: they learn it from the database pull.
    broadcast: Option<Broadcast>,
}

/// The deny-list key of a whole login (refresh-token family); no jti has this form.
pub fn family_key(family: &str) -> String {
    format!("fam:{family}")
}

impl DenyList {
    /// A list whose revocations are also published through, and heard from, `broadcast`.
    pub fn with_broadcast(broadcast: Broadcast) -> Self {
        Self {
            revoked: RwLock::default(),
            broadcast: Some(broadcast),
        }
    }

    /// Refuses `key` (a jti or a [`family_key`]) until `expires_at_ms` here, and tells the other
    /// nodes through Redis when configured. Call it once the revocation is in the database.
    pub async fn revoke(&self, key: String, expires_at_ms: i64, now_ms: i64) {
        self.insert(key.clone(), expires_at_ms);
        if let Some(broadcast) = &self.broadcast {
            broadcast.publish(&key, expires_at_ms, now_ms).await;
        }
    }

    /// Hears the other nodes' revocations until `shutdown` (a task of the node); returns at
    /// once without a broadcast.
    pub async fn listen(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        if let Some(broadcast) = &self.broadcast {
            broadcast.listen(&self, shutdown).await;
        }
    }

    /// Whether the token `jti` or its login `family` is revoked.
    pub fn is_revoked(&self, jti: &str, family: Option<&str>, now_ms: i64) -> bool {
        self.contains(jti, now_ms) || family.is_some_and(|f| self.contains(&family_key(f), now_ms))
    }

    pub fn contains(&self, jti: &str, now_ms: i64) -> bool {
        let revoked = self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked.get(jti).is_some_and(|&exp| exp > now_ms)
    }

    pub fn insert(&self, jti: String, expires_at_ms: i64) {
        let mut revoked = self
            .revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked.insert(jti, expires_at_ms);
    }

    fn prune(&self, now_ms: i64) {
        let mut revoked = self
            .revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        revoked.retain(|_, exp| *exp > now_ms);
    }

    /// Pulls revocations from `store` forever (a task of the node), pruning expired ones.
    pub async fn sync(self: Arc<Self>, store: Store, clock: Arc<dyn Clock>) {
        let mut since = 0;
        let mut every = tokio::time::interval(SYNC_EVERY);
        loop {
            every.tick().await;
            let now = clock.now().as_millis();
            match store.access_revoked_since(since, now).await {
                Ok(rows) => {
                    for (jti, expires_at, revoked_at) in rows {
                        since = since.max(revoked_at - SYNC_OVERLAP_MS);
                        self.insert(jti, expires_at);
                    }
                    self.prune(now);
                }
                Err(e) => tracing::warn!(error = %e, "reading revoked tokens failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DenyList;

    #[test]
    fn entries_last_until_the_token_expires() {
        let list = DenyList::default();
        list.insert("a".into(), 1_000);
        assert!(list.contains("a", 999));
        assert!(!list.contains("a", 1_000));
        assert!(!list.contains("b", 0));
        list.insert(super::family_key("f1"), 2_000);
        assert!(list.is_revoked("any-token", Some("f1"), 1_500));
        assert!(!list.is_revoked("any-token", Some("f2"), 1_500));
        assert!(!list.is_revoked("any-token", None, 1_500));
        list.prune(2_000);
        assert!(list.revoked.read().expect("lock").is_empty());
    }
}
