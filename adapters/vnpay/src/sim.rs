//! A local stand-in for the VNPAY sandbox, so a person can click through a purchase on one
//! machine (`holdfast vnpay-sim` mounts [`router`]).
//!
//! - `GET /paymentv2/vpcpay.html?vnp_…` checks the merchant's signature, terminal, command,
//!   version and expiry, and shows the order with a Pay and a Cancel button.
//! - `POST /paymentv2/pay` and `POST /paymentv2/cancel` re-check the signed request carried in
//!   the form, sign the result parameters as VNPAY does (`vnp_ResponseCode`/
//!   `vnp_TransactionStatus` `00`/`00` when paid, `24`/`02` when the buyer cancels), call the
//!   merchant's IPN URL with them (`GET`, one attempt), then redirect the browser (302) to the
//!   request's `vnp_ReturnUrl` with the same parameters. A reference is settled once: a second
//!   click answers 409.
//! - `POST /merchant_webapi/api/transaction` answers `querydr` for the references it settled,
//!   and `refund`: it keeps what each paid reference has left, refuses a refund beyond it (`02`),
//!   a full refund (`02` type) after a partial one (`04`), an unknown or unpaid reference (`91`)
//!   and a refund it has taken already, by the merchant's `vnp_OrderInfo` (`94`).
//! - `POST /sim/faults` `{"fail_refunds": n, "slow_refunds": n, "slow_ms": ms}` makes the next
//!   `n` refunds fail with `99` (nothing refunded), or take the refund and answer only after
//!   `slow_ms` (a merchant that gave up waiting does not know it was refunded);
//!   `GET /sim/transactions/{txn_ref}` shows `{"amount", "refunded", "refunds"}` in VND.
//!
//! The simulator reads the wall clock (for `vnp_PayDate` and expiry): it is a shell, not core.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ipn::IpnResponse;
use crate::querydr::{QueryDrBody, QueryDrResponse};
use crate::refund::{RefundBody, RefundKind, RefundResponse};
use crate::{datetime, encoding, verify};

/// The simulator's settings: the merchant it serves.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// The merchant's hash secret (the same as the merchant's [`crate::Config::hash_secret`]).
    pub hash_secret: String,
    /// The merchant's `vnp_TmnCode`.
    pub tmn_code: String,
    /// Where to send the IPN (`…/v1/payments/vnpay/ipn`), as set in VNPAY's merchant portal.
    pub merchant_ipn_url: String,
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("hash_secret", &"<redacted>")
            .field("tmn_code", &self.tmn_code)
            .field("merchant_ipn_url", &self.merchant_ipn_url)
            .finish()
    }
}

/// Settled references kept for `querydr`; the oldest are forgotten past this.
const SETTLED_MAX: usize = 10_000;
const IPN_TIMEOUT: Duration = Duration::from_secs(10);

/// The simulator's routes, with their state.
pub fn router(config: SimConfig) -> Router {
    let client = reqwest::Client::builder()
        .timeout(IPN_TIMEOUT)
        .build()
        .expect("a plain-HTTP reqwest client builds");
    let sim = Arc::new(Sim {
        config,
        client,
        settled: Mutex::new(Settled::default()),
        next_transaction_no: AtomicU64::new(14_000_001),
        faults: Mutex::new(Faults::default()),
    });
    Router::new()
        .route("/paymentv2/vpcpay.html", get(payment_page))
        .route("/paymentv2/pay", post(pay))
        .route("/paymentv2/cancel", post(cancel))
        .route("/merchant_webapi/api/transaction", post(api))
        .route("/sim/faults", post(set_faults))
        .route("/sim/transactions/{txn_ref}", get(transaction))
        .with_state(sim)
}

struct Sim {
    config: SimConfig,
    client: reqwest::Client,
    settled: Mutex<Settled>,
    next_transaction_no: AtomicU64,
    faults: Mutex<Faults>,
}

/// Failures to play on the next refund calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// The next this many refunds answer `99` and refund nothing.
    pub fail_refunds: u32,
    /// The next this many refunds are taken, and answered only after `slow_ms`.
    pub slow_refunds: u32,
    pub slow_ms: u64,
}

