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

const HOUR: i64 = 3_600_000;
/// The event starts at hour 100; buyers refund until 48 hours before, less 10 % and 5,000.
const STARTS: i64 = 100 * HOUR;

fn policy() -> Option<RefundPolicy> {
    Some(RefundPolicy::new(48, 10, 5_000).unwrap())
}

fn terms(policy: Option<RefundPolicy>) -> RefundTerms {
    RefundTerms {
        starts_at_ms: Some(STARTS),
        policy,
    }
}

/// The order's tickets: two GA at 150,000 each.
fn tickets_of(order: &Order) -> Vec<uuid::Uuid> {
    order_tickets(order).iter().map(|t| t.id).collect()
}

#[test]
fn the_policy_window_closes_at_its_deadline() {
    let deadline = STARTS - 48 * HOUR;
    // (who, policy, now, allowed)
    let cases: &[(RefundBy, Option<RefundPolicy>, i64, bool)] = &[
        (RefundBy::Buyer, policy(), deadline - HOUR, true),
        (RefundBy::Buyer, policy(), deadline - 1, true),
        (RefundBy::Buyer, policy(), deadline, false),
        (RefundBy::Buyer, policy(), deadline + HOUR, false),
        (RefundBy::Buyer, policy(), STARTS + HOUR, false),
        (RefundBy::Buyer, None, 0, false),
        (RefundBy::Organizer, None, STARTS + HOUR, true),
        (RefundBy::Organizer, policy(), deadline + HOUR, true),
    ];
    for (by, policy, now, allowed) in cases {
        let got = refund_window(*by, terms(*policy), *now);
        assert_eq!(got.is_ok(), *allowed, "{by:?} {policy:?} at {now}: {got:?}");
        if let Err(e) = got {
            assert_eq!(slug(&e), "refund-not-allowed");
        }
    }
    // An event gone (no start known) gives buyers nothing.
    let unknown = RefundTerms {
        starts_at_ms: None,
        policy: policy(),
    };
    assert!(refund_window(RefundBy::Buyer, unknown, 0).is_err());
    // A policy of 0 hours: until the start.
    let zero = terms(Some(RefundPolicy::new(0, 0, 0).unwrap()));
    assert!(refund_window(RefundBy::Buyer, zero, STARTS - 1).is_ok());
    assert!(refund_window(RefundBy::Buyer, zero, STARTS).is_err());
}

#[test]
fn the_fee_is_a_percentage_plus_a_fixed_part_never_above_the_refund() {
    let p = |pct, fixed| RefundPolicy::new(1, pct, fixed).unwrap();
    // (who, policy, gross, fee)
    let cases: &[(RefundBy, Option<RefundPolicy>, i64, i64)] = &[
        (RefundBy::Buyer, Some(p(10, 0)), 150_000, 15_000),
        (RefundBy::Buyer, Some(p(10, 5_000)), 300_000, 35_000),
        (RefundBy::Buyer, Some(p(0, 5_000)), 150_000, 5_000),
        // Rounded down, in the buyer's favour.
        (RefundBy::Buyer, Some(p(10, 0)), 99, 9),
        (RefundBy::Buyer, Some(p(33, 0)), 100, 33),
        // Never more than the refund.
        (RefundBy::Buyer, Some(p(10, 500_000)), 150_000, 150_000),
        (RefundBy::Buyer, Some(p(100, 0)), 150_000, 150_000),
        (RefundBy::Buyer, Some(p(10, 5_000)), 0, 0),
        (RefundBy::Buyer, None, 150_000, 0),
        (RefundBy::Organizer, Some(p(10, 5_000)), 150_000, 0),
        // No overflow near the top.
        (RefundBy::Buyer, Some(p(100, 0)), i64::MAX, i64::MAX),
    ];
    for (by, policy, gross, fee) in cases {
        assert_eq!(
            refund_fee(*by, policy.as_ref(), *gross),
            *fee,
            "{by:?} {policy:?} {gross}"
        );
    }
}

/// (status, tickets refunded before, tickets asked, who, now, result)
type RefundCase = (
    OrderStatus,
    Vec<usize>,
    Vec<usize>,
    RefundBy,
    i64,
    Result<(Vec<usize>, i64, i64, OrderStatus), &'static str>,
);

