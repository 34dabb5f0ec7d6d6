//! Password hashing under a crowd: Argon2id on a bounded number of blocking threads, each with
//! its own reused working memory, and a refused list of the most common passwords.
//!
//! Argon2id with the default parameters fills 19 MiB per hash. Hashing every login at once
//! (thousands at a sale's opening) took a node to gigabytes, and glibc's arenas kept the memory
//! after the storm. Here at most `concurrency` hashes run at a time, each in one of
//! `concurrency` memory areas allocated once and reused, so memory is bounded by
//! `concurrency × 19 MiB` whatever the crowd; a caller that cannot get a turn within
//! `wait_ms` is told to come back (`overloaded`, 503 with `Retry-After`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

/// Settings of the password hasher.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Hashes computed at once; 0 means one per CPU core, at most [`CONCURRENCY_DEFAULT_MAX`]
    /// (each keeps 19 MiB of working memory for the life of the process).
    pub concurrency: usize,
    /// Longest wait for a turn before the caller is answered 503 `overloaded`.
    pub wait_ms: u64,
    /// Callers waiting for a turn at most; more are answered 503 at once.
    pub waiting_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            concurrency: 0,
            wait_ms: 2_000,
            waiting_max: 512,
        }
    }
}

/// The default concurrency's ceiling, whatever the cores: 4 × 19 MiB stays resident.
pub const CONCURRENCY_DEFAULT_MAX: usize = 4;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every hashing turn is taken and the wait ran out (or too many wait already).
    #[error("too many password checks at once; retry in a moment")]
    Overloaded,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl From<Error> for crate::problem::Problem {
    fn from(e: Error) -> Self {
        match e {
            Error::Overloaded => Self::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "Overloaded",
                "too many logins at once; retry after the delay in Retry-After",
            )
            .retry_after(1),
            Error::Hash(why) => {
                tracing::error!(%why, "password hashing failed");
                Self::internal()
            }
        }
    }
}

/// The bounded hasher; cheap to clone.
#[derive(Clone, Debug)]
pub struct Hasher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    turns: Arc<Semaphore>,
    waiting: AtomicUsize,
    wait: Duration,
    waiting_max: usize,
    /// Working memory of finished hashes, handed to the next one.
    memory: Mutex<Vec<Vec<Block>>>,
    /// The hash that unknown emails are checked against, so they take as long as a wrong
    /// password and timing does not tell which emails exist.
    dummy: String,
}

/// Parameters of new hashes (the argon2 crate's recommended ones: m = 19 MiB, t = 2, p = 1).
fn params() -> Params {
    Params::default()
}

impl Hasher {
    pub fn new(options: &Options) -> Self {
        let concurrency = match options.concurrency {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(CONCURRENCY_DEFAULT_MAX),
            n => n,
        };
        let dummy = hash_with(&mut Vec::new(), uuid::Uuid::new_v4().to_string().as_bytes())
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                turns: Arc::new(Semaphore::new(concurrency)),
                waiting: AtomicUsize::new(0),
                wait: Duration::from_millis(options.wait_ms),
                waiting_max: options.waiting_max,
                memory: Mutex::new(Vec::with_capacity(concurrency)),
                dummy,
            }),
        }
    }

    /// A PHC string (`$argon2id$…`) of `password`.
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        self.run(move |memory| hash_with(memory, password.as_bytes()))
            .await?
    }

    /// Whether `password` matches `stored` (a PHC string); `None` checks against a dummy hash
    /// and answers false, taking as long as a real check.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, Error> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.inner.dummy.clone());
        let matches = self
            .run(move |memory| verify_with(memory, password.as_bytes(), &stored))
            .await?;
        Ok(known && matches)
    }

    /// Runs `work` on a blocking thread with a turn and a working memory.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let inner = &self.inner;
        if inner.waiting.fetch_add(1, Ordering::AcqRel) >= inner.waiting_max {
            inner.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("holdfast_password_hash_refused_total").increment(1);
            return Err(Error::Overloaded);
        }
        let turn = tokio::time::timeout(inner.wait, Arc::clone(&inner.turns).acquire_owned()).await;
        inner.waiting.fetch_sub(1, Ordering::AcqRel);
        let Ok(Ok(turn)) = turn else {
            metrics::counter!("holdfast_password_hash_refused_total").increment(1);
            return Err(Error::Overloaded);
        };
        // The turn and the memory go with the work: a caller that gives up (a client gone, a
        // request timed out) cannot free its turn while the hash still runs.
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let pool = || {
                inner
                    .memory
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            };
            let mut memory = pool().pop().unwrap_or_default();
            let out = work(&mut memory);
            pool().push(memory);
            out
        })
        .await
        .map_err(|e| Error::Hash(e.to_string()))
    }
}

