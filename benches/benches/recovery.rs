//! Recovery: how long `actor::recover` takes to rebuild an event from its journal, per journal
//! event. The journal is 1,000,000 encoded events of one hot event (holds placed, one in ten
//! released), without a snapshot: the worst case. `HOLDFAST_BENCH_RECOVERY_EVENTS` scales it.

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use holdfast_actors::actor::{Record, Stored, encode_event, recover};
use holdfast_actors::{
    Command, EventId, HoldId, Inventory, Line, Quantity, TicketCode, Timestamp, UserId,
};

fn journal(event_id: EventId, events: usize) -> Stored {
    let mut inventory = Inventory::new(event_id);
    let mut tail = Vec::with_capacity(events);
    let mut push = |inventory: &mut Inventory, now: i64, command: Command| {
        for event in inventory.apply(Timestamp(now), command).expect("accepted") {
            tail.push(Record {
                seq: inventory.seq(),
                payload: encode_event(&event),
            });
        }
    };
    push(
        &mut inventory,
        0,
        Command::DefineTicketType {
            code: TicketCode::parse("GA").expect("code"),
            capacity: u32::MAX,
            per_user_limit: None,
        },
    );
    let users: Vec<UserId> = (0..10_000).map(|_| UserId::generate()).collect();
    let line = Line {
        ticket_type: TicketCode::parse("GA").expect("code"),
        quantity: Quantity::new(1).expect("quantity"),
    };
    let mut i = 0usize;
    while inventory.seq() < events as u64 {
        let hold_id = HoldId::generate();
        let now = 1_000 + i as i64;
        push(
            &mut inventory,
            now,
            Command::Hold {
                hold_id,
                user: users[i % users.len()],
                items: vec![line.clone()],
                ttl_ms: 3_600_000,
                admission: None,
            },
        );
        if i.is_multiple_of(10) && inventory.seq() < events as u64 {
            push(&mut inventory, now, Command::Release { hold_id });
        }
        i += 1;
    }
    Stored {
        snapshot: None,
        tail,
    }
}

fn bench(c: &mut Criterion) {
    let events: usize = std::env::var("HOLDFAST_BENCH_RECOVERY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let event_id = EventId::generate();
    let stored = journal(event_id, events);
    let mut group = c.benchmark_group("recovery");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(stored.tail.len() as u64));
    group.bench_function(format!("replay_{}_events", stored.tail.len()), |b| {
        b.iter_batched(
            || stored.clone(),
            |stored| recover(event_id, stored).expect("recovers"),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
