//! Checked value types shared by the core and its callers ("parse, don't validate").

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered random id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// An event on sale; one inventory actor owns each.
    EventId
);
impl EventId {
    /// The shard this event lives in, of `shards`. Stable forever: it decides which node owns
    /// the event and which journal fence applies.
    pub fn shard(self, shards: u32) -> u32 {
        // splitmix64 of both halves: well spread whatever the id's version.
        let v = self.0.as_u128();
        let mut x = (v as u64) ^ ((v >> 64) as u64);
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x % u64::from(shards.max(1))) as u32
    }
}

uuid_id!(
    /// A hold, unique within its event.
    HoldId
);
uuid_id!(
    /// A user account.
    UserId
);
uuid_id!(
    /// An order, created from a hold at checkout.
    OrderId
);

/// Milliseconds since the Unix epoch. The core never reads a clock: callers pass `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    pub fn plus_millis(self, millis: i64) -> Self {
        Self(self.0.saturating_add(millis))
    }
}

/// A ticket type code within an event, e.g. `GA` or `VIP-FLOOR`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TicketCode(String);

/// Why a string is not a [`TicketCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ticket type code must be 1 to 32 characters of A-Z, a-z, 0-9, '-' or '_'")]
pub struct InvalidTicketCode;

impl TicketCode {
    pub const LEN_MAX: usize = 32;

