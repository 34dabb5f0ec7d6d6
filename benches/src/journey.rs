//! `holdfast-bench journey`: the whole purchase, as a buyer makes it. Each journey holds seats
//! (`POST /v1/events/{id}/holds`), orders them (`POST /v1/orders`), pays — the harness plays
//! VNPAY and calls the server's IPN endpoint with a result signed with the merchant's secret —
//! and polls `GET /v1/orders/{id}/tickets` until one ticket per seat is there. Latency is from
//! the hold (its intended start in the open model) to the tickets.
//!
//! After the load the audit waits for every paid order, then checks that each is confirmed
//! with one ticket per paid seat (no ticket twice), that stock adds up and nothing is
//! oversold, and that no saga message was parked (`GET /v1/admin/saga/parked` on the ops
//! listener).
//!
//! `baseline-pg` is what a monolith's checkout costs at least: one PostgreSQL transaction that
//! decrements the stock and inserts the order, run from this process ([`baseline`]).

pub mod baseline;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use hyper::Method;
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use crate::args::QuantityRange;
use crate::audit::{self, Stock};
use crate::client::{self, Answer, Conn, Target};
use crate::compare::{self, BENCH_VNPAY_TMN_CODE, Launch, TargetKind};
use crate::cpu::CpuReport;
use crate::load::{Model, hold_body};
use crate::setup::{self, Buyer, EventSpec};
use crate::stats::{self, LatencySummary};

/// Paid orders read back in the audit at most (a random sample beyond).
const AUDIT_ORDERS_MAX: usize = 200_000;

/// What a journey run does.
#[derive(Clone, Debug)]
pub struct Options {
    pub targets: Vec<TargetKind>,
    pub model: Model,
    pub connections: usize,
    pub duration: Duration,
    pub quantity: QuantityRange,
    pub users: usize,
    pub capacity: u32,
    /// Pause between two reads of an order's tickets.
    pub poll_interval: Duration,
    /// One request without an answer after this long fails its journey.
    pub timeout: Duration,
    /// A journey not done after this long (tickets not there) fails.
    pub journey_timeout: Duration,
    /// How long the audit waits for paid orders to be confirmed with their tickets.
    pub settle: Duration,
    /// Also run every target in the open model at this share of its closed-model peak.
    pub open_at: Option<f64>,
    /// Connections of those open-model runs (most journeys in flight); `None`: `connections`.
    pub open_connections: Option<usize>,
    /// PostgreSQL connections of the baseline.
    pub pool_size: u32,
    pub launch: Launch,
    pub progress: bool,
}

/// What one run measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JourneyResult {
    pub target: String,
    pub model: Model,
    pub connections: usize,
    pub duration_s: f64,
    pub quantity: QuantityRange,
    /// Journeys started.
    pub started: u64,
    /// Purchases done (tickets seen, or for the baseline the order committed), drain included.
    pub purchases: u64,
    /// Purchases done within the planned duration.
    pub purchases_in_window: u64,
    /// `purchases_in_window / duration`.
    pub purchases_per_sec: f64,
    /// Journeys that ended without tickets, by why: `hold 409 sold-out`, `ipn 99` …
    pub failures: BTreeMap<String, u64>,
    /// Open model: journeys due before the end but never started (every connection busy).
    pub unsent: u64,
    /// `journey` (hold to tickets) and each stage: `hold`, `order`, `pay` (the IPN call),
    /// `tickets` (from the IPN's answer to the tickets).
    pub latency: BTreeMap<String, LatencySummary>,
    /// Ticket reads per purchase.
    pub polls_per_purchase: f64,
    /// Seconds from the start until the last journey ended (the drain after the window).
    pub elapsed_s: f64,
    /// CPU over the load and its drain, per purchase.
    pub cpu: CpuReport,
    pub audit: JourneyAudit,
    pub loadavg_before: Option<f64>,
    pub loadavg_after: Option<f64>,
}

impl JourneyResult {
    pub fn journey_latency(&self) -> LatencySummary {
        self.latency.get("journey").cloned().unwrap_or_default()
    }

    pub fn model_text(&self) -> String {
        match self.model {
            Model::Open { rate } => format!("open {rate:.0}/s"),
            Model::Closed => format!("closed {} conns", self.connections),
        }
    }
}

