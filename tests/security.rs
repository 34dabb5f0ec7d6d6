//! The holes found attacking a default install, each closed and kept closed: revocation per
//! login, the claims an access token must carry, idempotency storage only for signed-in
//! callers, common passwords, CORS and security headers, private data files, slow and idle
//! clients, too many connections, and a login storm that must not take the memory.

use std::time::{Duration, Instant};

use holdfast_gateway::auth::{AUDIENCE, ISSUER, TokenKeys};
use holdfast_tests::{Backend, InProcessNode, PASSWORD, ServerProcess, unique_email};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

holdfast_tests::on_both_backends!(
    logout_revokes_every_token_of_the_login,
    refresh_reuse_revokes_the_logins_access_tokens,
    a_logged_out_token_never_replays_a_stored_answer,
    access_tokens_carry_the_claims_this_server_issues,
    idempotency_keys_are_stored_only_for_signed_in_callers_on_real_routes,
    common_passwords_and_email_names_are_refused,
);

/// A login's two access tokens (the second from a refresh) and the refresh token it used.
async fn two_tokens_of_one_login(node: &InProcessNode) -> (String, String, String) {
    let email = unique_email("login");
    node.client()
        .register(&email, PASSWORD, "L")
        .await
        .assert_status(201);
    node.client().two_tokens_of_one_login(&email).await
}

async fn logout_revokes_every_token_of_the_login(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let (first, second, _) = two_tokens_of_one_login(&node).await;
    // Another login of the same account is not touched.
    let email = unique_email("other");
    api.register(&email, PASSWORD, "O").await.assert_status(201);
    let other_login = api.login_token(&email, PASSWORD).await;
    api.get("/v1/orders", Some(&second))
        .await
        .assert_status(200);

    api.post("/v1/auth/logout", Some(&first), &json!({}))
        .await
        .assert_status(204);
    for token in [&first, &second] {
        api.get("/v1/orders", Some(token))
            .await
            .assert_problem(401, "token-revoked");
    }
    api.get("/v1/orders", Some(&other_login))
        .await
        .assert_status(200);
    node.shutdown().await;
}

async fn refresh_reuse_revokes_the_logins_access_tokens(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let (first, second, used_refresh) = two_tokens_of_one_login(&node).await;
    api.post(
        "/v1/auth/refresh",
        None,
        &json!({"refresh_token": used_refresh}),
    )
    .await
    .assert_problem(401, "refresh-token-reused");
    for token in [&first, &second] {
        api.get("/v1/orders", Some(token))
            .await
            .assert_problem(401, "token-revoked");
    }
    node.shutdown().await;
}

async fn a_logged_out_token_never_replays_a_stored_answer(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let event = api
        .create_event(
            &organizer,
            &[holdfast_tests::TicketType::new("GA", 10, None)],
        )
        .await;
    let (token, _, _) = two_tokens_of_one_login(&node).await;
    let key = "replay-after-logout";
    let body = json!({"items": [{"ticket_type": "GA", "quantity": 1}]});
    let path = format!("/v1/events/{event}/holds");
    api.post_with_key(&path, Some(&token), &body, key)
        .await
        .assert_status(201);
    api.post("/v1/auth/logout", Some(&token), &json!({}))
        .await
        .assert_status(204);
    let replay = api.post_with_key(&path, Some(&token), &body, key).await;
    replay.assert_problem(401, "token-revoked");
    assert_eq!(replay.header("idempotent-replayed"), None, "{replay}");
    node.shutdown().await;
}

/// An HS256 token with exactly `header` and `claims`, signed with `secret`.
fn forge(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("key");
    mac.update(input.as_bytes());
    let signature =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{signature}")
}

