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
    #[error("password is one of the 10,000 most common passwords; choose another")]
    Common,
    #[error("password must not contain the part of the email before '@'")]
    ContainsEmailName,
}

impl From<WeakPassword> for Problem {
    fn from(e: WeakPassword) -> Self {
        Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "weak-password",
            "Weak password",
            e.to_string(),
        )
    }
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
    // Local parts shorter than this occur inside too many good passwords to refuse them.
    const EMAIL_NAME_LEN_MIN: usize = 3;
    let email_name = email.split('@').next().unwrap_or("").to_lowercase();
    if email_name.chars().count() >= EMAIL_NAME_LEN_MIN
        && password.to_lowercase().contains(&email_name)
    {
        return Err(WeakPassword::ContainsEmailName);
    }
    let mut chars = password.chars();
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(WeakPassword::Repeated);
    }
    if crate::passwords::is_common(password) {
        return Err(WeakPassword::Common);
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

/// The `iss` of every access token.
pub const ISSUER: &str = "holdfast";
/// The `aud` of every access token: the API, not any other service sharing the secret.
pub const AUDIENCE: &str = "holdfast-api";
/// The `typ` header of access tokens (RFC 9068), so no other JWT passes for one.
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Seconds of clock difference tolerated between nodes on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 5;

/// Claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub role: Role,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The login (refresh-token family) this token came from; logout revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
}

/// Why an access token is refused. The text is for people; it never names a library's errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token was good but its time is up: refresh it.
    #[error("the access token expired; refresh it or log in again")]
    Expired,
    #[error("access token rejected: {0}")]
    Invalid(&'static str),
}

impl From<TokenError> for Problem {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => Problem::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "token-expired",
                "Token expired",
                e.to_string(),
            ),
            TokenError::Invalid(_) => Problem::unauthorized(e.to_string()),
        }
    }
}

/// A signing secret and the key id (`kid`) tokens signed with it carry: the first 16 hex
/// digits of a SHA-256 over the secret, so rotation needs no second setting.
struct Key {
    id: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &[u8]) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::new()
            .chain_update(b"holdfast access token key id\0")
            .chain_update(secret)
            .finalize();
        Self {
            id: digest[..8].iter().map(|b| format!("{b:02x}")).collect(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// Signs and checks access tokens: HS256 only, `typ: at+jwt`, our `iss` and `aud`, `nbf`,
/// `iat` not in the future, a lifetime no longer than this node issues, and a `kid` naming
/// the current key or, during a rotation, the previous one (RFC 8725).
#[derive(Clone)]
pub struct TokenKeys {
    keys: std::sync::Arc<Vec<Key>>,
    /// The waiting room's admission tokens, from the same secrets under their own label.
    admissions: crate::admission::AdmissionKeys,
    validation: Validation,
    pub access_ttl_secs: u64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .field("access_ttl_secs", &self.access_ttl_secs)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn from_secret(secret: &[u8], access_ttl_secs: u64) -> Self {
        Self::with_previous(secret, None, access_ttl_secs)
    }

    /// Keys that sign with `secret` and still accept tokens signed with `previous` (rotation:
    /// set the new secret, keep the old one as previous for one access-token lifetime).
    pub fn with_previous(secret: &[u8], previous: Option<&[u8]>, access_ttl_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "sub", "iss", "aud"]);
        let keys = std::iter::once(secret)
            .chain(previous)
            .map(Key::new)
            .collect();
        Self {
            keys: std::sync::Arc::new(keys),
            admissions: crate::admission::AdmissionKeys::new(
                std::iter::once(secret).chain(previous),
            ),
            validation,
            access_ttl_secs,
        }
    }

    /// The keys of the waiting room's admission tokens.
    pub fn admissions(&self) -> &crate::admission::AdmissionKeys {
        &self.admissions
    }

    /// The id of the key new tokens are signed with.
    pub fn key_id(&self) -> &str {
        &self.keys[0].id
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
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: user.to_string(),
            role,
            iat: now_secs,
            nbf: now_secs,
            exp: now_secs
                .saturating_add(i64::try_from(self.access_ttl_secs).unwrap_or(i64::MAX / 2)),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            fam: family.map(str::to_owned),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(self.keys[0].id.clone());
        jsonwebtoken::encode(&header, &claims, &self.keys[0].encoding)
    }

    /// The claims of a valid access token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let kid = check_header(token)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == kid)
            .ok_or(TokenError::Invalid(
                "signed with a key this server does not know",
            ))?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.validation)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                TokenError::Invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => return TokenError::Expired,
                    ErrorKind::ImmatureSignature => "not valid yet (nbf)",
                    ErrorKind::InvalidIssuer => "issued by someone else (iss)",
                    ErrorKind::InvalidAudience => "issued for another service (aud)",
                    ErrorKind::InvalidSignature => "bad signature",
                    ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                    ErrorKind::InvalidAlgorithm => "algorithm is not HS256",
                    _ => "malformed token",
                })
            })?
            .claims;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leeway = i64::try_from(LEEWAY_SECS).unwrap_or(0);
        if claims.iat > now + leeway {
            return Err(TokenError::Invalid("issued in the future (iat)"));
        }
        let lifetime_max = i64::try_from(self.access_ttl_secs).unwrap_or(i64::MAX / 2) + leeway;
        if claims.exp.saturating_sub(claims.iat) > lifetime_max || claims.nbf < claims.iat - leeway
        {
            return Err(TokenError::Invalid(
                "lifetime longer than this server issues",
            ));
        }
        Ok(claims)
    }
}

