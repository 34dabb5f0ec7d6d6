//! The store's conformance suite, written once and run against SQLite and PostgreSQL.

use holdfast_actors::actor::{self, Append, Journal, JournalError, Record, Snapshot};
use holdfast_actors::{
    Command, EventId, HoldId, Inventory, Line, OrderId, Quantity, TicketCode, Timestamp, UserId,
};
use uuid::Uuid;

use crate::{
    Error, EventRow, Idempotency, NewUser, NotificationRow, OrderRow, OutboxRecord, Store,
    StoredResponse, TicketRow, TicketTypeRow,
};

mod fence;

/// Instantiates every suite function below as a test on each backend.
macro_rules! store_test_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = crate::testing::sqlite_store().await;
                    super::$name(&store).await;
                    store.close().await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = crate::testing::postgres_store().await;
                    super::$name(&store).await;
                    crate::testing::drop_postgres_store(store).await;
                }
            )*
        }
    };
}

store_test_suite!(
    ping_answers,
    journal_round_trips_in_order,
    journal_conflict_stores_nothing_of_the_batch,
    journal_appends_a_multi_chunk_batch,
    journal_snapshot_trims_and_never_regresses,
    journal_recovers_an_inventory,
    journal_group_commits_many_events_and_isolates_failures,
    users_are_unique_by_email_in_any_case,
    staff_keep_their_organizer,
    events_round_trip_with_ordered_ticket_types,
    idempotency_lifecycle,
    idempotency_begin_is_race_free,
    idempotency_in_progress_of_a_dead_request_is_taken_over,
    refresh_tokens_rotate_once_and_reuse_revokes_the_family,
    cluster_shards_are_claimed_by_compare_and_set,
    cluster_journal_is_fenced_by_the_shard_epoch,
    checkout_side_effect_outbox_and_event_id_commit_together,
    checkout_outbox_publishes_in_order_once,
    checkout_outbox_keeps_the_order_of_one_call,
    checkout_order_per_hold_and_ticket_per_seat_are_unique,
    checkout_notifications_are_retried_when_due,
    saga_parked_records_are_kept_once_until_removed,
);

fn records(seqs: impl IntoIterator<Item = u64>) -> Vec<Record> {
    seqs.into_iter()
        .map(|seq| Record {
            seq,
            payload: format!("event {seq}").into_bytes(),
        })
        .collect()
}

