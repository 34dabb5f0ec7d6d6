//! `holdfast backup` and `holdfast restore` on a real node's database: made through the API
//! while the node serves, restored onto a fresh database, and a node started on that one
//! serves the same stock and the same orders. The refusals (an existing file, a database in
//! use or holding data, a file that is no backup) are clear errors.
//!
//! Needs the binary: `cargo build --bin holdfast` (or `HOLDFAST_BIN=/path/to/holdfast`).
//! The full-size drill (a million journal records) is `deploy/backup-drill.sh`.

use std::time::Duration;

use holdfast_tests::{Backend, Sandbox, ServerProcess, poll_until, run_cli};
use serde_json::{Value, json};

holdfast_tests::on_both_backends!(a_restored_backup_serves_the_same_stock_and_orders);

const BUYERS: usize = 12;
/// Holds each buyer places and releases before the one it keeps: with the orders, a few
/// hundred journal records.
const RELEASED: usize = 10;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `env` with the database and data directory of `sandbox` instead.
fn env_of(env: &[(String, String)], sandbox: &Sandbox) -> Vec<(String, String)> {
    let mut env: Vec<_> = env
        .iter()
        .filter(|(k, _)| k != "HOLDFAST_DATABASE_URL" && k != "HOLDFAST_DATA_DIR")
        .cloned()
        .collect();
    env.push((
        "HOLDFAST_DATABASE_URL".to_owned(),
        sandbox.database().url().to_owned(),
    ));
    env.push((
        "HOLDFAST_DATA_DIR".to_owned(),
        sandbox.data_dir().display().to_string(),
    ));
    env
}

/// What a buyer reads of an order, the fields that do not depend on the time of reading.
fn order_facts(order: &Value) -> Value {
    json!({
        "id": order["id"],
        "status": order["status"],
        "total": order["total"],
        "items": order["items"],
        "hold_id": order["hold_id"],
        "payment_url": order["payment_url"],
    })
}

async fn a_restored_backup_serves_the_same_stock_and_orders(backend: Backend) {
    let server = ServerProcess::start(backend, &[]).await;
    let api = server.client().clone();
    let organizer = server.organizer_token().await;
    let event = api.create_ga_event(&organizer, 200, Some(4)).await;
    let buyers = api.customer_tokens(BUYERS, 6).await;
    let mut orders = Vec::new();
    for (i, token) in buyers.iter().enumerate() {
        for _ in 0..RELEASED {
            let hold = api.hold(token, &event, &[("GA", 1)]).await;
            hold.assert_status(201);
            let id = hold.body["id"].as_str().expect("hold id");
            api.release_hold(token, id).await.assert_status(204);
        }
        let hold = api.hold(token, &event, &[("GA", 1 + (i as i64 % 3))]).await;
        hold.assert_status(201);
        // Two of three buyers order what they hold; the others keep an active hold.
        if i % 3 != 2 {
            let id = hold.body["id"].as_str().expect("hold id");
            let order = api
                .post_with_key(
                    "/v1/orders",
                    Some(token),
                    &json!({"hold_id": id}),
                    &uuid::Uuid::new_v4().to_string(),
                )
                .await;
            order.assert_status(201);
            orders.push((
                token.clone(),
                order.body["id"].as_str().expect("order id").to_owned(),
            ));
        }
    }
    // The saga gives each order its payment URL soon after: wait for it, so that nothing
    // changes between the backup and the reading of what it should hold.
    let mut before = Vec::new();
    for (token, id) in &orders {
        let path = format!("/v1/orders/{id}");
        let order = poll_until(
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async {
                let reply = api.get(&path, Some(token)).await;
                reply.body["payment_url"].is_string().then_some(reply.body)
            },
        )
        .await
        .unwrap_or_else(|| panic!("order {id} never got its payment URL"));
        before.push(order_facts(&order));
    }
    let stock = api.availability(&event).await;
    assert!(stock["GA"].held > 0, "some seats are held: {stock:?}");

    // Online: the node keeps serving.
    let file = server.sandbox().dir().join("holdfast.backup");
    let file_arg = file.display().to_string();
    let out = server.cli(&["backup", &file_arg], "").await;
    assert!(
        out.status.success(),
        "holdfast backup failed: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("backed up"), "{}", stderr(&out));
    let again = server.cli(&["backup", &file_arg], "").await;
    assert!(
        !again.status.success(),
        "an existing backup was overwritten"
    );
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    api.hold(&buyers[0], &event, &[("GA", 1)])
        .await
        .assert_status(201);

    // The serving node's own database is in use: refused, --force or not.
    let in_use = server.cli(&["restore", &file_arg, "--force"], "").await;
    assert!(!in_use.status.success(), "restored under a running node");
    assert!(
        stderr(&in_use).contains("a running node?"),
        "{}",
        stderr(&in_use)
    );
    // A file that is no backup.
    let junk = server.sandbox().dir().join("junk.txt");
    std::fs::write(&junk, "not a database").expect("write");
    let refused = server
        .cli(&["restore", &junk.display().to_string()], "")
        .await;
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("not a `holdfast backup`"),
        "{}",
        stderr(&refused)
    );

    // Onto a fresh database.
    let fresh = Sandbox::new(backend).await;
    std::fs::create_dir_all(fresh.working_dir()).expect("working directory");
    let env = env_of(server.env(), &fresh);
    let out = run_cli(&env, &fresh.working_dir(), &["restore", &file_arg], "").await;
    assert!(
        out.status.success(),
        "holdfast restore failed: {}",
        stderr(&out)
    );
    let said = stderr(&out);
    assert!(said.contains("check passed"), "{said}");
    assert!(
        said.contains(&format!("orders: {}", orders.len())),
        "the check counts the orders: {said}"
    );
    let twice = run_cli(&env, &fresh.working_dir(), &["restore", &file_arg], "").await;
    assert!(!twice.status.success(), "a database with data was replaced");
    assert!(stderr(&twice).contains("--force"), "{}", stderr(&twice));
    drop(server);

    let restored = ServerProcess::start_on(fresh, &[], &[]).await;
    let api = restored.client();
    assert_eq!(api.availability(&event).await, stock, "the same stock");
    for ((token, id), expected) in orders.iter().zip(&before) {
        let order = api.get(&format!("/v1/orders/{id}"), Some(token)).await;
        order.assert_status(200);
        assert_eq!(&order_facts(&order.body), expected, "order {id}");
    }
    // And it goes on selling from there.
    api.hold(&buyers[1], &event, &[("GA", 1)])
        .await
        .assert_status(201);
}
