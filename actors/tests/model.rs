//! Property tests: the inventory state machine against a plain reference model.
//!
//! After every step: the same answer as the model, the same stock, every invariant holds.
//! At the end: replaying the emitted events from nothing, or from a snapshot taken midway,
//! gives exactly the live state.

use std::collections::BTreeMap;

use holdfast_actors::actor::{self, Record, Snapshot, Stored};
use holdfast_actors::inventory::ENDED_HOLD_RETENTION_MS;
use holdfast_actors::{
    Command, Error, Event, EventId, HoldId, HoldStatus, Inventory, Line, OrderId, Quantity,
    SaleWindow, TicketCode, Timestamp, UserId, invariants,
};
use proptest::prelude::*;
use uuid::Uuid;

fn code(s: &str) -> TicketCode {
    TicketCode::parse(s).expect("valid code")
}

fn id(n: u8) -> Uuid {
    Uuid::from_u128(u128::from(n) + 1)
}

#[derive(Clone, Debug)]
enum Op {
    Hold {
        hold: u8,
        user: u8,
        lines: Vec<(u8, u32)>,
        ttl: i64,
    },
    Release {
        hold: u8,
    },
    Confirm {
        hold: u8,
        order: u8,
    },
    Return {
        order: u8,
    },
    ReturnPart {
        order: u8,
        keep: Vec<(u8, u32)>,
    },
    Adjust {
        ty: u8,
        capacity: u32,
    },
    Expire,
    /// Jumps past the retention of ended holds so they are forgotten.
    Jump,
    /// The sale window as offsets from now (`None`: open end).
    Window {
        starts_in: Option<i64>,
        ends_in: Option<i64>,
    },
    Cancel,
    Limit {
        ty: u8,
        limit: Option<u32>,
    },
}

const TYPES: [&str; 3] = ["A", "B", "ZZ"]; // ZZ is never defined

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..8u8, 0..3u8, prop::collection::vec((0..3u8, 1..6u32), 0..4), 1..60i64)
            .prop_map(|(hold, user, lines, ttl)| Op::Hold { hold, user, lines, ttl }),
        2 => (0..8u8).prop_map(|hold| Op::Release { hold }),
        2 => (0..8u8, 0..4u8).prop_map(|(hold, order)| Op::Confirm { hold, order }),
        1 => (0..4u8).prop_map(|order| Op::Return { order }),
        1 => (0..4u8, prop::collection::vec((0..3u8, 1..4u32), 0..3))
            .prop_map(|(order, keep)| Op::ReturnPart { order, keep }),
        1 => (0..2u8, 0..30u32).prop_map(|(ty, capacity)| Op::Adjust { ty, capacity }),
        2 => Just(Op::Expire),
        1 => Just(Op::Jump),
        1 => (0..2u8, prop::option::of(0..8u32)).prop_map(|(ty, limit)| Op::Limit { ty, limit }),
        1 => (prop::option::of(-40..40i64), prop::option::of(-40..80i64))
            .prop_map(|(starts_in, ends_in)| Op::Window { starts_in, ends_in }),
        // Rare: a cancelled event refuses every later hold.
        1 => prop::bool::weighted(0.2).prop_map(|cancel| if cancel { Op::Cancel } else { Op::Expire }),
    ]
}

#[derive(Clone, Debug)]
struct MHold {
    user: u8,
    items: BTreeMap<&'static str, u32>,
    expires_at: i64,
    status: HoldStatus,
    ended_at: i64,
    order: Option<u8>,
}

/// The reference model: plain maps, everything recomputed from the holds and orders.
#[derive(Default)]
struct Model {
    types: BTreeMap<&'static str, (u32, Option<u32>)>,
    holds: BTreeMap<u8, MHold>,
    /// order → (hold, returned)
    orders: BTreeMap<u8, (u8, bool)>,
    /// order → the seats it still holds after a partial return
    kept: BTreeMap<u8, BTreeMap<&'static str, u32>>,
    /// (starts_at, ends_at) in absolute time.
    window: (Option<i64>, Option<i64>),
    cancelled: bool,
}

impl Model {
    fn held(&self, ty: &str) -> u32 {
        self.holds
            .values()
            .filter(|h| h.status == HoldStatus::Active)
            .map(|h| h.items.get(ty).copied().unwrap_or(0))
            .sum()
    }

