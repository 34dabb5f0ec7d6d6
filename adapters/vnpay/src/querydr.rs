//! `querydr`: asking VNPAY for the result of a payment left pending (a lost IPN).
//!
//! The caller posts [`QueryDrBody`] as JSON to VNPAY's API endpoint
//! ([`crate::SANDBOX_API_URL`] in the sandbox) and passes the JSON answer to [`verify_response`].
//! Both hashes are HMAC-SHA512 over fields joined by `|` in the order VNPAY documents for
//! 2.1.0 (as the `vnpay` npm library implements it), not over a query string.

use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;

use crate::verify::parse_amount;
use crate::{Config, VerifyError, datetime, encoding};

/// One status query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryDrRequest {
    /// `vnp_RequestId`: unique per request (at most 32 characters), e.g. a UUID without dashes.
    pub request_id: String,
    /// `vnp_TxnRef` of the payment.
    pub txn_ref: String,
    /// `vnp_TransactionDate`: the `vnp_CreateDate` of the payment.
    pub transaction_date: OffsetDateTime,
    /// `vnp_CreateDate` of this request.
    pub create_date: OffsetDateTime,
    /// `vnp_IpAddr` of the server asking.
    pub ip_addr: IpAddr,
    /// `vnp_OrderInfo`: a description of the query.
    pub order_info: String,
}

/// The JSON body of a `querydr` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryDrBody {
    #[serde(rename = "vnp_RequestId")]
    pub request_id: String,
    #[serde(rename = "vnp_Version")]
    pub version: String,
    #[serde(rename = "vnp_Command")]
    pub command: String,
    #[serde(rename = "vnp_TmnCode")]
    pub tmn_code: String,
    #[serde(rename = "vnp_TxnRef")]
    pub txn_ref: String,
    #[serde(rename = "vnp_OrderInfo")]
    pub order_info: String,
    #[serde(rename = "vnp_TransactionDate")]
    pub transaction_date: String,
    #[serde(rename = "vnp_CreateDate")]
    pub create_date: String,
    #[serde(rename = "vnp_IpAddr")]
    pub ip_addr: String,
    #[serde(rename = "vnp_SecureHash")]
    pub secure_hash: String,
}

impl QueryDrBody {
    /// `vnp_RequestId|vnp_Version|vnp_Command|vnp_TmnCode|vnp_TxnRef|vnp_TransactionDate|
    /// vnp_CreateDate|vnp_IpAddr|vnp_OrderInfo`.
    pub fn hash_data(&self) -> String {
        [
            &self.request_id,
            &self.version,
            &self.command,
            &self.tmn_code,
            &self.txn_ref,
            &self.transaction_date,
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

/// Builds the signed `querydr` body.
pub fn request_body(
    config: &Config,
    request: &QueryDrRequest,
) -> Result<QueryDrBody, crate::PaymentError> {
    let valid_id = (1..=32).contains(&request.request_id.len())
        && request
            .request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric());
    if !valid_id || !crate::payment::is_txn_ref(&request.txn_ref) {
        return Err(crate::PaymentError::InvalidTxnRef);
    }
    if !crate::payment::is_order_info(&request.order_info) {
        return Err(crate::PaymentError::InvalidOrderInfo);
    }
    let mut body = QueryDrBody {
        request_id: request.request_id.clone(),
        version: config.version.clone(),
        command: "querydr".to_owned(),
        tmn_code: config.tmn_code.clone(),
        txn_ref: request.txn_ref.clone(),
        order_info: request.order_info.clone(),
        transaction_date: datetime::format(request.transaction_date),
        create_date: datetime::format(request.create_date),
        ip_addr: request.ip_addr.to_string(),
        secure_hash: String::new(),
    };
    body.secure_hash = encoding::hmac_sha512_hex(&config.hash_secret, &body.hash_data());
    Ok(body)
}

/// VNPAY's JSON answer to `querydr`. VNPAY sends strings; numbers are accepted too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryDrResponse {
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
    /// VND × 100, as in the payment URL.
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
    #[serde(rename = "vnp_PromotionCode", deserialize_with = "text")]
    pub promotion_code: String,
    #[serde(rename = "vnp_PromotionAmount", deserialize_with = "text")]
    pub promotion_amount: String,
    #[serde(rename = "vnp_SecureHash", deserialize_with = "text")]
    pub secure_hash: String,
}

pub(crate) fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        String(String),
        Number(serde_json::Number),
        Null(()),
    }
    Ok(match Text::deserialize(deserializer)? {
        Text::String(s) => s,
        Text::Number(n) => n.to_string(),
        Text::Null(()) => String::new(),
    })
}

impl QueryDrResponse {
    /// `vnp_ResponseId|vnp_Command|vnp_ResponseCode|vnp_Message|vnp_TmnCode|vnp_TxnRef|
    /// vnp_Amount|vnp_BankCode|vnp_PayDate|vnp_TransactionNo|vnp_TransactionType|
    /// vnp_TransactionStatus|vnp_OrderInfo|vnp_PromotionCode|vnp_PromotionAmount`.
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
            &self.promotion_code,
            &self.promotion_amount,
        ]
        .map(String::as_str)
        .join("|")
    }

    /// Sets `vnp_SecureHash`, as VNPAY (or the simulator) does.
    pub fn sign(&mut self, hash_secret: &str) {
        self.secure_hash = encoding::hmac_sha512_hex(hash_secret, &self.hash_data());
    }
}

