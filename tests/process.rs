//! Real `holdfast` processes: a flash sale, `kill -9` in the middle of a load, hold expiry,
//! admission control and the operator commands. Each test has its own port, directory and
//! database; a failing test prints the server's log.
//!
//! Needs the binary: `cargo build --bin holdfast` (or `HOLDFAST_BIN=/path/to/holdfast`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use holdfast_tests::{Backend, PASSWORD, ServerProcess, hold_seats, poll_until, unique_email};
use serde_json::json;
use tokio::sync::Barrier;
use tokio::task::JoinSet;

holdfast_tests::on_both_backends!(
    flash_sale_sells_exactly_the_capacity,
    acknowledged_holds_survive_kill_9,
    holds_expire_on_their_own,
    full_mailbox_answers_503_overloaded,
    operator_commands,
    environment_variables_configure_the_server,
    staff_belong_to_an_organizer,
    the_waiting_room_survives_kill_9,
);

const FLASH_CAPACITY: usize = 100;
const FLASH_BUYERS: usize = 300;

/// 300 buyers, 100 seats, one seat each, all at once: exactly 100 holds, no 5xx.
async fn flash_sale_sells_exactly_the_capacity(backend: Backend) {
    let server = ServerProcess::start(backend, &[]).await;
    let api = server.client().clone();
    let organizer = server.organizer_token().await;
    let event = api
        .create_ga_event(&organizer, FLASH_CAPACITY as u32, Some(1))
        .await;
    let started = Instant::now();
    let buyers = api.customer_tokens(FLASH_BUYERS, 16).await;
    eprintln!(
        "registered and logged in {FLASH_BUYERS} buyers in {:?}",
        started.elapsed()
    );

    let barrier = Arc::new(Barrier::new(FLASH_BUYERS));
    let mut tasks = JoinSet::new();
    for token in buyers.clone() {
        let (api, event, barrier) = (api.clone(), event.clone(), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            let reply = api.hold(&token, &event, &[("GA", 1)]).await;
            (token, reply)
        });
    }
    let started = Instant::now();
    let mut placed = Vec::new();
    let mut sold_out = 0;
    while let Some(done) = tasks.join_next().await {
        let (token, reply) = done.expect("hold task");
        match reply.status {
            201 => {
                assert_eq!(reply.body["status"], "active", "{reply}");
                placed.push((token, reply.body["id"].as_str().expect("id").to_owned()));
            }
            409 => {
                reply.assert_problem(409, "sold-out");
                assert_eq!(
                    reply.body["available"],
                    json!([{"ticket_type": "GA", "available": 0}])
                );
                sold_out += 1;
            }
            _ => panic!("unexpected answer to a flash-sale hold: {reply}"),
        }
    }
    eprintln!(
        "{FLASH_BUYERS} concurrent holds answered in {:?}",
        started.elapsed()
    );
    assert_eq!(placed.len(), FLASH_CAPACITY, "exactly the capacity is held");
    assert_eq!(sold_out, FLASH_BUYERS - FLASH_CAPACITY);

    let stock = api.stock(&event, "GA").await;
    assert_eq!(
        (stock.available, stock.held, stock.sold),
        (0, FLASH_CAPACITY as u64, 0)
    );
    for (token, id) in &placed {
        let hold = api.get_hold(token, id).await;
        hold.assert_status(200);
        assert_eq!(hold.body["status"], "active", "{hold}");
        assert_eq!(hold_seats(&hold.body)["GA"], 1);
    }
    // Each winner is at their limit of one.
    let (token, _) = &placed[0];
    api.hold(token, &event, &[("GA", 1)])
        .await
        .assert_problem(409, "limit-exceeded");
}

/// What the load tasks of a crash round saw.
#[derive(Debug, Default)]
struct Load {
    /// Holds answered 201: (token, hold id, seats).
    acknowledged: Vec<(String, String, u64)>,
    /// Seats of requests that got no answer (the server died): they may or may not be held.
    unanswered_seats: u64,
}

const LOAD_TASKS: usize = 8;