async fn access_tokens_carry_the_claims_this_server_issues(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let secret = node
        .sandbox()
        .config()
        .jwt_secret
        .expect("the sandbox sets a token secret");
    let kid = TokenKeys::from_secret(secret.as_bytes(), 900)
        .key_id()
        .to_owned();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": kid});
    let claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": uuid::Uuid::new_v4().to_string(),
        "role": "customer", "iat": now, "nbf": now, "exp": now + 600, "jti": "t1"});
    let with = |key: &str, value: Value| {
        let mut c = claims.clone();
        c[key] = value;
        forge(&header, &c, secret.as_bytes())
    };
    let with_header = |key: &str, value: Value| {
        let mut h = header.clone();
        h[key] = value;
        forge(&h, &claims, secret.as_bytes())
    };
    // The well-formed token works: the refusals below are about the one claim changed.
    api.get(
        "/v1/orders",
        Some(&forge(&header, &claims, secret.as_bytes())),
    )
    .await
    .assert_status(200);
    let refused = [
        ("nbf an hour ahead", with("nbf", json!(now + 3600))),
        ("iat in the future", with("iat", json!(now + 3600))),
        (
            "exp in the year 9999",
            with("exp", json!(253_402_300_799_i64)),
        ),
        ("iss=evil", with("iss", json!("evil"))),
        ("another audience", with("aud", json!("somebody-else"))),
        (
            "an unknown crit header",
            with_header("crit", json!(["exp"])),
        ),
        ("typ JWT", with_header("typ", json!("JWT"))),
        ("an unknown key id", with_header("kid", json!("nope"))),
        ("alg none", with_header("alg", json!("none"))),
    ];
    for (what, token) in &refused {
        let reply = api.get("/v1/orders", Some(token)).await;
        reply.assert_problem(401, "unauthorized");
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        for internal in ["Error", "Signature", "line", "column", "Invalid"] {
            assert!(
                !detail.contains(internal),
                "{what}: the detail names a library's error: {detail}"
            );
        }
    }
    let expired = {
        let mut c: Value = claims.clone();
        c["iat"] = json!(now - 700);
        c["nbf"] = json!(now - 700);
        c["exp"] = json!(now - 100);
        forge(&header, &c, secret.as_bytes())
    };
    api.get("/v1/orders", Some(&expired))
        .await
        .assert_problem(401, "token-expired");
    node.shutdown().await;
}

async fn idempotency_keys_are_stored_only_for_signed_in_callers_on_real_routes(backend: Backend) {
    let node = InProcessNode::start_with(backend, |c| c.idempotency_keys_per_user_max = 3).await;
    let api = node.client();
    let database = node.sandbox().database();
    let before = database.count_rows("idempotency_keys").await;
    for i in 0..20 {
        let key = format!("junk-{i}");
        api.post_with_key("/v1/no/such/route", None, &json!({}), key.as_str())
            .await
            .assert_problem(404, "not-found");
        api.post_with_key(
            "/v1/auth/register",
            None,
            &json!({"email": unique_email("anon"), "password": PASSWORD, "name": "A"}),
            key.as_str(),
        )
        .await
        .assert_status(201);
    }
    assert_eq!(
        database.count_rows("idempotency_keys").await,
        before,
        "anonymous calls and unknown routes store nothing"
    );

    // A signed-in caller gets its quota of new keys per hour, then a 429.
    let token = api.customer_token().await;
    for i in 0..3 {
        let key = format!("mine-{i}");
        api.post_with_key(
            "/v1/orders",
            Some(&token),
            &json!({"hold_id": "not-a-hold"}),
            key.as_str(),
        )
        .await
        .assert_problem(422, "invalid-request");
    }
    assert_eq!(database.count_rows("idempotency_keys").await, before + 3);
    let refused = api
        .post_with_key(
            "/v1/orders",
            Some(&token),
            &json!({"hold_id": "not-a-hold"}),
            "mine-3",
        )
        .await;
    refused.assert_problem(429, "rate-limited");
    assert!(refused.header("retry-after").is_some(), "{refused}");
    // A replay of a stored key is no new key.
    api.post_with_key(
        "/v1/orders",
        Some(&token),
        &json!({"hold_id": "not-a-hold"}),
        "mine-0",
    )
    .await
    .assert_problem(422, "invalid-request");
    node.shutdown().await;
}