#[test]
fn who_may_refund_which_tickets_for_how_much() {
    use OrderStatus::*;
    let open = STARTS - 49 * HOUR;
    let closed = STARTS - 47 * HOUR;
    let order = order_in(Confirmed);
    let ids = tickets_of(&order);
    assert_eq!(ids.len(), 2);
    let cases: Vec<RefundCase> = vec![
        // The whole order, within the policy: 300,000 less 10 % and 5,000.
        (
            Confirmed,
            vec![],
            vec![],
            RefundBy::Buyer,
            open,
            Ok((vec![0, 1], 35_000, 265_000, Refunded)),
        ),
        // One ticket, then the other.
        (
            Confirmed,
            vec![],
            vec![1],
            RefundBy::Buyer,
            open,
            Ok((vec![1], 20_000, 130_000, PartiallyRefunded)),
        ),
        (
            PartiallyRefunded,
            vec![1],
            vec![],
            RefundBy::Buyer,
            open,
            Ok((vec![0], 20_000, 130_000, Refunded)),
        ),
        (
            PartiallyRefunded,
            vec![1],
            vec![0],
            RefundBy::Buyer,
            open,
            Ok((vec![0], 20_000, 130_000, Refunded)),
        ),
        // The same ticket twice in a request counts once.
        (
            Confirmed,
            vec![],
            vec![0, 0],
            RefundBy::Buyer,
            open,
            Ok((vec![0], 20_000, 130_000, PartiallyRefunded)),
        ),
        // A ticket refunded before, or of another order.
        (
            PartiallyRefunded,
            vec![1],
            vec![1],
            RefundBy::Buyer,
            open,
            Err("refund-not-allowed"),
        ),
        (
            Confirmed,
            vec![],
            vec![9],
            RefundBy::Buyer,
            open,
            Err("invalid"),
        ),
        // Outside the policy: only the organizer, in full and free.
        (
            Confirmed,
            vec![],
            vec![],
            RefundBy::Buyer,
            closed,
            Err("refund-not-allowed"),
        ),
        (
            Confirmed,
            vec![],
            vec![],
            RefundBy::Organizer,
            closed,
            Ok((vec![0, 1], 0, 300_000, Refunded)),
        ),
        (
            PartiallyRefunded,
            vec![0],
            vec![],
            RefundBy::Organizer,
            STARTS + HOUR,
            Ok((vec![1], 0, 150_000, Refunded)),
        ),
        // Nothing left: the same answer again, whoever asks, whenever.
        (
            Refunded,
            vec![0, 1],
            vec![],
            RefundBy::Buyer,
            closed,
            Err("already"),
        ),
        (
            PartiallyRefunded,
            vec![0, 1],
            vec![],
            RefundBy::Buyer,
            closed,
            Err("already"),
        ),
        // Never paid.
        (
            PendingPayment,
            vec![],
            vec![],
            RefundBy::Organizer,
            open,
            Err("not-refundable"),
        ),
        (
            Cancelled,
            vec![],
            vec![],
            RefundBy::Buyer,
            open,
            Err("not-refundable"),
        ),
    ];
    let extra = uuid::Uuid::from_u128(9);
    let pick = |ns: &[usize]| -> Vec<uuid::Uuid> {
        ns.iter()
            .map(|&n| ids.get(n).copied().unwrap_or(extra))
            .collect()
    };
    for (status, earlier, asked, by, now, expected) in cases {
        let order = order_in(status);
        let label = format!("{status} earlier {earlier:?} asked {asked:?} {by:?} at {now}");
        let got = decide_refund(
            &order,
            &pick(&earlier),
            &pick(&asked),
            by,
            terms(policy()),
            now,
        );
        match (got, expected) {
            (Ok(RefundDecision::Refund(plan)), Ok((tickets, fee, amount, next))) => {
                assert_eq!(plan.ticket_ids, pick(&tickets), "{label}");
                assert_eq!(
                    (plan.fee, plan.amount, plan.order_status),
                    (fee, amount, next),
                    "{label}"
                );
                assert_eq!(plan.gross, fee + amount, "{label}");
                assert_eq!(plan.status, RefundStatus::Processing, "{label}");
            }
            (Ok(RefundDecision::AlreadyDone), Err("already")) => {}
            (Err(e), Err(s)) => assert_eq!(slug(&e), s, "{label}"),
            (got, expected) => panic!("{label}: {got:?}, not {expected:?}"),
        }
    }
}

