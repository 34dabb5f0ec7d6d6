//! SMS over the Twilio Programmable Messaging REST API: [`SmsSender::send`] makes one
//! `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json` (form-encoded `To`, `Body`
//! and `From` or `MessagingServiceSid`, HTTP basic auth `AccountSid:AuthToken`).
//!
//! Twilio answers 201 with the message resource (`sid`, `status`, …) or an error resource
//! `{code, message, more_info, status}`. 429, 5xx and network failures are transient; any
//! other non-2xx is permanent (an invalid number, bad credentials, an unknown account).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, MessageId, SettingsError, error_chain};

/// Twilio's production API.
pub const TWILIO_API_URL: &str = "https://api.twilio.com";
/// The API version in every Twilio REST path.
pub const API_VERSION: &str = "2010-04-01";
/// Replies longer than this are cut (Twilio's are a few hundred bytes).
const REPLY_BYTES_MAX: usize = 64 * 1024;

/// The SMS provider account.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsSettings {
    /// Twilio's API, or a stand-in such as [`crate::sim`] (`http://127.0.0.1:PORT`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// `AC…`, from the Twilio console.
    pub account_sid: String,
    pub auth_token: String,
    /// The sender: an E.164 number (`+15005550006`), an alphanumeric sender id where the
    /// destination country allows it, or a Messaging Service SID (`MG…`), sent as
    /// `MessagingServiceSid`.
    pub from: String,
    /// Limit on the whole request, connecting included.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_base_url() -> String {
    TWILIO_API_URL.to_owned()
}

fn default_timeout_secs() -> u64 {
    15
}

