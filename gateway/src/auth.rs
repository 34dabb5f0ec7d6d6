//! Accounts at the edge: password hashing, JWT access tokens and the [`AuthUser`] extractor.

use std::str::FromStr;

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use holdfast_actors::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::problem::Problem;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Organizer,
    Staff,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Organizer => "organizer",
            Self::Staff => "staff",
            Self::Admin => "admin",
        }
    }
}

/// Why a string is not a [`Role`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role must be one of customer, organizer, staff, admin")]
pub struct InvalidRole;

impl FromStr for Role {
    type Err = InvalidRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "customer" => Ok(Self::Customer),
            "organizer" => Ok(Self::Organizer),
            "staff" => Ok(Self::Staff),
            "admin" => Ok(Self::Admin),
            _ => Err(InvalidRole),
        }
    }
}

/// Why a password cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("password must be at least {PASSWORD_LEN_MIN} characters")]
    TooShort,
    #[error("password must be at most {PASSWORD_LEN_MAX} characters")]
    TooLong,
    #[error("password must not be the email address")]
    IsEmail,
    #[error("password must not be a single repeated character")]
    Repeated,
}

pub const PASSWORD_LEN_MIN: usize = 8;
pub const PASSWORD_LEN_MAX: usize = 128;

pub fn check_password(password: &str, email: &str) -> Result<(), WeakPassword> {
    let len = password.chars().count();
    if len < PASSWORD_LEN_MIN {
        return Err(WeakPassword::TooShort);
    }
    if len > PASSWORD_LEN_MAX {
        return Err(WeakPassword::TooLong);
    }
    if password.eq_ignore_ascii_case(email) {
        return Err(WeakPassword::IsEmail);
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(WeakPassword::Repeated);
    }
    Ok(())
}

/// Argon2id with the crate's recommended parameters. CPU-heavy: call from `spawn_blocking`.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Constant-time verification against a stored PHC string. CPU-heavy: call from `spawn_blocking`.
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The login (refresh-token family) this token came from; logout revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
}

/// Signs and checks access tokens (HS256).
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl_secs: u64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("access_ttl_secs", &self.access_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn from_secret(secret: &[u8], access_ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl_secs,
        }
    }

    pub fn issue(
        &self,
        user: UserId,
        role: Role,
        now_secs: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.issue_in_family(user, role, now_secs, None)
    }

    /// An access token of the login `family` (its refresh-token family).
    pub fn issue_in_family(
        &self,
        user: UserId,
        role: Role,
        now_secs: i64,
        family: Option<&str>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: user.to_string(),
            role,
            iat: now_secs,
            exp: now_secs + i64::try_from(self.access_ttl_secs).unwrap_or(i64::MAX / 2),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            fam: family.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map(|t| t.claims)
    }
}

/// The caller, from a valid `Authorization: Bearer` access token.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: UserId,
    pub role: Role,
    /// The token's id and expiry (seconds), for logout.
    pub jti: String,
    pub exp: i64,
    pub family: Option<String>,
}

impl AuthUser {
    /// Refuses callers whose role is not in `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), Problem> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(Problem::forbidden(format!(
                "this needs the role {}",
                names.join(" or ")
            )))
        }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| {
            Problem::unauthorized("send an access token: Authorization: Bearer <token>")
        })?;
        let claims = state
            .tokens()
            .verify(token)
            .map_err(|e| Problem::unauthorized(format!("access token rejected: {e}")))?;
        let id = claims
            .sub
            .parse()
            .map_err(|_| Problem::unauthorized("access token names no user"))?;
        if state.backend().is_access_revoked(&claims.jti).await {
            return Err(Problem::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "token-revoked",
                "Token revoked",
                "this access token was logged out; log in again",
            ));
        }
        Ok(Self {
            id,
            role: claims.role,
            jti: claims.jti,
            exp: claims.exp,
            family: claims.fam,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").expect("hash");
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsf", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn weak_passwords_are_refused() {
        assert_eq!(
            check_password("short", "a@b.c"),
            Err(WeakPassword::TooShort)
        );
        assert_eq!(
            check_password("aaaaaaaaaa", "a@b.c"),
            Err(WeakPassword::Repeated)
        );
        assert_eq!(
            check_password("Me@Example.com", "me@example.com"),
            Err(WeakPassword::IsEmail)
        );
        assert_eq!(
            check_password(&"x1".repeat(65), "a@b.c"),
            Err(WeakPassword::TooLong)
        );
        assert_eq!(check_password("tr0ub4dor&3", "a@b.c"), Ok(()));
    }

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let keys = TokenKeys::from_secret(b"0123456789abcdef0123456789abcdef", 900);
        let user = UserId::generate();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let token = keys.issue(user, Role::Organizer, now).expect("issue");
        let claims = keys.verify(&token).expect("valid");
        assert_eq!(claims.sub, user.to_string());
        assert_eq!(claims.role, Role::Organizer);
        let other = TokenKeys::from_secret(b"another secret, 32 bytes long!!!", 900);
        assert!(
            other.verify(&token).is_err(),
            "a token signed with another key is refused"
        );
        let expired = keys.issue(user, Role::Customer, now - 3600).expect("issue");
        assert!(
            keys.verify(&expired).is_err(),
            "an expired token is refused"
        );
    }
}
