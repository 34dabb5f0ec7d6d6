//! The answer to VNPAY's IPN call: `{"RspCode", "Message"}`.
//!
//! The order of checks follows VNPAY's PHP IPN sample: signature (`97`), order found (`01`),
//! amount (`04`), not yet settled (`02`), then `00` — also for a failed or cancelled payment,
//! which the merchant records too. VNPAY retries the IPN until it gets `00` or `02`; `99`
//! (unknown error) is what the caller answers when recording the outcome failed.

use serde::{Deserialize, Serialize};

use crate::{VerifiedReturn, VerifyError};

/// The codes VNPAY expects from an IPN endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RspCode {
    ConfirmSuccess,
    OrderNotFound,
    AlreadyConfirmed,
    InvalidAmount,
    InvalidSignature,
    UnknownError,
}

impl RspCode {
    /// The code for a call [`crate::verify`] refused: `97` for a forged or altered call, `04`
    /// for an amount that is not whole VND, `99` for anything else.
    pub fn for_error(error: &VerifyError) -> Self {
        match error {
            e if e.is_signature_failure() => Self::InvalidSignature,
            VerifyError::AmountNotWhole(_) => Self::InvalidAmount,
            _ => Self::UnknownError,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Self::ConfirmSuccess => "00",
            Self::OrderNotFound => "01",
            Self::AlreadyConfirmed => "02",
            Self::InvalidAmount => "04",
            Self::InvalidSignature => "97",
            Self::UnknownError => "99",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::ConfirmSuccess => "Confirm Success",
            Self::OrderNotFound => "Order not found",
            Self::AlreadyConfirmed => "Order already confirmed",
            Self::InvalidAmount => "Invalid amount",
            Self::InvalidSignature => "Invalid signature",
            Self::UnknownError => "Unknown error",
        }
    }
}

/// The JSON body of the IPN answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpnResponse {
    #[serde(rename = "RspCode")]
    pub rsp_code: String,
    #[serde(rename = "Message")]
    pub message: String,
}

impl From<RspCode> for IpnResponse {
    fn from(code: RspCode) -> Self {
        Self {
            rsp_code: code.code().to_owned(),
            message: code.message().to_owned(),
        }
    }
}

impl IpnResponse {
    /// The answer when [`crate::verify`] refused the call; see [`RspCode::for_error`].
    pub fn for_error(error: &VerifyError) -> Self {
        RspCode::for_error(error).into()
    }
}

/// The merchant's view of the payment named by `vnp_TxnRef`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderView {
    /// No payment was requested for this reference.
    NotFound,
    /// Requested and still waiting for VNPAY's result.
    Pending { amount_minor: u64 },
    /// A result was already recorded (paid or failed).
    Settled { amount_minor: u64 },
}

/// What the caller records before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpnOutcome {
    /// Record the payment as succeeded (`PaymentSucceeded`).
    Paid,
    /// Record the payment as failed or cancelled (`PaymentFailed`).
    Failed,
    /// Record nothing.
    Ignore,
}

/// A decision: the outcome to record, then the answer to send once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpnDecision {
    pub outcome: IpnOutcome,
    pub code: RspCode,
}

impl IpnDecision {
    pub fn response(&self) -> IpnResponse {
        self.code.into()
    }
}

/// Decides the answer to a verified IPN call given the merchant's view of the payment.
pub fn decide(verified: &VerifiedReturn, order: OrderView) -> IpnDecision {
    let ignore = |code| IpnDecision {
        outcome: IpnOutcome::Ignore,
        code,
    };
    match order {
        OrderView::NotFound => ignore(RspCode::OrderNotFound),
        OrderView::Pending { amount_minor } | OrderView::Settled { amount_minor }
            if amount_minor != verified.amount_minor =>
        {
            ignore(RspCode::InvalidAmount)
        }
        OrderView::Settled { .. } => ignore(RspCode::AlreadyConfirmed),
        OrderView::Pending { .. } => IpnDecision {
            outcome: if verified.is_paid() {
                IpnOutcome::Paid
            } else {
                IpnOutcome::Failed
            },
            code: RspCode::ConfirmSuccess,
        },
    }
}