#[test]
fn free_tickets_and_fees_that_keep_it_all_are_refunded_at_once() {
    let mut free = order_in(OrderStatus::Confirmed);
    free.items[0].price = 0;
    free.total = vnd(0);
    let Ok(RefundDecision::Refund(plan)) =
        decide_refund(&free, &[], &[], RefundBy::Buyer, terms(policy()), 0)
    else {
        panic!("a free order is refundable");
    };
    assert_eq!(
        (plan.amount, plan.fee, plan.status),
        (0, 0, RefundStatus::Refunded)
    );
    let greedy = terms(Some(RefundPolicy::new(1, 100, 0).unwrap()));
    let Ok(RefundDecision::Refund(plan)) = decide_refund(
        &order_in(OrderStatus::Confirmed),
        &[],
        &[],
        RefundBy::Buyer,
        greedy,
        0,
    ) else {
        panic!("refundable");
    };
    assert_eq!(
        (plan.amount, plan.fee, plan.status),
        (0, 300_000, RefundStatus::Refunded)
    );
}

#[test]
fn ticket_ids_are_derived_from_the_order_as_the_tickets_service_issues_them() {
    let order = order_in(OrderStatus::Confirmed);
    let tickets = order_tickets(&order);
    assert_eq!(tickets.len(), 2);
    assert_eq!(tickets[0].id, ticket_id(order.id.0, "GA", 1));
    assert_eq!(tickets[1].id, ticket_id(order.id.0, "GA", 2));
    assert_ne!(tickets[0].id, tickets[1].id);
    assert!(
        tickets
            .iter()
            .all(|t| t.price == 150_000 && t.ticket_type == "GA")
    );
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
    let confirmed = order_in(Confirmed);
    let Ok(RefundDecision::Refund(plan)) =
        decide_refund(&confirmed, &[], &[], RefundBy::Organizer, terms(None), 0)
    else {
        panic!("refundable");
    };
    let refund = uuid::Uuid::from_u128(5);
    let t = on_refund(&confirmed, refund, &plan, "changed plans".to_owned());
    assert_eq!(t.status, Refunded);
    assert!(matches!(
        &t.event,
        SagaEvent::OrderRefunded {
            automatic: false,
            amount: 300_000,
            fee: 0,
            refund_id: Some(r),
            ticket_ids,
            ..
        } if *r == refund && ticket_ids.len() == 2
    ));
    let applied = t.applied_to(&confirmed, 77);
    assert_eq!(
        (applied.status, applied.updated_at, applied.note.as_deref()),
        (Refunded, 77, Some("refunded: changed plans"))
    );
    let Ok(RefundDecision::Refund(part)) = decide_refund(
        &confirmed,
        &[],
        &tickets_of(&confirmed)[..1],
        RefundBy::Organizer,
        terms(None),
        0,
    ) else {
        panic!("refundable");
    };
    let t = on_refund(&confirmed, refund, &part, "one".to_owned());
    assert_eq!(
        (t.status, t.note.as_deref()),
        (PartiallyRefunded, Some("partly refunded: one"))
    );
    // An automatic refund names a refund derived from the order.
    let SagaEvent::OrderRefunded { refund_id, .. } = on_paid(&pending, Seats::Gone).unwrap().event
    else {
        panic!("an automatic refund");
    };
    assert_eq!(refund_id, Some(automatic_refund_id(pending.id.0)));
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
    // (status, paid, refunded before, asked, to pay back and the payment's next status)
    type Case = (PaymentStatus, i64, i64, i64, Option<(i64, PaymentStatus)>);
    let cases: &[Case] = &[
        (Paid, 300_000, 0, 300_000, Some((300_000, Refunded))),
        (Paid, 300_000, 0, 100_000, Some((100_000, Paid))),
        (Paid, 300_000, 100_000, 200_000, Some((200_000, Refunded))),
        // Never more than what is left.
        (Paid, 300_000, 100_000, 250_000, Some((200_000, Refunded))),
        (Paid, 300_000, 300_000, 1, None),
        (Paid, 300_000, 0, 0, None),
        (Pending, 300_000, 0, 300_000, None),
        (Failed, 300_000, 0, 300_000, None),
        (Refunded, 300_000, 300_000, 300_000, None),
    ];
    for (status, paid, earlier, asked, expected) in cases {
        assert_eq!(
            payment_on_refund(*status, *paid, *earlier, *asked),
            *expected,
            "{status} {paid} {earlier} {asked}"
        );
    }
    use holdfast_vnpay::refund::RefundKind;
    assert_eq!(refund_kind(300_000, 0, 300_000), RefundKind::Full);
    assert_eq!(refund_kind(300_000, 0, 299_999), RefundKind::Partial);
    assert_eq!(refund_kind(300_000, 100_000, 200_000), RefundKind::Partial);
    assert!(refunded_per_querydr("00", "02"));
    assert!(!refunded_per_querydr("00", "03"));
    assert!(!refunded_per_querydr("91", "02"));
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
fn refund_attempts_retry_with_backoff_then_fail() {
    use RefundAnswer::*;
    let backoff = Backoff {
        first_ms: 100,
        max_ms: 1_000,
        attempts_max: 4,
    };
    assert_eq!(
        [1, 2, 3, 4, 5, 40].map(|a| backoff.after(a)),
        [100, 200, 400, 800, 1_000, 1_000]
    );
    let retry = |at_ms, uncertain| RefundStep::Retry { at_ms, uncertain };
    // (answer, attempt, an earlier answer lost, step at now = 10)
    let cases: &[(RefundAnswer, u32, bool, RefundStep)] = &[
        (Accepted, 1, false, RefundStep::Refunded),
        (Accepted, 4, true, RefundStep::Refunded),
        (Refused, 1, false, retry(110, false)),
        (Refused, 2, false, retry(210, false)),
        (Lost, 1, false, retry(110, true)),
        // Still uncertain after a refusal: the lost attempt may have been taken.
        (Refused, 2, true, retry(210, true)),
        (Refused, 4, false, RefundStep::Failed),
        (Lost, 4, true, RefundStep::Failed),
        // 94 after a lost answer: that attempt was taken. Without one it cannot be ours.
        (AlreadyRequested, 2, true, RefundStep::Refunded),
        (AlreadyRequested, 1, false, retry(110, false)),
        (AlreadyRequested, 4, false, RefundStep::Failed),
    ];
    for (answer, attempt, uncertain, step) in cases {
        assert_eq!(
            refund_attempted(*answer, *attempt, *uncertain, backoff, 10),
            *step,
            "{answer:?} attempt {attempt} uncertain {uncertain}"
        );
    }
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
            name: "Event".to_owned(),
            venue: "Venue".to_owned(),
            time_zone: "Asia/Ho_Chi_Minh".to_owned(),
            ticket_type_names: vec![],
            prices: vec![(ga(), vnd(100))],
            refund_policy: RefundPolicy::new(0, 10, 0).ok(),
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
            admission: None,
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
    /// A refund of order `n`: of `tickets` of its tickets left (0: all of them).
    Refund {
        n: usize,
        by_buyer: bool,
        tickets: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..=3).prop_map(|quantity| Step::Order { quantity }),
        2 => (100i64..=700).prop_map(|ms| Step::Advance { ms }),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(n, paid)| Step::Pay { n, paid }),
        2 => (any::<usize>(), any::<bool>(), 0usize..=2)
            .prop_map(|(n, by_buyer, tickets)| Step::Refund { n, by_buyer, tickets }),
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
    /// Per order: the tickets refunded, what went back through VNPAY and the fees kept.
    refunds: HashMap<OrderId, (Vec<uuid::Uuid>, i64, i64)>,
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
                    if let SagaEvent::OrderRefunded { amount, .. } = &t.event {
                        self.pay_back(id, *amount, 0, vec![]);
                    }
                    self.orders[i] = t.applied_to(&order, now);
                }
            }
            Step::Refund {
                n,
                by_buyer,
                tickets,
            } => {
                let Some(i) = (!self.orders.is_empty()).then(|| n % self.orders.len()) else {
                    return;
                };
                let order = self.orders[i].clone();
                let by = if by_buyer {
                    RefundBy::Buyer
                } else {
                    RefundBy::Organizer
                };
                let earlier = self
                    .refunds
                    .get(&order.id)
                    .map(|r| r.0.clone())
                    .unwrap_or_default();
                let asked: Vec<uuid::Uuid> = order_tickets(&order)
                    .into_iter()
                    .map(|t| t.id)
                    .filter(|id| !earlier.contains(id))
                    .take(tickets)
                    .collect();
                let terms = self.stock.terms(EVENT).await.unwrap().unwrap();
                let terms = RefundTerms {
                    starts_at_ms: Some(terms.starts_at_ms),
                    policy: terms.refund_policy,
                };
                let Ok(RefundDecision::Refund(plan)) =
                    decide_refund(&order, &earlier, &asked, by, terms, now)
                else {
                    return;
                };
                may_void(&[], by_buyer).unwrap();
                let t = on_refund(
                    &order,
                    uuid::Uuid::from_u128(n as u128),
                    &plan,
                    "asked".to_owned(),
                );
                self.orders[i] = t.applied_to(&order, now);
                self.pay_back(order.id, plan.amount, plan.fee, plan.ticket_ids);
                // The seats whose tickets were not refunded stay sold (none was used at the
                // door here).
                let refunded = &self.refunds[&order.id].0;
                let mut kept: HashMap<String, u32> = HashMap::new();
                for t in order_tickets(&order)
                    .iter()
                    .filter(|t| !refunded.contains(&t.id))
                {
                    *kept.entry(t.ticket_type.clone()).or_default() += 1;
                }
                let keep = kept.iter().map(|(code, q)| line(code, *q)).collect();
                returned(self.stock.return_stock_except(EVENT, order.id, keep).await).unwrap();
            }
        }
    }

    /// The payments service's side of a refund: what VNPAY pays back, never more than is left.
    fn pay_back(&mut self, id: OrderId, amount: i64, fee: i64, tickets: Vec<uuid::Uuid>) {
        let entry = self.refunds.entry(id).or_default();
        entry.0.extend(tickets);
        entry.2 += fee;
        let Some((status, window)) = self.payments.get(&id).copied() else {
            return;
        };
        let paid = self
            .orders
            .iter()
            .find(|o| o.id == id)
            .map_or(0, |o| o.total.amount);
        if let Some((back, next)) = payment_on_refund(status, paid, entry.1, amount) {
            entry.1 += back;
            self.payments.insert(id, (next, window));
        }
    }

    /// The rules that span the services.
    fn check(&self, capacity: u32) -> Result<(), TestCaseError> {
        let stock = self.stock.ga();
        prop_assert_eq!(stock.available + stock.held + stock.sold, capacity);
        let seats = |o: &Order| o.items.iter().map(|i| i.quantity).sum::<u32>();
        let refunded_seats = |o: &Order| {
            self.refunds
                .get(&o.id)
                .map_or(0, |r| u32::try_from(r.0.len()).unwrap())
        };
        let sold: u32 = self
            .orders
            .iter()
            .filter(|o| {
                matches!(
                    o.status,
                    OrderStatus::Confirmed | OrderStatus::PartiallyRefunded
                )
            })
            .map(|o| seats(o) - refunded_seats(o))
            .sum();
        // Every confirmed order's seats are sold, and only theirs: no oversell, no lost sale.
        prop_assert_eq!(stock.sold, sold);
        let now = self.stock.now();
        for order in &self.orders {
            let payment = self.payments.get(&order.id).map(|p| p.0);
            // What went back never exceeds what was paid; a refunded order got it all back,
            // but the fees its buyer's policy kept.
            let (_, back, fees) = self.refunds.get(&order.id).cloned().unwrap_or_default();
            prop_assert!(back + fees <= order.total.amount);
            if order.status == OrderStatus::Refunded && self.paid.contains(&order.id) {
                prop_assert_eq!(back + fees, order.total.amount, "order {:?}", order.id);
            }
            if self.paid.contains(&order.id) {
                prop_assert_eq!(
                    payment == Some(PaymentStatus::Refunded),
                    back == order.total.amount
                );
            }
            match order.status {
                // Paid after expiry: re-reserved (confirmed) or refunded, never left pending.
                _ if self.paid.contains(&order.id) => prop_assert!(
                    matches!(
                        order.status,
                        OrderStatus::Confirmed
                            | OrderStatus::PartiallyRefunded
                            | OrderStatus::Refunded
                    ),
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
                OrderStatus::Confirmed | OrderStatus::PartiallyRefunded | OrderStatus::Refunded => {
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
            refunds: HashMap::new(),
        };
        for step in steps {
            runtime.block_on(sale.run(step));
            sale.check(capacity)?;
        }
    }
}
