//! The simulator against a fake merchant that verifies every IPN with `holdfast_vnpay::verify`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use holdfast_vnpay::ipn::{self, IpnOutcome, IpnResponse, OrderView};
use holdfast_vnpay::querydr::{self, QueryDrRequest, QueryDrResponse};
use holdfast_vnpay::refund::{self, RefundKind, RefundOutcome, RefundRequest, RefundResponse};
use holdfast_vnpay::sim::{self, SimConfig};
use holdfast_vnpay::{Config, Locale, PaymentRequest, VerifiedReturn, payment_url, verify};
use time::{Duration, OffsetDateTime};

const SECRET: &str = "SIMSECRET0123456789";
const TMN: &str = "HOLDFAST";

#[derive(Default)]
struct Merchant {
    /// (txn_ref, decision outcome, RspCode) per IPN call received.
    ipn_calls: Mutex<Vec<(String, IpnOutcome, String)>>,
    settled: Mutex<Vec<String>>,
}

struct Harness {
    config: Config,
    merchant: Arc<Merchant>,
    sim_addr: SocketAddr,
    http: reqwest::Client,
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn ipn_endpoint(
    State((config, merchant)): State<(Config, Arc<Merchant>)>,
    RawQuery(query): RawQuery,
) -> Json<IpnResponse> {
    let query = parse_query(&query.unwrap_or_default());
    let (verified, decision) = ipn::handle(&config, &query, |v: &VerifiedReturn| {
        let amount_minor = 350_000;
        if !v.txn_ref.starts_with("order-") {
            OrderView::NotFound
        } else if merchant.settled.lock().unwrap().contains(&v.txn_ref) {
            OrderView::Settled { amount_minor }
        } else {
            OrderView::Pending { amount_minor }
        }
    });
    if let Some(v) = &verified
        && decision.outcome != IpnOutcome::Ignore
    {
        merchant.settled.lock().unwrap().push(v.txn_ref.clone());
    }
    let response = decision.response();
    merchant.ipn_calls.lock().unwrap().push((
        verified.map(|v| v.txn_ref).unwrap_or_default(),
        decision.outcome,
        response.rsp_code.clone(),
    ));
    Json(response)
}

async fn harness() -> Harness {
    let merchant = Arc::new(Merchant::default());
    // The merchant's config needs the simulator's address and the simulator needs the
    // merchant's; bind the merchant first.
    let merchant_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let merchant_addr = merchant_listener.local_addr().unwrap();
    let sim_addr = serve(sim::router(SimConfig {
        hash_secret: SECRET.to_owned(),
        tmn_code: TMN.to_owned(),
        merchant_ipn_url: format!("http://{merchant_addr}/v1/payments/vnpay/ipn"),
    }))
    .await;
    let config = Config {
        tmn_code: TMN.to_owned(),
        hash_secret: SECRET.to_owned(),
        pay_url: format!("http://{sim_addr}/paymentv2/vpcpay.html"),
        return_url: format!("http://{merchant_addr}/v1/payments/vnpay/return?from=vnpay"),
        ipn_url: Some(format!("http://{merchant_addr}/v1/payments/vnpay/ipn")),
        version: holdfast_vnpay::VERSION.to_owned(),
        locale: Locale::En,
    };
    let app = Router::new()
        .route("/v1/payments/vnpay/ipn", get(ipn_endpoint))
        .with_state((config.clone(), merchant.clone()));
    tokio::spawn(async move { axum::serve(merchant_listener, app).await.unwrap() });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Harness {
        config,
        merchant,
        sim_addr,
        http,
    }
}

fn request(txn_ref: &str) -> PaymentRequest {
    let now = OffsetDateTime::now_utc();
    PaymentRequest {
        txn_ref: txn_ref.to_owned(),
        amount_minor: 350_000,
        order_info: format!("Holdfast order {txn_ref}"),
        ip_addr: "127.0.0.1".parse().unwrap(),
        create_date: now,
        expire_date: now + Duration::minutes(15),
        bank_code: None,
        locale: None,
    }
}

/// The hidden `q` field of the payment page, as a browser would submit it.
fn hidden_q(html: &str) -> String {
    let start = html.find("name=\"q\" value=\"").unwrap() + "name=\"q\" value=\"".len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end]
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

impl Harness {
    async fn open(&self, url: &str) -> (reqwest::StatusCode, String) {
        let response = self.http.get(url).send().await.unwrap();
        (response.status(), response.text().await.unwrap())
    }

    /// Opens the payment page, clicks `button`, returns the redirect's query.
    async fn click(&self, url: &str, button: &str) -> (reqwest::StatusCode, Option<String>) {
        let (status, html) = self.open(url).await;
        assert_eq!(status, 200, "{html}");
        let form = format!("q={}", holdfast_vnpay::encoding::encode(&hidden_q(&html)));
        let response = self
            .http
            .post(format!("http://{}/paymentv2/{button}", self.sim_addr))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        (response.status(), location)
    }