async fn common_passwords_and_email_names_are_refused(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    for password in ["password1", "12345678", "Iloveyou1", "qwertyuiop"] {
        let reply = api.register(&unique_email("common"), password, "C").await;
        reply.assert_problem(422, "weak-password");
        assert!(
            reply.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("common")),
            "{reply}"
        );
    }
    let email = format!(
        "thanh.hoa.{}@example.com",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let local = email.split('@').next().expect("local part").to_owned();
    api.register(&email, &format!("My {local} pass!"), "T")
        .await
        .assert_problem(422, "weak-password");
    api.register(&email, PASSWORD, "T").await.assert_status(201);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_is_off_unless_configured_and_pages_carry_security_headers() {
    let node = InProcessNode::start(Backend::Sqlite).await;
    let api = node.client();
    let origin = [("origin", "https://evil.example")];
    let reply = api
        .send(Method::GET, "/v1/events", None, None, &origin)
        .await;
    reply.assert_status(200);
    assert_eq!(reply.header("access-control-allow-origin"), None, "{reply}");
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("strict-transport-security"), None);
    let page = api
        .send(
            Method::GET,
            "/v1/payments/vnpay/return?vnp_TxnRef=x",
            None,
            None,
            &[],
        )
        .await;
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/html")),
        "{page}"
    );
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(csp.contains("frame-ancestors 'none'"), "{page}");
    // The API page: Redoc, served by the node itself, pointing at the node's own document.
    let docs = api.send(Method::GET, "/docs", None, None, &[]).await;
    docs.assert_status(200);
    let html = String::from_utf8_lossy(&docs.bytes).into_owned();
    assert!(html.contains("spec-url=\"/openapi.json\""), "{html}");
    assert!(
        docs.header("content-security-policy")
            .is_some_and(|c| c.contains("frame-ancestors 'none'") && c.contains("worker-src")),
        "{docs}"
    );
    let js = api
        .send(Method::GET, "/docs/redoc.standalone.js", None, None, &[])
        .await;
    js.assert_status(200);
    assert!(
        js.header("content-type")
            .is_some_and(|c| c.starts_with("application/javascript")),
        "{js}"
    );
    assert!(
        js.bytes.len() > 100_000,
        "the vendored Redoc bundle is served whole"
    );
    node.shutdown().await;

    let node = InProcessNode::start_with(Backend::Sqlite, |c| {
        c.cors_origins = Some("https://shop.example.com".to_owned());
        c.public_url = Some("https://tickets.example.com".to_owned());
    })
    .await;
    let api = node.client();
    let allowed = api
        .send(
            Method::GET,
            "/v1/events",
            None,
            None,
            &[("origin", "https://shop.example.com")],
        )
        .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://shop.example.com")
    );
    let other = api
        .send(Method::GET, "/v1/events", None, None, &origin)
        .await;
    assert_eq!(other.header("access-control-allow-origin"), None, "{other}");
    assert!(
        allowed
            .header("strict-transport-security")
            .is_some_and(|h| h.contains("max-age=")),
        "an https public URL sends HSTS: {allowed}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    // No secrets in the settings: the node generates its own, as `holdfast serve` does.
    let node = InProcessNode::start_with(Backend::Sqlite, |c| {
        c.jwt_secret = None;
        c.ticket_signing_key = None;
        c.vnpay_tmn_code = None;
        c.vnpay_hash_secret = None;
    })
    .await;
    // Something written, so the WAL exists.
    node.client().customer_token().await;
    let data = node.sandbox().data_dir();
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let database = node.sandbox().database().url().to_owned();
    let db_file = database
        .strip_prefix("sqlite://")
        .expect("a SQLite URL")
        .split('?')
        .next()
        .expect("a path")
        .to_owned();
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{db_file}{suffix}"));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    for secret in ["jwt.secret", "ticket-signing.key", "vnpay-demo.secret"] {
        let path = data.join(secret);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    node.shutdown().await;
}

