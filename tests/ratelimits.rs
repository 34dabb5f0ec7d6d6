//! Rate limits over HTTP: 429 `rate-limited` with `Retry-After` and the draft's `RateLimit`
//! headers, failed logins counting double, `X-Forwarded-For` only from trusted proxies,
//! `HOLDFAST_RATE_LIMITS=off`, limits shared by two nodes through a real Redis
//! (127.0.0.1:6379, which `./tests/run` starts) and local limits when Redis is unreachable.
//!
//! The harness turns limits off; every test here turns them on. Tests that share Redis (or
//! that need several clients) speak through 127.0.0.1 as a trusted proxy with a random client
//! address each, so parallel tests and earlier runs never share a bucket.

use holdfast_engine::Config;
use holdfast_engine::config::Switch;
use holdfast_tests::{
    Backend, Body, Client, InProcessNode, PASSWORD, Reply, ServerProcess, free_port, unique_email,
};
use reqwest::Method;
use serde_json::{Value, json};

holdfast_tests::on_both_backends!(
    past_the_limit_the_answer_is_429_with_rate_limit_headers,
    failed_logins_count_double,
);

const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Limits on, small enough to reach in a test; 127.0.0.1 is a trusted proxy.
fn limited(config: &mut Config) {
    config.rate_limits = Switch::On;
    config.trusted_proxies = Some("127.0.0.1".to_owned());
    config.rate_limit_register_per_minute = 3;
    config.rate_limit_register_burst = 3;
    config.rate_limit_login_per_minute = 6;
    config.rate_limit_login_burst = 6;
    config.rate_limit_holds_per_minute = 2;
    config.rate_limit_holds_burst = 2;
}

/// A client address no other test (or run) uses: 100.64.0.0/10 (shared address space).
fn random_client() -> String {
    let n: u32 = rand_u32() & 0x003f_ffff;
    let ip = std::net::Ipv4Addr::from(0x6440_0000 | n);
    ip.to_string()
}

fn rand_u32() -> u32 {
    let bytes = *uuid::Uuid::new_v4().as_bytes();
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

async fn post_from(client: &Client, from: &str, path: &str, body: &Value) -> Reply {
    client
        .try_send(
            Method::POST,
            path,
            None,
            Some(Body::Json(body)),
            &[("x-forwarded-for", from)],
        )
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

async fn register_from(client: &Client, from: &str) -> Reply {
    let body = json!({"email": unique_email("rl"), "password": PASSWORD, "name": "Crowd"});
    post_from(client, from, "/v1/auth/register", &body).await
}

async fn login_from(client: &Client, from: &str, email: &str, password: &str) -> Reply {
    let body = json!({"email": email, "password": password});
    post_from(client, from, "/v1/auth/login", &body).await
}

/// Asserts a 429 of `policy` with its headers; returns `Retry-After`.
fn assert_rate_limited(reply: &Reply, policy: &str, quota: &str) -> u64 {
    reply.assert_problem(429, "rate-limited");
    let retry: u64 = reply
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a Retry-After in seconds: {reply}"));
    assert!((1..=60).contains(&retry), "{reply}");
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(format!("\"{policy}\";{quota}").as_str()),
        "{reply}"
    );
    let state = reply.header("ratelimit").unwrap_or_default();
    let t: u64 = state
        .strip_prefix(&format!("\"{policy}\";r=0;t="))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("RateLimit {state:?} is not \"{policy}\";r=0;t=N"));
    assert!(t >= retry, "{reply}");
    retry
}

async fn past_the_limit_the_answer_is_429_with_rate_limit_headers(backend: Backend) {
    let node = InProcessNode::start_with(backend, limited).await;
    let client = node.client();
    // Per client IP: three registrations a minute.
    let crowd = random_client();
    for _ in 0..3 {
        register_from(client, &crowd).await.assert_status(201);
    }
    let refused = register_from(client, &crowd).await;
    assert_rate_limited(&refused, "register", "q=3;w=60");
    // Before any password hashing: the answer says which limit, and nothing was created.
    assert_eq!(refused.body["limit"], "register");

    // Per user: two holds a minute, whichever event.
    let organizer = node.organizer_token().await;
    let event = client.create_ga_event(&organizer, 100, None).await;
    let buyer = client.customer_token().await;
    let other = client.customer_token().await;
    for _ in 0..2 {
        client
            .hold(&buyer, &event, &[("GA", 1)])
            .await
            .assert_status(201);
    }
    let refused = client.hold(&buyer, &event, &[("GA", 1)]).await;
    assert_rate_limited(&refused, "holds", "q=2;w=60");
    assert_eq!(client.stock(&event, "GA").await.held, 2);
    client
        .hold(&other, &event, &[("GA", 1)])
        .await
        .assert_status(201);
}

