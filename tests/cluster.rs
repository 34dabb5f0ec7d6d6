//! Cluster tests with real processes on loopback and a real PostgreSQL database: routing from
//! every node, a shard moved during a flash sale, `kill -9` of a node under load, a paused
//! owner fenced after its shard moved, and a purchase whose steps cross the nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use holdfast_actors::EventId;
use holdfast_tests::{
    Backend, Client, Reply, ServerProcess, TicketType, free_port, poll_until, press, serve_vnpay,
};
use serde_json::{Value, json};
use tokio::task::JoinSet;

const SHARDS: u32 = 8;

/// Nodes sharing one fresh PostgreSQL database (node 0's).
struct TestCluster {
    nodes: Vec<ServerProcess>,
    admin: String,
}

impl TestCluster {
    async fn start(n: usize, lease_secs: u32, extra: &[(&str, &str)]) -> Self {
        let lease = lease_secs.to_string();
        let mut nodes = Vec::with_capacity(n);
        let mut database = None::<String>;
        for i in 0..n {
            let id = format!("n{i}");
            let internal = format!("127.0.0.1:{}", free_port());
            let shards = SHARDS.to_string();
            let mut env: Vec<(&str, &str)> = vec![
                ("HOLDFAST_NODE_ID", &id),
                ("HOLDFAST_INTERNAL_ADDR", &internal),
                ("HOLDFAST_SHARDS", &shards),
                ("HOLDFAST_LEASE_SECS", &lease),
            ];
            env.extend_from_slice(extra);
            let node = match &database {
                None => ServerProcess::start(Backend::Postgres, &env).await,
                Some(url) => {
                    env.push(("HOLDFAST_DATABASE_URL", url));
                    // Its own directory; the database is node 0's.
                    ServerProcess::start(Backend::Sqlite, &env).await
                }
            };
            if database.is_none() {
                database = Some(node.sandbox().database().url().to_owned());
            }
            nodes.push(node);
        }
        let admin = nodes[0].user_token("admin").await;
        Self { nodes, admin }
    }

    fn client(&self, i: usize) -> &Client {
        self.nodes[i].client()
    }

