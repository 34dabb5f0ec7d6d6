//! The saga's decisions: pure functions of typed values and the time (`now_ms`, an argument;
//! no clock inside), with no I/O. The services load what a decision needs, call it and commit
//! what it returns (the order's next status and the event to publish) in one transaction.

use holdfast_actors::inventory::{self, HoldStatus, HoldView};
use holdfast_actors::{Line, OrderId, RefundPolicy, TicketCode, UserId};
use holdfast_vnpay::ipn::{OrderView as IpnOrder, RspCode};

use crate::api::{CheckoutError, RefundBy};
use crate::events::{Item, SagaEvent};
use crate::inventory::InventoryError;
use crate::model::{
    Currency, Money, OrderStatus, PaymentStatus, ReadStatus, RefundStatus, TicketStatus,
};
use crate::order::Order;

// ---- orders ------------------------------------------------------------------------------

/// What an order for a hold can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldUse {
    /// The hold is active: a new order.
    New,
    /// A confirmed hold without an order: a free order whose row a crash lost after its hold
    /// was confirmed; it is completed under the order id the hold names.
    CompleteFree(OrderId),
}

/// Whether `user` may order `hold` at `now_ms`. Somebody else's hold reads as not found. A
/// hold is over at its `expires_at`, as in the inventory.
pub fn use_hold(hold: &HoldView, user: UserId, now_ms: i64) -> Result<HoldUse, CheckoutError> {
    if hold.user != user {
        return Err(CheckoutError::HoldNotFound);
    }
    let status = match hold.status {
        HoldStatus::Active if hold.expires_at.as_millis() <= now_ms => HoldStatus::Expired,
        s => s,
    };
    match (status, hold.order_id) {
        (HoldStatus::Active, _) => Ok(HoldUse::New),
        (HoldStatus::Confirmed, Some(id)) => Ok(HoldUse::CompleteFree(id)),
        (status, _) => Err(CheckoutError::HoldNotActive {
            status: status.as_str().to_owned(),
        }),
    }
}

/// A hold's lines at their prices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Priced {
    pub items: Vec<Item>,
    pub total: Money,
}

/// Prices `lines` at `prices` (unit prices of the types on sale). One currency per order.
pub fn price(lines: &[Line], prices: &[(TicketCode, Money)]) -> Result<Priced, CheckoutError> {
    let mut items = Vec::with_capacity(lines.len());
    let mut total: Option<Money> = None;
    for line in lines {
        let unit = prices
            .iter()
            .find(|(code, _)| *code == line.ticket_type)
            .map(|(_, unit)| *unit)
            .ok_or_else(|| {
                CheckoutError::Invalid(format!(
                    "ticket type {} is not on sale",
                    line.ticket_type.as_str()
                ))
            })?;
        let amount = unit.times(line.quantity.get());
        let sum = match total {
            None => amount,
            Some(total) => amount.and_then(|a| total.plus(a)),
        };
        total = Some(sum.map_err(|e| CheckoutError::Invalid(e.to_string()))?);
        items.push(Item {
            ticket_type: line.ticket_type.as_str().to_owned(),
            quantity: line.quantity.get(),
            price: unit.amount,
        });
    }
    Ok(Priced {
        items,
        total: total.unwrap_or(Money::zero(Currency::VND)),
    })
}

/// The id the order gets: the one asked for, or the lost free order's (which only a free order
/// can be: a paid order is never confirmed before its row exists).
pub fn order_id(hold_use: HoldUse, total: Money, asked: OrderId) -> Result<OrderId, CheckoutError> {
    match hold_use {
        HoldUse::New => Ok(asked),
        HoldUse::CompleteFree(lost) if total.is_zero() => Ok(lost),
        HoldUse::CompleteFree(_) => Err(CheckoutError::HoldNotActive {
            status: HoldStatus::Confirmed.as_str().to_owned(),
        }),
    }
}

