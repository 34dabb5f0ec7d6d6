//! The cluster: events sharded across nodes, ownership decided in PostgreSQL.
//!
//! Each node heartbeats into `cluster_nodes`; shards are claimed by compare-and-set on their
//! epoch in `cluster_shards`; every journal write is fenced by that epoch, so a paused or
//! partitioned former owner can never write after a move. Any node serves any request: it runs
//! it locally when it owns the event's shard, or forwards it over the internal API. A "not
//! owner" answer refreshes the cached map and retries (operations are idempotent by id).

pub mod tls;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use holdfast_actors::EventId;
use holdfast_actors::actor::Clock;
use holdfast_persistence::{NodeRow, ShardRow, Store};
use tokio::sync::watch;

use crate::inventories::Inventories;
use crate::ops::{InventoryOp, InventoryReply, OpError};
use wire::{HandoffReport, InventoryRequest};

/// Requests held back while their shard is handed off, at most (beyond: 503 `overloaded`).
const HANDOFF_WAITERS_MAX: usize = 10_000;
/// Longest a request waits for a handoff before it is answered 503.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);
/// Attempts of one request across map refreshes and moves.
const ROUTE_ATTEMPTS: u32 = 5;

/// Settings of a clustered node.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node_id: String,
    /// What other nodes dial for the internal API.
    pub advertise_addr: String,
    /// This node's public API, shown to operators.
    pub http_addr: String,
    pub shards: u32,
    pub lease: Duration,
    /// CA certificates other nodes' internal APIs must chain to (TLS); `None`: h2c.
    pub tls_roots: Option<Vec<reqwest::Certificate>>,
    /// The inventory role: this node heartbeats, claims shards and runs their events. Without
    /// it the node is no member: it only reads the shard map and forwards every operation to
    /// the owners.
    pub hosts_shards: bool,
}

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("shard {0} does not exist")]
    ShardNotFound(u32),
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(String),
    #[error("node {0} is not alive (no heartbeat within the lease)")]
    NodeNotLive(String),
    #[error("shard {0} is not owned by this node")]
    NotOwner(u32),
    #[error("shard {0} moved while this move ran; list the shards and try again")]
    Raced(u32),
    #[error("store: {0}")]
    Store(#[from] holdfast_persistence::Error),
    #[error("{0}")]
    Remote(String),
}

#[derive(Debug, Default)]
struct View {
    shards: Vec<ShardRow>,
    nodes: Vec<NodeRow>,
}

enum Placement {
    Local(u64),
    Remote(String),
    /// No live owner right now (failover in progress) or this node's lease is stale.
    Unsettled,
}

/// One node's view of and part in the cluster.
pub struct Cluster {
    settings: Settings,
    store: Store,
    inventories: Arc<Inventories>,
    clock: Arc<dyn Clock>,
    client: wire::Client,
    key: String,
    view: RwLock<View>,
    last_beat: Mutex<Option<Instant>>,
    last_refresh: tokio::sync::Mutex<Option<Instant>>,
    handoff: tokio::sync::Mutex<()>,
    handing_off: Mutex<HashMap<u32, watch::Receiver<bool>>>,
    waiters: AtomicUsize,
    ready: AtomicBool,
    membership: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Cluster {
    /// Joins the cluster: checks the shard count, registers, claims orphaned shards and starts
    /// the membership loop. Returns once the node's first ownership round is done.
    pub async fn join(
        settings: Settings,
        store: Store,
        inventories: Arc<Inventories>,
        clock: Arc<dyn Clock>,
        secret: &[u8],
    ) -> Result<Arc<Self>, Error> {
        store.cluster_init(settings.shards).await?;
        let key = wire::cluster_key(secret);
        let cluster = Arc::new(Self {
            client: wire::Client::new(key.clone(), settings.tls_roots.as_deref()),
            key,
            settings,
            store,
            inventories,
            clock,
            view: RwLock::new(View::default()),
            last_beat: Mutex::new(None),
            last_refresh: tokio::sync::Mutex::new(None),
            handoff: tokio::sync::Mutex::new(()),
            handing_off: Mutex::new(HashMap::new()),
            waiters: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            membership: Mutex::new(None),
        });
        if !cluster.settings.hosts_shards {
            // A former incarnation with the inventory role may still hold shards: give them
            // up now rather than after the lease.
            let released = cluster.store.node_leave(cluster.node_id()).await?;
            cluster.refresh(true).await;
            cluster.ready.store(true, Ordering::Release);
            tracing::info!(node = %cluster.settings.node_id, released, "following the cluster without the inventory role: every operation goes to the shards' owners");
            let task = tokio::spawn(Arc::clone(&cluster).follow());
            *lock(&cluster.membership) = Some(task);
            return Ok(cluster);
        }
        let started_ms = cluster.clock.now().as_millis();
        cluster.beat(started_ms).await?;
        cluster.round(started_ms).await?;
        cluster.ready.store(true, Ordering::Release);
        tracing::info!(node = %cluster.settings.node_id, shards = cluster.settings.shards, owned = cluster.owned().len(), "joined the cluster");
        let task = tokio::spawn(Arc::clone(&cluster).membership(started_ms));
        *lock(&cluster.membership) = Some(task);
        Ok(cluster)
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.settings.lease.as_millis()).unwrap_or(i64::MAX)
    }

