//! `holdfast shards`: the operator's view of the cluster, through any node's admin API.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRow {
    pub shard: u32,
    pub owner: Option<String>,
    pub epoch: u64,
    pub events: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRow {
    pub node: String,
    pub addr: String,
    pub http_addr: String,
    pub live: bool,
    pub shards: u32,
}

/// One planned move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub shard: u32,
    pub from: Option<String>,
    pub to: String,
}

/// Least-loaded rebalance: shards without a live owner go to the least-loaded live node, then
/// shards move from the most- to the least-loaded node until counts differ by at most one.
/// Among a node's shards, those with the fewest events move first (cheapest handoff).
pub fn plan_rebalance(shards: &[ShardRow], nodes: &[NodeRow]) -> Vec<Move> {
    let live: Vec<&str> = nodes
        .iter()
        .filter(|n| n.live)
        .map(|n| n.node.as_str())
        .collect();
    if live.is_empty() {
        return Vec::new();
    }
    let mut owned: BTreeMap<&str, Vec<&ShardRow>> = live.iter().map(|n| (*n, Vec::new())).collect();
    let mut orphans = Vec::new();
    for s in shards {
        match s.owner.as_deref().and_then(|o| owned.get_mut(o)) {
            Some(list) => list.push(s),
            None => orphans.push(s),
        }
    }
    let mut moves = Vec::new();
    for s in orphans {
        let to = least_loaded(&owned, None);
        moves.push(Move {
            shard: s.shard,
            from: s.owner.clone(),
            to: to.to_owned(),
        });
        owned.get_mut(to).expect("live node").push(s);
    }
    loop {
        let most = owned
            .iter()
            .max_by_key(|(n, l)| (l.len(), std::cmp::Reverse(**n)))
            .map(|(n, _)| *n)
            .expect("live node");
        let least = least_loaded(&owned, None);
        if owned[most].len() <= owned[least].len() + 1 {
            break;
        }
        let list = owned.get_mut(most).expect("live node");
        let (i, _) = list
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| (s.events, s.shard))
            .expect("non-empty");
        let s = list.remove(i);
        moves.push(Move {
            shard: s.shard,
            from: Some(most.to_owned()),
            to: least.to_owned(),
        });
        owned.get_mut(least).expect("live node").push(s);
    }
    moves
}

/// Every shard of `node` to the least-loaded other live node.
pub fn plan_drain(shards: &[ShardRow], nodes: &[NodeRow], node: &str) -> anyhow::Result<Vec<Move>> {
    anyhow::ensure!(
        nodes.iter().any(|n| n.node == node),
        "node {node} is not a member of the cluster"
    );
    let mut owned: BTreeMap<&str, usize> = nodes
        .iter()
        .filter(|n| n.live && n.node != node)
        .map(|n| (n.node.as_str(), 0))
        .collect();
    anyhow::ensure!(!owned.is_empty(), "no other live node to drain {node} to");
    for s in shards {
        if let Some(n) = s.owner.as_deref().and_then(|o| owned.get_mut(o)) {
            *n += 1;
        }
    }
    let mut moves = Vec::new();
    for s in shards.iter().filter(|s| s.owner.as_deref() == Some(node)) {
        let to = owned
            .iter()
            .min_by_key(|(n, c)| (**c, **n))
            .map(|(n, _)| *n)
            .expect("non-empty");
        moves.push(Move {
            shard: s.shard,
            from: Some(node.to_owned()),
            to: to.to_owned(),
        });
        *owned.get_mut(to).expect("present") += 1;
    }
    Ok(moves)
}

/// Shard `shard` to `node`, a live member, from its current owner.
pub fn plan_move(
    shards: &[ShardRow],
    nodes: &[NodeRow],
    shard: u32,
    node: &str,
) -> anyhow::Result<Move> {
    let to = nodes
        .iter()
        .find(|n| n.node == node)
        .with_context(|| format!("node {node} is not a member of the cluster"))?;
    anyhow::ensure!(to.live, "node {node} is not live");
    let row = shards.iter().find(|s| s.shard == shard).with_context(|| {
        format!(
            "there is no shard {shard} (shards 0 to {})",
            shards.len().saturating_sub(1)
        )
    })?;
    anyhow::ensure!(
        row.owner.as_deref() != Some(node),
        "shard {shard} is already on {node}"
    );
    Ok(Move {
        shard,
        from: row.owner.clone(),
        to: node.to_owned(),
    })
}