async fn failed_logins_count_double(backend: Backend) {
    let node = InProcessNode::start_with(backend, limited).await;
    let client = node.client();
    let email = unique_email("guessed");
    client
        .register(&email, PASSWORD, "Guessed")
        .await
        .assert_status(201);
    // Six logins a minute per IP: six right ones pass…
    let honest = random_client();
    for _ in 0..6 {
        login_from(client, &honest, &email, PASSWORD)
            .await
            .assert_status(200);
    }
    assert_rate_limited(
        &login_from(client, &honest, &email, PASSWORD).await,
        "login",
        "q=6;w=60",
    );
    // …but only three wrong ones: the fourth attempt is refused, right password or not.
    let guesser = random_client();
    for _ in 0..3 {
        login_from(client, &guesser, &email, "wrong password guess")
            .await
            .assert_problem(401, "invalid-credentials");
    }
    assert_rate_limited(
        &login_from(client, &guesser, &email, PASSWORD).await,
        "login",
        "q=6;w=60",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    // Nothing trusted: a client that makes up X-Forwarded-For is still its peer address.
    let node = InProcessNode::start_with(Backend::Sqlite, |config| {
        limited(config);
        config.trusted_proxies = None;
    })
    .await;
    for _ in 0..3 {
        register_from(node.client(), &random_client())
            .await
            .assert_status(201);
    }
    let refused = register_from(node.client(), &random_client()).await;
    assert_rate_limited(&refused, "register", "q=3;w=60");
    node.shutdown().await;

    // 127.0.0.0/8 trusted: the right-most untrusted hop is the client, whatever it put left.
    let node = InProcessNode::start_with(Backend::Sqlite, |config| {
        limited(config);
        config.trusted_proxies = Some("10.0.0.0/8, 127.0.0.0/8".to_owned());
    })
    .await;
    let client = node.client();
    for _ in 0..5 {
        register_from(client, &random_client())
            .await
            .assert_status(201);
    }
    let crowd = random_client();
    for _ in 0..3 {
        let chain = format!("{}, {crowd}, 10.1.2.3", random_client());
        register_from(client, &chain).await.assert_status(201);
    }
    let chain = format!("198.51.100.{}, {crowd}", rand_u32() % 250);
    assert_rate_limited(&register_from(client, &chain).await, "register", "q=3;w=60");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holdfast_rate_limits_off_turns_every_limit_off() {
    let tiny = [
        ("HOLDFAST_RATE_LIMIT_REGISTER_PER_MINUTE", "1"),
        ("HOLDFAST_RATE_LIMIT_REGISTER_BURST", "1"),
    ];
    let mut on = tiny.to_vec();
    on.push(("HOLDFAST_RATE_LIMITS", "on"));
    let server = ServerProcess::start(Backend::Sqlite, &on).await;
    let client = server.client();
    client
        .register(&unique_email("on"), PASSWORD, "On")
        .await
        .assert_status(201);
    let refused = client.register(&unique_email("on"), PASSWORD, "On").await;
    assert_rate_limited(&refused, "register", "q=1;w=60");

    let mut off = tiny.to_vec();
    off.push(("HOLDFAST_RATE_LIMITS", "off"));
    let server = ServerProcess::start(Backend::Sqlite, &off).await;
    for _ in 0..5 {
        server
            .client()
            .register(&unique_email("off"), PASSWORD, "Off")
            .await
            .assert_status(201);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_their_limits_through_redis() {
    let shared = |config: &mut Config| {
        limited(config);
        config.redis_url = Some(REDIS_URL.to_owned());
    };
    let a = InProcessNode::start_with(Backend::Sqlite, shared).await;
    let b = InProcessNode::start_with(Backend::Sqlite, shared).await;
    let crowd = random_client();
    register_from(a.client(), &crowd).await.assert_status(201);
    register_from(b.client(), &crowd).await.assert_status(201);
    register_from(a.client(), &crowd).await.assert_status(201);
    // Each node alone has seen fewer than three; together they have seen three.
    assert_rate_limited(
        &register_from(b.client(), &crowd).await,
        "register",
        "q=3;w=60",
    );
    assert_rate_limited(
        &register_from(a.client(), &crowd).await,
        "register",
        "q=3;w=60",
    );
    // Failed logins on one node count double on the other too.
    let email = unique_email("shared");
    let body = json!({"email": email, "password": PASSWORD, "name": "Shared"});
    post_from(a.client(), &random_client(), "/v1/auth/register", &body)
        .await
        .assert_status(201);
    let guesser = random_client();
    for node in [&a, &b, &a] {
        login_from(node.client(), &guesser, &email, "wrong password guess")
            .await
            .assert_problem(401, "invalid-credentials");
    }
    assert_rate_limited(
        &login_from(b.client(), &guesser, &email, PASSWORD).await,
        "login",
        "q=6;w=60",
    );
    let metrics = a.ops_client().get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default();
    assert!(text.contains("holdfast_rate_limited_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_leaves_local_limits_and_no_5xx() {
    // A port nothing listens on.
    let closed = free_port();
    let node = InProcessNode::start_with(Backend::Sqlite, |config| {
        limited(config);
        config.redis_url = Some(format!("redis://127.0.0.1:{closed}"));
    })
    .await;
    let client = node.client();
    let crowd = random_client();
    for _ in 0..3 {
        register_from(client, &crowd).await.assert_status(201);
    }
    assert_rate_limited(&register_from(client, &crowd).await, "register", "q=3;w=60");
    let organizer = node.organizer_token().await;
    let event = client.create_ga_event(&organizer, 10, None).await;
    let buyer = client.customer_token().await;
    client
        .hold(&buyer, &event, &[("GA", 1)])
        .await
        .assert_status(201);
    let metrics = node.ops_client().get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default();
    let errors = text
        .lines()
        .find(|l| l.starts_with("holdfast_rate_limit_redis_errors_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "no redis errors counted:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_event_refuses_holds_past_its_limit_and_keeps_no_refusal() {
    let node = InProcessNode::start_with(Backend::Sqlite, |config| {
        limited(config);
        config.rate_limit_holds_per_minute = 0;
        config.rate_limit_event_holds_per_second = 1;
        config.rate_limit_event_holds_burst = 2;
    })
    .await;
    let client = node.client();
    let organizer = node.organizer_token().await;
    let event = client.create_ga_event(&organizer, 100, None).await;
    let other_event = client.create_ga_event(&organizer, 100, None).await;
    let buyer = client.customer_token().await;
    let path = format!("/v1/events/{event}/holds");
    let body = holdfast_tests::hold_body(&[("GA", 1)]);
    // Two at once, then one a second: a quick run of holds meets the limit.
    let mut refused = None;
    for attempt in 0..10 {
        let reply = client
            .post_with_key(&path, Some(&buyer), &body, &format!("hold-{attempt}"))
            .await;
        if reply.status == 429 {
            refused = Some((reply, format!("hold-{attempt}")));
            break;
        }
        reply.assert_status(201);
    }
    let (refused, key) = refused.expect("no 429 in ten quick holds");
    let retry = assert_rate_limited(&refused, "event-holds", "q=1;w=1");
    client
        .hold(&buyer, &other_event, &[("GA", 1)])
        .await
        .assert_status(201);
    // A refusal is not the answer kept for its Idempotency-Key: the retry runs.
    tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
    client
        .post_with_key(&path, Some(&buyer), &body, &key)
        .await
        .assert_status(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_leaves_local_limits_then_sharing_resumes() {
    let port = free_port();
    let mut redis = holdfast_tests::own_redis(port).await;
    let shared = |config: &mut Config| {
        limited(config);
        config.redis_url = Some(format!("redis://127.0.0.1:{port}"));
    };
    let a = InProcessNode::start_with(Backend::Sqlite, shared).await;
    let b = InProcessNode::start_with(Backend::Sqlite, shared).await;
    let crowd = random_client();
    register_from(a.client(), &crowd).await.assert_status(201);
    register_from(b.client(), &crowd).await.assert_status(201);

    redis.kill().await.expect("stop redis-server");
    // Each node counts alone now: answered, never a 5xx, and still limited.
    let alone = random_client();
    for node in [&a, &b] {
        for _ in 0..3 {
            register_from(node.client(), &alone)
                .await
                .assert_status(201);
        }
        assert_rate_limited(
            &register_from(node.client(), &alone).await,
            "register",
            "q=3;w=60",
        );
    }

    let _redis = holdfast_tests::own_redis(port).await;
    // Past the reconnect pause both nodes count together again.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let crowd = random_client();
    let mut answers = Vec::new();
    for node in [&a, &b, &a, &b] {
        answers.push(register_from(node.client(), &crowd).await.status);
    }
    assert_eq!(answers, [201, 201, 201, 429]);
}