    async fn shards_cli(&self, via: usize, args: &[&str]) -> String {
        let url = self.nodes[via].ops_client().base_url().to_owned();
        let mut all = vec!["shards", "--url", &url, "--token", &self.admin];
        all.extend_from_slice(args);
        let out = self.nodes[via].cli(&all, "").await;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "holdfast shards {args:?} failed: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// shard → owner, from `holdfast shards list --json`.
    async fn owners(&self, via: usize) -> BTreeMap<u32, String> {
        let json: Value = serde_json::from_str(&self.shards_cli(via, &["list", "--json"]).await)
            .expect("list --json is JSON");
        assert!(
            json["nodes"].is_array(),
            "list --json has the nodes: {json}"
        );
        json["shards"]
            .as_array()
            .expect("an array of shards")
            .iter()
            .map(|s| {
                let shard = u32::try_from(s["shard"].as_u64().expect("shard")).expect("small");
                (shard, s["owner"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    }

    fn index_of(&self, node_id: &str) -> usize {
        node_id
            .trim_start_matches('n')
            .parse()
            .expect("node ids are n<i>")
    }
}

fn shard_of(event_id: &str) -> u32 {
    EventId::from_str(event_id).expect("event id").shard(SHARDS)
}

/// Events until every shard holds at least one.
async fn events_on_every_shard(
    client: &Client,
    organizer: &str,
    capacity: u32,
) -> BTreeMap<u32, String> {
    let mut by_shard = BTreeMap::new();
    for _ in 0..200 {
        if by_shard.len() == SHARDS as usize {
            break;
        }
        let id = client
            .create_event(organizer, &[TicketType::new("GA", capacity, None)])
            .await;
        by_shard.entry(shard_of(&id)).or_insert(id);
    }
    assert_eq!(by_shard.len(), SHARDS as usize, "events on every shard");
    by_shard
}

fn seats(reply: &Reply) -> u64 {
    reply.body["items"].as_array().map_or(0, |items| {
        items.iter().filter_map(|i| i["quantity"].as_u64()).sum()
    })
}

/// Retryable refusals are the only failures a client may see during moves and failover.
fn assert_retryable_or_ok(reply: &Reply) {
    match reply.status {
        201 | 409 => {}
        503 => assert!(
            matches!(reply.slug(), Some("unavailable" | "overloaded"))
                && reply.header("retry-after").is_some(),
            "a 503 must be retryable: {reply}"
        ),
        _ => panic!("unexpected answer during a move: {reply}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_serve_every_shard_from_every_node() {
    let cluster = TestCluster::start(3, 3, &[]).await;
    // The first node claimed everything; rebalance spreads the shards.
    let plan = cluster.shards_cli(1, &["rebalance", "--dry-run"]).await;
    assert!(plan.contains("dry run: nothing moved"), "{plan}");
    assert_eq!(
        cluster
            .owners(1)
            .await
            .values()
            .filter(|o| *o == "n0")
            .count(),
        SHARDS as usize,
        "a dry run moves nothing"
    );
    cluster.shards_cli(2, &["rebalance"]).await;
    let owners = cluster.owners(0).await;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for owner in owners.values() {
        *per_node.entry(owner.as_str()).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "every node owns shards: {owners:?}");
    assert!(
        per_node.values().all(|&n| (2..=3).contains(&n)),
        "balanced: {per_node:?}"
    );

    let organizer = cluster.nodes[0].organizer_token().await;
    let events = events_on_every_shard(cluster.client(0), &organizer, 100).await;
    let buyer = cluster.client(1).customer_token().await;
    for (shard, event) in &events {
        for i in 0..3 {
            let reply = cluster.client(i).hold(&buyer, event, &[("GA", 1)]).await;
            reply.assert_status(201);
            let id = reply.body["id"].as_str().expect("hold id").to_owned();
            // Read back through another node.
            let read = cluster.client((i + 1) % 3).get_hold(&buyer, &id).await;
            read.assert_status(200);
            assert_eq!(read.body["status"], "active", "shard {shard}");
        }
        let stock = cluster.client(2).stock(event, "GA").await;
        assert_eq!((stock.held, stock.available), (3, 97), "shard {shard}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_moved_during_a_flash_sale_loses_nothing() {
    let cluster = TestCluster::start(3, 3, &[]).await;
    let organizer = cluster.nodes[0].organizer_token().await;
    let capacity = 400;
    let event = cluster
        .client(0)
        .create_event(&organizer, &[TicketType::new("GA", capacity, None)])
        .await;
    let shard = shard_of(&event);
    let buyers = cluster.client(0).customer_tokens(8, 8).await;

    let deadline = Instant::now() + Duration::from_secs(4);
    let mut load = JoinSet::new();
    for (t, token) in buyers.into_iter().enumerate() {
        let clients: Vec<Client> = (0..3).map(|i| cluster.client(i).clone()).collect();
        let event = event.clone();
        load.spawn(async move {
            let mut acked = Vec::new();
            let mut k = t;
            while Instant::now() < deadline {
                let reply = clients[k % 3].hold(&token, &event, &[("GA", 1)]).await;
                assert_retryable_or_ok(&reply);
                if reply.status == 201 {
                    acked.push((
                        token.clone(),
                        reply.body["id"].as_str().expect("id").to_owned(),
                        seats(&reply),
                    ));
                }
                k += 1;
            }
            acked
        });
    }
    // Two moves while the sale runs: owner → another node → a third.
    let mut pauses = Vec::new();
    for step in 0..2 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let owner = cluster.owners(0).await[&shard].clone();
        let to = format!("n{}", (cluster.index_of(&owner) + 1 + step) % 3);
        let out = cluster
            .shards_cli(step + 1, &["move", &shard.to_string(), &to])
            .await;
        let pause: u64 = out
            .split("paused ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .expect("pause in output");
        pauses.push(pause);
        assert_eq!(cluster.owners(2).await[&shard], to, "moved");
    }
    let mut acked = Vec::new();
    while let Some(done) = load.join_next().await {
        acked.extend(done.expect("load task"));
    }
    eprintln!(
        "flash sale with 2 moves: {} holds acknowledged, handoff pauses {pauses:?} ms",
        acked.len()
    );
    assert!(!acked.is_empty());
    let acked_seats: u64 = acked.iter().map(|(_, _, s)| s).sum();
    let stock = cluster.client(1).stock(&event, "GA").await;
    assert_eq!(
        stock.available + stock.held + stock.sold,
        u64::from(capacity),
        "stock conserved: {stock:?}"
    );
    assert!(
        stock.held >= acked_seats,
        "every acknowledged seat is held: {stock:?} < {acked_seats}"
    );
    let ids: BTreeSet<&str> = acked.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), acked.len(), "no hold acknowledged twice");
    for (token, id, _) in &acked {
        let read = cluster.client(0).get_hold(token, id).await;
        assert_eq!(
            (read.status, read.body["status"].as_str()),
            (200, Some("active")),
            "hold {id}: {read}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_loses_its_shards_and_no_acknowledged_hold() {
    let lease = 2;
    let mut cluster = TestCluster::start(3, lease, &[]).await;
    cluster.shards_cli(0, &["rebalance"]).await;
    let organizer = cluster.nodes[0].organizer_token().await;
    let events = events_on_every_shard(cluster.client(0), &organizer, 1000).await;
    let buyer = cluster.client(0).customer_token().await;
    let owners = cluster.owners(0).await;
    let victim = "n2";
    let victim_shards: Vec<u32> = owners
        .iter()
        .filter(|(_, o)| *o == victim)
        .map(|(s, _)| *s)
        .collect();
    assert!(!victim_shards.is_empty());

    // Holds on every shard through n0, acknowledged before the kill.
    let mut acked = Vec::new();
    for event in events.values() {
        for _ in 0..3 {
            let reply = cluster.client(0).hold(&buyer, event, &[("GA", 2)]).await;
            reply.assert_status(201);
            acked.push((
                event.clone(),
                reply.body["id"].as_str().expect("id").to_owned(),
            ));
        }
    }
    cluster.nodes[2].kill9().await;
    let killed_at = Instant::now();
    // Requests for the dead node's shards answer 503 (retryable) until the others claim them.
    let probe = events[&victim_shards[0]].clone();
    let recovered = poll_until(Duration::from_secs(30), Duration::from_millis(100), || {
        let client = cluster.client(1).clone();
        let (buyer, probe) = (buyer.clone(), probe.clone());
        async move {
            let reply = client.hold(&buyer, &probe, &[("GA", 1)]).await;
            assert_retryable_or_ok(&reply);
            (reply.status == 201).then_some(reply)
        }
    })
    .await;
    assert!(
        recovered.is_some(),
        "shards of the killed node never came back"
    );
    eprintln!(
        "failover after kill -9 with a {lease} s lease: {:?}",
        killed_at.elapsed()
    );
    // Every shard of the dead node is claimed within a few claim rounds (a third of the lease each).
    let mut owners = cluster.owners(0).await;
    let deadline = Instant::now() + Duration::from_secs(u64::from(lease) * 3);
    while owners.values().any(|o| o == victim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        owners = cluster.owners(0).await;
    }
    assert!(
        owners.values().all(|o| o == "n0" || o == "n1"),
        "the dead node still owns shards {:?} after {:?}: {owners:?}",
        owners
            .iter()
            .filter(|(_, o)| *o == victim)
            .map(|(s, _)| s)
            .collect::<Vec<_>>(),
        killed_at.elapsed()
    );
    for (event, id) in &acked {
        let read = cluster.client(1).get_hold(&buyer, id).await;
        assert_eq!(
            (read.status, read.body["status"].as_str()),
            (200, Some("active")),
            "event {event} hold {id}: {read}"
        );
    }
    for event in events.values() {
        let stock = cluster.client(0).stock(event, "GA").await;
        assert_eq!(stock.available + stock.held + stock.sold, 1000, "{stock:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_owner_is_fenced_and_steps_down() {
    let lease = 2;
    // Holds of 1 s, so the paused owner's actor has expiries to write the moment it wakes.
    let cluster = TestCluster::start(2, lease, &[("HOLDFAST_HOLD_TTL", "1")]).await;
    let organizer = cluster.nodes[0].organizer_token().await;
    let capacity = 50;
    let event = cluster
        .client(0)
        .create_event(&organizer, &[TicketType::new("GA", capacity, None)])
        .await;
    let shard = shard_of(&event);
    assert_eq!(
        cluster.owners(0).await[&shard],
        "n0",
        "the first node owns every shard"
    );
    let buyer = cluster.client(0).customer_token().await;
    for _ in 0..5 {
        cluster
            .client(0)
            .hold(&buyer, &event, &[("GA", 2)])
            .await
            .assert_status(201);
    }

    cluster.nodes[0].signal("STOP");
    // n1 takes the shard once n0's lease runs out; holds through n1 work again.
    let taken = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let client = cluster.client(1).clone();
        let (buyer, event) = (buyer.clone(), event.clone());
        async move {
            let reply = client.hold(&buyer, &event, &[("GA", 1)]).await;
            assert_retryable_or_ok(&reply);
            (reply.status == 201).then_some(())
        }
    })
    .await;
    assert!(
        taken.is_some(),
        "n1 never took over the paused node's shard"
    );
    cluster.shards_cli(1, &["list"]).await;

    cluster.nodes[0].signal("CONT");
    // The woken node must not serve from its stale state: through it, holds are forwarded to n1.
    let mut acked = Vec::new();
    for _ in 0..10 {
        let reply = cluster.client(0).hold(&buyer, &event, &[("GA", 1)]).await;
        assert_retryable_or_ok(&reply);
        if reply.status == 201 {
            acked.push(reply.body["id"].as_str().expect("id").to_owned());
        }
    }
    assert!(
        !acked.is_empty(),
        "the woken node forwards to the new owner"
    );
    let stepped_down = poll_until(Duration::from_secs(10), Duration::from_millis(200), || {
        let log = cluster.nodes[0].log();
        async move { (log.contains("stepping down") || log.contains("fenced")).then_some(()) }
    })
    .await;
    assert!(
        stepped_down.is_some(),
        "the paused node never noticed it lost the shard:\n{}",
        cluster.nodes[0].log()
    );
    let stock = cluster.client(1).stock(&event, "GA").await;
    assert_eq!(
        stock.available + stock.held + stock.sold,
        u64::from(capacity),
        "no seat counted twice: {stock:?}"
    );
    for id in &acked {
        let read = cluster.client(1).get_hold(&buyer, id).await;
        assert_eq!(read.status, 200, "{read}");
    }
}

/// A purchase whose every step lands on another node: hold through node 1, order through node
/// 2, VNPAY's IPN to node 2, tickets read from node 0, check-in at node 1. Every node runs every
/// service on the shared database, so each event reaches three consumers of its group: the
/// sale still happens once (one payment, one ticket per seat, one message per event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_across_the_nodes_happens_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the VNPAY stand-in");
    let sim = format!("http://{}", listener.local_addr().expect("address"));
    let pay_url = format!("{sim}/paymentv2/vpcpay.html");
    let cluster = TestCluster::start(3, 3, &[("HOLDFAST_VNPAY_PAY_URL", &pay_url)]).await;
    serve_vnpay(
        listener,
        format!("{}/v1/payments/vnpay/ipn", cluster.client(2).base_url()),
    );
    let organizer = cluster.nodes[0].organizer_token().await;
    let event = cluster
        .client(0)
        .create_event(&organizer, &[TicketType::new("GA", 10, Some(4))])
        .await;
    let staff = cluster.client(0).staff_token(&organizer).await;
    let buyer = cluster.client(1).customer_token().await;
    let hold = cluster.client(1).hold(&buyer, &event, &[("GA", 2)]).await;
    hold.assert_status(201);
    let order = cluster
        .client(2)
        .post(
            "/v1/orders",
            Some(&buyer),
            &json!({"hold_id": hold.body["id"]}),
        )
        .await;
    order.assert_status(201);
    let id = order.body["id"].as_str().expect("order id").to_owned();
    let path = format!("/v1/orders/{id}");
    let url = poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let reply = cluster.client(0).get(&path, Some(&buyer)).await;
            reply.body["payment_url"].as_str().map(str::to_owned)
        },
    )
    .await
    .expect("a payment URL");
    press(&sim, &url, true).await;
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let reply = cluster.client(1).get(&path, Some(&buyer)).await;
            (reply.body["status"] == "confirmed").then_some(())
        },
    )
    .await
    .expect("the order is confirmed");
    let tickets_path = format!("/v1/orders/{id}/tickets");
    let tickets = poll_until(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let reply = cluster.client(0).get(&tickets_path, Some(&buyer)).await;
            reply.body.as_array().filter(|l| l.len() >= 2).cloned()
        },
    )
    .await
    .expect("tickets");
    assert_eq!(tickets.len(), 2);
    cluster
        .client(1)
        .post(
            "/v1/checkin",
            Some(&staff),
            &json!({"code": tickets[0]["code"], "event_id": event}),
        )
        .await
        .assert_status(200);
    cluster
        .client(2)
        .post(
            "/v1/checkin",
            Some(&staff),
            &json!({"code": tickets[0]["code"], "event_id": event}),
        )
        .await
        .assert_problem(409, "already-admitted");
    let stock = cluster
        .client(2)
        .get(&format!("/v1/events/{event}/availability"), None)
        .await;
    assert_eq!(stock.body["ticket_types"][0]["sold"], 2);
    // Give every node's consumers time to see every record, then count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let db = cluster.nodes[0].sandbox().database().url().to_owned();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::any::install_default_drivers();
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db)
                .await
                .expect("connect");
            let row = sqlx::query(sql).fetch_one(&mut conn).await.expect(sql);
            sqlx::Row::try_get::<i64, _>(&row, 0).expect("a count")
        }
    };
    assert_eq!(count("SELECT COUNT(*) FROM orders").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM payments").await, 1);
    assert_eq!(count("SELECT COUNT(*) FROM tickets").await, 2);
    assert_eq!(
        count("SELECT COUNT(*) FROM notifications").await,
        2,
        "the payment link and the tickets, once each"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox").await,
        count("SELECT COUNT(*) FROM bus_records").await,
        "every outbox record published once, whichever node's relay had the turn"
    );
}

/// Over Kafka each node's orders consumer gets its share of the partitions (or all of them),
/// so the `PaymentRequested` of an order placed on one node is often recorded by another's. The
/// answer to `POST /v1/orders` still carries the payment URL, on every node, well before
/// `payment_url_wait` ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_answers_with_its_payment_url_on_every_node_over_kafka() {
    let brokers = std::env::var("HOLDFAST_TEST_KAFKA_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let prefix = format!("t{}-", uuid::Uuid::new_v4().simple());
    let cluster = TestCluster::start(
        3,
        3,
        &[
            ("HOLDFAST_KAFKA_BROKERS", &brokers),
            ("HOLDFAST_BUS_PREFIX", &prefix),
            ("HOLDFAST_KAFKA_PRODUCER_CONFIG", "batch.num.messages=1"),
            // Long enough that a stale answer cannot be mistaken for a slow one, and within the
            // request timeout (10 s).
            ("HOLDFAST_PAYMENT_URL_WAIT_MS", "8000"),
        ],
    )
    .await;
    let organizer = cluster.nodes[0].organizer_token().await;
    let event = cluster
        .client(0)
        .create_event(&organizer, &[TicketType::new("GA", 100, None)])
        .await;
    // Every node's consumers have joined their groups before the orders count.
    let warm_up = cluster.client(0).customer_token().await;
    let hold = cluster.client(0).hold(&warm_up, &event, &[("GA", 1)]).await;
    let order = cluster
        .client(0)
        .post(
            "/v1/orders",
            Some(&warm_up),
            &json!({"hold_id": hold.body["id"]}),
        )
        .await;
    order.assert_status(201);
    let mut slowest = Duration::ZERO;
    for i in 0..12 {
        let node = i % 3;
        let buyer = cluster.client(node).customer_token().await;
        let hold = cluster
            .client(node)
            .hold(&buyer, &event, &[("GA", 1)])
            .await;
        hold.assert_status(201);
        let started = Instant::now();
        let order = cluster
            .client(node)
            .post(
                "/v1/orders",
                Some(&buyer),
                &json!({"hold_id": hold.body["id"]}),
            )
            .await;
        let took = started.elapsed();
        order.assert_status(201);
        assert!(
            order.body["payment_url"].is_string(),
            "order {i} on node {node} answered without its payment URL after {took:?}: {}",
            order.body
        );
        slowest = slowest.max(took);
    }
    assert!(
        slowest < Duration::from_secs(5),
        "an order waited {slowest:?} for a URL that was there"
    );
}

/// A CA and a node certificate for 127.0.0.1 signed by it, made with the openssl command line
/// as an operator would: `(ca.pem, node.pem, node.key)`.
fn internal_certificates(dir: &std::path::Path) -> (String, String, String) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl (Debian's openssl package)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=holdfast test CA",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        "/CN=holdfast node",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("node.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write node.ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "node.ext",
    ]);
    let path = |name: &str| dir.join(name).display().to_string();
    (path("ca.pem"), path("node.pem"), path("node.key"))
}