/// When a payment window opened at `opened_at_ms` ends: `window_ms` later, never past the hold.
pub fn window_ends_at(opened_at_ms: i64, hold_expires_at_ms: i64, window_ms: i64) -> i64 {
    hold_expires_at_ms.min(opened_at_ms.saturating_add(window_ms))
}

/// What an order stored as `stored` reads as at `now_ms`: `expired` once it is pending and its
/// hold and payment window have both ended (both ends exclusive, as the inventory's). A late
/// payment still settles the stored pending order (re-reserve or refund).
pub fn read_status(
    stored: OrderStatus,
    hold_expires_at_ms: i64,
    window_ends_at_ms: i64,
    now_ms: i64,
) -> ReadStatus {
    if stored == OrderStatus::PendingPayment
        && now_ms >= hold_expires_at_ms
        && now_ms >= window_ends_at_ms
    {
        ReadStatus::Expired
    } else {
        stored.into()
    }
}

/// Why an order reads `expired`.
pub const EXPIRED_NOTE: &str = "the hold and the payment window ended before the payment arrived";

// ---- refunds -----------------------------------------------------------------------------

/// A seat's ticket id, derived from the order: issuing again yields the same ids, and the
/// orders service knows an order's tickets without asking the tickets service.
pub fn ticket_id(order: uuid::Uuid, ticket_type: &str, seat: u32) -> uuid::Uuid {
    holdfast_actors::domain::derived_id(
        &format!("ticket:{order}"),
        &format!("{ticket_type}:{seat}"),
    )
}

/// One ticket of an order: its id, type and unit price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderTicket {
    pub id: uuid::Uuid,
    pub ticket_type: String,
    pub price: i64,
}

/// The tickets of `order`: one per seat, in its lines' order.
pub fn order_tickets(order: &Order) -> Vec<OrderTicket> {
    order
        .items
        .iter()
        .flat_map(|item| {
            (1..=item.quantity).map(move |seat| OrderTicket {
                id: ticket_id(order.id.0, &item.ticket_type, seat),
                ticket_type: item.ticket_type.clone(),
                price: item.price,
            })
        })
        .collect()
}

/// The event's terms a buyer's refund is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefundTerms {
    /// When the event starts; unknown (the event is gone) allows no buyer refund.
    pub starts_at_ms: Option<i64>,
    pub policy: Option<RefundPolicy>,
}

/// Whether `by` may refund at `now_ms` under `terms`: the organizer and admins any time; a
/// buyer only under a policy, strictly before its deadline.
pub fn refund_window(by: RefundBy, terms: RefundTerms, now_ms: i64) -> Result<(), CheckoutError> {
    if by == RefundBy::Organizer {
        return Ok(());
    }
    let Some(policy) = terms.policy else {
        return Err(CheckoutError::RefundNotAllowed(
            "this event has no refund policy: ask the organizer for a refund".to_owned(),
        ));
    };
    match terms.starts_at_ms {
        Some(starts) if now_ms < policy.deadline_ms(starts) => Ok(()),
        _ => Err(CheckoutError::RefundNotAllowed(format!(
            "refunds close {} hours before the event starts: ask the organizer for a refund",
            policy.until_hours_before_start()
        ))),
    }
}

/// What the policy keeps of a buyer's refund of `gross`: `fee_percent` % (rounded down, in the
/// buyer's favour) plus `fee_fixed`, never more than `gross`. The organizer's refunds are free.
pub fn refund_fee(by: RefundBy, policy: Option<&RefundPolicy>, gross: i64) -> i64 {
    let Some(policy) = policy.filter(|_| by == RefundBy::Buyer) else {
        return 0;
    };
    let gross = gross.max(0);
    let percent = i128::from(gross) * i128::from(policy.fee_percent()) / 100;
    let fee = percent + i128::from(policy.fee_fixed());
    i64::try_from(fee.min(i128::from(gross))).unwrap_or(gross)
}