    /// The seats order `order` (of hold `hold`) holds sold.
    fn order_seats(&self, order: u8, hold: u8, ty: &str) -> u32 {
        let items = self.kept.get(&order).unwrap_or(&self.holds[&hold].items);
        items.get(ty).copied().unwrap_or(0)
    }

    fn sold(&self, ty: &str) -> u32 {
        self.orders
            .iter()
            .filter(|(_, (_, returned))| !returned)
            .map(|(o, (h, _))| self.order_seats(*o, *h, ty))
            .sum()
    }

    fn available(&self, ty: &str) -> u32 {
        self.types[ty].0 - self.held(ty) - self.sold(ty)
    }

    fn of_user(&self, user: u8, ty: &str) -> u32 {
        let held: u32 = self
            .holds
            .values()
            .filter(|h| h.status == HoldStatus::Active && h.user == user)
            .map(|h| h.items.get(ty).copied().unwrap_or(0))
            .sum();
        let bought: u32 = self
            .orders
            .iter()
            .filter(|(_, (h, r))| !r && self.holds[h].user == user)
            .map(|(o, (h, _))| self.order_seats(*o, *h, ty))
            .sum();
        held + bought
    }

    fn step(&mut self, now: i64, op: &Op) -> Result<(), Error> {
        match op {
            Op::Hold {
                hold,
                user,
                lines,
                ttl,
            } => {
                if let Some(h) = self.holds.get(hold) {
                    return if h.user == *user {
                        Ok(())
                    } else {
                        Err(Error::HoldIdTaken)
                    };
                }
                if self.cancelled {
                    return Err(Error::EventCancelled);
                }
                let (starts, ends) = self.window;
                if starts.is_some_and(|s| now < s) || ends.is_some_and(|e| now >= e) {
                    return Err(Error::SaleNotOpen {
                        window: window(starts, ends),
                    });
                }
                if lines.is_empty() {
                    return Err(Error::Invalid("a hold needs at least one line".to_owned()));
                }
                let mut items: BTreeMap<&'static str, u32> = BTreeMap::new();
                for (ty, q) in lines {
                    *items.entry(TYPES[*ty as usize]).or_default() += q;
                }
                for (ty, q) in &items {
                    let Some((_, limit)) = self.types.get(ty) else {
                        return Err(Error::UnknownTicketType(code(ty)));
                    };
                    if let Some(limit) = limit {
                        let already = self.of_user(*user, ty);
                        if already + q > *limit {
                            return Err(Error::LimitExceeded {
                                ticket_type: code(ty),
                                limit: *limit,
                                already,
                            });
                        }
                    }
                }
                if items.iter().any(|(ty, q)| *q > self.available(ty)) {
                    let available = items
                        .keys()
                        .map(|ty| (code(ty), self.available(ty)))
                        .collect();
                    return Err(Error::SoldOut { available });
                }
                self.holds.insert(
                    *hold,
                    MHold {
                        user: *user,
                        items,
                        expires_at: now + ttl,
                        status: HoldStatus::Active,
                        ended_at: 0,
                        order: None,
                    },
                );
                Ok(())
            }
            Op::Release { hold } => {
                let h = self.holds.get_mut(hold).ok_or(Error::HoldNotFound)?;
                match h.status {
                    HoldStatus::Active => {
                        h.status = HoldStatus::Released;
                        h.ended_at = now;
                        Ok(())
                    }
                    HoldStatus::Confirmed => Err(Error::HoldNotActive(HoldStatus::Confirmed)),
                    _ => Ok(()),
                }
            }
            Op::Confirm { hold, order } => {
                let taken = self.orders.contains_key(order);
                let h = self.holds.get_mut(hold).ok_or(Error::HoldNotFound)?;
                match h.status {
                    HoldStatus::Confirmed if h.order == Some(*order) => Ok(()),
                    HoldStatus::Active if h.expires_at <= now => {
                        Err(Error::HoldNotActive(HoldStatus::Expired))
                    }
                    HoldStatus::Active if taken => Err(Error::OrderIdTaken),
                    HoldStatus::Active => {
                        h.status = HoldStatus::Confirmed;
                        h.order = Some(*order);
                        self.orders.insert(*order, (*hold, false));
                        Ok(())
                    }
                    status => Err(Error::HoldNotActive(status)),
                }
            }
            Op::Return { order } => {
                let o = self.orders.get_mut(order).ok_or(Error::OrderNotFound)?;
                o.1 = true;
                Ok(())
            }
            Op::ReturnPart { order, keep } => {
                let &(hold, returned) = self.orders.get(order).ok_or(Error::OrderNotFound)?;
                if returned {
                    return Ok(());
                }
                let mut asked: BTreeMap<&'static str, u32> = BTreeMap::new();
                for (ty, q) in keep {
                    *asked.entry(TYPES[*ty as usize]).or_default() += q;
                }
                // Never more than the order holds now.
                let kept: BTreeMap<&'static str, u32> = asked
                    .into_iter()
                    .filter_map(|(ty, q)| {
                        let held = self.order_seats(*order, hold, ty);
                        (held > 0).then_some((ty, q.min(held)))
                    })
                    .collect();
                if kept.is_empty() {
                    self.orders.get_mut(order).expect("order").1 = true;
                } else {
                    self.kept.insert(*order, kept);
                }
                Ok(())
            }
            Op::Adjust { ty, capacity } => {
                if self.cancelled {
                    return Err(Error::EventCancelled);
                }
                let ty = TYPES[*ty as usize];
                let committed = self.held(ty) + self.sold(ty);
                if *capacity < committed {
                    return Err(Error::CapacityBelowCommitted { committed });
                }
                self.types.get_mut(ty).expect("defined").0 = *capacity;
                Ok(())
            }
            Op::Window { starts_in, ends_in } => {
                let (starts, ends) = (starts_in.map(|d| now + d), ends_in.map(|d| now + d));
                if let (Some(s), Some(e)) = (starts, ends)
                    && e <= s
                {
                    return Err(Error::Invalid(
                        "the sale must end after it starts".to_owned(),
                    ));
                }
                self.window = (starts, ends);
                Ok(())
            }
            Op::Limit { ty, limit } => {
                let ty = TYPES[*ty as usize];
                if *limit == Some(0) {
                    return Err(Error::Invalid("a limit is at least 1".to_owned()));
                }
                if self.types[ty].1 == *limit {
                    return Ok(());
                }
                if let Some(limit) = limit {
                    let most = (0..3u8).map(|u| self.of_user(u, ty)).max().unwrap_or(0);
                    if most > *limit {
                        return Err(Error::LimitBelowHeld { most });
                    }
                }
                self.types.get_mut(ty).expect("defined").1 = *limit;
                Ok(())
            }
            Op::Cancel => {
                if !self.cancelled {
                    for h in self.holds.values_mut() {
                        if h.status == HoldStatus::Active {
                            h.status = HoldStatus::Released;
                            h.ended_at = now;
                        }
                    }
                    self.cancelled = true;
                }
                Ok(())
            }
            Op::Expire | Op::Jump => {
                for h in self.holds.values_mut() {
                    if h.status == HoldStatus::Active && h.expires_at <= now {
                        h.status = HoldStatus::Expired;
                        h.ended_at = now;
                    }
                }
                let horizon = now - ENDED_HOLD_RETENTION_MS;
                let oldest = self
                    .holds
                    .values()
                    .filter(|h| matches!(h.status, HoldStatus::Released | HoldStatus::Expired))
                    .map(|h| h.ended_at)
                    .min();
                if oldest.is_some_and(|o| o + 60 * 60 * 1000 < horizon) {
                    self.holds.retain(|_, h| {
                        !(matches!(h.status, HoldStatus::Released | HoldStatus::Expired)
                            && h.ended_at < horizon)
                    });
                }
                Ok(())
            }
        }
    }
}

