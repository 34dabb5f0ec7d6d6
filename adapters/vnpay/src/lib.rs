//! VNPAY 2.1.0 for Holdfast's payment service: pure functions the checkout saga calls, plus a
//! local stand-in for the VNPAY sandbox ([`sim`]).
//!
//! - [`payment_url`] builds the signed redirect to VNPAY's payment page.
//! - [`verify`] checks the signature of the parameters VNPAY sends to the return URL and the IPN
//!   webhook, in constant time, and parses them into a [`VerifiedReturn`].
//! - [`ipn`] decides the `RspCode`/`Message` answer to an IPN call from the merchant's view of
//!   the payment.
//! - [`querydr`] builds the signed `querydr` request body and verifies its response; the caller
//!   posts it (no HTTP client here).
//! - [`refund`] builds the signed `refund` request body (full `02` or partial `03`) and verifies
//!   its response, the same way.
//!
//! # Signing rule
//!
//! `vnp_SecureHash` is the lowercase hex HMAC-SHA512, keyed with the merchant's hash secret,
//! over the `vnp_*` parameters sorted by key and joined as `key=value&…`, each key and value
//! encoded like PHP's `urlencode` (space → `+`, everything but `A-Z a-z 0-9 - _ .` → `%XX`).
//! That is what VNPAY's official PHP demo (`vnpay_php`: `ksort` + `urlencode`) and Node demo
//! (`sortObject`: `encodeURIComponent` with `%20` → `+`, then `qs.stringify` unencoded) hash
//! over, and what the `vnpay` npm library (github.com/lehuygiang28/vnpay) does; the tests
//! check two of that library's published (secret, parameters) → hash vectors. The demos
//! differ only on `! ' ( ) * ~`, so [`PaymentRequest::order_info`] refuses them.

pub mod datetime;
pub mod encoding;
pub mod ipn;
mod payment;
pub mod querydr;
pub mod refund;
pub mod sim;
mod verify;

pub use payment::{
    Config, Error as PaymentError, Locale, ORDER_TYPE_OTHER, PaymentRequest, payment_url,
};
pub use verify::{Error as VerifyError, VerifiedReturn, verify};

/// The protocol version this crate speaks.
pub const VERSION: &str = "2.1.0";
/// VNPAY's sandbox payment page.
pub const SANDBOX_PAY_URL: &str = "https://sandbox.vnpayment.vn/paymentv2/vpcpay.html";
/// VNPAY's sandbox API endpoint for `querydr` and `refund`.
pub const SANDBOX_API_URL: &str = "https://sandbox.vnpayment.vn/merchant_webapi/api/transaction";

/// The merchant settings the unit tests of several modules share.
#[cfg(test)]
mod test_support {
    use crate::{Config, Locale};

    pub(crate) fn config() -> Config {
        Config {
            tmn_code: "HOLDFAST".to_owned(),
            hash_secret: "s3cret".to_owned(),
            pay_url: crate::SANDBOX_PAY_URL.to_owned(),
            return_url: "http://localhost/return".to_owned(),
            ipn_url: None,
            version: crate::VERSION.to_owned(),
            locale: Locale::Vn,
        }
    }
}
