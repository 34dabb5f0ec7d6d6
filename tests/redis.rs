//! The deny list through Redis: two nodes on one database, a logout (or a refresh token used
//! twice) on one refused by the other within 100 ms through the real Redis on 127.0.0.1:6379
//! (which `./tests/run` starts); with Redis unreachable, logout still succeeds and the other
//! node still learns it from the database pull.

use std::time::{Duration, Instant};

use holdfast_tests::{
    Backend, Client, InProcessNode, PASSWORD, free_port, poll_until, unique_email,
};
use serde_json::json;

const REDIS_URL: &str = "redis://127.0.0.1:6379";
/// How soon the other node must refuse a revoked login through Redis. The database pull alone
/// takes up to a second, so several revocations all under this bound prove the Redis path.
const THROUGH_REDIS: Duration = Duration::from_millis(100);

/// Two nodes on one PostgreSQL database, both with `redis_url`.
async fn two_nodes(redis_url: &str) -> (InProcessNode, InProcessNode) {
    let a = InProcessNode::start_with(Backend::Postgres, |c| {
        c.redis_url = Some(redis_url.to_owned());
    })
    .await;
    let database = a.sandbox().database().url().to_owned();
    let b = InProcessNode::start_with(Backend::Sqlite, |c| {
        c.redis_url = Some(redis_url.to_owned());
        c.database_url = Some(database);
    })
    .await;
    (a, b)
}

/// Polls `api` every 10 ms until it refuses `token` as revoked; how long that took.
async fn refused_after(api: &Client, token: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    poll_until(within, Duration::from_millis(10), || async {
        let reply = api.get("/v1/orders", Some(token)).await;
        (reply.status == 401).then(|| {
            reply.assert_problem(401, "token-revoked");
            started.elapsed()
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_login_reaches_the_other_node_through_redis_within_100_ms() {
    let (a, b) = two_nodes(REDIS_URL).await;
    let email = unique_email("redis-revoke");
    a.client()
        .register(&email, PASSWORD, "R")
        .await
        .assert_status(201);
    let mut took = Vec::new();
    for round in 0..3 {
        for how in ["logout", "refresh reuse"] {
            let (first, other, used_refresh) = a.client().two_tokens_of_one_login(&email).await;
            b.client()
                .get("/v1/orders", Some(&other))
                .await
                .assert_status(200);
            let revoked = Instant::now();
            if how == "logout" {
                a.client()
                    .post("/v1/auth/logout", Some(&first), &json!({}))
                    .await
                    .assert_status(204);
            } else {
                a.client()
                    .post(
                        "/v1/auth/refresh",
                        None,
                        &json!({"refresh_token": used_refresh}),
                    )
                    .await
                    .assert_problem(401, "refresh-token-reused");
            }
            let answered = revoked.elapsed();
            let refused = refused_after(b.client(), &other, Duration::from_secs(3))
                .await
                .unwrap_or_else(|| panic!("{how} {round}: node B still accepts the token"));
            let total = answered + refused;
            assert!(
                refused < THROUGH_REDIS,
                "{how} {round}: node B refused the token {refused:?} after node A answered"
            );
            took.push(total);
        }
    }
    took.sort();
    eprintln!("revocation to refusal on the other node (incl. node A's answer): {took:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_logout_succeeds_and_the_database_pull_tells_the_other_node() {
    // A port nothing listens on.
    let closed = free_port();
    let (a, b) = two_nodes(&format!("redis://127.0.0.1:{closed}")).await;
    let email = unique_email("redis-down");
    a.client()
        .register(&email, PASSWORD, "D")
        .await
        .assert_status(201);
    let (first, other, _) = a.client().two_tokens_of_one_login(&email).await;
    b.client()
        .get("/v1/orders", Some(&other))
        .await
        .assert_status(200);
    let revoked = Instant::now();
    a.client()
        .post("/v1/auth/logout", Some(&first), &json!({}))
        .await
        .assert_status(204);
    a.client()
        .get("/v1/orders", Some(&other))
        .await
        .assert_problem(401, "token-revoked");
    refused_after(b.client(), &other, Duration::from_secs(5))
        .await
        .expect("node B still accepts the token after 5 s");
    let took = revoked.elapsed();
    assert!(
        took < Duration::from_millis(2_500),
        "refused on node B after {took:?}"
    );
    eprintln!("without redis, revocation reached the other node after {took:?}");
    let metrics = a.ops_client().get("/metrics", None).await;
    let text = metrics.body.as_str().unwrap_or_default();
    let errors: f64 = text
        .lines()
        .filter(|l| l.starts_with("holdfast_deny_list_redis_errors_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 1.0, "no deny-list redis errors counted:\n{text}");
    a.shutdown().await;
    b.shutdown().await;
}

/// Logs in, logs out on node A and returns how long node B took to refuse the login's other
/// token (from A's answer).
async fn logout_reaches(a: &InProcessNode, b: &InProcessNode, email: &str) -> Duration {
    let (first, other, _) = a.client().two_tokens_of_one_login(email).await;
    b.client()
        .get("/v1/orders", Some(&other))
        .await
        .assert_status(200);
    a.client()
        .post("/v1/auth/logout", Some(&first), &json!({}))
        .await
        .assert_status(204);
    refused_after(b.client(), &other, Duration::from_secs(5))
        .await
        .expect("node B still accepts the token after 5 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_test_falls_back_to_the_database_then_the_subscription_resumes() {
    let port = free_port();
    let mut redis = holdfast_tests::own_redis(port).await;
    let (a, b) = two_nodes(&format!("redis://127.0.0.1:{port}")).await;
    let email = unique_email("redis-restart");
    a.client()
        .register(&email, PASSWORD, "S")
        .await
        .assert_status(201);
    let fast = logout_reaches(&a, &b, &email).await;
    assert!(fast < THROUGH_REDIS, "through redis: {fast:?}");

    redis.kill().await.expect("stop redis-server");
    let slow = logout_reaches(&a, &b, &email).await;
    assert!(
        slow < Duration::from_millis(2_500),
        "redis stopped: {slow:?}"
    );

    let _redis = holdfast_tests::own_redis(port).await;
    // Node B subscribes again within its backoff (at most 5 s), node A publishes again past
    // its reconnect pause (1 s): revocations are fast again.
    let resumed = poll_until(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let took = logout_reaches(&a, &b, &email).await;
            (took < THROUGH_REDIS).then_some(took)
        },
    )
    .await;
    assert!(
        resumed.is_some(),
        "revocations never went through redis again"
    );
    // Not a lucky database pull: the next ones are fast too.
    for _ in 0..2 {
        let again = logout_reaches(&a, &b, &email).await;
        assert!(again < THROUGH_REDIS, "after redis came back: {again:?}");
    }
    eprintln!("through redis {fast:?}, redis stopped {slow:?}, resumed {resumed:?}");
    a.shutdown().await;
    b.shutdown().await;
}
