//! E-mail over SMTP (lettre, tokio): [`Mailer`] sends one [`Email`] per call over a fresh
//! connection (no pool: a notification outbox sends little, and a new connection per attempt
//! has no stale-connection failures to classify).
//!
//! Replies are classified as RFC 5321 does: 4xx is transient, 5xx permanent. Connection
//! failures, timeouts, TLS failures, a server without STARTTLS and unreadable replies are
//! transient too: they are about the path to the server, not about the message, and usually
//! get fixed by an operator while the outbox keeps retrying. A recipient or attachment this
//! crate cannot encode is permanent, found before connecting.

use std::fmt;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::{Error, MessageId, SettingsError, error_chain};

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain text (a local relay or a test server); default port 25.
    None,
    /// Plain connection upgraded with `STARTTLS`, which the server must offer; default port
    /// 587 (submission).
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", SMTPS); default port 465.
    Tls,
}

impl TlsMode {
    fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::Starttls => 587,
            Self::Tls => 465,
        }
    }
}

/// Where and how to send e-mail. Give either `url` or `host` (with optional `port` and `tls`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailerSettings {
    /// The server as a URL, as lettre reads it: `smtp://host[:port]` (plain, port 25),
    /// `smtp://host[:port]?tls=required` (STARTTLS, 587), `smtps://host[:port]` (TLS, 465);
    /// `user:password@` may be embedded (percent-encoded).
    #[serde(default)]
    pub url: Option<String>,
    /// The server's host name (checked against its certificate).
    #[serde(default)]
    pub host: Option<String>,
    /// Defaults from `tls`: 25, 587 or 465.
    #[serde(default)]
    pub port: Option<u16>,
    /// With `host`; defaults to STARTTLS.
    #[serde(default)]
    pub tls: Option<TlsMode>,
    /// `AUTH` user name; with `password`.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The `From` address, optionally with a name: `Holdfast <tickets@example.com>`.
    pub from: String,
    /// The name sent in `EHLO`; lettre's default is the address literal `[127.0.0.1]`.
    #[serde(default)]
    pub helo_name: Option<String>,
    /// Limit on connecting and on each read and write of the conversation.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    30
}

impl MailerSettings {
    /// Plain SMTP to `host:port` without authentication (a local relay, a test server).
    pub fn plain(host: impl Into<String>, port: u16, from: impl Into<String>) -> Self {
        Self {
            url: None,
            host: Some(host.into()),
            port: Some(port),
            tls: Some(TlsMode::None),
            username: None,
            password: None,
            from: from.into(),
            helo_name: None,
            timeout_secs: default_timeout_secs(),
        }
    }
}

impl fmt::Debug for MailerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailerSettings")
            .field("url", &self.url.as_ref().map(|_| "<redacted>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("helo_name", &self.helo_name)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// One e-mail to one buyer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Email {
    /// The recipient, optionally with a name: `An Nguyen <an@example.com>`.
    pub to: String,
    pub subject: String,
    pub text_body: String,
    /// When set, the message is `multipart/alternative` with the text and this HTML.
    pub html_body: Option<String>,
    pub attachments: Vec<Attachment>,
    /// The left part of the `Message-ID` (`<id@from-domain>`). Give a stable one (the outbox
    /// row's id) so a retry after an ambiguous failure carries the same id and mail clients
    /// can drop the duplicate; random when `None`. Must be a dot-atom (`A-Z a-z 0-9 . - _`).
    pub message_id: Option<String>,
}

/// A file attached to an [`Email`], such as a ticket's QR code.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    pub filename: String,
    /// A MIME type: `image/png`, `application/pdf`.
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("filename", &self.filename)
            .field("content_type", &self.content_type)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .finish()
    }
}

