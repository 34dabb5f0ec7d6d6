//! The event actors of this node: started on first use (recovered from snapshot + journal),
//! restarted after a fail-stop or passivation, stopped per shard when the shard leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_actors::actor::{self, CallError, Clock, Handle, Journal, StartError};
use holdfast_actors::queue::QueueConfig;
use holdfast_actors::{Command, EventId, QueueSetup, SaleWindow, TicketCode, Timestamp};
use holdfast_persistence::Store;
use rand::RngCore;

use crate::ops::{InventoryOp, InventoryReply, OpError};

/// Writer epoch of a node that is not clustered.
pub const SINGLE_NODE_EPOCH: u64 = 1;

/// How long a successor waits for a stopping actor before giving up with 503.
const EXIT_WAIT: Duration = Duration::from_secs(5);

/// Running event actors by event id.
pub struct Inventories {
    running: Mutex<HashMap<EventId, Handle>>,
    /// Serialises activations so one event never gets two actors.
    activating: tokio::sync::Mutex<()>,
    store: Store,
    journal: Arc<dyn Journal>,
    clock: Arc<dyn Clock>,
    options: actor::Options,
}

impl std::fmt::Debug for Inventories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inventories")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Inventories {
    pub fn new(
        store: Store,
        journal: Arc<dyn Journal>,
        clock: Arc<dyn Clock>,
        options: actor::Options,
    ) -> Self {
        Self {
            running: Mutex::new(HashMap::new()),
            activating: tokio::sync::Mutex::new(()),
            store,
            journal,
            clock,
            options,
        }
    }

    fn current(&self, event_id: EventId) -> Option<Handle> {
        lock(&self.running).get(&event_id).cloned()
    }

    /// The actor of `event_id` writing as `epoch`, started (and recovered) if needed.
    pub async fn get(&self, event_id: EventId, epoch: u64) -> Result<Handle, OpError> {
        if let Some(handle) = self.current(event_id)
            && handle.is_running()
            && handle.epoch() == epoch
        {
            return Ok(handle);
        }
        let _guard = self.activating.lock().await;
        if let Some(handle) = self.current(event_id) {
            if handle.is_running() && handle.epoch() == epoch {
                return Ok(handle);
            }
            // A predecessor (stopping, fail-stopped or of an older epoch) must be gone before a
            // successor recovers, or the successor could miss its last batch.
            handle.stop().await;
            tokio::time::timeout(EXIT_WAIT, handle.exited())
                .await
                .map_err(|_| OpError::Unavailable(format!("event {event_id} is still stopping")))?;
        }
        let event = self
            .store
            .event(event_id.0)
            .await
            .map_err(|e| OpError::Unavailable(format!("catalog: {e}")))?
            .ok_or(OpError::EventNotFound)?;
        let mut definitions = Vec::with_capacity(event.ticket_types.len());
        for t in &event.ticket_types {
            let code = TicketCode::parse(&t.code)
                .map_err(|e| OpError::Internal(format!("catalog ticket type {:?}: {e}", t.code)))?;
            definitions.push(Command::DefineTicketType {
                code,
                capacity: u32::try_from(t.capacity).unwrap_or(u32::MAX),
                per_user_limit: t
                    .per_user_limit
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            });
        }
        // The catalog is written before the actor, so what an edit left undone in the actor
        // (it was down, or its answer was lost) is done when it starts again.
        definitions.push(Command::SetSaleWindow {
            window: SaleWindow {
                starts_at: event.sale_starts_at_ms.map(Timestamp),
                ends_at: event.sale_ends_at_ms.map(Timestamp),
            },
        });
        definitions.push(Command::SetQueue {
            queue: catalog_queue(&event)?,
        });
        if event.cancelled_at_ms.is_some() {
            definitions.push(Command::Cancel);
        }
        let handle = actor::start(
            event_id,
            epoch,
            definitions,
            Arc::clone(&self.journal),
            Arc::clone(&self.clock),
            self.options.clone(),
        )
        .await
        .map_err(|e| match e {
            StartError::Journal(actor::JournalError::Fenced { .. }) => OpError::NotOwner,
            StartError::Journal(e) => {
                OpError::Unavailable(format!("recovering event {event_id}: {e}"))
            }
            e => OpError::Internal(format!("recovering event {event_id}: {e}")),
        })?;
        let mut running = lock(&self.running);
        running.insert(event_id, handle.clone());
        metrics::gauge!("holdfast_event_actors").set(running.len() as f64);
        Ok(handle)
    }

    /// Runs `op` on the local actor of `event_id` as writer `epoch`.
    pub async fn execute(
        &self,
        event_id: EventId,
        epoch: u64,
        op: InventoryOp,
    ) -> Result<InventoryReply, OpError> {
        let actor = self.get(event_id, epoch).await?;
        let reply = match op {
            op @ (InventoryOp::Hold { .. } | InventoryOp::HoldAdmitted { .. }) => {
                InventoryReply::Hold(actor.call(hold_command(op)).await.map_err(call_error)?)
            }
            InventoryOp::JoinQueue { user } => {
                let (joined, read) = actor.join_queue(user).await.map_err(call_error)?;
                InventoryReply::Joined { joined, read }
            }
            InventoryOp::ReadQueue { user } => {
                InventoryReply::Queue(actor.queue(user).await.map_err(call_error)?)
            }
            InventoryOp::GetHold(hold_id) => {
                InventoryReply::Hold(actor.hold(hold_id).await.map_err(call_error)?)
            }
            InventoryOp::Stock => InventoryReply::Stock(actor.stock().await.map_err(call_error)?),
            op => {
                actor.call(done_command(op)).await.map_err(call_error)?;
                InventoryReply::Done
            }
        };
        Ok(reply)
    }

    /// Stops the actors of the events `which` selects, each after its queued messages and a
    /// final snapshot, and waits until they have ended.
    pub async fn stop_where(&self, which: impl Fn(EventId) -> bool) -> usize {
        let _guard = self.activating.lock().await;
        let handles: Vec<Handle> = {
            let mut running = lock(&self.running);
            let ids: Vec<EventId> = running.keys().copied().filter(|id| which(*id)).collect();
            let handles = ids.iter().filter_map(|id| running.remove(id)).collect();
            metrics::gauge!("holdfast_event_actors").set(running.len() as f64);
            handles
        };
        for handle in &handles {
            handle.stop().await;
            let _ = tokio::time::timeout(EXIT_WAIT, handle.exited()).await;
        }
        handles.len()
    }

    /// Stops every actor, each with a final snapshot.
    pub async fn stop_all(&self) {
        self.stop_where(|_| true).await;
    }

    /// Number of running actors per shard, for operators.
    pub fn running_per_shard(&self, shards: u32) -> HashMap<u32, usize> {
        let mut counts = HashMap::new();
        for id in lock(&self.running).keys() {
            *counts.entry(id.shard(shards)).or_default() += 1;
        }
        counts
    }
}