/// A verified `querydr` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryDrResult {
    /// `00` found; `91` no such transaction; `94` duplicate request; `97` bad checksum; `99`
    /// other errors.
    pub response_code: String,
    pub txn_ref: String,
    /// `vnp_Amount` ÷ 100, when VNPAY found the transaction.
    pub amount_minor: Option<u64>,
    /// `00` paid, `01` unfinished, `02` failed, others as VNPAY documents.
    pub transaction_status: String,
    /// `01` a payment, `02` refunded in full, `03` partly refunded.
    pub transaction_type: String,
    pub transaction_no: Option<String>,
    pub bank_code: Option<String>,
    pub pay_date: Option<OffsetDateTime>,
}

impl QueryDrResult {
    pub fn is_paid(&self) -> bool {
        self.response_code == "00" && self.transaction_status == "00"
    }

    /// VNPAY knows nothing of the payment: the buyer never reached the payment page.
    pub fn is_not_found(&self) -> bool {
        self.response_code == "91"
    }

    /// Still in progress at VNPAY: ask again later.
    pub fn is_pending(&self) -> bool {
        self.response_code == "00" && self.transaction_status == "01"
    }
}

/// Verifies VNPAY's answer (signature in constant time, merchant) and parses it.
pub fn verify_response(
    config: &Config,
    response: &QueryDrResponse,
) -> Result<QueryDrResult, VerifyError> {
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
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    let amount_minor = match response.amount.as_str() {
        "" => None,
        amount => Some(parse_amount(amount)?),
    };
    let pay_date = match response.pay_date.as_str() {
        "" => None,
        text => Some(datetime::parse(text).ok_or(VerifyError::InvalidField("vnp_PayDate"))?),
    };
    Ok(QueryDrResult {
        response_code: response.response_code.clone(),
        txn_ref: response.txn_ref.clone(),
        amount_minor,
        transaction_status: response.transaction_status.clone(),
        transaction_type: response.transaction_type.clone(),
        transaction_no: non_empty(&response.transaction_no),
        bank_code: non_empty(&response.bank_code),
        pay_date,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    use crate::test_support::config;

    #[test]
    fn request_hash_follows_the_documented_order() {
        let body = request_body(
            &config(),
            &QueryDrRequest {
                request_id: "a1b2c3".to_owned(),
                txn_ref: "order-7".to_owned(),
                transaction_date: datetime!(2025-01-01 05:00:00 UTC),
                create_date: datetime!(2025-01-01 05:20:00 UTC),
                ip_addr: "10.0.0.1".parse().unwrap(),
                order_info: "Query order-7".to_owned(),
            },
        )
        .unwrap();
        let data = "a1b2c3|2.1.0|querydr|HOLDFAST|order-7|20250101120000|20250101122000|10.0.0.1|Query order-7";
        assert_eq!(body.hash_data(), data);
        // python3 -c 'import hmac,hashlib,sys; print(hmac.new(b"s3cret", sys.argv[1].encode(), hashlib.sha512).hexdigest())' '<data>'
        assert_eq!(
            body.secure_hash,
            "67e7c4d74917d8c5b0ceba1f5070c8ee3ff53a225940923fd01bf190f181f6a3\
             a598aa4d85cf1c0198fa4be970a13010c8ba0f672e59f1af14425a2721e11134"
        );
        assert!(body.verify("s3cret"));
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(json["vnp_Command"], "querydr");
        assert_eq!(json["vnp_TransactionDate"], "20250101120000");
    }

    fn answer() -> QueryDrResponse {
        let mut response = QueryDrResponse {
            response_id: "r1".to_owned(),
            command: "querydr".to_owned(),
            response_code: "00".to_owned(),
            message: "QueryDR Success".to_owned(),
            tmn_code: "HOLDFAST".to_owned(),
            txn_ref: "order-7".to_owned(),
            amount: "50000000".to_owned(),
            bank_code: "NCB".to_owned(),
            pay_date: "20250101121500".to_owned(),
            transaction_no: "14000001".to_owned(),
            transaction_type: "01".to_owned(),
            transaction_status: "00".to_owned(),
            order_info: "Holdfast order order-7".to_owned(),
            ..QueryDrResponse::default()
        };
        response.sign("s3cret");
        response
    }

    #[test]
    fn verifies_a_signed_answer() {
        let result = verify_response(&config(), &answer()).unwrap();
        assert!(result.is_paid());
        assert_eq!(result.amount_minor, Some(500_000));
        assert_eq!(result.pay_date, Some(datetime!(2025-01-01 05:15:00 UTC)));
    }

    #[test]
    fn refuses_altered_or_unsigned_answers() {
        let mut altered = answer();
        altered.transaction_status = "02".to_owned();
        assert_eq!(
            verify_response(&config(), &altered),
            Err(VerifyError::BadSignature)
        );
        let mut unsigned = answer();
        unsigned.secure_hash.clear();
        assert_eq!(
            verify_response(&config(), &unsigned),
            Err(VerifyError::MissingSignature)
        );
    }

    #[test]
    fn accepts_numbers_where_vnpay_docs_show_strings() {
        let json = serde_json::json!({
            "vnp_ResponseCode": "91", "vnp_Amount": 100, "vnp_TmnCode": "HOLDFAST",
            "vnp_TxnRef": null, "vnp_Unknown": "ignored"
        });
        let response: QueryDrResponse = serde_json::from_value(json).unwrap();
        assert_eq!(response.amount, "100");
        assert_eq!(response.txn_ref, "");
    }
}