/// A refund as decided: which tickets, how much, and what the order becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundPlan {
    pub ticket_ids: Vec<uuid::Uuid>,
    /// The tickets' price.
    pub gross: i64,
    pub fee: i64,
    /// What goes back: `gross - fee`.
    pub amount: i64,
    /// `Refunded` once no ticket is left, else `PartiallyRefunded`.
    pub order_status: OrderStatus,
    /// `Refunded` at once when nothing is to be paid back (free tickets, or a fee that keeps
    /// it all); else `Processing` until VNPAY answers.
    pub status: RefundStatus,
}

/// What a refund request turns into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundDecision {
    Refund(RefundPlan),
    /// Every ticket was refunded before: the same answer again.
    AlreadyDone,
}

/// Whether and how `by` may refund `asked` (empty: every ticket left) of `order`, whose
/// tickets `earlier` were refunded before, at `now_ms` under `terms`. What goes back never
/// exceeds what the tickets cost, and a ticket is refunded once, so an order's refunds never
/// add up to more than it was paid.
pub fn decide_refund(
    order: &Order,
    earlier: &[uuid::Uuid],
    asked: &[uuid::Uuid],
    by: RefundBy,
    terms: RefundTerms,
    now_ms: i64,
) -> Result<RefundDecision, CheckoutError> {
    match order.status {
        OrderStatus::Confirmed | OrderStatus::PartiallyRefunded => {}
        OrderStatus::Refunded => return Ok(RefundDecision::AlreadyDone),
        other => {
            return Err(CheckoutError::NotRefundable {
                status: other.as_str().to_owned(),
            });
        }
    }
    let tickets = order_tickets(order);
    let left: Vec<&OrderTicket> = tickets
        .iter()
        .filter(|t| !earlier.contains(&t.id))
        .collect();
    if left.is_empty() {
        return Ok(RefundDecision::AlreadyDone);
    }
    refund_window(by, terms, now_ms)?;
    let mut chosen: Vec<&OrderTicket> = Vec::new();
    if asked.is_empty() {
        chosen.clone_from(&left);
    } else {
        for id in asked {
            let ticket = tickets.iter().find(|t| t.id == *id).ok_or_else(|| {
                CheckoutError::Invalid(format!("ticket {id} is not one of this order's"))
            })?;
            if earlier.contains(id) {
                return Err(CheckoutError::RefundNotAllowed(format!(
                    "ticket {id} was refunded already"
                )));
            }
            if !chosen.iter().any(|t| t.id == *id) {
                chosen.push(ticket);
            }
        }
    }
    let gross = chosen
        .iter()
        .try_fold(0i64, |sum, t| sum.checked_add(t.price))
        .ok_or_else(|| CheckoutError::Invalid("the refund is too large".to_owned()))?;
    let fee = refund_fee(by, terms.policy.as_ref(), gross);
    let amount = gross - fee;
    Ok(RefundDecision::Refund(RefundPlan {
        ticket_ids: chosen.iter().map(|t| t.id).collect(),
        gross,
        fee,
        amount,
        order_status: if chosen.len() == left.len() {
            OrderStatus::Refunded
        } else {
            OrderStatus::PartiallyRefunded
        },
        status: if amount > 0 {
            RefundStatus::Processing
        } else {
            RefundStatus::Refunded
        },
    }))
}

/// An order's next state and the event that tells the other services.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub status: OrderStatus,
    pub note: Option<String>,
    pub event: SagaEvent,
}

impl Transition {
    /// `order` as it is after the transition, at `now_ms`.
    pub fn applied_to(&self, order: &Order, now_ms: i64) -> Order {
        Order {
            status: self.status,
            note: self.note.clone().or_else(|| order.note.clone()),
            updated_at: now_ms,
            ..order.clone()
        }
    }
}

/// What became of a paid order's seats in the inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seats {
    /// Its hold was confirmed.
    Sold,
    /// Its hold had ended; the same seats were held again and confirmed.
    SoldAgain,
    /// Its hold had ended and the seats are gone.
    Gone,
}

