//! `refund`: paying a settled payment back, in full or in part, through VNPAY's merchant API.
//!
//! The caller posts [`RefundBody`] as JSON to the same API endpoint as `querydr`
//! ([`crate::SANDBOX_API_URL`] in the sandbox) and passes the JSON answer to
//! [`verify_response`]. Both hashes are HMAC-SHA512 over fields joined by `|` in the order
//! VNPAY documents for 2.1.0 (as the `vnpay` npm library implements it). `vnp_RequestId` is
//! unique per attempt: a retry is a new request.
//!
//! Response codes (VNPAY's refund table): `00` accepted; `02` the refunds would exceed the
//! amount paid; `03` malformed request; `04` a full refund after a partial one; `13` only
//! partial refunds are allowed; `91` no such transaction; `94` this refund was requested
//! before and VNPAY is processing it; `95` the payment failed at VNPAY; `97` bad checksum;
//! `99` other errors.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::querydr::text;
use crate::verify::parse_amount;
use crate::{Config, VerifyError, datetime, encoding};

/// `vnp_TransactionType` of a refund.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundKind {
    /// `02`: the whole amount paid, with no refund before.
    Full,
    /// `03`: part of it (or the rest after earlier partial refunds).
    Partial,
}

impl RefundKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::Full => "02",
            Self::Partial => "03",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "02" => Some(Self::Full),
            "03" => Some(Self::Partial),
            _ => None,
        }
    }
}

/// One refund attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// `vnp_RequestId`: unique per attempt (1-32 letters and digits), e.g. a UUID without dashes.
    pub request_id: String,
    pub kind: RefundKind,
    /// `vnp_TxnRef` of the payment.
    pub txn_ref: String,
    /// What goes back, in VND (sent × 100).
    pub amount_minor: u64,
    /// `vnp_TransactionNo` of the payment at VNPAY; `0` when unknown, as the npm library sends.
    pub transaction_no: Option<String>,
    /// `vnp_TransactionDate`: the `vnp_CreateDate` of the payment.
    pub transaction_date: OffsetDateTime,
    /// `vnp_CreateBy`: who asked for the refund at the merchant.
    pub create_by: String,
    /// `vnp_CreateDate` of this request.
    pub create_date: OffsetDateTime,
    /// `vnp_IpAddr` of the server asking.
    pub ip_addr: IpAddr,
    /// `vnp_OrderInfo`: a description of the refund.
    pub order_info: String,
}

/// The JSON body of a `refund` request. VNPAY takes every field as a string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundBody {
    #[serde(rename = "vnp_RequestId", deserialize_with = "text")]
    pub request_id: String,
    #[serde(rename = "vnp_Version", deserialize_with = "text")]
    pub version: String,
    #[serde(rename = "vnp_Command", deserialize_with = "text")]
    pub command: String,
    #[serde(rename = "vnp_TmnCode", deserialize_with = "text")]
    pub tmn_code: String,
    #[serde(rename = "vnp_TransactionType", deserialize_with = "text")]
    pub transaction_type: String,
    #[serde(rename = "vnp_TxnRef", deserialize_with = "text")]
    pub txn_ref: String,
    /// VND × 100.
    #[serde(rename = "vnp_Amount", deserialize_with = "text")]
    pub amount: String,
    #[serde(rename = "vnp_TransactionNo", deserialize_with = "text")]
    pub transaction_no: String,
    #[serde(rename = "vnp_TransactionDate", deserialize_with = "text")]
    pub transaction_date: String,
    #[serde(rename = "vnp_CreateBy", deserialize_with = "text")]
    pub create_by: String,
    #[serde(rename = "vnp_CreateDate", deserialize_with = "text")]
    pub create_date: String,
    #[serde(rename = "vnp_IpAddr", deserialize_with = "text")]
    pub ip_addr: String,
    #[serde(rename = "vnp_OrderInfo", deserialize_with = "text")]
    pub order_info: String,
    #[serde(rename = "vnp_SecureHash", deserialize_with = "text")]
    pub secure_hash: String,
}

impl RefundBody {
    /// `vnp_RequestId|vnp_Version|vnp_Command|vnp_TmnCode|vnp_TransactionType|vnp_TxnRef|
    /// vnp_Amount|vnp_TransactionNo|vnp_TransactionDate|vnp_CreateBy|vnp_CreateDate|
    /// vnp_IpAddr|vnp_OrderInfo`.
    pub fn hash_data(&self) -> String {
        [
            &self.request_id,
            &self.version,
            &self.command,
            &self.tmn_code,
            &self.transaction_type,
            &self.txn_ref,
            &self.amount,
            &self.transaction_no,
            &self.transaction_date,
            &self.create_by,
            &self.create_date,
            &self.ip_addr,
            &self.order_info,
        ]
        .map(String::as_str)
        .join("|")
    }

