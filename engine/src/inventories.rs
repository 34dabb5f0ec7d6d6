//! The event actors of this node: started on first use, recovered from snapshot + journal,
//! restarted on the next message after a fail-stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use holdfast_actors::actor::{self, CallError, Clock, Handle, Journal, StartError};
use holdfast_actors::{Command, EventId, TicketCode};
use holdfast_gateway::backend::BackendError;
use holdfast_persistence::Store;

/// Writer epoch of a single node. The cluster assigns real epochs per shard.
pub const SINGLE_NODE_EPOCH: u64 = 1;

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

impl Inventories {
    pub fn new(store: Store, clock: Arc<dyn Clock>, options: actor::Options) -> Self {
        let journal: Arc<dyn Journal> = Arc::new(store.journal());
        Self {
            running: Mutex::new(HashMap::new()),
            activating: tokio::sync::Mutex::new(()),
            store,
            journal,
            clock,
            options,
        }
    }

    fn running(&self, event_id: EventId) -> Option<Handle> {
        let running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        running.get(&event_id).filter(|h| h.is_running()).cloned()
    }

    /// The actor of `event_id`, started (and recovered) if it is not running.
    pub async fn get(&self, event_id: EventId) -> Result<Handle, BackendError> {
        if let Some(handle) = self.running(event_id) {
            return Ok(handle);
        }
        let _guard = self.activating.lock().await;
        if let Some(handle) = self.running(event_id) {
            return Ok(handle);
        }
        let event = self
            .store
            .event(event_id.0)
            .await
            .map_err(|e| BackendError::Unavailable(format!("catalog: {e}")))?
            .ok_or(BackendError::EventNotFound)?;
        let mut definitions = Vec::with_capacity(event.ticket_types.len());
        for t in &event.ticket_types {
            let code = TicketCode::parse(&t.code).map_err(|e| {
                BackendError::Internal(format!("catalog ticket type {:?}: {e}", t.code))
            })?;
            definitions.push(Command::DefineTicketType {
                code,
                capacity: u32::try_from(t.capacity).unwrap_or(u32::MAX),
                per_user_limit: t
                    .per_user_limit
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            });
        }
        let handle = actor::start(
            event_id,
            SINGLE_NODE_EPOCH,
            definitions,
            Arc::clone(&self.journal),
            Arc::clone(&self.clock),
            self.options.clone(),
        )
        .await
        .map_err(|e| match e {
            StartError::Journal(e) => {
                BackendError::Unavailable(format!("recovering event {event_id}: {e}"))
            }
            e => BackendError::Internal(format!("recovering event {event_id}: {e}")),
        })?;
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        running.insert(event_id, handle.clone());
        metrics::gauge!("holdfast_event_actors").set(running.len() as f64);
        Ok(handle)
    }

    /// Stops every actor, each with a final snapshot.
    pub async fn stop_all(&self) {
        let handles: Vec<Handle> = {
            let mut running = self
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            running.drain().map(|(_, h)| h).collect()
        };
        for handle in handles {
            handle.stop().await;
        }
    }
}

pub fn call_error(e: CallError) -> BackendError {
    match e {
        CallError::Rejected(e) => BackendError::Inventory(e),
        CallError::Overloaded => BackendError::Overloaded,
        CallError::Unavailable => BackendError::Unavailable(
            "event actor stopped; it restarts on the next request".to_owned(),
        ),
    }
}
