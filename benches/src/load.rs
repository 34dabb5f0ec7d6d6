//! The load itself: workers with one keep-alive connection each, in an open model (a fixed
//! arrival rate, each request with an intended send time) or a closed model (every connection
//! flat out).
//!
//! In the open model the workers share one schedule: slot `k` is due at `start + k / rate`. A
//! worker takes the next slot, sleeps until it is due if it is early, and measures latency from
//! the slot's due time, not from when it actually sent. When the server falls behind, workers
//! fall behind the schedule and that wait is counted: coordinated omission cannot hide queueing.
//! Slots still unsent when the duration ends are reported as `unsent`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use hyper::body::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

use crate::args::QuantityRange;
use crate::client::{self, Answer, Conn, Target};
use crate::setup::{Buyer, CreatedEvent};
use crate::stats::{Op, Outcome, Sample};

/// How requests arrive.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Model {
    /// A fixed arrival rate (requests per second), latency from the intended send time.
    Open { rate: f64 },
    /// Every connection sends its next request as soon as the last one is answered.
    Closed,
}

/// The shape of the load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadSpec {
    pub model: Model,
    pub connections: usize,
    #[serde(with = "secs_f64")]
    pub duration: Duration,
    pub quantity: QuantityRange,
    /// Share of placed holds released again (each release is a request of its own).
    pub release_ratio: f64,
    /// Share of the other placed holds ordered (`POST /v1/orders`, a request of its own);
    /// Holdfast only: the baselines have no orders.
    #[serde(default)]
    pub order_ratio: f64,
    #[serde(with = "secs_f64")]
    pub timeout: Duration,
    pub ticket_type: String,
}

mod secs_f64 {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Who the load is for.
#[derive(Clone, Debug)]
pub struct Plan {
    pub target: Target,
    pub events: Vec<CreatedEvent>,
    pub buyers: Vec<Buyer>,
}

/// Whether a placed hold was released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Released {
    No,
    Yes,
    /// The release got no clear answer: it may or may not have happened.
    Unknown,
}

/// A hold the server answered 201 for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedHold {
    pub id: String,
    pub event: u32,
    pub buyer: u32,
    pub quantity: u32,
    pub released: Released,
    /// The order placed for this hold (`POST /v1/orders` answered 201).
    pub order: Option<String>,
}

/// A hold request without a clear answer (timeout, 5xx): its seats may or may not be held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownHold {
    pub event: u32,
    pub quantity: u32,
}

/// Everything a run produced, before any arithmetic.
#[derive(Debug, Default)]
pub struct RunOutput {
    pub samples: Vec<Sample>,
    pub placed: Vec<PlacedHold>,
    pub unknown: Vec<UnknownHold>,
    /// Non-2xx answers and failures by kind (`409 sold-out`, `503 overloaded`, `timeout`).
    pub outcomes: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// Open model: slots that were due before the end but never sent.
    pub unsent: u64,
}

/// What an answer means for the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub outcome: Outcome,
    /// `None` for a success, else the key of the outcome table.
    pub kind: Option<String>,
    /// True when the request certainly changed nothing (4xx, or 503 `overloaded`: refused at
    /// the door). False means it may have taken effect.
    pub certainly_not_applied: bool,
}

/// Classifies an HTTP answer to `op`.
pub fn classify(op: Op, status: u16, body: &[u8]) -> Classified {
    let success = match op {
        Op::Hold => status == 201,
        Op::Release => status == 204,
        Op::Order => status == 201 || status == 200,
    };
    if success {
        return Classified {
            outcome: Outcome::Ok,
            kind: None,
            certainly_not_applied: false,
        };
    }
    let slug = client::problem_slug(body);
    let kind = match &slug {
        Some(slug) => format!("{status} {slug}"),
        None => status.to_string(),
    };
    let refused = status == 409 && matches!(slug.as_deref(), Some("sold-out" | "limit-exceeded"));
    let not_applied =
        (400..500).contains(&status) || (status == 503 && slug.as_deref() == Some("overloaded"));
    Classified {
        outcome: if refused {
            Outcome::Refused
        } else {
            Outcome::Error
        },
        kind: Some(kind),
        certainly_not_applied: not_applied,
    }
}

