//! The bus conformance suite, written once and run against [`SqlBus`] on SQLite and on
//! PostgreSQL and against [`KafkaBus`] on the broker at `HOLDFAST_TEST_KAFKA_BROKERS`.
//!
//! Every test gets a bus of its own: a fresh database, or a unique name prefix on the shared
//! Kafka cluster, so its topics and groups are its own.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use holdfast_persistence::Store;
use holdfast_persistence::testing;

use crate::{Bus, Delivery, Record, SqlBus, SqlBusOptions, Subscription};

/// Instantiates every suite function below as a test on each backend.
macro_rules! bus_test_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = super::testing::sqlite_store().await;
                    let bus = super::SqlBus::new(store.pool().clone(), super::sql_options())
                        .expect("open sql bus");
                    super::within_deadline(super::$name(&bus)).await;
                    bus.close().await;
                    store.close().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, bus) = super::postgres_bus().await;
                    super::within_deadline(super::$name(&bus)).await;
                    // The bus shares the store's pool, which the drop closes.
                    super::testing::drop_postgres_store(store).await;
                }
            )*
        }

        #[cfg(feature = "kafka")]
        mod kafka {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let bus = super::kafka_bus();
                    super::within_deadline(super::$name(&bus)).await;
                }
            )*
        }
    };
}

bus_test_suite!(
    order_is_kept_per_key,
    a_new_group_starts_at_the_beginning,
    a_group_resumes_after_its_commit,
    uncommitted_records_are_redelivered_after_a_consumer_dies,
    every_group_gets_every_record,
    concurrent_publishes_arrive_exactly_once_per_group,
    topics_are_kept_apart,
);

/// A whole test; a hang fails it.
const TEST_DEADLINE: Duration = Duration::from_secs(180);
/// One delivery; generous, since a Kafka consumer first joins its group.
const RECEIVE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a subscription must stay silent to count as having nothing more.
const QUIET: Duration = Duration::from_millis(1500);

async fn within_deadline(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("the test did not finish within its deadline");
}

pub(crate) fn sql_options() -> SqlBusOptions {
    SqlBusOptions {
        prefix: "test.".to_owned(),
        ..SqlBusOptions::default()
    }
}

/// A new, migrated PostgreSQL database and a bus on the store's pool.
pub(crate) async fn postgres_bus() -> (Store, SqlBus) {
    let store = testing::postgres_store().await;
    let bus = SqlBus::new(store.pool().clone(), sql_options()).expect("open sql bus");
    (store, bus)
}

#[cfg(feature = "kafka")]
fn kafka_bus() -> crate::KafkaBus {
    let brokers = std::env::var("HOLDFAST_TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    crate::KafkaBus::with_options(crate::KafkaBusOptions {
        brokers,
        prefix: format!("t{}.", uuid::Uuid::new_v4().simple()),
        // tansu 0.6 answers a fetch from an offset inside a record batch with nothing, so a
        // group that committed mid-batch would never see the rest: one record per batch.
        producer_config: [("batch.num.messages".to_owned(), "1".to_owned())].into(),
        ..crate::KafkaBusOptions::default()
    })
    .expect("kafka bus")
}

pub(crate) fn record(topic: &str, key: &str, payload: impl Into<Vec<u8>>) -> Record {
    Record {
        topic: topic.to_owned(),
        key: key.to_owned(),
        payload: payload.into(),
    }
}

pub(crate) async fn subscribe(
    bus: &dyn Bus,
    group: &str,
    topics: &[&str],
) -> Box<dyn Subscription> {
    bus.subscribe(group, topics).await.expect("subscribe")
}

pub(crate) async fn receive(subscription: &mut dyn Subscription) -> Delivery {
    tokio::time::timeout(RECEIVE_DEADLINE, subscription.next())
        .await
        .expect("no delivery within the deadline")
        .expect("next delivery")
}

pub(crate) async fn receive_n(subscription: &mut dyn Subscription, n: usize) -> Vec<Delivery> {
    let mut deliveries = Vec::with_capacity(n);
    for _ in 0..n {
        deliveries.push(receive(subscription).await);
    }
    deliveries
}

/// Fails if `subscription` delivers anything within [`QUIET`].
pub(crate) async fn assert_quiet(subscription: &mut dyn Subscription) {
    if let Ok(delivery) = tokio::time::timeout(QUIET, subscription.next()).await {
        panic!("expected no more deliveries, got {delivery:?}");
    }
}

pub(crate) fn payloads(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8(d.payload.clone()).expect("utf-8 payload"))
        .collect()
}