/// Holds of 1–2 seats from 8 clients until the server dies (or 30 s pass).
async fn load_until_killed(
    server: &mut ServerProcess,
    event: &str,
    buyers: &[String],
    round: usize,
) -> Load {
    let api = server.client().clone();
    let held_before = api.stock(event, "GA").await.held;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for (task, token) in buyers.iter().enumerate() {
        let (api, event, token, stop) = (
            api.clone(),
            event.to_owned(),
            token.clone(),
            Arc::clone(&stop),
        );
        tasks.spawn(async move {
            let mut load = Load::default();
            let deadline = Instant::now() + Duration::from_secs(30);
            for i in 0.. {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let seats = 1 + ((i + task + round) % 2) as u64;
                match api.try_hold(&token, &event, &[("GA", seats as i64)]).await {
                    Ok(reply) => {
                        assert_eq!(reply.status, 201, "hold under load: {reply}");
                        let id = reply.body["id"].as_str().expect("hold id").to_owned();
                        load.acknowledged.push((token.clone(), id, seats));
                    }
                    // No answer: the server is gone; this request may or may not have been held.
                    Err(_) => {
                        load.unanswered_seats += seats;
                        break;
                    }
                }
            }
            load
        });
    }
    // Kill once the load is well under way (150 more seats held), with requests in flight.
    let warmed = poll_until(Duration::from_secs(20), Duration::from_millis(20), || {
        let api = api.clone();
        let event = event.to_owned();
        async move {
            let stock = api.stock(&event, "GA").await;
            (stock.held >= held_before + 150).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill9().await;
    stop.store(true, Ordering::Relaxed);
    let mut total = Load::default();
    while let Some(done) = tasks.join_next().await {
        let load = done.expect("load task");
        total.acknowledged.extend(load.acknowledged);
        total.unanswered_seats += load.unanswered_seats;
    }
    assert!(
        warmed.is_some(),
        "the load did not get going within 20 s ({} holds acknowledged)",
        total.acknowledged.len()
    );
    total
}

/// `kill -9` under load, twice: every acknowledged hold is still there after each restart.
async fn acknowledged_holds_survive_kill_9(backend: Backend) {
    const CAPACITY: u64 = 1_000_000;
    let mut server = ServerProcess::start(backend, &[]).await;
    let api = server.client().clone();
    let organizer = server.organizer_token().await;
    let event = api.create_ga_event(&organizer, CAPACITY as u32, None).await;
    let buyers = api.customer_tokens(LOAD_TASKS, LOAD_TASKS).await;

    let mut acknowledged = Vec::new();
    let mut unanswered_seats = 0;
    for round in 0..2 {
        let load = load_until_killed(&mut server, &event, &buyers, round).await;
        eprintln!(
            "round {round}: {} holds acknowledged, {} seats unanswered at the kill",
            load.acknowledged.len(),
            load.unanswered_seats
        );
        acknowledged.extend(load.acknowledged);
        unanswered_seats += load.unanswered_seats;
        server.restart().await;
        let api = server.client();

        let acknowledged_seats: u64 = acknowledged.iter().map(|(_, _, seats)| seats).sum();
        let stock = api.stock(&event, "GA").await;
        assert_eq!(stock.sold, 0);
        assert_eq!(stock.available + stock.held + stock.sold, CAPACITY);
        assert!(
            stock.held >= acknowledged_seats,
            "round {round}: {} seats held after the restart, {acknowledged_seats} acknowledged",
            stock.held
        );
        assert!(
            stock.held <= acknowledged_seats + unanswered_seats,
            "round {round}: {} seats held, more than the {acknowledged_seats} acknowledged and \
             {unanswered_seats} unanswered",
            stock.held
        );
        for (token, id, seats) in &acknowledged {
            let hold = api.get_hold(token, id).await;
            hold.assert_status(200);
            assert_eq!(
                hold.body["status"], "active",
                "hold {id} after kill -9: {hold}"
            );
            assert_eq!(
                hold_seats(&hold.body),
                BTreeMap::from([("GA".to_owned(), *seats)]),
                "hold {id} keeps its seats"
            );
        }
    }
    // The node serves writes after the crashes.
    server
        .client()
        .hold(&buyers[0], &event, &[("GA", 1)])
        .await
        .assert_status(201);
}

const HOLD_TTL_SECS: u64 = 2;

/// With a 2 s hold TTL, holds expire by themselves and the expiry is durable.
async fn holds_expire_on_their_own(backend: Backend) {
    let mut server = ServerProcess::start(backend, &[("HOLDFAST_HOLD_TTL", "2")]).await;
    let api = server.client().clone();
    let organizer = server.organizer_token().await;
    let customer = api.customer_token().await;
    let watched = api.create_ga_event(&organizer, 10, None).await;
    let untouched = api.create_ga_event(&organizer, 10, None).await;

    // The untouched event gets one hold, then no request at all until its hold has expired.
    let quiet = api.hold(&customer, &untouched, &[("GA", 4)]).await;
    quiet.assert_status(201);
    let quiet_id = quiet.body["id"].as_str().expect("id").to_owned();
    let position = server
        .sandbox()
        .database()
        .journal_position(&untouched)
        .await;

    let sent = Instant::now();
    let placed = api.hold(&customer, &watched, &[("GA", 3)]).await;
    let answered = Instant::now();
    placed.assert_status(201);
    let id = placed.body["id"].as_str().expect("id").to_owned();
    assert_eq!(api.stock(&watched, "GA").await.held, 3);

    // Poll the watched hold alone until it is expired.
    let expired_at = poll_until(Duration::from_secs(10), Duration::from_millis(100), || {
        let (api, customer, id) = (api.clone(), customer.clone(), id.clone());
        async move {
            let hold = api.get_hold(&customer, &id).await;
            hold.assert_status(200);
            match hold.body["status"].as_str() {
                Some("active") => None,
                Some("expired") => Some(Instant::now()),
                _ => panic!("a hold nobody touched became {hold}"),
            }
        }
    })
    .await
    .expect("the hold did not expire within 10 s");
    let ttl = Duration::from_secs(HOLD_TTL_SECS);
    assert!(
        expired_at >= sent + ttl,
        "expired after {:?}, before its TTL",
        expired_at - sent
    );
    assert!(
        expired_at <= answered + ttl + Duration::from_millis(1500),
        "expired {:?} after the answer, more than the TTL plus a margin",
        expired_at - answered
    );
    let stock = api.stock(&watched, "GA").await;
    assert_eq!(
        (stock.available, stock.held),
        (10, 0),
        "seats are back on sale"
    );

    // No request touched the other event since its hold; its timer alone journaled the expiry.
    let quiet_deadline = sent + ttl + Duration::from_millis(1500);
    tokio::time::sleep(quiet_deadline.saturating_duration_since(Instant::now())).await;
    assert_eq!(
        server
            .sandbox()
            .database()
            .journal_position(&untouched)
            .await,
        position + 1,
        "the expiry of an untouched hold is journaled by the actor's timer"
    );
    assert_eq!(
        api.get_hold(&customer, &quiet_id).await.body["status"],
        "expired"
    );
    assert_eq!(api.stock(&untouched, "GA").await.available, 10);

    // Expired stays expired after a crash.
    server.kill9().await;
    server.restart().await;
    let api = server.client();
    for (event, hold) in [(&watched, &id), (&untouched, &quiet_id)] {
        let after = api.get_hold(&customer, hold).await;
        after.assert_status(200);
        assert_eq!(after.body["status"], "expired", "{after}");
        let stock = api.stock(event, "GA").await;
        assert_eq!((stock.available, stock.held), (10, 0));
    }
}

const OVERLOAD_REQUESTS: usize = 200;
const OVERLOAD_CAPACITY: u64 = 150;

/// A mailbox of one: concurrent holds beyond it get 503 `overloaded` with `Retry-After`.
async fn full_mailbox_answers_503_overloaded(backend: Backend) {
    let server = ServerProcess::start(
        backend,
        &[
            ("HOLDFAST_MAILBOX_CAPACITY", "1"),
            ("HOLDFAST_BATCH_SIZE_MAX", "1"),
        ],
    )
    .await;
    let api = server.client().clone();
    let organizer = server.organizer_token().await;
    let event = api
        .create_ga_event(&organizer, OVERLOAD_CAPACITY as u32, None)
        .await;
    let buyers = api.customer_tokens(4, 4).await;
    // The event's actor is started before the rush.
    assert_eq!(api.stock(&event, "GA").await.available, OVERLOAD_CAPACITY);

    let barrier = Arc::new(Barrier::new(OVERLOAD_REQUESTS));
    let mut tasks = JoinSet::new();
    for i in 0..OVERLOAD_REQUESTS {
        let (api, event, barrier) = (api.clone(), event.clone(), Arc::clone(&barrier));
        let token = buyers[i % buyers.len()].clone();
        tasks.spawn(async move {
            barrier.wait().await;
            api.hold(&token, &event, &[("GA", 1)]).await
        });
    }
    let mut counts = BTreeMap::<u16, u64>::new();
    while let Some(done) = tasks.join_next().await {
        let reply = done.expect("hold task");
        *counts.entry(reply.status).or_default() += 1;
        match reply.status {
            201 => {}
            409 => {
                reply.assert_problem(409, "sold-out");
            }
            503 => {
                reply.assert_problem(503, "overloaded");
                assert!(
                    reply
                        .header("retry-after")
                        .is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s >= 1)),
                    "503 without a Retry-After in seconds: {reply:?}"
                );
            }
            _ => panic!("unexpected answer under overload: {reply}"),
        }
    }
    eprintln!("answers under overload: {counts:?}");
    assert!(
        counts.get(&503).is_some_and(|&n| n > 0),
        "a mailbox of one under {OVERLOAD_REQUESTS} concurrent holds refused none: {counts:?}"
    );
    let placed = counts.get(&201).copied().unwrap_or(0);
    assert!(placed > 0, "no hold got through: {counts:?}");
    let stock = api.stock(&event, "GA").await;
    assert_eq!(stock.held, placed, "held seats are the acknowledged holds");
    // Once the rush is over the event serves again.
    if stock.available > 0 {
        api.hold(&buyers[0], &event, &[("GA", 1)])
            .await
            .assert_status(201);
    }
}

/// `holdfast migrate` and `holdfast users add`.
async fn operator_commands(backend: Backend) {
    let mut server = ServerProcess::start(backend, &[]).await;
    let email = unique_email("organizer");
    let add = [
        "users",
        "add",
        email.as_str(),
        "--role",
        "organizer",
        "--password-stdin",
    ];

    let migrate = server.cli(&["migrate"], "").await;
    assert!(
        migrate.status.success(),
        "holdfast migrate failed: {}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(String::from_utf8_lossy(&migrate.stderr).contains("up to date"));

    let weak = server.cli(&add, "short\n").await;
    let stderr = String::from_utf8_lossy(&weak.stderr);
    assert!(!weak.status.success(), "a weak password was accepted");
    assert!(
        stderr.contains("password must be at least 8 characters"),
        "no clear message for a weak password: {stderr}"
    );
    let same_as_email = server.cli(&add, &format!("{email}\n")).await;
    assert!(!same_as_email.status.success());
    assert!(
        String::from_utf8_lossy(&same_as_email.stderr).contains("password must not be the email"),
        "{}",
        String::from_utf8_lossy(&same_as_email.stderr)
    );
    let bad_role = server
        .cli(
            &[
                "users",
                "add",
                &email,
                "--role",
                "emperor",
                "--password-stdin",
            ],
            &format!("{PASSWORD}\n"),
        )
        .await;
    assert!(!bad_role.status.success());
    assert!(
        String::from_utf8_lossy(&bad_role.stderr).contains("role must be one of"),
        "{}",
        String::from_utf8_lossy(&bad_role.stderr)
    );
    // Nothing was created by the refused commands.
    server
        .client()
        .login(&email, PASSWORD)
        .await
        .assert_problem(401, "invalid-credentials");

    let added = server.cli(&add, &format!("{PASSWORD}\n")).await;
    assert!(
        added.status.success(),
        "holdfast users add failed: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let stderr = String::from_utf8_lossy(&added.stderr);
    assert!(stderr.contains(&email));
    let database = holdfast_engine::node::redact(server.sandbox().database().url());
    assert!(
        stderr.contains(&format!(" to {database}")),
        "users add names the database it wrote: {stderr}"
    );
    let again = server.cli(&add, &format!("{PASSWORD}\n")).await;
    assert!(!again.status.success(), "the same email was added twice");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already registered"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let api = server.client();
    let token = api.login_token(&email, PASSWORD).await;
    api.create_ga_event(&token, 10, None).await;

    // Migrating a database in use is a no-op, and the server still serves after a restart.
    let migrate = server.cli(&["migrate"], "").await;
    assert!(migrate.status.success());
    server.restart().await;
    server.client().login_token(&email, PASSWORD).await;
}

/// API.md: settings come from `HOLDFAST_*` variables (the harness passes nothing else).
async fn environment_variables_configure_the_server(backend: Backend) {
    let server = ServerProcess::start(backend, &[("HOLDFAST_HOLD_TTL", "120")]).await;
    // Ready on HOLDFAST_HTTP_ADDR (start_with waited for it), with HOLDFAST_DATABASE_URL and
    // HOLDFAST_JWT_SECRET: an operator account added with the same variables can log in.
    let organizer = server.organizer_token().await;
    let api = server.client();
    let customer = api.customer_token().await;
    let event = api.create_ga_event(&organizer, 5, None).await;
    let before = time::OffsetDateTime::now_utc();
    let hold = api.hold(&customer, &event, &[("GA", 1)]).await;
    hold.assert_status(201);
    let expires_at = time::OffsetDateTime::parse(
        hold.body["expires_at"].as_str().expect("expires_at"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339 expires_at");
    let ttl = expires_at - before;
    assert!(
        (119.0..=125.0).contains(&ttl.as_seconds_f64()),
        "HOLDFAST_HOLD_TTL=120 gave a hold of {ttl}"
    );
    let data_dir = server.sandbox().data_dir();
    assert!(
        !data_dir.join("jwt.secret").exists(),
        "HOLDFAST_JWT_SECRET was set: no secret file is generated"
    );
    if backend == Backend::Sqlite {
        assert!(
            data_dir.join("holdfast.db").exists(),
            "the SQLite database lives in HOLDFAST_DATA_DIR"
        );
    }
    assert!(
        !server.sandbox().working_dir().join("data").exists(),
        "nothing was written to the default ./data"
    );
}

/// `holdfast vnpay-sim`: the payment page of a correctly signed payment URL shows the order,
/// Pay calls the merchant's IPN with a correctly signed paid result and sends the browser back
/// to the merchant's return URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vnpay_sim_pays_and_calls_the_merchant_ipn() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // The merchant's IPN endpoint: answers one request and hands over its query.
    let merchant = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let merchant_addr = merchant.local_addr().expect("address");
    let ipn = tokio::spawn(async move {
        let (mut socket, _) = merchant.accept().await.expect("the IPN call");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = socket.read(&mut buf).await.expect("read the IPN");
            assert!(n > 0, "IPN request cut short");
            request.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"RspCode":"00","Message":"Confirm Success"}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket
            .write_all(reply.as_bytes())
            .await
            .expect("answer the IPN");
        let text = String::from_utf8_lossy(&request).into_owned();
        let target = text
            .split_whitespace()
            .nth(1)
            .expect("a request target")
            .to_owned();
        target
            .split_once('?')
            .map(|(_, q)| q.to_owned())
            .expect("IPN parameters")
    });

    let port = holdfast_tests::free_port();
    let secret = "vnpay-sim-test-secret-0123456789";
    let mut sim = tokio::process::Command::new(holdfast_tests::holdfast_bin())
        .args([
            "vnpay-sim",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--tmn-code",
            "HFTEST",
        ])
        .args([
            "--hash-secret",
            secret,
            "--merchant-ipn-url",
            &format!("http://{merchant_addr}/ipn"),
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start holdfast vnpay-sim");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let up = poll_until(Duration::from_secs(30), Duration::from_millis(50), || {
        let (http, base) = (http.clone(), base.clone());
        async move { http.get(format!("{base}/")).send().await.ok().map(|_| ()) }
    })
    .await;
    assert!(up.is_some(), "vnpay-sim did not start");

    let config = holdfast_vnpay::Config {
        tmn_code: "HFTEST".into(),
        hash_secret: secret.into(),
        pay_url: format!("{base}/paymentv2/vpcpay.html"),
        return_url: "http://127.0.0.1:1/v1/payments/vnpay/return".into(),
        ipn_url: None,
        version: "2.1.0".into(),
        locale: holdfast_vnpay::Locale::default(),
    };
    let now = time::OffsetDateTime::now_utc();
    let request = holdfast_vnpay::PaymentRequest {
        txn_ref: "order-42".into(),
        amount_minor: 500_000,
        order_info: "Holdfast order 42".into(),
        ip_addr: std::net::IpAddr::from([127, 0, 0, 1]),
        create_date: now,
        expire_date: now + Duration::from_secs(900),
        bank_code: None,
        locale: None,
    };
    let url = holdfast_vnpay::payment_url(&config, &request).expect("payment url");
    let page = http.get(&url).send().await.expect("payment page");
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.expect("page");
    assert!(
        html.contains("order-42") && html.contains("500,000 VND"),
        "{html}"
    );

    let raw_query = url
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .expect("query");
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &raw_query)
        .finish();
    let paid = http
        .post(format!("{base}/paymentv2/pay"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("pay");
    assert_eq!(paid.status().as_u16(), 302);
    let back = paid
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect")
        .to_owned();
    assert!(back.starts_with(&config.return_url), "{back}");

    let query = tokio::time::timeout(Duration::from_secs(10), ipn)
        .await
        .expect("IPN within 10 s")
        .expect("IPN task");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let verified =
        holdfast_vnpay::verify(&config, &pairs).expect("the IPN is signed with the shared secret");
    assert!(verified.is_paid());
    assert_eq!(
        (verified.txn_ref.as_str(), verified.amount_minor),
        ("order-42", 500_000)
    );
    let _ = sim.kill().await;
}

/// The secret the embedded default's demo merchant used before it generated its own: public,
/// so anyone could sign a "paid" IPN with it.
const OLD_DEMO_VNPAY_SECRET: &str = "holdfast-demo-secret-for-vnpay-sim-only";

/// The embedded default with no VNPAY settings: its demo merchant's secret is generated in the
/// data directory (0600), an IPN signed with the old published demo secret is refused (97) and
/// changes nothing, and `holdfast vnpay-sim` run with the same settings still completes a
/// purchase (it reads the secret there and calls the server's IPN at HOLDFAST_HTTP_ADDR).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_pays_with_a_secret_of_its_own() {
    use std::os::unix::fs::PermissionsExt as _;

    let sim_addr = format!("127.0.0.1:{}", holdfast_tests::free_port());
    let server = ServerProcess::start_without(
        Backend::Sqlite,
        &[
            "HOLDFAST_VNPAY_TMN_CODE",
            "HOLDFAST_VNPAY_HASH_SECRET",
            "HOLDFAST_TICKET_SIGNING_KEY",
            "HOLDFAST_JWT_SECRET",
        ],
        &[("HOLDFAST_VNPAY_SIM_ADDR", &sim_addr)],
    )
    .await;
    assert!(
        server.log().contains(&format!(
            "`holdfast vnpay-sim` (http://{sim_addr}, secret in"
        )),
        "the startup warning names HOLDFAST_VNPAY_SIM_ADDR: {}",
        server.log()
    );
    let secret_path = server.sandbox().data_dir().join("vnpay-demo.secret");
    let secret = std::fs::read_to_string(&secret_path).expect("a generated demo secret");
    assert!(secret.trim().len() >= 32 && secret.trim() != OLD_DEMO_VNPAY_SECRET);
    let mode = std::fs::metadata(&secret_path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the demo secret is private");

    let api = server.client();
    let organizer = server.organizer_token().await;
    let buyer = api.customer_token().await;
    let event = api.create_ga_event(&organizer, 5, None).await;
    let hold = api.hold(&buyer, &event, &[("GA", 1)]).await;
    hold.assert_status(201);
    let order = api
        .post(
            "/v1/orders",
            Some(&buyer),
            &json!({"hold_id": hold.body["id"]}),
        )
        .await;
    order.assert_status(201);
    let id = order.body["id"].as_str().expect("order id").to_owned();
    let path = format!("/v1/orders/{id}");
    let payment_url = poll_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let reply = api.get(&path, Some(&buyer)).await;
            reply.body["payment_url"].as_str().map(str::to_owned)
        },
    )
    .await
    .expect("a payment URL");
    let sim_url = format!("http://{sim_addr}");
    assert!(
        payment_url.starts_with(&format!("{sim_url}/paymentv2/vpcpay.html?")),
        "the demo merchant's payment page follows HOLDFAST_VNPAY_SIM_ADDR: {payment_url}"
    );

    // An attacker signs "paid" with the old published secret.
    let amount = order.body["amount"].as_i64().expect("amount");
    let forged = [
        ("vnp_Amount", (amount * 100).to_string()),
        ("vnp_BankCode", "NCB".to_owned()),
        ("vnp_OrderInfo", format!("Holdfast order {id}")),
        ("vnp_PayDate", "20261128153000".to_owned()),
        ("vnp_ResponseCode", "00".to_owned()),
        ("vnp_TmnCode", "HOLDFAST".to_owned()),
        ("vnp_TransactionNo", "14999001".to_owned()),
        ("vnp_TransactionStatus", "00".to_owned()),
        ("vnp_TxnRef", id.clone()),
    ];
    let query = holdfast_vnpay::encoding::signed_query(OLD_DEMO_VNPAY_SECRET, &forged);
    let ipn = api
        .get(&format!("/v1/payments/vnpay/ipn?{query}"), None)
        .await;
    ipn.assert_status(200);
    assert_eq!(ipn.body["RspCode"], "97", "{ipn}");
    assert_eq!(
        api.get(&path, Some(&buyer)).await.body["status"],
        "pending_payment"
    );

    // Without the secret file, the stand-in says what to do.
    let empty = tempfile::tempdir().expect("directory");
    let mut elsewhere = server.env().to_vec();
    elsewhere.push((
        "HOLDFAST_DATA_DIR".to_owned(),
        empty.path().display().to_string(),
    ));
    let missing = holdfast_tests::run_cli(
        &elsewhere,
        &server.sandbox().working_dir(),
        &["vnpay-sim"],
        "",
    )
    .await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("start `holdfast serve` first, or pass --hash-secret-file"),
        "{stderr}"
    );

    // The stand-in with the server's own settings: no flags at all.
    let mut sim = holdfast_tests::holdfast_command(server.env(), &server.sandbox().working_dir())
        .arg("vnpay-sim")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start holdfast vnpay-sim");
    let up = poll_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { reqwest::get(format!("{sim_url}/")).await.ok().map(|_| ()) },
    )
    .await;
    assert!(up.is_some(), "vnpay-sim did not start");
    holdfast_tests::press(&sim_url, &payment_url, true).await;
    let confirmed = poll_until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            let reply = api.get(&path, Some(&buyer)).await;
            (reply.body["status"] == "confirmed").then_some(())
        },
    )
    .await;
    assert!(
        confirmed.is_some(),
        "the stand-in's payment confirms the order"
    );
    let _ = sim.kill().await;
}

