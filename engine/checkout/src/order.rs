//! An order as the saga decides over it: typed, read from and written to its stored row at the
//! shell's edge.

use holdfast_actors::{HoldRef, OrderId, UserId};
use holdfast_persistence::OrderRow;

use crate::api::{CheckoutError, OrderLine, OrderView};
use crate::events::Item;
use crate::model::{Currency, Money, OrderStatus, ReadStatus};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user: UserId,
    /// Where the buyer is told things (empty when the account is unknown here).
    pub email: String,
    pub phone: Option<String>,
    pub hold: HoldRef,
    pub status: OrderStatus,
    pub total: Money,
    pub items: Vec<Item>,
    pub hold_expires_at: i64,
    pub payment_url: Option<String>,
    /// Why the order ended as it did, for the buyer.
    pub note: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Order {
    /// The order stored in `row`; a row it cannot read is a broken invariant.
    pub fn from_row(row: &OrderRow) -> Result<Self, CheckoutError> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            CheckoutError::Corrupt(format!("order {} has an invalid {what}: {e}", row.id))
        };
        Ok(Self {
            id: OrderId(row.id),
            user: UserId(row.user_id),
            email: row.email.clone(),
            phone: row.phone.clone(),
            hold: row.hold_id.parse().map_err(|e| corrupt("hold id", &e))?,
            status: OrderStatus::parse(&row.status).map_err(|e| corrupt("status", &e))?,
            total: Money::new(
                row.amount,
                Currency::parse(&row.currency).map_err(|e| corrupt("currency", &e))?,
            ),
            items: serde_json::from_str(&row.items).map_err(|e| corrupt("item list", &e))?,
            hold_expires_at: row.hold_expires_at,
            payment_url: row.payment_url.clone(),
            note: row.note.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }

    pub fn to_row(&self) -> OrderRow {
        OrderRow {
            id: self.id.0,
            user_id: self.user.0,
            email: self.email.clone(),
            event_id: self.hold.event_id.0,
            hold_id: self.hold.to_string(),
            status: self.status.as_str().to_owned(),
            amount: self.total.amount,
            currency: self.total.currency.to_string(),
            items: serde_json::to_string(&self.items).unwrap_or_else(|_| "[]".to_owned()),
            hold_expires_at: self.hold_expires_at,
            payment_url: self.payment_url.clone(),
            note: self.note.clone(),
            phone: self.phone.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// The order as the buyer reads it, shown as `status`.
    pub fn view(&self, status: ReadStatus) -> OrderView {
        OrderView {
            id: self.id,
            user: self.user,
            hold: self.hold,
            status,
            total: self.total,
            items: self
                .items
                .iter()
                .map(|i| OrderLine {
                    ticket_type: i.ticket_type.clone(),
                    quantity: i.quantity,
                    price: i.price,
                })
                .collect(),
            payment_url: self.payment_url.clone(),
            note: if status == ReadStatus::Expired {
                Some(crate::decide::EXPIRED_NOTE.to_owned())
            } else {
                self.note.clone()
            },
            created_at_ms: self.created_at,
        }
    }
}
