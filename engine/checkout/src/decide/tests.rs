//! The decisions, table by table, and the rules that span the services as a property: random
//! sales driven through the real inventory state machine, the decisions and the orders
//! service's inventory steps, with the store replaced by maps.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use holdfast_actors::inventory::{Command, Inventory as StateMachine};
use holdfast_actors::{EventId, HoldId, HoldRef, Quantity, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::inventory::{EventTerms, Inventory};

const EVENT: EventId = EventId(uuid::Uuid::from_u128(0xe));

fn ga() -> TicketCode {
    TicketCode::parse("GA").unwrap()
}

fn vnd(amount: i64) -> Money {
    Money::new(amount, Currency::VND)
}

fn line(code: &str, quantity: u32) -> Line {
    Line {
        ticket_type: TicketCode::parse(code).unwrap(),
        quantity: Quantity::new(quantity).unwrap(),
    }
}

fn hold_view(status: HoldStatus, expires_at: i64, order: Option<u128>) -> HoldView {
    HoldView {
        id: HoldId(uuid::Uuid::from_u128(1)),
        event_id: EVENT,
        user: UserId(uuid::Uuid::from_u128(7)),
        items: vec![line("GA", 2)],
        placed_at: Timestamp::from_millis(0),
        expires_at: Timestamp::from_millis(expires_at),
        status,
        order_id: order.map(|o| OrderId(uuid::Uuid::from_u128(o))),
    }
}

fn order_in(status: OrderStatus) -> Order {
    Order {
        id: OrderId(uuid::Uuid::from_u128(42)),
        user: UserId(uuid::Uuid::from_u128(7)),
        email: "buyer@example.com".to_owned(),
        phone: None,
        hold: HoldRef {
            event_id: EVENT,
            hold_id: HoldId(uuid::Uuid::from_u128(1)),
        },
        status,
        total: vnd(300_000),
        items: vec![Item {
            ticket_type: "GA".to_owned(),
            quantity: 2,
            price: 150_000,
        }],
        hold_expires_at: 1_000,
        payment_url: None,
        note: None,
        created_at: 0,
        updated_at: 0,
    }
}

fn slug(e: &CheckoutError) -> &'static str {
    match e {
        CheckoutError::HoldNotActive { .. } => "hold-not-active",
        CheckoutError::HoldNotFound => "hold-not-found",
        CheckoutError::NotRefundable { .. } => "not-refundable",
        CheckoutError::RefundNotAllowed(_) => "refund-not-allowed",
        CheckoutError::Invalid(_) => "invalid",
        CheckoutError::AlreadyAdmitted { .. } => "already-admitted",
        CheckoutError::InvalidTicket(_) => "invalid-ticket",
        CheckoutError::TicketAdmitted { .. } => "ticket-admitted",
        _ => "other",
    }
}

/// (hold status, expires at, the order it names, who asks, now, use or refusal)
type HoldCase = (
    HoldStatus,
    i64,
    Option<u128>,
    UserId,
    i64,
    Result<HoldUse, &'static str>,
);
/// (order status, who asks, now, the event's start, decision or refusal)
type RefundCase = (
    OrderStatus,
    RefundBy,
    i64,
    Option<i64>,
    Result<RefundDecision, &'static str>,
);

