//! The `baseline-pg` order path: how a monolith checks out on PostgreSQL, at its leanest. One
//! transaction per purchase inserts the order and decrements the stock (`UPDATE … SET
//! available = available - $n WHERE … AND available >= $n`), committed with the server's
//! default `synchronous_commit`. It runs from this process over a connection pool — no HTTP, no
//! payment, no tickets — so its CPU (this process and the PostgreSQL backends) is a lower bound
//! of what a monolith spends per order.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use rand::{Rng as _, SeedableRng as _};
use sqlx::Row as _;
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{JourneyAudit, JourneyResult, LoadOutput, Options, Paid, Record, WorkerOutput};
use crate::audit::{self, Stock};
use crate::cpu::{CpuReport, Probe};

/// Tables live in their own schema, dropped and created afresh for every run.
pub const SCHEMA: &str = "holdfast_bench_checkout";
const EVENT: &str = "flash-sale";
const PRICE: i64 = 500_000;

struct Shared {
    pool: PgPool,
    opts: Options,
    buyers: Vec<String>,
    start: Instant,
    end: Instant,
    next_slot: AtomicU64,
}

async fn prepare(pool: &PgPool, capacity: u32) -> anyhow::Result<()> {
    for statement in [
        format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"),
        format!("CREATE SCHEMA {SCHEMA}"),
        format!(
            "CREATE TABLE {SCHEMA}.stock (event_id TEXT NOT NULL, code TEXT NOT NULL, \
             capacity INTEGER NOT NULL, available INTEGER NOT NULL CHECK (available >= 0), \
             PRIMARY KEY (event_id, code))"
        ),
        format!(
            "CREATE TABLE {SCHEMA}.orders (id TEXT PRIMARY KEY, event_id TEXT NOT NULL, \
             user_id TEXT NOT NULL, code TEXT NOT NULL, quantity INTEGER NOT NULL, \
             amount BIGINT NOT NULL, status TEXT NOT NULL, created_at BIGINT NOT NULL)"
        ),
        format!("CREATE INDEX orders_user ON {SCHEMA}.orders (user_id)"),
    ] {
        sqlx::query(&statement).execute(pool).await?;
    }
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.stock (event_id, code, capacity, available) VALUES ($1, 'GA', $2, $2)"
    ))
    .bind(EVENT)
    .bind(i32::try_from(capacity).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// One checkout: `Ok(true)` when the order committed, `Ok(false)` when sold out.
async fn checkout(pool: &PgPool, user: &str, quantity: u32) -> Result<bool, sqlx::Error> {
    let quantity = i32::try_from(quantity).unwrap_or(i32::MAX);
    let mut tx = pool.begin().await?;
    // The insert first, so the event's row lock is held only from the UPDATE to the commit.
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.orders (id, event_id, user_id, code, quantity, amount, status, created_at) \
         VALUES ($1, $2, $3, 'GA', $4, $5, 'confirmed', $6)"
    ))
    .bind(uuid::Uuid::now_v7().simple().to_string())
    .bind(EVENT)
    .bind(user)
    .bind(quantity)
    .bind(PRICE * i64::from(quantity))
    .bind(crate::setup::now_secs())
    .execute(&mut *tx)
    .await?;
    let updated = sqlx::query(&format!(
        "UPDATE {SCHEMA}.stock SET available = available - $2 \
         WHERE event_id = $1 AND code = 'GA' AND available >= $2"
    ))
    .bind(EVENT)
    .bind(quantity)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 1 {
        tx.commit().await?;
        Ok(true)
    } else {
        tx.rollback().await?;
        Ok(false)
    }
}

async fn worker(index: usize, shared: Arc<Shared>) -> WorkerOutput {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xba5e ^ index as u64);
    let mut out = WorkerOutput::default();
    while let Some(due) = super::next_due(
        shared.opts.model,
        shared.start,
        shared.end,
        &shared.next_slot,
    )
    .await
    {
        let buyer = rng.gen_range(0..shared.buyers.len());
        let quantity = shared.opts.quantity.pick(&mut rng);
        let outcome = tokio::time::timeout(
            shared.opts.timeout,
            checkout(&shared.pool, &shared.buyers[buyer], quantity),
        )
        .await;
        let now = Instant::now();
        let mut record = Record {
            buyer: buyer as u32,
            quantity,
            order: None,
            paid: Paid::No,
            done: false,
            in_window: false,
            failure: None,
        };
        match outcome {
            Ok(Ok(true)) => {
                out.record("journey", now.duration_since(due));
                record.paid = Paid::Yes;
                record.done = true;
                record.in_window = now <= shared.end;
            }
            Ok(Ok(false)) => record.failure = Some("sold-out".to_owned()),
            Ok(Err(e)) => record.failure = Some(format!("postgresql: {e}")),
            Err(_) => {
                record.paid = Paid::Unknown;
                record.failure = Some("timeout".to_owned());
            }
        }
        out.records.push(record);
    }
    out
}

