//! A local stand-in for the Twilio Programmable Messaging API, so the notification service can
//! run, be tested and be demonstrated without a Twilio account.
//!
//! - `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` checks HTTP basic auth (401, error
//!   20003) and the account in the path (404, 20404), validates the form as Twilio does (`To`
//!   21604/21211, `From` or `MessagingServiceSid` 21603/21212/21701, `Body` 21602/21617) and
//!   answers 201 with a message resource (`sid` `SM…`, `status` `queued`, or `accepted` through
//!   a Messaging Service). Errors are Twilio's error resource `{code, message, more_info,
//!   status}`.
//! - `GET /messages` lists the accepted messages, oldest first, as JSON ([`SimMessage`]).
//! - `POST /fail-next?requests=N` makes the next N message requests fail with 500 (error
//!   20500), for retry paths; [`SmsSim::fail_next`] does the same in process.
//!
//! Nothing is delivered. The simulator reads the wall clock (`date_created`): it is a shell.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

use crate::sms::API_VERSION;

/// Accepted messages kept for `GET /messages`; the oldest are forgotten past this.
const MESSAGES_MAX: usize = 10_000;
/// Twilio's limit on `Body`, in characters.
const BODY_CHARS_MAX: usize = 1600;

/// The account the simulator serves.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The same as the sender's [`crate::SmsSettings::account_sid`].
    pub account_sid: String,
    pub auth_token: String,
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .finish()
    }
}

/// A message the simulator accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimMessage {
    pub sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
    pub num_segments: u32,
    /// RFC 2822, as Twilio writes dates.
    pub date_created: String,
}

/// The simulator: its [`router`](SmsSim::router) and, for tests in the same process, direct
/// access to its state. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct SmsSim {
    inner: Arc<Inner>,
}

struct Inner {
    config: SimConfig,
    messages: Mutex<VecDeque<SimMessage>>,
    fail_next: AtomicU32,
}

impl fmt::Debug for SmsSim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsSim")
            .field("config", &self.inner.config)
            .field("fail_next", &self.inner.fail_next.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The simulator's routes, with fresh state.
pub fn router(config: SimConfig) -> Router {
    SmsSim::new(config).router()
}

impl SmsSim {
    pub fn new(config: SimConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                messages: Mutex::new(VecDeque::new()),
                fail_next: AtomicU32::new(0),
            }),
        }
    }

    /// The routes, sharing this simulator's state.
    pub fn router(&self) -> Router {
        Router::new()
            .route(
                "/2010-04-01/Accounts/{account_sid}/Messages.json",
                post(create_message),
            )
            .route("/messages", get(list_messages))
            .route("/fail-next", post(fail_next))
            .with_state(self.clone())
    }

    /// The accepted messages, oldest first.
    pub fn messages(&self) -> Vec<SimMessage> {
        self.inner
            .messages
            .lock()
            .expect("messages lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Makes the next `requests` message requests fail with 500 (replacing any count left).
    pub fn fail_next(&self, requests: u32) {
        self.inner.fail_next.store(requests, Ordering::SeqCst);
    }

    /// Takes one injected failure, if any is left.
    fn take_failure(&self) -> bool {
        self.inner
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some(credentials) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
            })
        else {
            return false;
        };
        let config = &self.inner.config;
        credentials == format!("{}:{}", config.account_sid, config.auth_token).as_bytes()
    }

    fn store(&self, message: SimMessage) {
        let mut messages = self.inner.messages.lock().expect("messages lock");
        if messages.len() == MESSAGES_MAX {
            messages.pop_front();
        }
        messages.push_back(message);
    }
}

/// Twilio's error resource.
fn twilio_error(status: StatusCode, code: u32, message: impl Into<String>) -> Response {
    let body = json!({
        "code": code,
        "message": message.into(),
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status.as_u16(),
    });
    (status, Json(body)).into_response()
}

