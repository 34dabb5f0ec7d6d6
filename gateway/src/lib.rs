//! The HTTP edge of Holdfast: REST routes of `shared/API.md`, JWT auth, idempotency keys,
//! problem+json errors, request ids, tracing, metrics and the OpenAPI document.
//!
//! The gateway reaches the rest of the node only through [`backend::Backend`].

pub mod auth;
pub mod backend;
pub mod checkout;
pub mod extract;
pub mod idempotency;
pub mod problem;
pub mod routes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::auth::TokenKeys;
use crate::backend::Backend;
use crate::checkout::Checkout;
use crate::problem::Problem;

pub const REQUEST_ID: &str = "x-request-id";

/// Settings of the HTTP edge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Lifetime of an access token.
    pub access_token_ttl_secs: u64,
    /// Lifetime of a refresh token.
    pub refresh_token_ttl_secs: u64,
    /// A request that takes longer is answered 504 `timeout`.
    pub request_timeout_secs: u64,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            request_timeout_secs: 10,
            body_limit_bytes: 64 * 1024,
        }
    }
}

/// Renders the Prometheus exposition of the node's metrics.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    checkout: Arc<dyn Checkout>,
    tokens: TokenKeys,
    options: Options,
    render_metrics: RenderMetrics,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(
        backend: Arc<dyn Backend>,
        checkout: Arc<dyn Checkout>,
        jwt_secret: &[u8],
        options: Options,
        render_metrics: RenderMetrics,
    ) -> Self {
        let tokens = TokenKeys::from_secret(jwt_secret, options.access_token_ttl_secs);
        Self {
            inner: Arc::new(Inner {
                backend,
                checkout,
                tokens,
                options,
                render_metrics,
            }),
        }
    }

    pub fn backend(&self) -> &dyn Backend {
        self.inner.backend.as_ref()
    }

    pub fn checkout(&self) -> &dyn Checkout {
        self.inner.checkout.as_ref()
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.inner.tokens
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    pub fn render_metrics(&self) -> String {
        (self.inner.render_metrics)()
    }
}

/// The whole HTTP API of a node.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID);
    let api = Router::new()
        .route("/v1/auth/register", post(routes::accounts::register))
        .route("/v1/auth/login", post(routes::accounts::login))
        .route("/v1/auth/refresh", post(routes::accounts::refresh))
        .route("/v1/auth/logout", post(routes::accounts::logout))
        .route(
            "/v1/events",
            post(routes::events::create).get(routes::events::list),
        )
        .route("/v1/events/{event_id}", get(routes::events::get))
        .route(
            "/v1/events/{event_id}/availability",
            get(routes::events::availability),
        )
        .route("/v1/events/{event_id}/holds", post(routes::holds::create))
        .route(
            "/v1/holds/{hold_id}",
            get(routes::holds::get).delete(routes::holds::release),
        )
        .route(
            "/v1/orders",
            post(routes::orders::create).get(routes::orders::list),
        )
        .route("/v1/orders/{order_id}", get(routes::orders::get))
        .route("/v1/orders/{order_id}/refund", post(routes::orders::refund))
        .route(
            "/v1/orders/{order_id}/tickets",
            get(routes::orders::tickets),
        )
        .route(
            "/v1/tickets/{ticket_id}/qr.png",
            get(routes::tickets::qr_png),
        )
        .route("/v1/checkin", post(routes::tickets::checkin))
        .route("/v1/payments/vnpay/ipn", get(routes::payments::ipn))
        .route(
            "/v1/payments/vnpay/return",
            get(routes::payments::return_page),
        )
        .route("/v1/admin/shards", get(routes::admin::shards))
        .route(
            "/v1/admin/shards/{shard}/move",
            post(routes::admin::move_shard),
        )
        .route("/v1/admin/nodes", get(routes::admin::nodes))
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
        .route("/openapi.json", get(routes::ops::openapi))
        .route_layer(middleware::from_fn(record_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .layer(DefaultBodyLimit::max(state.options().body_limit_bytes))
        .with_state(state.clone());
    let timeout = Duration::from_secs(state.options().request_timeout_secs.max(1));
    api.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(move |req: &Request| {
                let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(
                CorsLayer::new()
                    .allow_origin(Any)
                    .allow_methods([Method::GET, Method::POST, Method::DELETE])
                    .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static(idempotency::HEADER)])
                    .expose_headers([HeaderName::from_static(REQUEST_ID), header::LOCATION, header::RETRY_AFTER]),
            )
            .layer(CompressionLayer::new())
            .layer(middleware::from_fn(move |req: Request, next: Next| with_timeout(timeout, req, next))),
    )
}

async fn with_timeout(timeout: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => Problem::new(StatusCode::GATEWAY_TIMEOUT, "timeout", "Timed out", "the request took too long; it may or may not have taken effect, retry with the same Idempotency-Key")
            .retry_after(1)
            .into_response(),
    }
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("holdfast_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("holdfast_http_request_duration_seconds", "method" => method, "route" => route).record(started.elapsed().as_secs_f64());
    response
}

async fn not_found() -> Problem {
    Problem::not_found("no such route; see /openapi.json")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not take that method; see /openapi.json",
    )
}
