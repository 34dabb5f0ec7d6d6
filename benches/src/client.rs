//! A minimal HTTP/1.1 client: one keep-alive connection per worker, no pool, no redirects.
//!
//! The load generator shares the machine's cores with the server, so every request costs as
//! little as hyper allows: headers and bodies are built once and cloned (`Bytes` is refcounted).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("timeout")]
    Timeout,
    #[error("bad request: {0}")]
    Build(#[from] hyper::http::Error),
}

impl Error {
    /// A short, stable name for the error table.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect-error",
            Self::Http(_) => "http-error",
            Self::Timeout => "timeout",
            Self::Build(_) => "bad-request",
        }
    }
}

/// Where the server listens, checked to be a loopback address unless allowed otherwise.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: HeaderValue,
}

impl Target {
    /// Resolves `url` (`http://host:port`, no path) to one address.
    pub async fn resolve(url: &str, allow_remote: bool) -> anyhow::Result<Self> {
        let authority = crate::args::parse_http_url(url)?;
        let addr = tokio::net::lookup_host(authority.as_str())
            .await?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{authority} resolves to no address"))?;
        anyhow::ensure!(
            allow_remote || addr.ip().is_loopback(),
            "{addr} is not a loopback address; load is only sent to this machine (pass --allow-remote to override)"
        );
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&authority)?,
        })
    }
}

/// One keep-alive connection, reopened after an error.
#[derive(Debug)]
pub struct Conn {
    target: Target,
    sender: Option<SendRequest<Full<Bytes>>>,
}

/// An answer: status and the whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

pub static JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Conn {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    /// Opens the connection now, so the first timed request does not pay for it.
    pub async fn connect(&mut self) -> Result<(), Error> {
        if self.sender.as_ref().is_some_and(|s| !s.is_closed()) {
            return Ok(());
        }
        let stream = TcpStream::connect(self.target.addr)
            .await
            .map_err(Error::Connect)?;
        stream.set_nodelay(true).map_err(Error::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // The connection ends when the sender is dropped or the server closes it.
            let _ = conn.await;
        });
        self.sender = Some(sender);
        Ok(())
    }

    /// Sends one request and reads the whole answer, within `timeout`.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        self.send_with(method, path, auth, body, None, timeout)
            .await
    }

    /// [`send`](Self::send) with one more header.
    pub async fn send_with(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Option<Bytes>,
        extra: Option<(&HeaderName, &HeaderValue)>,
        timeout: Duration,
    ) -> Result<Answer, Error> {
        match tokio::time::timeout(timeout, self.send_inner(method, path, auth, body, extra)).await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => {
                self.sender = None;
                Err(e)
            }
            Err(_) => {
                // The answer may still arrive on this connection: never reuse it.
                self.sender = None;
                Err(Error::Timeout)
            }
        }
    }

    async fn send_inner(
        &mut self,
        method: Method,
        path: &str,
        auth: Option<&HeaderValue>,
        body: Option<Bytes>,
        extra: Option<(&HeaderName, &HeaderValue)>,
    ) -> Result<Answer, Error> {
        self.connect().await?;
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.target.host.clone());
        if let Some(auth) = auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        if let Some((name, value)) = extra {
            builder = builder.header(name, value.clone());
        }
        let request = match body {
            Some(body) => builder
                .header(CONTENT_TYPE, JSON.clone())
                .body(Full::new(body))?,
            None => builder.body(Full::new(Bytes::new()))?,
        };
        let sender = self.sender.as_mut().ok_or(Error::Timeout)?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}

/// The `Authorization` header for a bearer token.
pub fn bearer(token: &str) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
    value.set_sensitive(true);
    Ok(value)
}

/// The problem slug of a problem+json body (`"type": ".../problems/<slug>"`), if any.
pub fn problem_slug(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Problem {
        #[serde(rename = "type")]
        kind: String,
    }
    let problem: Problem = serde_json::from_slice(body).ok()?;
    problem.kind.rsplit('/').next().map(str::to_owned)
}

/// The `"id"` of a JSON object without parsing the whole body (the hold answer is on the hot path
/// of the generator). Returns the first string value of a top-level-looking `"id"` key.
pub fn extract_id(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"id\":\"";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = body[start..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&body[start..start + len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_out_of_hold_answers() {
        let body = br#"{"event_id":"e","expires_at":"x","id":"abc123","items":[]}"#;
        assert_eq!(extract_id(body), Some("abc123"));
        assert_eq!(extract_id(br#"{"event_id":"e"}"#), None);
        assert_eq!(extract_id(br#"{"id":"unterminated"#), None);
    }

    #[test]
    fn problem_slugs_are_the_last_path_segment() {
        let body = br#"{"type":"/problems/sold-out","title":"Sold out","status":409}"#;
        assert_eq!(problem_slug(body).as_deref(), Some("sold-out"));
        assert_eq!(problem_slug(b"not json"), None);
    }
}
