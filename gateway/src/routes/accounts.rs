//! `POST /v1/auth/register`, `POST /v1/auth/login`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use holdfast_actors::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{self, Role};
use crate::backend::Account;
use crate::extract::ApiJson;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    pub name: String,
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

pub fn account_json(account: &Account) -> Value {
    json!({"id": account.id, "email": account.email, "name": account.name, "role": account.role.as_str()})
}

pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let email = parse_email(&req.email)?;
    let name = parse_name(&req.name)?;
    auth::check_password(&req.password, &email).map_err(|e| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak-password",
            "Weak password",
            e.to_string(),
        )
    })?;
    let password_hash = tokio::task::spawn_blocking(move || auth::hash_password(&req.password))
        .await
        .map_err(|_| Problem::internal())?
        .map_err(|_| Problem::internal())?;
    let account = Account {
        id: UserId::generate(),
        email,
        name,
        role: Role::Customer,
    };
    state
        .backend()
        .create_account(&account, &password_hash)
        .await?;
    tracing::info!(user = %account.id, "account registered");
    Ok((StatusCode::CREATED, Json(account_json(&account))))
}

/// A valid Argon2id hash of a random password: verifying unknown emails against it makes a
/// miss take as long as a wrong password, so timing does not reveal which emails exist.
fn dummy_hash() -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| auth::hash_password(&uuid::Uuid::new_v4().to_string()).unwrap_or_default())
        .clone()
}

pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<Value>, Problem> {
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
    let stored = credentials.as_ref().map(|c| c.password_hash.clone());
    let password = req.password;
    let matches = tokio::task::spawn_blocking(move || {
        auth::verify_password(&password, &stored.unwrap_or_else(dummy_hash))
    })
    .await
    .map_err(|_| Problem::internal())?;
    let account = match credentials {
        Some(c) if matches => c.account,
        _ => return Err(invalid()),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = state
        .tokens()
        .issue(account.id, account.role, now)
        .map_err(|_| Problem::internal())?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.tokens().access_ttl_secs,
    })))
}
