//! Verifying what VNPAY sends back, to the return URL and to the IPN webhook (same parameters).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::{Config, datetime, encoding};

/// A return or IPN call whose signature checked out, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedReturn {
    /// `vnp_TxnRef`: the order id.
    pub txn_ref: String,
    /// `vnp_Amount` ÷ 100, in VND.
    pub amount_minor: u64,
    /// `vnp_ResponseCode`: `00` success, `24` cancelled by the buyer, others are failures.
    pub response_code: String,
    /// `vnp_TransactionStatus`: `00` success, `01` unfinished, `02` failed.
    pub transaction_status: String,
    /// `vnp_TransactionNo`: VNPAY's transaction number (`0` when nothing was paid).
    pub transaction_no: Option<String>,
    /// `vnp_BankCode`.
    pub bank_code: Option<String>,
    /// `vnp_BankTranNo`.
    pub bank_tran_no: Option<String>,
    /// `vnp_CardType`.
    pub card_type: Option<String>,
    /// `vnp_PayDate`.
    pub pay_date: Option<OffsetDateTime>,
    /// `vnp_OrderInfo`, as sent in the payment request.
    pub order_info: Option<String>,
}

impl VerifiedReturn {
    /// Paid only when both `vnp_ResponseCode` and `vnp_TransactionStatus` are `00`. The caller
    /// still checks the amount against the order.
    pub fn is_paid(&self) -> bool {
        self.response_code == "00" && self.transaction_status == "00"
    }
}

/// Why a return or IPN call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("vnp_SecureHash is missing")]
    MissingSignature,
    #[error("vnp_SecureHash does not match the parameters")]
    BadSignature,
    /// Two values for one key: which one was signed is ambiguous, so refuse as forged.
    #[error("parameter {0} appears more than once")]
    DuplicateParameter(String),
    #[error("{0} is missing")]
    MissingField(&'static str),
    #[error("{0} is malformed")]
    InvalidField(&'static str),
    #[error("vnp_Amount {0} is not a whole number of VND (× 100)")]
    AmountNotWhole(u64),
    #[error("vnp_TmnCode is not this merchant's")]
    WrongMerchant,
}

impl Error {
    /// Whether the parameters may have been forged or altered (IPN `97`), as opposed to signed
    /// but unusable.
    pub fn is_signature_failure(&self) -> bool {
        matches!(
            self,
            Self::MissingSignature | Self::BadSignature | Self::DuplicateParameter(_)
        )
    }
}

/// Verifies the query of a return or IPN call and parses it.
///
/// The hash is recomputed over every `vnp_*` parameter except `vnp_SecureHash` and
/// `vnp_SecureHashType`, empty values included (as VNPAY's PHP IPN sample does), and compared
/// in constant time. Parameters without the `vnp_` prefix are ignored, as VNPAY's samples do.
pub fn verify(config: &Config, query: &[(String, String)]) -> Result<VerifiedReturn, Error> {
    let params = verify_signature(&config.hash_secret, query)?;
    let field = |name: &'static str| params.get(name).copied().filter(|v| !v.is_empty());
    let required = |name: &'static str| field(name).ok_or(Error::MissingField(name));
    let optional = |name: &'static str| field(name).map(str::to_owned);

    if required("vnp_TmnCode")? != config.tmn_code {
        return Err(Error::WrongMerchant);
    }
    let txn_ref = required("vnp_TxnRef")?;
    if !crate::payment::is_txn_ref(txn_ref) {
        return Err(Error::InvalidField("vnp_TxnRef"));
    }
    let amount_minor = parse_amount(required("vnp_Amount")?)?;
    let pay_date = match field("vnp_PayDate") {
        Some(text) => Some(datetime::parse(text).ok_or(Error::InvalidField("vnp_PayDate"))?),
        None => None,
    };
    Ok(VerifiedReturn {
        txn_ref: txn_ref.to_owned(),
        amount_minor,
        response_code: required("vnp_ResponseCode")?.to_owned(),
        transaction_status: required("vnp_TransactionStatus")?.to_owned(),
        transaction_no: optional("vnp_TransactionNo"),
        bank_code: optional("vnp_BankCode"),
        bank_tran_no: optional("vnp_BankTranNo"),
        card_type: optional("vnp_CardType"),
        pay_date,
        order_info: optional("vnp_OrderInfo"),
    })
}

/// Checks `vnp_SecureHash` over the other `vnp_*` parameters; returns them by key.
pub(crate) fn verify_signature<'q>(
    hash_secret: &str,
    query: &'q [(String, String)],
) -> Result<BTreeMap<&'q str, &'q str>, Error> {
    let mut params = BTreeMap::new();
    let mut hash = None;
    for (key, value) in query {
        if !key.starts_with("vnp_") {
            continue;
        }
        let slot = match key.as_str() {
            "vnp_SecureHash" => hash.replace(value.as_str()).map(|_| ()),
            "vnp_SecureHashType" => continue,
            _ => params.insert(key.as_str(), value.as_str()).map(|_| ()),
        };
        if slot.is_some() {
            return Err(Error::DuplicateParameter(key.clone()));
        }
    }
    let hash = hash.ok_or(Error::MissingSignature)?;
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, *v)).collect();
    let data = encoding::sign_data(&pairs);
    if encoding::verify_hmac_sha512_hex(hash_secret, &data, hash) {
        Ok(params)
    } else {
        Err(Error::BadSignature)
    }
}

