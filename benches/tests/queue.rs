//! A short smoke of `holdfast-bench queue` against a real server (the debug `holdfast` binary
//! next to the test, or `HOLDFAST_BIN`): every buyer joins before the opening, the pre-queue
//! is drawn, admissions stay within `active_max`, the seats sell out exactly, the audit passes.

use std::time::Duration;

use holdfast_bench::compare::Launch;
use holdfast_bench::queue::{self, Options};
use holdfast_tests::holdfast_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_on_sale_sells_out_through_the_waiting_room() {
    let options = Options {
        users: 120,
        capacity: 30,
        admit_per_minute: 3_000,
        active_max: 10,
        admission_ttl_secs: 60,
        poll_window: Duration::from_secs(1),
        poll_interval: Duration::from_millis(200),
        connections: 8,
        sale_duration: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
        launch: Launch {
            holdfast_bin: Some(holdfast_bin()),
            database_url: String::new(),
            redis_url: String::new(),
        },
        progress: false,
    };
    let r = queue::run(&options).await.expect("the run");
    let text = queue::text(&r);
    assert!(r.audit_ok, "{text}");
    assert_eq!(r.joins, 120, "{text}");
    assert_eq!(
        r.pre_queue, 120,
        "every buyer's place is drawn at the opening: {text}"
    );
    assert_eq!((r.sold, r.purchases), (30, 30), "{text}");
    assert!(r.most_admitted_at_once <= 10, "{text}");
    assert!(
        r.polls_before_opening > 0 && r.poll_cpu_us.is_some(),
        "{text}"
    );
    assert!(r.spearman_rho.is_some_and(|rho| rho.abs() < 0.5), "{text}");
    assert_eq!(r.errors, 0, "{text}");
}