fn least_loaded<'a>(owned: &BTreeMap<&'a str, Vec<&ShardRow>>, except: Option<&str>) -> &'a str {
    owned
        .iter()
        .filter(|(n, _)| Some(**n) != except)
        .min_by_key(|(n, l)| (l.len(), **n))
        .map(|(n, _)| *n)
        .expect("a live node")
}

/// A client of one node's admin API.
#[derive(Debug)]
pub struct Admin {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    pub fn new(url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let token = token.context("an admin access token is needed: pass --token or set HOLDFAST_TOKEN (log in as an admin: POST /v1/auth/login)")?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self {
            http,
            url: url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let detail = body
                .get("detail")
                .and_then(Value::as_str)
                .unwrap_or("no detail");
            let slug = body.get("type").and_then(Value::as_str).unwrap_or("");
            anyhow::ensure!(
                !slug.ends_with("not-clustered"),
                "{} is a single node, not a cluster member (it has no HOLDFAST_NODE_ID): shards \
                 move between the nodes of a cluster",
                self.url
            );
            anyhow::bail!("{status} {slug}: {detail}");
        }
        Ok(body)
    }

    pub async fn shards(&self) -> anyhow::Result<Vec<ShardRow>> {
        let body = self
            .send(self.http.get(format!("{}/v1/admin/shards", self.url)))
            .await?;
        Ok(serde_json::from_value(body)?)
    }

    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeRow>> {
        let body = self
            .send(self.http.get(format!("{}/v1/admin/nodes", self.url)))
            .await?;
        Ok(serde_json::from_value(body)?)
    }

    pub async fn move_shard(&self, shard: u32, to: &str) -> anyhow::Result<Value> {
        let url = format!("{}/v1/admin/shards/{shard}/move", self.url);
        self.send(self.http.post(url).json(&serde_json::json!({"to": to})))
            .await
    }
}

pub async fn list(admin: &Admin, json: bool) -> anyhow::Result<()> {
    let shards = admin.shards().await?;
    let nodes = admin.nodes().await?;
    if json {
        let tables = serde_json::json!({"shards": shards, "nodes": nodes});
        crate::outln!("{}", serde_json::to_string_pretty(&tables)?)?;
        return Ok(());
    }
    crate::outln!(
        "{:<7} {:<20} {:>7} {:>8}",
        "SHARD",
        "OWNER",
        "EPOCH",
        "EVENTS"
    )?;
    for s in &shards {
        crate::outln!(
            "{:<7} {:<20} {:>7} {:>8}",
            s.shard,
            s.owner.as_deref().unwrap_or("-"),
            s.epoch,
            s.events
        )?;
    }
    crate::outln!()?;
    crate::outln!(
        "{:<20} {:<6} {:>7} {:>8}  {:<22} HTTP",
        "NODE",
        "LIVE",
        "SHARDS",
        "EVENTS",
        "INTERNAL"
    )?;
    for n in &nodes {
        let events: u64 = shards
            .iter()
            .filter(|s| s.owner.as_deref() == Some(n.node.as_str()))
            .map(|s| s.events)
            .sum();
        crate::outln!(
            "{:<20} {:<6} {:>7} {:>8}  {:<22} {}",
            n.node,
            if n.live { "yes" } else { "NO" },
            n.shards,
            events,
            n.addr,
            n.http_addr
        )?;
    }
    Ok(())
}