/// Live counters for the progress bar.
#[derive(Debug, Default)]
struct Live {
    ok: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

struct Shared {
    spec: LoadSpec,
    plan: Plan,
    hold_paths: Vec<String>,
    /// Request bodies by quantity − `spec.quantity.min`.
    hold_bodies: Vec<Bytes>,
    start: Instant,
    end: Instant,
    next_slot: AtomicU64,
    sent: AtomicU64,
    live: Live,
}

#[derive(Default)]
struct WorkerOutput {
    samples: Vec<Sample>,
    placed: Vec<PlacedHold>,
    unknown: Vec<UnknownHold>,
    outcomes: BTreeMap<String, u64>,
}

pub fn hold_body(ticket_type: &str, quantity: u32) -> Bytes {
    Bytes::from(
        serde_json::json!({"items": [{"ticket_type": ticket_type, "quantity": quantity}]})
            .to_string(),
    )
}

/// Runs the load and returns what happened. Connections are opened before the clock starts.
pub async fn execute(spec: LoadSpec, plan: Plan, progress: bool) -> anyhow::Result<RunOutput> {
    anyhow::ensure!(!plan.events.is_empty(), "no events to load");
    anyhow::ensure!(spec.connections > 0, "at least one connection");
    if let Model::Open { rate } = spec.model {
        anyhow::ensure!(rate > 0.0 && rate.is_finite(), "the rate must be positive");
    }
    let mut conns = Vec::with_capacity(spec.connections);
    for _ in 0..spec.connections {
        let mut conn = Conn::new(plan.target.clone());
        conn.connect()
            .await
            .map_err(|e| anyhow::anyhow!("opening a connection to {}: {e}", plan.target.addr))?;
        conns.push(conn);
    }
    let hold_paths = plan
        .events
        .iter()
        .map(|e| format!("/v1/events/{}/holds", e.id))
        .collect();
    let hold_bodies = (spec.quantity.min..=spec.quantity.max)
        .map(|q| hold_body(&spec.ticket_type, q))
        .collect();
    let start = Instant::now();
    let shared = Arc::new(Shared {
        end: start + spec.duration,
        start,
        spec,
        plan,
        hold_paths,
        hold_bodies,
        next_slot: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        live: Live::default(),
    });
    let bar = progress.then(|| progress_bar(shared.spec.duration));
    let ticker = bar.clone().map(|bar| {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(250));
            loop {
                every.tick().await;
                let elapsed = shared.start.elapsed();
                let ok = shared.live.ok.load(Ordering::Relaxed);
                bar.set_position(elapsed.as_millis().min(u128::from(u64::MAX)) as u64);
                bar.set_message(format!(
                    "{ok} ok ({:.0}/s), {} refused, {} errors",
                    ok as f64 / elapsed.as_secs_f64().max(0.001),
                    shared.live.refused.load(Ordering::Relaxed),
                    shared.live.errors.load(Ordering::Relaxed),
                ));
            }
        })
    });
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(index, conn)| tokio::spawn(worker(index, Arc::clone(&shared), conn)))
        .collect();
    let mut output = RunOutput::default();
    for worker in workers {
        let w = worker.await?;
        output.samples.extend(w.samples);
        output.placed.extend(w.placed);
        output.unknown.extend(w.unknown);
        for (kind, n) in w.outcomes {
            *output.outcomes.entry(kind).or_default() += n;
        }
    }
    output.elapsed = shared.start.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Model::Open { rate } = shared.spec.model {
        let due = (rate * shared.spec.duration.as_secs_f64()).ceil() as u64;
        output.unsent = due.saturating_sub(shared.sent.load(Ordering::Relaxed));
    }
    output.samples.sort_unstable_by_key(|s| s.at_ms);
    Ok(output)
}