/// What the audit found.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JourneyAudit {
    pub ok: bool,
    /// Orders the harness paid (IPN answered `00`, or `02` after an unclear first answer).
    pub orders_paid: u64,
    /// Paid orders read back (all, up to 200,000).
    pub orders_checked: u64,
    pub orders_confirmed: u64,
    /// Seats of the paid orders read back, and the tickets found for them.
    pub seats_paid: u64,
    pub tickets: u64,
    pub stock: Stock,
    /// Seats the paid orders account for at least and at most (IPN answers without a clear
    /// result widen the range).
    pub sold_expected_min: u64,
    pub sold_expected_max: u64,
    pub oversold_seats: u64,
    /// Saga messages parked on the node (`None`: not asked, the baseline has no saga).
    pub parked: Option<u64>,
    /// Seconds the audit waited for paid orders to be confirmed.
    pub settle_s: f64,
    pub violations: Vec<String>,
    pub violations_total: u64,
}

impl JourneyAudit {
    fn violation(&mut self, text: String) {
        self.violations_total += 1;
        if self.violations.len() < 50 {
            self.violations.push(text);
        }
    }
}

/// Whether a journey's payment went through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paid {
    No,
    Yes,
    /// The IPN call got no clear answer: it may have been recorded.
    Unknown,
}

/// One journey's outcome.
#[derive(Clone, Debug)]
pub struct Record {
    pub buyer: u32,
    pub quantity: u32,
    pub order: Option<String>,
    pub paid: Paid,
    /// The journey saw one ticket per seat.
    pub done: bool,
    /// Ended (successfully) within the planned duration.
    pub in_window: bool,
    pub failure: Option<String>,
}

/// The signed query of a VNPAY payment result for `order` of `amount` VND, as VNPAY sends it
/// to the merchant's IPN URL.
pub fn ipn_query(secret: &str, order: &str, amount: u64, transaction_no: u64) -> String {
    let pay_date = holdfast_vnpay::datetime::format(time::OffsetDateTime::now_utc());
    let transaction_no = transaction_no.to_string();
    let bank_tran_no = format!("VNP{transaction_no}");
    let amount = (amount * 100).to_string();
    let params = [
        ("vnp_Amount", amount.as_str()),
        ("vnp_BankCode", "NCB"),
        ("vnp_BankTranNo", bank_tran_no.as_str()),
        ("vnp_CardType", "ATM"),
        ("vnp_OrderInfo", "holdfast-bench journey"),
        ("vnp_PayDate", pay_date.as_str()),
        ("vnp_ResponseCode", "00"),
        ("vnp_TmnCode", BENCH_VNPAY_TMN_CODE),
        ("vnp_TransactionNo", transaction_no.as_str()),
        ("vnp_TransactionStatus", "00"),
        ("vnp_TxnRef", order),
    ];
    holdfast_vnpay::encoding::signed_query(secret, &params)
}

/// What a journey needs besides its connection.
struct Shared {
    hold_path: String,
    hold_bodies: Vec<Bytes>,
    buyers: Vec<Buyer>,
    vnpay_secret: String,
    opts: Options,
    start: Instant,
    end: Instant,
    next_slot: AtomicU64,
    sent: AtomicU64,
    transaction_no: AtomicU64,
    done: AtomicU64,
}

/// A worker's findings.
#[derive(Default)]
struct WorkerOutput {
    records: Vec<Record>,
    histograms: BTreeMap<&'static str, Histogram<u64>>,
    polls: u64,
}

