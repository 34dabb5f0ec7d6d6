//! `GET /v1/admin/shards`, `POST /v1/admin/shards/{shard}/move`, `GET /v1/admin/nodes` (admin).

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::{AuthUser, Role};
use crate::extract::ApiJson;
use crate::problem::Problem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    pub to: String,
}

pub async fn shards(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, Problem> {
    user.require(&[Role::Admin])?;
    let shards = state.backend().shards().await?;
    Ok(Json(Value::Array(
        shards.iter().map(|s| json!({"shard": s.shard, "owner": s.owner, "epoch": s.epoch, "events": s.events})).collect(),
    )))
}

pub async fn nodes(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, Problem> {
    user.require(&[Role::Admin])?;
    let nodes = state.backend().nodes().await?;
    Ok(Json(Value::Array(
        nodes
            .iter()
            .map(|n| {
                json!({"node": n.node_id, "addr": n.addr, "http_addr": n.http_addr, "live": n.live,
                       "shards": n.shards, "heartbeat_age_ms": n.heartbeat_age_ms})
            })
            .collect(),
    )))
}

pub async fn move_shard(
    State(state): State<AppState>,
    user: AuthUser,
    Path(shard): Path<String>,
    ApiJson(req): ApiJson<MoveRequest>,
) -> Result<Json<Value>, Problem> {
    user.require(&[Role::Admin])?;
    let shard: u32 = shard.parse().map_err(|_| {
        Problem::new(
            axum::http::StatusCode::NOT_FOUND,
            "shard-not-found",
            "Shard not found",
            "a shard is a number",
        )
    })?;
    let report = state.backend().move_shard(shard, &req.to).await?;
    tracing::info!(shard, from = %report.from, to = %report.to, epoch = report.epoch, pause_ms = report.pause_ms, admin = %user.id, "shard moved");
    Ok(Json(
        json!({"shard": report.shard, "from": report.from, "to": report.to, "epoch": report.epoch, "pause_ms": report.pause_ms}),
    ))
}