/// Reads until the server closes the connection; how long that took, and what it sent.
async fn until_closed(stream: &mut tokio::net::TcpStream, limit: Duration) -> (Duration, String) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(
            limit.saturating_sub(started.elapsed()),
            stream.read(&mut buf),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection was still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (
        started.elapsed(),
        String::from_utf8_lossy(&received).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_cut_off() {
    // The header timer alone (the idle limit far away).
    let node = InProcessNode::start_with(Backend::Sqlite, |c| {
        c.header_read_timeout_secs = 1;
        c.idle_timeout_secs = 60;
    })
    .await;
    let addr = node
        .base_url()
        .strip_prefix("http://")
        .expect("an http URL")
        .to_owned();
    let connect = || tokio::net::TcpStream::connect(addr.clone());
    // Nothing at all, and a few bytes.
    let mut silent = connect().await.expect("connect");
    let (took, _) = until_closed(&mut silent, Duration::from_secs(8)).await;
    assert!(
        took < Duration::from_secs(4),
        "a silent connection lasted {took:?}"
    );
    let mut short = connect().await.expect("connect");
    short.write_all(b"GET /h").await.expect("write");
    let (took, _) = until_closed(&mut short, Duration::from_secs(8)).await;
    assert!(
        took < Duration::from_secs(4),
        "a few bytes kept it {took:?}"
    );
    // Headers trickled a byte every quarter second: moving, but never done in time.
    let mut trickle = connect().await.expect("connect");
    let started = Instant::now();
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle.write_all(&[*byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = until_closed(&mut trickle, Duration::from_secs(8)).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a trickled header kept the connection {:?}",
        started.elapsed()
    );
    // A keep-alive connection that goes quiet after one answer.
    let mut idle = connect().await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (took, answer) = until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(4),
        "an idle keep-alive lasted {took:?}"
    );
    node.shutdown().await;

    // The idle limit alone (the header timer far away): a request body that stops coming.
    let node = InProcessNode::start_with(Backend::Sqlite, |c| {
        c.header_read_timeout_secs = 60;
        c.idle_timeout_secs = 1;
    })
    .await;
    let addr = node
        .base_url()
        .strip_prefix("http://")
        .expect("an http URL")
        .to_owned();
    let mut stalled = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stalled
        .write_all(
            b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"email\":",
        )
        .await
        .expect("write");
    let (took, _) = until_closed(&mut stalled, Duration::from_secs(15)).await;
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(9),
        "a stalled body was cut after {took:?} (idle 1 s, then at most 5 s to finish)"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_bound_are_answered_at_once() {
    let node = InProcessNode::start_with(Backend::Sqlite, |c| c.connections_max = 4).await;
    let addr = node
        .base_url()
        .strip_prefix("http://")
        .expect("an http URL")
        .to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        held.push(stream);
    }
    // Let the server accept them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (took, answer) = until_closed(&mut extra, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(held);
    // Room again: requests are served.
    holdfast_tests::poll_until(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            node.client()
                .try_get("/healthz", None)
                .await
                .ok()
                .filter(|r| r.status == 200)
        },
    )
    .await
    .expect("served again once the connections closed");
    node.shutdown().await;
}

/// `VmHWM` (peak) and `VmRSS` of a process, in MiB.
fn memory_mib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Hashing is bounded: a crowd of wrong-password logins is answered 401 or 503 `overloaded`
/// (with Retry-After), the process never holds more than a few hashes' memory, and a correct
/// login works afterwards. On the old code, 200 concurrent logins took the server past 2 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_is_bounded_in_memory_and_answered() {
    let server = ServerProcess::start(
        Backend::Sqlite,
        &[
            ("HOLDFAST_PASSWORD_HASH_WAIT_MS", "300"),
            ("HOLDFAST_LOG", "warn"),
        ],
    )
    .await;
    let api = server.client().clone();
    let email = unique_email("storm");
    api.register(&email, PASSWORD, "S").await.assert_status(201);
    let pid = server.pid();
    let (peak_before, _) = memory_mib(pid);
    let attempts: Vec<_> = (0..200)
        .map(|_| {
            let api = api.clone();
            let email = email.clone();
            tokio::spawn(async move { api.login(&email, "wrong password, 200 times").await })
        })
        .collect();
    let (mut unauthorized, mut overloaded) = (0, 0);
    for attempt in attempts {
        let reply = attempt.await.expect("login task");
        match reply.status {
            401 => {
                reply.assert_problem(401, "invalid-credentials");
                unauthorized += 1;
            }
            503 => {
                reply.assert_problem(503, "overloaded");
                assert!(reply.header("retry-after").is_some(), "{reply}");
                overloaded += 1;
            }
            _ => panic!("a wrong password answered {reply}"),
        }
    }
    assert_eq!(unauthorized + overloaded, 200);
    assert!(
        unauthorized > 0 && overloaded > 0,
        "{unauthorized} 401, {overloaded} 503"
    );
    let (peak, _) = memory_mib(pid);
    assert!(
        peak < peak_before + 200,
        "peak RSS grew from {peak_before} MiB to {peak} MiB during the storm"
    );
    api.login(&email, PASSWORD).await.assert_status(200);
}