impl WorkerOutput {
    fn record(&mut self, stage: &'static str, elapsed: Duration) {
        self.histograms
            .entry(stage)
            .or_insert_with(stats::new_histogram)
            .saturating_record(
                u64::try_from(elapsed.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
    }
}

/// The kind of a failed request: `hold 409 sold-out`, `order timeout` …
fn failure(stage: &str, result: &Result<Answer, client::Error>) -> String {
    match result {
        Ok(answer) => match client::problem_slug(&answer.body) {
            Some(slug) => format!("{stage} {} {slug}", answer.status.as_u16()),
            None => format!("{stage} {}", answer.status.as_u16()),
        },
        Err(e) => format!("{stage} {}", e.kind()),
    }
}

fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_slice(&answer.body).unwrap_or_default()
}

/// One purchase from hold to tickets. `started` is when it was due.
async fn journey(
    shared: &Shared,
    conn: &mut Conn,
    rng: &mut rand::rngs::StdRng,
    started: Instant,
    out: &mut WorkerOutput,
) -> Record {
    let opts = &shared.opts;
    let buyer_index = rng.gen_range(0..shared.buyers.len());
    let buyer = &shared.buyers[buyer_index];
    let quantity = opts.quantity.pick(rng);
    let mut record = Record {
        buyer: buyer_index as u32,
        quantity,
        order: None,
        paid: Paid::No,
        done: false,
        in_window: false,
        failure: None,
    };
    let body = shared.hold_bodies[(quantity - opts.quantity.min) as usize].clone();
    let hold = conn
        .send(
            Method::POST,
            &shared.hold_path,
            Some(&buyer.auth),
            Some(body),
            opts.timeout,
        )
        .await;
    let hold_id = match &hold {
        Ok(a) if a.status.as_u16() == 201 => client::extract_id(&a.body).map(str::to_owned),
        _ => None,
    };
    let Some(hold_id) = hold_id else {
        record.failure = Some(failure("hold", &hold));
        return record;
    };
    out.record("hold", started.elapsed());

    let ordered_at = Instant::now();
    let body = Bytes::from(format!("{{\"hold_id\":\"{hold_id}\"}}"));
    let order = conn
        .send(
            Method::POST,
            "/v1/orders",
            Some(&buyer.auth),
            Some(body),
            opts.timeout,
        )
        .await;
    let (order_id, amount) = match &order {
        Ok(a) if a.status.as_u16() == 201 => {
            let body = json(a);
            (
                body["id"].as_str().map(str::to_owned),
                body["amount"].as_u64(),
            )
        }
        _ => (None, None),
    };
    let (Some(order_id), Some(amount)) = (order_id, amount) else {
        record.failure = Some(failure("order", &order));
        return record;
    };
    out.record("order", ordered_at.elapsed());
    record.order = Some(order_id.clone());

    let paying_at = Instant::now();
    let deadline = started + opts.journey_timeout;
    if let Err(why) = pay(shared, conn, &order_id, amount, deadline, &mut record).await {
        record.failure = Some(why);
        return record;
    }
    out.record("pay", paying_at.elapsed());

    let paid_at = Instant::now();
    if let Err(why) = wait_tickets(
        shared,
        conn,
        &buyer.auth,
        &order_id,
        quantity,
        deadline,
        out,
    )
    .await
    {
        record.failure = Some(why);
        return record;
    }
    let now = Instant::now();
    out.record("tickets", now.duration_since(paid_at));
    out.record("journey", now.duration_since(started));
    record.done = true;
    record.in_window = now <= shared.end;
    shared.done.fetch_add(1, Ordering::Relaxed);
    record
}

/// Reads the order's tickets every `poll_interval` until one per seat is there.
async fn wait_tickets(
    shared: &Shared,
    conn: &mut Conn,
    auth: &HeaderValue,
    order: &str,
    quantity: u32,
    deadline: Instant,
    out: &mut WorkerOutput,
) -> Result<(), String> {
    let path = format!("/v1/orders/{order}/tickets");
    loop {
        tokio::time::sleep(shared.opts.poll_interval).await;
        out.polls += 1;
        let answer = conn
            .send(Method::GET, &path, Some(auth), None, shared.opts.timeout)
            .await;
        let seen = match &answer {
            Ok(a) if a.status.as_u16() == 200 => json(a).as_array().map_or(0, Vec::len),
            _ => 0,
        };
        if seen >= quantity as usize {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(match &answer {
                Ok(a) if a.status.as_u16() == 200 => "tickets not issued in time".to_owned(),
                _ => failure("tickets", &answer),
            });
        }
    }
}

/// Calls the IPN as VNPAY would, until it answers `00` (recorded) or `02` (recorded by an
/// earlier call whose answer was lost). `01` means the payment is not created yet (the saga
/// creates it after the order): tried again.
async fn pay(
    shared: &Shared,
    conn: &mut Conn,
    order: &str,
    amount: u64,
    deadline: Instant,
    record: &mut Record,
) -> Result<(), String> {
    let transaction_no = shared.transaction_no.fetch_add(1, Ordering::Relaxed);
    let path = format!(
        "/v1/payments/vnpay/ipn?{}",
        ipn_query(&shared.vnpay_secret, order, amount, transaction_no)
    );
    loop {
        let answer = conn
            .send(Method::GET, &path, None, None, shared.opts.timeout)
            .await;
        let code = match &answer {
            Ok(a) if a.status.as_u16() == 200 => json(a)["RspCode"].as_str().map(str::to_owned),
            _ => None,
        };
        match code.as_deref() {
            Some("00") => {
                record.paid = Paid::Yes;
                return Ok(());
            }
            Some("02") if record.paid == Paid::Unknown => {
                record.paid = Paid::Yes;
                return Ok(());
            }
            Some("01") => {}
            Some(other) => return Err(format!("ipn {other}")),
            None => record.paid = Paid::Unknown,
        }
        if Instant::now() >= deadline {
            return Err(code.map_or_else(|| failure("ipn", &answer), |c| format!("ipn {c}")));
        }
        tokio::time::sleep(shared.opts.poll_interval).await;
    }
}

/// When the next journey of a worker is due: at once in the closed model, at the next free
/// slot of the shared schedule (`start + k / rate`) in the open model; `None` past the end.
pub(crate) async fn next_due(
    model: Model,
    start: Instant,
    end: Instant,
    next_slot: &AtomicU64,
) -> Option<Instant> {
    match model {
        Model::Open { rate } => {
            let slot = next_slot.fetch_add(1, Ordering::Relaxed);
            let due = start + Duration::from_secs_f64(slot as f64 / rate);
            if due >= end || Instant::now() >= end {
                return None;
            }
            tokio::time::sleep_until(due.into()).await;
            Some(due)
        }
        Model::Closed => {
            let now = Instant::now();
            (now < end).then_some(now)
        }
    }
}

async fn worker(index: usize, shared: Arc<Shared>, mut conn: Conn) -> WorkerOutput {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0010_a72e ^ index as u64);
    let mut out = WorkerOutput::default();
    while let Some(due) = next_due(
        shared.opts.model,
        shared.start,
        shared.end,
        &shared.next_slot,
    )
    .await
    {
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let record = journey(&shared, &mut conn, &mut rng, due, &mut out).await;
        out.records.push(record);
    }
    out
}

