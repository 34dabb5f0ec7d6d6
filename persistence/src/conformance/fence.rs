//! The fence: no journal write with a stale epoch commits, whatever the interleaving of claims,
//! leaves and appends, even from a writer paused between its fence check and its commit.

use std::collections::BTreeMap;
use std::time::Duration;

use holdfast_actors::EventId;
use holdfast_actors::actor::{Append, Journal, JournalError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sqlx::Row;
use uuid::Uuid;

use super::{records, seqs};
use crate::Store;

const SHARDS: u32 = 4;
const NODES: [&str; 3] = ["a", "b", "c"];

/// A fresh event id on `shard`.
fn event_on(shard: u32) -> EventId {
    loop {
        let event = EventId(Uuid::now_v7());
        if event.shard(SHARDS) == shard {
            return event;
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// `node` claims `shard` at the epoch it last saw.
    Claim { node: usize, shard: u32 },
    /// `node` reads the shard map again.
    Refresh { node: usize },
    /// `node` leaves; it may still be running (paused, partitioned) and try to write.
    Leave { node: usize },
    /// `node` appends to the events of `shards` (a bit set) in one group commit, each at the
    /// epoch it last saw, whether or not it still believes it owns the shard.
    Append { node: usize, shards: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES.len();
    prop_oneof![
        3 => (node.clone(), 0..SHARDS).prop_map(|(node, shard)| Op::Claim { node, shard }),
        2 => node.clone().prop_map(|node| Op::Refresh { node }),
        1 => node.clone().prop_map(|node| Op::Leave { node }),
        5 => (node, 1u8..16).prop_map(|(node, shards)| Op::Append { node, shards }),
    ]
}

/// The reference: the shard table, each node's (possibly stale) view of it, and the seqs each
/// event's journal must hold.
struct Model {
    table: BTreeMap<u32, (Option<usize>, u64)>,
    views: Vec<BTreeMap<u32, (Option<usize>, u64)>>,
    events: BTreeMap<u32, EventId>,
    written: BTreeMap<u32, Vec<u64>>,
}

async fn run_case(store: &Store, ops: &[Op]) {
    let table: BTreeMap<u32, (Option<usize>, u64)> = store
        .shards()
        .await
        .expect("shards")
        .into_iter()
        .map(|s| {
            let owner = s
                .owner
                .map(|o| NODES.iter().position(|n| *n == o).expect("a node"));
            (s.shard, (owner, s.epoch))
        })
        .collect();
    let mut m = Model {
        views: vec![table.clone(); NODES.len()],
        table,
        events: (0..SHARDS).map(|s| (s, event_on(s))).collect(),
        written: BTreeMap::new(),
    };
    for op in ops {
        match *op {
            Op::Claim { node, shard } => {
                let seen = m.views[node][&shard].1;
                let (_, current) = m.table[&shard];
                let claimed = store
                    .claim_shard(shard, seen, NODES[node])
                    .await
                    .expect("claim");
                if seen == current {
                    assert_eq!(claimed, Some(current + 1), "{op:?}");
                    m.table.insert(shard, (Some(node), current + 1));
                    m.views[node].insert(shard, (Some(node), current + 1));
                } else {
                    assert_eq!(claimed, None, "{op:?}: a claim at a stale epoch loses");
                }
            }
            Op::Refresh { node } => m.views[node] = m.table.clone(),
            Op::Leave { node } => {
                let released = store.node_leave(NODES[node]).await.expect("leave");
                let mut expected = 0;
                for (owner, epoch) in m.table.values_mut() {
                    if *owner == Some(node) {
                        *owner = None;
                        *epoch += 1;
                        expected += 1;
                    }
                }
                assert_eq!(released, expected, "{op:?}");
            }
            Op::Append { node, shards } => {
                let journal = store.cluster_journal(SHARDS, NODES[node]);
                let touched: Vec<u32> = (0..SHARDS).filter(|s| shards & (1 << s) != 0).collect();
                let appends: Vec<Append> = touched
                    .iter()
                    .map(|s| {
                        let next = m.written.get(s).map_or(0, Vec::len) as u64 + 1;
                        Append {
                            event_id: m.events[s],
                            epoch: m.views[node][s].1,
                            records: records(next..=next),
                        }
                    })
                    .collect();
                let results = journal.append_many(&appends).await;
                for (shard, (append, result)) in touched.iter().zip(appends.iter().zip(results)) {
                    let current = m.table[shard] == (Some(node), append.epoch);
                    match result {
                        Ok(()) => {
                            assert!(current, "{op:?}: shard {shard} written at a stale epoch");
                            m.written
                                .entry(*shard)
                                .or_default()
                                .push(append.records[0].seq);
                        }
                        Err(JournalError::Fenced { .. }) => {
                            assert!(!current, "{op:?}: the owner of shard {shard} was fenced")
                        }
                        Err(e) => panic!("{op:?}: {e}"),
                    }
                }
            }
        }
    }
    let journal = store.journal();
    for (shard, event) in &m.events {
        let stored = seqs(&journal.load(*event).await.expect("load").tail);
        assert_eq!(stored, m.written.get(shard).cloned().unwrap_or_default());
    }
}

/// Interleavings of claims, leaves and (possibly stale) group commits against the model, on
/// one store; each case starts from the shard table the previous ones left.
fn claims_moves_and_appends_match_the_model(store: Store, rt: &tokio::runtime::Runtime) {
    rt.block_on(store.cluster_init(SHARDS)).expect("init");
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..40), |ops| {
            rt.block_on(run_case(&store, &ops));
            Ok(())
        })
        .expect("no interleaving writes at a stale epoch");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn sqlite_claims_moves_and_appends_match_the_model() {
    let rt = runtime();
    let (store, _dir) = rt.block_on(crate::testing::sqlite_store());
    claims_moves_and_appends_match_the_model(store.clone(), &rt);
    rt.block_on(store.close());
}

#[test]
fn postgres_claims_moves_and_appends_match_the_model() {
    let rt = runtime();
    let store = rt.block_on(crate::testing::postgres_store());
    claims_moves_and_appends_match_the_model(store.clone(), &rt);
    rt.block_on(crate::testing::drop_postgres_store(store));
}

/// How the shard is taken from its paused owner.
#[derive(Clone, Copy, Debug)]
enum Move {
    Claim,
    Leave,
}

/// Sessions of this test's database waiting for a lock of any kind, seen from `conn`
/// (`pg_locks` is server-wide: other tests' waits must not count).
async fn lock_waits(conn: &mut sqlx::AnyConnection) -> i64 {
    sqlx::query(
        "SELECT count(*) AS waits FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE NOT l.granted AND a.datname = current_database()",
    )
    .fetch_one(&mut *conn)
    .await
    .and_then(|row| row.try_get("waits"))
    .expect("pg_locks")
}

/// A writer that passed its fence check and then stalls (here: on a row another transaction
/// holds, as a paused process or a slow network would) while its shard is moved. Its write
/// must commit before the move does, or not at all: the journal the new owner reads right
/// after the move is the journal for good.
async fn a_paused_writer_commits_before_the_move_or_not_at_all(store: &Store, how: Move) {
    store.cluster_init(SHARDS).await.expect("init");
    let event = event_on(1);
    let epoch = store
        .claim_shard(1, 0, "a")
        .await
        .expect("claim")
        .expect("won");
    let mut blocker = store.pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO journal (event_id, seq, epoch, payload, written_at) VALUES ($1, 1, $2, $3, 0)",
    )
    .bind(crate::uuid_text(event.0))
    .bind(crate::to_i64(epoch, "epoch").expect("epoch"))
    .bind(&b"blocker"[..])
    .execute(&mut *blocker)
    .await
    .expect("blocking row");

    let journal = store.cluster_journal(SHARDS, "a");
    let writer = tokio::spawn(async move { journal.append(event, epoch, &records(1..=1)).await });
    // Under a loaded test run the writer may take a while to reach its INSERT: wait up to
    // 30 s for its lock wait, and say so if it ended instead.
    for _ in 0..3000 {
        if writer.is_finished() || lock_waits(&mut blocker).await >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !writer.is_finished(),
        "the writer ended without waiting for the blocking row: {:?}",
        writer.await
    );
    assert!(
        lock_waits(&mut blocker).await >= 1,
        "the writer never stalled in 30 s"
    );

    let mover = {
        let store = store.clone();
        tokio::spawn(async move {
            match how {
                Move::Claim => {
                    let moved = store.claim_shard(1, epoch, "b").await.expect("claim");
                    assert_eq!(moved, Some(epoch + 1));
                }
                Move::Leave => assert_eq!(store.node_leave("a").await.expect("leave"), 1),
            }
            store.journal().load(event).await.expect("load").tail
        })
    };
    // Either the move waits for the paused writer (a second lock wait), or it is done.
    for _ in 0..3000 {
        if mover.is_finished() || lock_waits(&mut blocker).await >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    blocker.rollback().await.expect("rollback");

    let written = writer.await.expect("writer");
    let seen_after_move = seqs(&mover.await.expect("mover"));
    let stored = seqs(&store.journal().load(event).await.expect("load").tail);
    assert!(
        matches!(written, Ok(()) | Err(JournalError::Fenced { .. })),
        "{written:?}"
    );
    assert_eq!(
        stored, seen_after_move,
        "{how:?}: a write at epoch {epoch} committed after the move"
    );
    // And after the move the old owner is fenced for good.
    let late = store.cluster_journal(SHARDS, "a");
    assert!(matches!(
        late.append(event, epoch, &records(2..=2)).await,
        Err(JournalError::Fenced { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_paused_writer_commits_before_a_claim_or_not_at_all() {
    let store = crate::testing::postgres_store().await;
    a_paused_writer_commits_before_the_move_or_not_at_all(&store, Move::Claim).await;
    crate::testing::drop_postgres_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_paused_writer_commits_before_a_leave_or_not_at_all() {
    let store = crate::testing::postgres_store().await;
    a_paused_writer_commits_before_the_move_or_not_at_all(&store, Move::Leave).await;
    crate::testing::drop_postgres_store(store).await;
}