/// Sends e-mail through one SMTP server. Cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("server", &self.server)
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl Mailer {
    /// Checks the settings and prepares the transport; connects only when sending.
    pub fn new(settings: &MailerSettings) -> Result<Self, SettingsError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| SettingsError::new("from", format!("{:?}: {e}", settings.from)))?;
        let (builder, server) = match (&settings.url, &settings.host) {
            (Some(url), None) => {
                if settings.port.is_some() || settings.tls.is_some() {
                    return Err(SettingsError::new(
                        "url",
                        "the port and TLS mode go into the URL when a URL is given",
                    ));
                }
                let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| SettingsError::new("url", error_chain(&e)))?;
                (builder, redact_url(url))
            }
            (None, Some(host)) => {
                let tls = settings.tls.unwrap_or_default();
                let port = settings.port.unwrap_or(tls.default_port());
                let tls_parameters = || {
                    TlsParameters::new(host.clone())
                        .map_err(|e| SettingsError::new("tls", error_chain(&e)))
                };
                let tls = match tls {
                    TlsMode::None => Tls::None,
                    TlsMode::Starttls => Tls::Required(tls_parameters()?),
                    TlsMode::Tls => Tls::Wrapper(tls_parameters()?),
                };
                let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                    .port(port)
                    .tls(tls);
                (builder, format!("{host}:{port}"))
            }
            (Some(_), Some(_)) => {
                return Err(SettingsError::new(
                    "url",
                    "give either url or host, not both",
                ));
            }
            (None, None) => return Err(SettingsError::new("host", "give either url or host")),
        };
        let mut builder = builder.timeout(Some(Duration::from_secs(settings.timeout_secs)));
        match (&settings.username, &settings.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
            }
            (None, None) => {}
            _ => {
                return Err(SettingsError::new(
                    "username",
                    "username and password go together",
                ));
            }
        }
        if let Some(name) = &settings.helo_name {
            builder = builder.hello_name(ClientId::Domain(name.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            server,
        })
    }

    /// The `From` mailbox.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Sends `email` in one SMTP conversation; `Ok` once the server accepted it (250 to the
    /// data). Returns the `Message-ID` it carried.
    pub async fn send(&self, email: &Email) -> Result<MessageId, Error> {
        let (message, message_id) = self.build(email)?;
        match self.transport.send(message).await {
            Ok(response) => {
                tracing::debug!(
                    server = %self.server,
                    message_id = %message_id,
                    reply = response.first_line().unwrap_or_default(),
                    "e-mail accepted"
                );
                Ok(message_id)
            }
            Err(e) => Err(classify(&e)),
        }
    }

    fn build(&self, email: &Email) -> Result<(Message, MessageId), Error> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| Error::permanent(format!("invalid recipient {:?}: {e}", email.to)))?;
        let local = match &email.message_id {
            Some(id) if is_dot_atom(id) => id.clone(),
            Some(id) => return Err(Error::permanent(format!("invalid message id {id:?}"))),
            None => uuid::Uuid::new_v4().simple().to_string(),
        };
        let message_id = MessageId(format!("<{local}@{}>", self.from.email.domain()));
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject.clone())
            .message_id(Some(message_id.0.clone()));
        let text = SinglePart::plain(email.text_body.clone());
        let alternative = email
            .html_body
            .as_ref()
            .map(|html| MultiPart::alternative_plain_html(email.text_body.clone(), html.clone()));
        let message = if email.attachments.is_empty() {
            match alternative {
                Some(alternative) => builder.multipart(alternative),
                None => builder.singlepart(text),
            }
        } else {
            let mut mixed = match alternative {
                Some(alternative) => MultiPart::mixed().multipart(alternative),
                None => MultiPart::mixed().singlepart(text),
            };
            for attachment in &email.attachments {
                let content_type = ContentType::parse(&attachment.content_type).map_err(|e| {
                    Error::permanent(format!(
                        "invalid content type {:?} of attachment {:?}: {e}",
                        attachment.content_type, attachment.filename
                    ))
                })?;
                mixed = mixed.singlepart(
                    lettre::message::Attachment::new(attachment.filename.clone())
                        .body(attachment.bytes.clone(), content_type),
                );
            }
            builder.multipart(mixed)
        };
        let message =
            message.map_err(|e| Error::permanent(format!("cannot build the e-mail: {e}")))?;
        Ok((message, message_id))
    }
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn classify(e: &lettre::transport::smtp::Error) -> Error {
    let reason = error_chain(e);
    // Everything but a 5xx reply is transient, lettre's own refusals included: most are about
    // the server (no STARTTLS, no usable AUTH mechanism), which an operator fixes while the
    // outbox retries; the few about the message (a non-ASCII address to a server without
    // SMTPUTF8) end at the outbox's attempt limit.
    if e.is_permanent() {
        Error::permanent(reason)
    } else {
        Error::transient(reason)
    }
}

