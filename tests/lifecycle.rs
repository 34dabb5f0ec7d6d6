//! Event lifecycle and catalog (API.md "Event lifecycle and catalog"): edits, the sale window,
//! cancellation with holds and orders in flight, ownership, the catalog's filters, and the
//! organizer's orders and attendees as JSON and CSV. One suite, run on both backends.

use std::collections::BTreeMap;
use std::time::Duration;

use holdfast_gateway::auth::Role;
use holdfast_tests::{Client, InProcessNode, Reply, on_both_backends, poll_until};
use reqwest::Method;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

on_both_backends!(
    edits_and_cancel_with_holds_and_orders_in_flight,
    other_organizers_get_404_for_every_write,
    sale_window_and_new_prices_apply_to_new_holds,
    catalog_filters_and_the_organizers_own_list,
    organizer_sees_orders_and_attendees_as_csv,
    a_payment_after_the_cancel_is_refunded,
    a_cancel_cut_short_by_a_stop_is_refunded_after_the_restart,
);

const WAIT: Duration = Duration::from_secs(30);

async fn count_in(url: &str, sql: &str) -> i64 {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let row = sqlx::query(sql).fetch_one(&mut conn).await.expect(sql);
    let n = row.try_get::<i64, _>(0).expect("a count");
    let _ = conn.close().await;
    n
}

async fn execute_in(url: &str, sql: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    sqlx::query(sql).execute(&mut conn).await.expect(sql);
    let _ = conn.close().await;
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("format")
}

fn in_secs(secs: i64) -> String {
    rfc3339(OffsetDateTime::now_utc() + time::Duration::seconds(secs))
}

async fn patch(api: &Client, path: &str, token: &str, body: &Value) -> Reply {
    api.send(
        Method::PATCH,
        path,
        Some(token),
        Some(holdfast_tests::Body::Json(body)),
        &[],
    )
    .await
}

fn id_of(reply: &Reply) -> String {
    reply.body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {reply}"))
        .to_owned()
}

