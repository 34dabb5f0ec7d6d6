//! Journal group commit: rows per second through `SqlJournal::append` in batches of 1, 64 and
//! 1024, on SQLite (a temporary file, `synchronous = FULL`) and on PostgreSQL (a fresh database
//! on `HOLDFAST_BENCH_PG`, default `postgres://postgres@127.0.0.1:5432/postgres`; skipped when
//! it does not answer).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use holdfast_actors::actor::{Journal, Record, encode_event};
use holdfast_actors::{Event, EventId, HoldId, Line, Quantity, TicketCode, Timestamp, UserId};
use holdfast_persistence::Store;

const BATCHES: [usize; 3] = [1, 64, 1024];
const PG_DATABASE: &str = "holdfast_bench_journal";

fn payload() -> Vec<u8> {
    encode_event(&Event::HoldPlaced {
        hold_id: HoldId::generate(),
        user: UserId::generate(),
        items: vec![Line {
            ticket_type: TicketCode::parse("GA").expect("code"),
            quantity: Quantity::new(2).expect("quantity"),
        }],
        placed_at: Timestamp(1_700_000_000_000),
        expires_at: Timestamp(1_700_000_900_000),
    })
}

async fn postgres() -> Option<Store> {
    use sqlx::Connection as _;
    let admin = std::env::var("HOLDFAST_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("skipping PostgreSQL: {e}");
            return None;
        }
    };
    for sql in [
        format!("DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {PG_DATABASE}"),
    ] {
        sqlx::query(&sql).execute(&mut conn).await.ok()?;
    }
    let url = format!(
        "{}/{PG_DATABASE}",
        admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base)
    );
    let store = Store::connect(&url, 4).await.ok()?;
    store.migrate().await.ok()?;
    Some(store)
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut stores = Vec::new();
    runtime.block_on(async {
        let url = format!("sqlite://{}", dir.path().join("journal.db").display());
        let sqlite = Store::connect(&url, 4).await.expect("sqlite");
        sqlite.migrate().await.expect("migrate");
        stores.push(("sqlite", sqlite));
        if let Some(pg) = postgres().await {
            stores.push(("postgres", pg));
        }
    });
    let payload = payload();
    let mut group = c.benchmark_group("journal_append");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, store) in &stores {
        let journal = store.journal();
        for batch in BATCHES {
            group.throughput(Throughput::Elements(batch as u64));
            let event_id = EventId::generate();
            let mut seq = 0u64;
            group.bench_with_input(BenchmarkId::new(*name, batch), &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    let batches: Vec<Vec<Record>> = (0..iters)
                        .map(|_| {
                            (0..batch)
                                .map(|_| {
                                    seq += 1;
                                    Record {
                                        seq,
                                        payload: payload.clone(),
                                    }
                                })
                                .collect()
                        })
                        .collect();
                    runtime.block_on(async {
                        let started = Instant::now();
                        for records in &batches {
                            journal.append(event_id, 1, records).await.expect("append");
                        }
                        started.elapsed()
                    })
                });
            });
        }
    }
    group.finish();
    runtime.block_on(async {
        for (_, store) in &stores {
            store.close().await;
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
