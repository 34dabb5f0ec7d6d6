//! The internal node-to-node API: typed, versioned messages in bincode over HTTP/2 (h2c, or
//! h2 over TLS when certificates are configured), with connection reuse, timeouts and a shared
//! cluster key.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use holdfast_actors::EventId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Cluster;
use crate::ops::{InventoryOp, InventoryReply, OpError};

/// Version of the messages below; a node refuses others with `400`.
pub const WIRE_VERSION: u16 = 1;
const KEY_HEADER: &str = "x-holdfast-cluster-key";
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub version: u16,
    pub body: T,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventoryRequest {
    pub event_id: EventId,
    pub op: InventoryOp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandoffRequest {
    pub to: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HandoffReport {
    pub shard: u32,
    pub from: String,
    pub to: String,
    pub epoch: u64,
    pub pause_ms: u64,
}

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("node {addr} unreachable: {source}")]
    Transport {
        addr: String,
        source: reqwest::Error,
    },
    #[error("node {addr} answered {status}: {detail}")]
    Refused {
        addr: String,
        status: u16,
        detail: String,
    },
    #[error("undecodable answer from {addr}: {detail}")]
    Decode { addr: String, detail: String },
}

/// The key every node of one deployment derives from the shared token secret.
pub fn cluster_key(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"holdfast-cluster-key\0");
    h.update(secret);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a request's cluster key is `key`, compared in constant time so the answer's timing
/// tells nothing about how much of a guess was right.
fn key_matches(presented: Option<&axum::http::HeaderValue>, key: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    presented.is_some_and(|v| bool::from(v.as_bytes().ct_eq(key.as_bytes())))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("wire messages encode")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| e.to_string())
}

/// Calls other nodes; one pooled HTTP/2 client per node.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    key: String,
    scheme: &'static str,
}

impl Client {
    /// A client sending `key`; with `roots`, over TLS trusting those CAs only.
    pub fn new(key: String, roots: Option<&[reqwest::Certificate]>) -> Self {
        let mut builder = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60));
        if let Some(roots) = roots {
            builder = builder.use_rustls_tls().tls_built_in_root_certs(false);
            for root in roots {
                builder = builder.add_root_certificate(root.clone());
            }
        }
        let http = builder
            .build()
            .expect("an HTTP client with static settings builds");
        Self {
            http,
            key,
            scheme: if roots.is_some() { "https" } else { "http" },
        }
    }

    async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        addr: &str,
        path: &str,
        body: Q,
    ) -> Result<A, CallError> {
        let url = format!("{}://{addr}{path}", self.scheme);
        let response = self
            .http
            .post(&url)
            .header(KEY_HEADER, &self.key)
            .header("content-type", "application/octet-stream")
            .body(encode(&Envelope {
                version: WIRE_VERSION,
                body,
            }))
            .send()
            .await
            .map_err(|source| CallError::Transport {
                addr: addr.to_owned(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| CallError::Transport {
                addr: addr.to_owned(),
                source,
            })?;
        if !status.is_success() {
            return Err(CallError::Refused {
                addr: addr.to_owned(),
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        decode(&bytes).map_err(|detail| CallError::Decode {
            addr: addr.to_owned(),
            detail,
        })
    }

    pub async fn inventory(
        &self,
        addr: &str,
        request: InventoryRequest,
    ) -> Result<Result<InventoryReply, OpError>, CallError> {
        self.call(addr, "/internal/v1/inventory", request).await
    }

    pub async fn handoff(
        &self,
        addr: &str,
        shard: u32,
        to: &str,
    ) -> Result<Result<HandoffReport, String>, CallError> {
        self.call(
            addr,
            &format!("/internal/v1/shards/{shard}/handoff"),
            HandoffRequest { to: to.to_owned() },
        )
        .await
    }

    pub async fn refresh(&self, addr: &str) -> Result<(), CallError> {
        self.call::<(), ()>(addr, "/internal/v1/refresh", ()).await
    }
}

/// The internal API a node serves on its internal address.
pub fn router(cluster: Arc<Cluster>) -> Router {
    Router::new()
        .route("/internal/v1/inventory", post(inventory))
        .route("/internal/v1/shards/{shard}/handoff", post(handoff))
        .route("/internal/v1/refresh", post(refresh))
        .with_state(cluster)
}

fn open<T: DeserializeOwned>(
    cluster: &Cluster,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, Box<Response>> {
    if !key_matches(headers.get(KEY_HEADER), cluster.key()) {
        return Err(Box::new(
            (StatusCode::UNAUTHORIZED, "wrong cluster key").into_response(),
        ));
    }
    let envelope: Envelope<T> = decode(body).map_err(|e| {
        Box::new((StatusCode::BAD_REQUEST, format!("undecodable message: {e}")).into_response())
    })?;
    if envelope.version != WIRE_VERSION {
        return Err(Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!(
                    "wire version {} not supported; this node speaks {WIRE_VERSION}",
                    envelope.version
                ),
            )
                .into_response(),
        ));
    }
    Ok(envelope.body)
}

fn reply<T: Serialize>(value: &T) -> Response {
    (
        [("content-type", "application/octet-stream")],
        encode(value),
    )
        .into_response()
}

async fn inventory(
    State(cluster): State<Arc<Cluster>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match open::<InventoryRequest>(&cluster, &headers, &body) {
        Ok(req) => reply(&cluster.execute_local(req.event_id, req.op).await),
        Err(r) => *r,
    }
}

async fn handoff(
    State(cluster): State<Arc<Cluster>>,
    Path(shard): Path<u32>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match open::<HandoffRequest>(&cluster, &headers, &body) {
        Ok(req) => reply(
            &cluster
                .hand_off(shard, &req.to)
                .await
                .map_err(|e| e.to_string()),
        ),
        Err(r) => *r,
    }
}

async fn refresh(State(cluster): State<Arc<Cluster>>, headers: HeaderMap, body: Bytes) -> Response {
    match open::<()>(&cluster, &headers, &body) {
        Ok(()) => {
            cluster.refresh(true).await;
            reply(&())
        }
        Err(r) => *r,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::{cluster_key, key_matches};

    #[test]
    fn only_the_exact_cluster_key_opens_the_node_api() {
        let key = cluster_key(b"a shared token secret of 32 bytes");
        assert!(key_matches(
            Some(&HeaderValue::from_str(&key).unwrap()),
            &key
        ));
        let mut wrong = key.clone();
        wrong.pop();
        for presented in [wrong.clone(), format!("{wrong}0x"), String::new()] {
            let value = HeaderValue::from_str(&presented).unwrap();
            assert!(!key_matches(Some(&value), &key), "{presented:?}");
        }
        assert!(!key_matches(None, &key));
    }
}
