//! The saga's typed values: statuses as enums (stored as their `as_str` names) and money as an
//! amount with its currency.

use std::fmt;

/// Read from a stored row that holds something else: a broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a {what}: {value:?}")]
pub struct Unknown {
    what: &'static str,
    value: String,
}

macro_rules! status {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            /// The name it is stored and shown as.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(text: &str) -> Result<Self, Unknown> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(Unknown { what: $what, value: other.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status!(
    /// Where an order stands, as stored.
    OrderStatus, "order status" {
        /// Placed; its payment has not settled.
        PendingPayment = "pending_payment",
        /// Paid (or free) and its seats sold.
        Confirmed = "confirmed",
        /// The payment failed or was abandoned; the hold was released.
        Cancelled = "cancelled",
        /// Some of its tickets were refunded; the others still admit.
        PartiallyRefunded = "partially_refunded",
        /// The money goes back: by request, or automatically when a late payment found the
        /// seats sold.
        Refunded = "refunded",
    }
);

status!(
    /// What an order reads as: its stored status, or `expired` (never stored) once its hold
    /// and payment window have both passed while it was still pending.
    ReadStatus, "order status" {
        PendingPayment = "pending_payment",
        Confirmed = "confirmed",
        Cancelled = "cancelled",
        PartiallyRefunded = "partially_refunded",
        Refunded = "refunded",
        Expired = "expired",
    }
);

impl From<OrderStatus> for ReadStatus {
    fn from(s: OrderStatus) -> Self {
        match s {
            OrderStatus::PendingPayment => Self::PendingPayment,
            OrderStatus::Confirmed => Self::Confirmed,
            OrderStatus::Cancelled => Self::Cancelled,
            OrderStatus::PartiallyRefunded => Self::PartiallyRefunded,
            OrderStatus::Refunded => Self::Refunded,
        }
    }
}

status!(
    /// Where an order's payment stands at the payments service.
    PaymentStatus, "payment status" {
        /// The payment page is open; no result yet.
        Pending = "pending",
        Paid = "paid",
        Failed = "failed",
        /// Paid, then refunded (VNPAY's refund run pays it back).
        Refunded = "refunded",
    }
);

status!(
    /// Where a refund's money stands: VNPAY is being asked, took it, or kept refusing.
    RefundStatus, "refund status" {
        Processing = "processing",
        Refunded = "refunded",
        /// VNPAY kept refusing (or never answered) within the retries: an admin settles it.
        Failed = "failed",
    }
);

status!(
    /// A ticket's state at the door.
    TicketStatus, "ticket status" {
        Valid = "valid",
        Admitted = "admitted",
        /// Voided by a refund.
        Void = "void",
    }
);

/// An ISO 4217 code: three ASCII capital letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The Vietnamese đồng, VNPAY's only currency.
    pub const VND: Currency = Currency(*b"VND");

    pub fn parse(code: &str) -> Result<Self, Unknown> {
        match code.as_bytes() {
            &[a, b, c] if [a, b, c].iter().all(u8::is_ascii_uppercase) => Ok(Self([a, b, c])),
            _ => Err(Unknown {
                what: "currency code",
                value: code.to_owned(),
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        // Three ASCII letters, checked in `parse`.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount in its currency's minor unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Money {
    pub amount: i64,
    pub currency: Currency,
}

/// Why two amounts do not add up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("the hold mixes currencies; hold each currency separately")]
    MixedCurrencies,
    #[error("the order total is too large")]
    Overflow,
}

impl Money {
    pub fn new(amount: i64, currency: Currency) -> Self {
        Self { amount, currency }
    }

    pub fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    pub fn is_zero(&self) -> bool {
        self.amount == 0
    }

    /// `quantity` of this unit price.
    pub fn times(self, quantity: u32) -> Result<Self, MoneyError> {
        self.amount
            .checked_mul(i64::from(quantity))
            .map(|amount| Self::new(amount, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    pub fn plus(self, other: Self) -> Result<Self, MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::MixedCurrencies);
        }
        self.amount
            .checked_add(other.amount)
            .map(|amount| Self::new(amount, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// The amount as VNPAY writes it (it never sees a negative amount: prices are ≥ 0).
    pub fn minor_units(&self) -> u64 {
        u64::try_from(self.amount).unwrap_or(0)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_what_they_store() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Ok(*s));
            assert_eq!(ReadStatus::from(*s).as_str(), s.as_str());
        }
        for s in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(s.as_str()), Ok(*s));
        }
        for s in TicketStatus::ALL {
            assert_eq!(TicketStatus::parse(s.as_str()), Ok(*s));
        }
        for s in RefundStatus::ALL {
            assert_eq!(RefundStatus::parse(s.as_str()), Ok(*s));
        }
        assert!(
            OrderStatus::parse("expired").is_err(),
            "expired is never stored"
        );
        assert!(OrderStatus::parse("Confirmed").is_err());
    }

    #[test]
    fn currencies_are_three_capitals() {
        assert_eq!(Currency::parse("VND"), Ok(Currency::VND));
        assert_eq!(
            Currency::parse("EUR").map(|c| c.to_string()),
            Ok("EUR".to_owned())
        );
        for bad in ["", "vnd", "VN", "VNDD", "V1D", "ĐỒN"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn money_adds_in_one_currency_and_never_overflows() {
        let vnd = |a| Money::new(a, Currency::VND);
        let eur = Money::new(1, Currency::parse("EUR").unwrap());
        assert_eq!(vnd(150_000).times(3), Ok(vnd(450_000)));
        assert_eq!(vnd(1).plus(vnd(2)), Ok(vnd(3)));
        assert_eq!(vnd(1).plus(eur), Err(MoneyError::MixedCurrencies));
        assert_eq!(vnd(i64::MAX).plus(vnd(1)), Err(MoneyError::Overflow));
        assert_eq!(vnd(i64::MAX / 2 + 1).times(2), Err(MoneyError::Overflow));
        assert!(vnd(0).times(5).unwrap().is_zero());
    }
}
