//! The merchant's settings and the signed payment URL.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{datetime, encoding};

/// A merchant's VNPAY settings (`HOLDFAST_VNPAY_*`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `vnp_TmnCode`, the merchant's terminal code.
    pub tmn_code: String,
    /// The shared HMAC-SHA512 key. Never logged.
    pub hash_secret: String,
    /// VNPAY's payment page, e.g. [`crate::SANDBOX_PAY_URL`].
    pub pay_url: String,
    /// Where VNPAY sends the buyer back (`GET /v1/payments/vnpay/return`).
    pub return_url: String,
    /// The IPN webhook (`GET /v1/payments/vnpay/ipn`). VNPAY 2.1.0 takes it from the merchant
    /// portal, not from the payment request, so it is not signed into the URL.
    #[serde(default)]
    pub ipn_url: Option<String>,
    /// `vnp_Version`, `2.1.0`.
    #[serde(default = "default_version")]
    pub version: String,
    /// The payment page's language unless a request says otherwise.
    #[serde(default)]
    pub locale: Locale,
}

fn default_version() -> String {
    crate::VERSION.to_owned()
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("tmn_code", &self.tmn_code)
            .field("hash_secret", &"<redacted>")
            .field("pay_url", &self.pay_url)
            .field("return_url", &self.return_url)
            .field("ipn_url", &self.ipn_url)
            .field("version", &self.version)
            .field("locale", &self.locale)
            .finish()
    }
}

/// `vnp_Locale`: the language of VNPAY's payment page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    #[default]
    Vn,
    En,
}

impl Locale {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vn => "vn",
            Self::En => "en",
        }
    }
}

/// One payment: the order to pay and the window to pay it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// `vnp_TxnRef`: the order id. 1–100 characters of `A-Z a-z 0-9 - _`.
    pub txn_ref: String,
    /// The amount in VND (no minor unit); sent as `vnp_Amount` = amount × 100.
    pub amount_minor: u64,
    /// `vnp_OrderInfo`: 1–255 characters of ASCII letters, digits, space and `- _ . : , / #`
    /// (VNPAY wants Vietnamese without diacritics; these characters are encoded alike by every
    /// VNPAY reference implementation, so VNPAY's signature over them matches ours).
    pub order_info: String,
    /// `vnp_IpAddr`: the buyer's address.
    pub ip_addr: IpAddr,
    /// `vnp_CreateDate`.
    pub create_date: OffsetDateTime,
    /// `vnp_ExpireDate`. The caller keeps it no later than the hold's expiry; it must be after
    /// `create_date`.
    pub expire_date: OffsetDateTime,
    /// `vnp_BankCode` (e.g. `VNBANK`, `INTCARD`, `NCB`), or let the buyer choose on VNPAY.
    pub bank_code: Option<String>,
    /// Overrides [`Config::locale`].
    pub locale: Option<Locale>,
}

/// `vnp_OrderType` for goods and services without a more specific VNPAY category.
pub const ORDER_TYPE_OTHER: &str = "other";

/// Why a payment URL was not built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("vnp_TxnRef must be 1-100 characters of A-Z a-z 0-9 - _")]
    InvalidTxnRef,
    #[error(
        "vnp_OrderInfo must be 1-255 characters of ASCII letters, digits, space and - _ . : , / #"
    )]
    InvalidOrderInfo,
    #[error("vnp_BankCode must be 1-20 characters of A-Z a-z 0-9 _")]
    InvalidBankCode,
    #[error("the amount must be positive and at most {max} VND", max = u64::MAX / 100)]
    InvalidAmount,
    #[error("vnp_ExpireDate must be after vnp_CreateDate")]
    ExpiresBeforeCreated,
}

/// The signed URL of VNPAY's payment page for `request`.
///
/// The query carries `vnp_Version`, `vnp_Command=pay`, `vnp_TmnCode`, `vnp_Amount`,
/// `vnp_CurrCode=VND`, `vnp_TxnRef`, `vnp_OrderInfo`, `vnp_OrderType`, `vnp_Locale`,
/// `vnp_ReturnUrl`, `vnp_IpAddr`, `vnp_CreateDate`, `vnp_ExpireDate` and, when given,
/// `vnp_BankCode`, sorted and encoded as the crate docs describe, then `vnp_SecureHash`.
pub fn payment_url(config: &Config, request: &PaymentRequest) -> Result<String, Error> {
    let params = payment_params(config, request)?;
    let query = encoding::signed_query(&config.hash_secret, &params);
    let separator = if config.pay_url.contains('?') {
        '&'
    } else {
        '?'
    };
    Ok(format!("{}{separator}{query}", config.pay_url))
}

fn payment_params(
    config: &Config,
    request: &PaymentRequest,
) -> Result<Vec<(&'static str, String)>, Error> {
    if !is_txn_ref(&request.txn_ref) {
        return Err(Error::InvalidTxnRef);
    }
    if !is_order_info(&request.order_info) {
        return Err(Error::InvalidOrderInfo);
    }
    let amount = request
        .amount_minor
        .checked_mul(100)
        .filter(|_| request.amount_minor > 0)
        .ok_or(Error::InvalidAmount)?;
    if request.expire_date <= request.create_date {
        return Err(Error::ExpiresBeforeCreated);
    }
    let locale = request.locale.unwrap_or(config.locale);
    let mut params = vec![
        ("vnp_Version", config.version.clone()),
        ("vnp_Command", "pay".to_owned()),
        ("vnp_TmnCode", config.tmn_code.clone()),
        ("vnp_Amount", amount.to_string()),
        ("vnp_CurrCode", "VND".to_owned()),
        ("vnp_TxnRef", request.txn_ref.clone()),
        ("vnp_OrderInfo", request.order_info.clone()),
        ("vnp_OrderType", ORDER_TYPE_OTHER.to_owned()),
        ("vnp_Locale", locale.as_str().to_owned()),
        ("vnp_ReturnUrl", config.return_url.clone()),
        ("vnp_IpAddr", request.ip_addr.to_string()),
        ("vnp_CreateDate", datetime::format(request.create_date)),
        ("vnp_ExpireDate", datetime::format(request.expire_date)),
    ];
    if let Some(bank_code) = &request.bank_code {
        let valid = (1..=20).contains(&bank_code.len())
            && bank_code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(Error::InvalidBankCode);
        }
        params.push(("vnp_BankCode", bank_code.clone()));
    }
    Ok(params)
}