#[test]
fn who_may_order_which_hold_when() {
    let buyer = UserId(uuid::Uuid::from_u128(7));
    let other = UserId(uuid::Uuid::from_u128(8));
    // (hold status, expires at, the order it names, who asks, now, use or refusal)
    let cases: &[HoldCase] = &[
        (
            HoldStatus::Active,
            1_000,
            None,
            buyer,
            999,
            Ok(HoldUse::New),
        ),
        (
            HoldStatus::Active,
            1_000,
            None,
            buyer,
            1_000,
            Err("hold-not-active"),
        ),
        (
            HoldStatus::Active,
            1_000,
            None,
            other,
            0,
            Err("hold-not-found"),
        ),
        (
            HoldStatus::Expired,
            1_000,
            None,
            buyer,
            0,
            Err("hold-not-active"),
        ),
        (
            HoldStatus::Released,
            1_000,
            None,
            buyer,
            0,
            Err("hold-not-active"),
        ),
        (
            HoldStatus::Confirmed,
            1_000,
            Some(9),
            buyer,
            5_000,
            Ok(HoldUse::CompleteFree(OrderId(uuid::Uuid::from_u128(9)))),
        ),
        (
            HoldStatus::Confirmed,
            1_000,
            None,
            buyer,
            0,
            Err("hold-not-active"),
        ),
    ];
    for (status, expires, order, who, now, expected) in cases {
        let got = use_hold(&hold_view(*status, *expires, *order), *who, *now);
        match (got, expected) {
            (Ok(u), Ok(e)) => assert_eq!(u, *e, "{status:?} at {now}"),
            (Err(e), Err(s)) => assert_eq!(slug(&e), *s, "{status:?} at {now}"),
            (got, expected) => panic!("{status:?} at {now}: {got:?}, not {expected:?}"),
        }
    }
}

#[test]
fn an_order_is_priced_line_by_line_in_one_currency() {
    let eur = Currency::parse("EUR").unwrap();
    let vip = TicketCode::parse("VIP").unwrap();
    let prices = vec![
        (ga(), vnd(150_000)),
        (vip.clone(), vnd(500_000)),
        (TicketCode::parse("EU").unwrap(), Money::new(10, eur)),
        (TicketCode::parse("BIG").unwrap(), vnd(i64::MAX / 2)),
    ];
    let priced = price(&[line("GA", 2), line("VIP", 1)], &prices).unwrap();
    assert_eq!(priced.total, vnd(800_000));
    assert_eq!(
        priced.items,
        vec![
            Item {
                ticket_type: "GA".to_owned(),
                quantity: 2,
                price: 150_000
            },
            Item {
                ticket_type: "VIP".to_owned(),
                quantity: 1,
                price: 500_000
            },
        ]
    );
    let refusal = |lines: &[Line]| price(lines, &prices).unwrap_err().to_string();
    assert_eq!(
        refusal(&[line("GA", 1), line("EU", 1)]),
        "the hold mixes currencies; hold each currency separately"
    );
    assert_eq!(refusal(&[line("BIG", 3)]), "the order total is too large");
    assert_eq!(
        refusal(&[line("NOPE", 1)]),
        "ticket type NOPE is not on sale"
    );
    assert!(price(&[], &prices).unwrap().total.is_zero());
}

#[test]
fn a_lost_free_order_keeps_its_id_and_only_a_free_one_is_completed() {
    let asked = OrderId(uuid::Uuid::from_u128(1));
    let lost = OrderId(uuid::Uuid::from_u128(2));
    assert_eq!(order_id(HoldUse::New, vnd(5), asked).unwrap(), asked);
    assert_eq!(
        order_id(HoldUse::CompleteFree(lost), vnd(0), asked).unwrap(),
        lost
    );
    assert!(order_id(HoldUse::CompleteFree(lost), vnd(5), asked).is_err());
}

