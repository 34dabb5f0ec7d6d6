//! A short smoke of `holdfast-bench journey` against real servers (the debug `holdfast` binary
//! next to the test, or `HOLDFAST_BIN`): purchases on SQLite in the closed model and on
//! PostgreSQL in the open model go from hold to tickets, and the audit passes (one ticket per
//! paid seat, no oversell, every paid order confirmed, nothing parked).

use std::time::Duration;

use holdfast_bench::args::QuantityRange;
use holdfast_bench::compare::{Launch, TargetKind};
use holdfast_bench::journey::{self, Options};
use holdfast_bench::load::Model;
use holdfast_tests::holdfast_bin;

fn options(targets: Vec<TargetKind>, model: Model) -> Options {
    Options {
        targets,
        model,
        connections: 8,
        duration: Duration::from_secs(2),
        quantity: QuantityRange { min: 1, max: 2 },
        users: 50,
        capacity: 100_000,
        poll_interval: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
        journey_timeout: Duration::from_secs(20),
        settle: Duration::from_secs(20),
        open_at: None,
        open_connections: None,
        pool_size: 4,
        launch: Launch {
            holdfast_bin: Some(holdfast_bin()),
            database_url: std::env::var("HOLDFAST_TEST_DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned()),
            redis_url: String::new(),
        },
        progress: false,
    }
}

fn assert_purchased(results: &[journey::JourneyResult]) {
    for r in results {
        let table = journey::text_table(std::slice::from_ref(r));
        assert!(r.audit.ok, "{table}");
        assert!(r.purchases > 0, "{table}");
        assert_eq!(r.audit.orders_confirmed, r.audit.orders_paid, "{table}");
        assert!(r.audit.orders_paid >= r.purchases, "{table}");
        // The baseline issues no tickets; a Holdfast node is asked for its parked messages.
        if r.audit.parked.is_some() {
            assert_eq!(r.audit.tickets, r.audit.seats_paid, "{table}");
            assert_eq!(r.audit.parked, Some(0), "{table}");
        }
        assert!(
            r.cpu.us_per_op.is_some_and(|us| us > 0.0),
            "no server CPU measured: {table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_on_sqlite_closed_model() {
    let results = journey::run(&options(vec![TargetKind::HoldfastSync], Model::Closed))
        .await
        .expect("journey on SQLite");
    assert_purchased(&results);
    assert_eq!(results[0].audit.parked, Some(0));
    assert!(results[0].polls_per_purchase >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_on_postgres_open_model_and_the_baseline() {
    let results = journey::run(&options(
        vec![TargetKind::HoldfastPg, TargetKind::BaselinePg],
        Model::Open { rate: 40.0 },
    ))
    .await
    .expect("journey on PostgreSQL and the baseline");
    assert_purchased(&results);
    assert!(results[0].cpu.postgres_secs.is_some());
    assert!(journey::text_table(&results).contains("purchases per CPU second"));
}
