//! The HTTP edge of Holdfast: REST routes of `shared/API.md`, JWT auth, idempotency keys,
//! problem+json errors, request ids, tracing, metrics and the OpenAPI document.
//!
//! The gateway reaches the rest of the node only through [`backend::Backend`].

pub mod admission;
pub mod auth;
pub mod backend;
pub mod checkout;
pub mod extract;
pub mod idempotency;
pub mod passwords;
pub mod problem;
pub mod rate_limit;
pub mod routes;
pub mod serve;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
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
    /// How many password hashes run at once, and how long a login waits for a turn.
    pub passwords: passwords::Options,
    /// Origins allowed to call the API from a browser (CORS); empty: none.
    pub cors_origins: Vec<String>,
    /// Send `Strict-Transport-Security` (the public URL is https).
    pub hsts: bool,
    pub header_read_timeout_secs: u64,
    pub idle_timeout_secs: u64,
    pub connections_max: usize,
    /// Idempotency keys one caller may have stored per hour.
    pub idempotency_keys_per_user_max: u32,
    /// Base URLs `/openapi.json` gives as its `servers`: the public API's and the ops
    /// listener's. Unset: the document's own (the default settings').
    pub public_url: Option<String>,
    pub ops_url: Option<String>,
    /// Limits per client IP, per user and per event.
    pub rate_limits: rate_limit::Options,
}

impl Options {
    /// The limits on client connections.
    pub fn serve_options(&self) -> serve::Options {
        serve::Options {
            header_read_timeout_secs: self.header_read_timeout_secs,
            idle_timeout_secs: self.idle_timeout_secs,
            connections_max: self.connections_max,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        let serve = serve::Options::default();
        Self {
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 30 * 24 * 3600,
            request_timeout_secs: 10,
            body_limit_bytes: 64 * 1024,
            passwords: passwords::Options::default(),
            cors_origins: Vec::new(),
            hsts: false,
            header_read_timeout_secs: serve.header_read_timeout_secs,
            idle_timeout_secs: serve.idle_timeout_secs,
            connections_max: serve.connections_max,
            idempotency_keys_per_user_max: 1_000,
            public_url: None,
            ops_url: None,
            rate_limits: rate_limit::Options::default(),
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
    passwords: passwords::Hasher,
    idempotency_quota: idempotency::Quota,
    rate_limits: rate_limit::RateLimits,
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
    /// `shared_rate_limits`: the store every node counts its limits in (Redis); `None`: this
    /// node counts alone.
    pub fn new(
        backend: Arc<dyn Backend>,
        checkout: Arc<dyn Checkout>,
        tokens: TokenKeys,
        options: Options,
        render_metrics: RenderMetrics,
        shared_rate_limits: Option<Arc<dyn rate_limit::Shared>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend,
                checkout,
                tokens,
                passwords: passwords::Hasher::new(&options.passwords),
                idempotency_quota: idempotency::Quota::new(options.idempotency_keys_per_user_max),
                rate_limits: rate_limit::RateLimits::new(
                    options.rate_limits.clone(),
                    shared_rate_limits,
                ),
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

    pub fn passwords(&self) -> &passwords::Hasher {
        &self.inner.passwords
    }

    pub fn idempotency_quota(&self) -> &idempotency::Quota {
        &self.inner.idempotency_quota
    }

    pub fn rate_limits(&self) -> &rate_limit::RateLimits {
        &self.inner.rate_limits
    }

    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    pub fn render_metrics(&self) -> String {
        (self.inner.render_metrics)()
    }
}

/// The public HTTP API of a node (and its OpenAPI document and health checks).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/auth/register", post(routes::accounts::register))
        .route("/v1/auth/login", post(routes::accounts::login))
        .route("/v1/auth/refresh", post(routes::accounts::refresh))
        .route("/v1/auth/logout", post(routes::accounts::logout))
        .route(
            "/v1/events",
            post(routes::events::create).get(routes::events::list),
        )
        .route(
            "/v1/events/{event_id}",
            get(routes::events::get).patch(routes::lifecycle::update),
        )
        .route(
            "/v1/events/{event_id}/ticket-types",
            post(routes::lifecycle::add_ticket_type),
        )
        .route(
            "/v1/events/{event_id}/ticket-types/{code}",
            patch(routes::lifecycle::update_ticket_type),
        )
        .route(
            "/v1/events/{event_id}/cancel",
            post(routes::lifecycle::cancel),
        )
        .route(
            "/v1/events/{event_id}/orders",
            get(routes::organizer::orders),
        )
        .route(
            "/v1/events/{event_id}/attendees",
            get(routes::organizer::attendees),
        )
        .route("/v1/categories", get(routes::events::categories))
        .route("/v1/organizer/events", get(routes::events::list_own))
        .route(
            "/v1/events/{event_id}/availability",
            get(routes::events::availability),
        )
        .route("/v1/events/{event_id}/holds", post(routes::holds::create))
        .route("/v1/events/{event_id}/queue", post(routes::queue::join))
        .route("/v1/events/{event_id}/queue/me", get(routes::queue::me))
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
            "/v1/orders/{order_id}/refunds",
            get(routes::orders::refunds),
        )
        .route(
            "/v1/orders/{order_id}/tickets",
            get(routes::orders::tickets),
        )
        .route(
            "/v1/tickets/{ticket_id}/qr.png",
            get(routes::tickets::qr_png),
        )
        .route("/v1/checkin", post(routes::tickets::checkin))
        .route("/v1/organizer/staff", post(routes::staff::create))
        .route("/v1/payments/vnpay/ipn", get(routes::payments::ipn))
        .route(
            "/v1/payments/vnpay/return",
            get(routes::payments::return_page),
        )
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/openapi.json", get(routes::ops::openapi))
        .route("/docs", get(routes::ops::docs_page))
        .route("/docs/redoc.standalone.js", get(routes::ops::redoc_js))
        // Only for matched routes: a POST to a route that does not exist stores nothing.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ));
    edge(api, &state)
}

/// The operator's API of a node, for the ops listener (loopback by default): metrics, shard
/// administration and health checks. Never served on the public listener.
pub fn ops_router(state: AppState) -> Router {
    let ops = Router::new()
        .route("/v1/admin/shards", get(routes::admin::shards))
        .route(
            "/v1/admin/shards/{shard}/move",
            post(routes::admin::move_shard),
        )
        .route("/v1/admin/nodes", get(routes::admin::nodes))
        .route("/v1/admin/saga/parked", get(routes::saga::parked))
        .route(
            "/v1/admin/saga/parked/{id}/retry",
            post(routes::saga::retry),
        )
        .route(
            "/v1/admin/saga/parked/{id}/discard",
            post(routes::saga::discard),
        )
        .route(
            "/v1/admin/refunds/failed",
            get(routes::saga::failed_refunds),
        )
        .route(
            "/v1/admin/refunds/{id}/retry",
            post(routes::saga::retry_refund),
        )
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics));
    edge(ops, &state)
}