/// Everything the load produced.
struct LoadOutput {
    records: Vec<Record>,
    histograms: BTreeMap<&'static str, Histogram<u64>>,
    polls: u64,
    unsent: u64,
    elapsed: Duration,
}

impl LoadOutput {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            histograms: BTreeMap::new(),
            polls: 0,
            unsent: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// Adds one worker's journeys, ticket reads and stage histograms.
    fn absorb(&mut self, worker: WorkerOutput) -> anyhow::Result<()> {
        self.records.extend(worker.records);
        self.polls += worker.polls;
        for (stage, h) in worker.histograms {
            let into = self
                .histograms
                .entry(stage)
                .or_insert_with(stats::new_histogram);
            into.add(&h).context("merging histograms")?;
        }
        Ok(())
    }
}

async fn load(
    opts: &Options,
    target: &Target,
    event: &str,
    buyers: Vec<Buyer>,
    vnpay_secret: String,
) -> anyhow::Result<LoadOutput> {
    let mut conns = Vec::with_capacity(opts.connections);
    for _ in 0..opts.connections {
        let mut conn = Conn::new(target.clone());
        conn.connect()
            .await
            .map_err(|e| anyhow::anyhow!("opening a connection to {}: {e}", target.addr))?;
        conns.push(conn);
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        hold_path: format!("/v1/events/{event}/holds"),
        hold_bodies: (opts.quantity.min..=opts.quantity.max)
            .map(|q| hold_body("GA", q))
            .collect(),
        buyers,
        vnpay_secret,
        opts: opts.clone(),
        start,
        end: start + opts.duration,
        next_slot: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        transaction_no: AtomicU64::new(15_000_001),
        done: AtomicU64::new(0),
    });
    let ticker = opts.progress.then(|| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.tick().await;
            loop {
                every.tick().await;
                let secs = shared.start.elapsed().as_secs_f64();
                eprintln!(
                    "  {secs:>5.1} s: {} purchases done ({:.0}/s), {} started",
                    shared.done.load(Ordering::Relaxed),
                    shared.done.load(Ordering::Relaxed) as f64 / secs,
                    shared.sent.load(Ordering::Relaxed),
                );
            }
        })
    });
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| tokio::spawn(worker(i, Arc::clone(&shared), conn)))
        .collect();
    let mut output = LoadOutput::new();
    for w in workers {
        output.absorb(w.await?)?;
    }
    output.elapsed = shared.start.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Model::Open { rate } = opts.model {
        let due = (rate * opts.duration.as_secs_f64()).ceil() as u64;
        output.unsent = due.saturating_sub(shared.sent.load(Ordering::Relaxed));
    }
    Ok(output)
}

/// A Holdfast journey run: start the server, set up, load, audit, stop.
async fn run_holdfast(
    kind: TargetKind,
    opts: &Options,
    label: &str,
    secret: &str,
    dir: &std::path::Path,
) -> anyhow::Result<JourneyResult> {
    let started = compare::start(kind, &opts.launch, secret, dir).await?;
    let result = measure_holdfast(kind, opts, label, secret, &started.server).await;
    let result = match result {
        Ok(r) => Ok(r),
        Err(e) => Err(e.context(format!(
            "the server's log ends:\n{}",
            started.server.log_tail()
        ))),
    };
    started.stop(&opts.launch).await;
    result
}