/// An event with the types given as `(code, price, capacity, per_user_limit)`, plus `extra`
/// fields.
async fn create(api: &Client, token: &str, types: &[(&str, i64, u32)], extra: Value) -> String {
    let mut body = json!({
        "name": "New Year Live",
        "venue": "My Dinh",
        "starts_at": "2030-12-31T20:00:00Z",
        "ticket_types": types.iter().map(|(code, price, capacity)| json!({
            "code": code, "name": code, "price": price, "currency": "VND",
            "capacity": capacity, "per_user_limit": 10,
        })).collect::<Vec<_>>(),
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let reply = api.post("/v1/events", Some(token), &body).await;
    reply.assert_status(201);
    id_of(&reply)
}

/// A hold of `quantity` seats of `code` ordered at once; free seats confirm without payment.
async fn buy(api: &Client, token: &str, event: &str, code: &str, quantity: i64) -> String {
    let hold = api.hold(token, event, &[(code, quantity)]).await;
    hold.assert_status(201);
    let order = api
        .post("/v1/orders", Some(token), &json!({"hold_id": id_of(&hold)}))
        .await;
    order.assert_status(201);
    assert_eq!(order.body["status"], "confirmed", "{order}");
    id_of(&order)
}

/// A node whose VNPAY is a stand-in served here, and the stand-in's base URL.
async fn with_vnpay_sim(backend: holdfast_tests::Backend) -> (InProcessNode, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the VNPAY stand-in");
    let sim = format!("http://{}", listener.local_addr().expect("address"));
    let node = InProcessNode::start_with(backend, |c| {
        c.vnpay_pay_url = Some(format!("{sim}/paymentv2/vpcpay.html"));
        c.vnpay_api_url = Some(format!("{sim}/merchant_webapi/api/transaction"));
    })
    .await;
    holdfast_tests::serve_vnpay(
        listener,
        format!("{}/v1/payments/vnpay/ipn", node.base_url()),
    );
    (node, sim)
}

/// Two seats of `GA` held and ordered by `buyer`: the order's id and its payment URL.
async fn order_two(api: &Client, buyer: &str, event: &str) -> (String, String) {
    let hold = api.hold(buyer, event, &[("GA", 2)]).await;
    hold.assert_status(201);
    let order = api
        .post("/v1/orders", Some(buyer), &json!({"hold_id": id_of(&hold)}))
        .await;
    order.assert_status(201);
    let order = id_of(&order);
    let payment_url = poll_until(WAIT, Duration::from_millis(50), || async {
        let reply = api.get(&format!("/v1/orders/{order}"), Some(buyer)).await;
        reply.body["payment_url"].as_str().map(str::to_owned)
    })
    .await
    .expect("the order gets its payment URL");
    (order, payment_url)
}

async fn order_status(api: &Client, token: &str, order: &str) -> String {
    let reply = api.get(&format!("/v1/orders/{order}"), Some(token)).await;
    reply.assert_status(200);
    reply.body["status"].as_str().unwrap_or_default().to_owned()
}

async fn edits_and_cancel_with_holds_and_orders_in_flight(backend: holdfast_tests::Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    let event = create(&api, &organizer, &[("GA", 0, 10)], json!({})).await;
    let path = format!("/v1/events/{event}");
    let (alice, bob) = (api.customer_token().await, api.customer_token().await);

    let sold = buy(&api, &alice, &event, "GA", 3).await;
    let held = api.hold(&bob, &event, &[("GA", 2)]).await;
    held.assert_status(201);
    let held = id_of(&held);

    // Never below held + sold; exactly that is fine and leaves nothing to sell.
    let ga = format!("{path}/ticket-types/GA");
    let below = patch(&api, &ga, &organizer, &json!({"capacity": 4})).await;
    below.assert_problem(409, "capacity-below-sold");
    assert_eq!(below.body["committed"], 5, "{below}");
    patch(&api, &ga, &organizer, &json!({"capacity": 5}))
        .await
        .assert_status(200);
    let stock = api.stock(&event, "GA").await;
    assert_eq!(
        (stock.capacity, stock.available, stock.held, stock.sold),
        (5, 0, 2, 3)
    );
    api.hold(&alice, &event, &[("GA", 1)])
        .await
        .assert_problem(409, "sold-out");

    // Capacity changes racing with holds: every seat is either sold once or still on sale.
    let buyers = api.customer_tokens(6, 3).await;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, buyer) in buyers.iter().enumerate() {
        let (api, buyer, event) = (api.clone(), buyer.clone(), event.clone());
        tasks.spawn(async move {
            api.hold(&buyer, &event, &[("GA", 1 + (i as i64 % 2))])
                .await
        });
    }
    for capacity in [12, 9, 15, 20] {
        let reply = patch(&api, &ga, &organizer, &json!({"capacity": capacity})).await;
        assert!(
            reply.status == 200 || reply.slug() == Some("capacity-below-sold"),
            "{reply}"
        );
    }
    let mut racing_held = 0;
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.expect("hold task");
        match reply.status {
            201 => racing_held += holdfast_tests::hold_seats(&reply.body)["GA"],
            409 => assert_eq!(reply.slug(), Some("sold-out"), "{reply}"),
            _ => panic!("unexpected {reply}"),
        }
    }
    let stock = api.stock(&event, "GA").await;
    assert_eq!(stock.sold, 3);
    assert_eq!(stock.held, 2 + racing_held);
    let event_now = api.get(&path, None).await;
    assert_eq!(
        event_now.body["ticket_types"][0]["capacity"].as_u64(),
        Some(stock.capacity),
        "the catalog shows the actor's capacity: {event_now}"
    );

    // Other fields and new ticket types.
    let edited = patch(
        &api,
        &path,
        &organizer,
        &json!({"name": "New Year Live II", "description": "Doors at 19:00", "category": "music"}),
    )
    .await;
    edited.assert_status(200);
    assert_eq!(edited.body["name"], "New Year Live II");
    assert_eq!(edited.body["category"], "music");
    let vip = json!({"code": "VIP", "name": "VIP", "price": 0, "currency": "VND", "capacity": 2});
    let added = api
        .post(&format!("{path}/ticket-types"), Some(&organizer), &vip)
        .await;
    added.assert_status(201);
    assert_eq!(added.body["ticket_types"][1]["code"], "VIP", "{added}");
    api.post(&format!("{path}/ticket-types"), Some(&organizer), &vip)
        .await
        .assert_problem(409, "ticket-type-exists");
    let vip_sold = buy(&api, &alice, &event, "VIP", 1).await;
    patch(
        &api,
        &format!("{path}/ticket-types/NOPE"),
        &organizer,
        &json!({"name": "x"}),
    )
    .await
    .assert_problem(404, "ticket-type-not-found");
    patch(&api, &path, &organizer, &json!({"organizer_id": "me"}))
        .await
        .assert_problem(422, "invalid-request");
    patch(
        &api,
        &path,
        &organizer,
        &json!({"category": "opera-on-ice"}),
    )
    .await
    .assert_problem(422, "unknown-category");

    // Cancel: the hold is released, no hold is taken, the orders are refunded in full.
    let cancelled = api
        .post(
            &format!("{path}/cancel"),
            Some(&organizer),
            &json!({"reason": "the venue flooded"}),
        )
        .await;
    cancelled.assert_status(202);
    assert_eq!(cancelled.body["status"], "cancelled", "{cancelled}");
    assert_eq!(api.get_hold(&bob, &held).await.body["status"], "released");
    api.hold(&bob, &event, &[("GA", 1)])
        .await
        .assert_problem(409, "event-cancelled");
    api.post("/v1/orders", Some(&bob), &json!({"hold_id": held}))
        .await
        .assert_problem(409, "hold-not-active");
    for order in [&sold, &vip_sold] {
        let refunded = poll_until(WAIT, Duration::from_millis(100), || async {
            (order_status(&api, &alice, order).await == "refunded").then_some(())
        })
        .await;
        assert!(
            refunded.is_some(),
            "order {order} of a cancelled event is refunded"
        );
    }
    let stock = poll_until(WAIT, Duration::from_millis(100), || async {
        let stock = api.availability(&event).await;
        stock
            .values()
            .all(|s| s.sold == 0 && s.held == 0)
            .then_some(stock)
    })
    .await;
    assert!(
        stock.is_some(),
        "every seat is back: nothing held, nothing sold"
    );
    // The buyer is told, with the reason.
    let told = format!(
        "SELECT COUNT(*) FROM notifications WHERE order_id IN ('{sold}', '{vip_sold}') \
         AND body LIKE '%event cancelled: the venue flooded%'"
    );
    let url = node.sandbox().database().url().to_owned();
    let notified = poll_until(WAIT, Duration::from_millis(100), || async {
        (count_in(&url, &told).await == 2).then_some(())
    })
    .await;
    assert!(notified.is_some(), "each refunded buyer is told why");
    patch(&api, &path, &organizer, &json!({"name": "Again"}))
        .await
        .assert_problem(409, "event-cancelled");
    // Cancelling again changes nothing.
    api.post(
        &format!("{path}/cancel"),
        Some(&organizer),
        &json!({"reason": "still flooded"}),
    )
    .await
    .assert_status(202);
    assert_eq!(api.get(&path, None).await.body["status"], "cancelled");
    node.shutdown().await;
}