/// `memory` grown (once) to what `params` need.
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    &mut memory[..params.block_count()]
}

fn hash_with(memory: &mut Vec<Block>, password: &[u8]) -> Result<String, Error> {
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| Error::Hash(e.to_string()))?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password, salt_bytes, &mut out, blocks(memory, &params))
        .map_err(|e| Error::Hash(e.to_string()))?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: (&params)
            .try_into()
            .map_err(|e: argon2::password_hash::Error| Error::Hash(e.to_string()))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| Error::Hash(e.to_string()))?),
    };
    Ok(hash.to_string())
}

/// Recomputes the hash of `password` with the parameters and salt of `stored` and compares
/// the outputs in constant time.
fn verify_with(memory: &mut Vec<Block>, password: &[u8], stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = parsed
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or_default();
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    let computed = Argon2::new(algorithm, version, params.clone()).hash_password_into_with_memory(
        password,
        salt_bytes,
        &mut out,
        blocks(memory, &params),
    );
    computed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
}

/// The 10,000 most common passwords, lower-case, most common first: the head of zxcvbn's
/// `passwords` frequency list (MIT; `common-passwords.LICENSE`).
const COMMON: &str = include_str!("common-passwords.txt");

/// Whether `password` (compared lower-case) is one of the most common passwords.
pub fn is_common(password: &str) -> bool {
    static SET: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    let set = SET.get_or_init(|| COMMON.lines().filter(|l| !l.is_empty()).collect());
    set.contains(password.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_with_reused_memory_and_against_the_plain_crate() {
        let hasher = Hasher::new(&Options {
            concurrency: 1,
            ..Options::default()
        });
        let hash = hasher.hash("correct horse".to_owned()).await.expect("hash");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        for _ in 0..2 {
            assert!(
                hasher
                    .verify("correct horse".into(), Some(hash.clone()))
                    .await
                    .unwrap()
            );
            assert!(
                !hasher
                    .verify("correct horsf".into(), Some(hash.clone()))
                    .await
                    .unwrap()
            );
        }
        assert!(
            !hasher.verify("x".into(), None).await.unwrap(),
            "unknown emails never match"
        );
        assert!(
            !hasher
                .verify("x".into(), Some("not phc".into()))
                .await
                .unwrap()
        );
        // Hashes made by the crate's own API (the CLI, older rows) verify here, and ours there.
        let crate_hash = crate::auth::hash_password("battery staple").expect("hash");
        assert!(
            hasher
                .verify("battery staple".into(), Some(crate_hash))
                .await
                .unwrap()
        );
        assert!(crate::auth::verify_password("correct horse", &hash));
        assert_eq!(
            hasher.inner.memory.lock().unwrap().len(),
            1,
            "one memory area, reused"
        );
    }

    #[tokio::test]
    async fn a_crowd_beyond_the_bound_is_told_to_come_back() {
        let hasher = Hasher::new(&Options {
            concurrency: 1,
            wait_ms: 1,
            waiting_max: 1,
        });
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.verify("guess".into(), None).await })
            })
            .collect();
        let mut results = Vec::new();
        for attempt in attempts {
            results.push(attempt.await.expect("task"));
        }
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(Error::Overloaded)))
            .count();
        assert!(refused >= 1, "{results:?}");
        assert!(
            results.iter().any(|r| matches!(r, Ok(false))),
            "{results:?}"
        );
    }

    #[test]
    fn the_most_common_passwords_are_known() {
        assert_eq!(COMMON.lines().count(), 10_000);
        for common in ["password1", "12345678", "PASSWORD1", "qwertyuiop"] {
            assert!(is_common(common), "{common}");
        }
        assert!(!is_common("tr0ub4dor&3 horse"));
    }
}