/// Outside the embedded demo, and whenever a secret is set explicitly, a node refuses the
/// secrets this project publishes (the old demo secret, the deployment files' placeholders,
/// the RFC 8032 test seed), naming the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_secrets_are_refused() {
    let published = [
        ("HOLDFAST_VNPAY_HASH_SECRET", OLD_DEMO_VNPAY_SECRET),
        (
            "HOLDFAST_VNPAY_HASH_SECRET",
            "change-me-to-the-secret-from-vnpay",
        ),
        (
            "HOLDFAST_JWT_SECRET",
            "change-me-to-32-or-more-random-bytes!!",
        ),
        (
            "HOLDFAST_TICKET_SIGNING_KEY",
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        ),
    ];
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let sandbox = holdfast_tests::Sandbox::new(backend).await;
        std::fs::create_dir_all(sandbox.working_dir()).expect("working directory");
        let port = holdfast_tests::free_port();
        for (setting, secret) in published {
            let mut env = sandbox.env(port);
            env.retain(|(k, _)| k != setting);
            env.push((setting.to_owned(), secret.to_owned()));
            let out = holdfast_tests::run_cli(&env, &sandbox.working_dir(), &["serve"], "").await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success()
                    && stderr.contains(&format!("{setting} is a secret published")),
                "{backend:?} {setting}={secret}: {}\n{stderr}",
                out.status
            );
        }
    }
}