async fn other_organizers_get_404_for_every_write(backend: holdfast_tests::Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client().clone();
    let owner = node.organizer_token().await;
    let other = node.organizer_token().await;
    let admin = node.user_token(Role::Admin).await;
    let customer = api.customer_token().await;
    let event = create(&api, &owner, &[("GA", 0, 10)], json!({})).await;
    let path = format!("/v1/events/{event}");
    let writes = |token: String| {
        let (api, path) = (api.clone(), path.clone());
        async move {
            let tt =
                json!({"code": "B", "name": "B", "price": 0, "currency": "VND", "capacity": 1});
            vec![
                patch(&api, &path, &token, &json!({"name": "Mine now"})).await,
                api.post(&format!("{path}/ticket-types"), Some(&token), &tt)
                    .await,
                patch(
                    &api,
                    &format!("{path}/ticket-types/GA"),
                    &token,
                    &json!({"capacity": 1}),
                )
                .await,
                api.post(
                    &format!("{path}/cancel"),
                    Some(&token),
                    &json!({"reason": "mine"}),
                )
                .await,
            ]
        }
    };
    for reply in writes(other.clone()).await {
        reply.assert_problem(404, "event-not-found");
    }
    for reply in writes(customer.clone()).await {
        reply.assert_problem(403, "forbidden");
    }
    for view in ["orders", "attendees", "orders?format=csv"] {
        for token in [&other, &customer] {
            api.get(&format!("{path}/{view}"), Some(token))
                .await
                .assert_problem(404, "event-not-found");
        }
        api.get(&format!("{path}/{view}"), Some(&admin))
            .await
            .assert_status(200);
    }
    let event_now = api.get(&path, None).await;
    assert_eq!(event_now.body["name"], "New Year Live");
    assert_eq!(event_now.body["status"], "on_sale");
    assert_eq!(api.stock(&event, "GA").await.capacity, 10);
    // An admin may edit any event.
    patch(&api, &path, &admin, &json!({"venue": "Hanoi Opera House"}))
        .await
        .assert_status(200);
    // The refund policy is edited like the rest: set, refused out of bounds, then removed.
    let policy = json!({"until_hours_before_start": 24, "fee_percent": 5, "fee_fixed": 10000});
    let reply = patch(&api, &path, &owner, &json!({"refund_policy": policy})).await;
    reply.assert_status(200);
    assert_eq!(reply.body["refund_policy"], policy);
    assert_eq!(api.get(&path, None).await.body["refund_policy"], policy);
    let too_much = json!({"refund_policy": {"until_hours_before_start": 24, "fee_percent": 101, "fee_fixed": 0}});
    patch(&api, &path, &owner, &too_much)
        .await
        .assert_status(422);
    assert_eq!(api.get(&path, None).await.body["refund_policy"], policy);
    patch(&api, &path, &owner, &json!({"refund_policy": null}))
        .await
        .assert_status(200);
    assert_eq!(
        api.get(&path, None).await.body["refund_policy"],
        Value::Null
    );
    node.shutdown().await;
}