async fn measure_holdfast(
    kind: TargetKind,
    opts: &Options,
    label: &str,
    secret: &str,
    server: &compare::Server,
) -> anyhow::Result<JourneyResult> {
    if opts.progress {
        eprintln!("{label}: {} at {}", kind.name(), server.target.addr);
    }
    let target = &server.target;
    let keys = setup::token_keys(secret.as_bytes(), opts.duration + opts.settle)?;
    let organizer = setup::mint(
        &keys,
        holdfast_actors::UserId(uuid::Uuid::new_v4()),
        holdfast_gateway::auth::Role::Organizer,
    )?;
    let spec = EventSpec {
        count: 1,
        ticket_type: "GA".to_owned(),
        capacity: opts.capacity,
        per_user_limit: None,
    };
    let events = setup::create_events(target, &organizer, &spec).await?;
    let event = events[0].id.clone();
    let buyers = setup::buyers(&keys, opts.users)?;
    let probe = kind.cpu_probe(server.pid());
    let loadavg_before = crate::report::loadavg();
    let cpu_before = probe.probe.sample();
    let output = load(
        opts,
        target,
        &event,
        buyers.clone(),
        compare::vnpay_secret(secret),
    )
    .await?;
    let cpu_after = probe.probe.sample();
    let loadavg_after = crate::report::loadavg();
    let admin = setup::mint(
        &keys,
        holdfast_actors::UserId(uuid::Uuid::new_v4()),
        holdfast_gateway::auth::Role::Admin,
    )?;
    let ops = server
        .ops
        .as_ref()
        .context("a Holdfast server has an ops listener")?;
    let audit = audit_holdfast(opts, target, ops, &admin, &event, &buyers, &output.records).await?;
    let purchases = output.records.iter().filter(|r| r.done).count() as u64;
    let cpu = CpuReport::between(
        &probe.probe,
        &probe.processes,
        cpu_before,
        cpu_after,
        purchases,
    );
    Ok(result(
        label,
        opts,
        output,
        purchases,
        cpu,
        audit,
        (loadavg_before, loadavg_after),
    ))
}

fn result(
    label: &str,
    opts: &Options,
    output: LoadOutput,
    purchases: u64,
    cpu: CpuReport,
    audit: JourneyAudit,
    loadavg: (Option<f64>, Option<f64>),
) -> JourneyResult {
    let in_window = output
        .records
        .iter()
        .filter(|r| r.done && r.in_window)
        .count() as u64;
    let mut failures = BTreeMap::<String, u64>::new();
    for r in &output.records {
        if let Some(why) = &r.failure {
            *failures.entry(why.clone()).or_default() += 1;
        }
    }
    JourneyResult {
        target: label.to_owned(),
        model: opts.model,
        connections: opts.connections,
        duration_s: opts.duration.as_secs_f64(),
        quantity: opts.quantity,
        started: output.records.len() as u64,
        purchases,
        purchases_in_window: in_window,
        purchases_per_sec: stats::per_sec(in_window, opts.duration.as_secs_f64()),
        failures,
        unsent: output.unsent,
        latency: output
            .histograms
            .iter()
            .map(|(k, h)| ((*k).to_owned(), stats::summarize(h)))
            .collect(),
        polls_per_purchase: if purchases > 0 {
            output.polls as f64 / purchases as f64
        } else {
            0.0
        },
        elapsed_s: output.elapsed.as_secs_f64(),
        cpu,
        audit,
        loadavg_before: loadavg.0,
        loadavg_after: loadavg.1,
    }
}

/// A paid order as the audit reads it back.
#[derive(Debug, Default)]
struct OrderReadBack {
    status: String,
    ticket_ids: Vec<String>,
}