#[test]
fn a_pending_order_reads_expired_once_hold_and_window_have_passed() {
    use OrderStatus::*;
    // (stored status, hold expires, window ends, now, reads)
    let cases: &[(OrderStatus, i64, i64, i64, ReadStatus)] = &[
        (
            PendingPayment,
            1_000,
            1_000,
            999,
            ReadStatus::PendingPayment,
        ),
        (PendingPayment, 1_000, 1_000, 1_000, ReadStatus::Expired),
        (PendingPayment, 1_000, 600, 800, ReadStatus::PendingPayment),
        (PendingPayment, 1_000, 600, 1_000, ReadStatus::Expired),
        // A window that outlasts the hold (never set so, but the rule holds both ends).
        (
            PendingPayment,
            1_000,
            2_000,
            1_500,
            ReadStatus::PendingPayment,
        ),
        (PendingPayment, 1_000, 2_000, 2_000, ReadStatus::Expired),
        (Confirmed, 1_000, 1_000, 5_000, ReadStatus::Confirmed),
        (Cancelled, 1_000, 1_000, 5_000, ReadStatus::Cancelled),
        (Refunded, 1_000, 1_000, 5_000, ReadStatus::Refunded),
    ];
    for &(status, hold, window, now, reads) in cases {
        assert_eq!(
            read_status(status, hold, window, now),
            reads,
            "{status} hold {hold} window {window} now {now}"
        );
    }
    assert_eq!(window_ends_at(100, 1_000, 300), 400);
    assert_eq!(
        window_ends_at(900, 1_000, 300),
        1_000,
        "never past the hold"
    );
    assert_eq!(window_ends_at(900, 1_000, i64::MAX), 1_000);
}

#[test]
fn who_may_refund_when() {
    use OrderStatus::*;
    let starts = Some(1_000);
    let cases: &[RefundCase] = &[
        (
            Confirmed,
            RefundBy::Buyer,
            999,
            starts,
            Ok(RefundDecision::Refund),
        ),
        (
            Confirmed,
            RefundBy::Buyer,
            1_000,
            starts,
            Err("refund-not-allowed"),
        ),
        (
            Confirmed,
            RefundBy::Organizer,
            5_000,
            starts,
            Ok(RefundDecision::Refund),
        ),
        (
            Confirmed,
            RefundBy::Buyer,
            5_000,
            None,
            Ok(RefundDecision::Refund),
        ),
        (
            Refunded,
            RefundBy::Buyer,
            5_000,
            starts,
            Ok(RefundDecision::AlreadyDone),
        ),
        (
            PendingPayment,
            RefundBy::Organizer,
            0,
            starts,
            Err("not-refundable"),
        ),
        (Cancelled, RefundBy::Buyer, 0, starts, Err("not-refundable")),
    ];
    for (status, by, now, starts_at, expected) in cases {
        let got = decide_refund(*status, *by, *now, *starts_at);
        match (got, expected) {
            (Ok(d), Ok(e)) => assert_eq!(d, *e, "{status} {by:?} at {now}"),
            (Err(e), Err(s)) => assert_eq!(slug(&e), *s, "{status} {by:?} at {now}"),
            (got, expected) => panic!("{status} {by:?} at {now}: {got:?}, not {expected:?}"),
        }
    }
}

#[test]
fn a_payment_result_settles_a_pending_order_once() {
    use OrderStatus::*;
    let pending = order_in(PendingPayment);
    let t = on_paid(&pending, Seats::Sold).unwrap();
    assert_eq!((t.status, t.note.as_deref()), (Confirmed, None));
    assert!(matches!(
        t.event,
        SagaEvent::OrderConfirmed {
            rereserved: false,
            ..
        }
    ));
    let t = on_paid(&pending, Seats::SoldAgain).unwrap();
    assert_eq!(
        (t.status, t.note.as_deref()),
        (Confirmed, Some(REHELD_NOTE))
    );
    assert!(matches!(
        t.event,
        SagaEvent::OrderConfirmed {
            rereserved: true,
            ..
        }
    ));
    let t = on_paid(&pending, Seats::Gone).unwrap();
    assert_eq!(t.status, Refunded);
    assert!(matches!(
        t.event,
        SagaEvent::OrderRefunded {
            automatic: true,
            amount: 300_000,
            ..
        }
    ));
    let t = on_payment_failed(&pending, "cancelled by the buyer").unwrap();
    assert_eq!(t.status, Cancelled);
    assert_eq!(
        t.note.as_deref(),
        Some("payment not completed: cancelled by the buyer")
    );
    for settled in [Confirmed, Cancelled, Refunded] {
        let order = order_in(settled);
        for seats in [Seats::Sold, Seats::SoldAgain, Seats::Gone] {
            assert_eq!(on_paid(&order, seats), None, "{settled} {seats:?}");
        }
        assert_eq!(on_payment_failed(&order, "late"), None, "{settled}");
    }
    let t = on_refund(&order_in(Confirmed), "changed plans".to_owned())
        .unwrap()
        .unwrap();
    assert_eq!(t.status, Refunded);
    assert!(matches!(
        t.event,
        SagaEvent::OrderRefunded {
            automatic: false,
            ..
        }
    ));
    assert_eq!(
        on_refund(&order_in(Refunded), "again".to_owned()).unwrap(),
        None
    );
    assert!(on_refund(&order_in(PendingPayment), "x".to_owned()).is_err());
    let applied = t.applied_to(&order_in(Confirmed), 77);
    assert_eq!(
        (applied.status, applied.updated_at, applied.note.as_deref()),
        (Refunded, 77, Some("refunded: changed plans"))
    );
}

