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
                Op::Admit { sold_out } => QueueCommand::Admit { seats: if *sold_out { 0 } else { u32::MAX } },
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
                        let sold_out = matches!(command, QueueCommand::Admit { seats: 0 });
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
                    + (2_000 * i64::from(per_minute) / 60_000).max(1);
                prop_assert!(queue.admitted_total() as i64 <= allowed,
                    "{} admitted in {} ms at {}/min", queue.admitted_total(), now - open, per_minute);
            } else {
                prop_assert_eq!(queue.admitted_total(), 0);
            }
            // Waiting positions are 1..=n, no gaps, no repeats.
            let mut positions: Vec<u64> = (0..40u8)
                .filter_map(|n| match queue.status(user(n), Timestamp(now), false) {
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
        .apply(Timestamp(OPEN), &QueueCommand::Admit { seats: u32::MAX })
        .expect("open");
    let ranks: Vec<f64> = users
        .iter()
        .map(|u| match queue.status(*u, Timestamp(OPEN), false) {
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

#[derive(Clone, Debug)]
enum EventOp {
    Join(u8),
    /// `forged`: the buyer presents an admission number that is not theirs (or none).
    Hold {
        user: u8,
        hold: u8,
        seats: u32,
        forged: bool,
    },
    Confirm {
        hold: u8,
    },
    Release {
        hold: u8,
    },
    /// Lets time pass and runs the actor's timer step.
    Tick(i64),
}

fn event_op() -> impl Strategy<Value = EventOp> {
    prop_oneof![
        3 => (0u8..12).prop_map(EventOp::Join),
        4 => (0u8..12, 0u8..16, 1u32..4, prop::bool::weighted(0.2)).prop_map(|(user, hold, seats, forged)| EventOp::Hold { user, hold, seats, forged }),
        2 => (0u8..16).prop_map(|hold| EventOp::Confirm { hold }),
        1 => (0u8..16).prop_map(|hold| EventOp::Release { hold }),
        3 => (1i64..30_000).prop_map(EventOp::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A queued event's inventory: only buyers admitted at that moment place holds; a
    /// purchase ends the admission; the stock invariants hold; the journal replays to the live
    /// state.
    #[test]
    fn a_queued_event_sells_only_to_admitted_buyers(
        capacity in 1u32..12,
        active_max in 1u32..4,
        ops in prop::collection::vec(event_op(), 1..100),
    ) {
        use holdfast_actors::{Command, Error, Event, EventId, HoldId, Inventory, Line, OrderId, Quantity, QueueSetup, TicketCode, invariants};
        let ga = TicketCode::parse("GA").expect("code");
        let mut inv = Inventory::new(EventId(Uuid::from_u128(99)));
        let mut journal: Vec<Event> = Vec::new();
        let mut now = OPEN - 10_000;
        journal.extend(inv.apply(Timestamp(now), Command::DefineTicketType { code: ga.clone(), capacity, per_user_limit: None }).expect("define"));
        let setup = QueueSetup {
            settings: QueueSettings { admit_per_minute: 120, active_max, admission_ttl_ms: 20_000 },
            opens_at: Timestamp(OPEN),
            seed: [9; 32],
        };
        journal.extend(inv.apply(Timestamp(now), Command::SetQueue { queue: Some(setup) }).expect("queue"));
        let hold_id = |n: u8| HoldId(Uuid::from_u128(1_000 + u128::from(n)));
        for op in &ops {
            let command = match op {
                EventOp::Tick(ms) => { now += ms; Command::Expire }
                EventOp::Join(u) => Command::JoinQueue { user: user(*u) },
                EventOp::Hold { user: u, hold, seats, forged } => Command::Hold {
                    hold_id: hold_id(*hold),
                    user: user(*u),
                    items: vec![Line { ticket_type: ga.clone(), quantity: Quantity::new(*seats).expect("q") }],
                    ttl_ms: 60_000,
                    // The admission the buyer holds, as their token would say (a stale or
                    // missing one for some: `forged`).
                    admission: match inv.queue_status(user(*u), Timestamp(now)) {
                        Some(Some(QueueStatus::Admitted { number, .. })) if !*forged => Some(number),
                        Some(Some(QueueStatus::Admitted { number, .. })) if *hold % 2 == 0 => Some(number + 1),
                        _ if *hold % 3 == 0 => Some(u64::from(*hold)),
                        _ => None,
                    },
                },
                EventOp::Confirm { hold } => Command::Confirm { hold_id: hold_id(*hold), order_id: OrderId(Uuid::from_u128(5_000 + u128::from(*hold))) },
                EventOp::Release { hold } => Command::Release { hold_id: hold_id(*hold) },
            };
            let buyer = match op { EventOp::Hold { user: u, .. } => Some(user(*u)), _ => None };
            let forged = matches!(op, EventOp::Hold { forged: true, .. });
            let admitted_before = buyer.map(|b| matches!(inv.queue_status(b, Timestamp(now)), Some(Some(QueueStatus::Admitted { .. }))));
            let known_hold = match op { EventOp::Hold { hold, .. } => inv.hold(hold_id(*hold)).is_some(), _ => false };
            match inv.apply(Timestamp(now), command) {
                Ok(events) => {
                    let placed = events.iter().any(|e| matches!(e, Event::HoldPlaced { .. }));
                    if placed {
                        prop_assert_eq!(admitted_before, Some(true), "a hold by a buyer not admitted");
                        prop_assert!(!forged, "a hold with an admission not the buyer's");
                    }
                    if events.iter().any(|e| matches!(e, Event::HoldConfirmed { .. })) {
                        // The buyer's admission ended with the purchase.
                        let ended = events.iter().any(|e| matches!(e, Event::Queue(QueueEvent::AdmissionsEnded { expired: false, .. })));
                        let confirmed_user = events.iter().find_map(|e| match e { Event::HoldConfirmed { hold_id, .. } => inv.hold(*hold_id).map(|h| h.user), _ => None });
                        let still = confirmed_user.is_some_and(|u| matches!(inv.queue_status(u, Timestamp(now)), Some(Some(QueueStatus::Admitted { .. }))));
                        prop_assert!(!still, "an admission outlived its purchase (ended event: {})", ended);
                    }
                    journal.extend(events);
                }
                Err(Error::NotAdmitted) => prop_assert!((admitted_before == Some(false) || forged) && !known_hold),
                Err(_) => {}
            }
            prop_assert!(inv.queue().expect("queue").active() <= active_max as usize);
            prop_assert_eq!(invariants::check(&inv), Ok(()));
        }
        let mut replayed = Inventory::new(inv.event_id());
        for event in &journal { replayed.replay(event); }
        prop_assert_eq!(&replayed, &inv);
    }
}