    /// Whether `vnp_SecureHash` is right (constant time); what VNPAY, or the simulator, checks.
    pub fn verify(&self, hash_secret: &str) -> bool {
        encoding::verify_hmac_sha512_hex(hash_secret, &self.hash_data(), &self.secure_hash)
    }
}

fn is_create_by(text: &str) -> bool {
    (1..=255).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// Builds the signed `refund` body.
pub fn request_body(
    config: &Config,
    request: &RefundRequest,
) -> Result<RefundBody, crate::PaymentError> {
    let valid_id = (1..=32).contains(&request.request_id.len())
        && request
            .request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    if !valid_id || !crate::payment::is_txn_ref(&request.txn_ref) {
        return Err(crate::PaymentError::InvalidTxnRef);
    }
    if !crate::payment::is_order_info(&request.order_info) || !is_create_by(&request.create_by) {
        return Err(crate::PaymentError::InvalidOrderInfo);
    }
    let amount = request
        .amount_minor
        .checked_mul(100)
        .filter(|_| request.amount_minor > 0)
        .ok_or(crate::PaymentError::InvalidAmount)?;
    let transaction_no = match request.transaction_no.as_deref() {
        None | Some("") => "0".to_owned(),
        Some(no) if no.bytes().all(|b| b.is_ascii_alphanumeric()) && no.len() <= 32 => {
            no.to_owned()
        }
        Some(_) => return Err(crate::PaymentError::InvalidTxnRef),
    };
    let mut body = RefundBody {
        request_id: request.request_id.clone(),
        version: config.version.clone(),
        command: "refund".to_owned(),
        tmn_code: config.tmn_code.clone(),
        transaction_type: request.kind.code().to_owned(),
        txn_ref: request.txn_ref.clone(),
        amount: amount.to_string(),
        transaction_no,
        transaction_date: datetime::format(request.transaction_date),
        create_by: request.create_by.clone(),
        create_date: datetime::format(request.create_date),
        ip_addr: request.ip_addr.to_string(),
        order_info: request.order_info.clone(),
        secure_hash: String::new(),
    };
    body.secure_hash = encoding::hmac_sha512_hex(&config.hash_secret, &body.hash_data());
    Ok(body)
}

/// VNPAY's JSON answer to `refund`. VNPAY sends strings; numbers are accepted too.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefundResponse {
    #[serde(rename = "vnp_ResponseId", deserialize_with = "text")]
    pub response_id: String,
    #[serde(rename = "vnp_Command", deserialize_with = "text")]
    pub command: String,
    #[serde(rename = "vnp_ResponseCode", deserialize_with = "text")]
    pub response_code: String,
    #[serde(rename = "vnp_Message", deserialize_with = "text")]
    pub message: String,
    #[serde(rename = "vnp_TmnCode", deserialize_with = "text")]
    pub tmn_code: String,
    #[serde(rename = "vnp_TxnRef", deserialize_with = "text")]
    pub txn_ref: String,
    /// VND × 100: the amount refunded.
    #[serde(rename = "vnp_Amount", deserialize_with = "text")]
    pub amount: String,
    #[serde(rename = "vnp_BankCode", deserialize_with = "text")]
    pub bank_code: String,
    #[serde(rename = "vnp_PayDate", deserialize_with = "text")]
    pub pay_date: String,
    #[serde(rename = "vnp_TransactionNo", deserialize_with = "text")]
    pub transaction_no: String,
    #[serde(rename = "vnp_TransactionType", deserialize_with = "text")]
    pub transaction_type: String,
    #[serde(rename = "vnp_TransactionStatus", deserialize_with = "text")]
    pub transaction_status: String,
    #[serde(rename = "vnp_OrderInfo", deserialize_with = "text")]
    pub order_info: String,
    #[serde(rename = "vnp_SecureHash", deserialize_with = "text")]
    pub secure_hash: String,
}

impl RefundResponse {
    /// `vnp_ResponseId|vnp_Command|vnp_ResponseCode|vnp_Message|vnp_TmnCode|vnp_TxnRef|
    /// vnp_Amount|vnp_BankCode|vnp_PayDate|vnp_TransactionNo|vnp_TransactionType|
    /// vnp_TransactionStatus|vnp_OrderInfo`.
    pub fn hash_data(&self) -> String {
        [
            &self.response_id,
            &self.command,
            &self.response_code,
            &self.message,
            &self.tmn_code,
            &self.txn_ref,
            &self.amount,
            &self.bank_code,
            &self.pay_date,
            &self.transaction_no,
            &self.transaction_type,
            &self.transaction_status,
            &self.order_info,
        ]
        .map(String::as_str)
        .join("|")
    }