fn window(starts: Option<i64>, ends: Option<i64>) -> SaleWindow {
    SaleWindow {
        starts_at: starts.map(Timestamp),
        ends_at: ends.map(Timestamp),
    }
}

fn to_command(now: i64, op: &Op) -> Command {
    match op {
        Op::Hold {
            hold,
            user,
            lines,
            ttl,
        } => Command::Hold {
            hold_id: HoldId(id(*hold)),
            user: UserId(id(*user)),
            items: lines
                .iter()
                .map(|(ty, q)| Line {
                    ticket_type: code(TYPES[*ty as usize]),
                    quantity: Quantity::new(*q).expect("q"),
                })
                .collect(),
            ttl_ms: *ttl,
            admission: None,
        },
        Op::Release { hold } => Command::Release {
            hold_id: HoldId(id(*hold)),
        },
        Op::Confirm { hold, order } => Command::Confirm {
            hold_id: HoldId(id(*hold)),
            order_id: OrderId(id(*order)),
        },
        Op::Return { order } => Command::Return {
            order_id: OrderId(id(*order)),
        },
        Op::ReturnPart { order, keep } => Command::ReturnPart {
            order_id: OrderId(id(*order)),
            keep: keep
                .iter()
                .map(|(ty, q)| Line {
                    ticket_type: code(TYPES[*ty as usize]),
                    quantity: Quantity::new(*q).expect("q"),
                })
                .collect(),
        },
        Op::Adjust { ty, capacity } => Command::AdjustCapacity {
            ticket_type: code(TYPES[*ty as usize]),
            capacity: *capacity,
        },
        Op::Expire | Op::Jump => Command::Expire,
        Op::Window { starts_in, ends_in } => Command::SetSaleWindow {
            window: window(starts_in.map(|d| now + d), ends_in.map(|d| now + d)),
        },
        Op::Cancel => Command::Cancel,
        Op::Limit { ty, limit } => Command::SetPerUserLimit {
            ticket_type: code(TYPES[*ty as usize]),
            per_user_limit: *limit,
        },
    }
}