fn seqs(records: &[Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

async fn ping_answers(store: &Store) {
    store.ping().await.expect("ping");
}

async fn journal_round_trips_in_order(store: &Store) {
    let journal = store.journal();
    let event = EventId::generate();
    let other = EventId::generate();

    let empty = journal.load(event).await.expect("load");
    assert!(empty.snapshot.is_none() && empty.tail.is_empty());
    journal.append(event, 1, &[]).await.expect("empty append");

    journal
        .append(event, 1, &records(1..=3))
        .await
        .expect("append");
    journal
        .append(other, 1, &records(1..=2))
        .await
        .expect("append other");
    journal
        .append(event, 1, &records(4..=5))
        .await
        .expect("append");
    let stored = journal.load(event).await.expect("load");
    assert!(stored.snapshot.is_none());
    assert_eq!(stored.tail, records(1..=5));
    assert_eq!(
        journal.load(other).await.expect("load").tail,
        records(1..=2)
    );
}

async fn journal_conflict_stores_nothing_of_the_batch(store: &Store) {
    let journal = store.journal();
    let event = EventId::generate();
    journal
        .append(event, 1, &records(1..=3))
        .await
        .expect("append");

    let err = journal
        .append(event, 1, &records(3..=6))
        .await
        .expect_err("seq 3 is written");
    assert!(matches!(err, JournalError::Conflict { seq: 3 }), "{err:?}");
    assert_eq!(
        journal.load(event).await.expect("load").tail,
        records(1..=3)
    );

    // The clash is in the second chunk: the first chunk's rows must be rolled back too.
    let late = EventId::generate();
    journal
        .append(late, 1, &records([650]))
        .await
        .expect("append");
    let err = journal
        .append(late, 1, &records(1..=700))
        .await
        .expect_err("seq 650 is written");
    assert!(matches!(err, JournalError::Conflict { seq: 1 }), "{err:?}");
    assert_eq!(
        seqs(&journal.load(late).await.expect("load").tail),
        vec![650]
    );
}

async fn journal_appends_a_multi_chunk_batch(store: &Store) {
    let journal = store.journal();
    let event = EventId::generate();
    journal
        .append(event, 1, &records(1..=1_200))
        .await
        .expect("append");
    journal
        .append(event, 1, &records([1_201]))
        .await
        .expect("append");
    let stored = journal.load(event).await.expect("load");
    assert_eq!(stored.tail, records(1..=1_201));
}

async fn journal_snapshot_trims_and_never_regresses(store: &Store) {
    let journal = store.journal();
    let event = EventId::generate();
    journal
        .append(event, 1, &records(1..=10))
        .await
        .expect("append");
    let snapshot = |seq: u64| Snapshot {
        seq,
        state: format!("state at {seq}").into_bytes(),
    };

    journal
        .save_snapshot(event, 1, snapshot(6))
        .await
        .expect("snapshot");
    let stored = journal.load(event).await.expect("load");
    assert_eq!(stored.snapshot, Some(snapshot(6)));
    assert_eq!(stored.tail, records(7..=10));

    // A late, older snapshot is ignored, and the rows it covers are gone already.
    journal
        .save_snapshot(event, 1, snapshot(4))
        .await
        .expect("old snapshot");
    let stored = journal.load(event).await.expect("load");
    assert_eq!(stored.snapshot, Some(snapshot(6)));
    assert_eq!(stored.tail, records(7..=10));

    journal
        .save_snapshot(event, 1, snapshot(10))
        .await
        .expect("snapshot");
    journal
        .append(event, 1, &records(11..=12))
        .await
        .expect("append after snapshot");
    let stored = journal.load(event).await.expect("load");
    assert_eq!(stored.snapshot, Some(snapshot(10)));
    assert_eq!(stored.tail, records(11..=12));
}

/// Applies `command` to `inventory` and journals the events it caused.
async fn apply_and_append(
    journal: &dyn Journal,
    inventory: &mut Inventory,
    now: Timestamp,
    command: Command,
) {
    let seq_before = inventory.seq();
    let events = inventory.apply(now, command).expect("command accepted");
    let records: Vec<Record> = (seq_before + 1..)
        .zip(&events)
        .map(|(seq, event)| Record {
            seq,
            payload: actor::encode_event(event),
        })
        .collect();
    journal
        .append(inventory.event_id(), 1, &records)
        .await
        .expect("append");
}

async fn journal_recovers_an_inventory(store: &Store) {
    let journal = store.journal();
    let event_id = EventId::generate();
    let mut inventory = Inventory::new(event_id);
    let code = |c: &str| TicketCode::parse(c).expect("ticket code");
    let line = |c: &str, n: u32| Line {
        ticket_type: code(c),
        quantity: Quantity::new(n).expect("quantity"),
    };
    let t0 = Timestamp::from_millis(1_700_000_000_000);
    for (c, capacity, per_user_limit) in [("GA", 100, None), ("VIP", 10, Some(2))] {
        let define = Command::DefineTicketType {
            code: code(c),
            capacity,
            per_user_limit,
        };
        apply_and_append(&journal, &mut inventory, t0, define).await;
    }
    let holds: Vec<HoldId> = (0..6).map(|_| HoldId::generate()).collect();
    for (i, hold_id) in holds.iter().enumerate() {
        let hold = Command::Hold {
            hold_id: *hold_id,
            user: UserId::generate(),
            items: vec![line("GA", 3), line("VIP", 1)],
            ttl_ms: 60_000 * (i as i64 + 1),
            admission: None,
        };
        apply_and_append(&journal, &mut inventory, t0.plus_millis(i as i64), hold).await;
    }
    let release = Command::Release { hold_id: holds[0] };
    apply_and_append(&journal, &mut inventory, t0.plus_millis(10), release).await;
    let confirm = Command::Confirm {
        hold_id: holds[1],
        order_id: OrderId::generate(),
    };
    apply_and_append(&journal, &mut inventory, t0.plus_millis(20), confirm).await;

    let from_journal =
        actor::recover(event_id, journal.load(event_id).await.expect("load")).expect("recover");
    assert_eq!(from_journal, inventory);

    let snapshot = Snapshot {
        seq: inventory.seq(),
        state: actor::encode_state(&inventory),
    };
    journal
        .save_snapshot(event_id, 1, snapshot)
        .await
        .expect("snapshot");
    // Holds 2 and 3 (ttl 3 and 4 minutes) expire; the rest stay.
    apply_and_append(
        &journal,
        &mut inventory,
        t0.plus_millis(4 * 60_000 + 10),
        Command::Expire,
    )
    .await;
    let release = Command::Release { hold_id: holds[5] };
    apply_and_append(
        &journal,
        &mut inventory,
        t0.plus_millis(4 * 60_000 + 20),
        release,
    )
    .await;

    let stored = journal.load(event_id).await.expect("load");
    assert!(stored.snapshot.is_some());
    assert_eq!(
        stored.tail.len(),
        3,
        "two expiries and a release after the snapshot"
    );
    let recovered = actor::recover(event_id, stored).expect("recover");
    assert_eq!(recovered, inventory);
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        id: Uuid::now_v7(),
        email: email.to_owned(),
        name: "Alice Nguyen".to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        role: "customer".to_owned(),
        phone: None,
        organizer_id: None,
        created_at_ms: 1_700_000_000_123,
        language: "vi".to_owned(),
    }
}

async fn staff_keep_their_organizer(store: &Store) {
    let organizer = NewUser {
        role: "organizer".to_owned(),
        ..new_user("org@example.com")
    };
    store.create_user(&organizer).await.expect("organizer");
    let staff = NewUser {
        role: "staff".to_owned(),
        organizer_id: Some(organizer.id),
        ..new_user("door@example.com")
    };
    store.create_user(&staff).await.expect("staff");
    let found = store
        .user_by_id(staff.id)
        .await
        .expect("by id")
        .expect("found");
    assert_eq!(found.organizer_id, Some(organizer.id));
    let found = store
        .user_by_email("org@example.com")
        .await
        .expect("by email")
        .expect("found");
    assert_eq!(found.organizer_id, None);
}

async fn users_are_unique_by_email_in_any_case(store: &Store) {
    let alice = new_user("Alice@Example.com");
    store.create_user(&alice).await.expect("create");

    let err = store
        .create_user(&new_user("alice@EXAMPLE.COM"))
        .await
        .expect_err("email taken");
    assert!(matches!(err, Error::Conflict), "{err:?}");

    let found = store
        .user_by_email("ALICE@example.com")
        .await
        .expect("by email")
        .expect("found");
    assert_eq!(found.id, alice.id);
    assert_eq!(found.email, alice.email, "stored as registered");
    assert_eq!(found.name, alice.name);
    assert_eq!(found.password_hash, alice.password_hash);
    assert_eq!(found.role, alice.role);
    assert_eq!(found.created_at_ms, alice.created_at_ms);
    assert_eq!(
        store.user_by_id(alice.id).await.expect("by id"),
        Some(found)
    );

    assert_eq!(
        store
            .user_by_email("bob@example.com")
            .await
            .expect("by email"),
        None
    );
    assert_eq!(store.user_by_id(Uuid::now_v7()).await.expect("by id"), None);
    store
        .create_user(&new_user("bob@example.com"))
        .await
        .expect("other email");
}

fn event_row(name: &str, starts_at_ms: i64, ticket_types: &[(&str, i64, Option<i64>)]) -> EventRow {
    EventRow {
        id: Uuid::now_v7(),
        organizer_id: Uuid::now_v7(),
        name: name.to_owned(),
        venue: "Hoa Binh Theater".to_owned(),
        starts_at_ms,
        created_at_ms: 1_700_000_000_000,
        refund_policy: None,
        description: String::new(),
        category: None,
        sale_starts_at_ms: None,
        sale_ends_at_ms: None,
        cancelled_at_ms: None,
        cancel_reason: None,
        time_zone: "Asia/Ho_Chi_Minh".to_owned(),
        queue: None,
        ticket_types: ticket_types
            .iter()
            .map(|&(code, price, per_user_limit)| TicketTypeRow {
                code: code.to_owned(),
                name: format!("{code} seat"),
                price,
                currency: "VND".to_owned(),
                capacity: 500,
                per_user_limit,
            })
            .collect(),
    }
}

async fn events_round_trip_with_ordered_ticket_types(store: &Store) {
    // Ticket types deliberately out of alphabetical order: the listing order is kept.
    let concert = event_row(
        "Concert",
        2_000,
        &[
            ("VIP", 3_000_000, Some(2)),
            ("GA", 800_000, None),
            ("BALCONY", 500_000, Some(4)),
        ],
    );
    let early = event_row("Matinee", 1_000, &[("GA", 100_000, None)]);
    let bare = event_row("Announcement", 3_000, &[]);
    // Same start as the concert: the id breaks the tie.
    let mut twin = event_row("Twin", 2_000, &[("GA", 1, None)]);
    twin.id = Uuid::from_u128(u128::MAX);
    for event in [&concert, &early, &bare, &twin] {
        store.create_event(event).await.expect("create event");
    }

    assert_eq!(
        store.event(concert.id).await.expect("event"),
        Some(concert.clone())
    );
    assert_eq!(
        store.event(bare.id).await.expect("event"),
        Some(bare.clone())
    );
    assert_eq!(store.event(Uuid::now_v7()).await.expect("event"), None);

    let err = store.create_event(&concert).await.expect_err("id taken");
    assert!(matches!(err, Error::Conflict), "{err:?}");
    let duplicate_codes = event_row("Dup", 5_000, &[("GA", 1, None), ("GA", 2, None)]);
    let err = store
        .create_event(&duplicate_codes)
        .await
        .expect_err("duplicate code");
    assert!(matches!(err, Error::Conflict), "{err:?}");
    assert_eq!(
        store.event(duplicate_codes.id).await.expect("event"),
        None,
        "nothing stored"
    );

    let all = store.list_events(10, 0).await.expect("list");
    assert_eq!(
        all,
        vec![early.clone(), concert.clone(), twin.clone(), bare.clone()]
    );
    assert_eq!(
        store.list_events(2, 0).await.expect("page 1"),
        vec![early, concert]
    );
    assert_eq!(
        store.list_events(2, 2).await.expect("page 2"),
        vec![twin, bare]
    );
    assert!(store.list_events(2, 4).await.expect("page 3").is_empty());
}

async fn idempotency_lifecycle(store: &Store) {
    let (scope, key, now) = ("user:1:POST /v1/holds", "key-1", 1_000);
    let begin = move |key: &'static str, hash: &'static [u8]| {
        store.idempotency_begin(scope, key, hash, now)
    };

    assert_eq!(
        begin(key, b"hash-a").await.expect("begin"),
        Idempotency::Started
    );
    assert_eq!(
        begin(key, b"hash-a").await.expect("begin"),
        Idempotency::InProgress
    );
    assert_eq!(
        begin(key, b"hash-b").await.expect("begin"),
        Idempotency::Mismatch
    );
    let other_scope = store.idempotency_begin("user:2:POST /v1/holds", key, b"hash-b", now);
    assert_eq!(other_scope.await.expect("begin"), Idempotency::Started);

    let response = StoredResponse {
        status: 201,
        content_type: Some("application/json".to_owned()),
        location: Some("/v1/holds/h".to_owned()),
        body: br#"{"hold_id":"h"}"#.to_vec(),
    };
    store
        .idempotency_complete(scope, key, &response)
        .await
        .expect("complete");
    assert_eq!(
        begin(key, b"hash-a").await.expect("begin"),
        Idempotency::Done(response.clone())
    );
    assert_eq!(
        begin(key, b"hash-b").await.expect("begin"),
        Idempotency::Mismatch
    );
    store
        .idempotency_abandon(scope, key)
        .await
        .expect("abandon");
    assert_eq!(
        begin(key, b"hash-a").await.expect("begin"),
        Idempotency::Done(response),
        "completed keys stay"
    );

    let empty = StoredResponse {
        status: 204,
        content_type: None,
        location: None,
        body: Vec::new(),
    };
    assert_eq!(
        begin("key-2", b"hash").await.expect("begin"),
        Idempotency::Started
    );
    store
        .idempotency_complete(scope, "key-2", &empty)
        .await
        .expect("complete");
    assert_eq!(
        begin("key-2", b"hash").await.expect("begin"),
        Idempotency::Done(empty)
    );

    assert_eq!(
        begin("key-3", b"hash").await.expect("begin"),
        Idempotency::Started
    );
    store
        .idempotency_abandon(scope, "key-3")
        .await
        .expect("abandon");
    assert_eq!(
        begin("key-3", b"other").await.expect("begin"),
        Idempotency::Started,
        "abandoned keys are free"
    );

    let later = store.idempotency_begin(scope, "key-4", b"hash", now + 10_000);
    assert_eq!(later.await.expect("begin"), Idempotency::Started);
    assert_eq!(store.idempotency_purge(now + 1).await.expect("purge"), 4);
    assert_eq!(
        begin(key, b"hash-b").await.expect("begin"),
        Idempotency::Started,
        "purged"
    );
    let kept = store.idempotency_begin(scope, "key-4", b"hash", now + 10_000);
    assert_eq!(kept.await.expect("begin"), Idempotency::InProgress);
}

async fn idempotency_begin_is_race_free(store: &Store) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .idempotency_begin("race", "same-key", b"hash", 1_000)
                    .await
            })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        match task.await.expect("task").expect("begin") {
            Idempotency::Started => started += 1,
            Idempotency::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
}