    fn is_live(&self, node: &NodeRow, now_ms: i64) -> bool {
        node.heartbeat_at_ms > now_ms - self.lease_ms()
    }

    /// This node may serve its shards only while its own lease is fresh, with a margin: the
    /// others claim its shards a full lease after its last heartbeat.
    fn lease_ok(&self) -> bool {
        lock(&self.last_beat).is_some_and(|at| at.elapsed() < self.settings.lease * 3 / 4)
    }

    fn owned(&self) -> Vec<u32> {
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.shards
            .iter()
            .filter(|s| s.owner.as_deref() == Some(self.node_id()))
            .map(|s| s.shard)
            .collect()
    }

    async fn beat(&self, started_ms: i64) -> Result<(), Error> {
        let sent = Instant::now();
        let row = NodeRow {
            node_id: self.settings.node_id.clone(),
            addr: self.settings.advertise_addr.clone(),
            http_addr: self.settings.http_addr.clone(),
            heartbeat_at_ms: self.clock.now().as_millis(),
            started_at_ms: started_ms,
        };
        self.store.node_heartbeat(&row).await?;
        // The lease counts from when the beat was sent, not from when it was acknowledged.
        *lock(&self.last_beat) = Some(sent);
        Ok(())
    }

    async fn membership(self: Arc<Self>, started_ms: i64) {
        let mut every =
            tokio::time::interval((self.settings.lease / 3).max(Duration::from_millis(100)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if let Err(e) = self.beat(started_ms).await {
                tracing::warn!(error = %e, "heartbeat failed");
                continue;
            }
            if let Err(e) = self.round(started_ms).await {
                tracing::warn!(error = %e, "ownership round failed");
            }
        }
    }

    /// A node without the inventory role: keeps its map of owners fresh, nothing else.
    async fn follow(self: Arc<Self>) {
        let mut every =
            tokio::time::interval((self.settings.lease / 3).max(Duration::from_millis(100)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.refresh(true).await;
        }
    }

    /// Refreshes the map and claims orphaned shards up to this node's fair share.
    async fn round(&self, _started_ms: i64) -> Result<(), Error> {
        self.refresh(true).await;
        let now = self.clock.now().as_millis();
        let (orphans, live, mine) = {
            let view = self
                .view
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let live: Vec<&str> = view
                .nodes
                .iter()
                .filter(|n| self.is_live(n, now))
                .map(|n| n.node_id.as_str())
                .collect();
            let orphans: Vec<ShardRow> = view
                .shards
                .iter()
                .filter(|s| s.owner.as_deref().is_none_or(|o| !live.contains(&o)))
                .cloned()
                .collect();
            let mine = view
                .shards
                .iter()
                .filter(|s| s.owner.as_deref() == Some(self.node_id()))
                .count();
            (orphans, live.len().max(1), mine)
        };
        if orphans.is_empty() {
            return Ok(());
        }
        let target = (self.settings.shards as usize).div_ceil(live);
        let mut claimed = Vec::new();
        // A claim lost to a faster node does not count: go on to the next orphan, so a dead
        // node's shards are all taken in one round when the survivors have room.
        let wanted = target.saturating_sub(mine);
        for shard in &orphans {
            if claimed.len() >= wanted {
                break;
            }
            if let Some(epoch) = self
                .store
                .claim_shard(shard.shard, shard.epoch, self.node_id())
                .await?
            {
                tracing::info!(shard = shard.shard, epoch, previous = ?shard.owner, "claimed orphaned shard");
                metrics::counter!("holdfast_shard_claims_total").increment(1);
                claimed.push(shard.shard);
            }
        }
        if !claimed.is_empty() {
            self.refresh(true).await;
        }
        Ok(())
    }

    /// Reloads the shard map and membership. Unless `force`, at most every 50 ms: many
    /// requests told "not owner" at once share one reload.
    pub async fn refresh(&self, force: bool) {
        let mut last = self.last_refresh.lock().await;
        if !force && last.is_some_and(|at| at.elapsed() < Duration::from_millis(50)) {
            return;
        }
        let loaded = tokio::try_join!(self.store.shards(), self.store.nodes());
        let (shards, nodes) = match loaded {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "refreshing the shard map failed");
                return;
            }
        };
        *last = Some(Instant::now());
        drop(last);
        let me = self.node_id().to_owned();
        let lost: Vec<u32> = {
            let mut view = self
                .view
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let lost = view
                .shards
                .iter()
                .zip(&shards)
                .filter(|(old, new)| {
                    old.owner.as_deref() == Some(&me)
                        && (new.owner.as_deref() != Some(&me) || new.epoch != old.epoch)
                })
                .map(|(old, _)| old.shard)
                .collect();
            *view = View { shards, nodes };
            lost
        };
        metrics::gauge!("holdfast_shards_owned").set(self.owned().len() as f64);
        if !lost.is_empty() {
            tracing::warn!(shards = ?lost, "stepping down: shards now belong to another epoch");
            metrics::counter!("holdfast_step_downs_total").increment(lost.len() as u64);
            let n = self.settings.shards;
            self.inventories
                .stop_where(|e| lost.contains(&e.shard(n)))
                .await;
        }
    }