async fn read_order(
    conn: &mut Conn,
    order: &str,
    auth: &HeaderValue,
) -> Result<OrderReadBack, String> {
    let timeout = Duration::from_secs(30);
    let answer = conn
        .send(
            Method::GET,
            &format!("/v1/orders/{order}"),
            Some(auth),
            None,
            timeout,
        )
        .await
        .map_err(|e| format!("order {order}: GET failed: {e}"))?;
    if answer.status.as_u16() != 200 {
        return Err(format!("order {order}: GET answered {}", answer.status));
    }
    let status = json(&answer)["status"].as_str().unwrap_or("").to_owned();
    let answer = conn
        .send(
            Method::GET,
            &format!("/v1/orders/{order}/tickets"),
            Some(auth),
            None,
            timeout,
        )
        .await
        .map_err(|e| format!("order {order}: GET tickets failed: {e}"))?;
    if answer.status.as_u16() != 200 {
        return Err(format!(
            "order {order}: GET tickets answered {}",
            answer.status
        ));
    }
    let ticket_ids = json(&answer)
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|t| t["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Ok(OrderReadBack { status, ticket_ids })
}

/// Reads back `orders` (index into `records`) on up to 64 connections.
async fn read_orders(
    target: &Target,
    buyers: &[Buyer],
    records: &Arc<Vec<Record>>,
    orders: Vec<usize>,
) -> anyhow::Result<Vec<(usize, Result<OrderReadBack, String>)>> {
    let orders = Arc::new(orders);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64.min(orders.len().max(1)) {
        let (orders, next, records) = (Arc::clone(&orders), Arc::clone(&next), Arc::clone(records));
        let buyers = buyers.to_vec();
        let mut conn = Conn::new(target.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(&index) = orders.get(next.fetch_add(1, Ordering::Relaxed)) {
                let record = &records[index];
                let order = record.order.as_deref().unwrap_or_default();
                let auth = &buyers[record.buyer as usize].auth;
                out.push((index, read_order(&mut conn, order, auth).await));
            }
            out
        }));
    }
    let mut out = Vec::new();
    for task in tasks {
        out.extend(task.await?);
    }
    Ok(out)
}

