//! The REST contract of `shared/API.md` (Accounts, Events, Holds, operations), checked over HTTP
//! against an in-process node. One suite, run on every storage backend.

use holdfast_gateway::auth::Role;
use holdfast_tests::{
    Backend, Body, InProcessNode, PASSWORD, TicketType, hold_body, hold_seats, unique_email,
};
use reqwest::Method;
use serde_json::{Value, json};

holdfast_tests::on_both_backends!(
    accounts_register_and_login,
    refresh_tokens_rotate_and_logout_revokes,
    events_create_list_and_read,
    holds_place_read_and_release,
    holds_are_all_or_nothing_when_sold_out,
    holds_count_against_the_per_user_limit,
    holds_refuse_invalid_requests,
    idempotency_key_replays_the_first_response,
    operations_endpoints,
    openapi_lists_every_route,
    holds_survive_a_restart,
);

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key} in {value}"))
}

async fn accounts_register_and_login(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let local = uuid::Uuid::new_v4().simple().to_string();
    let email = format!("Alice-{local}@Example.com");

    let created = api.register(&email, PASSWORD, "Alice").await;
    created.assert_status(201);
    assert_eq!(created.body["role"], "customer", "{created}");
    assert_eq!(created.body["name"], "Alice", "{created}");
    assert_eq!(
        str_of(&created.body, "email"),
        email.to_lowercase(),
        "emails are stored lower-case"
    );
    assert!(
        str_of(&created.body, "id").parse::<uuid::Uuid>().is_ok(),
        "{created}"
    );

    // The same address in another case is the same account.
    api.register(&email.to_lowercase(), PASSWORD, "Alice again")
        .await
        .assert_problem(409, "email-taken");
    api.register(&unique_email("weak"), "short", "Weak")
        .await
        .assert_problem(422, "weak-password");
    let weak_same_as_email = unique_email("same");
    api.register(&weak_same_as_email, &weak_same_as_email, "Same")
        .await
        .assert_problem(422, "weak-password");
    api.post(
        "/v1/auth/register",
        None,
        &json!({"email": unique_email("x"), "password": PASSWORD, "name": "X", "admin": true}),
    )
    .await
    .assert_problem(422, "invalid-request");
    api.send(
        Method::POST,
        "/v1/auth/register",
        None,
        Some(Body::Raw(r#"{"email": "a@b.c", "password": "#)),
        &[],
    )
    .await
    .assert_problem(400, "invalid-json");
    api.register("not-an-email", PASSWORD, "X")
        .await
        .assert_problem(422, "invalid-request");

    let login = api.login(&email, PASSWORD).await;
    login.assert_status(200);
    assert_eq!(login.body["token_type"], "Bearer", "{login}");
    assert!(
        login.body["expires_in"].as_u64().is_some_and(|s| s > 0),
        "{login}"
    );
    assert!(!str_of(&login.body, "access_token").is_empty(), "{login}");
    // Login matches the address case-insensitively too.
    api.login(&email.to_uppercase(), PASSWORD)
        .await
        .assert_status(200);

    api.login(&email, "wrong password!")
        .await
        .assert_problem(401, "invalid-credentials");
    api.login(&unique_email("nobody"), PASSWORD)
        .await
        .assert_problem(401, "invalid-credentials");
    api.post("/v1/auth/login", None, &json!({"email": email}))
        .await
        .assert_problem(422, "invalid-request");

    node.shutdown().await;
}

fn event_body() -> Value {
    json!({
        "name": "New Year Live",
        "venue": "My Dinh",
        "starts_at": "2030-12-31T20:00:00Z",
        "ticket_types": [
            {"code": "GA", "name": "General", "price": 500000, "currency": "VND",
             "capacity": 5000, "per_user_limit": 4},
            {"code": "VIP", "name": "VIP", "price": 2000000, "currency": "VND", "capacity": 100},
        ],
    })
}

async fn events_create_list_and_read(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let customer = api.customer_token().await;

    api.post("/v1/events", None, &event_body())
        .await
        .assert_problem(401, "unauthorized");
    api.post("/v1/events", Some("not.a.token"), &event_body())
        .await
        .assert_problem(401, "unauthorized");
    api.post("/v1/events", Some(&customer), &event_body())
        .await
        .assert_problem(403, "forbidden");

    let created = api
        .post("/v1/events", Some(&organizer), &event_body())
        .await;
    created.assert_status(201);
    let event = &created.body;
    let id = str_of(event, "id");
    assert!(id.parse::<uuid::Uuid>().is_ok(), "{created}");
    assert_eq!(event["name"], "New Year Live");
    assert_eq!(event["venue"], "My Dinh");
    assert_eq!(event["starts_at"], "2030-12-31T20:00:00Z");
    assert_eq!(event["ticket_types"][0]["code"], "GA");
    assert_eq!(event["ticket_types"][0]["capacity"], 5000);
    assert_eq!(event["ticket_types"][0]["per_user_limit"], 4);
    assert_eq!(event["ticket_types"][0]["price"], 500000);
    assert_eq!(event["ticket_types"][0]["currency"], "VND");
    assert_eq!(event["ticket_types"][1]["code"], "VIP");
    assert_eq!(event["ticket_types"][1]["per_user_limit"], Value::Null);

    let mut bad = event_body();
    bad["starts_at"] = json!("31/12/2026 20:00");
    api.post("/v1/events", Some(&organizer), &bad)
        .await
        .assert_problem(422, "invalid-request");
    let mut bad = event_body();
    bad["ticket_types"][1]["code"] = json!("GA");
    api.post("/v1/events", Some(&organizer), &bad)
        .await
        .assert_problem(422, "invalid-request");
    let mut bad = event_body();
    bad["ticket_types"][0]["per_user_limit"] = json!(0);
    api.post("/v1/events", Some(&organizer), &bad)
        .await
        .assert_problem(422, "invalid-request");
    let mut bad = event_body();
    bad["ticket_types"] = json!([]);
    api.post("/v1/events", Some(&organizer), &bad)
        .await
        .assert_problem(422, "invalid-request");
    let mut bad = event_body();
    bad["colour"] = json!("red");
    api.post("/v1/events", Some(&organizer), &bad)
        .await
        .assert_problem(422, "invalid-request");
    // Events that could never sell: one in the past, one priced in a currency VNPAY does not
    // take (its every order would end cancelled).
    let an_hour_ago = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    for past in [
        an_hour_ago
            .format(&time::format_description::well_known::Rfc3339)
            .expect("RFC 3339"),
        "2020-01-01T00:00:00Z".to_owned(),
    ] {
        let mut bad = event_body();
        bad["starts_at"] = json!(past);
        let reply = api.post("/v1/events", Some(&organizer), &bad).await;
        reply.assert_problem(422, "event-in-past");
        assert!(str_of(&reply.body, "detail").contains("future"), "{reply}");
    }
    let mut bad = event_body();
    bad["ticket_types"][1]["currency"] = json!("USD");
    let reply = api.post("/v1/events", Some(&organizer), &bad).await;
    reply.assert_problem(422, "currency-not-supported");
    assert!(str_of(&reply.body, "detail").contains("VND"), "{reply}");

    // Public reads.
    let list = api.get("/v1/events", None).await;
    list.assert_status(200);
    let listed = list.body.as_array().expect("a list of events");
    assert_eq!(listed.len(), 1, "only the valid event was created: {list}");
    assert_eq!(&listed[0], event, "the list shows the event as created");

    let page = api.get("/v1/events?limit=1&offset=1", None).await;
    page.assert_status(200);
    assert_eq!(page.body, json!([]), "offset past the only event");
    for bad in ["limit=0", "limit=201", "limit=ten", "offset=-1", "page=2"] {
        api.get(&format!("/v1/events?{bad}"), None)
            .await
            .assert_problem(422, "invalid-request");
    }

    let read = api.get(&format!("/v1/events/{id}"), None).await;
    read.assert_status(200);
    assert_eq!(&read.body, event, "GET shows the event as created");

    let unknown = uuid::Uuid::now_v7();
    api.get(&format!("/v1/events/{unknown}"), None)
        .await
        .assert_problem(404, "event-not-found");
    api.get("/v1/events/not-an-id", None)
        .await
        .assert_problem(404, "event-not-found");

    let availability = api
        .get(&format!("/v1/events/{id}/availability"), None)
        .await;
    availability.assert_status(200);
    assert_eq!(
        availability.body,
        json!({
            "event_id": id,
            "ticket_types": [
                {"code": "GA", "capacity": 5000, "available": 5000, "held": 0, "sold": 0},
                {"code": "VIP", "capacity": 100, "available": 100, "held": 0, "sold": 0},
            ],
        })
    );
    api.get(&format!("/v1/events/{unknown}/availability"), None)
        .await
        .assert_problem(404, "event-not-found");
    api.get("/v1/events/nope/availability", None)
        .await
        .assert_problem(404, "event-not-found");

    node.shutdown().await;
}

async fn holds_place_read_and_release(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let (alice, bob) = (api.customer_token().await, api.customer_token().await);
    let event = api.create_ga_event(&organizer, 10, None).await;

    let placed = api.hold(&alice, &event, &[("GA", 2)]).await;
    placed.assert_status(201);
    let hold = placed.body.clone();
    let id = str_of(&hold, "id").to_owned();
    assert_eq!(id.len(), 64, "hold ids are 64 hex digits: {placed}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{placed}");
    assert_eq!(hold["event_id"], json!(event));
    assert_eq!(hold["status"], "active");
    assert_eq!(hold["items"], json!([{"ticket_type": "GA", "quantity": 2}]));
    assert!(
        str_of(&hold, "expires_at").ends_with('Z'),
        "expires_at is RFC 3339 UTC: {placed}"
    );
    assert_eq!(
        placed.header("location"),
        Some(format!("/v1/holds/{id}").as_str()),
        "Location of the new hold"
    );
    let stock = api.stock(&event, "GA").await;
    assert_eq!((stock.available, stock.held, stock.sold), (8, 2, 0));

    let read = api.get_hold(&alice, &id).await;
    read.assert_status(200);
    assert_eq!(read.body, hold, "the owner reads the hold as placed");

    // Another user's hold does not exist for them, and they cannot release it.
    api.get_hold(&bob, &id)
        .await
        .assert_problem(404, "hold-not-found");
    api.release_hold(&bob, &id)
        .await
        .assert_problem(404, "hold-not-found");
    assert_eq!(api.stock(&event, "GA").await.held, 2);
    api.get(&format!("/v1/holds/{id}"), None)
        .await
        .assert_problem(401, "unauthorized");

    let unknown_in_event = format!("{}{}", &id[..32], uuid::Uuid::now_v7().simple());
    let unknown_event = format!(
        "{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    );
    for garbage in [
        "xyz",
        "g".repeat(64).as_str(),
        &id[..63],
        &unknown_in_event,
        &unknown_event,
    ] {
        api.get_hold(&alice, garbage)
            .await
            .assert_problem(404, "hold-not-found");
        api.release_hold(&alice, garbage)
            .await
            .assert_problem(404, "hold-not-found");
    }

    api.release_hold(&alice, &id).await.assert_status(204);
    let released = api.get_hold(&alice, &id).await;
    released.assert_status(200);
    assert_eq!(released.body["status"], "released", "{released}");
    let stock = api.stock(&event, "GA").await;
    assert_eq!(
        (stock.available, stock.held, stock.sold),
        (10, 0, 0),
        "stock returns at once"
    );
    // Releasing again is a no-op.
    api.release_hold(&alice, &id).await.assert_status(204);
    assert_eq!(api.stock(&event, "GA").await.available, 10);
    assert_eq!(api.get_hold(&alice, &id).await.body["status"], "released");

    node.shutdown().await;
}

async fn holds_are_all_or_nothing_when_sold_out(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let customer = api.customer_token().await;
    let event = api
        .create_event(
            &organizer,
            &[
                TicketType::new("GA", 5, None),
                TicketType::new("VIP", 2, None),
            ],
        )
        .await;

    // VIP cannot be met: nothing is held, GA included.
    let refused = api.hold(&customer, &event, &[("GA", 2), ("VIP", 3)]).await;
    refused.assert_problem(409, "sold-out");
    assert_eq!(
        refused.body["available"],
        json!([{"ticket_type": "GA", "available": 5}, {"ticket_type": "VIP", "available": 2}]),
        "{refused}"
    );
    let stock = api.availability(&event).await;
    assert_eq!((stock["GA"].available, stock["GA"].held), (5, 0));
    assert_eq!((stock["VIP"].available, stock["VIP"].held), (2, 0));

    api.hold(&customer, &event, &[("GA", 2), ("VIP", 2)])
        .await
        .assert_status(201);
    let refused = api.hold(&customer, &event, &[("GA", 1), ("VIP", 1)]).await;
    refused.assert_problem(409, "sold-out");
    assert_eq!(
        refused.body["available"],
        json!([{"ticket_type": "GA", "available": 3}, {"ticket_type": "VIP", "available": 0}]),
        "{refused}"
    );
    assert_eq!(api.stock(&event, "GA").await.held, 2);

    // The last seats go, then nothing.
    api.hold(&customer, &event, &[("GA", 3)])
        .await
        .assert_status(201);
    let refused = api.hold(&customer, &event, &[("GA", 1)]).await;
    refused.assert_problem(409, "sold-out");
    assert_eq!(
        refused.body["available"],
        json!([{"ticket_type": "GA", "available": 0}])
    );
    let stock = api.availability(&event).await;
    assert_eq!((stock["GA"].available, stock["GA"].held), (0, 5));
    assert_eq!((stock["VIP"].available, stock["VIP"].held), (0, 2));

    node.shutdown().await;
}

async fn holds_count_against_the_per_user_limit(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let (alice, bob) = (api.customer_token().await, api.customer_token().await);
    let event = api.create_ga_event(&organizer, 100, Some(3)).await;

    let first = api.hold(&alice, &event, &[("GA", 2)]).await;
    first.assert_status(201);
    // 2 held + 2 asked > 3: refused, counting the first hold.
    let refused = api.hold(&alice, &event, &[("GA", 2)]).await;
    refused.assert_problem(409, "limit-exceeded");
    assert_eq!(refused.body["ticket_type"], "GA", "{refused}");
    assert_eq!(refused.body["limit"], 3, "{refused}");
    assert_eq!(refused.body["already"], 2, "{refused}");
    // One line may not exceed it either, nor two lines of the same type together.
    api.hold(&bob, &event, &[("GA", 4)])
        .await
        .assert_problem(409, "limit-exceeded");
    api.hold(&bob, &event, &[("GA", 2), ("GA", 2)])
        .await
        .assert_problem(409, "limit-exceeded");

    api.hold(&alice, &event, &[("GA", 1)])
        .await
        .assert_status(201);
    api.hold(&alice, &event, &[("GA", 1)])
        .await
        .assert_problem(409, "limit-exceeded");
    // Another user has a limit of their own.
    api.hold(&bob, &event, &[("GA", 3)])
        .await
        .assert_status(201);
    assert_eq!(api.stock(&event, "GA").await.held, 6);

    // A released hold stops counting.
    api.release_hold(&alice, str_of(&first.body, "id"))
        .await
        .assert_status(204);
    api.hold(&alice, &event, &[("GA", 2)])
        .await
        .assert_status(201);
    assert_eq!(api.stock(&event, "GA").await.held, 6);

    node.shutdown().await;
}

async fn holds_refuse_invalid_requests(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let customer = api.customer_token().await;
    let event = api.create_ga_event(&organizer, 10, None).await;
    let path = format!("/v1/events/{event}/holds");

    for items in [
        vec![("GA", 0)],
        vec![("GA", -1)],
        vec![],
        vec![("NOPE", 1)],
        vec![("not a code", 1)],
        vec![("GA", 1), ("NOPE", 1)],
        vec![("GA", 10_001)],
    ] {
        api.hold(&customer, &event, &items)
            .await
            .assert_problem(422, "invalid-request");
    }
    api.post(
        &path,
        Some(&customer),
        &json!({"items": [{"ticket_type": "GA", "quantity": 1, "seat": "A1"}]}),
    )
    .await
    .assert_problem(422, "invalid-request");
    api.post(&path, Some(&customer), &json!({}))
        .await
        .assert_problem(422, "invalid-request");
    api.send(
        Method::POST,
        &path,
        Some(&customer),
        Some(Body::Raw("{\"items\": [")),
        &[],
    )
    .await
    .assert_problem(400, "invalid-json");
    api.post(&path, None, &hold_body(&[("GA", 1)]))
        .await
        .assert_problem(401, "unauthorized");

    let unknown = uuid::Uuid::now_v7();
    api.hold(&customer, &unknown.to_string(), &[("GA", 1)])
        .await
        .assert_problem(404, "event-not-found");
    api.hold(&customer, "not-an-event", &[("GA", 1)])
        .await
        .assert_problem(404, "event-not-found");

    let stock = api.stock(&event, "GA").await;
    assert_eq!(
        (stock.available, stock.held),
        (10, 0),
        "refused requests take nothing"
    );
    node.shutdown().await;
}

async fn idempotency_key_replays_the_first_response(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let (alice, bob) = (api.customer_token().await, api.customer_token().await);
    let event = api.create_ga_event(&organizer, 10, None).await;
    let path = format!("/v1/events/{event}/holds");
    let two = hold_body(&[("GA", 2)]);
    let key = [("idempotency-key", "checkout-7f3a")];

    let first = api
        .send(
            Method::POST,
            &path,
            Some(&alice),
            Some(Body::Json(&two)),
            &key,
        )
        .await;
    first.assert_status(201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = api
        .send(
            Method::POST,
            &path,
            Some(&alice),
            Some(Body::Json(&two)),
            &key,
        )
        .await;
    again.assert_status(201);
    assert_eq!(
        again.body, first.body,
        "the first response again, same hold id"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        again.header("content-type"),
        first.header("content-type"),
        "replayed content type"
    );
    assert_eq!(api.stock(&event, "GA").await.held, 2, "stock taken once");

    // The same key with another body is refused and changes nothing.
    api.send(
        Method::POST,
        &path,
        Some(&alice),
        Some(Body::Json(&hold_body(&[("GA", 3)]))),
        &key,
    )
    .await
    .assert_problem(422, "idempotency-key-reused");
    assert_eq!(api.stock(&event, "GA").await.held, 2);

    // Keys belong to their caller: another user's request with the same key is new.
    let bobs = api
        .send(
            Method::POST,
            &path,
            Some(&bob),
            Some(Body::Json(&two)),
            &key,
        )
        .await;
    bobs.assert_status(201);
    assert_ne!(bobs.body["id"], first.body["id"]);
    assert_eq!(bobs.header("idempotent-replayed"), None);
    assert_eq!(api.stock(&event, "GA").await.held, 4);

    // Errors are replayed too: a refusal is a response like any other.
    let too_many = hold_body(&[("GA", 50)]);
    let refusal_key = [("idempotency-key", "too-many")];
    api.send(
        Method::POST,
        &path,
        Some(&alice),
        Some(Body::Json(&too_many)),
        &refusal_key,
    )
    .await
    .assert_problem(409, "sold-out");
    let replayed = api
        .send(
            Method::POST,
            &path,
            Some(&alice),
            Some(Body::Json(&too_many)),
            &refusal_key,
        )
        .await;
    replayed.assert_problem(409, "sold-out");
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));

    // A malformed key is refused.
    api.send(
        Method::POST,
        &path,
        Some(&alice),
        Some(Body::Json(&two)),
        &[("idempotency-key", &"k".repeat(256))],
    )
    .await
    .assert_problem(422, "invalid-request");
    assert_eq!(api.stock(&event, "GA").await.held, 4);

    node.shutdown().await;
}

async fn operations_endpoints(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();

    let health = api.get("/healthz", None).await;
    health.assert_status(200);
    assert_eq!(health.body["status"], "ok");
    let ready = api.get("/readyz", None).await;
    ready.assert_status(200);
    assert_eq!(ready.body["status"], "ready");

    // A request id sent by the caller is kept.
    let traced = api
        .send(
            Method::GET,
            "/healthz",
            None,
            None,
            &[("x-request-id", "trace-me-42")],
        )
        .await;
    assert_eq!(traced.header("x-request-id"), Some("trace-me-42"));
    // Ids the server makes differ per request.
    let (a, b) = (
        api.get("/healthz", None).await,
        api.get("/healthz", None).await,
    );
    assert_ne!(a.header("x-request-id"), b.header("x-request-id"));

    // Metrics and the admin API are on the ops listener only, never the public one.
    for path in ["/metrics", "/v1/admin/shards", "/v1/admin/nodes"] {
        api.get(path, None).await.assert_problem(404, "not-found");
    }
    let metrics = node.ops_client().get("/metrics", None).await;
    metrics.assert_status(200);
    let text = metrics.body.as_str().expect("metrics are text");
    assert!(
        text.contains("holdfast_http_requests_total"),
        "metrics without holdfast_http_requests_total:\n{text}"
    );

    api.get("/v1/no/such/route", None)
        .await
        .assert_problem(404, "not-found");
    api.delete("/v1/events", None)
        .await
        .assert_problem(405, "method-not-allowed");

    node.shutdown().await;
}

/// Every route the router serves, with the methods it takes there.
const ROUTES: &[(&str, &[&str])] = &[
    ("/v1/auth/register", &["post"]),
    ("/v1/auth/login", &["post"]),
    ("/v1/events", &["get", "post"]),
    ("/v1/events/{event_id}", &["get", "patch"]),
    ("/v1/events/{event_id}/ticket-types", &["post"]),
    ("/v1/events/{event_id}/ticket-types/{code}", &["patch"]),
    ("/v1/events/{event_id}/cancel", &["post"]),
    ("/v1/events/{event_id}/orders", &["get"]),
    ("/v1/events/{event_id}/attendees", &["get"]),
    ("/v1/categories", &["get"]),
    ("/v1/organizer/events", &["get"]),
    ("/v1/events/{event_id}/availability", &["get"]),
    ("/v1/events/{event_id}/holds", &["post"]),
    ("/v1/holds/{hold_id}", &["get", "delete"]),
    ("/v1/orders", &["get", "post"]),
    ("/v1/orders/{order_id}", &["get"]),
    ("/v1/orders/{order_id}/refund", &["post"]),
    ("/v1/orders/{order_id}/tickets", &["get"]),
    ("/v1/tickets/{ticket_id}/qr.png", &["get"]),
    ("/v1/checkin", &["post"]),
    ("/v1/organizer/staff", &["post"]),
    ("/v1/payments/vnpay/ipn", &["get"]),
    ("/v1/payments/vnpay/return", &["get"]),
    ("/v1/auth/refresh", &["post"]),
    ("/v1/auth/logout", &["post"]),
    ("/v1/admin/shards", &["get"]),
    ("/v1/admin/shards/{shard}/move", &["post"]),
    ("/v1/admin/nodes", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
    ("/metrics", &["get"]),
    ("/openapi.json", &["get"]),
];

async fn openapi_lists_every_route(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let doc = api.get("/openapi.json", None).await;
    doc.assert_status(200);
    assert!(
        doc.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{:?}",
        doc.header("content-type")
    );
    assert!(
        doc.body["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.")),
        "not an OpenAPI document"
    );
    let paths = doc.body["paths"]
        .as_object()
        .expect("an OpenAPI document has paths");
    for (path, methods) in ROUTES {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("/openapi.json does not list {path}"));
        for method in *methods {
            assert!(
                item.get(*method).is_some(),
                "/openapi.json does not list {method} {path}"
            );
        }
    }
    // And the other way round: every documented operation is served (not the router fallback).
    let token = api.customer_token().await;
    let hold_id = format!(
        "{}{}",
        uuid::Uuid::now_v7().simple(),
        uuid::Uuid::now_v7().simple()
    );
    for (path, item) in paths {
        let concrete = path
            .replace("{event_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{hold_id}", &hold_id)
            .replace("{shard}", "0");
        for method in ["get", "post", "delete", "put", "patch"] {
            if item.get(method).is_none() {
                continue;
            }
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            // Operations documented with their own server are the ops listener's.
            let client = if item.get("servers").is_some() {
                node.ops_client()
            } else {
                api
            };
            let reply = client
                .send(
                    method.clone(),
                    &concrete,
                    Some(&token),
                    Some(Body::Json(&json!({}))),
                    &[],
                )
                .await;
            assert!(
                !matches!(reply.slug(), Some("not-found" | "method-not-allowed")),
                "{method} {path} is documented but not served: {reply}"
            );
        }
    }
    node.shutdown().await;
}

async fn holds_survive_a_restart(backend: Backend) {
    let mut node = InProcessNode::start(backend).await;
    let organizer = node.organizer_token().await;
    let api = node.client().clone();
    let (alice, bob) = (api.customer_token().await, api.customer_token().await);
    let event = api
        .create_event(
            &organizer,
            &[
                TicketType::new("GA", 50, Some(10)),
                TicketType::new("VIP", 5, None),
            ],
        )
        .await;
    let mut holds = Vec::new();
    for (token, items) in [
        (&alice, vec![("GA", 2)]),
        (&alice, vec![("GA", 1), ("VIP", 2)]),
        (&bob, vec![("GA", 4)]),
        (&bob, vec![("VIP", 1)]),
    ] {
        let placed = api.hold(token, &event, &items).await;
        placed.assert_status(201);
        holds.push((token.clone(), str_of(&placed.body, "id").to_owned()));
    }
    api.release_hold(&bob, &holds[2].1).await.assert_status(204);
    let before_stock = api.availability(&event).await;
    let mut before_holds = Vec::new();
    for (token, id) in &holds {
        before_holds.push(api.get_hold(token, id).await.body);
    }

    node.restart().await;
    let api = node.client().clone();
    assert!(
        node.sandbox().database().snapshot_count(&event).await >= 1,
        "a graceful shutdown snapshots the event"
    );
    assert_eq!(
        api.availability(&event).await,
        before_stock,
        "availability is identical after the restart"
    );
    for ((token, id), before) in holds.iter().zip(&before_holds) {
        let after = api.get_hold(token, id).await;
        after.assert_status(200);
        assert_eq!(&after.body, before, "hold {id} is unchanged");
    }
    assert_eq!(before_holds[2]["status"], "released");
    assert_eq!(hold_seats(&before_holds[1])["VIP"], 2);

    // The restarted node keeps counting from where the old one stopped.
    api.hold(&alice, &event, &[("GA", 8)])
        .await
        .assert_problem(409, "limit-exceeded");
    api.hold(&bob, &event, &[("VIP", 2)])
        .await
        .assert_status(201);
    let stock = api.availability(&event).await;
    assert_eq!((stock["VIP"].available, stock["VIP"].held), (0, 5));
    assert_eq!(stock["GA"].held, 3);

    // A second restart replays the journal written after the snapshot.
    node.restart().await;
    assert_eq!(node.client().availability(&event).await, stock);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizers_created_outside_http_can_log_in() {
    let node = InProcessNode::start(Backend::Sqlite).await;
    let token = node.user_token(Role::Admin).await;
    // Admins may create events too.
    node.client().create_ga_event(&token, 1, None).await;
    node.shutdown().await;
}

/// API.md: "the same key with the same body returns the first response again", headers that
/// matter included: the replay of a 201 hold keeps its `Location`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_replay_keeps_the_location_header() {
    let node = InProcessNode::start(Backend::Sqlite).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let customer = api.customer_token().await;
    let event = api.create_ga_event(&organizer, 10, None).await;
    let path = format!("/v1/events/{event}/holds");
    let body = hold_body(&[("GA", 1)]);
    let key = [("idempotency-key", "location-1")];
    let first = api
        .send(
            Method::POST,
            &path,
            Some(&customer),
            Some(Body::Json(&body)),
            &key,
        )
        .await;
    first.assert_status(201);
    let replay = api
        .send(
            Method::POST,
            &path,
            Some(&customer),
            Some(Body::Json(&body)),
            &key,
        )
        .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(
        replay.header("location"),
        first.header("location"),
        "the replay is the first response again, headers included"
    );
    node.shutdown().await;
}

/// The 504 `timeout` answer says "it may or may not have taken effect, retry with the same
/// Idempotency-Key". The request keeps running after the 504 and its answer is kept, so a retry
/// gets the hold that was placed, once, instead of a key stuck in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_a_timeout_with_the_same_key_is_answered() {
    use sqlx::{Connection as _, Executor as _};
    let node = InProcessNode::start_with(Backend::Postgres, |c| c.request_timeout_secs = 1).await;
    let api = node.client();
    let organizer = node.organizer_token().await;
    let customer = api.customer_token().await;
    let event = api.create_ga_event(&organizer, 10, None).await;
    assert_eq!(
        api.stock(&event, "GA").await.held,
        0,
        "the event's actor runs"
    );
    let path = format!("/v1/events/{event}/holds");
    let body = hold_body(&[("GA", 1)]);
    let key = [("idempotency-key", "slow-1")];

    // Journal writes wait for this lock: the hold outlives the 1 s request timeout.
    let mut blocker = sqlx::PgConnection::connect(node.sandbox().database().url())
        .await
        .expect("connect");
    blocker.execute("BEGIN").await.expect("begin");
    blocker
        .execute("LOCK TABLE journal IN EXCLUSIVE MODE")
        .await
        .expect("lock the journal");
    api.send(
        Method::POST,
        &path,
        Some(&customer),
        Some(Body::Json(&body)),
        &key,
    )
    .await
    .assert_problem(504, "timeout");
    blocker.execute("ROLLBACK").await.expect("unlock");
    let _ = blocker.close().await;
    assert!(
        holdfast_tests::poll_until(
            std::time::Duration::from_secs(5),
            std::time::Duration::from_millis(50),
            || async { (api.stock(&event, "GA").await.held == 1).then_some(()) },
        )
        .await
        .is_some(),
        "the timed-out hold was placed once the journal was free"
    );

    let retry = holdfast_tests::poll_until(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_millis(200),
        || async {
            let reply = api
                .send(
                    Method::POST,
                    &path,
                    Some(&customer),
                    Some(Body::Json(&body)),
                    &key,
                )
                .await;
            (reply.slug() != Some("idempotency-key-in-progress")).then_some(reply)
        },
    )
    .await
    .expect("the retry is still 409 idempotency-key-in-progress 5 s after the timeout");
    // The request ran to its end after the 504: the retry replays its 201, no second hold.
    retry.assert_status(201);
    assert_eq!(retry.header("idempotent-replayed"), Some("true"), "{retry}");
    assert_eq!(api.stock(&event, "GA").await.held, 1, "one hold, not two");
    node.shutdown().await;
}