/// With certificates configured the node-to-node API is TLS: requests forwarded between the
/// nodes work, and a node that speaks plain h2c to it gets no answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_api_speaks_tls_when_configured() {
    let certs = tempfile::tempdir().expect("a directory for the certificates");
    let (ca, cert, key) = internal_certificates(certs.path());
    let cluster = TestCluster::start(
        2,
        3,
        &[
            ("HOLDFAST_INTERNAL_TLS_CERT", &cert),
            ("HOLDFAST_INTERNAL_TLS_KEY", &key),
            ("HOLDFAST_INTERNAL_TLS_CA", &ca),
        ],
    )
    .await;
    cluster.shards_cli(1, &["rebalance"]).await;
    let organizer = cluster.nodes[0].organizer_token().await;
    let events = events_on_every_shard(cluster.client(0), &organizer, 10).await;
    let owners = cluster.owners(0).await;
    let buyer = cluster.client(1).customer_token().await;
    let mut forwarded = 0;
    for (shard, event) in &events {
        for via in 0..2 {
            if owners[shard] != format!("n{via}") {
                forwarded += 1;
            }
            cluster
                .client(via)
                .hold(&buyer, event, &[("GA", 1)])
                .await
                .assert_status(201);
        }
    }
    assert!(
        forwarded >= SHARDS as usize,
        "every shard was reached through the other node"
    );

    let internal = cluster.nodes[0]
        .env()
        .iter()
        .find(|(k, _)| k == "HOLDFAST_INTERNAL_ADDR")
        .map(|(_, v)| v.clone())
        .expect("the node's internal address");
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");
    let plain = h2c
        .post(format!("http://{internal}/internal/v1/refresh"))
        .send()
        .await;
    assert!(plain.is_err(), "plain h2c was answered: {plain:?}");
}