    fn returned(&self, location: &str) -> VerifiedReturn {
        let (base, query) = location.split_once('?').unwrap();
        assert_eq!(base, self.config.return_url.split_once('?').unwrap().0);
        let query = parse_query(query);
        assert!(query.contains(&("from".to_owned(), "vnpay".to_owned())));
        verify(&self.config, &query).unwrap()
    }
}

#[tokio::test]
async fn pay_calls_the_ipn_then_redirects_with_a_paid_result() {
    let h = harness().await;
    let url = payment_url(&h.config, &request("order-1")).unwrap();
    let (_, html) = h.open(&url).await;
    assert!(
        html.contains("order-1") && html.contains("350,000 VND"),
        "{html}"
    );

    let (status, location) = h.click(&url, "pay").await;
    assert_eq!(status, 302);
    let returned = h.returned(&location.unwrap());
    assert!(returned.is_paid());
    assert_eq!(returned.txn_ref, "order-1");
    assert_eq!(returned.amount_minor, 350_000);
    assert!(returned.transaction_no.is_some() && returned.pay_date.is_some());
    assert_eq!(
        *h.merchant.ipn_calls.lock().unwrap(),
        vec![("order-1".to_owned(), IpnOutcome::Paid, "00".to_owned())]
    );

    // Paid once: the page and the button refuse a second payment.
    assert_eq!(h.open(&url).await.0, 409);

    // querydr agrees.
    let now = OffsetDateTime::now_utc();
    let body = querydr::request_body(
        &h.config,
        &QueryDrRequest {
            request_id: "req1".to_owned(),
            txn_ref: "order-1".to_owned(),
            transaction_date: now,
            create_date: now,
            ip_addr: "127.0.0.1".parse().unwrap(),
            order_info: "Query order-1".to_owned(),
        },
    )
    .unwrap();
    let answer: QueryDrResponse = h
        .http
        .post(format!(
            "http://{}/merchant_webapi/api/transaction",
            h.sim_addr
        ))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = querydr::verify_response(&h.config, &answer).unwrap();
    assert!(result.is_paid(), "{result:?}");
    assert_eq!(result.amount_minor, Some(350_000));

    let mut unknown = body.clone();
    unknown.txn_ref = "order-404".to_owned();
    unknown.secure_hash = holdfast_vnpay::encoding::hmac_sha512_hex(SECRET, &unknown.hash_data());
    let answer: QueryDrResponse = h
        .http
        .post(format!(
            "http://{}/merchant_webapi/api/transaction",
            h.sim_addr
        ))
        .json(&unknown)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        querydr::verify_response(&h.config, &answer)
            .unwrap()
            .is_not_found()
    );
}

#[tokio::test]
async fn cancel_reports_24_to_the_ipn_and_the_return_url() {
    let h = harness().await;
    let url = payment_url(&h.config, &request("order-2")).unwrap();
    let (status, location) = h.click(&url, "cancel").await;
    assert_eq!(status, 302);
    let returned = h.returned(&location.unwrap());
    assert!(!returned.is_paid());
    assert_eq!(returned.response_code, "24");
    assert_eq!(returned.transaction_status, "02");
    assert_eq!(
        *h.merchant.ipn_calls.lock().unwrap(),
        vec![("order-2".to_owned(), IpnOutcome::Failed, "00".to_owned())]
    );
}

#[tokio::test]
async fn unknown_order_gets_01_from_the_merchant() {
    let h = harness().await;
    let url = payment_url(&h.config, &request("ghost-3")).unwrap();
    let (status, _) = h.click(&url, "pay").await;
    assert_eq!(status, 302);
    assert_eq!(
        *h.merchant.ipn_calls.lock().unwrap(),
        vec![("ghost-3".to_owned(), IpnOutcome::Ignore, "01".to_owned())]
    );
}

