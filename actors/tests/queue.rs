//! Property tests of the waiting room (`holdfast_actors::queue`) against a plain model.
//!
//! After every step: never more than `active_max` admitted at once; never more admitted since
//! the opening than the rate allows (plus its burst); the waiting buyers' positions are exactly
//! 1..=n; buyers who joined after the opening are admitted in joining order and after every
//! buyer of the pre-queue. At the end: replaying the emitted events from nothing, or from a
//! snapshot taken midway, gives exactly the live queue.

use std::collections::{BTreeMap, BTreeSet};

use holdfast_actors::queue::{Queue, QueueCommand, QueueEvent, QueueSettings, QueueStatus};
use holdfast_actors::{Timestamp, UserId};
use proptest::prelude::*;
use uuid::Uuid;

const OPEN: i64 = 1_000_000;

fn user(n: u8) -> UserId {
    UserId(Uuid::from_u128(u128::from(n) + 1))
}

#[derive(Clone, Debug)]
enum Op {
    Join(u8),
    Admit {
        sold_out: bool,
    },
    Done(u8),
    /// Lets time pass, in milliseconds.
    Wait(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..40).prop_map(Op::Join),
        4 => prop::bool::weighted(0.2).prop_map(|sold_out| Op::Admit { sold_out }),
        2 => (0u8..40).prop_map(Op::Done),
        3 => (1i64..20_000).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_queue_admits_fairly_within_its_bounds(
        per_minute in 1u32..600,
        active_max in 1u32..8,
        ttl_ms in 1_000i64..60_000,
        start in -30_000i64..5_000,
        seed in any::<[u8; 32]>(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let settings = QueueSettings { admit_per_minute: per_minute, active_max, admission_ttl_ms: ttl_ms };
        let mut queue = Queue::new(settings, Timestamp(OPEN), seed).expect("valid");
        let empty = queue.clone();
        let mut now = OPEN + start;
        let mut journal: Vec<QueueEvent> = Vec::new();
        let mut snapshot: Option<(Queue, usize)> = None;
        // The model: who joined before and after the opening, in order; who was admitted.
        let mut pre: BTreeSet<UserId> = BTreeSet::new();
        let mut later: Vec<UserId> = Vec::new();
        let mut admitted_order: Vec<UserId> = Vec::new();
        let mut ever_admitted: BTreeMap<UserId, u32> = BTreeMap::new();
        let mut opened_at: Option<i64> = None;
        for (i, op) in ops.iter().enumerate() {
            let command = match op {
                Op::Wait(ms) => { now += ms; continue; }
                Op::Join(n) => QueueCommand::Join { user: user(*n) },
                Op::Admit { sold_out } => QueueCommand::Admit { sold_out: *sold_out },
                Op::Done(n) => QueueCommand::Done { user: user(*n) },
            };
            let events = match queue.apply(Timestamp(now), &command) {
                Ok(events) => events,
                Err(_) => {
                    // Only `Done` of someone not admitted is refused here.
                    let refused_done = matches!(command, QueueCommand::Done { .. });
                    prop_assert!(refused_done);
                    continue;
                }
            };
            for event in &events {
                match event {
                    QueueEvent::Opened { at } => {
                        prop_assert!(at.0 >= OPEN);
                        prop_assert!(opened_at.is_none());
                        opened_at = Some(at.0);
                    }
                    QueueEvent::Joined { user, pre: true, .. } => { pre.insert(*user); }
                    QueueEvent::Joined { user, pre: false, .. } => later.push(*user),
                    QueueEvent::Admitted { users, .. } => {
                        let sold_out = matches!(command, QueueCommand::Admit { sold_out: true });
                        prop_assert!(!sold_out || users.is_empty(), "nobody is admitted while sold out");
                        for u in users {
                            admitted_order.push(*u);
                            *ever_admitted.entry(*u).or_default() += 1;
                        }
                    }
                    QueueEvent::AdmissionsEnded { .. } => {}
                }
            }
            journal.extend(events);
            prop_assert!(queue.active() <= active_max as usize, "active {} > {}", queue.active(), active_max);
            if let Some(open) = opened_at {
                let allowed = (now - open) * i64::from(per_minute) / 60_000
                    + (5_000 * i64::from(per_minute) / 60_000).max(1);
                prop_assert!(queue.admitted_total() as i64 <= allowed,
                    "{} admitted in {} ms at {}/min", queue.admitted_total(), now - open, per_minute);
            } else {
                prop_assert_eq!(queue.admitted_total(), 0);
            }
            // Waiting positions are 1..=n, no gaps, no repeats.
            let mut positions: Vec<u64> = (0..40u8)
                .filter_map(|n| match queue.status(user(n), Timestamp(now)) {
                    Some(QueueStatus::Waiting { position: Some(p) } | QueueStatus::SoldOut { position: p }) => Some(p),
                    _ => None,
                })
                .collect();
            positions.sort_unstable();
            let expected: Vec<u64> = (1..=positions.len() as u64).collect();
            prop_assert_eq!(positions, expected);
            if i == ops.len() / 2 {
                snapshot = Some((queue.clone(), journal.len()));
            }
        }
        // The first admissions: the pre-queue's (in its drawn order) before anyone who joined
        // later, and the later ones in joining order.
        let mut seen = BTreeSet::new();
        let firsts: Vec<UserId> = admitted_order.iter().copied().filter(|u| seen.insert(*u)).collect();
        let first_later = firsts.iter().position(|u| !pre.contains(u)).unwrap_or(firsts.len());
        prop_assert!(firsts[first_later..].iter().all(|u| !pre.contains(u)),
            "a pre-queue buyer admitted after a later join: {:?}", firsts);
        let later_firsts: Vec<UserId> = firsts[first_later..].to_vec();
        let mut later_seen = BTreeSet::new();
        let later_order: Vec<UserId> = later.iter().copied().filter(|u| !pre.contains(u) && later_seen.insert(*u)).collect();
        prop_assert_eq!(&later_firsts[..], &later_order[..later_firsts.len()]);
        // Replay from nothing and from the snapshot.
        let mut replayed = empty;
        for event in &journal { replayed.replay(event); }
        prop_assert_eq!(&replayed, &queue);
        if let Some((mut from, at)) = snapshot {
            for event in &journal[at..] { from.replay(event); }
            prop_assert_eq!(&from, &queue);
        }
    }
}

/// 10,000 buyers in the pre-queue: the order of admission says nothing of the order of
/// arrival (|Spearman ρ| ≤ 0.05, the goal; for a random permutation of 10,000 its
/// standard deviation is 0.01).
#[test]
fn the_pre_queue_order_is_independent_of_arrival() {
    let settings = QueueSettings {
        admit_per_minute: 600_000,
        active_max: 20_000,
        admission_ttl_ms: 600_000,
    };
    let mut queue = Queue::new(
        settings,
        Timestamp(OPEN),
        *b"holdfast waiting room test seed!",
    )
    .expect("valid");
    let n = 10_000u32;
    let users: Vec<UserId> = (0..n)
        .map(|i| UserId(Uuid::from_u128(u128::from(i) * 7919 + 13)))
        .collect();
    for u in &users {
        queue
            .apply(Timestamp(OPEN - 1), &QueueCommand::Join { user: *u })
            .expect("join");
    }
    queue
        .apply(Timestamp(OPEN), &QueueCommand::Admit { sold_out: false })
        .expect("open");
    let ranks: Vec<f64> = users
        .iter()
        .map(|u| match queue.status(*u, Timestamp(OPEN)) {
            Some(QueueStatus::Waiting { position: Some(p) }) => p as f64,
            other => panic!("{other:?}"),
        })
        .collect();
    let nf = f64::from(n);
    let d2: f64 = ranks
        .iter()
        .enumerate()
        .map(|(i, r)| (i as f64 + 1.0 - r).powi(2))
        .sum();
    let rho = 1.0 - 6.0 * d2 / (nf * (nf * nf - 1.0));
    assert!(rho.abs() <= 0.05, "Spearman rho {rho}");
}
