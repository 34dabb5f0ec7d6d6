//! The waiting room (API.md "Waiting room") end to end, on both backends: a pre-queue before
//! the opening that keeps every place across a restart, admissions at the event's rate and
//! never more than `active_max` at once, holds only with the buyer's own admission token
//! (none, forged, another buyer's or another event's: 403 `not-admitted`), a purchase or the
//! TTL ending an admission, and `sold_out` for those still waiting once nothing is left.

use std::collections::BTreeMap;
use std::time::Duration;

use holdfast_tests::{Body, Client, InProcessNode, Reply, on_both_backends, poll_until};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

on_both_backends!(
    a_queued_sale_admits_fairly_and_sells_only_to_the_admitted,
    queue_settings_are_checked_and_events_without_a_queue_say_so,
    a_captcha_guards_every_queue_join,
);

const WAIT: Duration = Duration::from_secs(30);

fn in_ms(ms: i64) -> String {
    (OffsetDateTime::now_utc() + time::Duration::milliseconds(ms))
        .format(&Rfc3339)
        .expect("format")
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {reply}"))
        .to_owned()
}

/// A free event (orders confirm at once) of `capacity` seats.
async fn event(api: &Client, token: &str, capacity: u32, extra: Value) -> String {
    let mut body = json!({
        "name": "Flash Sale Live",
        "venue": "My Dinh",
        "starts_at": "2030-12-31T20:00:00Z",
        "ticket_types": [{"code": "GA", "name": "GA", "price": 0, "currency": "VND",
                          "capacity": capacity, "per_user_limit": 4}],
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let reply = api.post("/v1/events", Some(token), &body).await;
    reply.assert_status(201);
    id_of(&reply)
}

async fn me(api: &Client, token: &str, event: &str) -> Reply {
    api.get(&format!("/v1/events/{event}/queue/me"), Some(token))
        .await
}

async fn hold_with(api: &Client, token: &str, event: &str, admission: Option<&str>) -> Reply {
    let body = json!({"items": [{"ticket_type": "GA", "quantity": 1}]});
    let headers: Vec<(&str, &str)> = admission
        .map(|a| vec![("holdfast-admission", a)])
        .unwrap_or_default();
    api.send(
        Method::POST,
        &format!("/v1/events/{event}/holds"),
        Some(token),
        Some(Body::Json(&body)),
        &headers,
    )
    .await
}

async fn a_queued_sale_admits_fairly_and_sells_only_to_the_admitted(
    backend: holdfast_tests::Backend,
) {
    let mut node = InProcessNode::start(backend).await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    // 60 a minute is one a second; two at once at most; an admission lasts 5 s.
    let queue = json!({"admit_per_minute": 60, "active_max": 2, "admission_ttl_secs": 5});
    let opens_in_ms = 4_000;
    let sale = event(
        &api,
        &organizer,
        3,
        json!({"queue": queue, "sale_starts_at": in_ms(opens_in_ms)}),
    )
    .await;
    let shown = api.get(&format!("/v1/events/{sale}"), None).await;
    assert_eq!(shown.body["queue"]["active_max"], 2, "{shown}");
    let buyers = api.customer_tokens(6, 3).await;
    for buyer in &buyers {
        let joined = api
            .post(&format!("/v1/events/{sale}/queue"), Some(buyer), &json!({}))
            .await;
        joined.assert_status(201);
        assert_eq!(joined.body["status"], "waiting", "{joined}");
        assert!(
            joined.body["position"].is_null(),
            "drawn at the opening: {joined}"
        );
    }
    api.post(
        &format!("/v1/events/{sale}/queue"),
        Some(&buyers[0]),
        &json!({}),
    )
    .await
    .assert_status(200);
    let stranger = api.customer_token().await;
    me(&api, &stranger, &sale)
        .await
        .assert_problem(404, "not-in-queue");

    // The pre-queue is journaled: a restart keeps every place.
    node.restart().await;
    let api = node.client().clone();
    for buyer in &buyers {
        let place = me(&api, buyer, &sale).await;
        place.assert_status(200);
        assert_eq!(place.body["status"], "waiting", "{place}");
    }

    // After the opening: each waiting buyer's position is unique, 1..=n; admissions come at
    // the rate, never more than two at once.
    let mut admitted_at: BTreeMap<usize, String> = BTreeMap::new();
    let mut most_at_once = 0;
    let mut positions_seen = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut admitted = 0;
        let mut positions = Vec::new();
        for (i, buyer) in buyers.iter().enumerate() {
            let place = me(&api, buyer, &sale).await;
            place.assert_status(200);
            match place.body["status"].as_str() {
                Some("admitted") => {
                    admitted += 1;
                    admitted_at.entry(i).or_insert_with(|| {
                        place.body["admission_token"].as_str().unwrap().to_owned()
                    });
                }
                Some("waiting") => {
                    if let Some(p) = place.body["position"].as_u64() {
                        positions.push(p);
                    }
                }
                other => panic!("unexpected {other:?}: {place}"),
            }
        }
        most_at_once = most_at_once.max(admitted);
        // Read one after the other while admissions go on, so only bounds are exact here
        // (actors/tests/queue.rs checks positions are 1..=n at every step).
        if !positions.is_empty() {
            assert!(
                positions
                    .iter()
                    .all(|p| (1..=buyers.len() as u64).contains(p)),
                "{positions:?}"
            );
            positions_seen = true;
        }
        if admitted_at.len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "two buyers are admitted after the opening"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(positions_seen, "waiting buyers read their positions");
    assert!(most_at_once <= 2, "{most_at_once} admitted at once");

    let (&a, token_a) = admitted_at.iter().next().expect("one admitted");
    let token_a = token_a.clone();
    let (&b, token_b) = admitted_at.iter().nth(1).expect("two admitted");
    let token_b = token_b.clone();
    let waiting = (0..buyers.len())
        .find(|i| !admitted_at.contains_key(i))
        .unwrap();
    // No token, a forged one, another buyer's, another event's: 403.
    hold_with(&api, &buyers[waiting], &sale, None)
        .await
        .assert_problem(403, "not-admitted");
    hold_with(&api, &buyers[a], &sale, None)
        .await
        .assert_problem(403, "not-admitted");
    let mut forged = token_a.clone();
    let last = forged.pop().expect("a token");
    forged.push(if last == 'A' { 'B' } else { 'A' });
    hold_with(&api, &buyers[a], &sale, Some(&forged))
        .await
        .assert_problem(403, "not-admitted");
    hold_with(&api, &buyers[waiting], &sale, Some(&token_a))
        .await
        .assert_problem(403, "not-admitted");
    let other = event(&api, &organizer, 5, json!({"queue": queue})).await;
    hold_with(&api, &buyers[a], &other, Some(&token_a))
        .await
        .assert_problem(403, "not-admitted");
    hold_with(&api, &buyers[a], &sale, Some("not a token"))
        .await
        .assert_problem(403, "not-admitted");

    // With their own token: a hold, then an order, which ends the admission.
    let hold = hold_with(&api, &buyers[a], &sale, Some(&token_a)).await;
    hold.assert_status(201);
    let order = api
        .post(
            "/v1/orders",
            Some(&buyers[a]),
            &json!({"hold_id": id_of(&hold)}),
        )
        .await;
    order.assert_status(201);
    assert_eq!(order.body["status"], "confirmed", "{order}");
    let done = me(&api, &buyers[a], &sale).await;
    assert_eq!(
        done.body["status"], "expired",
        "a purchase ends the admission: {done}"
    );
    hold_with(&api, &buyers[a], &sale, Some(&token_a))
        .await
        .assert_problem(403, "not-admitted");

    // Buyer b does nothing: the admission runs out after its 5 s.
    let expired = poll_until(WAIT, Duration::from_millis(200), || async {
        (me(&api, &buyers[b], &sale).await.body["status"] == "expired").then_some(())
    })
    .await;
    assert!(expired.is_some(), "an admission ends with its TTL");
    hold_with(&api, &buyers[b], &sale, Some(&token_b))
        .await
        .assert_problem(403, "not-admitted");

    // The next admitted buyers buy the last two seats; whoever still waits reads sold_out.
    let mut bought = 1;
    let deadline = tokio::time::Instant::now() + WAIT;
    let statuses = loop {
        let mut statuses = Vec::new();
        for buyer in &buyers {
            let place = me(&api, buyer, &sale).await;
            let status = place.body["status"].as_str().unwrap_or_default().to_owned();
            // One admitted right after a's purchase may be about to run out: let it.
            let ends_soon = place.body["expires_at"]
                .as_str()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                .is_some_and(|t| t - OffsetDateTime::now_utc() < time::Duration::seconds(1));
            if status == "admitted" && !ends_soon && bought < 3 {
                let token = place.body["admission_token"].as_str().unwrap().to_owned();
                let hold = hold_with(&api, buyer, &sale, Some(&token)).await;
                hold.assert_status(201);
                api.post("/v1/orders", Some(buyer), &json!({"hold_id": id_of(&hold)}))
                    .await
                    .assert_status(201);
                bought += 1;
            }
            statuses.push(status);
        }
        if bought == 3 && statuses.iter().any(|s| s == "sold_out") {
            break statuses;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the waiting buyers read sold_out once every seat is sold: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Admissions given before the last seat went run out; no new one follows.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let mut after = Vec::new();
    for buyer in &buyers {
        let place = me(&api, buyer, &sale).await;
        after.push(place.body["status"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        !after.iter().any(|s| s == "admitted") && after.iter().any(|s| s == "sold_out"),
        "nobody is admitted to a sold-out event: {statuses:?} then {after:?}"
    );
    let stock = api.stock(&sale, "GA").await;
    assert_eq!((stock.available, stock.held, stock.sold), (0, 0, 3));
    node.shutdown().await;
}

async fn queue_settings_are_checked_and_events_without_a_queue_say_so(
    backend: holdfast_tests::Backend,
) {
    let node = InProcessNode::start(backend).await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    for bad in [
        json!({"admit_per_minute": 0, "active_max": 1}),
        json!({"admit_per_minute": 1, "active_max": 0}),
        json!({"admit_per_minute": 1, "active_max": 1, "admission_ttl_secs": 0}),
        json!({"admit_per_minute": 1, "active_max": 1, "surprise": true}),
        json!({"active_max": 1}),
        json!("fast"),
    ] {
        let body = json!({
            "name": "Bad Queue", "starts_at": "2030-12-31T20:00:00Z", "queue": bad,
            "ticket_types": [{"code": "GA", "name": "GA", "price": 0, "currency": "VND", "capacity": 1}],
        });
        let reply = api.post("/v1/events", Some(&organizer), &body).await;
        assert_eq!(reply.status, 422, "{bad}: {reply}");
    }
    let plain = event(&api, &organizer, 2, json!({})).await;
    let buyer = api.customer_token().await;
    api.post(
        &format!("/v1/events/{plain}/queue"),
        Some(&buyer),
        &json!({}),
    )
    .await
    .assert_problem(404, "queue-not-found");
    me(&api, &buyer, &plain)
        .await
        .assert_problem(404, "queue-not-found");
    // A queue added by PATCH applies at once; removed again, holds need no token.
    let patched = api
        .send(
            Method::PATCH,
            &format!("/v1/events/{plain}"),
            Some(&organizer),
            Some(Body::Json(
                &json!({"queue": {"admit_per_minute": 60, "active_max": 1}}),
            )),
            &[],
        )
        .await;
    patched.assert_status(200);
    assert_eq!(
        patched.body["queue"]["admission_ttl_secs"], 600,
        "{patched}"
    );
    hold_with(&api, &buyer, &plain, None)
        .await
        .assert_problem(403, "not-admitted");
    api.send(
        Method::PATCH,
        &format!("/v1/events/{plain}"),
        Some(&organizer),
        Some(Body::Json(&json!({"queue": null}))),
        &[],
    )
    .await
    .assert_status(200);
    hold_with(&api, &buyer, &plain, None)
        .await
        .assert_status(201);
    // A cancelled event's waiting room takes nobody.
    let queued = event(
        &api,
        &organizer,
        2,
        json!({"queue": {"admit_per_minute": 60, "active_max": 1}}),
    )
    .await;
    api.post(
        &format!("/v1/events/{queued}/cancel"),
        Some(&organizer),
        &json!({"reason": "rain"}),
    )
    .await
    .assert_status(202);
    api.post(
        &format!("/v1/events/{queued}/queue"),
        Some(&buyer),
        &json!({}),
    )
    .await
    .assert_problem(409, "event-cancelled");
    node.shutdown().await;
}

/// A `siteverify` stand-in in Turnstile's shape: the form's `secret` must be the site's,
/// `response` "solved-<anything>" passes once (tokens are single use), anything else fails
/// with Turnstile's error code; each call is recorded with its `remoteip`.
async fn siteverify() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::extract::State;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/turnstile/v0/siteverify",
            axum::routing::post(
                |State(seen): State<Arc<Mutex<Vec<String>>>>, body: String| async move {
                    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
                        .into_owned()
                        .collect();
                    let mut seen = seen.lock().unwrap();
                    let response = form.get("response").cloned().unwrap_or_default();
                    let fresh = !seen.iter().any(|r| r.starts_with(&format!("{response} ")));
                    seen.push(format!(
                        "{response} {}",
                        form.get("remoteip").cloned().unwrap_or_default()
                    ));
                    let ok = form.get("secret").map(String::as_str) == Some("site-secret")
                        && response.starts_with("solved-")
                        && fresh;
                    axum::Json(if ok {
                        json!({"success": true, "error-codes": []})
                    } else {
                        json!({"success": false, "error-codes": ["invalid-input-response"]})
                    })
                },
            ),
        )
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/turnstile/v0/siteverify",
        listener.local_addr().expect("address")
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn a_captcha_guards_every_queue_join(backend: holdfast_tests::Backend) {
    let (url, seen) = siteverify().await;
    let node = InProcessNode::start_with(backend, |c| {
        c.captcha_siteverify_url = Some(url);
        c.captcha_secret = Some("site-secret".to_owned());
    })
    .await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    let queue = json!({"admit_per_minute": 600, "active_max": 10});
    let sale = event(&api, &organizer, 5, json!({"queue": queue})).await;
    let buyer = api.customer_token().await;
    let join = |body: Value| {
        let (api, buyer, sale) = (api.clone(), buyer.clone(), sale.clone());
        async move {
            api.post(&format!("/v1/events/{sale}/queue"), Some(&buyer), &body)
                .await
        }
    };
    join(json!({}))
        .await
        .assert_problem(422, "captcha-required");
    join(json!({"captcha_token": "guessed"}))
        .await
        .assert_problem(403, "captcha-failed");
    join(json!({"captcha_token": "solved-1", "extra": 1}))
        .await
        .assert_status(422);
    join(json!({"captcha_token": "solved-1"}))
        .await
        .assert_status(201);
    // In the queue already: the same place, no new CAPTCHA asked.
    join(json!({})).await.assert_status(200);
    // A token is good once: another buyer replaying it fails.
    let other = api.customer_token().await;
    api.post(
        &format!("/v1/events/{sale}/queue"),
        Some(&other),
        &json!({"captcha_token": "solved-1"}),
    )
    .await
    .assert_problem(403, "captcha-failed");
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.iter().all(|c| c.ends_with(" 127.0.0.1")), "{calls:?}");
    node.shutdown().await;

    // The provider down: the join is not answered with a guess (503), and nothing joins.
    let unreachable = format!(
        "http://127.0.0.1:{}/siteverify",
        holdfast_tests::free_port()
    );
    let node = InProcessNode::start_with(backend, |c| {
        c.captcha_siteverify_url = Some(unreachable);
        c.captcha_secret = Some("site-secret".to_owned());
    })
    .await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    let sale = event(&api, &organizer, 5, json!({"queue": queue})).await;
    let buyer = api.customer_token().await;
    let reply = api
        .post(
            &format!("/v1/events/{sale}/queue"),
            Some(&buyer),
            &json!({"captcha_token": "solved-2"}),
        )
        .await;
    assert_eq!(reply.status, 503, "{reply}");
    me(&api, &buyer, &sale)
        .await
        .assert_problem(404, "not-in-queue");
    node.shutdown().await;
}
