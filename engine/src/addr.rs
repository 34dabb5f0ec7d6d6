//! Listen addresses as operators write them: `127.0.0.1:8080`, `[::1]:8080` or
//! `localhost:8080`. Host names are resolved when the listener binds, not when settings load.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A `host:port` a listener binds to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BindAddr(String);

/// Why a listen address is not `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not host:port (such as 127.0.0.1:8080 or localhost:8080)")]
pub struct Error(String);

impl BindAddr {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Binds a TCP listener, resolving a host name first.
    pub async fn bind(&self) -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(self.0.as_str()).await
    }
}

impl FromStr for BindAddr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        if text.parse::<SocketAddr>().is_ok() {
            return Ok(Self(text.to_owned()));
        }
        let bad = || Error(text.to_owned());
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        port.parse::<u16>().map_err(|_| bad())?;
        let name_like = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !name_like {
            return Err(bad());
        }
        Ok(Self(text.to_owned()))
    }
}

impl TryFrom<String> for BindAddr {
    type Error = Error;

    fn try_from(text: String) -> Result<Self, Error> {
        text.parse()
    }
}

impl From<BindAddr> for String {
    fn from(addr: BindAddr) -> Self {
        addr.0
    }
}

impl From<SocketAddr> for BindAddr {
    fn from(addr: SocketAddr) -> Self {
        Self(addr.to_string())
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::BindAddr;

    #[test]
    fn addresses_and_host_names_parse_and_garbage_does_not() {
        for ok in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "[::1]:9091",
            "localhost:28081",
            "db-1.internal:7070",
        ] {
            let addr: BindAddr = ok.parse().unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(addr.as_str(), ok);
        }
        for bad in [
            "",
            "8080",
            "localhost",
            "localhost:",
            "host:99999",
            "a b:80",
            ":80",
        ] {
            let err = bad.parse::<BindAddr>().expect_err(bad);
            assert!(err.to_string().contains("host:port"), "{err}");
        }
    }

    #[tokio::test]
    async fn host_names_resolve_when_binding() {
        let addr: BindAddr = "localhost:0".parse().expect("address");
        let listener = addr.bind().await.expect("bind localhost");
        assert!(listener.local_addr().expect("address").ip().is_loopback());
    }
}