fn setup() -> (Inventory, Model, Vec<Event>) {
    let mut inv = Inventory::new(EventId(id(200)));
    let mut model = Model::default();
    let mut events = Vec::new();
    for (ty, capacity, limit) in [("A", 20, Some(6)), ("B", 10, None)] {
        events.extend(
            inv.apply(
                Timestamp(0),
                Command::DefineTicketType {
                    code: code(ty),
                    capacity,
                    per_user_limit: limit,
                },
            )
            .expect("define"),
        );
        model.types.insert(ty, (capacity, limit));
    }
    (inv, model, events)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn matches_the_model_and_replays(ops in prop::collection::vec((0..25i64, op()), 1..120), snap_at in 0..120usize) {
        let (mut inv, mut model, mut events) = setup();
        let mut now = 0i64;
        let mut snapshot = None;
        for (i, (dt, op)) in ops.iter().enumerate() {
            now += dt;
            if matches!(op, Op::Jump) {
                now += ENDED_HOLD_RETENTION_MS + 2 * 60 * 60 * 1000;
            }
            let expected = model.step(now, op);
            let got = inv.apply(Timestamp(now), to_command(now, op));
            prop_assert_eq!(got.as_ref().map(|_| ()), expected.as_ref().map(|_| ()), "step {} {:?}", i, op);
            if let Ok(new) = got {
                events.extend(new);
            }
            prop_assert_eq!(invariants::check(&inv), Ok(()));
            for ty in ["A", "B"] {
                let stock = inv.stock().find(|(c, _)| c.as_str() == ty).map(|(_, s)| s.clone()).expect("type");
                prop_assert_eq!((stock.capacity, stock.available, stock.held, stock.sold),
                    (model.types[ty].0, model.available(ty), model.held(ty), model.sold(ty)), "stock of {}", ty);
            }
            for h in 0..8u8 {
                let live = inv.hold(HoldId(id(h))).map(|v| v.status);
                prop_assert_eq!(live, model.holds.get(&h).map(|m| m.status), "hold {}", h);
            }
            if i == snap_at {
                snapshot = Some(Snapshot { seq: inv.seq(), state: actor::encode_state(&inv) });
            }
        }
        prop_assert_eq!(inv.seq(), events.len() as u64);

        // Replay from nothing.
        let mut replayed = Inventory::new(inv.event_id());
        for e in &events {
            replayed.replay(e);
        }
        prop_assert_eq!(&replayed, &inv);

        // Recover from snapshot + journal tail, through the same code path as the actor.
        let tail = events.iter().enumerate().map(|(i, e)| Record { seq: i as u64 + 1, payload: actor::encode_event(e) }).collect();
        let recovered = actor::recover(inv.event_id(), Stored { snapshot, tail }).expect("recover");
        prop_assert_eq!(&recovered, &inv);
    }
}

