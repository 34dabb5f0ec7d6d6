//! The actor shell around one event's [`Inventory`]: the only writer of that event's stock.
//!
//! A task per event drains a bounded mailbox in batches. For each batch it reads the clock once,
//! expires due holds, applies every command in memory, appends the resulting events to the
//! journal in one write (group commit) and only then sends the replies (`Durability::Sync`).
//! A full mailbox is refused at once ([`CallError::Overloaded`]) rather than queued. If a journal
//! write fails the actor stops without replying: acknowledged holds are durable, and the next
//! message recovers a fresh actor from snapshot + journal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::TicketCode;
use crate::domain::UserId;
use crate::domain::{EventId, HoldId, Timestamp};
use crate::inventory::{self, Command, Event, HoldView, Inventory, TypeStock};
use crate::queue::QueueRead;

/// One journaled event with its position in the event's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// One event's batch in a group commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub event_id: EventId,
    pub epoch: u64,
    pub records: Vec<Record>,
}

/// What recovery reads back: the latest snapshot, if any, and the journal after it.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub snapshot: Option<Snapshot>,
    /// Records after the snapshot, in `seq` order.
    pub tail: Vec<Record>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub state: Vec<u8>,
}

/// Why the journal refused or failed a write.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A newer owner holds the shard: this writer must stop for good.
    #[error("journal write fenced: epoch {epoch} is stale")]
    Fenced { epoch: u64 },
    /// Another writer appended the same position (a second actor for one event).
    #[error("journal position {seq} already written")]
    Conflict { seq: u64 },
    #[error("journal storage failed: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Durable storage of journals and snapshots; `holdfast-persistence` implements it.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Appends `records` of `event_id` atomically, as writer `epoch`.
    async fn append(
        &self,
        event_id: EventId,
        epoch: u64,
        records: &[Record],
    ) -> Result<(), JournalError>;
    /// Appends several events' batches; each succeeds or fails on its own. A store that can
    /// commits them together (one transaction, one fsync for many actors).
    async fn append_many(&self, appends: &[Append]) -> Vec<Result<(), JournalError>> {
        append_each(self, appends).await
    }
    /// The latest snapshot and every record after it.
    async fn load(&self, event_id: EventId) -> Result<Stored, JournalError>;
    /// Stores a snapshot taken after `snapshot.seq`; records up to it may then be trimmed.
    async fn save_snapshot(
        &self,
        event_id: EventId,
        epoch: u64,
        snapshot: Snapshot,
    ) -> Result<(), JournalError>;
}

/// Appends each batch on its own, in order: the plain way to serve [`Journal::append_many`].
pub async fn append_each<J: Journal + ?Sized>(
    journal: &J,
    appends: &[Append],
) -> Vec<Result<(), JournalError>> {
    let mut results = Vec::with_capacity(appends.len());
    for a in appends {
        results.push(journal.append(a.event_id, a.epoch, &a.records).await);
    }
    results
}

/// The wall clock, injected so tests and replays control time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

/// When a reply is sent relative to the journal write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Reply after the batch is committed: an acknowledged hold survives a crash.
    #[default]
    Sync,
    /// Reply before the commit: faster, but a crash can lose the last acknowledged batch.
    Async,
}

/// Tuning of every event actor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// Messages waiting per actor before callers are refused with `Overloaded`.
    pub mailbox_capacity: usize,
    /// Commands applied per journal write at most.
    pub batch_size_max: usize,
    /// Snapshot after this many events since the last snapshot (or, once an event keeps more
    /// holds than this, after as many events as it keeps holds).
    pub snapshot_every_events: u64,
    /// Snapshot after this long if anything changed.
    pub snapshot_every_secs: u64,
    pub durability: Durability,
    /// An actor that receives nothing for this long snapshots and stops (passivation); the next
    /// message starts it again. 0 keeps actors running.
    pub idle_passivate_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mailbox_capacity: 4096,
            batch_size_max: 1024,
            snapshot_every_events: 10_000,
            snapshot_every_secs: 30,
            durability: Durability::Sync,
            idle_passivate_secs: 600,
        }
    }
}