#[tokio::test]
async fn sqlite_store_keeps_data_across_reopen() {
    let (store, dir) = crate::testing::sqlite_store().await;
    let event = EventId::generate();
    store
        .journal()
        .append(event, 1, &records(1..=3))
        .await
        .expect("append");
    let user = new_user("carol@example.com");
    store.create_user(&user).await.expect("create user");
    store.close().await;

    let reopened = Store::connect(&crate::testing::sqlite_url(dir.path()), 2)
        .await
        .expect("reopen");
    reopened.migrate().await.expect("migrations are idempotent");
    assert_eq!(
        reopened.journal().load(event).await.expect("load").tail,
        records(1..=3)
    );
    let found = reopened
        .user_by_id(user.id)
        .await
        .expect("by id")
        .expect("found");
    assert_eq!(found.email, user.email);
    reopened.close().await;
}

#[tokio::test]
async fn sqlite_connections_are_durable_and_checked() {
    use sqlx::Row;

    let (store, _dir) = crate::testing::sqlite_store().await;
    // Every pooled connection, not only the first, gets the settings.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(store.pool.acquire().await.expect("connection"));
    }
    for conn in &mut conns {
        for (pragma, expected) in [
            ("journal_mode", "wal"),
            ("synchronous", "2"),
            ("busy_timeout", "5000"),
            ("foreign_keys", "1"),
        ] {
            let row = sqlx::query(&format!("PRAGMA {pragma}"))
                .fetch_one(&mut **conn)
                .await
                .expect("pragma");
            let value = row
                .try_get::<String, _>(0)
                .or_else(|_| row.try_get::<i64, _>(0).map(|n| n.to_string()))
                .expect("pragma value");
            assert_eq!(value, expected, "{pragma}");
        }
    }
    drop(conns);
    store.close().await;
}