#[test]
fn inventory_answers_are_steps_or_failures() {
    use holdfast_actors::inventory::Error as Inv;
    let refused = |e| Err(InventoryError::Refused(e));
    let gone = || refused(Inv::HoldNotActive(HoldStatus::Expired));
    assert!(confirmed(Ok(())).unwrap());
    assert!(!confirmed(gone()).unwrap());
    assert!(!confirmed(refused(Inv::HoldNotFound)).unwrap());
    assert!(confirmed(Err(InventoryError::Overloaded)).is_err());
    assert!(confirmed(refused(Inv::OrderIdTaken)).is_err());
    let sold_out = refused(Inv::SoldOut {
        available: vec![(ga(), 0)],
    });
    assert!(!reheld(sold_out).unwrap());
    // A payment that arrives after the event was cancelled or its sale closed is refunded.
    assert!(!reheld(refused(Inv::EventCancelled)).unwrap());
    let closed = holdfast_actors::SaleWindow {
        starts_at: None,
        ends_at: Some(holdfast_actors::Timestamp(0)),
    };
    assert!(!reheld(refused(Inv::SaleNotOpen { window: closed })).unwrap());
    assert!(reheld(Ok(())).unwrap());
    assert!(reheld(Err(InventoryError::Unavailable("moving".to_owned()))).is_err());
    assert!(!reconfirmed(gone()).unwrap());
    assert!(released(gone()).is_ok());
    assert!(released(Err(InventoryError::EventNotFound)).is_ok());
    assert!(released(Err(InventoryError::Overloaded)).is_err());
    assert!(returned(refused(Inv::OrderNotFound)).is_ok());
    assert!(returned(Err(InventoryError::Unavailable("x".to_owned()))).is_err());
}

#[test]
fn payments_open_settle_and_refund_by_the_rules() {
    let eur = Money::new(100, Currency::parse("EUR").unwrap());
    assert_eq!(payment_refused(vnd(100), 0, 1_000), None);
    assert_eq!(
        payment_refused(vnd(100), 0, 999).as_deref(),
        Some("the hold expired before the payment could start")
    );
    assert_eq!(
        payment_refused(eur, 0, 60_000).as_deref(),
        Some("VNPAY takes VND only, not EUR")
    );
    use PaymentStatus::*;
    // (stored, amount VNPAY reports, paid?, result)
    let cases: &[(PaymentStatus, u64, bool, Result<PaymentStatus, RspCode>)] = &[
        (Pending, 300_000, true, Ok(Paid)),
        (Pending, 300_000, false, Ok(Failed)),
        (Pending, 299_999, true, Err(RspCode::InvalidAmount)),
        (Paid, 300_000, true, Err(RspCode::AlreadyConfirmed)),
        (Failed, 300_000, true, Err(RspCode::AlreadyConfirmed)),
        (Refunded, 1, true, Err(RspCode::InvalidAmount)),
    ];
    for (status, amount, paid, expected) in cases {
        assert_eq!(
            settle(*status, vnd(300_000), *amount, *paid),
            *expected,
            "{status} {amount} {paid}"
        );
    }
    assert_eq!(payment_on_refund(Paid), Some(Refunded));
    for s in [Pending, Failed, Refunded] {
        assert_eq!(payment_on_refund(s), None);
    }
    assert_eq!(ipn_order(None), IpnOrder::NotFound);
    assert_eq!(
        ipn_order(Some((Pending, vnd(5)))),
        IpnOrder::Pending { amount_minor: 5 }
    );
    assert_eq!(
        ipn_order(Some((Paid, vnd(5)))),
        IpnOrder::Settled { amount_minor: 5 }
    );
}

