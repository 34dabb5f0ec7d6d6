//! The actor shell against an in-memory journal: group commit, replies only after the commit,
//! fail-stop on a journal error, the expiry timer, admission control and passivation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use holdfast_actors::actor::{
    self, CallError, Handle, Journal, JournalError, Options, Record, Snapshot, Stored, SystemClock,
};
use holdfast_actors::{
    Command, Event, EventId, HoldId, HoldStatus, Line, Quantity, TicketCode, UserId,
};
use tokio::sync::Semaphore;

/// A journal in memory whose appends can be held back (a semaphore) or made to fail.
#[derive(Default)]
struct MemJournal {
    records: Mutex<Vec<Record>>,
    snapshot: Mutex<Option<Snapshot>>,
    appends: Mutex<usize>,
    fail: Mutex<bool>,
    gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl Journal for MemJournal {
    async fn append(&self, _: EventId, _: u64, records: &[Record]) -> Result<(), JournalError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        if *self.fail.lock().expect("lock") {
            return Err(JournalError::Storage("disk on fire".into()));
        }
        *self.appends.lock().expect("lock") += 1;
        self.records
            .lock()
            .expect("lock")
            .extend_from_slice(records);
        Ok(())
    }

    async fn load(&self, _: EventId) -> Result<Stored, JournalError> {
        let snapshot = self.snapshot.lock().expect("lock").clone();
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let tail = self
            .records
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.seq > after)
            .cloned()
            .collect();
        Ok(Stored { snapshot, tail })
    }

    async fn save_snapshot(
        &self,
        _: EventId,
        _: u64,
        snapshot: Snapshot,
    ) -> Result<(), JournalError> {
        *self.snapshot.lock().expect("lock") = Some(snapshot);
        Ok(())
    }
}

fn ga() -> TicketCode {
    TicketCode::parse("GA").expect("code")
}

fn define(capacity: u32) -> Vec<Command> {
    vec![Command::DefineTicketType {
        code: ga(),
        capacity,
        per_user_limit: None,
    }]
}

fn hold(ttl_ms: i64) -> Command {
    Command::Hold {
        hold_id: HoldId::generate(),
        user: UserId::generate(),
        items: vec![Line {
            ticket_type: ga(),
            quantity: Quantity::new(1).expect("q"),
        }],
        ttl_ms,
        admission: None,
    }
}

async fn start(journal: &Arc<MemJournal>, options: Options, capacity: u32) -> (EventId, Handle) {
    let event = EventId::generate();
    let handle = actor::start(
        event,
        1,
        define(capacity),
        journal.clone(),
        Arc::new(SystemClock),
        options,
    )
    .await
    .expect("start");
    (event, handle)
}

fn events_of(journal: &MemJournal) -> Vec<Event> {
    journal
        .records
        .lock()
        .expect("lock")
        .iter()
        .map(|r| actor::decode_event(&r.payload).expect("decodes"))
        .collect()
}

#[tokio::test]
async fn concurrent_holds_share_commits_and_wait_for_them() {
    let gate = Arc::new(Semaphore::new(1)); // the definition's append
    let journal = Arc::new(MemJournal {
        gate: Some(gate.clone()),
        ..MemJournal::default()
    });
    let (_, handle) = start(&journal, Options::default(), 1000).await;
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let h = handle.clone();
        calls.spawn(async move { h.call(hold(60_000)).await });
    }
    // Nothing is acknowledged while the journal has not committed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.len(), 200);
    assert!(
        calls.try_join_next().is_none(),
        "a reply came before its batch was durable"
    );
    gate.add_permits(1000);
    while let Some(reply) = calls.join_next().await {
        assert_eq!(
            reply.expect("task").expect("held").map(|h| h.status),
            Some(HoldStatus::Active)
        );
    }
    let appends = *journal.appends.lock().expect("lock");
    assert!(
        appends < 50,
        "200 holds took {appends} commits: no group commit"
    );
    assert_eq!(
        events_of(&journal)
            .iter()
            .filter(|e| matches!(e, Event::HoldPlaced { .. }))
            .count(),
        200
    );
}

#[tokio::test]
async fn a_journal_failure_stops_the_actor_and_loses_only_the_unacknowledged() {
    let journal = Arc::new(MemJournal::default());
    let (event, handle) = start(&journal, Options::default(), 10).await;
    let kept = handle
        .call(hold(60_000))
        .await
        .expect("held")
        .expect("view");
    *journal.fail.lock().expect("lock") = true;
    assert_eq!(handle.call(hold(60_000)).await, Err(CallError::Unavailable));
    handle.exited().await;
    assert!(!handle.is_running());
    *journal.fail.lock().expect("lock") = false;
    let again = actor::start(
        event,
        1,
        define(10),
        journal.clone(),
        Arc::new(SystemClock),
        Options::default(),
    )
    .await
    .expect("recover");
    let stock = again.stock().await.expect("stock");
    assert_eq!(
        (stock[0].1.held, stock[0].1.available),
        (1, 9),
        "only the acknowledged hold survives"
    );
    assert_eq!(
        again.hold(kept.id).await.expect("query").map(|h| h.status),
        Some(HoldStatus::Active)
    );
}

#[tokio::test]
async fn the_expiry_timer_journals_expiries_without_any_message() {
    let journal = Arc::new(MemJournal::default());
    let (_, handle) = start(&journal, Options::default(), 10).await;
    let held = handle.call(hold(150)).await.expect("held").expect("view");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let events = events_of(&journal);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::HoldExpired { hold_id, .. } if *hold_id == held.id)),
        "no expiry journaled: {events:?}"
    );
    assert_eq!(
        handle.hold(held.id).await.expect("query").map(|h| h.status),
        Some(HoldStatus::Expired)
    );
}

#[tokio::test]
async fn a_full_mailbox_refuses_at_once() {
    let gate = Arc::new(Semaphore::new(1));
    let journal = Arc::new(MemJournal {
        gate: Some(gate.clone()),
        ..MemJournal::default()
    });
    let options = Options {
        mailbox_capacity: 2,
        batch_size_max: 1,
        ..Options::default()
    };
    let (_, handle) = start(&journal, options, 100).await;
    let mut results = Vec::new();
    let mut pending = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let h = handle.clone();
        pending.spawn(async move { h.call(hold(60_000)).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    while let Some(done) = pending.try_join_next() {
        results.push(done.expect("task"));
    }
    assert!(results.contains(&Err(CallError::Overloaded)), "{results:?}");
    gate.add_permits(100);
    while let Some(done) = pending.join_next().await {
        assert!(done.expect("task").is_ok());
    }
}

#[tokio::test]
async fn an_idle_actor_snapshots_and_stops() {
    let journal = Arc::new(MemJournal::default());
    let options = Options {
        idle_passivate_secs: 1,
        ..Options::default()
    };
    let (event, handle) = start(&journal, options.clone(), 10).await;
    handle.call(hold(600_000)).await.expect("held");
    tokio::time::timeout(Duration::from_secs(5), handle.exited())
        .await
        .expect("passivated within 5 s");
    assert!(!handle.is_running());
    let snapshot = journal
        .snapshot
        .lock()
        .expect("lock")
        .clone()
        .expect("a final snapshot");
    assert_eq!(
        snapshot.seq,
        journal.records.lock().expect("lock").len() as u64
    );
    let again = actor::start(
        event,
        1,
        define(10),
        journal.clone(),
        Arc::new(SystemClock),
        options,
    )
    .await
    .expect("restart");
    assert_eq!(again.stock().await.expect("stock")[0].1.held, 1);
}