async fn sale_window_and_new_prices_apply_to_new_holds(backend: holdfast_tests::Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    let buyer = api.customer_token().await;
    let opens = in_secs(3600);
    let event = create(
        &api,
        &organizer,
        &[("GA", 500_000, 20)],
        json!({"sale_starts_at": opens}),
    )
    .await;
    let path = format!("/v1/events/{event}");
    let read = api.get(&path, None).await;
    assert_eq!(read.body["status"], "scheduled", "{read}");
    let early = api.hold(&buyer, &event, &[("GA", 1)]).await;
    early.assert_problem(409, "sale-not-open");
    let said = |key: &str| {
        OffsetDateTime::parse(early.body[key].as_str().unwrap_or_default(), &Rfc3339)
            .unwrap_or_else(|_| panic!("{key} in {early}"))
    };
    let asked = OffsetDateTime::parse(&opens, &Rfc3339).expect("time");
    assert!((said("sale_starts_at") - asked).abs() < time::Duration::milliseconds(1));

    // Bad windows are refused.
    patch(
        &api,
        &path,
        &organizer,
        &json!({"sale_ends_at": in_secs(60)}),
    )
    .await
    .assert_problem(422, "invalid-request");
    patch(&api, &path, &organizer, &json!({"sale_starts_at": "soon"}))
        .await
        .assert_problem(422, "invalid-request");

    // Open the sale now.
    let open = patch(
        &api,
        &path,
        &organizer,
        &json!({"sale_starts_at": in_secs(-60)}),
    )
    .await;
    open.assert_status(200);
    assert_eq!(open.body["status"], "on_sale", "{open}");
    let before = api.hold(&buyer, &event, &[("GA", 2)]).await;
    before.assert_status(201);

    // A new price applies to holds placed after it.
    let repriced = patch(
        &api,
        &format!("{path}/ticket-types/GA"),
        &organizer,
        &json!({"price": 600_000, "name": "General admission"}),
    )
    .await;
    repriced.assert_status(200);
    assert_eq!(repriced.body["ticket_types"][0]["price"], 600_000);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let after = api.hold(&buyer, &event, &[("GA", 1)]).await;
    after.assert_status(201);
    for (hold, amount) in [(&before, 1_000_000), (&after, 600_000)] {
        let order = api
            .post("/v1/orders", Some(&buyer), &json!({"hold_id": id_of(hold)}))
            .await;
        order.assert_status(201);
        assert_eq!(order.body["amount"], amount, "{order}");
    }

    // End the sale: no more holds.
    let ended = patch(
        &api,
        &path,
        &organizer,
        &json!({"sale_ends_at": in_secs(-1)}),
    )
    .await;
    ended.assert_status(200);
    assert_eq!(ended.body["status"], "sale_ended", "{ended}");
    api.hold(&buyer, &event, &[("GA", 1)])
        .await
        .assert_problem(409, "sale-not-open");
    // Clearing the end opens it again; the window survives a restart of the node.
    patch(&api, &path, &organizer, &json!({"sale_ends_at": null}))
        .await
        .assert_status(200);
    api.hold(&buyer, &event, &[("GA", 1)])
        .await
        .assert_status(201);
    let mut node = node;
    patch(
        &node.client().clone(),
        &path,
        &organizer,
        &json!({"sale_starts_at": in_secs(3600)}),
    )
    .await
    .assert_status(200);
    node.restart().await;
    node.client()
        .hold(&buyer, &event, &[("GA", 1)])
        .await
        .assert_problem(409, "sale-not-open");
    node.shutdown().await;
}