/// `holdfast … | head`: a reader that closed its end of the pipe ends the command quietly,
/// with no panic (`failed printing to stdout`) and no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_exit_quietly_when_their_output_is_closed() {
    use axum::routing::get;

    let shards: Vec<_> = (0..256)
        .map(|shard| {
            json!({"shard": shard, "owner": if shard < 200 { "n0" } else { "n1" },
                            "epoch": 1, "events": shard % 7})
        })
        .collect();
    let nodes = json!([
        {"node": "n0", "addr": "127.0.0.1:7070", "http_addr": "127.0.0.1:8080", "live": true, "shards": 200},
        {"node": "n1", "addr": "127.0.0.1:7071", "http_addr": "127.0.0.1:8081", "live": true, "shards": 56},
    ]);
    let admin = axum::Router::new()
        .route(
            "/v1/admin/shards",
            get(move || async move { axum::Json(json!(shards)) }),
        )
        .route(
            "/v1/admin/nodes",
            get(move || async move { axum::Json(nodes) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, admin).await });

    let cwd = tempfile::tempdir().expect("directory");
    let admin = ["--url", url.as_str(), "--token", "t"];
    let commands: [Vec<&str>; 5] = [
        [&["shards", "list"][..], &admin].concat(),
        [&["shards", "list", "--json"][..], &admin].concat(),
        [&["shards", "rebalance", "--dry-run"][..], &admin].concat(),
        vec!["--help"],
        vec!["--version"],
    ];
    for args in commands {
        // The reader is gone before the command writes a byte.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let child = holdfast_tests::holdfast_command(&[], cwd.path())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start holdfast");
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the command ends")
            .expect("run the command");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.is_empty(),
            "holdfast {args:?} | (closed): {}\n{stderr}",
            out.status
        );
    }

    // A command that reports on standard error (and logs there) with that closed too.
    let data = cwd.path().join("data");
    let env = [("HOLDFAST_DATA_DIR".to_owned(), data.display().to_string())];
    let closed = || {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        writer
    };
    let status = holdfast_tests::holdfast_command(&env, cwd.path())
        .arg("migrate")
        .stdin(std::process::Stdio::null())
        .stdout(closed())
        .stderr(closed())
        .kill_on_drop(true)
        .status();
    let status = tokio::time::timeout(Duration::from_secs(60), status)
        .await
        .expect("the command ends")
        .expect("run the command");
    assert!(
        status.success(),
        "holdfast migrate 2>&1 | (closed): {status}"
    );
    assert!(data.join("holdfast.db").exists(), "the migration ran");
}