/// A reference's money as the simulator has it, in VND.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub amount: u64,
    pub refunded: u64,
    pub refunds: u32,
}

#[derive(Default)]
struct Settled {
    by_ref: HashMap<String, Transaction>,
    order: VecDeque<String>,
}

#[derive(Clone)]
struct Transaction {
    amount: String,
    order_info: String,
    bank_code: String,
    pay_date: String,
    response_code: &'static str,
    transaction_status: &'static str,
    transaction_no: String,
    /// VND paid back so far.
    refunded: u64,
    /// The `vnp_OrderInfo` of each refund taken.
    refunds: Vec<String>,
}

/// A merchant's payment request whose signature and fields checked out.
struct Payment {
    raw_query: String,
    txn_ref: String,
    amount: u64,
    order_info: String,
    return_url: String,
    bank_code: Option<String>,
    expire_date: OffsetDateTime,
}

type Refusal = (StatusCode, Html<String>);

fn refuse(status: StatusCode, message: &str) -> Refusal {
    (
        status,
        Html(page(
            "Payment refused",
            &format!("<p class=\"error\">{}</p>", escape(message)),
        )),
    )
}

impl Sim {
    fn check(&self, raw_query: &str, now: OffsetDateTime) -> Result<Payment, Refusal> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(raw_query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let params = verify::verify_signature(&self.config.hash_secret, &pairs)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, &format!("invalid signature: {e}")))?;
        let field = |name: &str| {
            params
                .get(name)
                .copied()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, &format!("{name} is missing")))
        };
        let expect = |name: &str, want: &str| {
            if field(name)? == want {
                Ok(())
            } else {
                Err(refuse(
                    StatusCode::BAD_REQUEST,
                    &format!("{name} must be {want}"),
                ))
            }
        };
        expect("vnp_Version", crate::VERSION)?;
        expect("vnp_Command", "pay")?;
        expect("vnp_TmnCode", &self.config.tmn_code)?;
        expect("vnp_CurrCode", "VND")?;
        let amount = verify::parse_amount(field("vnp_Amount")?)
            .ok()
            .filter(|a| *a > 0)
            .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "vnp_Amount is invalid"))?;
        let date = |name: &str| {
            datetime::parse(field(name)?)
                .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, &format!("{name} is invalid")))
        };
        date("vnp_CreateDate")?;
        let expire_date = date("vnp_ExpireDate")?;
        if expire_date <= now {
            return Err(refuse(
                StatusCode::GONE,
                "the payment window closed (vnp_ExpireDate has passed)",
            ));
        }
        Ok(Payment {
            raw_query: raw_query.to_owned(),
            txn_ref: field("vnp_TxnRef")?.to_owned(),
            amount,
            order_info: field("vnp_OrderInfo")?.to_owned(),
            return_url: field("vnp_ReturnUrl")?.to_owned(),
            bank_code: params.get("vnp_BankCode").map(|s| (*s).to_owned()),
            expire_date,
        })
    }

    fn is_settled(&self, txn_ref: &str) -> bool {
        self.settled
            .lock()
            .expect("settled map lock")
            .by_ref
            .contains_key(txn_ref)
    }

    /// Records the result once per reference; `None` if it was already settled.
    fn settle(&self, payment: &Payment, paid: bool, now: OffsetDateTime) -> Option<Transaction> {
        let transaction = Transaction {
            amount: (payment.amount * 100).to_string(),
            order_info: payment.order_info.clone(),
            bank_code: payment
                .bank_code
                .clone()
                .unwrap_or_else(|| "NCB".to_owned()),
            pay_date: datetime::format(now),
            response_code: if paid { "00" } else { "24" },
            transaction_status: if paid { "00" } else { "02" },
            transaction_no: if paid {
                self.next_transaction_no
                    .fetch_add(1, Ordering::Relaxed)
                    .to_string()
            } else {
                "0".to_owned()
            },
            refunded: 0,
            refunds: Vec::new(),
        };
        let mut settled = self.settled.lock().expect("settled map lock");
        if settled.by_ref.contains_key(&payment.txn_ref) {
            return None;
        }
        settled
            .by_ref
            .insert(payment.txn_ref.clone(), transaction.clone());
        settled.order.push_back(payment.txn_ref.clone());
        while settled.order.len() > SETTLED_MAX {
            if let Some(oldest) = settled.order.pop_front() {
                settled.by_ref.remove(&oldest);
            }
        }
        Some(transaction)
    }

    /// The result parameters VNPAY sends to the IPN and the return URL, signed.
    fn result_query(&self, txn_ref: &str, t: &Transaction) -> String {
        let mut params = vec![
            ("vnp_Amount", t.amount.as_str()),
            ("vnp_BankCode", t.bank_code.as_str()),
            ("vnp_OrderInfo", t.order_info.as_str()),
            ("vnp_PayDate", t.pay_date.as_str()),
            ("vnp_ResponseCode", t.response_code),
            ("vnp_TmnCode", self.config.tmn_code.as_str()),
            ("vnp_TransactionNo", t.transaction_no.as_str()),
            ("vnp_TransactionStatus", t.transaction_status),
            ("vnp_TxnRef", txn_ref),
        ];
        let bank_tran_no = format!("VNP{}", t.transaction_no);
        if t.response_code == "00" {
            params.push(("vnp_BankTranNo", &bank_tran_no));
            params.push(("vnp_CardType", "ATM"));
        }
        encoding::signed_query(&self.config.hash_secret, &params)
    }

    async fn call_ipn(&self, txn_ref: &str, query: &str) {
        let url = with_query(&self.config.merchant_ipn_url, query);
        let answer = async {
            let response = self.client.get(&url).send().await?;
            response.json::<IpnResponse>().await
        }
        .await;
        match answer {
            Ok(answer) => {
                tracing::info!(txn_ref, rsp_code = %answer.rsp_code, message = %answer.message, "vnpay-sim: IPN answered")
            }
            Err(error) => tracing::warn!(txn_ref, %error, "vnpay-sim: IPN call failed"),
        }
    }
}