/// The waiting room the catalog gives `event`, as [`queue_setup`] makes it.
fn catalog_queue(event: &holdfast_persistence::EventRow) -> Result<Option<QueueSetup>, OpError> {
    let Some(raw) = event.queue.as_deref() else {
        return Ok(None);
    };
    let config: QueueConfig = serde_json::from_str(raw).map_err(|e| {
        OpError::Internal(format!("event {} has bad queue settings: {e}", event.id))
    })?;
    let opens_at_ms = event.sale_starts_at_ms.unwrap_or(event.created_at_ms);
    Ok(Some(queue_setup(config, opens_at_ms)))
}

/// A waiting room with `config`, opening at `opens_at_ms` (the start of its sale). The seed of
/// its pre-queue is drawn here, from the operating system's CSPRNG, and counts only when the
/// queue is new (the actor journals it with the queue); a running queue keeps its own.
pub fn queue_setup(config: QueueConfig, opens_at_ms: i64) -> QueueSetup {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    QueueSetup {
        settings: config.settings(),
        opens_at: Timestamp(opens_at_ms),
        seed,
    }
}

/// The hold an operation asks for: on a queued event, with the buyer's admission.
fn hold_command(op: InventoryOp) -> Command {
    let (hold_id, user, items, ttl_ms, admission) = match op {
        InventoryOp::Hold {
            hold_id,
            user,
            items,
            ttl_ms,
        } => (hold_id, user, items, ttl_ms, None),
        InventoryOp::HoldAdmitted {
            hold_id,
            user,
            items,
            ttl_ms,
            admission,
        } => (hold_id, user, items, ttl_ms, Some(admission)),
        _ => unreachable!("not a hold"),
    };
    Command::Hold {
        hold_id,
        user,
        items,
        ttl_ms,
        admission,
    }
}

/// The command of an operation answered with [`InventoryReply::Done`].
fn done_command(op: InventoryOp) -> Command {
    match op {
        InventoryOp::Release(hold_id) => Command::Release { hold_id },
        InventoryOp::Confirm { hold_id, order_id } => Command::Confirm { hold_id, order_id },
        InventoryOp::Return { order_id } => Command::Return { order_id },
        InventoryOp::ReturnPart { order_id, keep } => Command::ReturnPart { order_id, keep },
        InventoryOp::Define {
            code,
            capacity,
            per_user_limit,
        } => Command::DefineTicketType {
            code,
            capacity,
            per_user_limit,
        },
        InventoryOp::AdjustCapacity {
            ticket_type,
            capacity,
        } => Command::AdjustCapacity {
            ticket_type,
            capacity,
        },
        InventoryOp::SetSaleWindow(window) => Command::SetSaleWindow { window },
        InventoryOp::Cancel => Command::Cancel,
        InventoryOp::SetPerUserLimit {
            ticket_type,
            per_user_limit,
        } => Command::SetPerUserLimit {
            ticket_type,
            per_user_limit,
        },
        InventoryOp::SetQueue(queue) => Command::SetQueue { queue },
        InventoryOp::Hold { .. }
        | InventoryOp::HoldAdmitted { .. }
        | InventoryOp::GetHold(_)
        | InventoryOp::Stock
        | InventoryOp::JoinQueue { .. }
        | InventoryOp::ReadQueue { .. } => {
            unreachable!("answered with more than Done")
        }
    }
}

fn call_error(e: CallError) -> OpError {
    match e {
        CallError::Rejected(e) => OpError::Inventory(e),
        CallError::Overloaded => OpError::Overloaded,
        CallError::Unavailable => {
            OpError::Unavailable("event actor stopped; it restarts on the next request".to_owned())
        }
    }
}