async fn cluster_shards_are_claimed_by_compare_and_set(store: &Store) {
    store.cluster_init(4).await.expect("init");
    store.cluster_init(4).await.expect("init again is a no-op");
    assert!(matches!(
        store.cluster_init(8).await,
        Err(Error::ShardCountMismatch { .. })
    ));
    let shards = store.shards().await.expect("shards");
    assert_eq!(shards.len(), 4);
    assert!(shards.iter().all(|s| s.owner.is_none() && s.epoch == 0));
    assert_eq!(store.claim_shard(2, 0, "a").await.expect("claim"), Some(1));
    // A second claimant that read epoch 0 loses.
    assert_eq!(store.claim_shard(2, 0, "b").await.expect("claim"), None);
    assert_eq!(store.claim_shard(2, 1, "b").await.expect("claim"), Some(2));
    let row = store.shard(2).await.expect("shard").expect("exists");
    assert_eq!((row.owner.as_deref(), row.epoch), (Some("b"), 2));

    let node = crate::NodeRow {
        node_id: "b".into(),
        addr: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
        heartbeat_at_ms: 10,
        started_at_ms: 5,
    };
    store.node_heartbeat(&node).await.expect("register");
    store
        .node_heartbeat(&crate::NodeRow {
            heartbeat_at_ms: 20,
            ..node.clone()
        })
        .await
        .expect("beat");
    let nodes = store.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].heartbeat_at_ms, 20);
    assert_eq!(store.node_leave("b").await.expect("leave"), 1);
    assert!(store.nodes().await.expect("nodes").is_empty());
    let row = store.shard(2).await.expect("shard").expect("exists");
    assert_eq!(
        (row.owner, row.epoch),
        (None, 3),
        "leaving gives shards up under a new epoch"
    );
}