    fn placement(&self, shard: u32) -> Placement {
        let now = self.clock.now().as_millis();
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(row) = view.shards.get(shard as usize) else {
            return Placement::Unsettled;
        };
        match row.owner.as_deref() {
            Some(owner) if owner == self.node_id() => {
                if self.lease_ok() {
                    Placement::Local(row.epoch)
                } else {
                    Placement::Unsettled
                }
            }
            Some(owner) => match view.nodes.iter().find(|n| n.node_id == owner) {
                Some(node) if self.is_live(node, now) => Placement::Remote(node.addr.clone()),
                _ => Placement::Unsettled,
            },
            None => Placement::Unsettled,
        }
    }

    /// Waits while `shard` is being handed off by this node. Bounded in count and time.
    async fn wait_for_handoff(&self, shard: u32) -> Result<(), OpError> {
        let Some(mut done) = lock(&self.handing_off).get(&shard).cloned() else {
            return Ok(());
        };
        if self.waiters.fetch_add(1, Ordering::AcqRel) >= HANDOFF_WAITERS_MAX {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            return Err(OpError::Overloaded);
        }
        let waited = tokio::time::timeout(HANDOFF_WAIT, done.wait_for(|d| *d)).await;
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        waited
            .map(|_| ())
            .map_err(|_| OpError::Unavailable("shard handoff is taking long; retry".to_owned()))
    }