async fn order_is_kept_per_key(bus: &dyn Bus) {
    let keys = ["order-a", "order-b", "order-c", "order-d"];
    // Several publishes, each interleaving the keys.
    for round in 0..5 {
        let batch: Vec<Record> = (0..2)
            .flat_map(|step| {
                keys.iter()
                    .map(move |key| record("orders", key, format!("{key}/{}", round * 2 + step)))
            })
            .collect();
        bus.publish(&batch).await.expect("publish");
    }
    let mut subscription = subscribe(bus, "order-check", &["orders"]).await;
    let deliveries = receive_n(&mut *subscription, keys.len() * 10).await;
    let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for delivery in &deliveries {
        assert_eq!(delivery.topic, "orders");
        per_key
            .entry(delivery.key.clone())
            .or_default()
            .push(String::from_utf8(delivery.payload.clone()).expect("utf-8"));
    }
    for key in keys {
        let expected: Vec<String> = (0..10).map(|i| format!("{key}/{i}")).collect();
        assert_eq!(per_key.get(key), Some(&expected), "order of {key}");
    }
    // Offsets grow within a partition.
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for delivery in &deliveries {
        if let Some(previous) = last.insert(delivery.partition, delivery.offset) {
            assert!(previous < delivery.offset, "offsets of a partition grow");
        }
    }
    assert_quiet(&mut *subscription).await;
}

async fn a_new_group_starts_at_the_beginning(bus: &dyn Bus) {
    let early: Vec<Record> = (0..3)
        .map(|i| record("payments", "order-1", format!("early {i}")))
        .collect();
    bus.publish(&early).await.expect("publish");
    let mut subscription = subscribe(bus, "late-joiner", &["payments"]).await;
    let first = receive_n(&mut *subscription, 3).await;
    assert_eq!(payloads(&first), ["early 0", "early 1", "early 2"]);
    assert!(
        first
            .iter()
            .all(|d| d.key == "order-1" && d.topic == "payments")
    );

    // What is published while the subscription waits arrives too.
    bus.publish(&[record("payments", "order-1", "later")])
        .await
        .expect("publish");
    let later = receive(&mut *subscription).await;
    assert_eq!(later.payload, b"later");
    assert_quiet(&mut *subscription).await;

    // Another new group starts at the beginning as well, whatever the first one did.
    subscription.commit(&later).await.expect("commit");
    let mut other = subscribe(bus, "second-joiner", &["payments"]).await;
    let all = receive_n(&mut *other, 4).await;
    assert_eq!(payloads(&all), ["early 0", "early 1", "early 2", "later"]);
}

async fn a_group_resumes_after_its_commit(bus: &dyn Bus) {
    let records: Vec<Record> = (0..5)
        .map(|i| record("tickets", "order-7", format!("ticket {i}")))
        .collect();
    bus.publish(&records).await.expect("publish");

    let mut first = subscribe(bus, "issuer", &["tickets"]).await;
    for delivery in receive_n(&mut *first, 3).await {
        first.commit(&delivery).await.expect("commit");
    }
    drop(first);

    let mut second = subscribe(bus, "issuer", &["tickets"]).await;
    let rest = receive_n(&mut *second, 2).await;
    assert_eq!(payloads(&rest), ["ticket 3", "ticket 4"]);
    second.commit(&rest[1]).await.expect("commit");
    assert_quiet(&mut *second).await;
    drop(second);

    bus.publish(&[record("tickets", "order-7", "ticket 5")])
        .await
        .expect("publish");
    let mut third = subscribe(bus, "issuer", &["tickets"]).await;
    assert_eq!(receive(&mut *third).await.payload, b"ticket 5");
    assert_quiet(&mut *third).await;
}

async fn uncommitted_records_are_redelivered_after_a_consumer_dies(bus: &dyn Bus) {
    let records: Vec<Record> = (0..3)
        .map(|i| record("orders", "order-9", format!("step {i}")))
        .collect();
    bus.publish(&records).await.expect("publish");

    // The consumer does the side effects of all three, commits only the first, and dies.
    let mut doomed = subscribe(bus, "mailer", &["orders"]).await;
    let seen = receive_n(&mut *doomed, 3).await;
    doomed.commit(&seen[0]).await.expect("commit");
    drop(doomed);

    let mut next = subscribe(bus, "mailer", &["orders"]).await;
    let again = receive_n(&mut *next, 2).await;
    assert_eq!(payloads(&again), ["step 1", "step 2"]);
    assert_eq!(
        again.iter().map(|d| d.offset).collect::<Vec<_>>(),
        seen[1..].iter().map(|d| d.offset).collect::<Vec<_>>(),
        "the same records, at the same offsets"
    );
    assert_quiet(&mut *next).await;
}