async fn cluster_journal_is_fenced_by_the_shard_epoch(store: &Store) {
    store.cluster_init(4).await.expect("init");
    let event = EventId(Uuid::now_v7());
    let shard = event.shard(4);
    let journal = store.cluster_journal(4, "a");
    let epoch = store
        .claim_shard(shard, 0, "a")
        .await
        .expect("claim")
        .expect("won");
    journal
        .append(event, epoch, &records(1..=2))
        .await
        .expect("owner writes");
    // The shard moves: the former owner's writes and snapshots are refused from now on.
    let moved = store
        .claim_shard(shard, epoch, "b")
        .await
        .expect("claim")
        .expect("won");
    assert!(matches!(
        journal.append(event, epoch, &records(3..=3)).await,
        Err(JournalError::Fenced { .. })
    ));
    let snapshot = Snapshot {
        seq: 2,
        state: vec![1],
    };
    assert!(matches!(
        journal.save_snapshot(event, epoch, snapshot).await,
        Err(JournalError::Fenced { .. })
    ));
    // The epoch alone is not enough: it must be the writer's own.
    assert!(matches!(
        journal.append(event, moved, &records(3..=3)).await,
        Err(JournalError::Fenced { .. })
    ));
    let journal = store.cluster_journal(4, "b");
    journal
        .append(event, moved, &records(3..=3))
        .await
        .expect("new owner writes");
    assert_eq!(
        seqs(&journal.load(event).await.expect("load").tail),
        vec![1, 2, 3]
    );
}

async fn idempotency_in_progress_of_a_dead_request_is_taken_over(store: &Store) {
    let begin = |now| store.idempotency_begin("s", "k", b"hash", now);
    assert_eq!(begin(0).await.expect("begin"), Idempotency::Started);
    assert_eq!(begin(30_000).await.expect("begin"), Idempotency::InProgress);
    // A minute later the first request is presumed dead with its process.
    assert_eq!(begin(61_000).await.expect("begin"), Idempotency::Started);
    assert_eq!(begin(62_000).await.expect("begin"), Idempotency::InProgress);
}

async fn journal_group_commits_many_events_and_isolates_failures(store: &Store) {
    let journal = store.journal();
    let events: Vec<EventId> = (0..5).map(|_| EventId::generate()).collect();
    let appends: Vec<Append> = events
        .iter()
        .enumerate()
        .map(|(i, e)| Append {
            event_id: *e,
            epoch: 1,
            records: records(1..=(i as u64 + 1)),
        })
        .collect();
    let results = journal.append_many(&appends).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            seqs(&journal.load(*e).await.expect("load").tail),
            (1..=i as u64 + 1).collect::<Vec<_>>()
        );
    }
    // A batch that rewrites a position fails alone; the others still land.
    let second = vec![
        Append {
            event_id: events[0],
            epoch: 1,
            records: records([2]),
        },
        Append {
            event_id: events[1],
            epoch: 1,
            records: records([2]),
        },
        Append {
            event_id: events[2],
            epoch: 1,
            records: records([4]),
        },
    ];
    let results = journal.append_many(&second).await;
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(JournalError::Conflict { .. })),
        "{results:?}"
    );
    assert_eq!(
        seqs(&journal.load(events[0]).await.expect("load").tail),
        vec![1, 2]
    );
    assert_eq!(
        seqs(&journal.load(events[1]).await.expect("load").tail),
        vec![1, 2]
    );
    assert_eq!(
        seqs(&journal.load(events[2]).await.expect("load").tail),
        vec![1, 2, 3, 4]
    );
}

