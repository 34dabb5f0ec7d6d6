//! API.md "Waiting room": joining an event's queue and reading one's place. The queue lives
//! in the event's actor; these routes ask it and, once the buyer is admitted, sign the
//! admission token that holds on the event need (`crate::admission`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use holdfast_actors::EventId;
use holdfast_actors::queue::{QueueRead, QueueStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::events::parse_event_id;
use super::rfc3339_millis;
use crate::AppState;
use crate::auth::AuthUser;
use crate::backend::CaptchaVerdict;
use crate::problem::Problem;
use crate::rate_limit::{ClientIp, Limit};

/// The longest CAPTCHA token taken (Turnstile's are up to 2048 characters).
const CAPTCHA_TOKEN_MAX: usize = 4096;

/// The body of a queue join, all optional (an empty body is a join).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token of a solved CAPTCHA, when the node checks one at joins.
    #[serde(default)]
    pub captcha_token: Option<String>,
}

/// What a buyer reads: status, position and wait while waiting; the admission token and its
/// expiry once admitted.
fn read_json(state: &AppState, event: EventId, user: &AuthUser, read: &QueueRead) -> Value {
    let wait = read.estimated_wait_secs;
    match read.status {
        Some(QueueStatus::Waiting { position }) => json!({
            "status": "waiting", "position": position, "estimated_wait_secs": wait,
        }),
        Some(QueueStatus::SoldOut { position }) => json!({
            "status": "sold_out", "position": position, "estimated_wait_secs": null,
        }),
        Some(QueueStatus::Admitted { number, expires_at }) => {
            // Rounded up: the token never ends before the admission (the actor checks that).
            let secs = expires_at.as_millis().saturating_add(999).div_euclid(1000);
            let token = state
                .tokens()
                .admissions()
                .issue(event, user.id, number, secs);
            json!({
                "status": "admitted", "position": 0, "estimated_wait_secs": 0,
                "admission_token": token,
                "expires_at": rfc3339_millis(expires_at.as_millis()),
            })
        }
        Some(QueueStatus::Ended { .. }) => json!({
            "status": "expired", "position": null, "estimated_wait_secs": null,
        }),
        // Answered as 404 by the routes before it gets here.
        None => json!({"status": "not_joined"}),
    }
}

fn not_in_queue() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-in-queue",
        "Not in the waiting room",
        "you have not joined this event's waiting room: POST /v1/events/{id}/queue",
    )
}

/// `POST /v1/events/{id}/queue`: 201 on joining, 200 when already in the queue (the same
/// place, or the running admission).
pub async fn join(
    State(state): State<AppState>,
    user: AuthUser,
    client: ClientIp,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), Problem> {
    state
        .rate_limits()
        .check(Limit::QueueJoins, &user.id.to_string())
        .await?;
    let event = parse_event_id(&raw)?;
    let request: JoinRequest = if body.iter().all(u8::is_ascii_whitespace) {
        JoinRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Problem::invalid(format!("the body is not a queue join: {e}")))?
    };
    if request
        .captcha_token
        .as_ref()
        .is_some_and(|t| t.len() > CAPTCHA_TOKEN_MAX)
    {
        return Err(Problem::invalid(format!(
            "captcha_token is longer than {CAPTCHA_TOKEN_MAX} bytes"
        )));
    }
    let backend = state.backend();
    // With a CAPTCHA, a buyer in the queue already is not asked again: read first. Without
    // one, the join alone says whether it joined (one call to the event's actor).
    if backend.captcha_required() {
        let before = backend.queue_read(event, user.id).await?;
        if matches!(
            before.status,
            Some(
                QueueStatus::Waiting { .. }
                    | QueueStatus::SoldOut { .. }
                    | QueueStatus::Admitted { .. }
            )
        ) {
            return Ok((
                StatusCode::OK,
                Json(read_json(&state, event, &user, &before)),
            ));
        }
        match backend
            .verify_captcha(request.captcha_token.as_deref(), client.0)
            .await?
        {
            CaptchaVerdict::NotRequired | CaptchaVerdict::Passed => {}
            CaptchaVerdict::Missing => {
                return Err(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "captcha-required",
                    "CAPTCHA required",
                    "joining this waiting room needs a solved CAPTCHA: send its token as \
                     captcha_token",
                ));
            }
            CaptchaVerdict::Failed(codes) => {
                tracing::info!(%event, user = %user.id, %codes, "a queue join failed its CAPTCHA");
                return Err(Problem::new(
                    StatusCode::FORBIDDEN,
                    "captcha-failed",
                    "CAPTCHA failed",
                    "the CAPTCHA answer was not accepted; solve a new one",
                ));
            }
        }
    }
    let (read, joined) = backend.queue_join(event, user.id).await?;
    let status = if joined {
        tracing::info!(%event, user = %user.id, "joined the waiting room");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(read_json(&state, event, &user, &read))))
}

/// `GET /v1/events/{id}/queue/me`: the caller's place; writes nothing.
pub async fn me(
    State(state): State<AppState>,
    user: AuthUser,
    Path(raw): Path<String>,
) -> Result<Json<Value>, Problem> {
    let event = parse_event_id(&raw)?;
    let read = state.backend().queue_read(event, user.id).await?;
    if read.status.is_none() {
        return Err(not_in_queue());
    }
    Ok(Json(read_json(&state, event, &user, &read)))
}
