//! The CAPTCHA check at queue join: a `siteverify` call in the shape Cloudflare Turnstile and
//! hCaptcha share (`POST` form `secret`, `response`, `remoteip`; JSON `{"success": bool,
//! "error-codes": [..]}`), with a bounded timeout. Off unless `captcha_siteverify_url` and
//! `captcha_secret` are set.

use std::net::IpAddr;
use std::time::Duration;

use holdfast_gateway::backend::{BackendError, CaptchaVerdict};
use serde::Deserialize;

/// A provider that does not answer in this long leaves the join unanswered (503).
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct Captcha {
    client: reqwest::Client,
    url: String,
    secret: String,
}

#[derive(Deserialize)]
struct Answer {
    success: bool,
    #[serde(default, rename = "error-codes")]
    error_codes: Vec<String>,
}

impl Captcha {
    pub fn new(url: String, secret: String) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        Ok(Self {
            client,
            url,
            secret,
        })
    }

    /// What the provider says of `token`, the answer a client solved, from `client`.
    pub async fn verify(
        &self,
        token: Option<&str>,
        client: IpAddr,
    ) -> Result<CaptchaVerdict, BackendError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Ok(CaptchaVerdict::Missing);
        };
        let unavailable = |why: String| {
            metrics::counter!("holdfast_captcha_errors_total").increment(1);
            tracing::warn!(%why, "the CAPTCHA provider did not answer");
            BackendError::Unavailable(format!("CAPTCHA provider: {why}"))
        };
        let form = [
            ("secret", self.secret.as_str()),
            ("response", token),
            ("remoteip", &client.to_string()),
        ];
        let reply = self
            .client
            .post(&self.url)
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(e.without_url().to_string()))?;
        if !reply.status().is_success() {
            return Err(unavailable(format!("HTTP {}", reply.status())));
        }
        let answer: Answer = reply
            .json()
            .await
            .map_err(|e| unavailable(format!("an answer that is not siteverify JSON: {e}")))?;
        Ok(if answer.success {
            CaptchaVerdict::Passed
        } else {
            CaptchaVerdict::Failed(answer.error_codes.join(", "))
        })
    }
}
