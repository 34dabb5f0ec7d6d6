//! `POST /v1/auth/register`, `POST /v1/auth/login`, `POST /v1/auth/refresh`,
//! `POST /v1/auth/logout`; the first three are rate-limited per client IP.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use holdfast_actors::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{self, AuthUser, Role};
use crate::backend::{Account, RefreshOutcome};
use crate::extract::ApiJson;
use crate::problem::Problem;
use crate::rate_limit::{ClientIp, Limit};
use sha2::Digest as _;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub name: String,
    /// Optional mobile number for SMS notifications, E.164 (`+84901234567`).
    #[serde(default)]
    pub phone: Option<String>,
    /// The language of the account's messages: `vi` (the default) or `en`.
    #[serde(default)]
    pub language: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

/// A syntactically plausible address, lower-cased; delivery proves the rest.
pub fn parse_email(email: &str) -> Result<String, Problem> {
    let email = email.trim();
    let ok = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        });
    if ok {
        Ok(email.to_lowercase())
    } else {
        Err(Problem::invalid("email is not a valid address"))
    }
}

pub fn parse_name(name: &str) -> Result<String, Problem> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Problem::invalid("name must be 1 to 100 characters"));
    }
    Ok(name.to_owned())
}

/// An E.164 number: `+`, then 8 to 15 digits, the first not 0 (spaces and dashes dropped).
pub fn parse_phone(phone: &str) -> Result<String, Problem> {
    let compact: String = phone
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or("");
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(compact)
    } else {
        Err(Problem::invalid(
            "phone must be an international number such as +84901234567",
        ))
    }
}

/// `vi` (the default) or `en`; a 422 otherwise.
pub fn parse_language(language: Option<&str>) -> Result<String, Problem> {
    match language {
        None => Ok("vi".to_owned()),
        Some(l @ ("vi" | "en")) => Ok(l.to_owned()),
        Some(_) => Err(Problem::invalid("language must be vi or en")),
    }
}

pub fn account_json(account: &Account) -> Value {
    let mut json = json!({"id": account.id, "email": account.email, "name": account.name, "role": account.role.as_str(), "language": account.language});
    if let Some(phone) = &account.phone {
        json["phone"] = json!(phone);
    }
    json
}

/// A new account from what a person typed: the email and name parsed, the password checked
/// and hashed (the bounded hasher: a burst answers 503 `overloaded`).
pub async fn new_account(
    state: &AppState,
    email: &str,
    name: &str,
    password: String,
    role: Role,
    phone: Option<String>,
) -> Result<(Account, String), Problem> {
    let email = parse_email(email)?;
    let name = parse_name(name)?;
    auth::check_password(&password, &email)?;
    let password_hash = state.passwords().hash(password).await?;
    let account = Account {
        id: UserId::generate(),
        email,
        name,
        role,
        phone,
        language: "vi".to_owned(),
    };
    Ok((account, password_hash))
}