/// Why a call to an actor did not get an answer from the state machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The state machine refused the command.
    #[error(transparent)]
    Rejected(#[from] inventory::Error),
    /// The mailbox is full: try again shortly.
    #[error("event is overloaded, try again shortly")]
    Overloaded,
    /// The actor stopped (journal failure, fencing or shutdown) before answering.
    #[error("event actor is unavailable")]
    Unavailable,
}

/// The answer to a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryReply {
    Stock(Vec<(TicketCode, TypeStock)>),
    Hold(Option<HoldView>),
    /// `None`: the event has no waiting room.
    Queue(Option<QueueRead>),
}

#[derive(Debug)]
enum Request {
    Command(
        Command,
        oneshot::Sender<Result<Option<HoldView>, inventory::Error>>,
    ),
    QueryStock(oneshot::Sender<QueryReply>),
    QueryHold(HoldId, oneshot::Sender<QueryReply>),
    QueryQueue(UserId, oneshot::Sender<QueryReply>),
    /// Joins the waiting room and answers whether this call joined, and the buyer's place.
    JoinQueue(UserId, oneshot::Sender<Result<Joined, inventory::Error>>),
    Stop(oneshot::Sender<()>),
}

/// What a join answers: whether this call joined (`false`: in the queue already) and the
/// buyer's place after it.
pub type Joined = (bool, Option<QueueRead>);

/// A cheap-to-clone address of a running event actor.
#[derive(Clone, Debug)]
pub struct Handle {
    event_id: EventId,
    epoch: u64,
    tx: mpsc::Sender<Request>,
    /// Becomes true (or loses its sender) when the actor task has ended.
    exited: watch::Receiver<bool>,
}

impl Handle {
    pub fn event_id(&self) -> EventId {
        self.event_id
    }

    /// The writer epoch the actor journals with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// False once the actor refuses messages (stopping or stopped); the owner then waits for
    /// [`Handle::exited`] and starts a new one.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Resolves once the actor task has ended: its last batch is journaled (or failed) and no
    /// write of it can follow, so a successor may recover.
    pub async fn exited(&self) {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(|done| *done).await;
    }

    /// Sends `command`; on success returns the hold it concerns, if any, after the command.
    pub async fn call(&self, command: Command) -> Result<Option<HoldView>, CallError> {
        let (tx, rx) = oneshot::channel();
        self.admit(Request::Command(command, tx))?;
        rx.await
            .map_err(|_| CallError::Unavailable)?
            .map_err(CallError::Rejected)
    }

    pub async fn stock(&self) -> Result<Vec<(TicketCode, TypeStock)>, CallError> {
        let (tx, rx) = oneshot::channel();
        self.admit(Request::QueryStock(tx))?;
        match rx.await.map_err(|_| CallError::Unavailable)? {
            QueryReply::Stock(stock) => Ok(stock),
            _ => Err(CallError::Unavailable),
        }
    }

    pub async fn hold(&self, hold_id: HoldId) -> Result<Option<HoldView>, CallError> {
        let (tx, rx) = oneshot::channel();
        self.admit(Request::QueryHold(hold_id, tx))?;
        match rx.await.map_err(|_| CallError::Unavailable)? {
            QueryReply::Hold(hold) => Ok(hold),
            _ => Err(CallError::Unavailable),
        }
    }

    /// Joins `user` to the waiting room in one message: whether this call joined, and what
    /// they read after it (answered once the join is journaled).
    pub async fn join_queue(&self, user: UserId) -> Result<Joined, CallError> {
        let (tx, rx) = oneshot::channel();
        self.admit(Request::JoinQueue(user, tx))?;
        rx.await
            .map_err(|_| CallError::Unavailable)?
            .map_err(CallError::Rejected)
    }