pub async fn run_moves(admin: &Admin, moves: &[Move], dry_run: bool) -> anyhow::Result<()> {
    if moves.is_empty() {
        crate::outln!("nothing to move: the cluster is balanced")?;
        return Ok(());
    }
    crate::outln!("plan: {} move(s)", moves.len())?;
    for m in moves {
        crate::outln!(
            "  shard {:>5}: {} -> {}",
            m.shard,
            m.from.as_deref().unwrap_or("(none)"),
            m.to
        )?;
    }
    if dry_run {
        crate::outln!("dry run: nothing moved")?;
        return Ok(());
    }
    let started = Instant::now();
    for (i, m) in moves.iter().enumerate() {
        let report = admin
            .move_shard(m.shard, &m.to)
            .await
            .with_context(|| format!("moving shard {} to {}", m.shard, m.to))?;
        crate::outln!(
            "[{}/{}] shard {} moved to {} (epoch {}, paused {} ms)",
            i + 1,
            moves.len(),
            m.shard,
            m.to,
            report.get("epoch").and_then(Value::as_u64).unwrap_or(0),
            report.get("pause_ms").and_then(Value::as_u64).unwrap_or(0)
        )?;
    }
    crate::outln!("done in {:.1} s", started.elapsed().as_secs_f64())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(shard: u32, owner: Option<&str>, events: u64) -> ShardRow {
        ShardRow {
            shard,
            owner: owner.map(str::to_owned),
            epoch: 1,
            events,
        }
    }

    fn node(name: &str, live: bool) -> NodeRow {
        NodeRow {
            node: name.to_owned(),
            addr: String::new(),
            http_addr: String::new(),
            live,
            shards: 0,
        }
    }

    fn counts(shards: &[ShardRow], moves: &[Move]) -> BTreeMap<String, usize> {
        let mut owner: BTreeMap<u32, String> = shards
            .iter()
            .filter_map(|s| s.owner.clone().map(|o| (s.shard, o)))
            .collect();
        for m in moves {
            owner.insert(m.shard, m.to.clone());
        }
        let mut counts = BTreeMap::new();
        for o in owner.values() {
            *counts.entry(o.clone()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn rebalance_evens_out_and_moves_the_lightest_shards() {
        let shards: Vec<ShardRow> = (0..8)
            .map(|i| shard(i, Some("a"), u64::from(8 - i)))
            .collect();
        let nodes = [node("a", true), node("b", true), node("c", true)];
        let moves = plan_rebalance(&shards, &nodes);
        let c = counts(&shards, &moves);
        assert_eq!(c.values().copied().collect::<Vec<_>>(), vec![3, 3, 2]);
        assert_eq!(moves.len(), 5);
        assert_eq!(
            moves[0].shard, 7,
            "the shard with the fewest events moves first"
        );
        assert!(plan_rebalance(&shards, &nodes[..1]).is_empty());
    }

    #[test]
    fn rebalance_gives_orphans_to_live_nodes() {
        let shards = [
            shard(0, Some("dead"), 0),
            shard(1, None, 0),
            shard(2, Some("a"), 0),
        ];
        let nodes = [node("a", true), node("b", true), node("dead", false)];
        let moves = plan_rebalance(&shards, &nodes);
        let c = counts(&shards, &moves);
        assert!(!c.contains_key("dead"));
        assert_eq!(c.values().sum::<usize>(), 3);
        assert!(c.values().all(|&n| n == 1 || n == 2));
    }

    #[test]
    fn drain_empties_the_node_evenly() {
        let shards: Vec<ShardRow> = (0..6)
            .map(|i| shard(i, Some(if i < 4 { "a" } else { "b" }), 0))
            .collect();
        let nodes = [node("a", true), node("b", true), node("c", true)];
        let moves = plan_drain(&shards, &nodes, "a").expect("plan");
        assert_eq!(moves.len(), 4);
        let c = counts(&shards, &moves);
        assert_eq!(c.get("a"), None);
        assert_eq!((c["b"], c["c"]), (3, 3));
        assert!(plan_drain(&shards, &nodes, "zz").is_err());
        assert!(plan_drain(&shards, &[node("a", true)], "a").is_err());
    }

    #[test]
    fn a_move_names_its_owner_and_refuses_mistakes() {
        let shards = [shard(0, Some("a"), 0), shard(1, Some("b"), 0)];
        let nodes = [node("a", true), node("b", true), node("down", false)];
        let m = plan_move(&shards, &nodes, 0, "b").expect("plan");
        assert_eq!((m.from.as_deref(), m.to.as_str()), (Some("a"), "b"));
        for (shard, to, message) in [
            (0, "zz", "not a member"),
            (0, "down", "not live"),
            (7, "b", "no shard 7"),
            (1, "b", "already on b"),
        ] {
            let err = plan_move(&shards, &nodes, shard, to).expect_err(message);
            assert!(err.to_string().contains(message), "{err}");
        }
    }
}
