//! Errors of the saga's consumers, classified: a transient error (a database or peer not
//! available right now) is retried with backoff, a permanent one (bad data, a broken
//! invariant, a missing setting) parks the message (`runner`).
//!
//! The handlers build their errors with `?` over store, inventory and JSON errors; the kind is
//! read from the chain of causes, nearest first, so a handler marks a case permanent by
//! returning an [`Error`] made with [`Error::permanent`]. Unknown causes count as transient:
//! their retries are bounded, after which the message parks all the same.

use std::fmt;

use crate::api::CheckoutError;
use crate::inventory::InventoryError;

/// Whether trying again may succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Transient,
    Permanent,
}

/// A consumer's failure to handle an event, with its [`Kind`].
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    inner: anyhow::Error,
}

impl Error {
    /// An error no retry can fix.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self {
            kind: Kind::Permanent,
            inner: anyhow::anyhow!("{message}"),
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.inner)
    }
}

impl std::error::Error for Error {}

impl From<anyhow::Error> for Error {
    fn from(inner: anyhow::Error) -> Self {
        match inner.downcast::<Error>() {
            Ok(error) => error,
            Err(inner) => Self {
                kind: kind_of(&inner),
                inner,
            },
        }
    }
}

impl From<holdfast_persistence::Error> for Error {
    fn from(e: holdfast_persistence::Error) -> Self {
        anyhow::Error::new(e).into()
    }
}

/// The kind of the nearest cause that has one.
fn kind_of(error: &anyhow::Error) -> Kind {
    for cause in error.chain() {
        let kind = if let Some(e) = cause.downcast_ref::<Error>() {
            Some(e.kind)
        } else if let Some(e) = cause.downcast_ref::<holdfast_persistence::Error>() {
            Some(transient_if(e.is_transient()))
        } else if let Some(e) = cause.downcast_ref::<InventoryError>() {
            Some(transient_if(e.is_transient()))
        } else if let Some(e) = cause.downcast_ref::<CheckoutError>() {
            Some(transient_if(e.is_transient()))
        } else if cause.is::<holdfast_bus::Error>() {
            Some(Kind::Transient)
        } else if cause.is::<serde_json::Error>() {
            Some(Kind::Permanent)
        } else {
            None
        };
        if let Some(kind) = kind {
            return kind;
        }
    }
    Kind::Transient
}

fn transient_if(transient: bool) -> Kind {
    if transient {
        Kind::Transient
    } else {
        Kind::Permanent
    }
}

#[cfg(test)]
mod tests {
    use holdfast_actors::inventory;

    use super::*;

    #[test]
    fn errors_are_classified_by_their_nearest_known_cause() {
        let json = serde_json::from_str::<u32>("nope").unwrap_err();
        let cases: Vec<(anyhow::Error, Kind)> = vec![
            (
                anyhow::Error::new(holdfast_persistence::Error::ConnectTimeout { secs: 1 }),
                Kind::Transient,
            ),
            (
                anyhow::Error::new(holdfast_persistence::Error::Corrupt("x".to_owned()))
                    .context("loading the order"),
                Kind::Permanent,
            ),
            (
                anyhow::Error::new(json).context("order items"),
                Kind::Permanent,
            ),
            (
                InventoryError::Unavailable("actor restarting".to_owned()).into(),
                Kind::Transient,
            ),
            (InventoryError::Overloaded.into(), Kind::Transient),
            (
                InventoryError::Refused(inventory::Error::OrderIdTaken).into(),
                Kind::Permanent,
            ),
            (InventoryError::EventNotFound.into(), Kind::Permanent),
            (
                CheckoutError::Inventory(InventoryError::Unavailable("owner moving".to_owned()))
                    .into(),
                Kind::Transient,
            ),
            (
                CheckoutError::Store(holdfast_persistence::Error::ConnectTimeout { secs: 1 })
                    .into(),
                Kind::Transient,
            ),
            (CheckoutError::OrderNotFound.into(), Kind::Permanent),
            (
                holdfast_bus::Error::Backend("broker gone".to_owned()).into(),
                Kind::Transient,
            ),
            (
                anyhow::Error::new(Error::permanent("no ticket signing key")).context("issuing"),
                Kind::Permanent,
            ),
            // Unknown: transient, and bounded by the retries.
            (anyhow::anyhow!("something else"), Kind::Transient),
        ];
        for (error, kind) in cases {
            let text = format!("{error:#}");
            assert_eq!(Error::from(error).kind(), kind, "{text}");
        }
    }

    #[test]
    fn a_permanent_error_survives_a_round_trip_through_anyhow() {
        let e = Error::from(anyhow::Error::new(Error::permanent("bad hold id")));
        assert_eq!(e.kind(), Kind::Permanent);
        assert_eq!(e.to_string(), "bad hold id");
    }
}