#[test]
fn a_hold_is_all_or_nothing() {
    let (mut inv, _, _) = setup();
    let items = vec![
        Line {
            ticket_type: code("A"),
            quantity: Quantity::new(2).expect("q"),
        },
        Line {
            ticket_type: code("B"),
            quantity: Quantity::new(11).expect("q"),
        },
    ];
    let err = inv.apply(
        Timestamp(0),
        Command::Hold {
            hold_id: HoldId(id(1)),
            user: UserId(id(1)),
            items,
            ttl_ms: 1000,
            admission: None,
        },
    );
    assert_eq!(
        err,
        Err(Error::SoldOut {
            available: vec![(code("A"), 20), (code("B"), 10)]
        })
    );
    let a = inv
        .stock()
        .find(|(c, _)| c.as_str() == "A")
        .map(|(_, s)| s.available);
    assert_eq!(a, Some(20), "the A line must not be held when B is short");
}

#[test]
fn expiry_frees_seats_at_the_deadline_and_not_before() {
    let (mut inv, _, _) = setup();
    let items = vec![Line {
        ticket_type: code("B"),
        quantity: Quantity::new(10).expect("q"),
    }];
    inv.apply(
        Timestamp(0),
        Command::Hold {
            hold_id: HoldId(id(1)),
            user: UserId(id(1)),
            items,
            ttl_ms: 900_000,
            admission: None,
        },
    )
    .expect("hold");
    assert_eq!(inv.next_expiry(), Some(Timestamp(900_000)));
    assert_eq!(inv.apply(Timestamp(899_999), Command::Expire), Ok(vec![]));
    let events = inv
        .apply(Timestamp(900_000), Command::Expire)
        .expect("expire");
    assert_eq!(
        events,
        vec![Event::HoldExpired {
            hold_id: HoldId(id(1)),
            at: Timestamp(900_000)
        }]
    );
    assert_eq!(
        inv.hold(HoldId(id(1))).map(|h| h.status),
        Some(HoldStatus::Expired)
    );
    assert_eq!(inv.next_expiry(), None);
}

#[test]
fn retried_hold_returns_the_same_hold_without_new_seats() {
    let (mut inv, _, _) = setup();
    let hold = |inv: &mut Inventory| {
        let items = vec![Line {
            ticket_type: code("A"),
            quantity: Quantity::new(3).expect("q"),
        }];
        inv.apply(
            Timestamp(5),
            Command::Hold {
                hold_id: HoldId(id(1)),
                user: UserId(id(1)),
                items,
                ttl_ms: 1000,
                admission: None,
            },
        )
    };
    assert_eq!(hold(&mut inv).map(|e| e.len()), Ok(1));
    assert_eq!(hold(&mut inv), Ok(vec![]));
    assert_eq!(inv.seats_of_user(UserId(id(1)), &code("A")), 3);
}

/// Partial refunds of one order, one after the other, each returning what its refund left
/// (`keep`): a retried or late return of an earlier refund keeps more than the order holds
/// now, so it returns nothing; nothing is returned twice and `ReturnPart` needs no refund id.
#[test]
fn successive_partial_returns_of_one_order_never_return_a_seat_twice() {
    let (mut inv, _, _) = setup();
    let b = |n: u32| Line {
        ticket_type: code("B"),
        quantity: Quantity::new(n).expect("q"),
    };
    inv.apply(
        Timestamp(1),
        Command::Hold {
            hold_id: HoldId(id(1)),
            user: UserId(id(1)),
            items: vec![b(3)],
            ttl_ms: 1000,
            admission: None,
        },
    )
    .expect("hold");
    inv.apply(
        Timestamp(2),
        Command::Confirm {
            hold_id: HoldId(id(1)),
            order_id: OrderId(id(9)),
        },
    )
    .expect("confirm");
    let stock = |inv: &Inventory| {
        let (_, s) = inv.stock().find(|(c, _)| **c == code("B")).expect("B");
        (s.sold, s.available)
    };
    let part = |inv: &mut Inventory, keep: Vec<Line>| {
        inv.apply(
            Timestamp(3),
            Command::ReturnPart {
                order_id: OrderId(id(9)),
                keep,
            },
        )
        .expect("return part")
        .len()
    };
    assert_eq!(stock(&inv), (3, 7));
    // First refund: one ticket; the order keeps two.
    assert_eq!(part(&mut inv, vec![b(2)]), 1);
    assert_eq!(stock(&inv), (2, 8));
    // Second refund: another ticket; the order keeps one.
    assert_eq!(part(&mut inv, vec![b(1)]), 1);
    assert_eq!(stock(&inv), (1, 9));
    // The first refund's return again (redelivered, or late): nothing.
    assert_eq!(part(&mut inv, vec![b(2)]), 0);
    assert_eq!(part(&mut inv, vec![b(1)]), 0);
    assert_eq!(stock(&inv), (1, 9));
    // The last ticket: everything is back, once.
    assert_eq!(part(&mut inv, vec![]), 1);
    assert_eq!(part(&mut inv, vec![]), 0);
    assert_eq!(part(&mut inv, vec![b(2)]), 0);
    assert_eq!(stock(&inv), (0, 10));
}