#[test]
fn the_door_admits_a_valid_ticket_once() {
    let id = uuid::Uuid::from_u128(3);
    assert!(admit(TicketStatus::Valid, id).is_ok());
    assert_eq!(
        slug(&admit(TicketStatus::Admitted, id).unwrap_err()),
        "already-admitted"
    );
    assert_eq!(
        slug(&admit(TicketStatus::Void, id).unwrap_err()),
        "invalid-ticket"
    );
    let used = [(id, TicketStatus::Valid), (id, TicketStatus::Admitted)];
    assert_eq!(slug(&may_void(&used, true).unwrap_err()), "ticket-admitted");
    assert!(may_void(&used, false).is_ok(), "the organizer may");
    assert!(may_void(&[(id, TicketStatus::Valid)], true).is_ok());
}

// ---- the rules across services, against a model ------------------------------------------

/// The real inventory state machine behind the saga's [`Inventory`] trait, at a settable time.
struct Stock {
    machine: Mutex<StateMachine>,
    now: Mutex<i64>,
}

impl Stock {
    fn new(capacity: u32) -> Self {
        let mut machine = StateMachine::new(EVENT);
        machine
            .apply(
                Timestamp::from_millis(0),
                Command::DefineTicketType {
                    code: ga(),
                    capacity,
                    per_user_limit: None,
                },
            )
            .unwrap();
        Self {
            machine: Mutex::new(machine),
            now: Mutex::new(0),
        }
    }

    fn now(&self) -> i64 {
        *self.now.lock().unwrap()
    }

    fn apply(&self, command: Command) -> Result<(), InventoryError> {
        let now = Timestamp::from_millis(self.now());
        let mut machine = self.machine.lock().unwrap();
        machine.apply(now, command).map(|_| ()).map_err(Into::into)
    }

    fn advance(&self, ms: i64) {
        *self.now.lock().unwrap() += ms;
        self.apply(Command::Expire).unwrap();
    }

    fn ga(&self) -> holdfast_actors::TypeStock {
        let machine = self.machine.lock().unwrap();
        machine
            .stock()
            .find(|(c, _)| **c == ga())
            .unwrap()
            .1
            .clone()
    }
}

#[async_trait]
impl Inventory for Stock {
    async fn hold_of(&self, hold: HoldRef) -> Result<Option<HoldView>, InventoryError> {
        Ok(self.machine.lock().unwrap().hold(hold.hold_id))
    }
    async fn terms(&self, _: EventId) -> Result<Option<EventTerms>, InventoryError> {
        Ok(Some(EventTerms {
            starts_at_ms: i64::MAX,
            prices: vec![(ga(), vnd(100))],
        }))
    }
    async fn hold(
        &self,
        hold: HoldRef,
        user: UserId,
        items: Vec<Line>,
    ) -> Result<(), InventoryError> {
        self.apply(Command::Hold {
            hold_id: hold.hold_id,
            user,
            items,
            ttl_ms: HOLD_TTL,
        })
    }
    async fn confirm(&self, hold: HoldRef, order: OrderId) -> Result<(), InventoryError> {
        self.apply(Command::Confirm {
            hold_id: hold.hold_id,
            order_id: order,
        })
    }
    async fn release(&self, hold: HoldRef) -> Result<(), InventoryError> {
        self.apply(Command::Release {
            hold_id: hold.hold_id,
        })
    }
    async fn return_stock_except(
        &self,
        _: EventId,
        order: OrderId,
        keep: Vec<Line>,
    ) -> Result<(), InventoryError> {
        self.apply(Command::ReturnPart {
            order_id: order,
            keep,
        })
    }
}