async fn refresh_tokens_rotate_once_and_reuse_revokes_the_family(store: &Store) {
    use crate::Rotation;
    let user = Uuid::now_v7();
    store
        .refresh_insert(b"t1", "fam", user, 10_000, 0)
        .await
        .expect("insert");
    assert_eq!(
        store
            .refresh_rotate(b"t1", b"t2", 20_000, 1)
            .await
            .expect("rotate"),
        Rotation::Rotated {
            user_id: user,
            family: "fam".into()
        }
    );
    // Presenting t1 again: a replay; the whole family, t2 included, is revoked.
    assert_eq!(
        store
            .refresh_rotate(b"t1", b"t3", 20_000, 2)
            .await
            .expect("rotate"),
        Rotation::Reused {
            family: "fam".into()
        }
    );
    assert_eq!(
        store
            .refresh_rotate(b"t2", b"t4", 20_000, 3)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );
    assert_eq!(
        store
            .refresh_rotate(b"nope", b"t5", 20_000, 3)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );
    // Expiry and explicit revocation.
    store
        .refresh_insert(b"e1", "fam2", user, 100, 0)
        .await
        .expect("insert");
    assert_eq!(
        store
            .refresh_rotate(b"e1", b"e2", 200, 100)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );
    store
        .refresh_insert(b"r1", "fam3", user, 10_000, 0)
        .await
        .expect("insert");
    store
        .refresh_revoke_family("fam3", 5)
        .await
        .expect("revoke");
    assert_eq!(
        store
            .refresh_rotate(b"r1", b"r2", 20_000, 6)
            .await
            .expect("rotate"),
        Rotation::Invalid
    );
    // Revoked access tokens, read back incrementally, until they expire.
    store.access_revoke("j1", 1_000, 10).await.expect("revoke");
    store
        .access_revoke("j1", 1_000, 11)
        .await
        .expect("revoking twice is fine");
    store.access_revoke("j2", 50, 20).await.expect("revoke");
    let seen: Vec<String> = store
        .access_revoked_since(0, 30)
        .await
        .expect("since")
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(seen.len(), 2);
    assert!(
        store
            .access_revoked_since(15, 30)
            .await
            .expect("since")
            .iter()
            .all(|r| r.0 == "j2")
    );
    assert!(
        store
            .access_revoked_since(0, 60)
            .await
            .expect("since")
            .iter()
            .all(|r| r.0 == "j1"),
        "j2 expired at 50"
    );
    assert!(store.tokens_purge(20_001).await.expect("purge") >= 2);
}

fn order(hold: &str) -> OrderRow {
    OrderRow {
        id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        email: "buyer@example.com".to_owned(),
        event_id: Uuid::new_v4(),
        hold_id: hold.to_owned(),
        status: "pending_payment".to_owned(),
        amount: 1_000_000,
        currency: "VND".to_owned(),
        items: r#"[{"ticket_type":"GA","quantity":2}]"#.to_owned(),
        hold_expires_at: 1_000,
        payment_url: None,
        note: None,
        phone: Some("+84901234567".to_owned()),
        created_at: 1,
        updated_at: 1,
    }
}

fn outbox_record(topic: &str, n: u32) -> OutboxRecord {
    OutboxRecord {
        id: Uuid::new_v4(),
        topic: topic.to_owned(),
        key: format!("key-{n}"),
        payload: format!("payload {n}").into_bytes(),
    }
}

async fn checkout_side_effect_outbox_and_event_id_commit_together(store: &Store) {
    let event = Uuid::new_v4();
    let first = order("hold-a");
    // Rolled back: neither the order, the outbox record nor the event id stays.
    let mut tx = store.checkout_tx().await.unwrap();
    assert!(tx.first_time("orders", event).await.unwrap());
    assert!(tx.insert_order(&first).await.unwrap());
    tx.outbox(&[outbox_record("orders.events", 1)])
        .await
        .unwrap();
    drop(tx);
    assert_eq!(store.order(first.id).await.unwrap(), None);
    assert!(store.outbox_unpublished(10).await.unwrap().is_empty());
    // Committed: all three stay, and the event is handled once only.
    let mut tx = store.checkout_tx().await.unwrap();
    assert!(tx.first_time("orders", event).await.unwrap());
    assert!(tx.insert_order(&first).await.unwrap());
    tx.outbox(&[outbox_record("orders.events", 1)])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.order(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.outbox_unpublished(10).await.unwrap().len(), 1);
    let mut tx = store.checkout_tx().await.unwrap();
    assert!(
        !tx.first_time("orders", event).await.unwrap(),
        "a redelivery"
    );
    assert!(
        tx.first_time("tickets", event).await.unwrap(),
        "another consumer"
    );
    let mut locked = tx.order(first.id).await.unwrap().unwrap();
    locked.status = "confirmed".to_owned();
    locked.payment_url = Some("https://pay.example/x".to_owned());
    locked.updated_at = 2;
    tx.update_order(&locked).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.order(first.id).await.unwrap(), Some(locked.clone()));
    assert_eq!(
        store.order_by_hold("hold-a").await.unwrap(),
        Some(locked.clone())
    );
    assert_eq!(
        store.orders_of_user(first.user_id, 10).await.unwrap(),
        vec![locked]
    );
}