/// What every listener's routes share: metrics, problem+json fallbacks, body limit, request
/// ids, tracing, security headers, CORS, compression and the request timeout.
fn edge(routes: Router<AppState>, state: &AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID);
    let routes = routes
        .route_layer(middleware::from_fn(record_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.options().body_limit_bytes))
        .with_state(state.clone());
    let timeout = Duration::from_secs(state.options().request_timeout_secs.max(1));
    let hsts = state.options().hsts;
    routes.layer(
        ServiceBuilder::new()
            .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(move |req: &Request| {
                let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }))
            .layer(PropagateRequestIdLayer::new(request_id))
            .layer(middleware::from_fn(move |req: Request, next: Next| security_headers(hsts, req, next)))
            .option_layer(cors(&state.options().cors_origins))
            .layer(CompressionLayer::new())
            .layer(middleware::from_fn(move |req: Request, next: Next| with_timeout(timeout, req, next))),
    )
}

/// CORS for the configured origins; none configured, no CORS headers at all (browsers then
/// keep other sites' pages from calling the API).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static(idempotency::HEADER),
            ])
            .expose_headers([
                HeaderName::from_static(REQUEST_ID),
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("ratelimit-policy"),
                HeaderName::from_static("ratelimit"),
            ])
    })
}

/// `X-Content-Type-Options: nosniff` everywhere; on HTML pages a CSP that forbids framing
/// (clickjacking) and foreign scripts; HSTS when the public URL is https.
async fn security_headers(hsts: bool, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if html {
        // A page that sets its own policy (the API page) keeps it.
        headers
            .entry(header::CONTENT_SECURITY_POLICY)
            .or_insert(HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'self' https:",
            ));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    if hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
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