impl fmt::Debug for SmsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsSettings")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("from", &self.from)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// Sends SMS through one Twilio account. Cheap to clone (one shared connection pool).
#[derive(Clone)]
pub struct SmsSender {
    client: reqwest::Client,
    messages_url: reqwest::Url,
    account_sid: String,
    auth_token: String,
    /// The form field naming the sender, and its value.
    sender: (&'static str, String),
}

impl fmt::Debug for SmsSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsSender")
            .field("messages_url", &self.messages_url.as_str())
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

/// The part of Twilio's message resource we read.
#[derive(Deserialize)]
struct MessageResource {
    sid: String,
    status: String,
}

/// Twilio's error resource.
#[derive(Deserialize)]
struct ErrorResource {
    code: Option<u32>,
    message: String,
}

impl SmsSender {
    pub fn new(settings: &SmsSettings) -> Result<Self, SettingsError> {
        let sid = &settings.account_sid;
        if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SettingsError::new(
                "account_sid",
                "must be letters and digits (AC…)",
            ));
        }
        if settings.auth_token.is_empty() {
            return Err(SettingsError::new("auth_token", "is empty"));
        }
        if settings.from.is_empty() {
            return Err(SettingsError::new("from", "is empty"));
        }
        let base: reqwest::Url = settings
            .base_url
            .parse()
            .map_err(|e| SettingsError::new("base_url", e))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(SettingsError::new("base_url", "must be an http(s) URL"));
        }
        let path = format!(
            "{}/{API_VERSION}/Accounts/{sid}/Messages.json",
            base.path().trim_end_matches('/')
        );
        let mut messages_url = base;
        messages_url.set_path(&path);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs))
            // A redirect would turn the POST into a GET; a moved API is a settings problem.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| SettingsError::new("base_url", error_chain(&e)))?;
        let is_service = settings.from.starts_with("MG") && settings.from.len() == 34;
        let sender = if is_service {
            "MessagingServiceSid"
        } else {
            "From"
        };
        Ok(Self {
            client,
            messages_url,
            account_sid: sid.clone(),
            auth_token: settings.auth_token.clone(),
            sender: (sender, settings.from.clone()),
        })
    }

    /// Sends `body` to `to` (E.164, `+84901234567`); `Ok` with the message's `sid` once
    /// Twilio accepted it (queued for delivery: delivery itself is reported later, by
    /// Twilio's status callbacks, which this crate does not handle).
    pub async fn send(&self, to: &str, body: &str) -> Result<MessageId, Error> {
        let form = [("To", to), ("Body", body), (self.sender.0, &self.sender.1)];
        let response = self
            .client
            .post(self.messages_url.clone())
            .basic_auth(&self.account_sid, Some(&self.auth_token))
            .form(&form)
            .send()
            .await
            .map_err(|e| Error::transient(error_chain(&e)))?;
        let status = response.status();
        let reply = read_bounded(response).await?;
        if status.is_success() {
            let message: MessageResource = serde_json::from_slice(&reply).map_err(|e| {
                // The message was probably accepted: retrying could send it twice.
                Error::permanent(format!(
                    "accepted ({status}) but the reply is unreadable, not retried: {e}"
                ))
            })?;
            tracing::debug!(sid = %message.sid, status = %message.status, "sms accepted");
            return Ok(MessageId(message.sid));
        }
        let reason = match serde_json::from_slice::<ErrorResource>(&reply) {
            Ok(ErrorResource {
                code: Some(code),
                message,
            }) => format!("{status}: error {code}: {message}"),
            Ok(ErrorResource {
                code: None,
                message,
            }) => format!("{status}: {message}"),
            Err(_) => format!("{status}: {}", String::from_utf8_lossy(&reply).trim()),
        };
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(Error::transient(reason))
        } else {
            Err(Error::permanent(reason))
        }
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, Error> {
    let mut reply = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| Error::transient(format!("reading the reply: {}", error_chain(&e))))?
    {
        let room = REPLY_BYTES_MAX - reply.len();
        reply.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if reply.len() == REPLY_BYTES_MAX {
            break;
        }
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(base_url: &str, from: &str) -> SmsSettings {
        SmsSettings {
            base_url: base_url.to_owned(),
            account_sid: "AC0123".to_owned(),
            auth_token: "token".to_owned(),
            from: from.to_owned(),
            timeout_secs: 5,
        }
    }

    #[test]
    fn builds_the_messages_url_under_any_base_path() {
        for (base, want) in [
            (
                "https://api.twilio.com",
                "https://api.twilio.com/2010-04-01/Accounts/AC0123/Messages.json",
            ),
            (
                "http://127.0.0.1:9/twilio/",
                "http://127.0.0.1:9/twilio/2010-04-01/Accounts/AC0123/Messages.json",
            ),
        ] {
            let sender = SmsSender::new(&settings(base, "+15005550006")).unwrap();
            assert_eq!(sender.messages_url.as_str(), want);
            assert_eq!(sender.sender.0, "From");
        }
    }

    #[test]
    fn a_messaging_service_sid_is_sent_as_such() {
        let sid = format!("MG{}", "0".repeat(32));
        let sender = SmsSender::new(&settings(TWILIO_API_URL, &sid)).unwrap();
        assert_eq!(sender.sender, ("MessagingServiceSid", sid));
    }

    #[test]
    fn refuses_bad_settings() {
        for (s, field) in [
            (settings("ftp://x", "+1"), "base_url"),
            (settings("not a url", "+1"), "base_url"),
            (settings(TWILIO_API_URL, ""), "from"),
            (
                SmsSettings {
                    account_sid: "AC/../x".to_owned(),
                    ..settings(TWILIO_API_URL, "+1")
                },
                "account_sid",
            ),
        ] {
            assert_eq!(SmsSender::new(&s).unwrap_err().field, field);
        }
        let s: SmsSettings =
            serde_json::from_str(r#"{"account_sid": "AC1", "auth_token": "secret", "from": "+1"}"#)
                .unwrap();
        assert_eq!(s.base_url, TWILIO_API_URL);
        assert!(!format!("{s:?}").contains("secret"));
    }
}
