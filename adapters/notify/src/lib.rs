//! Notification providers for Holdfast's notification service: the payment link, the tickets,
//! failures and automatic refunds reach buyers through these.
//!
//! - [`email`]: e-mail over SMTP ([`Mailer`], lettre), with attachments (ticket QR PNGs).
//! - [`sms`]: SMS over the Twilio Programmable Messaging REST API ([`SmsSender`], reqwest).
//! - [`sim`]: a local stand-in for that SMS API, for tests and demos.
//! - `testing` (feature `test-util`): a real SMTP server (aiosmtpd) for tests.
//!
//! Both providers return the same [`Error`]: [`Error::Transient`] means "retry later" (the
//! network, a timeout, SMTP 4xx, HTTP 429/5xx), [`Error::Permanent`] means "this message will
//! never be accepted as it is" (SMTP 5xx, an invalid address, HTTP 4xx). The caller, the
//! notification outbox, owns retries and backoff; this crate makes one attempt per call.
//!
//! TLS is rustls with the ring provider and the system's CA roots (`/etc/ssl/certs`, the
//! `ca-certificates` package), for SMTP and HTTPS alike: no OpenSSL, no new C build.

pub mod email;
pub mod sim;
pub mod sms;
#[cfg(feature = "test-util")]
pub mod testing;

pub use email::{Attachment, Email, Mailer, MailerSettings, TlsMode};
pub use sms::{SmsSender, SmsSettings};

use std::fmt;

/// Why a send failed, classified for the caller's retry decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Retry later: the provider or the network failed, timed out or asked to slow down.
    #[error("transient failure: {reason}")]
    Transient { reason: String },
    /// Retrying cannot help: the provider refused this message (a bad address, a 5xx SMTP
    /// reply, a 4xx HTTP reply other than 429).
    #[error("permanent failure: {reason}")]
    Permanent { reason: String },
}

impl Error {
    pub(crate) fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
        }
    }

    pub(crate) fn permanent(reason: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
        }
    }

    /// Whether the caller should try the same message again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. })
    }
}

/// Settings a provider cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid notification settings: {field}: {reason}")]
pub struct SettingsError {
    /// The settings field at fault.
    pub field: &'static str,
    pub reason: String,
}

impl SettingsError {
    pub(crate) fn new(field: &'static str, reason: impl fmt::Display) -> Self {
        Self {
            field,
            reason: reason.to_string(),
        }
    }
}

/// The provider's id of an accepted message: the `Message-ID` header of an e-mail (with its
/// angle brackets), the Twilio `sid` (`SM…`) of an SMS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub String);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `err` and its sources, `: `-separated, as one line for logs and the outbox's last error.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}
