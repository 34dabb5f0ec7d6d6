//! Actor round trips: holds per second through `Handle::call` with a reply per hold, for one hot
//! event and for 64 events, with an in-memory journal (so this measures the actor, its mailbox
//! batching and the state machine, not storage). Default actor options, snapshots included.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use holdfast_actors::actor::{
    self, Handle, Journal, JournalError, Record, Snapshot, Stored, SystemClock,
};
use holdfast_actors::{Command, EventId, HoldId, Line, Quantity, TicketCode, UserId};

/// Accepts every append at once and remembers nothing but counts.
#[derive(Debug, Default)]
struct MemoryJournal {
    records: AtomicU64,
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn append(&self, _: EventId, _: u64, records: &[Record]) -> Result<(), JournalError> {
        self.records
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    async fn load(&self, _: EventId) -> Result<Stored, JournalError> {
        Ok(Stored::default())
    }

    async fn save_snapshot(&self, _: EventId, _: u64, _: Snapshot) -> Result<(), JournalError> {
        Ok(())
    }
}

/// Concurrent callers: enough to keep every mailbox batch full.
const CALLERS: u64 = 256;

async fn start(events: usize) -> Vec<Handle> {
    let journal: Arc<dyn Journal> = Arc::new(MemoryJournal::default());
    let mut handles = Vec::with_capacity(events);
    for _ in 0..events {
        let handle = actor::start(
            EventId::generate(),
            1,
            vec![Command::DefineTicketType {
                code: TicketCode::parse("GA").expect("code"),
                capacity: u32::MAX,
                per_user_limit: None,
            }],
            Arc::clone(&journal),
            Arc::new(SystemClock),
            actor::Options::default(),
        )
        .await
        .expect("start");
        handles.push(handle);
    }
    handles
}

async fn round_trips(handles: &[Handle], holds: u64) -> Duration {
    let line = Line {
        ticket_type: TicketCode::parse("GA").expect("code"),
        quantity: Quantity::new(1).expect("quantity"),
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let handle = handles[caller as usize % handles.len()].clone();
            let line = line.clone();
            let user = UserId::generate();
            let share = holds / CALLERS + u64::from(caller < holds % CALLERS);
            tokio::spawn(async move {
                for _ in 0..share {
                    let placed = handle
                        .call(Command::Hold {
                            hold_id: HoldId::generate(),
                            user,
                            items: vec![line.clone()],
                            ttl_ms: 900_000,
                            admission: None,
                        })
                        .await;
                    assert!(placed.is_ok(), "hold refused: {placed:?}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("caller");
    }
    started.elapsed()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("actor_round_trip");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for events in [1usize, 64] {
        group.bench_function(format!("{events}_events"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let handles = start(events).await;
                    let elapsed = round_trips(&handles, iters).await;
                    for handle in handles {
                        handle.stop().await;
                    }
                    elapsed
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