/// `url` without its password, for logs.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}<redacted>{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailer() -> Mailer {
        Mailer::new(&MailerSettings::plain(
            "127.0.0.1",
            2525,
            "Holdfast <tickets@holdfast.test>",
        ))
        .unwrap()
    }

    fn settings(url: Option<&str>, host: Option<&str>) -> MailerSettings {
        MailerSettings {
            url: url.map(str::to_owned),
            host: host.map(str::to_owned),
            ..MailerSettings::plain("", 0, "tickets@holdfast.test")
        }
    }

    #[test]
    fn settings_need_exactly_one_of_url_and_host() {
        let mut both = settings(Some("smtp://mail.test"), Some("mail.test"));
        both.port = None;
        both.tls = None;
        assert_eq!(Mailer::new(&both).unwrap_err().field, "url");
        let mut neither = settings(None, None);
        neither.tls = None;
        assert_eq!(Mailer::new(&neither).unwrap_err().field, "host");
        let mut url = settings(Some("smtp://mail.test:2525"), None);
        assert_eq!(
            Mailer::new(&url).unwrap_err().field,
            "url",
            "port beside a url"
        );
        url.port = None;
        url.tls = None;
        Mailer::new(&url).unwrap();
    }

    #[test]
    fn settings_accept_every_tls_mode_and_url_scheme() {
        for tls in [TlsMode::None, TlsMode::Starttls, TlsMode::Tls] {
            let mut s = settings(None, Some("mail.test"));
            s.tls = Some(tls);
            s.port = None;
            Mailer::new(&s).unwrap();
        }
        for url in [
            "smtp://mail.test",
            "smtp://user:p%40ss@mail.test:587?tls=required",
            "smtps://mail.test",
        ] {
            let mut s = settings(Some(url), None);
            s.port = None;
            s.tls = None;
            let mailer = Mailer::new(&s).unwrap();
            assert!(!format!("{mailer:?}").contains("p%40ss"));
        }
        let mut bad = settings(Some("imap://mail.test"), None);
        bad.port = None;
        bad.tls = None;
        assert_eq!(Mailer::new(&bad).unwrap_err().field, "url");
    }

    #[test]
    fn settings_refuse_a_bad_from_and_a_lone_username() {
        let mut s = settings(None, Some("mail.test"));
        s.from = "not an address".to_owned();
        assert_eq!(Mailer::new(&s).unwrap_err().field, "from");
        let mut s = settings(None, Some("mail.test"));
        s.username = Some("user".to_owned());
        assert_eq!(Mailer::new(&s).unwrap_err().field, "username");
    }

    #[test]
    fn settings_deserialize_with_defaults() {
        let s: MailerSettings =
            serde_json::from_str(r#"{"host": "mail.test", "from": "a@holdfast.test"}"#).unwrap();
        assert_eq!((s.tls, s.port, s.timeout_secs), (None, None, 30));
        let s: MailerSettings = serde_json::from_str(
            r#"{"host": "mail.test", "tls": "tls", "from": "a@holdfast.test", "password": "pw"}"#,
        )
        .unwrap();
        assert_eq!(s.tls, Some(TlsMode::Tls));
        assert!(!format!("{s:?}").contains("pw"));
    }

    #[test]
    fn bad_recipients_and_content_types_are_permanent() {
        let m = mailer();
        let email = |to: &str, content_type: &str| Email {
            to: to.to_owned(),
            subject: "s".to_owned(),
            text_body: "t".to_owned(),
            attachments: vec![Attachment {
                filename: "a.png".to_owned(),
                content_type: content_type.to_owned(),
                bytes: vec![1],
            }],
            ..Email::default()
        };
        assert!(
            !m.build(&email("no-at-sign", "image/png"))
                .unwrap_err()
                .is_transient()
        );
        assert!(
            !m.build(&email("a@b.test", "not a type"))
                .unwrap_err()
                .is_transient()
        );
        m.build(&email("An <a@b.test>", "image/png")).unwrap();
    }

    #[test]
    fn message_id_is_stable_when_given() {
        let m = mailer();
        let email = Email {
            to: "a@b.test".to_owned(),
            message_id: Some("outbox-42".to_owned()),
            ..Email::default()
        };
        let (message, id) = m.build(&email).unwrap();
        assert_eq!(id.0, "<outbox-42@holdfast.test>");
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(
            raw.contains("Message-ID: <outbox-42@holdfast.test>"),
            "{raw}"
        );
        let bad = Email {
            message_id: Some("a b".to_owned()),
            ..email
        };
        assert!(!m.build(&bad).unwrap_err().is_transient());
    }

    #[test]
    fn redacts_url_passwords() {
        assert_eq!(
            redact_url("smtps://u:pw@mail.test:465"),
            "smtps://<redacted>@mail.test:465"
        );
        assert_eq!(redact_url("smtp://mail.test"), "smtp://mail.test");
    }
}
