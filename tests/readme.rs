//! The README's walk-throughs, run as written: the shell blocks of "A walk through the API" and
//! "Buying: order → pay → tickets → check-in" go to bash against a fresh `holdfast serve` and
//! `holdfast vnpay-sim`, on ports of their own (the README's "other ports" advice: only the
//! `HOLDFAST_*` addresses and `B=` change). The browser's press on **Pay** is the one step that
//! is prose; here it is the same form post.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use holdfast_tests::{free_port, holdfast_bin, poll_until};
use tokio::process::{Child, Command};

/// The ```sh blocks of the README section headed `heading` (up to the next heading).
fn shell_blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("the README has no heading {heading:?}"));
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in readme[start + heading.len()..].lines().skip(1) {
        match (&mut block, line) {
            (None, "```sh") => block = Some(String::new()),
            (None, l) if l.starts_with('#') => break,
            (Some(_), "```") => blocks.extend(block.take()),
            (Some(text), l) => {
                text.push_str(l);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// `holdfast ARGS` in `dir` with the walk-through's settings, its output to `log`.
fn holdfast(dir: &Path, env: &[(String, String)], args: &[&str], log: &str) -> Child {
    let log = std::fs::File::create(dir.join(log)).expect("log file");
    let mut cmd = Command::new(holdfast_bin());
    for (key, _) in std::env::vars() {
        if key.starts_with("HOLDFAST_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .envs(env.iter().cloned())
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start holdfast")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walk_throughs_run_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let walk = shell_blocks(&readme, "## A walk through the API");
    let buying = shell_blocks(&readme, "### Buying: order → pay → tickets → check-in");
    assert_eq!(walk.len(), 1, "one block in the walk-through");
    assert_eq!(buying.len(), 3, "vnpay-sim, the order, tickets to refund");
    let organizing = shell_blocks(
        &readme,
        "### Organizing: edit, open the sale, orders and attendees, cancel",
    );
    assert_eq!(
        organizing.len(),
        1,
        "one block in the organizer's walk-through"
    );
    assert!(
        buying[0].trim()
            == "holdfast vnpay-sim     # http://127.0.0.1:9090, IPN to http://127.0.0.1:8080"
    );

    let dir = tempfile::tempdir().expect("a working directory");
    let (http, ops, sim) = (free_port(), free_port(), free_port());
    let env: Vec<(String, String)> = [
        ("HOLDFAST_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("HOLDFAST_OPS_ADDR", format!("127.0.0.1:{ops}")),
        ("HOLDFAST_VNPAY_SIM_ADDR", format!("127.0.0.1:{sim}")),
        ("HOLDFAST_LOG", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let _server = holdfast(dir.path(), &env, &["serve"], "serve.log");
    let base = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::new();
    poll_until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let ready = client.get(format!("{base}/readyz")).send().await.ok()?;
            ready.status().is_success().then_some(())
        },
    )
    .await
    .expect("holdfast serve became ready");
    let _sim = holdfast(dir.path(), &env, &["vnpay-sim"], "vnpay-sim.log");

    // The blocks run in one shell, as a reader pasting them into one terminal would; `holdfast`
    // is the binary under test, first on the PATH as the quick start puts it.
    let bin_dir = holdfast_bin()
        .parent()
        .expect("the binary's directory")
        .to_owned();
    let pay = format!(
        "URL=$(curl -s $B/v1/orders/$ORDER -H \"authorization: Bearer $TOKEN\" | jq -r .payment_url)\n\
         curl -s -o /dev/null -X POST http://127.0.0.1:{sim}/paymentv2/pay --data-urlencode \"q=${{URL#*\\?}}\"\n\
         for _ in $(seq 1 100); do\n\
           [ \"$(curl -s $B/v1/orders/$ORDER/tickets -H \"authorization: Bearer $TOKEN\" | jq length 2>/dev/null)\" = 2 ] && break\n\
           sleep 0.1\n\
         done\n"
    );
    let script = format!(
        "set -euo pipefail\n{}\n{}\n# (Pay pressed in the browser)\n{pay}\n{}\n{}",
        walk[0].replace("B=http://127.0.0.1:8080", &format!("B={base}")),
        buying[1],
        buying[2],
        organizing[0]
    );
    std::fs::write(dir.path().join("walk.sh"), &script).expect("write the script");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("walk.sh")
        .current_dir(dir.path())
        .envs(env.iter().cloned())
        .env("PATH", path)
        .output()
        .await
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the walk-through failed:\n{stdout}\n{stderr}\n---\n{script}"
    );
    for expected in [
        "\"status\":\"active\"",
        "\"available\":4998",
        "\"status\":\"pending_payment\"",
        "\"status\":\"confirmed\"",
        "\"status\":\"admitted\"",
        "/problems/ticket-admitted",
        "\"status\":\"processing\"",
        "\"status\":\"scheduled\"",
        "/problems/sale-not-open",
        "\"status\":\"on_sale\"",
        "order_id,buyer_id,buyer_email",
        "ticket_id,order_id,holder_id",
        "\"status\":\"cancelled\"",
    ] {
        assert!(
            stdout.contains(expected) || stderr.contains(expected),
            "the walk-through never showed {expected}:\n{stdout}\n{stderr}"
        );
    }
    let png = std::fs::read(dir.path().join("ticket.png")).expect("the QR image was saved");
    assert!(png.starts_with(b"\x89PNG"), "ticket.png is a PNG");
}

/// "Operating a cluster": the three-node recipe as written, on ports of its own (28081-3 for the
/// API, 27071-3 for the node API, 28181-3 for the ops listeners, below the range the OS hands
/// out to other tests) and a database of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_cluster_recipe_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let heading = "## Operating a cluster";
    let start = readme.find(heading).expect("the cluster section");
    let section = &readme[start..];
    let recipe = section
        .split("Three nodes on one machine:")
        .nth(1)
        .and_then(|rest| {
            shell_blocks(&format!("{heading}\n{rest}"), heading)
                .into_iter()
                .next()
        })
        .expect("the three-node recipe");
    let database = format!("holdfast_readme_{}", std::process::id());
    let admin = std::env::var("HOLDFAST_TEST_DATABASE_URL")
        .unwrap_or_else(|_| holdfast_tests::DEFAULT_ADMIN_URL.to_owned());
    let server = admin
        .rsplit_once('/')
        .map_or(admin.as_str(), |(s, _)| s)
        .to_owned();
    let script = recipe
        .replace(
            "createdb -h 127.0.0.1 -U postgres holdfast",
            &format!("createdb -h 127.0.0.1 -U postgres {database}"),
        )
        .replace(
            "postgres://postgres@127.0.0.1/holdfast ",
            &format!("{server}/{database} "),
        )
        .replace("127.0.0.1:808$i", "127.0.0.1:2808$i")
        .replace("127.0.0.1:707$i", "127.0.0.1:2707$i")
        .replace("127.0.0.1:818$i", "127.0.0.1:2818$i")
        .replace("127.0.0.1:808$i/readyz", "127.0.0.1:2808$i/readyz")
        .replace("http://127.0.0.1:8081/", "http://127.0.0.1:28081/")
        .replace("http://127.0.0.1:8181", "http://127.0.0.1:28181");
    assert!(
        !script.contains(":808") && !script.contains(":818"),
        "every port moved:\n{script}"
    );
    let dir = tempfile::tempdir().expect("a working directory");
    let script =
        format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n{script}");
    std::fs::write(dir.path().join("recipe.sh"), &script).expect("write the script");
    let bin_dir = holdfast_bin().parent().expect("bin dir").to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("timeout");
    cmd.args(["120", "bash", "recipe.sh"])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HOLDFAST_LOG", "warn");
    for (key, _) in std::env::vars() {
        if key.starts_with("HOLDFAST_") && key != "HOLDFAST_LOG" {
            cmd.env_remove(key);
        }
    }
    let out = cmd.output().await.expect("run bash");
    let _ = Command::new("psql")
        .args([
            admin.as_str(),
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        ])
        .output()
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the recipe failed:\n{stdout}\n{stderr}\n---\n{script}"
    );
    for expected in ["dry run: nothing moved", "\"nodes\"", "n3"] {
        assert!(
            stdout.contains(expected),
            "the recipe never printed {expected}:\n{stdout}\n{stderr}"
        );
    }
}