async fn catalog_filters_and_the_organizers_own_list(backend: holdfast_tests::Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client().clone();
    let (first, second) = (node.organizer_token().await, node.organizer_token().await);
    let categories = api.get("/v1/categories", None).await;
    categories.assert_status(200);
    let slugs: Vec<&str> = categories
        .body
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|c| c["slug"].as_str())
        .collect();
    for slug in [
        "music",
        "sports",
        "theatre",
        "conference",
        "festival",
        "other",
    ] {
        assert!(slugs.contains(&slug), "{slug} in {categories}");
    }
    let event = |name: &str, venue: &str, category: &str, starts_at: &str| {
        json!({"name": name, "venue": venue, "category": category, "starts_at": starts_at,
               "description": format!("{name} at {venue}"),
               "ticket_types": [{"code": "GA", "name": "GA", "price": 0, "currency": "VND", "capacity": 5}]})
    };
    let mut ids = BTreeMap::new();
    for (token, name, venue, category, starts_at) in [
        (
            &first,
            "Rock Night",
            "My Dinh",
            "music",
            "2030-03-01T20:00:00Z",
        ),
        (
            &first,
            "Jazz 100%",
            "Hanoi Opera House",
            "music",
            "2030-05-01T20:00:00Z",
        ),
        (
            &second,
            "Cup Final",
            "My Dinh",
            "sports",
            "2030-04-01T18:00:00Z",
        ),
        (
            &second,
            "Lễ hội Hoa",
            "Sân vận động Mỹ Đình",
            "festival",
            "2031-01-01T10:00:00Z",
        ),
    ] {
        let reply = api
            .post(
                "/v1/events",
                Some(token),
                &event(name, venue, category, starts_at),
            )
            .await;
        reply.assert_status(201);
        assert_eq!(reply.body["description"], format!("{name} at {venue}"));
        ids.insert(name, id_of(&reply));
    }
    let names = |reply: &Reply| -> Vec<String> {
        reply.assert_status(200);
        reply
            .body
            .as_array()
            .unwrap_or_else(|| panic!("a list: {reply}"))
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_owned))
            .collect()
    };
    let list = |query: &str| {
        let api = api.clone();
        let query = query.to_owned();
        async move { api.get(&format!("/v1/events?{query}"), None).await }
    };
    assert_eq!(
        names(&list("category=music").await),
        ["Rock Night", "Jazz 100%"]
    );
    assert_eq!(
        names(&list("q=my%20dinh").await),
        ["Rock Night", "Cup Final"]
    );
    assert_eq!(names(&list("q=100%25").await), ["Jazz 100%"]);
    // Case folds beyond ASCII on both backends: "MỸ ĐÌNH" finds "Mỹ Đình".
    assert_eq!(
        names(&list("q=M%E1%BB%B8%20%C4%90%C3%8CNH").await),
        ["Lễ hội Hoa"]
    );
    assert_eq!(
        names(&list("q=_").await),
        Vec::<String>::new(),
        "LIKE wildcards are literal"
    );
    assert_eq!(
        names(&list("from=2030-03-15T00:00:00Z&to=2030-04-30T00:00:00Z").await),
        ["Cup Final"]
    );
    assert_eq!(
        names(&list("category=music&from=2030-04-01T00:00:00Z").await),
        ["Jazz 100%"]
    );
    assert_eq!(names(&list("limit=1&offset=1").await), ["Cup Final"]);
    assert_eq!(names(&list("category=comedy").await), Vec::<String>::new());
    list("from=yesterday")
        .await
        .assert_problem(422, "invalid-request");
    list("to=2030-01-01T00:00:00Z&from=2030-02-01T00:00:00Z")
        .await
        .assert_problem(422, "invalid-request");
    list("colour=red")
        .await
        .assert_problem(422, "invalid-request");
    let unknown = event("X", "Y", "opera-on-ice", "2030-01-01T00:00:00Z");
    api.post("/v1/events", Some(&first), &unknown)
        .await
        .assert_problem(422, "unknown-category");

    // An edit of the venue is found by the new one, not the old.
    patch(
        &api,
        &format!("/v1/events/{}", ids["Cup Final"]),
        &second,
        &json!({"venue": "Sân Hàng Đẫy"}),
    )
    .await
    .assert_status(200);
    assert_eq!(names(&list("q=h%C3%A0ng%20%C4%91").await), ["Cup Final"]);
    assert_eq!(names(&list("q=my%20dinh").await), ["Rock Night"]);
    let own = api.get("/v1/organizer/events", Some(&first)).await;
    assert_eq!(names(&own), ["Rock Night", "Jazz 100%"]);
    let own = api.get("/v1/organizer/events?q=cup", Some(&second)).await;
    assert_eq!(names(&own), ["Cup Final"]);
    let customer = api.customer_token().await;
    api.get("/v1/organizer/events", Some(&customer))
        .await
        .assert_problem(403, "forbidden");
    api.get("/v1/organizer/events", None)
        .await
        .assert_problem(401, "unauthorized");
    node.shutdown().await;
}