/// `vnp_Amount` is VND × 100.
pub(crate) fn parse_amount(text: &str) -> Result<u64, Error> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::InvalidField("vnp_Amount"));
    }
    let raw: u64 = text
        .parse()
        .map_err(|_| Error::InvalidField("vnp_Amount"))?;
    if !raw.is_multiple_of(100) {
        return Err(Error::AmountNotWhole(raw));
    }
    Ok(raw / 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Locale, PaymentRequest, payment_url};
    use time::macros::datetime;

    fn config(secret: &str, tmn_code: &str) -> Config {
        Config {
            tmn_code: tmn_code.to_owned(),
            hash_secret: secret.to_owned(),
            pay_url: "http://127.0.0.1:9/paymentv2/vpcpay.html".to_owned(),
            return_url: "http://127.0.0.1:8080/v1/payments/vnpay/return".to_owned(),
            ipn_url: None,
            version: crate::VERSION.to_owned(),
            locale: Locale::Vn,
        }
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The return-URL fixture of the `vnpay` npm library (github.com/lehuygiang28/vnpay,
    /// `test/verify-return-url.test.ts`, secret `test_secret`), whose hash was computed by
    /// that library independently of this crate.
    fn public_vector(response_code: &str, hash: &str) -> Vec<(String, String)> {
        owned(&[
            ("vnp_Amount", "1000000"),
            ("vnp_BankCode", "NCB"),
            ("vnp_BankTranNo", "VNP14422574"),
            ("vnp_CardType", "ATM"),
            (
                "vnp_OrderInfo",
                "Thanh toan don hang 2024-05-21T02:17:31.249Z",
            ),
            ("vnp_PayDate", "20240521091806"),
            ("vnp_ResponseCode", response_code),
            ("vnp_TmnCode", "TEST_TMN_CODE"),
            ("vnp_TransactionNo", "14422574"),
            ("vnp_TransactionStatus", "00"),
            ("vnp_TxnRef", "1716257871703"),
            ("vnp_SecureHash", hash),
        ])
    }

    const PUBLIC_HASH_PAID: &str = "649982421beb422556a1374713c74e58e716ecbd05007c0c0e1f7effdfaf361d\
                                    bf146889ca446139afe11b9954c4d5c486e99e3b86fcfab6957f29eb0be72895";
    const PUBLIC_HASH_FAILED: &str = "503194f6d93b57b357b2d1d09742565e67e86d771352c5dca4fc8d39df3d392c\
                                      6b3809add9405f97cfb9631f445e36c80656cfbf47eac67d97fa165865c13e1b";

    #[test]
    fn verifies_the_public_vnpay_library_vectors() {
        let config = config("test_secret", "TEST_TMN_CODE");
        let paid = verify(&config, &public_vector("00", PUBLIC_HASH_PAID)).unwrap();
        assert!(paid.is_paid());
        assert_eq!(paid.txn_ref, "1716257871703");
        assert_eq!(paid.amount_minor, 10_000);
        assert_eq!(paid.transaction_no.as_deref(), Some("14422574"));
        assert_eq!(paid.bank_code.as_deref(), Some("NCB"));
        assert_eq!(paid.pay_date, Some(datetime!(2024-05-21 02:18:06 UTC)));

        let failed = verify(&config, &public_vector("99", PUBLIC_HASH_FAILED)).unwrap();
        assert!(!failed.is_paid());
        assert_eq!(failed.response_code, "99");

        // The library's "invalid secure hash" case: code changed, hash kept.
        assert_eq!(
            verify(&config, &public_vector("99", PUBLIC_HASH_PAID)),
            Err(Error::BadSignature)
        );
    }

    fn signed(secret: &str, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let query = encoding::signed_query(secret, pairs);
        form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn result_params<'a>(
        code: &'a str,
        status: &'a str,
        amount: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("vnp_Amount", amount),
            ("vnp_BankCode", "NCB"),
            ("vnp_OrderInfo", "Order 42: 2 seats"),
            ("vnp_PayDate", "20250101120000"),
            ("vnp_ResponseCode", code),
            ("vnp_TmnCode", "HOLDFAST"),
            ("vnp_TransactionNo", "14000001"),
            ("vnp_TransactionStatus", status),
            ("vnp_TxnRef", "0190a5e2-7c1e-7d3a-9f00-000000000042"),
        ]
    }

    #[test]
    fn paid_only_when_both_codes_are_00() {
        let config = config("s3cret", "HOLDFAST");
        for (code, status, paid) in [
            ("00", "00", true),
            ("24", "02", false),
            ("00", "01", false),
            ("00", "02", false),
            ("07", "00", false),
            ("51", "02", false),
        ] {
            let query = signed("s3cret", &result_params(code, status, "50000000"));
            let verified = verify(&config, &query).unwrap();
            assert_eq!(verified.is_paid(), paid, "{code}/{status}");
            assert_eq!(verified.amount_minor, 500_000);
        }
    }

    #[test]
    fn amount_must_be_whole_vnd() {
        let config = config("s3cret", "HOLDFAST");
        let query = signed("s3cret", &result_params("00", "00", "50000050"));
        assert_eq!(
            verify(&config, &query),
            Err(Error::AmountNotWhole(50_000_050))
        );
        for bad in ["-100", "1e5", "", "99999999999999999999999"] {
            let query = signed("s3cret", &result_params("00", "00", bad));
            let err = verify(&config, &query).unwrap_err();
            assert!(!err.is_signature_failure(), "{bad:?}: {err}");
        }
    }

    #[test]
    fn round_trip_from_payment_url() {
        let config = config("s3cret", "HOLDFAST");
        let request = PaymentRequest {
            txn_ref: "order-1".to_owned(),
            amount_minor: 750_000,
            order_info: "Holdfast order order-1".to_owned(),
            ip_addr: "::1".parse().unwrap(),
            create_date: datetime!(2025-03-01 10:00:00 UTC),
            expire_date: datetime!(2025-03-01 10:15:00 UTC),
            bank_code: None,
            locale: None,
        };
        let url = payment_url(&config, &request).unwrap();
        let query: Vec<(String, String)> =
            form_urlencoded::parse(url.split_once('?').unwrap().1.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        // The payment request has no result codes, so it verifies but does not parse.
        assert_eq!(
            verify(&config, &query),
            Err(Error::MissingField("vnp_ResponseCode"))
        );
        assert!(verify_signature("s3cret", &query).is_ok());
        assert_eq!(
            verify_signature("other", &query).unwrap_err(),
            Error::BadSignature
        );
    }

    #[test]
    fn every_altered_parameter_breaks_the_signature() {
        let config = config("s3cret", "HOLDFAST");
        let query = signed("s3cret", &result_params("00", "00", "50000000"));
        assert!(verify(&config, &query).is_ok());
        for i in 0..query.len() {
            let mut tampered = query.clone();
            tampered[i].1.push('0');
            let err = verify(&config, &tampered).unwrap_err();
            assert!(err.is_signature_failure(), "{}: {err}", query[i].0);

            let mut dropped = query.clone();
            dropped.remove(i);
            let err = verify(&config, &dropped).unwrap_err();
            assert!(err.is_signature_failure(), "without {}: {err}", query[i].0);
        }
        let mut added = query.clone();
        added.push(("vnp_Extra".to_owned(), "1".to_owned()));
        assert_eq!(verify(&config, &added), Err(Error::BadSignature));

        let mut duplicated = query.clone();
        duplicated.push(("vnp_Amount".to_owned(), "1".to_owned()));
        assert!(
            verify(&config, &duplicated)
                .unwrap_err()
                .is_signature_failure()
        );

        // Non-vnp parameters and vnp_SecureHashType are outside the signature.
        let mut extra = query.clone();
        extra.push(("utm_source".to_owned(), "x".to_owned()));
        extra.push(("vnp_SecureHashType".to_owned(), "HmacSHA512".to_owned()));
        assert!(verify(&config, &extra).is_ok());
    }

    #[test]
    fn wrong_secret_or_merchant_is_refused() {
        let query = signed("s3cret", &result_params("00", "00", "50000000"));
        assert_eq!(
            verify(&config("other", "HOLDFAST"), &query),
            Err(Error::BadSignature)
        );
        assert_eq!(
            verify(&config("s3cret", "OTHER"), &query),
            Err(Error::WrongMerchant)
        );
    }
}