/// `holdfast users add --role staff --organizer EMAIL`: staff need an organizer, only staff
/// take one, and the staff member then checks in at that organizer's events only.
async fn staff_belong_to_an_organizer(backend: Backend) {
    let server = ServerProcess::start(backend, &[]).await;
    let api = server.client();
    let add = |email: &str, role: &str, organizer: Option<&str>| {
        let mut args = vec![
            "users".to_owned(),
            "add".to_owned(),
            email.to_owned(),
            "--role".to_owned(),
            role.to_owned(),
            "--password-stdin".to_owned(),
        ];
        if let Some(organizer) = organizer {
            args.extend(["--organizer".to_owned(), organizer.to_owned()]);
        }
        args
    };
    let srv = &server;
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = srv.cli(&args, &format!("{PASSWORD}\n")).await;
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let organizer = unique_email("organizer");
    assert!(run(add(&organizer, "organizer", None)).await.0);
    let customer = unique_email("customer");
    api.register(&customer, PASSWORD, "Customer")
        .await
        .assert_status(201);
    let staff = unique_email("staff");
    for (args, message) in [
        (add(&staff, "staff", None), "--organizer"),
        (
            add(&staff, "organizer", Some(&organizer)),
            "--organizer is for staff only",
        ),
        (add(&staff, "staff", Some(&customer)), "not an organizer"),
        (
            add(&staff, "staff", Some("nobody@example.com")),
            "no account is registered",
        ),
    ] {
        let (ok, stderr) = run(args).await;
        assert!(!ok, "accepted: {stderr}");
        assert!(stderr.contains(message), "no clear message: {stderr}");
    }
    api.login(&staff, PASSWORD)
        .await
        .assert_problem(401, "invalid-credentials");
    let (ok, stderr) = run(add(&staff, "staff", Some(&organizer))).await;
    assert!(ok, "holdfast users add failed: {stderr}");

    let own = api
        .create_ga_event(&api.login_token(&organizer, PASSWORD).await, 10, None)
        .await;
    let other = api
        .create_ga_event(&server.organizer_token().await, 10, None)
        .await;
    let door = api.login_token(&staff, PASSWORD).await;
    let scan = |event: String| {
        let door = door.clone();
        async move {
            api.post(
                "/v1/checkin",
                Some(&door),
                &json!({"code": "HF1.bm90LWEtdGlja2V0.c2ln", "event_id": event}),
            )
            .await
        }
    };
    // Past the door check at its organizer's event (the code itself is not genuine).
    scan(own).await.assert_problem(422, "invalid-ticket");
    scan(other).await.assert_problem(403, "forbidden");
}