    /// Sets `vnp_SecureHash`, as VNPAY (or the simulator) does.
    pub fn sign(&mut self, hash_secret: &str) {
        self.secure_hash = encoding::hmac_sha512_hex(hash_secret, &self.hash_data());
    }
}

/// What a refund attempt came to, as the merchant acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundOutcome {
    /// `00`: VNPAY took the refund.
    Accepted,
    /// `94`: VNPAY has this refund already (an earlier attempt whose answer was lost).
    AlreadyRequested,
    /// `02`, `03`, `04`, `13`, `91`, `95`, `97`: VNPAY refuses it; asking again the same way
    /// changes nothing.
    Refused,
    /// `99` or anything else: try again later.
    Error,
}

impl RefundOutcome {
    pub fn of(response_code: &str) -> Self {
        match response_code {
            "00" => Self::Accepted,
            "94" => Self::AlreadyRequested,
            "02" | "03" | "04" | "13" | "91" | "95" | "97" => Self::Refused,
            _ => Self::Error,
        }
    }
}

/// A verified `refund` answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundResult {
    pub response_code: String,
    pub message: String,
    pub outcome: RefundOutcome,
    pub txn_ref: String,
    /// `vnp_Amount` ÷ 100, when VNPAY sent one.
    pub amount_minor: Option<u64>,
    /// VNPAY's number of the refund transaction.
    pub transaction_no: Option<String>,
}