/// API.md: refresh gives a new pair and the old refresh token stops working; reusing it revokes
/// the whole family; logout refuses that access token from then on.
async fn refresh_tokens_rotate_and_logout_revokes(backend: Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client();
    let email = holdfast_tests::unique_email("refresh");
    api.register(&email, holdfast_tests::PASSWORD, "R")
        .await
        .assert_status(201);
    let login = api.login(&email, holdfast_tests::PASSWORD).await;
    login.assert_status(200);
    let (access, refresh) = (
        str_of(&login.body, "access_token").to_owned(),
        str_of(&login.body, "refresh_token").to_owned(),
    );

    let refresh_with = |token: String| {
        let api = api.clone();
        async move {
            api.post("/v1/auth/refresh", None, &json!({"refresh_token": token}))
                .await
        }
    };
    let second = refresh_with(refresh.clone()).await;
    second.assert_status(200);
    let (access2, refresh2) = (
        str_of(&second.body, "access_token").to_owned(),
        str_of(&second.body, "refresh_token").to_owned(),
    );
    assert_ne!(refresh2, refresh);
    assert_eq!(second.body["token_type"], "Bearer");
    // The new access token works.
    api.get("/v1/events", Some(&access2))
        .await
        .assert_status(200);
    let as_customer = api
        .create_event_reply(&access2, &[holdfast_tests::TicketType::new("GA", 1, None)])
        .await;
    as_customer.assert_problem(403, "forbidden");

    // The old refresh token again: a replay. It fails, and so does its successor.
    refresh_with(refresh.clone())
        .await
        .assert_problem(401, "refresh-token-reused");
    refresh_with(refresh2)
        .await
        .assert_problem(401, "invalid-refresh-token");
    refresh_with("0".repeat(64))
        .await
        .assert_problem(401, "invalid-refresh-token");
    refresh_with(String::new())
        .await
        .assert_problem(401, "invalid-refresh-token");
    // The reuse revoked the login: its access tokens stop working too.
    for token in [&access, &access2] {
        api.get("/v1/orders", Some(token))
            .await
            .assert_problem(401, "token-revoked");
    }

    // Logout: that access token is refused at once, another login is not affected.
    let access = api.login_token(&email, holdfast_tests::PASSWORD).await;
    let other = api.login(&email, holdfast_tests::PASSWORD).await;
    let other_access = str_of(&other.body, "access_token").to_owned();
    let other_refresh = str_of(&other.body, "refresh_token").to_owned();
    let event = api
        .create_ga_event(&node.organizer_token().await, 10, None)
        .await;
    api.hold(&access, &event, &[("GA", 1)])
        .await
        .assert_status(201);
    api.post("/v1/auth/logout", Some(&access), &json!({}))
        .await
        .assert_status(204);
    api.hold(&access, &event, &[("GA", 1)])
        .await
        .assert_problem(401, "token-revoked");
    api.post("/v1/auth/logout", None, &json!({}))
        .await
        .assert_problem(401, "unauthorized");
    api.hold(&other_access, &event, &[("GA", 1)])
        .await
        .assert_status(201);
    refresh_with(other_refresh.clone()).await.assert_status(200);
    // Logging out the other login ends its refresh tokens too.
    let third = api.login(&email, holdfast_tests::PASSWORD).await;
    let (third_access, third_refresh) = (
        str_of(&third.body, "access_token").to_owned(),
        str_of(&third.body, "refresh_token").to_owned(),
    );
    api.post("/v1/auth/logout", Some(&third_access), &json!({}))
        .await
        .assert_status(204);
    refresh_with(third_refresh)
        .await
        .assert_problem(401, "invalid-refresh-token");
    node.shutdown().await;
}