fn with_query(url: &str, query: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{query}")
}

async fn payment_page(State(sim): State<Arc<Sim>>, RawQuery(query): RawQuery) -> Response {
    let now = OffsetDateTime::now_utc();
    let payment = match sim.check(query.as_deref().unwrap_or_default(), now) {
        Ok(payment) => payment,
        Err(refusal) => return refusal.into_response(),
    };
    if sim.is_settled(&payment.txn_ref) {
        return refuse(
            StatusCode::CONFLICT,
            "this order was already paid or cancelled",
        )
        .into_response();
    }
    let q = escape(&payment.raw_query);
    let body = format!(
        "<dl>\
         <dt>Merchant</dt><dd>{merchant}</dd>\
         <dt>Order</dt><dd id=\"txn-ref\">{txn_ref}</dd>\
         <dt>Description</dt><dd>{order_info}</dd>\
         <dt>Amount</dt><dd id=\"amount\"><strong>{amount} VND</strong></dd>\
         <dt>Pay before</dt><dd>{expire} (GMT+7)</dd>\
         </dl>\
         <form method=\"post\" action=\"pay\"><input type=\"hidden\" name=\"q\" value=\"{q}\">\
         <button type=\"submit\" id=\"pay\">Pay</button></form>\
         <form method=\"post\" action=\"cancel\"><input type=\"hidden\" name=\"q\" value=\"{q}\">\
         <button type=\"submit\" id=\"cancel\">Cancel</button></form>",
        merchant = escape(&sim.config.tmn_code),
        txn_ref = escape(&payment.txn_ref),
        order_info = escape(&payment.order_info),
        amount = group_thousands(payment.amount),
        expire = datetime::format(payment.expire_date),
    );
    Html(page("VNPAY sandbox (local simulator)", &body)).into_response()
}

async fn pay(State(sim): State<Arc<Sim>>, body: String) -> Response {
    finish(&sim, &body, true).await
}

async fn cancel(State(sim): State<Arc<Sim>>, body: String) -> Response {
    finish(&sim, &body, false).await
}