/// Logout on one node revokes every access token of that login on the others within about a
/// second (the deny list is pulled every second), and so does a refresh token used twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_login_is_refused_by_every_node() {
    let cluster = TestCluster::start(2, 3, &[]).await;
    let (api0, api1) = (cluster.client(0), cluster.client(1));
    let email = holdfast_tests::unique_email("revoke");
    api0.register(&email, holdfast_tests::PASSWORD, "R")
        .await
        .assert_status(201);
    for how in ["logout", "refresh reuse"] {
        let (first, other, used_refresh) = api0.two_tokens_of_one_login(&email).await;
        api1.get("/v1/orders", Some(&other))
            .await
            .assert_status(200);
        let revoked_at = Instant::now();
        if how == "logout" {
            api0.post("/v1/auth/logout", Some(&first), &json!({}))
                .await
                .assert_status(204);
        } else {
            api0.post(
                "/v1/auth/refresh",
                None,
                &json!({"refresh_token": used_refresh}),
            )
            .await
            .assert_problem(401, "refresh-token-reused");
        }
        let refused = poll_until(
            Duration::from_secs(5),
            Duration::from_millis(50),
            || async {
                let reply = api1.get("/v1/orders", Some(&other)).await;
                (reply.status == 401).then_some(reply)
            },
        )
        .await
        .unwrap_or_else(|| panic!("{how}: node 1 still accepts the login's token after 5 s"));
        refused.assert_problem(401, "token-revoked");
        let took = revoked_at.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{how}: refused on node 1 after {took:?}"
        );
    }
}