fn progress_bar(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(duration.as_millis().min(u128::from(u64::MAX)) as u64),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

async fn worker(index: usize, shared: Arc<Shared>, mut conn: Conn) -> WorkerOutput {
    let spec = &shared.spec;
    let plan = &shared.plan;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed ^ index as u64);
    let mut out = WorkerOutput::default();
    // Indices into `out.placed` of holds to release with this worker's next requests.
    let mut to_release: VecDeque<usize> = VecDeque::new();
    // Indices into `out.placed` of holds to order with this worker's next requests.
    let mut to_order: VecDeque<usize> = VecDeque::new();
    loop {
        let intended = match spec.model {
            Model::Open { rate } => {
                let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
                let due = shared.start + Duration::from_secs_f64(slot as f64 / rate);
                if due >= shared.end || Instant::now() >= shared.end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            Model::Closed => {
                let now = Instant::now();
                if now >= shared.end {
                    break;
                }
                now
            }
        };
        shared.sent.fetch_add(1, Ordering::Relaxed);
        let (op, result, pending) = if let Some(placed) = to_release.pop_front() {
            let hold = &out.placed[placed];
            let buyer = &plan.buyers[hold.buyer as usize];
            let path = format!("/v1/holds/{}", hold.id);
            let result = conn
                .send(Method::DELETE, &path, Some(&buyer.auth), None, spec.timeout)
                .await;
            (Op::Release, result, Pending::Release(placed))
        } else if let Some(placed) = to_order.pop_front() {
            let hold = &out.placed[placed];
            let buyer = &plan.buyers[hold.buyer as usize];
            let body = Bytes::from(format!("{{\"hold_id\":\"{}\"}}", hold.id));
            let result = conn
                .send(
                    Method::POST,
                    "/v1/orders",
                    Some(&buyer.auth),
                    Some(body),
                    spec.timeout,
                )
                .await;
            (Op::Order, result, Pending::Order(placed))
        } else {
            let event = rng.gen_range(0..plan.events.len());
            let buyer = rng.gen_range(0..plan.buyers.len());
            let quantity = spec.quantity.pick(&mut rng);
            let body = shared.hold_bodies[(quantity - spec.quantity.min) as usize].clone();
            let result = conn
                .send(
                    Method::POST,
                    &shared.hold_paths[event],
                    Some(&plan.buyers[buyer].auth),
                    Some(body),
                    spec.timeout,
                )
                .await;
            (
                Op::Hold,
                result,
                Pending::Hold {
                    event: event as u32,
                    buyer: buyer as u32,
                    quantity,
                },
            )
        };
        let latency = intended.elapsed();
        let classified = match &result {
            Ok(Answer { status, body }) => classify(op, status.as_u16(), body),
            Err(e) => Classified {
                outcome: Outcome::Error,
                kind: Some(e.kind().to_owned()),
                certainly_not_applied: matches!(e, client::Error::Connect(_)),
            },
        };
        match classified.outcome {
            Outcome::Ok => shared.live.ok.fetch_add(1, Ordering::Relaxed),
            Outcome::Refused => shared.live.refused.fetch_add(1, Ordering::Relaxed),
            Outcome::Error => shared.live.errors.fetch_add(1, Ordering::Relaxed),
        };
        if let Some(kind) = &classified.kind {
            *out.outcomes.entry(kind.clone()).or_default() += 1;
        }
        match pending {
            Pending::Hold {
                event,
                buyer,
                quantity,
            } => match (&classified.outcome, &result) {
                (Outcome::Ok, Ok(answer)) => match client::extract_id(&answer.body) {
                    Some(id) => {
                        out.placed.push(PlacedHold {
                            id: id.to_owned(),
                            event,
                            buyer,
                            quantity,
                            released: Released::No,
                            order: None,
                        });
                        if rng.gen_bool(spec.release_ratio) {
                            to_release.push_back(out.placed.len() - 1);
                        } else if spec.order_ratio > 0.0 && rng.gen_bool(spec.order_ratio) {
                            to_order.push_back(out.placed.len() - 1);
                        }
                    }
                    None => {
                        *out.outcomes.entry("201 without id".to_owned()).or_default() += 1;
                    }
                },
                _ if !classified.certainly_not_applied && classified.outcome == Outcome::Error => {
                    out.unknown.push(UnknownHold { event, quantity });
                }
                _ => {}
            },
            Pending::Order(placed) => {
                if let (Outcome::Ok, Ok(answer)) = (&classified.outcome, &result) {
                    out.placed[placed].order = client::extract_id(&answer.body).map(str::to_owned);
                }
            }
            Pending::Release(placed) => {
                out.placed[placed].released = match classified.outcome {
                    Outcome::Ok => Released::Yes,
                    _ if classified.certainly_not_applied => Released::No,
                    _ => Released::Unknown,
                };
            }
        }
        out.samples.push(Sample {
            at_ms: u32::try_from(intended.duration_since(shared.start).as_millis())
                .unwrap_or(u32::MAX),
            latency_us: u32::try_from(latency.as_micros()).unwrap_or(u32::MAX),
            op,
            outcome: classified.outcome,
        });
    }
    out
}

enum Pending {
    Hold {
        event: u32,
        buyer: u32,
        quantity: u32,
    },
    Release(usize),
    Order(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        let ok = classify(Op::Hold, 201, b"{}");
        assert_eq!((ok.outcome, ok.kind), (Outcome::Ok, None));
        let sold_out = classify(Op::Hold, 409, br#"{"type":"/problems/sold-out"}"#);
        assert_eq!(sold_out.outcome, Outcome::Refused);
        assert_eq!(sold_out.kind.as_deref(), Some("409 sold-out"));
        assert!(sold_out.certainly_not_applied);
        let overloaded = classify(Op::Hold, 503, br#"{"type":"/problems/overloaded"}"#);
        assert_eq!(overloaded.outcome, Outcome::Error);
        assert!(overloaded.certainly_not_applied);
        let timeout = classify(Op::Hold, 504, br#"{"type":"/problems/timeout"}"#);
        assert_eq!(timeout.kind.as_deref(), Some("504 timeout"));
        assert!(
            !timeout.certainly_not_applied,
            "a 504 may have taken effect"
        );
        assert_eq!(classify(Op::Release, 204, b"").outcome, Outcome::Ok);
        assert_eq!(classify(Op::Release, 201, b"").outcome, Outcome::Error);
        assert_eq!(classify(Op::Hold, 500, b"").kind.as_deref(), Some("500"));
    }

    #[test]
    fn hold_bodies_are_api_json() {
        let body: serde_json::Value = serde_json::from_slice(&hold_body("GA", 3)).expect("json");
        assert_eq!(body["items"][0]["ticket_type"], "GA");
        assert_eq!(body["items"][0]["quantity"], 3);
    }
}