async fn finish(sim: &Sim, form: &str, paid: bool) -> Response {
    let now = OffsetDateTime::now_utc();
    let Some(query) = form_urlencoded::parse(form.as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
    else {
        return refuse(StatusCode::BAD_REQUEST, "the form lost the payment request")
            .into_response();
    };
    let payment = match sim.check(&query, now) {
        Ok(payment) => payment,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(transaction) = sim.settle(&payment, paid, now) else {
        return refuse(
            StatusCode::CONFLICT,
            "this order was already paid or cancelled",
        )
        .into_response();
    };
    let result = sim.result_query(&payment.txn_ref, &transaction);
    sim.call_ipn(&payment.txn_ref, &result).await;
    (
        StatusCode::FOUND,
        [(header::LOCATION, with_query(&payment.return_url, &result))],
    )
        .into_response()
}

/// The merchant API: `querydr` or `refund`, by `vnp_Command`.
async fn api(State(sim): State<Arc<Sim>>, Json(body): Json<serde_json::Value>) -> Response {
    match body.get("vnp_Command").and_then(|c| c.as_str()) {
        Some("refund") => match serde_json::from_value::<RefundBody>(body) {
            Ok(body) => Json(sim.refund(&body).await).into_response(),
            Err(_) => Json(sim.refund_answer(None, "03", "Invalid data format")).into_response(),
        },
        _ => match serde_json::from_value::<QueryDrBody>(body) {
            Ok(body) => querydr(&sim, body).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
    }
}

async fn set_faults(State(sim): State<Arc<Sim>>, Json(faults): Json<Faults>) -> StatusCode {
    *sim.faults.lock().expect("faults lock") = faults;
    StatusCode::NO_CONTENT
}

async fn transaction(State(sim): State<Arc<Sim>>, Path(txn_ref): Path<String>) -> Response {
    let settled = sim.settled.lock().expect("settled map lock");
    match settled.by_ref.get(&txn_ref) {
        Some(t) => Json(Balance {
            amount: verify::parse_amount(&t.amount).unwrap_or(0),
            refunded: t.refunded,
            refunds: u32::try_from(t.refunds.len()).unwrap_or(u32::MAX),
        })
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

impl Sim {
    fn refund_answer(
        &self,
        body: Option<&RefundBody>,
        code: &str,
        message: &str,
    ) -> RefundResponse {
        let mut response = RefundResponse {
            response_id: body.map(|b| b.request_id.clone()).unwrap_or_default(),
            command: "refund".to_owned(),
            response_code: code.to_owned(),
            message: message.to_owned(),
            tmn_code: self.config.tmn_code.clone(),
            txn_ref: body.map(|b| b.txn_ref.clone()).unwrap_or_default(),
            order_info: body.map(|b| b.order_info.clone()).unwrap_or_default(),
            transaction_type: body.map(|b| b.transaction_type.clone()).unwrap_or_default(),
            ..RefundResponse::default()
        };
        response.sign(&self.config.hash_secret);
        response
    }

    /// Takes one refund, or says why not; a slow fault answers late but refunds all the same.
    async fn refund(&self, body: &RefundBody) -> RefundResponse {
        let (fail, slow) = {
            let mut faults = self.faults.lock().expect("faults lock");
            let fail = faults.fail_refunds > 0;
            let slow = !fail && faults.slow_refunds > 0;
            if fail {
                faults.fail_refunds -= 1;
            } else if slow {
                faults.slow_refunds -= 1;
            }
            (fail, slow.then(|| Duration::from_millis(faults.slow_ms)))
        };
        let answer = if fail {
            self.refund_answer(Some(body), "99", "Simulated failure")
        } else {
            self.take_refund(body)
        };
        if let Some(delay) = slow {
            tokio::time::sleep(delay).await;
        }
        tracing::info!(txn_ref = %body.txn_ref, amount = %body.amount, code = %answer.response_code, "vnpay-sim: refund answered");
        answer
    }

    fn take_refund(&self, body: &RefundBody) -> RefundResponse {
        if !body.verify(&self.config.hash_secret) {
            return self.refund_answer(Some(body), "97", "Invalid Checksum");
        }
        let kind = RefundKind::parse(&body.transaction_type);
        let amount = verify::parse_amount(&body.amount).ok().filter(|a| *a > 0);
        let (Some(kind), Some(amount), true, true) = (
            kind,
            amount,
            body.tmn_code == self.config.tmn_code && body.version == crate::VERSION,
            datetime::parse(&body.create_date).is_some(),
        ) else {
            return self.refund_answer(Some(body), "03", "Invalid data format");
        };
        let mut settled = self.settled.lock().expect("settled map lock");
        let Some(t) = settled
            .by_ref
            .get_mut(&body.txn_ref)
            .filter(|t| t.response_code == "00")
        else {
            return self.refund_answer(Some(body), "91", "Transaction not found");
        };
        let paid = verify::parse_amount(&t.amount).unwrap_or(0);
        let refusal = if t.refunds.contains(&body.order_info) {
            Some(("94", "Refund already requested; VNPAY is processing it"))
        } else if kind == RefundKind::Full && t.refunded > 0 {
            Some(("04", "No full refund after a partial refund"))
        } else if kind == RefundKind::Full && amount != paid {
            Some(("03", "A full refund is of the whole amount"))
        } else if t.refunded.saturating_add(amount) > paid {
            Some(("02", "The refunds exceed the amount paid"))
        } else {
            None
        };
        if let Some((code, message)) = refusal {
            return self.refund_answer(Some(body), code, message);
        }
        t.refunded += amount;
        t.refunds.push(body.order_info.clone());
        let (bank_code, transaction_status) = (t.bank_code.clone(), "00");
        drop(settled);
        let mut response = self.refund_answer(Some(body), "00", "Refund success");
        response.amount = body.amount.clone();
        response.bank_code = bank_code;
        response.pay_date = datetime::format(OffsetDateTime::now_utc());
        response.transaction_no = self
            .next_transaction_no
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        response.transaction_status = transaction_status.to_owned();
        response.sign(&self.config.hash_secret);
        response
    }
}

fn querydr(sim: &Sim, body: QueryDrBody) -> Json<QueryDrResponse> {
    let mut response = QueryDrResponse {
        response_id: body.request_id.clone(),
        command: "querydr".to_owned(),
        tmn_code: sim.config.tmn_code.clone(),
        txn_ref: body.txn_ref.clone(),
        ..QueryDrResponse::default()
    };
    let (code, message) = if !body.verify(&sim.config.hash_secret) {
        ("97", "Invalid Checksum")
    } else if body.tmn_code != sim.config.tmn_code || body.command != "querydr" {
        ("02", "Merchant invalid")
    } else {
        let found = sim
            .settled
            .lock()
            .expect("settled map lock")
            .by_ref
            .get(&body.txn_ref)
            .cloned();
        match found {
            None => ("91", "Transaction not found"),
            Some(t) => {
                let paid = verify::parse_amount(&t.amount).unwrap_or(0);
                response.amount = t.amount;
                response.order_info = t.order_info;
                response.bank_code = t.bank_code;
                response.pay_date = t.pay_date;
                response.transaction_no = t.transaction_no;
                response.transaction_type = match t.refunded {
                    0 => "01",
                    r if r >= paid => "02",
                    _ => "03",
                }
                .to_owned();
                response.transaction_status = t.transaction_status.to_owned();
                ("00", "QueryDR Success")
            }
        }
    };
    code.clone_into(&mut response.response_code);
    message.clone_into(&mut response.message);
    response.sign(&sim.config.hash_secret);
    Json(response)
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:32rem;margin:2rem auto}}\
         dt{{font-weight:bold}}form{{display:inline-block;margin-right:1rem}}\
         button{{font-size:1.2rem;padding:.5rem 1.5rem}}.error{{color:#b00}}</style>\
         </head><body><h1>{title}</h1>{body}</body></html>",
        title = escape(title),
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn groups_thousands() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (500_000, "500,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(group_thousands(n), s);
        }
    }
}