/// `holdfast users add` from a directory without the server's database refuses to create one
/// there, names the path and what to do; with the database it says which one it wrote. Help
/// texts describe every argument.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_add_writes_only_an_existing_database_and_says_which() {
    let cwd = tempfile::tempdir().expect("directory");
    let add = [
        "users",
        "add",
        "door@example.com",
        "--role",
        "organizer",
        "--password-stdin",
    ];
    let out = holdfast_tests::run_cli(&[], cwd.path(), &add, &format!("{PASSWORD}\n")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a database was created unasked");
    assert!(
        stderr.contains("no database at data/holdfast.db")
            && stderr.contains("holdfast migrate")
            && stderr.contains("HOLDFAST_DATA_DIR"),
        "{stderr}"
    );
    assert!(!cwd.path().join("data").exists(), "./data was created");

    let migrate = holdfast_tests::run_cli(&[], cwd.path(), &["migrate"], "").await;
    assert!(migrate.status.success(), "{migrate:?}");
    let elsewhere = tempfile::tempdir().expect("directory");
    let data_dir = cwd.path().join("data");
    let with_dir = [&add[..], &["--data-dir", data_dir.to_str().expect("path")]].concat();
    let out =
        holdfast_tests::run_cli(&[], elsewhere.path(), &with_dir, &format!("{PASSWORD}\n")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "to sqlite://{}",
            data_dir.join("holdfast.db").display()
        )),
        "users add names the database it wrote: {stderr}"
    );

    for (args, help) in [
        (&["shards", "list", "--help"][..], "\"nodes\""),
        (
            &["shards", "drain", "--help"][..],
            "Show the plan, move nothing",
        ),
        (&["shards", "move", "--help"][..], "The node id"),
        (&["users", "add", "--help"][..], "e-mail address"),
    ] {
        let out = holdfast_tests::run_cli(&[], cwd.path(), args, "").await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(help), "holdfast {args:?}: {stdout}");
    }
}