/// Verifies and decides in one step, for callers whose order lookup is synchronous.
pub fn handle(
    config: &crate::Config,
    query: &[(String, String)],
    lookup: impl FnOnce(&VerifiedReturn) -> OrderView,
) -> (Option<VerifiedReturn>, IpnDecision) {
    match crate::verify(config, query) {
        Ok(verified) => {
            let decision = decide(&verified, lookup(&verified));
            (Some(verified), decision)
        }
        Err(error) => (
            None,
            IpnDecision {
                outcome: IpnOutcome::Ignore,
                code: RspCode::for_error(&error),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding;

    use crate::test_support::config;

    fn query(secret: &str, code: &str, status: &str, amount: &str) -> Vec<(String, String)> {
        let params = [
            ("vnp_Amount", amount),
            ("vnp_ResponseCode", code),
            ("vnp_TmnCode", "HOLDFAST"),
            ("vnp_TransactionNo", "14000001"),
            ("vnp_TransactionStatus", status),
            ("vnp_TxnRef", "order-7"),
        ];
        form_urlencoded::parse(encoding::signed_query(secret, &params).as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn serialises_with_vnpay_field_names() {
        let json = serde_json::to_string(&IpnResponse::from(RspCode::ConfirmSuccess)).unwrap();
        assert_eq!(json, r#"{"RspCode":"00","Message":"Confirm Success"}"#);
    }

    #[test]
    fn decision_table() {
        use IpnOutcome::*;
        use OrderView::*;
        let pending = Pending {
            amount_minor: 500_000,
        };
        let settled = Settled {
            amount_minor: 500_000,
        };
        // (secret, response code, status, vnp_Amount, order) → (RspCode, Message, outcome)
        let table = [
            (
                "s3cret",
                "00",
                "00",
                "50000000",
                pending,
                "00",
                "Confirm Success",
                Paid,
            ),
            (
                "s3cret",
                "24",
                "02",
                "50000000",
                pending,
                "00",
                "Confirm Success",
                Failed,
            ),
            (
                "s3cret",
                "00",
                "01",
                "50000000",
                pending,
                "00",
                "Confirm Success",
                Failed,
            ),
            (
                "s3cret",
                "00",
                "00",
                "50000000",
                NotFound,
                "01",
                "Order not found",
                Ignore,
            ),
            (
                "s3cret",
                "00",
                "00",
                "50000000",
                settled,
                "02",
                "Order already confirmed",
                Ignore,
            ),
            (
                "s3cret",
                "24",
                "02",
                "50000000",
                settled,
                "02",
                "Order already confirmed",
                Ignore,
            ),
            (
                "s3cret",
                "00",
                "00",
                "40000000",
                pending,
                "04",
                "Invalid amount",
                Ignore,
            ),
            (
                "s3cret",
                "00",
                "00",
                "40000000",
                settled,
                "04",
                "Invalid amount",
                Ignore,
            ),
            (
                "s3cret",
                "00",
                "00",
                "50000001",
                pending,
                "04",
                "Invalid amount",
                Ignore,
            ),
            (
                "wrong",
                "00",
                "00",
                "50000000",
                pending,
                "97",
                "Invalid signature",
                Ignore,
            ),
            (
                "s3cret",
                "00",
                "00",
                "abc",
                pending,
                "99",
                "Unknown error",
                Ignore,
            ),
        ];
        for (i, (secret, code, status, amount, order, rsp, message, outcome)) in
            table.into_iter().enumerate()
        {
            let (_, decision) = handle(&config(), &query(secret, code, status, amount), |_| order);
            let response = decision.response();
            assert_eq!(
                (
                    response.rsp_code.as_str(),
                    response.message.as_str(),
                    decision.outcome
                ),
                (rsp, message, outcome),
                "row {i}"
            );
        }
    }

    #[test]
    fn tampered_calls_answer_97() {
        let good = query("s3cret", "00", "00", "50000000");
        let order = OrderView::Pending {
            amount_minor: 500_000,
        };
        for (key, value) in [
            ("vnp_Amount", "100"),
            ("vnp_TxnRef", "order-8"),
            ("vnp_ResponseCode", "01"),
            ("vnp_TransactionStatus", "01"),
            ("vnp_TransactionNo", "1"),
            ("vnp_SecureHash", "00"),
        ] {
            let mut tampered = good.clone();
            tampered.iter_mut().find(|(k, _)| k == key).unwrap().1 = value.to_owned();
            let (_, decision) = handle(&config(), &tampered, |_| order);
            assert_eq!(decision.code, RspCode::InvalidSignature, "{key}");
        }
    }
}
