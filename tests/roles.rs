//! `holdfast serve --roles`: each role starts exactly what it names, in real processes. Without
//! `gateway` no public listener; without `inventory` no event actors and, in a cluster, no
//! shards (the node forwards to the owners); without a service its routes answer 503
//! `service-unavailable`; `scheduler` runs the scheduled jobs and nothing else.

use std::time::Duration;

use holdfast_tests::{Backend, Client, ServerProcess, TicketType, free_port, poll_until};
use sqlx::{AnyConnection, Connection as _, Row as _};

const WAIT: Duration = Duration::from_secs(30);

async fn count(url: &str, sql: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url).await.expect("connect");
    let row = sqlx::query(sql).fetch_one(&mut conn).await.expect(sql);
    row.try_get::<i64, _>(0).expect("a count")
}

/// True when nothing listens where `client` points.
async fn refused(client: &Client) -> bool {
    let addr = client.base_url().trim_start_matches("http://").to_owned();
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// A gateway alone serves the API from the database (accounts, the catalog) and answers 503
/// `service-unavailable` for the inventory and the saga's services it does not run; it runs no
/// scheduled job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_alone_serves_the_api_and_nothing_else() {
    let server = ServerProcess::start(Backend::Sqlite, &[("HOLDFAST_ROLES", "gateway")]).await;
    let organizer = server.organizer_token().await;
    let event = server
        .client()
        .create_event(&organizer, &[TicketType::new("GA", 5, None)])
        .await;
    server
        .client()
        .get(&format!("/v1/events/{event}"), None)
        .await
        .assert_status(200);
    let buyer = server.client().customer_token().await;
    let hold = server.client().hold(&buyer, &event, &[("GA", 1)]).await;
    hold.assert_problem(503, "service-unavailable");
    server
        .client()
        .get("/v1/orders", Some(&buyer))
        .await
        .assert_problem(503, "service-unavailable");
    let url = server.sandbox().database().url().to_owned();
    assert_eq!(count(&url, "SELECT COUNT(*) FROM job_runs").await, 0);
    assert_eq!(count(&url, "SELECT COUNT(*) FROM journal").await, 0);
    assert!(server.log().contains("holdfast node serving"));
}

/// Without `gateway` nothing listens on the API's address; the ops listener answers; the
/// scheduler role runs its jobs (the hour's retention is claimed in `job_runs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_gateway_only_the_ops_listener_answers() {
    let server = ServerProcess::start(
        Backend::Sqlite,
        &[("HOLDFAST_ROLES", "inventory,scheduler")],
    )
    .await;
    assert!(refused(server.client()).await, "no public listener");
    server
        .ops_client()
        .get("/healthz", None)
        .await
        .assert_status(200);
    let url = server.sandbox().database().url().to_owned();
    poll_until(WAIT, Duration::from_millis(100), || async {
        (count(
            &url,
            "SELECT COUNT(*) FROM job_runs WHERE job = 'retention'",
        )
        .await
            == 1)
            .then_some(())
    })
    .await
    .expect("the scheduler claims the hour's retention");
    let only = ServerProcess::start(Backend::Sqlite, &[("HOLDFAST_ROLES", "inventory")]).await;
    assert!(refused(only.client()).await);
    let url = only.sandbox().database().url().to_owned();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        count(&url, "SELECT COUNT(*) FROM job_runs").await,
        0,
        "no scheduler"
    );
}

/// In a cluster a gateway without `inventory` claims no shard, is no member, serves no node API
/// and forwards every inventory operation to the owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clustered_gateway_without_inventory_forwards_to_the_owners() {
    let shards = "8";
    let internal0 = format!("127.0.0.1:{}", free_port());
    let owner = ServerProcess::start(
        Backend::Postgres,
        &[
            ("HOLDFAST_NODE_ID", "n0"),
            ("HOLDFAST_INTERNAL_ADDR", &internal0),
            ("HOLDFAST_SHARDS", shards),
            ("HOLDFAST_LEASE_SECS", "3"),
        ],
    )
    .await;
    let url = owner.sandbox().database().url().to_owned();
    let internal1 = format!("127.0.0.1:{}", free_port());
    let gateway = ServerProcess::start(
        Backend::Sqlite,
        &[
            ("HOLDFAST_DATABASE_URL", &url),
            ("HOLDFAST_NODE_ID", "g1"),
            ("HOLDFAST_INTERNAL_ADDR", &internal1),
            ("HOLDFAST_SHARDS", shards),
            ("HOLDFAST_LEASE_SECS", "3"),
            ("HOLDFAST_ROLES", "gateway"),
        ],
    )
    .await;
    let node_api = Client::new(format!("http://{internal1}"));
    assert!(refused(&node_api).await, "no node API without inventory");
    let organizer = gateway.organizer_token().await;
    let event = gateway
        .client()
        .create_event(&organizer, &[TicketType::new("GA", 5, None)])
        .await;
    let buyer = gateway.client().customer_token().await;
    gateway
        .client()
        .hold(&buyer, &event, &[("GA", 2)])
        .await
        .assert_status(201);
    let stock = owner.client().stock(&event, "GA").await;
    assert_eq!((stock.held, stock.available), (2, 3));
    // Two lease periods later the gateway still owns nothing and is no member.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(*) FROM cluster_shards WHERE owner = 'g1'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(*) FROM cluster_shards WHERE owner = 'n0'"
        )
        .await,
        8
    );
    assert_eq!(
        count(
            &url,
            "SELECT COUNT(*) FROM cluster_nodes WHERE node_id = 'g1'"
        )
        .await,
        0
    );
}

/// Two `--roles scheduler` processes on one PostgreSQL database at once: each job's due time
/// is claimed once, by one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scheduler_processes_run_each_job_once() {
    let first = ServerProcess::start(
        Backend::Postgres,
        &[
            ("HOLDFAST_ROLES", "scheduler"),
            ("HOLDFAST_SCHEDULER_TICK_SECS", "1"),
        ],
    )
    .await;
    let url = first.sandbox().database().url().to_owned();
    let second = ServerProcess::start(
        Backend::Sqlite,
        &[
            ("HOLDFAST_DATABASE_URL", &url),
            ("HOLDFAST_ROLES", "scheduler"),
            ("HOLDFAST_SCHEDULER_TICK_SECS", "1"),
        ],
    )
    .await;
    assert!(refused(first.client()).await && refused(second.client()).await);
    // A few rounds of both.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for job in ["retention", "sales_summary"] {
        // One claim per due time (an hour or a day could turn during the test: two at most).
        let runs = count(
            &url,
            &format!("SELECT COUNT(*) FROM job_runs WHERE job = '{job}'"),
        )
        .await;
        assert!((1..=2).contains(&runs), "{job}: {runs}");
    }
    for log in [first.log(), second.log()] {
        assert!(!log.contains("scheduler round failed"), "{log}");
    }
    assert!(second.log().contains("holdfast node serving"));
}