pub async fn register(
    State(state): State<AppState>,
    client: ClientIp,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    state
        .rate_limits()
        .check(Limit::Register, &client.key())
        .await?;
    let phone = req.phone.as_deref().map(parse_phone).transpose()?;
    let language = parse_language(req.language.as_deref())?;
    let (mut account, password_hash) = new_account(
        &state,
        &req.email,
        &req.name,
        req.password,
        Role::Customer,
        phone,
    )
    .await?;
    account.language = language;
    state
        .backend()
        .create_account(&account, &password_hash)
        .await?;
    tracing::info!(user = %account.id, "account registered");
    Ok((StatusCode::CREATED, Json(account_json(&account))))
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<Value>, Problem> {
    // Before Argon2: a refused guess costs next to nothing.
    state
        .rate_limits()
        .check(Limit::Login, &client.key())
        .await?;
    let invalid = || {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-credentials",
            "Invalid credentials",
            "email or password is wrong",
        )
    };
    let email = req.email.trim().to_lowercase();
    let credentials = state.backend().credentials(&email).await?;
    // Unknown emails are checked against a dummy hash: a miss takes as long as a wrong
    // password, so timing does not tell which emails exist.
    let stored = credentials.as_ref().map(|c| c.password_hash.clone());
    let matches = state.passwords().verify(req.password, stored).await?;
    let account = match credentials {
        Some(c) if matches => c.account,
        _ => {
            // A wrong guess counts double: half as many guesses as logins per IP.
            state
                .rate_limits()
                .penalize(Limit::Login, &client.key())
                .await;
            return Err(invalid());
        }
    };
    let family = uuid::Uuid::new_v4().simple().to_string();
    let (refresh, refresh_hash) = new_refresh_token();
    state
        .backend()
        .issue_refresh(
            account.id,
            &family,
            &refresh_hash,
            refresh_expiry_ms(&state),
        )
        .await?;
    token_pair(&state, &account, &family, &refresh)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// A refresh token (64 hex digits of randomness) and the hash under which it is stored.
fn new_refresh_token() -> (String, Vec<u8>) {
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = refresh_hash(&token);
    (token, hash)
}

fn refresh_hash(token: &str) -> Vec<u8> {
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

fn refresh_expiry_ms(state: &AppState) -> i64 {
    let ttl_ms = i64::try_from(state.options().refresh_token_ttl_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX / 2);
    time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + ttl_ms
}

fn token_pair(
    state: &AppState,
    account: &Account,
    family: &str,
    refresh: &str,
) -> Result<Json<Value>, Problem> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = state
        .tokens()
        .issue_in_family(account.id, account.role, now, Some(family))
        .map_err(|_| Problem::internal())?;
    Ok(Json(json!({
        "access_token": token,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": state.tokens().access_ttl_secs,
    })))
}

/// `POST /v1/auth/refresh`: a new pair for a valid refresh token, which stops working; a
/// refresh token presented twice revokes every token of its login.
pub async fn refresh(
    State(state): State<AppState>,
    client: ClientIp,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Result<Json<Value>, Problem> {
    state
        .rate_limits()
        .check(Limit::Refresh, &client.key())
        .await?;
    let (refresh, new_hash) = new_refresh_token();
    let outcome = state
        .backend()
        .rotate_refresh(
            &refresh_hash(&req.refresh_token),
            &new_hash,
            refresh_expiry_ms(&state),
        )
        .await?;
    match outcome {
        RefreshOutcome::Rotated { account, family } => {
            token_pair(&state, &account, &family, &refresh)
        }
        RefreshOutcome::Invalid => Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "invalid-refresh-token",
            "Invalid refresh token",
            "the refresh token is unknown, expired or revoked; log in again",
        )),
        RefreshOutcome::Reused { family } => {
            tracing::warn!("refresh token reused: its login is revoked");
            state
                .backend()
                .revoke_login(&family, login_revoked_until_ms(&state))
                .await?;
            Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "refresh-token-reused",
                "Refresh token reused",
                "this refresh token was used before, so every token of this login is revoked; log in again",
            ))
        }
    }
}

/// When the last access token a login revoked now may have issued expires.
fn login_revoked_until_ms(state: &AppState) -> i64 {
    let ttl_ms = i64::try_from(state.tokens().access_ttl_secs.saturating_add(60))
        .unwrap_or(i64::MAX / 2000)
        .saturating_mul(1000);
    (time::OffsetDateTime::now_utc().unix_timestamp() * 1000).saturating_add(ttl_ms)
}

/// `POST /v1/auth/logout`: every access token of this login is refused from now on, on every
/// node within a second, and its refresh tokens stop working.
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode, Problem> {
    state
        .backend()
        .logout(
            &user.jti,
            user.exp.saturating_mul(1000),
            user.family.as_deref(),
        )
        .await?;
    if let Some(family) = &user.family {
        state
            .backend()
            .revoke_login(family, login_revoked_until_ms(&state))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