/// Settings mistakes are found before anything is created: a port in use before secrets are
/// generated, a cluster node's missing VNPAY merchant before it joins the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_checked_before_secrets_and_joining() {
    let sandbox = holdfast_tests::Sandbox::new(Backend::Sqlite).await;
    std::fs::create_dir_all(sandbox.working_dir()).expect("working directory");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let mut env = sandbox.env(port);
    env.retain(|(k, _)| {
        !matches!(
            k.as_str(),
            "HOLDFAST_JWT_SECRET"
                | "HOLDFAST_VNPAY_TMN_CODE"
                | "HOLDFAST_VNPAY_HASH_SECRET"
                | "HOLDFAST_TICKET_SIGNING_KEY"
        )
    });
    let out = holdfast_tests::run_cli(&env, &sandbox.working_dir(), &["serve"], "").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(&format!("binding the API to 127.0.0.1:{port}")),
        "{stderr}"
    );
    for file in ["jwt.secret", "vnpay-demo.secret", "ticket-signing.key"] {
        assert!(
            !sandbox.data_dir().join(file).exists(),
            "{file} was generated before the port was found in use"
        );
    }
    drop(taken);

    let cluster = holdfast_tests::Sandbox::new(Backend::Postgres).await;
    std::fs::create_dir_all(cluster.working_dir()).expect("working directory");
    let mut env = cluster.env(holdfast_tests::free_port());
    env.retain(|(k, _)| k != "HOLDFAST_VNPAY_TMN_CODE");
    env.extend([
        ("HOLDFAST_NODE_ID".to_owned(), "n1".to_owned()),
        (
            "HOLDFAST_INTERNAL_ADDR".to_owned(),
            format!("127.0.0.1:{}", holdfast_tests::free_port()),
        ),
        (
            "HOLDFAST_OPS_ADDR".to_owned(),
            format!("127.0.0.1:{}", holdfast_tests::free_port()),
        ),
    ]);
    let out = holdfast_tests::run_cli(&env, &cluster.working_dir(), &["serve"], "").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("HOLDFAST_VNPAY_TMN_CODE"),
        "{stderr}"
    );
    let migrate = holdfast_tests::run_cli(&env, &cluster.working_dir(), &["migrate"], "").await;
    assert!(migrate.status.success(), "{migrate:?}");
    assert_eq!(
        cluster.database().count_rows("cluster_nodes").await,
        0,
        "the node joined the cluster before its settings were checked"
    );
}

/// A refused PostgreSQL connection fails at once and says so; a missing database is named
/// once, not once per layer of the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_are_prompt_and_said_once() {
    let cwd = tempfile::tempdir().expect("directory");
    let refused = format!(
        "postgres://holdfast@127.0.0.1:{}/holdfast",
        holdfast_tests::free_port()
    );
    let env = [("HOLDFAST_DATABASE_URL".to_owned(), refused)];
    let started = Instant::now();
    let out = holdfast_tests::run_cli(&env, cwd.path(), &["migrate"], "").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.to_lowercase().contains("connection refused"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refused connection took {:?}",
        started.elapsed()
    );

    let sandbox = holdfast_tests::Sandbox::new(Backend::Postgres).await;
    let url = sandbox.database().url();
    let (base, _) = url.rsplit_once('/').expect("a database name");
    let env = [(
        "HOLDFAST_DATABASE_URL".to_owned(),
        format!("{base}/holdfast_no_such_database"),
    )];
    let out = holdfast_tests::run_cli(&env, cwd.path(), &["migrate"], "").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.matches("does not exist").count(),
        1,
        "the error repeats itself: {stderr}"
    );
}