    pub fn parse(code: &str) -> Result<Self, InvalidTicketCode> {
        let ok = !code.is_empty()
            && code.len() <= Self::LEN_MAX
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(code.to_owned()))
        } else {
            Err(InvalidTicketCode)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TicketCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A number of seats in one line of a hold: at least 1, at most [`Quantity::MAX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quantity(u32);

/// Why a number is not a [`Quantity`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity must be between 1 and {max}", max = Quantity::MAX)]
pub struct InvalidQuantity;

impl Quantity {
    /// More seats than any venue sells in one hold; keeps arithmetic far from overflow.
    pub const MAX: u32 = 10_000;

    pub fn new(n: u32) -> Result<Self, InvalidQuantity> {
        if (1..=Self::MAX).contains(&n) {
            Ok(Self(n))
        } else {
            Err(InvalidQuantity)
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// One line of a hold: so many seats of one ticket type.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Line {
    pub ticket_type: TicketCode,
    pub quantity: Quantity,
}

/// A hold as named outside the engine: the event it belongs to and its id within it, so any
/// node can route a hold request without a lookup. Written as 64 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HoldRef {
    pub event_id: EventId,
    pub hold_id: HoldId,
}

/// Why a string is not a [`HoldRef`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hold id must be 64 hexadecimal digits")]
pub struct InvalidHoldRef;

impl fmt::Display for HoldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.event_id.0.simple(), self.hold_id.0.simple())
    }
}

impl FromStr for HoldRef {
    type Err = InvalidHoldRef;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidHoldRef);
        }
        let (event, hold) = s.split_at(32);
        Ok(Self {
            event_id: EventId(Uuid::parse_str(event).map_err(|_| InvalidHoldRef)?),
            hold_id: HoldId(Uuid::parse_str(hold).map_err(|_| InvalidHoldRef)?),
        })
    }
}

/// An id derived from who asks and their key: the same two always give the same id, so a retry
/// that runs again (after a 5xx, or a redelivered saga event) finds what the first run made. The
/// gateway derives hold ids from Idempotency-Keys with it; the saga, re-reservation holds and
/// notification ids.
pub fn derived_id(caller: &str, key: &str) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(caller.as_bytes())
        .chain_update([0])
        .chain_update(key.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes)
}

/// `millis` since the Unix epoch in RFC 3339, UTC, as every time in the API is written (empty
/// when out of range).
pub fn rfc3339_millis(millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An event's refund policy: buyers may refund by themselves until `until_hours_before_start`
/// hours before the event starts, less `fee_percent` % of what they refund and `fee_fixed`
/// (minor units) per refund. No policy: only the organizer or an admin refunds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRefundPolicy")]
pub struct RefundPolicy {
    until_hours_before_start: u32,
    fee_percent: u32,
    fee_fixed: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefundPolicy {
    until_hours_before_start: u32,
    #[serde(default)]
    fee_percent: u32,
    #[serde(default)]
    fee_fixed: i64,
}

/// Why a refund policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRefundPolicy {
    #[error("until_hours_before_start must be at most {max}", max = RefundPolicy::HOURS_MAX)]
    Hours,
    #[error("fee_percent must be between 0 and 100")]
    Percent,
    #[error("fee_fixed must be between 0 and {max}", max = RefundPolicy::FEE_FIXED_MAX)]
    Fixed,
}

impl RefundPolicy {
    /// Ten years: any deadline further out is a typo.
    pub const HOURS_MAX: u32 = 24 * 366 * 10;
    /// A fixed fee beyond any ticket price (10^12 minor units).
    pub const FEE_FIXED_MAX: i64 = 1_000_000_000_000;

    pub fn new(
        until_hours_before_start: u32,
        fee_percent: u32,
        fee_fixed: i64,
    ) -> Result<Self, InvalidRefundPolicy> {
        if until_hours_before_start > Self::HOURS_MAX {
            return Err(InvalidRefundPolicy::Hours);
        }
        if fee_percent > 100 {
            return Err(InvalidRefundPolicy::Percent);
        }
        if !(0..=Self::FEE_FIXED_MAX).contains(&fee_fixed) {
            return Err(InvalidRefundPolicy::Fixed);
        }
        Ok(Self {
            until_hours_before_start,
            fee_percent,
            fee_fixed,
        })
    }

    pub fn until_hours_before_start(&self) -> u32 {
        self.until_hours_before_start
    }

    pub fn fee_percent(&self) -> u32 {
        self.fee_percent
    }

    pub fn fee_fixed(&self) -> i64 {
        self.fee_fixed
    }

    /// The last moment (exclusive) a buyer may refund an event starting at `starts_at_ms`.
    pub fn deadline_ms(&self, starts_at_ms: i64) -> i64 {
        starts_at_ms.saturating_sub(i64::from(self.until_hours_before_start) * 3_600_000)
    }
}

impl TryFrom<RawRefundPolicy> for RefundPolicy {
    type Error = InvalidRefundPolicy;

    fn try_from(raw: RawRefundPolicy) -> Result<Self, Self::Error> {
        Self::new(raw.until_hours_before_start, raw.fee_percent, raw.fee_fixed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_codes_are_checked() {
        for good in ["GA", "VIP-FLOOR", "a_1", &"x".repeat(32)] {
            assert!(TicketCode::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "has space", "ümlaut", &"x".repeat(33), "semi;colon"] {
            assert_eq!(TicketCode::parse(bad), Err(InvalidTicketCode), "{bad}");
        }
    }

    #[test]
    fn hold_refs_round_trip_and_reject_garbage() {
        let r = HoldRef {
            event_id: EventId::generate(),
            hold_id: HoldId::generate(),
        };
        let text = r.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<HoldRef>(), Ok(r));
        for bad in ["", "xyz", &"g".repeat(64), &text[..63], &format!("{text}0")] {
            assert_eq!(bad.parse::<HoldRef>(), Err(InvalidHoldRef), "{bad}");
        }
    }

    #[test]
    fn shards_are_stable_and_spread() {
        let id = EventId(Uuid::from_u128(0x0194_f3a2_0000_7000_8000_0000_0000_0001));
        assert_eq!(id.shard(256), id.shard(256));
        assert_eq!(id.shard(1), 0);
        let mut counts = [0u32; 8];
        for _ in 0..8000 {
            counts[EventId::generate().shard(8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&n| (700..1300).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(Quantity::new(0).is_err());
        assert_eq!(Quantity::new(1).map(Quantity::get), Ok(1));
        assert!(Quantity::new(Quantity::MAX).is_ok());
        assert!(Quantity::new(Quantity::MAX + 1).is_err());
    }

    #[test]
    fn refund_policies_are_bounded() {
        let p = RefundPolicy::new(48, 10, 0).unwrap();
        assert_eq!(p.deadline_ms(200 * 3_600_000), 152 * 3_600_000);
        assert_eq!(RefundPolicy::new(0, 0, 0).unwrap().deadline_ms(5), 5);
        assert!(
            RefundPolicy::new(RefundPolicy::HOURS_MAX, 100, RefundPolicy::FEE_FIXED_MAX).is_ok()
        );
        assert_eq!(
            RefundPolicy::new(RefundPolicy::HOURS_MAX + 1, 0, 0),
            Err(InvalidRefundPolicy::Hours)
        );
        assert_eq!(
            RefundPolicy::new(1, 101, 0),
            Err(InvalidRefundPolicy::Percent)
        );
        assert_eq!(RefundPolicy::new(1, 0, -1), Err(InvalidRefundPolicy::Fixed));
    }
}