#[test]
fn cancel_releases_holds_keeps_sales_and_refuses_new_holds() {
    let (mut inv, _, _) = setup();
    let hold = |n: u8, q: u32| Command::Hold {
        hold_id: HoldId(id(n)),
        user: UserId(id(n)),
        items: vec![Line {
            ticket_type: code("A"),
            quantity: Quantity::new(q).expect("q"),
        }],
        ttl_ms: 60_000,
        admission: None,
    };
    inv.apply(Timestamp(1), hold(1, 2)).expect("hold 1");
    inv.apply(Timestamp(1), hold(2, 3)).expect("hold 2");
    let confirm = Command::Confirm {
        hold_id: HoldId(id(1)),
        order_id: OrderId(id(1)),
    };
    inv.apply(Timestamp(2), confirm).expect("confirm");
    let events = inv.apply(Timestamp(3), Command::Cancel).expect("cancel");
    assert_eq!(
        events,
        vec![
            Event::HoldReleased {
                hold_id: HoldId(id(2)),
                at: Timestamp(3)
            },
            Event::SaleCancelled { at: Timestamp(3) },
        ]
    );
    assert_eq!(inv.apply(Timestamp(4), Command::Cancel), Ok(vec![]));
    let a = inv
        .stock()
        .find(|(c, _)| c.as_str() == "A")
        .map(|(_, s)| s.clone());
    assert_eq!(a.map(|s| (s.available, s.held, s.sold)), Some((18, 0, 2)));
    assert_eq!(
        inv.apply(Timestamp(5), hold(3, 1)),
        Err(Error::EventCancelled)
    );
    // A retried hold still answers with what it was; the refund returns the seats.
    assert_eq!(inv.apply(Timestamp(5), hold(2, 3)), Ok(vec![]));
    let back = Command::Return {
        order_id: OrderId(id(1)),
    };
    assert_eq!(inv.apply(Timestamp(6), back).map(|e| e.len()), Ok(1));
    assert_eq!(invariants::check(&inv), Ok(()));
}

#[test]
fn holds_only_inside_the_sale_window() {
    let (mut inv, _, _) = setup();
    let window = SaleWindow {
        starts_at: Some(Timestamp(100)),
        ends_at: Some(Timestamp(200)),
    };
    inv.apply(Timestamp(0), Command::SetSaleWindow { window })
        .expect("window");
    let hold = |n: u8| Command::Hold {
        hold_id: HoldId(id(n)),
        user: UserId(id(n)),
        items: vec![Line {
            ticket_type: code("B"),
            quantity: Quantity::new(1).expect("q"),
        }],
        ttl_ms: 60_000,
        admission: None,
    };
    let closed = Err(Error::SaleNotOpen { window });
    assert_eq!(inv.apply(Timestamp(99), hold(1)), closed);
    assert!(inv.apply(Timestamp(100), hold(2)).is_ok());
    assert!(inv.apply(Timestamp(199), hold(3)).is_ok());
    assert_eq!(inv.apply(Timestamp(200), hold(4)), closed);
    let backwards = SaleWindow {
        starts_at: Some(Timestamp(200)),
        ends_at: Some(Timestamp(200)),
    };
    assert!(matches!(
        inv.apply(Timestamp(0), Command::SetSaleWindow { window: backwards }),
        Err(Error::Invalid(_))
    ));
}