/// `HOLDFAST_HTTP_ADDR` takes a host name; `/openapi.json` names the node's own public URL and
/// ops listener; an unknown `HOLDFAST_*` variable is warned about with the nearest setting;
/// `shards move` on a single node refuses before printing a plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_documents_follow_the_node() {
    let public = "https://tickets.example.com";
    let server = ServerProcess::start(
        Backend::Sqlite,
        &[("HOLDFAST_PUBLIC_URL", public), ("HOLDFAST_HOLD_TLL", "60")],
    )
    .await;
    let doc = server.client().get("/openapi.json", None).await;
    doc.assert_status(200);
    assert_eq!(doc.body["servers"][0]["url"], public);
    assert_eq!(
        doc.body["paths"]["/metrics"]["servers"][0]["url"],
        server.ops_client().base_url()
    );
    assert!(
        server.log().contains(
            "HOLDFAST_HOLD_TLL is not a setting and is ignored; did you mean HOLDFAST_HOLD_TTL?"
        ),
        "{}",
        server.log()
    );

    let admin = server.user_token("admin").await;
    let ops = server.ops_client().base_url().to_owned();
    let out = server
        .cli(
            &[
                "shards", "move", "3", "n2", "--url", &ops, "--token", &admin,
            ],
            "",
        )
        .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success());
    assert!(!stdout.contains("plan"), "a plan was printed: {stdout}");
    assert!(stderr.contains("is a single node"), "{stderr}");

    // A host name: the node binds what it resolves to.
    let sandbox = holdfast_tests::Sandbox::new(Backend::Sqlite).await;
    std::fs::create_dir_all(sandbox.working_dir()).expect("working directory");
    let port = holdfast_tests::free_port();
    let mut env = sandbox.env(port);
    env.push(("HOLDFAST_HTTP_ADDR".to_owned(), format!("localhost:{port}")));
    env.push((
        "HOLDFAST_OPS_ADDR".to_owned(),
        format!("localhost:{}", holdfast_tests::free_port()),
    ));
    let mut child = holdfast_tests::holdfast_command(&env, &sandbox.working_dir())
        .arg("serve")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start holdfast serve");
    let api = holdfast_tests::Client::new(format!("http://localhost:{port}"));
    let doc = poll_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { api.try_get("/openapi.json", None).await.ok() },
    )
    .await
    .expect("holdfast serve on HOLDFAST_HTTP_ADDR=localhost:PORT");
    assert_eq!(
        doc.body["servers"][0]["url"],
        format!("http://localhost:{port}")
    );
    let _ = child.kill().await;
}

/// The waiting room is journaled with the stock: `kill -9` before the opening keeps every buyer
/// of the pre-queue, and `kill -9` after the admissions keeps each admission, whose token
/// still places a hold.
async fn the_waiting_room_survives_kill_9(backend: Backend) {
    let mut server = ServerProcess::start(backend, &[]).await;
    let api = server.client().clone();
    let organizer = server.organizer_token().await;
    let opens = time::OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let created = api
        .post(
            "/v1/events",
            Some(&organizer),
            &json!({
                "name": "Queued Live", "starts_at": "2030-12-31T20:00:00Z",
                "sale_starts_at": opens.format(&time::format_description::well_known::Rfc3339).unwrap(),
                "queue": {"admit_per_minute": 6000, "active_max": 8, "admission_ttl_secs": 600},
                "ticket_types": [{"code": "GA", "name": "GA", "price": 0, "currency": "VND", "capacity": 20}],
            }),
        )
        .await;
    created.assert_status(201);
    let event = created.body["id"].as_str().unwrap().to_owned();
    let buyers = api.customer_tokens(8, 4).await;
    for buyer in &buyers {
        api.post(
            &format!("/v1/events/{event}/queue"),
            Some(buyer),
            &json!({}),
        )
        .await
        .assert_status(201);
    }
    server.kill9().await;
    server.restart().await;
    let api = server.client().clone();
    for buyer in &buyers {
        let place = api
            .get(&format!("/v1/events/{event}/queue/me"), Some(buyer))
            .await;
        place.assert_status(200);
        assert_eq!(
            place.body["status"], "waiting",
            "kept through kill -9: {place}"
        );
    }
    let mut tokens = Vec::new();
    for buyer in &buyers {
        let token = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let place = api
                    .get(&format!("/v1/events/{event}/queue/me"), Some(buyer))
                    .await;
                place.body["admission_token"].as_str().map(str::to_owned)
            },
        )
        .await
        .expect("every buyer is admitted after the opening");
        tokens.push(token);
    }
    server.kill9().await;
    server.restart().await;
    let api = server.client().clone();
    for (buyer, token) in buyers.iter().zip(&tokens) {
        let hold = api
            .send(
                reqwest::Method::POST,
                &format!("/v1/events/{event}/holds"),
                Some(buyer),
                Some(holdfast_tests::Body::Json(
                    &json!({"items": [{"ticket_type": "GA", "quantity": 1}]}),
                )),
                &[("holdfast-admission", token.as_str())],
            )
            .await;
        hold.assert_status(201);
    }
    let stock = api.stock(&event, "GA").await;
    assert_eq!((stock.available, stock.held), (12, 8));
}