/// One call writes its records in as few statements as it can (a group commit's outbox), and
/// they are published in the order given, the records of one order in the order of its events.
async fn checkout_outbox_keeps_the_order_of_one_call(store: &Store) {
    let records: Vec<OutboxRecord> = (0..250)
        .map(|n| outbox_record("orders.events", n))
        .collect();
    let mut tx = store.checkout_tx().await.unwrap();
    tx.outbox(&records).await.unwrap();
    tx.commit().await.unwrap();
    let pending = store.outbox_unpublished(1000).await.unwrap();
    let got: Vec<_> = pending.iter().map(|p| p.record.clone()).collect();
    assert_eq!(got, records);
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
}

async fn checkout_outbox_publishes_in_order_once(store: &Store) {
    for n in 0..5 {
        let mut tx = store.checkout_tx().await.unwrap();
        tx.outbox(&[outbox_record("payments.events", n)])
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let pending = store.outbox_unpublished(3).await.unwrap();
    let keys: Vec<_> = pending.iter().map(|p| p.record.key.clone()).collect();
    assert_eq!(keys, ["key-0", "key-1", "key-2"]);
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq));
    let seqs: Vec<i64> = pending.iter().map(|p| p.seq).collect();
    store.outbox_published(&seqs).await.unwrap();
    let rest = store.outbox_unpublished(10).await.unwrap();
    let keys: Vec<_> = rest.iter().map(|p| p.record.key.clone()).collect();
    assert_eq!(keys, ["key-3", "key-4"]);
    assert_eq!(rest[0].record.payload, b"payload 3");
    // A relay's lease: on PostgreSQL one relay at a time; published marks its batch.
    let lease = store
        .outbox_lease(10)
        .await
        .unwrap()
        .expect("the first relay's turn");
    assert_eq!(lease.records.len(), 2);
    if store.backend() == crate::Backend::Postgres {
        assert!(
            store.outbox_lease(10).await.unwrap().is_none(),
            "one relay at a time"
        );
    }
    lease.published().await.unwrap();
    assert!(store.outbox_unpublished(10).await.unwrap().is_empty());
    let next = store
        .outbox_lease(10)
        .await
        .unwrap()
        .expect("the turn is free again");
    assert!(next.records.is_empty());
    drop(next);
    // Retention removes published records only.
    let mut tx = store.checkout_tx().await.unwrap();
    tx.outbox(&[outbox_record("payments.events", 9)])
        .await
        .unwrap();
    assert!(tx.first_time("tickets", Uuid::new_v4()).await.unwrap());
    tx.commit().await.unwrap();
    let (outbox, processed) = store.saga_purge(i64::MAX).await.unwrap();
    assert_eq!((outbox, processed), (5, 1));
    assert_eq!(
        store.outbox_unpublished(10).await.unwrap().len(),
        1,
        "unpublished stays"
    );
    // PostgreSQL: a record whose transaction took a lower number but committed after the relay
    // read past it is not marked with the batch around it.
    if store.backend() == crate::Backend::Postgres {
        let pending = store.outbox_unpublished(10).await.unwrap();
        let seqs: Vec<i64> = pending.iter().map(|p| p.seq).collect();
        store.outbox_published(&seqs).await.unwrap();
        let mut first = store.checkout_tx().await.unwrap();
        first
            .outbox(&[outbox_record("orders.events", 20)])
            .await
            .unwrap();
        let mut slow = store.checkout_tx().await.unwrap();
        slow.outbox(&[outbox_record("orders.events", 21)])
            .await
            .unwrap();
        let mut last = store.checkout_tx().await.unwrap();
        last.outbox(&[outbox_record("orders.events", 22)])
            .await
            .unwrap();
        first.commit().await.unwrap();
        last.commit().await.unwrap();
        let lease = store.outbox_lease(10).await.unwrap().expect("turn");
        let keys: Vec<_> = lease.records.iter().map(|p| p.record.key.clone()).collect();
        assert_eq!(keys, ["key-20", "key-22"], "only what committed");
        slow.commit().await.unwrap();
        lease.published().await.unwrap();
        let left = store.outbox_unpublished(10).await.unwrap();
        let keys: Vec<_> = left.iter().map(|p| p.record.key.clone()).collect();
        assert_eq!(keys, ["key-21"], "the late record waits for the next round");
    }
}