pub(crate) fn is_txn_ref(text: &str) -> bool {
    (1..=100).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(crate) fn is_order_info(text: &str) -> bool {
    (1..=255).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" -_.:,/#".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding;
    use time::macros::datetime;

    fn config() -> Config {
        Config {
            tmn_code: "HOLDFAST".to_owned(),
            hash_secret: "test_secret".to_owned(),
            pay_url: crate::SANDBOX_PAY_URL.to_owned(),
            return_url: "https://example.com/return".to_owned(),
            ipn_url: None,
            version: crate::VERSION.to_owned(),
            locale: Locale::Vn,
        }
    }

    fn request() -> PaymentRequest {
        PaymentRequest {
            txn_ref: "ref1234567".to_owned(),
            amount_minor: 1000,
            order_info: "Test order".to_owned(),
            ip_addr: "127.0.0.1".parse().unwrap(),
            create_date: datetime!(2021-01-01 00:00:00 UTC),
            expire_date: datetime!(2021-01-01 00:15:00 UTC),
            bank_code: Some("NCB".to_owned()),
            locale: None,
        }
    }

    #[test]
    fn builds_the_documented_query() {
        let url = payment_url(&config(), &request()).unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, crate::SANDBOX_PAY_URL);
        let (data, hash) = query.split_once("&vnp_SecureHash=").unwrap();
        // Field values as the `vnpay` npm library's buildPaymentUrl test expects them
        // (`vnp_OrderInfo=Test+order`, `vnp_ReturnUrl=https%3A%2F%2Fexample.com%2Freturn`).
        assert_eq!(
            data,
            "vnp_Amount=100000&vnp_BankCode=NCB&vnp_Command=pay&vnp_CreateDate=20210101070000\
             &vnp_CurrCode=VND&vnp_ExpireDate=20210101071500&vnp_IpAddr=127.0.0.1&vnp_Locale=vn\
             &vnp_OrderInfo=Test+order&vnp_OrderType=other\
             &vnp_ReturnUrl=https%3A%2F%2Fexample.com%2Freturn&vnp_TmnCode=HOLDFAST\
             &vnp_TxnRef=ref1234567&vnp_Version=2.1.0"
        );
        assert_eq!(hash, encoding::hmac_sha512_hex("test_secret", data));
        // Computed independently with Python's hmac over the string above:
        // python3 -c 'import hmac,hashlib,sys; print(hmac.new(b"test_secret", sys.argv[1].encode(), hashlib.sha512).hexdigest())' '<data>'
        assert_eq!(hash, PYTHON_HASH);
    }

    const PYTHON_HASH: &str = "75b75b6da8f0de24a92b252d0dd98989424a538c6322665b27c637100fed6c1d\
                               a9aea2c05e0d7089891b02c85a2a61fa27c9e441fc93ec613ef41db09c5a7b4d";

    #[test]
    fn request_locale_overrides_config_and_bank_code_is_optional() {
        let mut req = request();
        req.locale = Some(Locale::En);
        req.bank_code = None;
        let url = payment_url(&config(), &req).unwrap();
        assert!(url.contains("vnp_Locale=en"));
        assert!(!url.contains("vnp_BankCode"));
    }

    type Change = fn(&mut PaymentRequest);

    #[test]
    fn refuses_bad_requests() {
        let cases: Vec<(Change, Error)> = vec![
            (|r| r.txn_ref.clear(), Error::InvalidTxnRef),
            (|r| r.txn_ref = "a&b".to_owned(), Error::InvalidTxnRef),
            (|r| r.txn_ref = "x".repeat(101), Error::InvalidTxnRef),
            (|r| r.order_info.clear(), Error::InvalidOrderInfo),
            (
                |r| r.order_info = "Thanh toán".to_owned(),
                Error::InvalidOrderInfo,
            ),
            (
                |r| r.order_info = "pay (now)".to_owned(),
                Error::InvalidOrderInfo,
            ),
            (|r| r.order_info = "a*b".to_owned(), Error::InvalidOrderInfo),
            (|r| r.order_info = "x".repeat(256), Error::InvalidOrderInfo),
            (|r| r.amount_minor = 0, Error::InvalidAmount),
            (
                |r| r.amount_minor = u64::MAX / 100 + 1,
                Error::InvalidAmount,
            ),
            (
                |r| r.expire_date = r.create_date,
                Error::ExpiresBeforeCreated,
            ),
            (
                |r| r.expire_date = r.create_date - time::Duration::SECOND,
                Error::ExpiresBeforeCreated,
            ),
            (
                |r| r.bank_code = Some(String::new()),
                Error::InvalidBankCode,
            ),
            (
                |r| r.bank_code = Some("N&B".to_owned()),
                Error::InvalidBankCode,
            ),
        ];
        for (i, (change, error)) in cases.into_iter().enumerate() {
            let mut req = request();
            change(&mut req);
            assert_eq!(payment_url(&config(), &req), Err(error), "case {i}");
        }
    }

    #[test]
    fn config_debug_hides_the_secret() {
        assert!(!format!("{:?}", config()).contains("test_secret"));
    }
}