const HOLD_TTL: i64 = 1_000;
const WINDOW: i64 = 600;

#[derive(Clone, Debug)]
enum Step {
    /// A buyer holds seats and orders them at once.
    Order {
        quantity: u32,
    },
    Advance {
        ms: i64,
    },
    /// VNPAY reports order `n` (modulo the orders placed) paid or failed; a report may repeat.
    Pay {
        n: usize,
        paid: bool,
    },
    Refund {
        n: usize,
        by_buyer: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..=3).prop_map(|quantity| Step::Order { quantity }),
        2 => (100i64..=700).prop_map(|ms| Step::Advance { ms }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(n, paid)| Step::Pay { n, paid }),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(n, by_buyer)| Step::Refund { n, by_buyer }),
    ]
}

/// One sale: the orders service's decisions and inventory steps, the payments service's
/// settlement, the tickets service's voiding (no ticket used at the door), over maps.
struct Sale {
    stock: Stock,
    orders: Vec<Order>,
    payments: HashMap<OrderId, (PaymentStatus, i64)>,
    /// Orders whose payment arrived (paid), whatever became of them.
    paid: Vec<OrderId>,
}

impl Sale {
    async fn run(&mut self, step: Step) {
        let now = self.stock.now();
        match step {
            Step::Order { quantity } => {
                let n = self.orders.len() as u128 + 1;
                let hold = HoldRef {
                    event_id: EVENT,
                    hold_id: HoldId(uuid::Uuid::from_u128(n)),
                };
                let user = UserId(uuid::Uuid::from_u128(1000 + n));
                if self
                    .stock
                    .hold(hold, user, vec![line("GA", quantity)])
                    .await
                    .is_err()
                {
                    return; // sold out: no order
                }
                let held = self.stock.hold_of(hold).await.unwrap().unwrap();
                let hold_use = use_hold(&held, user, now).unwrap();
                let terms = self.stock.terms(EVENT).await.unwrap().unwrap();
                let priced = price(&held.items, &terms.prices).unwrap();
                let id =
                    order_id(hold_use, priced.total, OrderId(uuid::Uuid::from_u128(n))).unwrap();
                let mut order = order_in(OrderStatus::PendingPayment);
                order.id = id;
                order.user = user;
                order.hold = hold;
                order.total = priced.total;
                order.items = priced.items;
                order.hold_expires_at = held.expires_at.as_millis();
                order.created_at = now;
                let window = window_ends_at(now, order.hold_expires_at, WINDOW);
                if payment_refused(order.total, now, window).is_none() {
                    self.payments.insert(id, (PaymentStatus::Pending, window));
                }
                self.orders.push(order);
            }
            Step::Advance { ms } => self.stock.advance(ms),
            Step::Pay { n, paid } => {
                let Some(i) = (!self.orders.is_empty()).then(|| n % self.orders.len()) else {
                    return;
                };
                let id = self.orders[i].id;
                let Some((status, window)) = self.payments.get(&id).copied() else {
                    return;
                };
                let Ok(next) = settle(
                    status,
                    self.orders[i].total,
                    self.orders[i].total.minor_units(),
                    paid,
                ) else {
                    return; // settled before: the IPN changes nothing
                };
                self.payments.insert(id, (next, window));
                let order = self.orders[i].clone();
                let transition = if paid {
                    self.paid.push(id);
                    let seats = if order.status == OrderStatus::PendingPayment {
                        crate::orders::sell(&self.stock, &order).await.unwrap()
                    } else {
                        Seats::Sold
                    };
                    on_paid(&order, seats)
                } else {
                    released(self.stock.release(order.hold).await).unwrap();
                    on_payment_failed(&order, "declined")
                };
                if let Some(t) = transition {
                    self.orders[i] = t.applied_to(&order, now);
                }
            }
            Step::Refund { n, by_buyer } => {
                let Some(i) = (!self.orders.is_empty()).then(|| n % self.orders.len()) else {
                    return;
                };
                let order = self.orders[i].clone();
                let by = if by_buyer {
                    RefundBy::Buyer
                } else {
                    RefundBy::Organizer
                };
                if decide_refund(order.status, by, now, Some(i64::MAX)).is_err() {
                    return;
                }
                if let Ok(Some(t)) = on_refund(&order, "asked".to_owned()) {
                    may_void(&[], by_buyer).unwrap();
                    self.orders[i] = t.applied_to(&order, now);
                    returned(
                        self.stock
                            .return_stock_except(EVENT, order.id, vec![])
                            .await,
                    )
                    .unwrap();
                    if let Some((status, window)) = self.payments.get(&order.id).copied() {
                        let next = payment_on_refund(status).unwrap_or(status);
                        self.payments.insert(order.id, (next, window));
                    }
                }
            }
        }
    }