    /// What `user` reads of the event's waiting room; `None` without one. Answered after the
    /// batch it arrives in, like every query, but writes nothing itself.
    pub async fn queue(&self, user: UserId) -> Result<Option<QueueRead>, CallError> {
        let (tx, rx) = oneshot::channel();
        self.admit(Request::QueryQueue(user, tx))?;
        match rx.await.map_err(|_| CallError::Unavailable)? {
            QueryReply::Queue(read) => Ok(read),
            _ => Err(CallError::Unavailable),
        }
    }

    /// Stops the actor after the messages already queued, with a final snapshot.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Request::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    fn admit(&self, request: Request) -> Result<(), CallError> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                metrics::counter!("holdfast_mailbox_rejections_total").increment(1);
                CallError::Overloaded
            }
            mpsc::error::TrySendError::Closed(_) => CallError::Unavailable,
        })
    }
}

/// Why an actor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("stored state of event {event_id} is unreadable: {detail}")]
    Corrupt { event_id: EventId, detail: String },
    #[error("defining ticket types failed: {0}")]
    Define(#[from] inventory::Error),
}

pub fn encode_event(event: &Event) -> Vec<u8> {
    bincode::serde::encode_to_vec(event, bincode::config::standard()).expect("events always encode")
}

pub fn decode_event(bytes: &[u8]) -> Result<Event, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(e, _)| e)
}

/// Starts every snapshot since format 2. Format 1 (bincode of the state, no header) starts
/// with the event id's length, 16, so the two never mix up.
const SNAPSHOT_MAGIC: &[u8; 3] = b"HFS";
/// The snapshot format [`encode_state`] writes. Change it whenever [`Inventory`]'s fields change,
/// and keep a reader of the old format in [`decode_state`].
pub const SNAPSHOT_FORMAT: u8 = 3;

pub fn encode_state(inventory: &Inventory) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1024);
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.push(SNAPSHOT_FORMAT);
    bincode::serde::encode_into_std_write(inventory, &mut bytes, bincode::config::standard())
        .expect("state always encodes");
    bytes
}

/// Reads a snapshot of any format written so far.
pub fn decode_state(bytes: &[u8]) -> Result<Inventory, String> {
    let config = bincode::config::standard();
    match bytes {
        [b'H', b'F', b'S', format, state @ ..] => match *format {
            SNAPSHOT_FORMAT => bincode::serde::decode_from_slice(state, config)
                .map(|(inv, _)| inv)
                .map_err(|e| e.to_string()),
            2 => bincode::serde::decode_from_slice::<inventory::InventoryV2, _>(state, config)
                .map(|(inv, _)| inv.into())
                .map_err(|e| format!("format 2: {e}")),
            other => Err(format!("unknown snapshot format {other}")),
        },
        legacy => bincode::serde::decode_from_slice::<inventory::InventoryV1, _>(legacy, config)
            .map(|(inv, _)| inv.into())
            .map_err(|e| format!("format 1: {e}")),
    }
}

/// Rebuilds an event's state from what the journal stored: snapshot, then the tail replayed.
pub fn recover(event_id: EventId, stored: Stored) -> Result<Inventory, StartError> {
    let corrupt = |detail: String| StartError::Corrupt { event_id, detail };
    let mut inventory = match stored.snapshot {
        Some(snapshot) => {
            let inv =
                decode_state(&snapshot.state).map_err(|e| corrupt(format!("snapshot: {e}")))?;
            if inv.event_id() != event_id || inv.seq() != snapshot.seq {
                return Err(corrupt(format!(
                    "snapshot is of {} at {}, stored as {event_id} at {}",
                    inv.event_id(),
                    inv.seq(),
                    snapshot.seq
                )));
            }
            inv
        }
        None => Inventory::new(event_id),
    };
    for record in stored.tail {
        if record.seq <= inventory.seq() {
            continue;
        }
        if record.seq != inventory.seq() + 1 {
            return Err(corrupt(format!(
                "journal gap after {}: found {}",
                inventory.seq(),
                record.seq
            )));
        }
        let event = decode_event(&record.payload)
            .map_err(|e| corrupt(format!("record {}: {e}", record.seq)))?;
        inventory.replay(&event);
    }
    Ok(inventory)
}