/// Waits for every paid order to be confirmed with its tickets (up to `settle`), then checks
/// the orders, the tickets, the stock and the parked saga messages.
async fn audit_holdfast(
    opts: &Options,
    target: &Target,
    ops: &Target,
    admin: &HeaderValue,
    event: &str,
    buyers: &[Buyer],
    records: &[Record],
) -> anyhow::Result<JourneyAudit> {
    let mut audit = JourneyAudit::default();
    let records = Arc::new(records.to_vec());
    let mut paid: Vec<usize> = (0..records.len())
        .filter(|&i| records[i].paid == Paid::Yes)
        .collect();
    audit.orders_paid = paid.len() as u64;
    if paid.len() > AUDIT_ORDERS_MAX {
        let picked =
            rand::seq::index::sample(&mut rand::thread_rng(), paid.len(), AUDIT_ORDERS_MAX);
        paid = picked.into_iter().map(|i| paid[i]).collect();
    }
    audit.orders_checked = paid.len() as u64;
    // Orders whose journey saw its tickets need no wait; the others (journeys cut by their
    // timeout) are read until they are done or `settle` has passed.
    let settle_start = Instant::now();
    let mut pending: Vec<usize> = paid.iter().copied().filter(|&i| !records[i].done).collect();
    while !pending.is_empty() && settle_start.elapsed() < opts.settle {
        let read = read_orders(target, buyers, &records, pending.clone()).await?;
        pending = read
            .into_iter()
            .filter(|(i, r)| {
                !r.as_ref().is_ok_and(|o| {
                    o.status == "confirmed" && o.ticket_ids.len() >= records[*i].quantity as usize
                })
            })
            .map(|(i, _)| i)
            .collect();
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    audit.settle_s = settle_start.elapsed().as_secs_f64();

    let mut seen_tickets = HashSet::new();
    for (index, read) in read_orders(target, buyers, &records, paid).await? {
        let record = &records[index];
        let order = record.order.as_deref().unwrap_or_default();
        audit.seats_paid += u64::from(record.quantity);
        match read {
            Err(v) => audit.violation(v),
            Ok(o) => {
                if o.status == "confirmed" {
                    audit.orders_confirmed += 1;
                } else {
                    audit.violation(format!(
                        "order {order}: paid but {:?}, not confirmed",
                        o.status
                    ));
                }
                audit.tickets += o.ticket_ids.len() as u64;
                if o.ticket_ids.len() != record.quantity as usize {
                    audit.violation(format!(
                        "order {order}: {} tickets for {} paid seats",
                        o.ticket_ids.len(),
                        record.quantity
                    ));
                }
                for id in o.ticket_ids {
                    if !seen_tickets.insert(id.clone()) {
                        audit.violation(format!("ticket {id} belongs to more than one order"));
                    }
                }
            }
        }
    }

    let stock = read_stock(target, event).await?;
    audit.stock = stock;
    audit.oversold_seats = audit::oversold(&stock);
    let seats = |paid: Paid| {
        records
            .iter()
            .filter(|r| r.paid == paid)
            .map(|r| u64::from(r.quantity))
            .sum::<u64>()
    };
    audit.sold_expected_min = seats(Paid::Yes);
    audit.sold_expected_max = audit.sold_expected_min + seats(Paid::Unknown);
    for v in audit::check_stock(
        event,
        u64::from(opts.capacity),
        &stock,
        audit::Expected {
            min: 0,
            max: u64::MAX,
        },
    ) {
        audit.violation(v);
    }
    if stock.sold < audit.sold_expected_min || stock.sold > audit.sold_expected_max {
        audit.violation(format!(
            "event {event}: {} seats sold, the paid orders account for {} to {}",
            stock.sold, audit.sold_expected_min, audit.sold_expected_max
        ));
    }

    let parked = parked(ops, admin).await?;
    audit.parked = Some(parked.len() as u64);
    for p in parked.iter().take(10) {
        audit.violation(format!("parked saga message: {p}"));
    }
    audit.ok = audit.violations_total == 0;
    Ok(audit)
}

async fn read_stock(target: &Target, event: &str) -> anyhow::Result<Stock> {
    let mut conn = Conn::new(target.clone());
    let answer = conn
        .send(
            Method::GET,
            &format!("/v1/events/{event}/availability"),
            None,
            None,
            Duration::from_secs(30),
        )
        .await
        .context("reading the availability")?;
    anyhow::ensure!(
        answer.status.as_u16() == 200,
        "availability answered {}",
        answer.status
    );
    let body = json(&answer);
    let line = body["ticket_types"]
        .as_array()
        .and_then(|l| l.iter().find(|t| t["code"] == "GA"))
        .context("the availability lacks GA")?;
    let n = |k: &str| line[k].as_u64().unwrap_or(0);
    Ok(Stock {
        capacity: n("capacity"),
        available: n("available"),
        held: n("held"),
        sold: n("sold"),
    })
}

/// `GET /v1/admin/saga/parked` on the ops listener, as an admin.
async fn parked(ops: &Target, admin: &HeaderValue) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut conn = Conn::new(ops.clone());
    let answer = conn
        .send(
            Method::GET,
            "/v1/admin/saga/parked",
            Some(admin),
            None,
            Duration::from_secs(30),
        )
        .await
        .context("reading the parked saga messages")?;
    anyhow::ensure!(
        answer.status.as_u16() == 200,
        "GET /v1/admin/saga/parked answered {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    Ok(json(&answer)["parked"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Runs every target, each also in the open model at `open_at` of its peak if asked.
pub async fn run(opts: &Options) -> anyhow::Result<Vec<JourneyResult>> {
    for kind in &opts.targets {
        anyhow::ensure!(
            kind.is_holdfast() || *kind == TargetKind::BaselinePg,
            "{} has no orders: journey targets are holdfast-sync, holdfast-async, holdfast-pg and baseline-pg",
            kind.name()
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("holdfast-bench-journey-")
        .tempdir()
        .context("creating a working directory")?;
    let secret = compare::random_secret();
    let mut results = Vec::new();
    for &kind in &opts.targets {
        let result = run_one(kind, opts, kind.name(), &secret, dir.path()).await?;
        let peak = result.purchases_per_sec;
        if opts.progress {
            eprintln!("{}", summary_line(&result));
        }
        results.push(result);
        if let (Some(share), Model::Closed) = (opts.open_at, opts.model)
            && peak > 0.0
        {
            let mut open = opts.clone();
            open.model = Model::Open { rate: share * peak };
            open.connections = opts.open_connections.unwrap_or(opts.connections);
            let label = format!("{}-open@{:.0}%", kind.name(), share * 100.0);
            let result = run_one(kind, &open, &label, &secret, dir.path()).await?;
            if opts.progress {
                eprintln!("{}", summary_line(&result));
            }
            results.push(result);
        }
    }
    Ok(results)
}

async fn run_one(
    kind: TargetKind,
    opts: &Options,
    label: &str,
    secret: &str,
    dir: &std::path::Path,
) -> anyhow::Result<JourneyResult> {
    if kind == TargetKind::BaselinePg {
        baseline::run(opts, label).await
    } else {
        run_holdfast(kind, opts, label, secret, dir).await
    }
    .with_context(|| format!("running {label}"))
}

fn summary_line(r: &JourneyResult) -> String {
    let l = r.journey_latency();
    format!(
        "{}: {:.0} purchases/s, p50 {:.1} ms, p99 {:.1} ms, {} CPU µs/purchase, audit {}",
        r.target,
        r.purchases_per_sec,
        l.p50_ms,
        l.p99_ms,
        r.cpu
            .us_per_op
            .map_or_else(|| "-".to_owned(), |u| format!("{u:.0}")),
        if r.audit.ok { "ok" } else { "FAILED" }
    )
}

/// The results as a text table, then purchases per CPU second against the baseline.
pub fn text_table(results: &[JourneyResult]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<26} {:>16} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>10}  audit",
        "target",
        "model",
        "purchase/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "failed",
        "unsent",
        "CPU µs/op",
        "ops/CPU-s"
    );
    for r in results {
        let l = r.journey_latency();
        let failed: u64 = r.failures.values().sum();
        let _ = writeln!(
            out,
            "{:<26} {:>16} {:>11.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>8} {:>11} {:>10}  {}",
            r.target,
            r.model_text(),
            r.purchases_per_sec,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            failed,
            r.unsent,
            r.cpu
                .us_per_op
                .map_or_else(|| "-".to_owned(), |u| format!("{u:.0}")),
            r.cpu
                .ops_per_cpu_sec
                .map_or_else(|| "-".to_owned(), |u| format!("{u:.0}")),
            audit_text(&r.audit)
        );
    }
    for r in results {
        let _ = writeln!(out, "\n{} ({}):", r.target, r.model_text());
        let _ = writeln!(out, "  CPU: {}", r.cpu.text());
        for (stage, l) in &r.latency {
            let _ = writeln!(
                out,
                "  {stage:>8}: n={} p50 {:.2} ms, p99 {:.2}, p99.9 {:.2}, max {:.2}",
                l.count, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
            );
        }
        if r.polls_per_purchase > 0.0 {
            let _ = writeln!(
                out,
                "  ticket reads per purchase: {:.1}",
                r.polls_per_purchase
            );
        }
        for (why, n) in &r.failures {
            let _ = writeln!(out, "  failed: {why}: {n}");
        }
        let a = &r.audit;
        let _ = writeln!(
            out,
            "  audit: {} paid, {} confirmed, {} tickets for {} seats, stock {:?}, parked {}",
            a.orders_paid,
            a.orders_confirmed,
            a.tickets,
            a.seats_paid,
            a.stock,
            a.parked.map_or_else(|| "-".to_owned(), |p| p.to_string())
        );
        for v in &a.violations {
            let _ = writeln!(out, "  AUDIT: {v}");
        }
    }
    let baseline = results
        .iter()
        .find(|r| r.target == TargetKind::BaselinePg.name());
    if let Some(base) = baseline.and_then(|b| b.cpu.ops_per_cpu_sec) {
        out.push('\n');
        for r in results.iter().filter(|r| !r.target.starts_with("baseline")) {
            if let Some(ours) = r.cpu.ops_per_cpu_sec {
                let _ = writeln!(
                    out,
                    "{} / baseline-pg, purchases per CPU second: {:.2}x ({ours:.0} vs {base:.0})",
                    r.target,
                    ours / base
                );
            }
        }
    }
    out
}

fn audit_text(a: &JourneyAudit) -> String {
    if a.ok {
        format!("ok ({} paid orders)", a.orders_checked)
    } else {
        format!("FAILED ({} violations)", a.violations_total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipn_queries_verify_with_the_merchant_secret() {
        let order = uuid::Uuid::now_v7().to_string();
        let query = ipn_query("a-merchant-secret", &order, 500_000, 7);
        let pairs: Vec<(String, String)> = form_urlencoded_pairs(&query);
        let config = holdfast_vnpay::Config {
            tmn_code: BENCH_VNPAY_TMN_CODE.to_owned(),
            hash_secret: "a-merchant-secret".to_owned(),
            pay_url: holdfast_vnpay::SANDBOX_PAY_URL.to_owned(),
            return_url: "http://127.0.0.1/return".to_owned(),
            ipn_url: None,
            version: holdfast_vnpay::VERSION.to_owned(),
            locale: holdfast_vnpay::Locale::default(),
        };
        let verified = holdfast_vnpay::verify(&config, &pairs).expect("signed");
        assert!(verified.is_paid());
        assert_eq!(verified.amount_minor, 500_000);
        assert_eq!(verified.txn_ref, order);
        let forged = ipn_query("another-secret", &order, 500_000, 7);
        assert!(holdfast_vnpay::verify(&config, &form_urlencoded_pairs(&forged)).is_err());
    }

    fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%20", " ").replace('+', " ")))
            .collect()
    }
}