async fn checkout_order_per_hold_and_ticket_per_seat_are_unique(store: &Store) {
    let first = order("hold-b");
    let mut tx = store.checkout_tx().await.unwrap();
    assert!(tx.insert_order(&first).await.unwrap());
    assert!(
        !tx.insert_order(&order("hold-b")).await.unwrap(),
        "one order per hold"
    );
    let ticket = TicketRow {
        id: Uuid::new_v4(),
        order_id: first.id,
        user_id: first.user_id,
        event_id: first.event_id,
        ticket_type: "GA".to_owned(),
        seat: 1,
        code: "HF1.x.y".to_owned(),
        status: "valid".to_owned(),
        admitted_at: None,
        created_at: 5,
    };
    assert!(tx.insert_ticket(&ticket).await.unwrap());
    let again = TicketRow {
        id: Uuid::new_v4(),
        ..ticket.clone()
    };
    assert!(
        !tx.insert_ticket(&again).await.unwrap(),
        "one ticket per seat"
    );
    let second = TicketRow {
        id: Uuid::new_v4(),
        seat: 2,
        ..ticket.clone()
    };
    assert!(tx.insert_ticket(&second).await.unwrap());
    tx.set_ticket_status(ticket.id, "admitted", Some(9))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tickets = store.tickets_of_order(first.id).await.unwrap();
    assert_eq!(tickets.len(), 2);
    assert_eq!(tickets[0].status, "admitted");
    assert_eq!(tickets[0].admitted_at, Some(9));
    // Voiding leaves a ticket used at the door as it is: only the unused one is voided.
    let mut tx = store.checkout_tx().await.unwrap();
    assert_eq!(tx.void_tickets(first.id).await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(
        store.ticket(second.id).await.unwrap().unwrap().status,
        "void"
    );
    assert_eq!(
        store.ticket(ticket.id).await.unwrap().unwrap().status,
        "admitted"
    );
}

async fn checkout_notifications_are_retried_when_due(store: &Store) {
    let order_id = Uuid::new_v4();
    let n = NotificationRow {
        id: Uuid::new_v4(),
        order_id,
        channel: "email".to_owned(),
        recipient: "buyer@example.com".to_owned(),
        subject: "Your tickets".to_owned(),
        body: "See attached".to_owned(),
        attachments: Some(vec![1, 2, 3]),
        status: "pending".to_owned(),
        attempts: 0,
        next_attempt_at: 100,
        last_error: None,
        created_at: 100,
        sent_at: None,
    };
    let mut tx = store.checkout_tx().await.unwrap();
    assert!(tx.insert_notification(&n).await.unwrap());
    assert!(!tx.insert_notification(&n).await.unwrap());
    tx.commit().await.unwrap();
    assert!(store.notifications_due(99, 10).await.unwrap().is_empty());
    assert!(
        !store.notification_claim(n.id, 99, 150).await.unwrap(),
        "not at that time"
    );
    assert!(store.notification_claim(n.id, 100, 150).await.unwrap());
    assert!(
        !store.notification_claim(n.id, 100, 150).await.unwrap(),
        "taken once"
    );
    assert!(store.notifications_due(149, 10).await.unwrap().is_empty());
    assert!(store.notification_claim(n.id, 150, 100).await.unwrap());
    assert_eq!(
        store.notifications_due(100, 10).await.unwrap(),
        vec![n.clone()]
    );
    store
        .notification_attempted(n.id, "pending", 500, Some("connection refused"), 100)
        .await
        .unwrap();
    assert!(store.notifications_due(499, 10).await.unwrap().is_empty());
    store
        .notification_attempted(n.id, "sent", 500, None, 600)
        .await
        .unwrap();
    let stored = store.notifications_of_order(order_id).await.unwrap();
    assert_eq!(stored[0].attempts, 2);
    assert_eq!(stored[0].status, "sent");
    assert_eq!(stored[0].sent_at, Some(600));
    assert!(
        store
            .notifications_due(10_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn saga_parked_records_are_kept_once_until_removed(store: &Store) {
    let row = crate::ParkedRow {
        id: Uuid::new_v4(),
        group: "orders".to_owned(),
        topic: "payments.events".to_owned(),
        key: "k".to_owned(),
        event_id: Uuid::new_v4().to_string(),
        order_id: Some("o".to_owned()),
        payload: vec![0, 1, 2, 255],
        error: "first".to_owned(),
        attempts: 1,
        parked_at: 10,
    };
    store.park(&row).await.unwrap();
    // The same record parked again (a redelivery): one row, the attempts added.
    let again = crate::ParkedRow {
        id: Uuid::new_v4(),
        error: "second".to_owned(),
        attempts: 3,
        parked_at: 20,
        ..row.clone()
    };
    store.park(&again).await.unwrap();
    let listed = store.parked(100).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, row.id);
    assert_eq!(listed[0].error, "second");
    assert_eq!(listed[0].attempts, 4);
    assert_eq!(listed[0].payload, row.payload);
    assert!(store.parked_failed_again(row.id, "third").await.unwrap());
    let one = store.parked_one(row.id).await.unwrap().unwrap();
    assert_eq!((one.error.as_str(), one.attempts), ("third", 5));
    assert!(store.parked_remove(row.id).await.unwrap());
    assert!(!store.parked_remove(row.id).await.unwrap());
    assert!(store.parked_one(row.id).await.unwrap().is_none());
}
