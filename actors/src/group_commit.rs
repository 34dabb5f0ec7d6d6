//! Group commit across events: the batches that many event actors append at about the same time
//! are written by one task in one [`Journal::append_many`], so they share a commit (with SQLite,
//! which has one writer, this is the difference between one fsync per event and one per node).
//! Each actor still waits for its own batch's outcome before it replies.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use crate::actor::{Append, Journal, JournalError, Record, Snapshot, Stored};
use crate::domain::EventId;

type Pending = (Append, oneshot::Sender<Result<(), JournalError>>);

/// A [`Journal`] that coalesces appends from every actor of a node; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<dyn Journal>,
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the writer task. `appends_max` batches at most go into one write; `queue_max`
    /// wait at most (beyond that, appends wait for room: actors are bounded by their mailboxes).
    pub fn start(inner: Arc<dyn Journal>, appends_max: usize, queue_max: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue_max.max(1));
        tokio::spawn(write(Arc::clone(&inner), rx, appends_max.max(1)));
        Self { inner, tx }
    }
}

async fn write(journal: Arc<dyn Journal>, mut rx: mpsc::Receiver<Pending>, appends_max: usize) {
    let mut pending = Vec::with_capacity(appends_max);
    while rx.recv_many(&mut pending, appends_max).await > 0 {
        let (appends, replies): (Vec<Append>, Vec<_>) = pending.drain(..).unzip();
        metrics::histogram!("holdfast_group_commit_events").record(appends.len() as f64);
        let results = journal.append_many(&appends).await;
        debug_assert_eq!(results.len(), replies.len());
        for (reply, result) in replies.into_iter().zip(results) {
            // An actor that stopped waiting has nothing to be told.
            let _ = reply.send(result);
        }
    }
}

#[async_trait]
impl Journal for GroupCommit {
    async fn append(
        &self,
        event_id: EventId,
        epoch: u64,
        records: &[Record],
    ) -> Result<(), JournalError> {
        let (reply, outcome) = oneshot::channel();
        let append = Append {
            event_id,
            epoch,
            records: records.to_vec(),
        };
        let gone = || JournalError::Storage("the journal writer stopped".into());
        self.tx.send((append, reply)).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }

    async fn load(&self, event_id: EventId) -> Result<Stored, JournalError> {
        self.inner.load(event_id).await
    }

    async fn save_snapshot(
        &self,
        event_id: EventId,
        epoch: u64,
        snapshot: Snapshot,
    ) -> Result<(), JournalError> {
        self.inner.save_snapshot(event_id, epoch, snapshot).await
    }
}