/// Verifies VNPAY's answer (signature in constant time, merchant) and parses it. VNPAY signs
/// its answers to well-formed requests; an unsigned answer is refused as
/// [`VerifyError::MissingSignature`] (the caller retries: the refund may or may not have
/// been taken, and the next attempt finds out).
pub fn verify_response(
    config: &Config,
    response: &RefundResponse,
) -> Result<RefundResult, VerifyError> {
    if response.secure_hash.is_empty() {
        return Err(VerifyError::MissingSignature);
    }
    if !encoding::verify_hmac_sha512_hex(
        &config.hash_secret,
        &response.hash_data(),
        &response.secure_hash,
    ) {
        return Err(VerifyError::BadSignature);
    }
    if response.tmn_code != config.tmn_code {
        return Err(VerifyError::WrongMerchant);
    }
    let amount_minor = match response.amount.as_str() {
        "" => None,
        amount => Some(parse_amount(amount)?),
    };
    Ok(RefundResult {
        response_code: response.response_code.clone(),
        message: response.message.clone(),
        outcome: RefundOutcome::of(&response.response_code),
        txn_ref: response.txn_ref.clone(),
        amount_minor,
        transaction_no: (!response.transaction_no.is_empty())
            .then(|| response.transaction_no.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    use crate::test_support::config;

    fn request() -> RefundRequest {
        RefundRequest {
            request_id: "r1b2c3".to_owned(),
            kind: RefundKind::Partial,
            txn_ref: "order-7".to_owned(),
            amount_minor: 450_000,
            transaction_no: Some("14000001".to_owned()),
            transaction_date: datetime!(2025-01-01 05:00:00 UTC),
            create_by: "holdfast".to_owned(),
            create_date: datetime!(2025-01-02 05:20:00 UTC),
            ip_addr: "10.0.0.1".parse().unwrap(),
            order_info: "Refund order-7".to_owned(),
        }
    }

    #[test]
    fn request_hash_follows_the_documented_order() {
        let body = request_body(&config(), &request()).unwrap();
        let data = "r1b2c3|2.1.0|refund|HOLDFAST|03|order-7|45000000|14000001|20250101120000|\
                    holdfast|20250102122000|10.0.0.1|Refund order-7";
        assert_eq!(body.hash_data(), data);
        // python3 -c 'import hmac,hashlib,sys; print(hmac.new(b"s3cret", sys.argv[1].encode(), hashlib.sha512).hexdigest())' '<data>'
        assert_eq!(body.secure_hash, VECTOR_PARTIAL);
        assert!(body.verify("s3cret"));
        assert!(!body.verify("other"));
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["vnp_Command"], "refund");
        assert_eq!(json["vnp_TransactionType"], "03");
        assert_eq!(json["vnp_Amount"], "45000000");
        assert_eq!(json["vnp_CreateBy"], "holdfast");
        let back: RefundBody = serde_json::from_value(json).unwrap();
        assert_eq!(back, body);
    }

    const VECTOR_PARTIAL: &str = "\
        05f1ba5789fcbc82635899be5e1c1418c52b9c00840dfe22201569f7e1a2ffc0\
        a161f3d8eb0e6fb025c1d51f2f094f8b8fc443cb74aede9a3d7471e8e0b8ad4a";

    #[test]
    fn full_refunds_and_unknown_transaction_numbers() {
        let mut r = request();
        r.kind = RefundKind::Full;
        r.transaction_no = None;
        let body = request_body(&config(), &r).unwrap();
        assert_eq!(body.transaction_type, "02");
        assert_eq!(body.transaction_no, "0");
        assert_eq!(
            body.hash_data(),
            "r1b2c3|2.1.0|refund|HOLDFAST|02|order-7|45000000|0|20250101120000|holdfast|\
             20250102122000|10.0.0.1|Refund order-7"
        );
        assert_eq!(body.secure_hash, VECTOR_FULL);
    }

    const VECTOR_FULL: &str = "\
        062a7ec734a6cf285eb7ed31a2ea78bca8070d5746fc52f8a57f29dfb344b1fa\
        3866f65c6b51d181bf1f775170bd0a9b66992fa6db7dee55d4230532f7160e6d";

    #[test]
    fn refuses_what_vnpay_would_refuse() {
        let bad = [
            RefundRequest {
                amount_minor: 0,
                ..request()
            },
            RefundRequest {
                request_id: "with-dash".to_owned(),
                ..request()
            },
            RefundRequest {
                request_id: "x".repeat(33),
                ..request()
            },
            RefundRequest {
                order_info: "Hoàn tiền".to_owned(),
                ..request()
            },
            RefundRequest {
                create_by: String::new(),
                ..request()
            },
            RefundRequest {
                transaction_no: Some("14|1".to_owned()),
                ..request()
            },
        ];
        for r in bad {
            assert!(request_body(&config(), &r).is_err(), "{r:?}");
        }
    }

    fn answer(code: &str) -> RefundResponse {
        let mut response = RefundResponse {
            response_id: "a1".to_owned(),
            command: "refund".to_owned(),
            response_code: code.to_owned(),
            message: "Refund success".to_owned(),
            tmn_code: "HOLDFAST".to_owned(),
            txn_ref: "order-7".to_owned(),
            amount: "45000000".to_owned(),
            bank_code: "NCB".to_owned(),
            pay_date: "20250102122001".to_owned(),
            transaction_no: "14000002".to_owned(),
            transaction_type: "03".to_owned(),
            transaction_status: "05".to_owned(),
            order_info: "Refund order-7".to_owned(),
            secure_hash: String::new(),
        };
        response.sign("s3cret");
        response
    }

    #[test]
    fn response_hash_follows_the_documented_order() {
        assert_eq!(
            answer("00").hash_data(),
            "a1|refund|00|Refund success|HOLDFAST|order-7|45000000|NCB|20250102122001|\
             14000002|03|05|Refund order-7"
        );
        assert_eq!(answer("00").secure_hash, VECTOR_RESPONSE);
    }

    const VECTOR_RESPONSE: &str = "\
        a917a6a220037aa583b698f3cd4ffe39c8b6f70c5e3df7566309dc58fd803f84\
        bc4809b5cccb6cc4179d9b858729d6610cd93c511e68c9f7ef5b423fd9ab0068";

    #[test]
    fn verifies_signed_answers_and_classifies_them() {
        let result = verify_response(&config(), &answer("00")).unwrap();
        assert_eq!(result.outcome, RefundOutcome::Accepted);
        assert_eq!(result.amount_minor, Some(450_000));
        assert_eq!(result.transaction_no.as_deref(), Some("14000002"));
        for (code, outcome) in [
            ("94", RefundOutcome::AlreadyRequested),
            ("02", RefundOutcome::Refused),
            ("04", RefundOutcome::Refused),
            ("91", RefundOutcome::Refused),
            ("97", RefundOutcome::Refused),
            ("99", RefundOutcome::Error),
            ("", RefundOutcome::Error),
        ] {
            assert_eq!(
                verify_response(&config(), &answer(code)).unwrap().outcome,
                outcome,
                "{code:?}"
            );
        }
    }

    #[test]
    fn refuses_altered_unsigned_or_foreign_answers() {
        let mut altered = answer("02");
        altered.response_code = "00".to_owned();
        assert_eq!(
            verify_response(&config(), &altered),
            Err(VerifyError::BadSignature)
        );
        let mut unsigned = answer("00");
        unsigned.secure_hash.clear();
        assert_eq!(
            verify_response(&config(), &unsigned),
            Err(VerifyError::MissingSignature)
        );
        let mut foreign = answer("00");
        foreign.tmn_code = "OTHER".to_owned();
        foreign.sign("s3cret");
        assert_eq!(
            verify_response(&config(), &foreign),
            Err(VerifyError::WrongMerchant)
        );
        let json =
            serde_json::json!({"vnp_ResponseCode": 94, "vnp_Amount": 100, "vnp_TxnRef": null});
        let parsed: RefundResponse = serde_json::from_value(json).unwrap();
        assert_eq!(parsed.response_code, "94");
        assert_eq!(parsed.txn_ref, "");
    }
}
