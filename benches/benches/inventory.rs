//! The pure state machine: holds per second through `Inventory::apply` (decide + replay), with no
//! actor, journal or clock around it.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use holdfast_actors::{
    Command, EventId, HoldId, Inventory, Line, Quantity, TicketCode, Timestamp, UserId,
};

const HOLDS: usize = 10_000;

fn inventory(capacity: u32) -> Inventory {
    let mut inventory = Inventory::new(EventId::generate());
    inventory
        .apply(
            Timestamp(0),
            Command::DefineTicketType {
                code: TicketCode::parse("GA").expect("code"),
                capacity,
                per_user_limit: None,
            },
        )
        .expect("define");
    inventory
}

fn holds(users: usize) -> Vec<Command> {
    let users: Vec<UserId> = (0..users).map(|_| UserId::generate()).collect();
    let line = Line {
        ticket_type: TicketCode::parse("GA").expect("code"),
        quantity: Quantity::new(1).expect("quantity"),
    };
    (0..HOLDS)
        .map(|i| Command::Hold {
            hold_id: HoldId::generate(),
            user: users[i % users.len()],
            items: vec![line.clone()],
            ttl_ms: 900_000,
            admission: None,
        })
        .collect()
}

fn apply_all(inventory: &mut Inventory, commands: Vec<Command>) {
    for (i, command) in commands.into_iter().enumerate() {
        let _ = black_box(inventory.apply(Timestamp(1_000 + i as i64), command));
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("inventory_apply");
    group.throughput(Throughput::Elements(HOLDS as u64));
    group.bench_function("hold_placed", |b| {
        b.iter_batched(
            || (inventory(u32::MAX), holds(1000)),
            |(mut inventory, commands)| {
                apply_all(&mut inventory, commands);
                inventory
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("hold_sold_out", |b| {
        b.iter_batched(
            || (inventory(0), holds(1000)),
            |(mut inventory, commands)| {
                apply_all(&mut inventory, commands);
                inventory
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
