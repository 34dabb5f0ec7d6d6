//! Rotating refresh tokens and revoked access tokens. Refresh tokens are stored as hashes and
//! belong to a family (one login); using one twice revokes its whole family.

use sqlx::Row;
use uuid::Uuid;

use crate::{Error, Store, uuid_text};

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was valid: it is now used and its successor stored.
    Rotated { user_id: Uuid, family: String },
    /// No such token, or it expired or was revoked.
    Invalid,
    /// The token had been used already: a thief or a replay. The family is now revoked.
    Reused { family: String },
}

impl Store {
    pub async fn refresh_insert(
        &self,
        token_hash: &[u8],
        family: &str,
        user_id: Uuid,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(family)
        .bind(uuid_text(user_id))
        .bind(expires_at_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses `old_hash` and stores `new_hash` as its successor in one transaction.
    pub async fn refresh_rotate(
        &self,
        old_hash: &[u8],
        new_hash: &[u8],
        new_expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<Rotation, Error> {
        let mut tx = self.begin_write(crate::Writer::Tokens).await?;
        let lock = match self.backend() {
            crate::Backend::Postgres => " FOR UPDATE",
            crate::Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT family, user_id, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1{lock}"
        ))
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::Invalid);
        };
        let family: String = row.try_get("family")?;
        let user: String = row.try_get("user_id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let used_at: Option<i64> = row.try_get("used_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        if revoked_at.is_some() || expires_at <= now_ms {
            return Ok(Rotation::Invalid);
        }
        if used_at.is_some() {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL")
                .bind(&family)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Rotation::Reused { family });
        }
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
            .bind(old_hash)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new_hash)
        .bind(&family)
        .bind(&user)
        .bind(new_expires_at_ms)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let user_id = Uuid::parse_str(&user)
            .map_err(|_| Error::Corrupt(format!("refresh token user {user}")))?;
        Ok(Rotation::Rotated { user_id, family })
    }

    pub async fn refresh_revoke_family(&self, family: &str, now_ms: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL",
        )
        .bind(family)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Refuses the access token `jti` until it expires.
    pub async fn access_revoke(
        &self,
        jti: &str,
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO revoked_access_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at_ms)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Access tokens revoked at or after `since_ms` that have not expired by `now_ms`:
    /// `(jti, expires_at, revoked_at)`.
    pub async fn access_revoked_since(
        &self,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<(String, i64, i64)>, Error> {
        let rows = sqlx::query("SELECT jti, expires_at, revoked_at FROM revoked_access_tokens WHERE revoked_at >= $1 AND expires_at > $2")
            .bind(since_ms)
            .bind(now_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("jti")?,
                    r.try_get("expires_at")?,
                    r.try_get("revoked_at")?,
                ))
            })
            .collect()
    }

    /// Deletes expired refresh tokens and revocations; returns how many rows went.
    pub async fn tokens_purge(&self, now_ms: i64) -> Result<u64, Error> {
        let a = sqlx::query("DELETE FROM refresh_tokens WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        let b = sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(a.rows_affected() + b.rows_affected())
    }
}