/// Recovers event `event_id`, applies `definitions` (journaled if they change anything) and
/// starts its actor as writer `epoch`.
pub async fn start(
    event_id: EventId,
    epoch: u64,
    definitions: Vec<Command>,
    journal: Arc<dyn Journal>,
    clock: Arc<dyn Clock>,
    options: Options,
) -> Result<Handle, StartError> {
    let started = Instant::now();
    let stored = journal.load(event_id).await?;
    let replayed = stored.tail.len();
    let snapshot_seq = stored.snapshot.as_ref().map_or(0, |s| s.seq);
    let mut inventory = recover(event_id, stored)?;
    let now = clock.now();
    let mut records = Vec::new();
    for command in definitions {
        for event in inventory.apply(now, command)? {
            records.push(encode_event(&event));
        }
    }
    if !records.is_empty() {
        let first = inventory.seq() + 1 - records.len() as u64;
        let records: Vec<Record> = records
            .into_iter()
            .zip(first..)
            .map(|(payload, seq)| Record { seq, payload })
            .collect();
        journal.append(event_id, epoch, &records).await?;
    }
    tracing::debug!(%event_id, epoch, replayed, seq = inventory.seq(), elapsed_ms = started.elapsed().as_millis() as u64, "event actor recovered");
    metrics::histogram!("holdfast_actor_recovery_seconds").record(started.elapsed().as_secs_f64());
    let (tx, rx) = mpsc::channel(options.mailbox_capacity.max(1));
    let (exited_tx, exited) = watch::channel(false);
    let actor = Actor {
        event_id,
        epoch,
        snapshot_seq,
        last_snapshot: Instant::now(),
        snapshot_task: None,
        inventory,
        journal,
        clock,
        options,
    };
    tokio::spawn(async move {
        actor.run(rx).await;
        let _ = exited_tx.send(true);
    });
    Ok(Handle {
        event_id,
        epoch,
        tx,
        exited,
    })
}

struct Actor {
    event_id: EventId,
    epoch: u64,
    inventory: Inventory,
    journal: Arc<dyn Journal>,
    clock: Arc<dyn Clock>,
    options: Options,
    snapshot_seq: u64,
    last_snapshot: Instant,
    /// The snapshot being written, if any: its position and outcome.
    snapshot_task: Option<tokio::task::JoinHandle<(u64, Result<(), JournalError>)>>,
}