/// The next step after confirming a paid order's hold: `Ok(true)` sold, `Ok(false)` the hold
/// ended (re-reserve), `Err` anything else (the inventory's kind says retry or park).
pub fn confirmed(result: Result<(), InventoryError>) -> Result<bool, InventoryError> {
    match result {
        Ok(()) => Ok(true),
        Err(InventoryError::Refused(
            inventory::Error::HoldNotActive(_) | inventory::Error::HoldNotFound,
        )) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether re-holding a paid order's seats found them: sold out, past the buyer's limit, the
/// sale closed or the event cancelled is an answer (the order is refunded), not a failure.
pub fn reheld(result: Result<(), InventoryError>) -> Result<bool, InventoryError> {
    match result {
        Ok(()) => Ok(true),
        Err(InventoryError::Refused(
            inventory::Error::SoldOut { .. }
            | inventory::Error::LimitExceeded { .. }
            | inventory::Error::SaleNotOpen { .. }
            | inventory::Error::EventCancelled,
        )) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether the re-held seats were confirmed; a hold that ended in between (a tiny TTL) gave
/// them back.
pub fn reconfirmed(result: Result<(), InventoryError>) -> Result<bool, InventoryError> {
    match result {
        Ok(()) => Ok(true),
        Err(InventoryError::Refused(inventory::Error::HoldNotActive(_))) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether releasing a failed order's hold is done: a hold that is over already, or an event
/// gone, needs nothing more.
pub fn released(result: Result<(), InventoryError>) -> Result<(), InventoryError> {
    match result {
        Ok(())
        | Err(InventoryError::EventNotFound)
        | Err(InventoryError::Refused(
            inventory::Error::HoldNotActive(_) | inventory::Error::HoldNotFound,
        )) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether giving a refunded order's seats back is done: an automatic refund never sold them.
pub fn returned(result: Result<(), InventoryError>) -> Result<(), InventoryError> {
    match result {
        Ok(()) | Err(InventoryError::Refused(inventory::Error::OrderNotFound)) => Ok(()),
        Err(e) => Err(e),
    }
}

pub const REHELD_NOTE: &str =
    "your hold had expired when the payment arrived; the seats were reserved again";
pub const AUTO_REFUND_REASON: &str = "the payment arrived after the hold expired and the seats \
                                      were sold; the amount is refunded automatically";

/// A payment succeeded and the seats are `seats`: a pending order is confirmed, or refunded
/// automatically when the seats are gone. Any other order is settled already: nothing.
pub fn on_paid(order: &Order, seats: Seats) -> Option<Transition> {
    if order.status != OrderStatus::PendingPayment {
        return None;
    }
    Some(match seats {
        Seats::Sold | Seats::SoldAgain => {
            let again = seats == Seats::SoldAgain;
            Transition {
                status: OrderStatus::Confirmed,
                note: again.then(|| REHELD_NOTE.to_owned()),
                event: order_confirmed(order, again),
            }
        }
        Seats::Gone => Transition {
            status: OrderStatus::Refunded,
            note: Some(AUTO_REFUND_REASON.to_owned()),
            event: order_refunded(order, AUTO_REFUND_REASON.to_owned(), true),
        },
    })
}

/// A payment failed (or was abandoned): a pending order is cancelled; its hold is released
/// before. Any other order: nothing.
pub fn on_payment_failed(order: &Order, reason: &str) -> Option<Transition> {
    (order.status == OrderStatus::PendingPayment).then(|| Transition {
        status: OrderStatus::Cancelled,
        note: Some(format!("payment not completed: {reason}")),
        event: SagaEvent::OrderCancelled {
            email: order.email.clone(),
            phone: order.phone.clone(),
            reason: reason.to_owned(),
        },
    })
}

/// A refund decided by [`decide_refund`]: the order's next status and the `OrderRefunded`
/// that tells the payments service (the money), the tickets service (voiding) and the buyer.
pub fn on_refund(
    order: &Order,
    refund_id: uuid::Uuid,
    plan: &RefundPlan,
    reason: String,
) -> Transition {
    let note = match plan.order_status {
        OrderStatus::Refunded => format!("refunded: {reason}"),
        _ => format!("partly refunded: {reason}"),
    };
    Transition {
        status: plan.order_status,
        note: Some(note),
        event: SagaEvent::OrderRefunded {
            email: order.email.clone(),
            phone: order.phone.clone(),
            amount: plan.amount,
            currency: order.total.currency.to_string(),
            reason,
            automatic: false,
            refund_id: Some(refund_id),
            ticket_ids: plan.ticket_ids.clone(),
            fee: plan.fee,
        },
    }
}

/// The id of an automatic refund (or of one announced before refunds had ids): derived from
/// the order, so every service names it alike.
pub fn automatic_refund_id(order: uuid::Uuid) -> uuid::Uuid {
    holdfast_actors::domain::derived_id("refund", &order.to_string())
}

/// `OrderConfirmed` for `order`: what the tickets and notifications services need of it.
pub fn order_confirmed(order: &Order, rereserved: bool) -> SagaEvent {
    SagaEvent::OrderConfirmed {
        phone: order.phone.clone(),
        user_id: order.user.0,
        email: order.email.clone(),
        event_id: order.hold.event_id.0,
        items: order.items.clone(),
        rereserved,
        about: None,
    }
}

fn order_refunded(order: &Order, reason: String, automatic: bool) -> SagaEvent {
    SagaEvent::OrderRefunded {
        email: order.email.clone(),
        phone: order.phone.clone(),
        amount: order.total.amount,
        currency: order.total.currency.to_string(),
        reason,
        automatic,
        refund_id: Some(automatic_refund_id(order.id.0)),
        ticket_ids: Vec::new(),
        fee: 0,
    }
}

// ---- payments ----------------------------------------------------------------------------

/// Why no payment page can open for `total` at `now_ms` with a window ending at
/// `expires_at_ms`; `None`: it can. VNPAY takes VND only, and its dates have a resolution of
/// seconds, so the window must end at least a second later.
pub fn payment_refused(total: Money, now_ms: i64, expires_at_ms: i64) -> Option<String> {
    if total.currency != Currency::VND {
        Some(format!("VNPAY takes VND only, not {}", total.currency))
    } else if expires_at_ms < now_ms + 1000 {
        Some("the hold expired before the payment could start".to_owned())
    } else {
        None
    }
}

/// The payment as VNPAY's IPN rules see it.
pub fn ipn_order(payment: Option<(PaymentStatus, Money)>) -> IpnOrder {
    match payment {
        None => IpnOrder::NotFound,
        Some((PaymentStatus::Pending, total)) => IpnOrder::Pending {
            amount_minor: total.minor_units(),
        },
        Some((_, total)) => IpnOrder::Settled {
            amount_minor: total.minor_units(),
        },
    }
}

/// Recording a payment's result: the status it gets, or the answer that records nothing.
pub fn settle(
    status: PaymentStatus,
    total: Money,
    amount_minor: u64,
    paid: bool,
) -> Result<PaymentStatus, RspCode> {
    if total.minor_units() != amount_minor {
        Err(RspCode::InvalidAmount)
    } else if status != PaymentStatus::Pending {
        Err(RspCode::AlreadyConfirmed)
    } else if paid {
        Ok(PaymentStatus::Paid)
    } else {
        Ok(PaymentStatus::Failed)
    }
}

/// A refund of `amount` was recorded for a payment in `status` of `paid` in total, with
/// `earlier` refunded (or being refunded) before: whether VNPAY is to pay it back, and the
/// payment's next status (`refunded` once nothing is left). Only a paid payment is refunded;
/// never more than what is left of it.
pub fn payment_on_refund(
    status: PaymentStatus,
    paid: i64,
    earlier: i64,
    amount: i64,
) -> Option<(i64, PaymentStatus)> {
    if status != PaymentStatus::Paid || amount <= 0 {
        return None;
    }
    let left = paid.saturating_sub(earlier).max(0);
    let amount = amount.min(left);
    if amount == 0 {
        return None;
    }
    let next = if amount == left {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::Paid
    };
    Some((amount, next))
}

/// `02` (full) only for the whole payment with no refund before it: VNPAY refuses a full
/// refund after a partial one (`04`); anything else is partial (`03`).
pub fn refund_kind(paid: i64, earlier: i64, amount: i64) -> holdfast_vnpay::refund::RefundKind {
    if earlier == 0 && amount == paid {
        holdfast_vnpay::refund::RefundKind::Full
    } else {
        holdfast_vnpay::refund::RefundKind::Partial
    }
}

/// Whether a `querydr` answer says the payment was refunded in full (`vnp_TransactionType`
/// `02`): an earlier full refund whose answer was lost went through.
pub fn refunded_per_querydr(response_code: &str, transaction_type: &str) -> bool {
    response_code == "00" && transaction_type == "02"
}

/// What a refund attempt's answer does to the refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundAnswer {
    /// `00`.
    Accepted,
    /// `94`: VNPAY has this refund already.
    AlreadyRequested,
    /// A refusal (`02`, `91`, …) or an error (`99`): VNPAY answered, nothing was refunded.
    Refused,
    /// No (verifiable) answer: a timeout, a broken connection, a bad signature.
    Lost,
}

/// The refund's next step after attempt number `attempt` (1-based) answered `answer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundStep {
    Refunded,
    /// Try again at this time; `uncertain`: the answer was lost, so the refund may have been
    /// taken (the next attempt asks `querydr` first, and takes `94` as done).
    Retry {
        at_ms: i64,
        uncertain: bool,
    },
    /// VNPAY kept refusing: `failed`, for an admin.
    Failed,
}

/// Retry schedule: `first_ms`, doubling, at most `max_ms` apart, `attempts_max` attempts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first_ms: i64,
    pub max_ms: i64,
    pub attempts_max: u32,
}

impl Backoff {
    /// The wait after attempt number `attempt` (1-based).
    pub fn after(&self, attempt: u32) -> i64 {
        let doublings = attempt.saturating_sub(1).min(30);
        self.first_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.max_ms)
    }
}

/// Decides the step after attempt `attempt`: `94` counts as done only when an earlier attempt
/// may have reached VNPAY (`earlier_uncertain`), else it is a refusal like the others.
pub fn refund_attempted(
    answer: RefundAnswer,
    attempt: u32,
    earlier_uncertain: bool,
    backoff: Backoff,
    now_ms: i64,
) -> RefundStep {
    let answer = match answer {
        RefundAnswer::AlreadyRequested if !earlier_uncertain => RefundAnswer::Refused,
        a => a,
    };
    match answer {
        RefundAnswer::Accepted | RefundAnswer::AlreadyRequested => RefundStep::Refunded,
        _ if attempt >= backoff.attempts_max => RefundStep::Failed,
        RefundAnswer::Refused | RefundAnswer::Lost => RefundStep::Retry {
            at_ms: now_ms.saturating_add(backoff.after(attempt)),
            uncertain: answer == RefundAnswer::Lost || earlier_uncertain,
        },
    }
}

// ---- tickets -----------------------------------------------------------------------------

/// Whether a ticket in `status` may enter now.
pub fn admit(status: TicketStatus, ticket: uuid::Uuid) -> Result<(), CheckoutError> {
    match status {
        TicketStatus::Valid => Ok(()),
        TicketStatus::Admitted => Err(CheckoutError::AlreadyAdmitted { ticket_id: ticket }),
        TicketStatus::Void => Err(CheckoutError::InvalidTicket(
            "the ticket was refunded".to_owned(),
        )),
    }
}

/// Whether a refund may void an order's tickets: not when the buyer asks and one of them was
/// used at the door (the organizer may; the seats used stay sold).
pub fn may_void(
    tickets: &[(uuid::Uuid, TicketStatus)],
    by_buyer: bool,
) -> Result<(), CheckoutError> {
    match tickets.iter().find(|(_, s)| *s == TicketStatus::Admitted) {
        Some((id, _)) if by_buyer => Err(CheckoutError::TicketAdmitted { ticket_id: *id }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
