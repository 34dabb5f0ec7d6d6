//! `holdfast-bench queue`: a timed on-sale through the waiting room, against a freshly started
//! Holdfast (embedded SQLite).
//!
//! N buyers join the queue of one event before its sale opens; before the opening the same
//! buyers poll (`queue/me`) for a window of their own, so a poll's server CPU is measured with
//! nothing else going on. At the opening every buyer reads their place once (the pre-queue's
//! order, drawn by the server, is compared with the order of arrival: Spearman's ρ), then keeps
//! polling; whoever is admitted holds a seat with the admission token and orders it (the event
//! is free, so an order confirms at once and ends the admission). It reports joins/s, polls/s,
//! server CPU per join and per poll, the admissions per minute against the setting, the most
//! buyers seen admitted at once against `active_max`, the server's peak RSS, and audits the
//! stock: never more sold than the capacity, sold = the orders confirmed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::Method;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::client::{Conn, Target};
use crate::compare::{self, Launch, TargetKind};
use crate::setup::{self, Buyer};

/// What a queue run does.
#[derive(Clone, Debug)]
pub struct Options {
    pub users: usize,
    pub capacity: u32,
    pub admit_per_minute: u32,
    pub active_max: u32,
    pub admission_ttl_secs: u32,
    /// How long the polling window before the opening lasts.
    pub poll_window: Duration,
    /// A buyer polls at most this often once the sale is open.
    pub poll_interval: Duration,
    pub connections: usize,
    /// The run ends this long after the opening, whatever is left.
    pub sale_duration: Duration,
    pub timeout: Duration,
    pub launch: Launch,
    pub progress: bool,
}

/// What a queue run measured.
#[derive(Clone, Debug, Serialize)]
pub struct QueueResult {
    pub users: usize,
    pub joins: u64,
    pub joins_per_sec: f64,
    pub join_cpu_us: Option<f64>,
    pub polls_before_opening: u64,
    pub polls_per_sec: f64,
    pub poll_cpu_us: Option<f64>,
    /// Buyers whose place was drawn at the opening (joined before it).
    pub pre_queue: usize,
    /// Spearman's ρ between the order of arrival and the place drawn at the opening.
    pub spearman_rho: Option<f64>,
    pub admit_per_minute: u32,
    /// Admissions seen per minute between the first and the last one seen.
    pub admitted_per_minute: Option<f64>,
    pub admitted: u64,
    pub active_max: u32,
    /// The most buyers seen admitted and not yet done at once (seen by their polls, so at
    /// most what the server had).
    pub most_admitted_at_once: usize,
    pub purchases: u64,
    pub capacity: u32,
    pub sold: u64,
    /// Kilobytes: the server's peak resident set (`VmHWM`).
    pub server_peak_rss_kb: Option<u64>,
    pub errors: u64,
    pub audit_ok: bool,
    pub audit: Vec<String>,
}

/// Spearman's ρ of two rankings of the same items (`a[i]`, `b[i]` the ranks of item i, ties
/// not expected): 1 − 6 Σd² / (n(n² − 1)).
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len();
    if n < 2 || n != b.len() {
        return None;
    }
    let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n = n as f64;
    Some(1.0 - 6.0 * d2 / (n * (n * n - 1.0)))
}

/// Ranks 1..=n of `values` (the smallest is 1; ties in order of appearance).
pub fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]).then(i.cmp(&j)));
    let mut ranks = vec![0.0; values.len()];
    for (rank, i) in order.into_iter().enumerate() {
        ranks[i] = rank as f64 + 1.0;
    }
    ranks
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// One buyer's part of the run.
#[derive(Clone, Debug, Default)]
struct Progress {
    arrival: Option<u64>,
    /// The place read at the opening, and how many were admitted then as far as seen.
    place_at_opening: Option<(u64, usize)>,
    admitted_at: Option<Instant>,
    done: bool,
}

struct Shared {
    target: Target,
    event: String,
    opts: Options,
    arrivals: AtomicU64,
    polls: AtomicU64,
    errors: AtomicU64,
    purchases: AtomicU64,
    admitted_now: AtomicUsize,
    most_at_once: AtomicUsize,
    seen_admitted: AtomicUsize,
    progress: Mutex<Vec<Progress>>,
}