/// A reply computed during a batch, sent once the batch is durable.
enum Deferred {
    Command(
        oneshot::Sender<Result<Option<HoldView>, inventory::Error>>,
        Result<Option<HoldView>, inventory::Error>,
    ),
    Query(oneshot::Sender<QueryReply>, QueryReply),
    Join(
        oneshot::Sender<Result<Joined, inventory::Error>>,
        Result<Joined, inventory::Error>,
    ),
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let batch_max = self.options.batch_size_max.max(1);
        let mut batch = Vec::with_capacity(batch_max);
        let snapshot_every = Duration::from_secs(self.options.snapshot_every_secs.max(1));
        let mut stop: Option<oneshot::Sender<()>> = None;
        let idle_after = Duration::from_secs(self.options.idle_passivate_secs);
        let mut last_message = Instant::now();
        while stop.is_none() {
            let expiry = self.inventory.next_timer(self.clock.now()).map(|at| {
                let wait_ms = at
                    .as_millis()
                    .saturating_sub(self.clock.now().as_millis())
                    .max(0);
                Duration::from_millis(wait_ms as u64)
            });
            let snapshot_due = self.inventory.seq() > self.snapshot_seq;
            tokio::select! {
                n = rx.recv_many(&mut batch, batch_max) => {
                    if n == 0 {
                        break;
                    }
                    last_message = Instant::now();
                }
                () = tokio::time::sleep(idle_after.saturating_sub(last_message.elapsed())), if !idle_after.is_zero() => {
                    // A waiting room with buyers in it has work of its own (the opening,
                    // admissions, their ends): its actor stays.
                    if last_message.elapsed() >= idle_after && !self.inventory.queue_busy() {
                        tracing::debug!(event_id = %self.event_id, "passivating idle event actor");
                        // Refuse new messages first, then apply what raced in before the close.
                        rx.close();
                        if rx.recv_many(&mut batch, batch_max).await == 0 {
                            break;
                        }
                    }
                }
                () = tokio::time::sleep(expiry.unwrap_or_default()), if expiry.is_some() => {}
                () = tokio::time::sleep(snapshot_every), if snapshot_due => {}
            }
            let now = self.clock.now();
            let seq_before = self.inventory.seq();
            let mut events = self
                .inventory
                .apply(now, Command::Expire)
                .expect("expiry never fails");
            // Every reply waits for the batch's commit, queries too: a reader never sees a hold
            // that could still be lost.
            let mut replies: Vec<Deferred> = Vec::with_capacity(batch.len());
            for request in batch.drain(..) {
                match request {
                    Request::Command(command, reply) => {
                        let subject = subject_hold(&command);
                        let outcome = self.inventory.apply(now, command).map(|new| {
                            events.extend(new);
                            subject.and_then(|id| self.inventory.hold(id))
                        });
                        replies.push(Deferred::Command(reply, outcome));
                    }
                    Request::QueryStock(reply) => {
                        let stock = self
                            .inventory
                            .stock()
                            .map(|(c, s)| (c.clone(), s.clone()))
                            .collect();
                        replies.push(Deferred::Query(reply, QueryReply::Stock(stock)));
                    }
                    Request::QueryHold(id, reply) => {
                        replies.push(Deferred::Query(
                            reply,
                            QueryReply::Hold(self.inventory.hold(id)),
                        ));
                    }
                    Request::JoinQueue(user, reply) => {
                        let outcome = self
                            .inventory
                            .apply(now, Command::JoinQueue { user })
                            .map(|new| {
                                let joined = new.iter().any(|e| {
                                    matches!(e, Event::Queue(crate::queue::QueueEvent::Joined { user: u, .. }) if *u == user)
                                });
                                events.extend(new);
                                (joined, self.inventory.queue_read(user, now))
                            });
                        replies.push(Deferred::Join(reply, outcome));
                    }
                    Request::QueryQueue(user, reply) => {
                        replies.push(Deferred::Query(
                            reply,
                            QueryReply::Queue(self.inventory.queue_read(user, now)),
                        ));
                    }
                    Request::Stop(reply) => stop = Some(reply),
                }
            }
            if !events.is_empty() {
                let records: Vec<Record> = events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| Record {
                        seq: seq_before + 1 + i as u64,
                        payload: encode_event(e),
                    })
                    .collect();
                metrics::histogram!("holdfast_journal_batch_events").record(records.len() as f64);
                if self.options.durability == Durability::Async {
                    send_replies(replies);
                    replies = Vec::new();
                }
                let started = Instant::now();
                let written = self
                    .journal
                    .append(self.event_id, self.epoch, &records)
                    .await;
                metrics::histogram!("holdfast_journal_append_seconds")
                    .record(started.elapsed().as_secs_f64());
                if let Err(error) = written {
                    // Fail-stop: replies are dropped (callers see Unavailable) and the in-memory
                    // state, which is ahead of the journal, dies with this task.
                    tracing::error!(event_id = %self.event_id, epoch = self.epoch, %error, "journal append failed, stopping event actor");
                    metrics::counter!("holdfast_actor_failstops_total").increment(1);
                    return;
                }
            }
            let holds_placed = events
                .iter()
                .filter(|e| matches!(e, Event::HoldPlaced { .. }))
                .count();
            metrics::counter!("holdfast_holds_placed_total").increment(holds_placed as u64);
            send_replies(replies);
            self.maybe_snapshot(snapshot_every).await;
        }
        self.snapshot().await;
        if let Some(reply) = stop {
            let _ = reply.send(());
        }
    }

    /// Takes a snapshot when one is due. The state is encoded here, in the actor (a consistent
    /// copy), but written by a task of its own, so the actor goes on with the next batch;
    /// one write at a time.
    async fn maybe_snapshot(&mut self, every: Duration) {
        if let Some(task) = &self.snapshot_task {
            if !task.is_finished() {
                return;
            }
            self.finish_snapshot().await;
        }
        let since = self.inventory.seq() - self.snapshot_seq;
        // A snapshot costs time in proportion to the state; taking one only after at least as
        // many events as the state holds keeps that cost constant per event however large a
        // sale grows (and replay after a crash no longer than reading the snapshot).
        let every_events = self
            .options
            .snapshot_every_events
            .max(self.inventory.holds_kept() as u64)
            .max(
                self.inventory
                    .queue()
                    .map_or(0, |q| (q.waiting() + q.active()) as u64),
            );
        if since >= every_events || (since > 0 && self.last_snapshot.elapsed() >= every) {
            let seq = self.inventory.seq();
            let snapshot = Snapshot {
                seq,
                state: encode_state(&self.inventory),
            };
            let (journal, event_id, epoch) = (Arc::clone(&self.journal), self.event_id, self.epoch);
            self.last_snapshot = Instant::now();
            self.snapshot_task = Some(tokio::spawn(async move {
                let size = snapshot.state.len();
                let started = Instant::now();
                let saved = journal.save_snapshot(event_id, epoch, snapshot).await;
                metrics::histogram!("holdfast_snapshot_seconds")
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(%event_id, seq, size, ok = saved.is_ok(), "snapshot written");
                (seq, saved)
            }));
        }
    }

    /// Waits for the snapshot being written, if any, and records its outcome.
    async fn finish_snapshot(&mut self) {
        let Some(task) = self.snapshot_task.take() else {
            return;
        };
        match task.await {
            Ok((seq, Ok(()))) => self.snapshot_seq = self.snapshot_seq.max(seq),
            // The journal still holds everything; a later snapshot will try again.
            Ok((_, Err(error))) => {
                tracing::warn!(event_id = %self.event_id, %error, "snapshot failed")
            }
            Err(error) => tracing::warn!(event_id = %self.event_id, %error, "snapshot task failed"),
        }
    }

    /// The final snapshot of a stopping actor, written before it ends.
    async fn snapshot(&mut self) {
        self.finish_snapshot().await;
        if self.inventory.seq() == self.snapshot_seq {
            return;
        }
        let snapshot = Snapshot {
            seq: self.inventory.seq(),
            state: encode_state(&self.inventory),
        };
        match self
            .journal
            .save_snapshot(self.event_id, self.epoch, snapshot)
            .await
        {
            Ok(()) => self.snapshot_seq = self.inventory.seq(),
            Err(error) => {
                tracing::warn!(event_id = %self.event_id, %error, "final snapshot failed")
            }
        }
    }
}