async fn every_group_gets_every_record(bus: &dyn Bus) {
    let records: Vec<Record> = (0..6)
        .map(|i| record("orders", &format!("order-{}", i % 3), format!("event {i}")))
        .collect();
    let mut mailer = subscribe(bus, "mailer", &["orders"]).await;
    let mut ledger = subscribe(bus, "ledger", &["orders"]).await;
    bus.publish(&records).await.expect("publish");
    for subscription in [&mut mailer, &mut ledger] {
        let deliveries = receive_n(&mut **subscription, 6).await;
        let mut got = payloads(&deliveries);
        got.sort();
        let expected: Vec<String> = (0..6).map(|i| format!("event {i}")).collect();
        assert_eq!(got, expected);
        // One group's commits do not move the other.
        for delivery in &deliveries {
            subscription.commit(delivery).await.expect("commit");
        }
    }
    assert_quiet(&mut *mailer).await;
    assert_quiet(&mut *ledger).await;
}

async fn concurrent_publishes_arrive_exactly_once_per_group(bus: &dyn Bus) {
    const PUBLISHERS: usize = 8;
    const BATCHES: usize = 10;
    const BATCH_RECORDS: usize = 5;
    let total = PUBLISHERS * BATCHES * BATCH_RECORDS;
    let mut mailer = subscribe(bus, "mailer", &["payments"]).await;
    let mut ledger = subscribe(bus, "ledger", &["payments"]).await;

    let publishes = (0..PUBLISHERS).map(|publisher| async move {
        for batch in 0..BATCHES {
            let records: Vec<Record> = (0..BATCH_RECORDS)
                .map(|i| {
                    record(
                        "payments",
                        &format!("order-{publisher}"),
                        format!("{publisher}/{}", batch * BATCH_RECORDS + i),
                    )
                })
                .collect();
            bus.publish(&records).await.expect("publish");
        }
    });
    // Consumers read while the publishers write, so a reader that skipped a late commit would
    // miss it for good.
    let ((), mailer_got, ledger_got) = tokio::join!(
        join_all(publishes),
        receive_n(&mut *mailer, total),
        receive_n(&mut *ledger, total),
    );
    for deliveries in [&mailer_got, &ledger_got] {
        let got = payloads(deliveries);
        let unique: HashSet<&String> = got.iter().collect();
        assert_eq!(unique.len(), total, "every record exactly once");
        for publisher in 0..PUBLISHERS {
            let of_publisher: Vec<&String> = got
                .iter()
                .filter(|p| p.starts_with(&format!("{publisher}/")))
                .collect();
            let expected: Vec<String> = (0..BATCHES * BATCH_RECORDS)
                .map(|i| format!("{publisher}/{i}"))
                .collect();
            assert_eq!(
                of_publisher,
                expected.iter().collect::<Vec<_>>(),
                "order of publisher {publisher}"
            );
        }
    }
    assert_quiet(&mut *mailer).await;
    assert_quiet(&mut *ledger).await;
}

async fn topics_are_kept_apart(bus: &dyn Bus) {
    bus.publish(&[
        record("orders", "order-1", "placed"),
        record("payments", "order-1", "paid"),
        record("tickets", "order-1", "issued"),
    ])
    .await
    .expect("publish");
    let mut both = subscribe(bus, "saga", &["orders", "payments"]).await;
    let deliveries = receive_n(&mut *both, 2).await;
    let mut got: Vec<(String, String)> = deliveries
        .iter()
        .map(|d| {
            (
                d.topic.clone(),
                String::from_utf8(d.payload.clone()).expect("utf-8"),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("orders".to_owned(), "placed".to_owned()),
            ("payments".to_owned(), "paid".to_owned())
        ]
    );
    for delivery in &deliveries {
        both.commit(delivery).await.expect("commit");
    }
    assert_quiet(&mut *both).await;
    // Not left idle in the group: on Kafka a member that is not polled holds up the rebalance.
    drop(both);

    let mut tickets = subscribe(bus, "saga", &["tickets"]).await;
    let issued = receive(&mut *tickets).await;
    assert_eq!(
        (issued.topic.as_str(), issued.payload.as_slice()),
        ("tickets", &b"issued"[..])
    );
}

/// Runs `futures` concurrently on this task to completion (no `futures` crate for one helper).
/// Their database or broker I/O overlaps, which is what the publish race needs.
async fn join_all<F: Future<Output = ()>>(futures: impl IntoIterator<Item = F>) {
    let mut futures: Vec<Option<Pin<Box<F>>>> =
        futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futures {
            if let Some(future) = slot {
                if future.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
}