fn parse_csv(reply: &Reply) -> Vec<BTreeMap<String, String>> {
    reply.assert_status(200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/csv")),
        "{:?}",
        reply.header("content-type")
    );
    let mut reader = csv::Reader::from_reader(reply.bytes.as_slice());
    let headers = reader.headers().expect("a header line").clone();
    reader
        .records()
        .map(|r| {
            let record = r.expect("a CSV record");
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

async fn organizer_sees_orders_and_attendees_as_csv(backend: holdfast_tests::Backend) {
    let node = InProcessNode::start(backend).await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    let event = create(&api, &organizer, &[("GA", 0, 10), ("VIP", 0, 4)], json!({})).await;
    let path = format!("/v1/events/{event}");
    // A name a spreadsheet would run as a formula, with a comma and a quote.
    let email = holdfast_tests::unique_email("csv");
    api.register(&email, holdfast_tests::PASSWORD, "=Nguyen, \"An\"")
        .await
        .assert_status(201);
    let an = api.login_token(&email, holdfast_tests::PASSWORD).await;
    let binh = api.customer_token().await;
    let first = buy(&api, &an, &event, "GA", 2).await;
    let second = buy(&api, &binh, &event, "VIP", 1).await;
    let refunded = buy(&api, &binh, &event, "GA", 1).await;
    api.post(
        &format!("/v1/orders/{refunded}/refund"),
        Some(&organizer),
        &json!({"reason": "asked"}),
    )
    .await
    .assert_status(202);

    let page = api
        .get(&format!("{path}/orders?limit=2"), Some(&organizer))
        .await;
    page.assert_status(200);
    assert_eq!(page.body["total"], 3, "{page}");
    assert_eq!(page.body["orders"].as_array().map(Vec::len), Some(2));
    assert_eq!(page.body["orders"][0]["id"], first.as_str());
    assert_eq!(page.body["orders"][0]["buyer"]["email"], email.as_str());
    let rest = api
        .get(&format!("{path}/orders?limit=2&offset=2"), Some(&organizer))
        .await;
    assert_eq!(rest.body["orders"][0]["id"], refunded.as_str(), "{rest}");
    assert_eq!(rest.body["orders"][0]["status"], "refunded");

    let orders = parse_csv(
        &api.get(&format!("{path}/orders?format=csv"), Some(&organizer))
            .await,
    );
    assert_eq!(orders.len(), 3, "{orders:?}");
    let by_id: BTreeMap<&str, &BTreeMap<String, String>> =
        orders.iter().map(|o| (o["order_id"].as_str(), o)).collect();
    assert_eq!(by_id[first.as_str()]["buyer_name"], "'=Nguyen, \"An\"");
    assert_eq!(by_id[first.as_str()]["buyer_email"], email);
    assert_eq!(by_id[first.as_str()]["tickets"], "2");
    assert_eq!(by_id[first.as_str()]["status"], "confirmed");
    assert_eq!(by_id[second.as_str()]["items"], "VIP x1 @0");
    assert_eq!(by_id[refunded.as_str()]["status"], "refunded");

    // Tickets are issued by the tickets service a moment after the orders, and the refunded
    // order's voided after that.
    let voided = poll_until(WAIT, Duration::from_millis(100), || async {
        let reply = api
            .get(&format!("/v1/orders/{refunded}/tickets"), Some(&organizer))
            .await;
        let list = reply.body.as_array().cloned().unwrap_or_default();
        (list.len() == 1 && list[0]["status"] == "void").then_some(())
    })
    .await;
    assert!(voided.is_some(), "the refunded order's ticket is void");
    let attendees = poll_until(WAIT, Duration::from_millis(100), || async {
        let reply = api
            .get(&format!("{path}/attendees"), Some(&organizer))
            .await;
        let of_refunded = reply.body["attendees"]
            .as_array()
            .is_some_and(|list| list.iter().any(|a| a["order_id"] == refunded.as_str()));
        (reply.body["total"] == 3 && !of_refunded).then_some(reply)
    })
    .await
    .expect("three tickets admit: two GA of the first order, the VIP");
    let first_ticket = attendees.body["attendees"]
        .as_array()
        .and_then(|list| list.iter().find(|a| a["order_id"] == first.as_str()))
        .cloned()
        .expect("a ticket of the first order");
    let tickets = api
        .get(&format!("/v1/orders/{first}/tickets"), Some(&an))
        .await;
    let code = tickets
        .body
        .as_array()
        .and_then(|list| list.iter().find(|t| t["id"] == first_ticket["ticket_id"]))
        .map(|t| t["code"].clone())
        .expect("the ticket's code");
    api.post(
        "/v1/checkin",
        Some(&organizer),
        &json!({"code": code, "event_id": event}),
    )
    .await
    .assert_status(200);

    let rows = parse_csv(
        &api.get(&format!("{path}/attendees?format=csv"), Some(&organizer))
            .await,
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for row in &rows {
        let checked_in = row["ticket_id"] == first_ticket["ticket_id"].as_str().unwrap();
        assert_eq!(row["checked_in"], checked_in.to_string(), "{row:?}");
        assert_eq!(row["checked_in_at"].is_empty(), !checked_in, "{row:?}");
        assert_ne!(row["order_id"], refunded, "refunded tickets do not admit");
    }
    let types: Vec<&str> = rows.iter().map(|r| r["ticket_type"].as_str()).collect();
    assert_eq!(types.iter().filter(|t| **t == "GA").count(), 2);
    assert_eq!(types.iter().filter(|t| **t == "VIP").count(), 1);
    api.get(&format!("{path}/attendees?format=xml"), Some(&organizer))
        .await
        .assert_problem(422, "invalid-request");
    api.get(&format!("{path}/orders?limit=0"), Some(&organizer))
        .await
        .assert_problem(422, "invalid-request");
    node.shutdown().await;
}

/// The buyer pays after the event was cancelled (and the hold released with it): the seats are
/// not taken again and the money goes back, as for a payment that found the seats sold.
async fn a_payment_after_the_cancel_is_refunded(backend: holdfast_tests::Backend) {
    let (node, sim) = with_vnpay_sim(backend).await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    let event = create(&api, &organizer, &[("GA", 500_000, 10)], json!({})).await;
    let buyer = api.customer_token().await;
    let (order, payment_url) = order_two(&api, &buyer, &event).await;
    api.post(
        &format!("/v1/events/{event}/cancel"),
        Some(&organizer),
        &json!({"reason": "called off"}),
    )
    .await
    .assert_status(202);
    assert_eq!(
        api.stock(&event, "GA").await.held,
        0,
        "the hold is released"
    );
    holdfast_tests::press(&sim, &payment_url, true).await;
    let refunded = poll_until(WAIT, Duration::from_millis(100), || async {
        (order_status(&api, &buyer, &order).await == "refunded").then_some(())
    })
    .await;
    assert!(refunded.is_some(), "the late payment is refunded");
    let stock = api.stock(&event, "GA").await;
    assert_eq!((stock.available, stock.held, stock.sold), (10, 0, 0));
    node.shutdown().await;
}

/// A node that stopped after storing a cancel but before refunding a single order (what a
/// crash between the two leaves in the database) refunds every paid order when it starts
/// again: each exactly once, the money back through VNPAY's stand-in, and the event still
/// refuses holds.
async fn a_cancel_cut_short_by_a_stop_is_refunded_after_the_restart(
    backend: holdfast_tests::Backend,
) {
    let (mut node, sim) = with_vnpay_sim(backend).await;
    let api = node.client().clone();
    let organizer = node.organizer_token().await;
    let event = create(&api, &organizer, &[("GA", 300_000, 20)], json!({})).await;
    let mut paid = Vec::new();
    for _ in 0..3 {
        let buyer = api.customer_token().await;
        let (order, payment_url) = order_two(&api, &buyer, &event).await;
        holdfast_tests::press(&sim, &payment_url, true).await;
        let confirmed = poll_until(WAIT, Duration::from_millis(50), || async {
            (order_status(&api, &buyer, &order).await == "confirmed").then_some(())
        })
        .await;
        assert!(confirmed.is_some(), "order {order} is paid");
        paid.push((buyer, order));
    }
    let url = node.sandbox().database().url().to_owned();
    node.stop().await;
    let now_ms = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    execute_in(
        &url,
        &format!(
            "UPDATE events SET cancelled_at = {now_ms}, cancel_reason = 'storm warning' \
             WHERE id = '{event}'"
        ),
    )
    .await;
    node.start_again().await;
    let api = node.client().clone();
    for (buyer, order) in &paid {
        let refunded = poll_until(WAIT, Duration::from_millis(100), || async {
            let reply = api
                .get(&format!("/v1/orders/{order}/refunds"), Some(buyer))
                .await;
            reply.assert_status(200);
            let items = reply.body["refunds"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (order_status(&api, buyer, order).await == "refunded"
                && items.iter().all(|r| r["status"] == "refunded"))
            .then_some(items)
        })
        .await
        .unwrap_or_else(|| panic!("order {order} is refunded after the restart"));
        assert_eq!(refunded.len(), 1, "one refund of {order}: {refunded:?}");
        assert_eq!(refunded[0]["amount"], 600_000, "{refunded:?}");
        assert!(
            refunded[0]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("storm warning")),
            "{refunded:?}"
        );
    }
    let buyer = api.customer_token().await;
    api.hold(&buyer, &event, &[("GA", 1)])
        .await
        .assert_problem(409, "event-cancelled");
    let stock = api.stock(&event, "GA").await;
    assert_eq!((stock.available, stock.held, stock.sold), (20, 0, 0));
    node.shutdown().await;
}