/// Edits that reach an event's stock (capacity, sale window, cancel) work from any node: they
/// cross the node API to the shard's owner like holds do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_edits_reach_the_owner_from_every_node() {
    let cluster = TestCluster::start(3, 3, &[]).await;
    cluster.shards_cli(0, &["rebalance"]).await;
    let organizer = cluster.nodes[0].organizer_token().await;
    let events = events_on_every_shard(cluster.client(0), &organizer, 10).await;
    let buyer = cluster.client(1).customer_token().await;
    for (i, event) in events.values().enumerate() {
        let (via, read) = (cluster.client(i % 3), cluster.client((i + 1) % 3));
        let send = |path: String, method: reqwest::Method, body: Value| {
            let organizer = organizer.clone();
            async move {
                via.send(
                    method,
                    &path,
                    Some(&organizer),
                    Some(holdfast_tests::Body::Json(&body)),
                    &[],
                )
                .await
            }
        };
        read.hold(&buyer, event, &[("GA", 2)])
            .await
            .assert_status(201);
        let path = format!("/v1/events/{event}");
        send(
            format!("{path}/ticket-types/GA"),
            reqwest::Method::PATCH,
            json!({"capacity": 1}),
        )
        .await
        .assert_problem(409, "capacity-below-sold");
        send(
            format!("{path}/ticket-types/GA"),
            reqwest::Method::PATCH,
            json!({"capacity": 20}),
        )
        .await
        .assert_status(200);
        assert_eq!(read.stock(event, "GA").await.available, 18);
        let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        let later = later
            .format(&time::format_description::well_known::Rfc3339)
            .expect("time");
        send(
            path.clone(),
            reqwest::Method::PATCH,
            json!({"sale_starts_at": later}),
        )
        .await
        .assert_status(200);
        read.hold(&buyer, event, &[("GA", 1)])
            .await
            .assert_problem(409, "sale-not-open");
        send(
            format!("{path}/cancel"),
            reqwest::Method::POST,
            json!({"reason": "test"}),
        )
        .await
        .assert_status(202);
        let stock = read.stock(event, "GA").await;
        assert_eq!((stock.held, stock.available), (0, 20), "{event}");
    }
}
