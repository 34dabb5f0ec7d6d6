//! The saga's decisions: pure functions of typed values and the time (`now_ms`, an argument;
//! no clock inside), with no I/O. The services load what a decision needs, call it and commit
//! what it returns (the order's next status and the event to publish) in one transaction.

use holdfast_actors::inventory::{self, HoldStatus, HoldView};
use holdfast_actors::{Line, OrderId, TicketCode, UserId};
use holdfast_vnpay::ipn::{OrderView as IpnOrder, RspCode};

use crate::api::{CheckoutError, RefundBy};
use crate::events::{Item, SagaEvent};
use crate::inventory::InventoryError;
use crate::model::{Currency, Money, OrderStatus, PaymentStatus, ReadStatus, TicketStatus};
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

/// What a refund request turns into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundDecision {
    Refund,
    /// Refunded before: the same answer again.
    AlreadyDone,
}

/// Whether `by` may refund an order in `status` at `now_ms`, for an event starting at
/// `starts_at_ms` (unknown: no limit). Buyers refund only before the event starts; the
/// organizer and admins any time.
pub fn decide_refund(
    status: OrderStatus,
    by: RefundBy,
    now_ms: i64,
    starts_at_ms: Option<i64>,
) -> Result<RefundDecision, CheckoutError> {
    match status {
        OrderStatus::Confirmed => {}
        OrderStatus::Refunded => return Ok(RefundDecision::AlreadyDone),
        other => {
            return Err(CheckoutError::NotRefundable {
                status: other.as_str().to_owned(),
            });
        }
    }
    if by == RefundBy::Buyer && starts_at_ms.is_some_and(|starts| now_ms >= starts) {
        return Err(CheckoutError::RefundNotAllowed(
            "the event has started: ask the organizer for a refund".to_owned(),
        ));
    }
    Ok(RefundDecision::Refund)
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

/// A refund asked for (and allowed by [`decide_refund`]): a confirmed order is refunded; one
/// refunded already stays as it is (`None`); anything else is refused.
pub fn on_refund(order: &Order, reason: String) -> Result<Option<Transition>, CheckoutError> {
    match order.status {
        OrderStatus::Confirmed => Ok(Some(Transition {
            status: OrderStatus::Refunded,
            note: Some(format!("refunded: {reason}")),
            event: order_refunded(order, reason, false),
        })),
        OrderStatus::Refunded => Ok(None),
        other => Err(CheckoutError::NotRefundable {
            status: other.as_str().to_owned(),
        }),
    }
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

/// An order was refunded: a paid payment is marked refunded (for the refund run); any other
/// stays as it is.
pub fn payment_on_refund(status: PaymentStatus) -> Option<PaymentStatus> {
    (status == PaymentStatus::Paid).then_some(PaymentStatus::Refunded)
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