/// Checks the JOSE header as JSON (so unknown members such as `crit` are seen) and returns
/// its `kid`: only `alg: HS256`, `typ: at+jwt` and `kid` are allowed.
fn check_header(token: &str) -> Result<String, TokenError> {
    use base64::Engine as _;
    let malformed = TokenError::Invalid("malformed token");
    let encoded = token.split('.').next().ok_or(malformed.clone())?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| malformed.clone())?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| malformed)?;
    if header
        .keys()
        .any(|k| !matches!(k.as_str(), "alg" | "typ" | "kid"))
    {
        return Err(TokenError::Invalid(
            "header has members this server does not understand",
        ));
    }
    if header.get("alg").and_then(|v| v.as_str()) != Some("HS256") {
        return Err(TokenError::Invalid("algorithm is not HS256"));
    }
    let typ = header.get("typ").and_then(|v| v.as_str());
    if !typ.is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)) {
        return Err(TokenError::Invalid("not an access token (typ)"));
    }
    header
        .get("kid")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or(TokenError::Invalid("no key id (kid)"))
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

impl AuthUser {
    /// The caller of a request: a valid access token whose login was not revoked.
    pub async fn from_parts(parts: &Parts, state: &AppState) -> Result<Self, Problem> {
        let token = bearer(parts).ok_or_else(|| {
            Problem::unauthorized("send an access token: Authorization: Bearer <token>")
        })?;
        let claims = state.tokens().verify(token)?;
        let id = claims
            .sub
            .parse()
            .map_err(|_| Problem::unauthorized("access token names no user"))?;
        if state
            .backend()
            .is_access_revoked(&claims.jti, claims.fam.as_deref())
            .await
        {
            return Err(Problem::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "token-revoked",
                "Token revoked",
                "this login was logged out or revoked; log in again",
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

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Self::from_parts(parts, state).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
        for common in ["password1", "12345678", "Password1", "iloveyou"] {
            assert_eq!(
                check_password(common, "a@b.c"),
                Err(WeakPassword::Common),
                "{common}"
            );
        }
        assert_eq!(
            check_password("xx-Minh.Anh-2026", "minh.anh@example.com"),
            Err(WeakPassword::ContainsEmailName)
        );
        assert_eq!(
            check_password("an orange bicycle", "an@example.com"),
            Ok(()),
            "two-letter names are too short to refuse"
        );
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// A token with `header` and `claims` signed by `secret`, however wrong they are.
    fn forge(header: serde_json::Value, claims: serde_json::Value, secret: &[u8]) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let signing_input = format!("{}.{}", b64(&header), b64(&claims));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
        mac.update(signing_input.as_bytes());
        let signature =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_round_trip_and_forgeries_fail() {
        let keys = TokenKeys::from_secret(SECRET, 900);
        let user = UserId::generate();
        let token = keys.issue(user, Role::Organizer, now()).expect("issue");
        let claims = keys.verify(&token).expect("valid");
        assert_eq!(claims.sub, user.to_string());
        assert_eq!(claims.role, Role::Organizer);
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            (ISSUER, AUDIENCE)
        );
        let other = TokenKeys::from_secret(b"another secret, 32 bytes long!!!", 900);
        assert!(
            other.verify(&token).is_err(),
            "a token signed with another key is refused"
        );
        let expired = keys
            .issue(user, Role::Customer, now() - 3600)
            .expect("issue");
        assert_eq!(keys.verify(&expired).unwrap_err(), TokenError::Expired);
    }

    #[test]
    fn claims_and_headers_are_checked_as_rfc_8725_asks() {
        let keys = TokenKeys::from_secret(SECRET, 900);
        let kid = keys.key_id().to_owned();
        let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
        let now = now();
        let good = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": UserId::generate().to_string(),
            "role": "customer", "iat": now, "nbf": now, "exp": now + 900, "jti": "j"});
        assert!(
            keys.verify(&forge(header.clone(), good.clone(), SECRET))
                .is_ok()
        );
        let with = |key: &str, value: serde_json::Value| {
            let mut claims = good.clone();
            claims[key] = value;
            forge(header.clone(), claims, SECRET)
        };
        let refused = [
            ("nbf an hour ahead", with("nbf", json!(now + 3600))),
            ("iat in the future", with("iat", json!(now + 3600))),
            ("exp in 9999", with("exp", json!(253_402_300_799_i64))),
            ("iss=evil", with("iss", json!("evil"))),
            ("another audience", with("aud", json!("reports"))),
        ];
        for (what, token) in &refused {
            let err = keys.verify(token).expect_err(what);
            assert!(matches!(err, TokenError::Invalid(_)), "{what}: {err:?}");
        }
        let mut no_nbf = good.clone();
        no_nbf.as_object_mut().unwrap().remove("nbf");
        assert!(
            keys.verify(&forge(header.clone(), no_nbf, SECRET)).is_err(),
            "nbf required"
        );
        let headers = [
            (
                "crit",
                json!({"alg": "HS256", "typ": "at+jwt", "kid": kid, "crit": ["exp"], "exp": 1}),
            ),
            ("typ JWT", json!({"alg": "HS256", "typ": "JWT", "kid": kid})),
            ("no typ", json!({"alg": "HS256", "kid": kid})),
            (
                "alg none",
                json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
            ),
            (
                "HS512",
                json!({"alg": "HS512", "typ": "at+jwt", "kid": kid}),
            ),
            (
                "unknown kid",
                json!({"alg": "HS256", "typ": "at+jwt", "kid": "k9"}),
            ),
        ];
        for (what, header) in headers {
            let err = keys
                .verify(&forge(header, good.clone(), SECRET))
                .expect_err(what);
            let text = err.to_string();
            assert!(
                !text.contains("Error") && !text.contains("line"),
                "{what}: {text}"
            );
        }
        assert_eq!(
            keys.verify("not a token").unwrap_err(),
            TokenError::Invalid("malformed token")
        );
    }

    #[test]
    fn two_keys_during_a_rotation() {
        let old = TokenKeys::from_secret(SECRET, 900);
        let rotated =
            TokenKeys::with_previous(b"the new secret, also 32 bytes!!!", Some(SECRET), 900);
        assert_ne!(old.key_id(), rotated.key_id());
        let user = UserId::generate();
        let before = old.issue(user, Role::Customer, now()).expect("issue");
        let after = rotated.issue(user, Role::Customer, now()).expect("issue");
        assert!(
            rotated.verify(&before).is_ok(),
            "tokens of the previous key still work"
        );
        assert!(rotated.verify(&after).is_ok());
        assert!(
            old.verify(&after).is_err(),
            "a node without the new key refuses its tokens"
        );
    }
}
