//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::AppState;

/// The API description, kept beside the code that serves it; a test checks they agree.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.backend().ready().await {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    }
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.render_metrics(),
    )
}

/// Redoc's standalone bundle (MIT, `gateway/assets/redoc.standalone.js.LICENSE.txt`), vendored
/// so the API page needs nothing from outside.
const REDOC_JS: &str = include_str!("../../assets/redoc.standalone.js");

/// `GET /docs`: the OpenAPI document as a page a person can read (Redoc).
pub async fn docs_page() -> impl IntoResponse {
    let page = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
        <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
        <title>Holdfast API</title></head><body>\
        <redoc spec-url=\"/openapi.json\"></redoc>\
        <script src=\"/docs/redoc.standalone.js\"></script></body></html>";
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Redoc injects its styles and runs its search in a blob worker.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
                 worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'",
            ),
        ],
        page,
    )
}

/// `GET /docs/redoc.standalone.js`.
pub async fn redoc_js() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
}

pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    let options = state.options();
    let body = document(options.public_url.as_deref(), options.ops_url.as_deref());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// [`OPENAPI`] with the node's own addresses as `servers`: the public API's at the top, the
/// ops listener's on the paths served there.
pub fn document(public_url: Option<&str>, ops_url: Option<&str>) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(OPENAPI) else {
        return OPENAPI.to_owned();
    };
    let set_url = |servers: Option<&mut serde_json::Value>, url: &str| {
        if let Some(server) = servers
            .and_then(serde_json::Value::as_array_mut)
            .and_then(|s| s.first_mut())
        {
            server["url"] = json!(url.trim_end_matches('/'));
        }
    };
    if let Some(url) = public_url {
        set_url(doc.get_mut("servers"), url);
    }
    if let (Some(url), Some(paths)) = (
        ops_url,
        doc.get_mut("paths")
            .and_then(serde_json::Value::as_object_mut),
    ) {
        for item in paths.values_mut() {
            set_url(item.get_mut("servers"), url);
        }
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn servers_are_the_nodes_own() {
        let doc: Value = serde_json::from_str(&super::document(
            Some("https://tickets.example.com/"),
            Some("http://10.0.0.5:19091"),
        ))
        .expect("JSON");
        assert_eq!(doc["servers"][0]["url"], "https://tickets.example.com");
        assert_eq!(
            doc["paths"]["/metrics"]["servers"][0]["url"],
            "http://10.0.0.5:19091"
        );
        assert!(doc["paths"]["/v1/events"].get("servers").is_none());
        let unchanged: Value = serde_json::from_str(&super::document(None, None)).expect("JSON");
        assert_eq!(unchanged["servers"][0]["url"], "http://127.0.0.1:8080");
    }
}
