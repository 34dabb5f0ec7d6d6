//! The saga's events as they travel on the bus: JSON envelopes keyed by order id.

use holdfast_bus::{ORDERS, PAYMENTS, TICKETS};
use holdfast_persistence::OutboxRecord;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::messages::OrderAbout;

/// One ordered line, with its unit price.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub ticket_type: String,
    pub quantity: u32,
    pub price: i64,
}

/// A ticket as the tickets service announces it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedTicket {
    pub id: Uuid,
    pub ticket_type: String,
    pub code: String,
}

/// What happened, by the service that says so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SagaEvent {
    /// Orders: a buyer placed an order for an active hold.
    OrderCreated {
        /// The buyer's mobile number, for SMS.
        #[serde(default)]
        phone: Option<String>,
        user_id: Uuid,
        email: String,
        event_id: Uuid,
        hold_id: String,
        amount: i64,
        currency: String,
        hold_expires_at: i64,
        items: Vec<Item>,
        /// The event and ticket type names the buyer's messages show; absent in records
        /// written before messages named them.
        #[serde(default)]
        about: Option<OrderAbout>,
    },
    /// Payments: the VNPAY payment page is ready.
    PaymentRequested {
        /// The buyer's mobile number, for SMS.
        #[serde(default)]
        phone: Option<String>,
        email: String,
        payment_url: String,
        expires_at: i64,
        amount: i64,
        currency: String,
        /// Copied from the order's `OrderCreated`, for the payment link's message.
        #[serde(default)]
        about: Option<OrderAbout>,
        #[serde(default)]
        items: Vec<Item>,
    },
    /// Payments: VNPAY reported the money paid (checked signature, amount and state).
    PaymentSucceeded {
        amount: i64,
        transaction_no: Option<String>,
    },
    /// Payments: VNPAY reported a failure or cancellation, or the payment window closed.
    PaymentFailed {
        reason: String,
        response_code: Option<String>,
    },
    /// Orders: the seats are sold to the buyer.
    OrderConfirmed {
        /// The buyer's mobile number, for SMS.
        #[serde(default)]
        phone: Option<String>,
        user_id: Uuid,
        email: String,
        event_id: Uuid,
        items: Vec<Item>,
        /// The hold had expired before the money arrived and the seats were reserved again.
        rereserved: bool,
        /// A free order's event and buyer's language (no `OrderCreated` goes out for it);
        /// absent for paid orders and in events written before.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        about: Option<crate::messages::OrderAbout>,
    },
    /// Orders: the order ended without a sale; the hold is released.
    OrderCancelled {
        email: String,
        #[serde(default)]
        phone: Option<String>,
        reason: String,
    },
    /// Orders: the money goes back to the buyer; the tickets service voids the tickets and
    /// answers with [`SagaEvent::TicketsVoided`], after which the seats go back on sale.
    OrderRefunded {
        /// The buyer's mobile number, for SMS.
        #[serde(default)]
        phone: Option<String>,
        email: String,
        /// What goes back to the buyer (after `fee`).
        amount: i64,
        currency: String,
        reason: String,
        /// True when the system refunded on its own (paid after the hold expired, sold out).
        automatic: bool,
        /// The refund (the orders service's `refunds` row); absent in events written before
        /// refunds had ids, which the payments service then derives from the order.
        #[serde(default)]
        refund_id: Option<Uuid>,
        /// The tickets refunded; empty: all of the order's.
        #[serde(default)]
        ticket_ids: Vec<Uuid>,
        /// What the event's refund policy kept.
        #[serde(default)]
        fee: i64,
    },
    /// Tickets: one signed ticket per seat.
    TicketsIssued {
        /// The buyer's mobile number, for SMS.
        #[serde(default)]
        phone: Option<String>,
        email: String,
        event_id: Uuid,
        tickets: Vec<IssuedTicket>,
    },
    /// Tickets: a refunded order's unused tickets no longer admit; `admitted` are the seats
    /// already used at the door, which stay sold (the orders service returns the rest).
    TicketsVoided {
        admitted: Vec<SeatCount>,
        /// The seats whose tickets are not void (valid or admitted), which stay sold to the
        /// order; absent in events written before partial refunds (then: `admitted`).
        #[serde(default)]
        kept: Option<Vec<SeatCount>>,
    },
    /// Payments: a refund's money went back through VNPAY (`refunded`), or VNPAY kept
    /// refusing it within the retries (`failed`).
    RefundSettled {
        refund_id: Uuid,
        refunded: bool,
        response_code: Option<String>,
        message: Option<String>,
    },
}

/// Seats of one ticket type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatCount {
    pub ticket_type: String,
    pub quantity: u32,
}

impl SagaEvent {
    /// The topic of the service that publishes this event.
    pub fn topic(&self) -> &'static str {
        match self {
            Self::OrderCreated { .. }
            | Self::OrderConfirmed { .. }
            | Self::OrderCancelled { .. }
            | Self::OrderRefunded { .. } => ORDERS,
            Self::PaymentRequested { .. }
            | Self::PaymentSucceeded { .. }
            | Self::PaymentFailed { .. }
            | Self::RefundSettled { .. } => PAYMENTS,
            Self::TicketsIssued { .. } | Self::TicketsVoided { .. } => TICKETS,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::OrderCreated { .. } => "OrderCreated",
            Self::PaymentRequested { .. } => "PaymentRequested",
            Self::PaymentSucceeded { .. } => "PaymentSucceeded",
            Self::PaymentFailed { .. } => "PaymentFailed",
            Self::OrderConfirmed { .. } => "OrderConfirmed",
            Self::OrderCancelled { .. } => "OrderCancelled",
            Self::OrderRefunded { .. } => "OrderRefunded",
            Self::TicketsIssued { .. } => "TicketsIssued",
            Self::TicketsVoided { .. } => "TicketsVoided",
            Self::RefundSettled { .. } => "RefundSettled",
        }
    }
}

/// An event with its id (what consumers deduplicate by), time and order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: Uuid,
    pub at_ms: i64,
    pub order_id: Uuid,
    #[serde(flatten)]
    pub event: SagaEvent,
}

impl Envelope {
    pub fn new(order_id: Uuid, at_ms: i64, event: SagaEvent) -> Self {
        Self {
            id: Uuid::new_v4(),
            at_ms,
            order_id,
            event,
        }
    }

    /// The outbox record that publishes this envelope, keyed by order id.
    pub fn record(&self) -> OutboxRecord {
        OutboxRecord {
            id: self.id,
            topic: self.event.topic().to_owned(),
            key: self.order_id.to_string(),
            payload: serde_json::to_vec(self).expect("an envelope serialises"),
        }
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_go_to_their_service_topic() {
        let order = Uuid::new_v4();
        let env = Envelope::new(
            order,
            5,
            SagaEvent::PaymentFailed {
                reason: "cancelled by the buyer".to_owned(),
                response_code: Some("24".to_owned()),
            },
        );
        let record = env.record();
        assert_eq!(record.topic, "payments.events");
        assert_eq!(record.key, order.to_string());
        assert_eq!(record.id, env.id);
        let json: serde_json::Value = serde_json::from_slice(&record.payload).unwrap();
        assert_eq!(json["type"], "PaymentFailed");
        assert_eq!(json["response_code"], "24");
        assert_eq!(Envelope::decode(&record.payload).unwrap(), env);
        assert!(Envelope::decode(b"{\"type\":\"Nope\"}").is_err());
    }
}