/// Runs the order path against `opts.launch.database_url` and audits the tables.
pub async fn run(opts: &Options, label: &str) -> anyhow::Result<JourneyResult> {
    let pool = PgPoolOptions::new()
        .max_connections(opts.pool_size.max(1))
        .min_connections(opts.pool_size.max(1))
        .acquire_timeout(Duration::from_secs(30))
        .connect(&opts.launch.database_url)
        .await?;
    prepare(&pool, opts.capacity).await?;
    // Every pooled connection opened (and each statement prepared once) before the clock.
    let warm: Vec<_> = (0..opts.pool_size.max(1)).map(|_| pool.acquire()).collect();
    let mut held = Vec::new();
    for conn in warm {
        held.push(conn.await?);
    }
    drop(held);
    if opts.progress {
        eprintln!(
            "{label}: PostgreSQL order path, {} pooled connections",
            opts.pool_size
        );
    }
    let buyers = (0..opts.users.max(1))
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let probe = Probe {
        pids: Vec::new(),
        include_self: true,
        postgres: true,
        redis: false,
    };
    let loadavg_before = crate::report::loadavg();
    let cpu_before = probe.sample();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        opts: opts.clone(),
        buyers,
        start,
        end: start + opts.duration,
        next_slot: AtomicU64::new(0),
    });
    let workers: Vec<_> = (0..opts.connections)
        .map(|i| tokio::spawn(worker(i, Arc::clone(&shared))))
        .collect();
    let mut output = LoadOutput::new();
    for w in workers {
        output.absorb(w.await?)?;
    }
    output.elapsed = start.elapsed();
    let cpu_after = probe.sample();
    let loadavg_after = crate::report::loadavg();
    if let crate::load::Model::Open { rate } = opts.model {
        let due = (rate * opts.duration.as_secs_f64()).ceil() as u64;
        output.unsent = due.saturating_sub(output.records.len() as u64);
    }
    let purchases = output.records.iter().filter(|r| r.done).count() as u64;
    let audit = audit_tables(&pool, opts.capacity, &output.records).await?;
    pool.close().await;
    let cpu = CpuReport::between(
        &probe,
        "holdfast-bench (client)",
        cpu_before,
        cpu_after,
        purchases,
    );
    Ok(super::result(
        label,
        opts,
        output,
        purchases,
        cpu,
        audit,
        (loadavg_before, loadavg_after),
    ))
}

/// Stock and orders must agree with what committed: one order row per committed checkout, its
/// seats gone from `available`, nothing below zero.
async fn audit_tables(
    pool: &PgPool,
    capacity: u32,
    records: &[Record],
) -> anyhow::Result<JourneyAudit> {
    let mut audit = JourneyAudit::default();
    let seats = |paid: Paid| {
        records
            .iter()
            .filter(|r| r.paid == paid)
            .map(|r| u64::from(r.quantity))
            .sum::<u64>()
    };
    let committed = records.iter().filter(|r| r.paid == Paid::Yes).count() as u64;
    audit.orders_paid = committed;
    audit.sold_expected_min = seats(Paid::Yes);
    audit.sold_expected_max = audit.sold_expected_min + seats(Paid::Unknown);
    let row = sqlx::query(&format!(
        "SELECT capacity, available FROM {SCHEMA}.stock WHERE event_id = $1"
    ))
    .bind(EVENT)
    .fetch_one(pool)
    .await?;
    let capacity_read = u64::try_from(row.try_get::<i32, _>("capacity")?).unwrap_or(0);
    let available = u64::try_from(row.try_get::<i32, _>("available")?).unwrap_or(0);
    let row = sqlx::query(&format!(
        "SELECT COUNT(*) AS n, COALESCE(SUM(quantity), 0)::BIGINT AS seats FROM {SCHEMA}.orders"
    ))
    .fetch_one(pool)
    .await?;
    let orders = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
    let sold = u64::try_from(row.try_get::<i64, _>("seats")?).unwrap_or(0);
    audit.orders_checked = orders;
    audit.orders_confirmed = orders;
    audit.seats_paid = sold;
    audit.stock = Stock {
        capacity: capacity_read,
        available,
        held: 0,
        sold,
    };
    audit.oversold_seats = audit::oversold(&audit.stock);
    for v in audit::check_stock(
        EVENT,
        u64::from(capacity),
        &audit.stock,
        audit::Expected { min: 0, max: 0 },
    ) {
        audit.violation(v);
    }
    if sold < audit.sold_expected_min || sold > audit.sold_expected_max {
        audit.violation(format!(
            "{sold} seats in orders, the committed checkouts account for {} to {}",
            audit.sold_expected_min, audit.sold_expected_max
        ));
    }
    if orders < committed {
        audit.violation(format!(
            "{orders} order rows for {committed} committed checkouts"
        ));
    }
    audit.ok = audit.violations_total == 0;
    Ok(audit)
}