async fn create_message(
    State(sim): State<SmsSim>,
    Path(account_sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if sim.take_failure() {
        return twilio_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        );
    }
    if !sim.authenticated(&headers) {
        let mut response = twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
        return response;
    }
    if account_sid != sim.inner.config.account_sid {
        return twilio_error(
            StatusCode::NOT_FOUND,
            20404,
            format!(
                "The requested resource /{API_VERSION}/Accounts/{account_sid}/Messages.json was not found"
            ),
        );
    }
    let field = |name: &str| {
        form_urlencoded::parse(&body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.is_empty())
    };
    let bad = |code: u32, message: String| twilio_error(StatusCode::BAD_REQUEST, code, message);
    let Some(to) = field("To") else {
        return bad(21604, "A 'To' phone number is required.".to_owned());
    };
    let from = field("From");
    let service = field("MessagingServiceSid");
    if from.is_none() && service.is_none() {
        return bad(21603, "A 'From' phone number is required.".to_owned());
    }
    let Some(text) = field("Body") else {
        return bad(21602, "Message body is required.".to_owned());
    };
    if !is_e164(&to) {
        return bad(21211, format!("Invalid 'To' Phone Number: {to}"));
    }
    if let Some(from) = &from
        && !is_e164(from)
        && !is_alphanumeric_sender(from)
    {
        return bad(21212, format!("Invalid From Number (caller ID): {from}"));
    }
    if let Some(service) = &service
        && !is_sid("MG", service)
    {
        return bad(
            21701,
            format!("The Messaging Service Sid {service} is invalid."),
        );
    }
    if text.chars().count() > BODY_CHARS_MAX {
        return bad(
            21617,
            format!("The concatenated message body exceeds the {BODY_CHARS_MAX} character limit."),
        );
    }

    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    let now = OffsetDateTime::now_utc()
        .format(&Rfc2822)
        .expect("the current time formats as RFC 2822");
    let message = SimMessage {
        sid: sid.clone(),
        to,
        from,
        messaging_service_sid: service,
        num_segments: segments(&text),
        body: text,
        date_created: now.clone(),
    };
    // Through a Messaging Service Twilio picks the sender later, so the status is `accepted`.
    let status = if message.messaging_service_sid.is_some() {
        "accepted"
    } else {
        "queued"
    };
    let uri = format!("/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}");
    let resource = json!({
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": message.body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": message.from,
        "messaging_service_sid": message.messaging_service_sid,
        "num_media": "0",
        "num_segments": message.num_segments.to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": { "media": format!("{uri}/Media.json") },
        "to": message.to,
        "uri": format!("{uri}.json"),
    });
    tracing::info!(sid = %message.sid, to = %message.to, "sms simulator accepted a message");
    sim.store(message);
    (StatusCode::CREATED, Json(resource)).into_response()
}

async fn list_messages(State(sim): State<SmsSim>) -> Json<Vec<SimMessage>> {
    Json(sim.messages())
}

#[derive(Deserialize)]
struct FailNext {
    requests: u32,
}

async fn fail_next(State(sim): State<SmsSim>, Query(q): Query<FailNext>) -> StatusCode {
    sim.fail_next(q.requests);
    StatusCode::NO_CONTENT
}

/// `+` and 2 to 15 digits, the first not 0.
fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

/// Up to 11 letters, digits and spaces, at least one letter.
fn is_alphanumeric_sender(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

/// A Twilio SID: the two-letter prefix and 32 hex digits.
fn is_sid(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .is_some_and(|hex| hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// SMS segments: 160 GSM-7 characters in one, 153 each when concatenated; 70 and 67 for UCS-2
/// (approximated as: any non-ASCII character means UCS-2, as Vietnamese diacritics do).
fn segments(text: &str) -> u32 {
    let (single, multi) = if text.is_ascii() {
        (160, 153)
    } else {
        (70, 67)
    };
    let chars = text.chars().count();
    let n = if chars <= single {
        1
    } else {
        chars.div_ceil(multi)
    };
    u32::try_from(n).expect("a body of at most 1600 characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_numbers_and_senders() {
        for (s, want) in [
            ("+84901234567", true),
            ("+15005550006", true),
            ("84901234567", false),
            ("+0123", false),
            ("+1", false),
            ("+1234567890123456", false),
            ("+1 500", false),
        ] {
            assert_eq!(is_e164(s), want, "{s}");
        }
        assert!(is_alphanumeric_sender("Holdfast"));
        assert!(!is_alphanumeric_sender("12345"));
        assert!(!is_alphanumeric_sender("Holdfast Tickets"));
        assert!(is_sid("MG", &format!("MG{}", "a".repeat(32))));
        assert!(!is_sid("MG", "MG123"));
    }

    #[test]
    fn counts_segments() {
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"ă".repeat(70)), 1);
        assert_eq!(segments(&"ă".repeat(71)), 2);
    }
}