#[tokio::test]
async fn the_simulator_refuses_tampered_wrong_or_expired_requests() {
    let h = harness().await;
    let url = payment_url(&h.config, &request("order-4")).unwrap();

    let tampered = url.replace("vnp_Amount=35000000", "vnp_Amount=100");
    assert_ne!(tampered, url);
    assert_eq!(h.open(&tampered).await.0, 400);

    let mut other = h.config.clone();
    other.hash_secret = "not-the-secret".to_owned();
    assert_eq!(
        h.open(&payment_url(&other, &request("order-4")).unwrap())
            .await
            .0,
        400
    );
    let mut other = h.config.clone();
    other.tmn_code = "SOMEONE".to_owned();
    assert_eq!(
        h.open(&payment_url(&other, &request("order-4")).unwrap())
            .await
            .0,
        400
    );

    let mut expired = request("order-4");
    expired.create_date -= Duration::hours(1);
    expired.expire_date = expired.create_date + Duration::minutes(15);
    assert_eq!(
        h.open(&payment_url(&h.config, &expired).unwrap()).await.0,
        410
    );

    // A pay form whose request was altered is refused too, and nothing reaches the merchant.
    let response = h
        .http
        .post(format!("http://{}/paymentv2/pay", h.sim_addr))
        .body(format!(
            "q={}",
            holdfast_vnpay::encoding::encode(tampered.split_once('?').unwrap().1)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(h.merchant.ipn_calls.lock().unwrap().is_empty());
}

impl Harness {
    /// Asks the simulator to refund `amount` VND of `txn_ref`, with `info` naming the refund.
    async fn refund(&self, txn_ref: &str, kind: RefundKind, amount: u64, info: &str) -> String {
        let now = OffsetDateTime::now_utc();
        let body = refund::request_body(
            &self.config,
            &RefundRequest {
                request_id: format!("r{}", now.unix_timestamp_nanos()),
                kind,
                txn_ref: txn_ref.to_owned(),
                amount_minor: amount,
                transaction_no: None,
                transaction_date: now,
                create_by: "holdfast".to_owned(),
                create_date: now,
                ip_addr: "127.0.0.1".parse().unwrap(),
                order_info: info.to_owned(),
            },
        )
        .unwrap();
        let answer: RefundResponse = self
            .http
            .post(format!(
                "http://{}/merchant_webapi/api/transaction",
                self.sim_addr
            ))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let result = refund::verify_response(&self.config, &answer).unwrap();
        assert_eq!(
            result.outcome == RefundOutcome::Accepted,
            result.response_code == "00"
        );
        result.response_code
    }

    async fn balance(&self, txn_ref: &str) -> sim::Balance {
        self.http
            .get(format!(
                "http://{}/sim/transactions/{txn_ref}",
                self.sim_addr
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn faults(&self, faults: sim::Faults) {
        let response = self
            .http
            .post(format!("http://{}/sim/faults", self.sim_addr))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }
}

#[tokio::test]
async fn refunds_never_exceed_what_was_paid() {
    let h = harness().await;
    // Nothing paid yet: no such transaction.
    assert_eq!(
        h.refund("order-5", RefundKind::Full, 350_000, "Refund a")
            .await,
        "91"
    );
    let url = payment_url(&h.config, &request("order-5")).unwrap();
    assert_eq!(h.click(&url, "pay").await.0, 302);
    // More than paid, or a full refund of another amount, is refused.
    assert_eq!(
        h.refund("order-5", RefundKind::Partial, 350_001, "Refund a")
            .await,
        "02"
    );
    assert_eq!(
        h.refund("order-5", RefundKind::Full, 100_000, "Refund a")
            .await,
        "03"
    );
    // Partial refunds until nothing is left; the same refund twice is 94; no full refund
    // after a partial one.
    assert_eq!(
        h.refund("order-5", RefundKind::Partial, 100_000, "Refund a")
            .await,
        "00"
    );
    assert_eq!(
        h.refund("order-5", RefundKind::Partial, 100_000, "Refund a")
            .await,
        "94"
    );
    assert_eq!(
        h.refund("order-5", RefundKind::Full, 350_000, "Refund b")
            .await,
        "04"
    );
    assert_eq!(
        h.refund("order-5", RefundKind::Partial, 250_001, "Refund b")
            .await,
        "02"
    );
    assert_eq!(
        h.refund("order-5", RefundKind::Partial, 250_000, "Refund b")
            .await,
        "00"
    );
    assert_eq!(
        h.refund("order-5", RefundKind::Partial, 1, "Refund c")
            .await,
        "02"
    );
    let balance = h.balance("order-5").await;
    assert_eq!(
        (balance.amount, balance.refunded, balance.refunds),
        (350_000, 350_000, 2)
    );

    // A cancelled payment has nothing to refund.
    let url = payment_url(&h.config, &request("order-6")).unwrap();
    assert_eq!(h.click(&url, "cancel").await.0, 302);
    assert_eq!(
        h.refund("order-6", RefundKind::Full, 350_000, "Refund a")
            .await,
        "91"
    );
}

#[tokio::test]
async fn refund_faults_fail_or_answer_late() {
    let h = harness().await;
    let url = payment_url(&h.config, &request("order-7")).unwrap();
    assert_eq!(h.click(&url, "pay").await.0, 302);
    h.faults(sim::Faults {
        fail_refunds: 2,
        slow_refunds: 1,
        slow_ms: 300,
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            h.refund("order-7", RefundKind::Full, 350_000, "Refund a")
                .await,
            "99"
        );
    }
    assert_eq!(h.balance("order-7").await.refunded, 0);
    let started = std::time::Instant::now();
    assert_eq!(
        h.refund("order-7", RefundKind::Full, 350_000, "Refund a")
            .await,
        "00"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        h.refund("order-7", RefundKind::Full, 350_000, "Refund a")
            .await,
        "94"
    );
    assert_eq!(h.balance("order-7").await.refunded, 350_000);
}