    /// Runs `op` where the event lives: here, or on its owner. Retries across moves.
    pub async fn execute(
        &self,
        event_id: EventId,
        op: InventoryOp,
    ) -> Result<InventoryReply, OpError> {
        let shard = event_id.shard(self.settings.shards);
        let mut last_error = OpError::Unavailable("no owner for this event's shard yet".to_owned());
        for attempt in 0..ROUTE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20u64 << attempt.min(5))).await;
                self.refresh(false).await;
            }
            self.wait_for_handoff(shard).await?;
            match self.placement(shard) {
                Placement::Local(epoch) => {
                    match self.inventories.execute(event_id, epoch, op.clone()).await {
                        Err(e @ (OpError::NotOwner | OpError::Unavailable(_))) => last_error = e,
                        result => return result,
                    }
                }
                Placement::Remote(addr) => {
                    metrics::counter!("holdfast_forwarded_total").increment(1);
                    match self
                        .client
                        .inventory(
                            &addr,
                            InventoryRequest {
                                event_id,
                                op: op.clone(),
                            },
                        )
                        .await
                    {
                        Ok(Err(e @ (OpError::NotOwner | OpError::Unavailable(_)))) => {
                            last_error = e
                        }
                        Ok(result) => return result,
                        Err(e) => {
                            tracing::debug!(error = %e, "forwarding failed");
                            last_error = OpError::Unavailable(e.to_string());
                        }
                    }
                }
                Placement::Unsettled => {}
            }
        }
        Err(last_error)
    }

    /// Runs `op` here if this node owns the event's shard; never forwards.
    pub async fn execute_local(
        &self,
        event_id: EventId,
        op: InventoryOp,
    ) -> Result<InventoryReply, OpError> {
        let shard = event_id.shard(self.settings.shards);
        self.wait_for_handoff(shard).await?;
        match self.placement(shard) {
            Placement::Local(epoch) => self.inventories.execute(event_id, epoch, op).await,
            _ => Err(OpError::NotOwner),
        }
    }

    /// Planned move of a shard this node owns: stop admitting (requests wait), stop the
    /// shard's actors (each flushes its journal and snapshots), hand the epoch to `to`, then
    /// let the waiting requests through to the new owner.
    pub async fn hand_off(&self, shard: u32, to: &str) -> Result<HandoffReport, Error> {
        let _one_at_a_time = self.handoff.lock().await;
        self.refresh(true).await;
        let row = self.shard_row(shard)?;
        if row.owner.as_deref() != Some(self.node_id()) {
            return Err(Error::NotOwner(shard));
        }
        self.live_node(to)?;
        let started = Instant::now();
        let (done_tx, done_rx) = watch::channel(false);
        lock(&self.handing_off).insert(shard, done_rx);
        let n = self.settings.shards;
        let stopped = self.inventories.stop_where(|e| e.shard(n) == shard).await;
        let claimed = self.store.claim_shard(shard, row.epoch, to).await;
        if let Ok(Some(epoch)) = claimed {
            // The view learns of the planned move here, so the refresh below does not take it
            // for a lost shard (a step-down).
            self.set_owner(shard, to, epoch);
        }
        self.refresh(true).await;
        // Actors activated by requests that were already past the gate when it closed.
        self.inventories.stop_where(|e| e.shard(n) == shard).await;
        lock(&self.handing_off).remove(&shard);
        let _ = done_tx.send(true);
        let pause = started.elapsed();
        let epoch = match claimed {
            Ok(Some(epoch)) => epoch,
            Ok(None) => return Err(Error::Raced(shard)),
            Err(e) => return Err(e.into()),
        };
        self.notify(to).await;
        metrics::counter!("holdfast_shard_moves_total").increment(1);
        metrics::histogram!("holdfast_handoff_seconds").record(pause.as_secs_f64());
        let pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
        tracing::info!(shard, from = %self.node_id(), to, epoch, actors = stopped, pause_ms, "shard handed off");
        Ok(HandoffReport {
            shard,
            from: self.node_id().to_owned(),
            to: to.to_owned(),
            epoch,
            pause_ms,
        })
    }

    /// Moves `shard` to `to` from whichever node the operator asked.
    pub async fn move_shard(&self, shard: u32, to: &str) -> Result<HandoffReport, Error> {
        self.refresh(true).await;
        let row = self.shard_row(shard)?;
        self.live_node(to)?;
        let now = self.clock.now().as_millis();
        match row.owner.as_deref() {
            Some(owner) if owner == to => Ok(HandoffReport {
                shard,
                from: owner.to_owned(),
                to: to.to_owned(),
                epoch: row.epoch,
                pause_ms: 0,
            }),
            Some(owner) if owner == self.node_id() => self.hand_off(shard, to).await,
            Some(owner) if self.node(owner).is_some_and(|n| self.is_live(&n, now)) => {
                let addr = self.node(owner).map(|n| n.addr).unwrap_or_default();
                match self.client.handoff(&addr, shard, to).await {
                    Ok(Ok(report)) => {
                        self.refresh(true).await;
                        Ok(report)
                    }
                    Ok(Err(e)) => Err(Error::Remote(e)),
                    Err(e) => Err(Error::Remote(e.to_string())),
                }
            }
            // No live owner to hand off: take the shard over; fencing stops a revenant owner.
            previous => {
                let epoch = self
                    .store
                    .claim_shard(shard, row.epoch, to)
                    .await?
                    .ok_or(Error::Raced(shard))?;
                self.refresh(true).await;
                self.notify(to).await;
                metrics::counter!("holdfast_shard_moves_total").increment(1);
                tracing::info!(shard, from = ?previous, to, epoch, "shard taken over from a dead owner");
                Ok(HandoffReport {
                    shard,
                    from: previous.unwrap_or("").to_owned(),
                    to: to.to_owned(),
                    epoch,
                    pause_ms: 0,
                })
            }
        }
    }

    async fn notify(&self, node_id: &str) {
        if node_id == self.node_id() {
            self.refresh(true).await;
        } else if let Some(node) = self.node(node_id)
            && let Err(e) = self.client.refresh(&node.addr).await
        {
            tracing::debug!(node = node_id, error = %e, "could not tell the new owner; it will see the move on its next round");
        }
    }

    fn set_owner(&self, shard: u32, owner: &str, epoch: u64) {
        let mut view = self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(row) = view.shards.get_mut(shard as usize) {
            row.owner = Some(owner.to_owned());
            row.epoch = epoch;
        }
    }

    fn shard_row(&self, shard: u32) -> Result<ShardRow, Error> {
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.shards
            .get(shard as usize)
            .cloned()
            .ok_or(Error::ShardNotFound(shard))
    }

    fn node(&self, node_id: &str) -> Option<NodeRow> {
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.nodes.iter().find(|n| n.node_id == node_id).cloned()
    }

    fn live_node(&self, node_id: &str) -> Result<NodeRow, Error> {
        let node = self
            .node(node_id)
            .ok_or_else(|| Error::UnknownNode(node_id.to_owned()))?;
        if self.is_live(&node, self.clock.now().as_millis()) {
            Ok(node)
        } else {
            Err(Error::NodeNotLive(node_id.to_owned()))
        }
    }

    /// Shards with owner, epoch and the number of catalog events in each.
    pub async fn shard_table(&self) -> Result<Vec<(ShardRow, u64)>, Error> {
        self.refresh(true).await;
        let mut events: HashMap<u32, u64> = HashMap::new();
        for id in self.store.event_ids().await? {
            *events
                .entry(EventId(id).shard(self.settings.shards))
                .or_default() += 1;
        }
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(view
            .shards
            .iter()
            .map(|s| (s.clone(), events.get(&s.shard).copied().unwrap_or(0)))
            .collect())
    }

    /// Members with liveness and how many shards each owns.
    pub async fn node_table(&self) -> Vec<(NodeRow, bool, usize)> {
        self.refresh(true).await;
        let now = self.clock.now().as_millis();
        let view = self
            .view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        view.nodes
            .iter()
            .map(|n| {
                let owned = view
                    .shards
                    .iter()
                    .filter(|s| s.owner.as_deref() == Some(n.node_id.as_str()))
                    .count();
                (n.clone(), self.is_live(n, now), owned)
            })
            .collect()
    }

    /// Leaves cleanly: actors stopped and snapshotted, shards given up for others to claim.
    pub async fn leave(&self) {
        self.ready.store(false, Ordering::Release);
        if let Some(task) = lock(&self.membership).take() {
            task.abort();
        }
        self.inventories.stop_all().await;
        if !self.settings.hosts_shards {
            return;
        }
        match self.store.node_leave(self.node_id()).await {
            Ok(n) => tracing::info!(released = n, "left the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "leaving the cluster failed; shards return after the lease")
            }
        }
    }
}