fn subject_hold(command: &Command) -> Option<HoldId> {
    match command {
        Command::Hold { hold_id, .. }
        | Command::Release { hold_id }
        | Command::Confirm { hold_id, .. } => Some(*hold_id),
        _ => None,
    }
}

fn send_replies(replies: Vec<Deferred>) {
    // A caller that gave up waiting has dropped its receiver; nothing to tell it.
    for deferred in replies {
        match deferred {
            Deferred::Command(reply, outcome) => {
                let _ = reply.send(outcome);
            }
            Deferred::Query(reply, answer) => {
                let _ = reply.send(answer);
            }
            Deferred::Join(reply, outcome) => {
                let _ = reply.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HoldId, Line, Quantity, UserId};
    use crate::inventory::SaleWindow;

    fn busy_inventory() -> Inventory {
        let mut inv = Inventory::new(EventId::generate());
        let ga = TicketCode::parse("GA").expect("code");
        let define = Command::DefineTicketType {
            code: ga.clone(),
            capacity: 10,
            per_user_limit: None,
        };
        inv.apply(Timestamp(0), define).expect("define");
        let hold = Command::Hold {
            hold_id: HoldId::generate(),
            user: UserId::generate(),
            items: vec![Line {
                ticket_type: ga,
                quantity: Quantity::new(3).expect("q"),
            }],
            ttl_ms: 60_000,
            admission: None,
        };
        inv.apply(Timestamp(1), hold).expect("hold");
        inv
    }

    #[test]
    fn snapshots_of_format_1_still_recover() {
        let inv = busy_inventory();
        // Format 1 was the bare bincode of the state without its last three fields, which
        // encode as four zero bytes while they hold their defaults.
        let mut legacy =
            bincode::serde::encode_to_vec(&inv, bincode::config::standard()).expect("encode");
        assert_eq!(legacy.split_off(legacy.len() - 4), [0, 0, 0, 0]);
        assert_eq!(legacy[0], 16, "format 1 starts with the event id's length");
        assert_eq!(decode_state(&legacy), Ok(inv.clone()));
        assert_eq!(decode_state(&encode_state(&inv)), Ok(inv));
    }

    #[test]
    fn snapshots_keep_the_sale_window_and_cancellation() {
        let mut inv = busy_inventory();
        let window = SaleWindow {
            starts_at: Some(Timestamp(5)),
            ends_at: None,
        };
        inv.apply(Timestamp(2), Command::SetSaleWindow { window })
            .expect("window");
        inv.apply(Timestamp(3), Command::Cancel).expect("cancel");
        let back = decode_state(&encode_state(&inv)).expect("decode");
        assert_eq!(back.sale_window(), window);
        assert_eq!(back.cancelled_at(), Some(Timestamp(3)));
        assert_eq!(back, inv);
        let mut future = encode_state(&inv);
        future[3] = SNAPSHOT_FORMAT + 1;
        assert!(decode_state(&future).is_err());
    }

    #[test]
    fn snapshots_of_format_2_still_recover_and_keep_the_queue() {
        let mut inv = busy_inventory();
        // Format 2 was format 3 without the waiting room, the last field (`None`: one zero).
        let mut format_2 = encode_state(&inv);
        assert_eq!(format_2.pop(), Some(0));
        format_2[3] = 2;
        assert_eq!(decode_state(&format_2), Ok(inv.clone()));
        let setup = crate::inventory::QueueSetup {
            settings: crate::queue::QueueSettings {
                admit_per_minute: 60,
                active_max: 10,
                admission_ttl_ms: 60_000,
            },
            opens_at: Timestamp(10),
            seed: [3; 32],
        };
        inv.apply(Timestamp(2), Command::SetQueue { queue: Some(setup) })
            .expect("queue");
        let buyer = UserId::generate();
        inv.apply(Timestamp(3), Command::JoinQueue { user: buyer })
            .expect("join");
        let back = decode_state(&encode_state(&inv)).expect("decode");
        assert_eq!(back, inv);
        assert!(matches!(
            back.queue_status(buyer, Timestamp(3)),
            Some(Some(crate::queue::QueueStatus::Waiting { position: None }))
        ));
    }
}
