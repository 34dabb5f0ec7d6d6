//! `POST /v1/organizer/staff`: an organizer adds the door staff who check tickets in at its
//! events (an admin adds them for a named organizer).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use holdfast_actors::UserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::accounts::{account_json, new_account};
use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::extract::ApiJson;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaffRequest {
    pub email: String,
    pub password: String,
    pub name: String,
    /// The organizer the staff member works for: the caller itself when omitted (an admin
    /// must name one).
    #[serde(default)]
    pub organizer_id: Option<String>,
}

/// The organizer the new staff account works for, as the caller may choose it.
async fn organizer_of(
    state: &AppState,
    user: &AuthUser,
    named: Option<&str>,
) -> Result<UserId, Problem> {
    let named = named
        .map(|raw| {
            raw.trim()
                .parse::<uuid::Uuid>()
                .map(UserId)
                .map_err(|_| Problem::invalid(format!("organizer_id {raw:?} is not a user id")))
        })
        .transpose()?;
    match (user.role, named) {
        (Role::Organizer, None) => Ok(user.id),
        (Role::Organizer, Some(id)) if id == user.id => Ok(id),
        (Role::Organizer, Some(_)) => Err(Problem::forbidden(
            "an organizer adds staff for itself only",
        )),
        (Role::Admin, Some(id)) => match state.backend().account(id).await? {
            Some(a) if a.role == Role::Organizer => Ok(id),
            _ => Err(Problem::invalid(
                "organizer_id must name an organizer account",
            )),
        },
        (Role::Admin, None) => Err(Problem::invalid(
            "an admin names the organizer the staff member works for (organizer_id)",
        )),
        (Role::Customer | Role::Staff, _) => {
            Err(Problem::forbidden("only organizers and admins add staff"))
        }
    }
}

pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<StaffRequest>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    user.require(&[Role::Organizer, Role::Admin])?;
    let organizer = organizer_of(&state, &user, req.organizer_id.as_deref()).await?;
    let (account, password_hash) = new_account(
        &state,
        &req.email,
        &req.name,
        req.password,
        Role::Staff,
        None,
    )
    .await?;
    state
        .backend()
        .create_staff(&account, &password_hash, organizer)
        .await?;
    tracing::info!(user = %account.id, organizer = %organizer, "staff account added");
    let mut body = account_json(&account);
    body["organizer_id"] = json!(organizer);
    Ok((StatusCode::CREATED, Json(body)))
}