    /// The rules that span the services.
    fn check(&self, capacity: u32) -> Result<(), TestCaseError> {
        let stock = self.stock.ga();
        prop_assert_eq!(stock.available + stock.held + stock.sold, capacity);
        let seats = |o: &Order| o.items.iter().map(|i| i.quantity).sum::<u32>();
        let sold: u32 = self
            .orders
            .iter()
            .filter(|o| o.status == OrderStatus::Confirmed)
            .map(seats)
            .sum();
        // Every confirmed order's seats are sold, and only theirs: no oversell, no lost sale.
        prop_assert_eq!(stock.sold, sold);
        let now = self.stock.now();
        for order in &self.orders {
            let payment = self.payments.get(&order.id).map(|p| p.0);
            match order.status {
                // Paid after expiry: re-reserved (confirmed) or refunded, never left pending.
                _ if self.paid.contains(&order.id) => prop_assert!(
                    matches!(order.status, OrderStatus::Confirmed | OrderStatus::Refunded),
                    "paid order {:?} is {}",
                    order.id,
                    order.status
                ),
                // Cancelled: its hold is no longer holding seats.
                OrderStatus::Cancelled => {
                    let hold = self.stock.machine.lock().unwrap().hold(order.hold.hold_id);
                    prop_assert!(hold.is_none_or(|h| h.status != HoldStatus::Active));
                    prop_assert_eq!(payment, Some(PaymentStatus::Failed));
                }
                OrderStatus::PendingPayment => {
                    prop_assert!(matches!(payment, Some(PaymentStatus::Pending) | None));
                    let window = self
                        .payments
                        .get(&order.id)
                        .map_or(order.created_at, |p| p.1);
                    let reads = read_status(order.status, order.hold_expires_at, window, now);
                    prop_assert_eq!(
                        reads == ReadStatus::Expired,
                        now >= order.hold_expires_at && now >= window
                    );
                }
                OrderStatus::Confirmed | OrderStatus::Refunded => {
                    prop_assert!(false, "{} without a payment", order.status)
                }
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn paid_orders_settle_cancelled_ones_release_and_stock_adds_up(
        capacity in 1u32..=6,
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut sale = Sale {
            stock: Stock::new(capacity),
            orders: Vec::new(),
            payments: HashMap::new(),
            paid: Vec::new(),
        };
        for step in steps {
            runtime.block_on(sale.run(step));
            sale.check(capacity)?;
        }
    }
}