const ADMISSION: HeaderName = HeaderName::from_static("holdfast-admission");

async fn json_of(
    conn: &mut Conn,
    method: Method,
    path: &str,
    buyer: &Buyer,
    body: Option<serde_json::Value>,
    extra: Option<(&HeaderName, &HeaderValue)>,
    timeout: Duration,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let body = body.map(|b| Bytes::from(b.to_string()));
    let answer = conn
        .send_with(method, path, Some(&buyer.auth), body, extra, timeout)
        .await?;
    let value = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
    Ok((answer.status.as_u16(), value))
}

async fn join_all(shared: Arc<Shared>, buyers: Arc<Vec<Buyer>>, worker: usize) {
    let mut conn = Conn::new(shared.target.clone());
    let path = format!("/v1/events/{}/queue", shared.event);
    let step = shared.opts.connections;
    for i in (worker..buyers.len()).step_by(step) {
        let reply = json_of(
            &mut conn,
            Method::POST,
            &path,
            &buyers[i],
            None,
            None,
            shared.opts.timeout,
        )
        .await;
        match reply {
            Ok((201 | 200, _)) => {
                let arrival = shared.arrivals.fetch_add(1, Ordering::Relaxed);
                shared.progress.lock().await[i].arrival = Some(arrival);
            }
            _ => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Polls each of this worker's buyers until `until`, answering nothing but the poll.
async fn poll_only(shared: Arc<Shared>, buyers: Arc<Vec<Buyer>>, worker: usize, until: Instant) {
    let mut conn = Conn::new(shared.target.clone());
    let path = format!("/v1/events/{}/queue/me", shared.event);
    let step = shared.opts.connections;
    'rounds: loop {
        for i in (worker..buyers.len()).step_by(step) {
            if Instant::now() >= until {
                break 'rounds;
            }
            match json_of(
                &mut conn,
                Method::GET,
                &path,
                &buyers[i],
                None,
                None,
                shared.opts.timeout,
            )
            .await
            {
                Ok((200, _)) => {
                    shared.polls.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// After the opening: poll; once admitted, hold one seat with the token and order it.
async fn buy(shared: Arc<Shared>, buyers: Arc<Vec<Buyer>>, worker: usize, until: Instant) {
    let mut conn = Conn::new(shared.target.clone());
    let me = format!("/v1/events/{}/queue/me", shared.event);
    let holds = format!("/v1/events/{}/holds", shared.event);
    let mine: Vec<usize> = (worker..buyers.len())
        .step_by(shared.opts.connections)
        .collect();
    let mut first_round = true;
    while Instant::now() < until {
        let round = Instant::now();
        let mut left = 0;
        for &i in &mine {
            if shared.progress.lock().await[i].done || Instant::now() >= until {
                continue;
            }
            left += 1;
            let Ok((status, place)) = json_of(
                &mut conn,
                Method::GET,
                &me,
                &buyers[i],
                None,
                None,
                shared.opts.timeout,
            )
            .await
            else {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            if status != 200 {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match place["status"].as_str() {
                Some("admitted") => {
                    let seen = shared.seen_admitted.load(Ordering::Relaxed);
                    {
                        let mut progress = shared.progress.lock().await;
                        if first_round && progress[i].place_at_opening.is_none() {
                            progress[i].place_at_opening = Some((0, seen));
                        }
                        if progress[i].admitted_at.is_none() {
                            progress[i].admitted_at = Some(Instant::now());
                            shared.seen_admitted.fetch_add(1, Ordering::Relaxed);
                            let now = shared.admitted_now.fetch_add(1, Ordering::Relaxed) + 1;
                            shared.most_at_once.fetch_max(now, Ordering::Relaxed);
                        }
                    }
                    let token = place["admission_token"].as_str().unwrap_or_default();
                    let Ok(token) = HeaderValue::from_str(token) else {
                        shared.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let body = json!({"items": [{"ticket_type": "GA", "quantity": 1}]});
                    let hold = json_of(
                        &mut conn,
                        Method::POST,
                        &holds,
                        &buyers[i],
                        Some(body),
                        Some((&ADMISSION, &token)),
                        shared.opts.timeout,
                    )
                    .await;
                    let outcome = match hold {
                        Ok((201, hold)) => {
                            let order = json!({"hold_id": hold["id"]});
                            match json_of(
                                &mut conn,
                                Method::POST,
                                "/v1/orders",
                                &buyers[i],
                                Some(order),
                                None,
                                shared.opts.timeout,
                            )
                            .await
                            {
                                Ok((201, _)) => Some(true),
                                _ => None,
                            }
                        }
                        // Sold out: nothing left to buy.
                        Ok((409, _)) => Some(false),
                        _ => None,
                    };
                    match outcome {
                        Some(bought) => {
                            if bought {
                                shared.purchases.fetch_add(1, Ordering::Relaxed);
                            }
                            shared.progress.lock().await[i].done = true;
                            shared.admitted_now.fetch_sub(1, Ordering::Relaxed);
                        }
                        None => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Some("waiting") | Some("sold_out") => {
                    if first_round && let Some(position) = place["position"].as_u64() {
                        let seen = shared.seen_admitted.load(Ordering::Relaxed);
                        let mut progress = shared.progress.lock().await;
                        progress[i].place_at_opening.get_or_insert((position, seen));
                    }
                    if place["status"] == "sold_out" {
                        shared.progress.lock().await[i].done = true;
                    }
                }
                Some("expired") => shared.progress.lock().await[i].done = true,
                _ => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        first_round = false;
        if left == 0 {
            break;
        }
        let pause = shared.opts.poll_interval.saturating_sub(round.elapsed());
        tokio::time::sleep(pause).await;
    }
}

async fn workers<F, Fut>(shared: &Arc<Shared>, buyers: &Arc<Vec<Buyer>>, task: F)
where
    F: Fn(Arc<Shared>, Arc<Vec<Buyer>>, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut handles = Vec::new();
    for worker in 0..shared.opts.connections {
        handles.push(tokio::spawn(task(
            Arc::clone(shared),
            Arc::clone(buyers),
            worker,
        )));
    }
    for handle in handles {
        let _ = handle.await;
    }
}

/// Starts a server, runs the on-sale, audits, stops.
pub async fn run(opts: &Options) -> anyhow::Result<QueueResult> {
    anyhow::ensure!(opts.connections >= 1, "--connections must be at least 1");
    let dir = tempfile::Builder::new()
        .prefix("holdfast-bench-queue-")
        .tempdir()
        .context("creating a working directory")?;
    let secret = compare::random_secret();
    let started =
        compare::start(TargetKind::HoldfastSync, &opts.launch, &secret, dir.path()).await?;
    let result = measure(opts, &secret, &started.server).await;
    let result = result.map_err(|e| {
        e.context(format!(
            "the server's log ends:\n{}",
            started.server.log_tail()
        ))
    });
    started.stop(&opts.launch).await;
    result
}

async fn measure(
    opts: &Options,
    secret: &str,
    server: &compare::Server,
) -> anyhow::Result<QueueResult> {
    let target = server.target.clone();
    let run_secs = opts.poll_window + opts.sale_duration + Duration::from_secs(600);
    let keys = setup::token_keys(secret.as_bytes(), run_secs)?;
    let organizer = setup::mint(
        &keys,
        holdfast_actors::UserId(uuid::Uuid::new_v4()),
        holdfast_gateway::auth::Role::Organizer,
    )?;
    let buyers = Arc::new(setup::buyers(&keys, opts.users)?);
    let pid = server.pid().context("the server has a pid")?;
    let cpu = crate::cpu::Probe {
        pids: vec![pid],
        ..Default::default()
    };
    // The sale opens far ahead; it is moved to "now" once the joins and the poll window are
    // done, so every buyer is in the pre-queue.
    let far = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let body = json!({
        "name": "Queued flash sale", "venue": "holdfast-bench", "starts_at": "2030-12-31T20:00:00Z",
        "sale_starts_at": rfc(far),
        "queue": {"admit_per_minute": opts.admit_per_minute, "active_max": opts.active_max,
                  "admission_ttl_secs": opts.admission_ttl_secs},
        "ticket_types": [{"code": "GA", "name": "General", "price": 0, "currency": "VND",
                          "capacity": opts.capacity}],
    });
    let mut conn = Conn::new(target.clone());
    let created = conn
        .send(
            Method::POST,
            "/v1/events",
            Some(&organizer),
            Some(Bytes::from(body.to_string())),
            opts.timeout,
        )
        .await?;
    anyhow::ensure!(
        created.status.as_u16() == 201,
        "creating the event: {}",
        String::from_utf8_lossy(&created.body)
    );
    let event: serde_json::Value = serde_json::from_slice(&created.body)?;
    let event = event["id"]
        .as_str()
        .context("the event has an id")?
        .to_owned();
    let shared = Arc::new(Shared {
        target: target.clone(),
        event: event.clone(),
        opts: opts.clone(),
        arrivals: AtomicU64::new(0),
        polls: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        purchases: AtomicU64::new(0),
        admitted_now: AtomicUsize::new(0),
        most_at_once: AtomicUsize::new(0),
        seen_admitted: AtomicUsize::new(0),
        progress: Mutex::new(vec![Progress::default(); buyers.len()]),
    });

    let cpu_before = cpu.sample();
    let joins_started = Instant::now();
    workers(&shared, &buyers, join_all).await;
    let join_secs = joins_started.elapsed().as_secs_f64();
    let cpu_joins = cpu.sample().processes_secs - cpu_before.processes_secs;
    let joins = shared.arrivals.load(Ordering::Relaxed);
    if opts.progress {
        eprintln!("queue: {joins} joins in {join_secs:.1} s");
    }

    let cpu_before = cpu.sample();
    let polls_started = Instant::now();
    let until = polls_started + opts.poll_window;
    workers(&shared, &buyers, move |s, b, w| poll_only(s, b, w, until)).await;
    let poll_secs = polls_started.elapsed().as_secs_f64();
    let cpu_polls = cpu.sample().processes_secs - cpu_before.processes_secs;
    let polls = shared.polls.load(Ordering::Relaxed);
    if opts.progress {
        eprintln!("queue: {polls} polls in {poll_secs:.1} s");
    }

    // Open the sale now.
    let open = json!({"sale_starts_at": rfc(time::OffsetDateTime::now_utc())});
    let opened = conn
        .send(
            Method::PATCH,
            &format!("/v1/events/{event}"),
            Some(&organizer),
            Some(Bytes::from(open.to_string())),
            opts.timeout,
        )
        .await?;
    anyhow::ensure!(
        opened.status.is_success(),
        "opening the sale: {}",
        String::from_utf8_lossy(&opened.body)
    );
    let until = Instant::now() + opts.sale_duration;
    workers(&shared, &buyers, move |s, b, w| buy(s, b, w, until)).await;

    // The audit: the stock as the server tells it.
    let stock = conn
        .send(
            Method::GET,
            &format!("/v1/events/{event}/availability"),
            None,
            None,
            opts.timeout,
        )
        .await?;
    let stock: serde_json::Value = serde_json::from_slice(&stock.body)?;
    let line = stock["ticket_types"]
        .as_array()
        .and_then(|t| t.first())
        .cloned()
        .unwrap_or_default();
    let sold = line["sold"].as_u64().unwrap_or(0);
    let held = line["held"].as_u64().unwrap_or(0);
    let available = line["available"].as_u64().unwrap_or(0);
    let purchases = shared.purchases.load(Ordering::Relaxed);
    let mut audit = Vec::new();
    if sold > u64::from(opts.capacity) {
        audit.push(format!("oversold: {sold} sold of {}", opts.capacity));
    }
    if sold + held + available != u64::from(opts.capacity) {
        audit.push(format!(
            "stock does not add up: {available} + {held} + {sold} != {}",
            opts.capacity
        ));
    }
    if sold != purchases {
        audit.push(format!("{sold} sold but {purchases} orders confirmed"));
    }
    let progress = shared.progress.lock().await.clone();
    let most = shared.most_at_once.load(Ordering::Relaxed);
    if most > opts.active_max as usize {
        audit.push(format!(
            "{most} seen admitted at once, above active_max {}",
            opts.active_max
        ));
    }
    // Fairness: arrival against the place drawn at the opening.
    let pairs: Vec<(f64, f64)> = progress
        .iter()
        .filter_map(|p| {
            let arrival = p.arrival? as f64;
            let (position, admitted_before) = p.place_at_opening?;
            Some((arrival, position as f64 + admitted_before as f64))
        })
        .collect();
    let arrival: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let place: Vec<f64> = pairs.iter().map(|p| p.1).collect();
    let spearman_rho = spearman(&ranks(&arrival), &ranks(&place));
    let mut admitted_times: Vec<Instant> = progress.iter().filter_map(|p| p.admitted_at).collect();
    admitted_times.sort();
    let admitted_per_minute = match (admitted_times.first(), admitted_times.last()) {
        (Some(first), Some(last)) if admitted_times.len() > 1 && last > first => {
            Some((admitted_times.len() - 1) as f64 * 60.0 / (*last - *first).as_secs_f64())
        }
        _ => None,
    };
    let per_op = |secs: f64, n: u64| (n > 0).then(|| secs * 1e6 / n as f64);
    Ok(QueueResult {
        users: opts.users,
        joins,
        joins_per_sec: joins as f64 / join_secs.max(1e-9),
        join_cpu_us: per_op(cpu_joins, joins),
        polls_before_opening: polls,
        polls_per_sec: polls as f64 / poll_secs.max(1e-9),
        poll_cpu_us: per_op(cpu_polls, polls),
        pre_queue: pairs.len(),
        spearman_rho,
        admit_per_minute: opts.admit_per_minute,
        admitted_per_minute,
        admitted: admitted_times.len() as u64,
        active_max: opts.active_max,
        most_admitted_at_once: most,
        purchases,
        capacity: opts.capacity,
        sold,
        server_peak_rss_kb: peak_rss_kb(pid),
        errors: shared.errors.load(Ordering::Relaxed),
        audit_ok: audit.is_empty(),
        audit,
    })
}

/// The result as a few lines of text.
pub fn text(r: &QueueResult) -> String {
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    format!(
        "queue: {users} buyers, {joins} joins at {jps:.0}/s ({jcpu} µs server CPU each); \
         {polls} polls before the opening at {pps:.0}/s ({pcpu} µs each)\n\
         fairness: Spearman ρ {rho} between arrival and the place drawn, over {pre} buyers\n\
         admissions: {admitted} at {apm}/min (setting {setting}/min), at most {most} at once \
         (active_max {max})\n\
         sale: {purchases} bought, {sold} sold of {capacity}; server peak RSS {rss} MiB; \
         {errors} errors; audit {audit}\n",
        users = r.users,
        joins = r.joins,
        jps = r.joins_per_sec,
        jcpu = opt(r.join_cpu_us, 1),
        polls = r.polls_before_opening,
        pps = r.polls_per_sec,
        pcpu = opt(r.poll_cpu_us, 1),
        rho = opt(r.spearman_rho, 4),
        pre = r.pre_queue,
        admitted = r.admitted,
        apm = opt(r.admitted_per_minute, 0),
        setting = r.admit_per_minute,
        most = r.most_admitted_at_once,
        max = r.active_max,
        purchases = r.purchases,
        sold = r.sold,
        capacity = r.capacity,
        rss = r
            .server_peak_rss_kb
            .map_or("-".to_owned(), |kb| format!("{:.0}", kb as f64 / 1024.0)),
        errors = r.errors,
        audit = if r.audit_ok {
            "ok".to_owned()
        } else {
            r.audit.join("; ")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_equal_reversed_and_short_rankings() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(spearman(&a, &a), Some(1.0));
        assert_eq!(spearman(&a, &[4.0, 3.0, 2.0, 1.0]), Some(-1.0));
        assert_eq!(spearman(&[1.0], &[1.0]), None);
        assert_eq!(spearman(&a, &a[..3]), None);
    }

    #[test]
    fn ranks_order_values_and_keep_ties_in_order() {
        assert_eq!(ranks(&[30.0, 10.0, 20.0]), [3.0, 1.0, 2.0]);
        assert_eq!(ranks(&[5.0, 5.0, 1.0]), [2.0, 3.0, 1.0]);
    }
}
