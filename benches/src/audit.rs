//! The audit after every run: read back the stock of every event and every hold the server
//! acknowledged (a random sample when there are many), and check that nothing was oversold,
//! stock is conserved and no acknowledged hold went missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::client::Conn;
use crate::load::{PlacedHold, Plan, Released, RunOutput};

/// Violations listed in full at most; the counters keep counting.
const VIOLATIONS_LISTED_MAX: usize = 50;

/// One ticket type's stock as the server reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    pub capacity: u64,
    pub available: u64,
    pub held: u64,
    pub sold: u64,
}

/// Seats this run's acknowledged holds account for: at least `min`, at most `max` (the
/// difference is requests without a clear answer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    pub min: u64,
    pub max: u64,
}

/// The expected held seats per event from what the server answered.
pub fn expected_held(output: &RunOutput, events: usize) -> Vec<Expected> {
    let mut expected = vec![Expected::default(); events];
    for hold in &output.placed {
        let e = &mut expected[hold.event as usize];
        let q = u64::from(hold.quantity);
        match hold.released {
            Released::No => {
                e.min += q;
                e.max += q;
            }
            Released::Unknown => e.max += q,
            Released::Yes => {}
        }
    }
    for unknown in &output.unknown {
        expected[unknown.event as usize].max += u64::from(unknown.quantity);
    }
    expected
}

/// Seats held or sold beyond capacity.
pub fn oversold(stock: &Stock) -> u64 {
    (stock.held + stock.sold).saturating_sub(stock.capacity)
}

/// Every rule one event's stock must obey after the run.
pub fn check_stock(event: &str, capacity: u64, stock: &Stock, expected: Expected) -> Vec<String> {
    let mut violations = Vec::new();
    if stock.capacity != capacity {
        violations.push(format!(
            "event {event}: capacity {} but {capacity} was created",
            stock.capacity
        ));
    }
    let over = oversold(stock);
    if over > 0 {
        violations.push(format!(
            "event {event}: OVERSOLD by {over} seats: {stock:?}"
        ));
    }
    if stock.available + stock.held + stock.sold != stock.capacity {
        violations.push(format!(
            "event {event}: stock not conserved: available {} + held {} + sold {} != capacity {}",
            stock.available, stock.held, stock.sold, stock.capacity
        ));
    }
    if stock.held < expected.min {
        violations.push(format!(
            "event {event}: {} seats held but acknowledged holds account for at least {}: acknowledged holds were lost",
            stock.held, expected.min
        ));
    }
    if stock.held > expected.max {
        violations.push(format!(
            "event {event}: {} seats held but this run's holds account for at most {}",
            stock.held, expected.max
        ));
    }
    violations
}

/// Checks the server's answer to `GET /v1/holds/{id}` against what the run was told.
pub fn check_hold(
    expected: &PlacedHold,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), String> {
    if status != 200 {
        return Err(format!(
            "hold {}: GET answered {status}, expected 200",
            expected.id
        ));
    }
    let state = body["status"].as_str().unwrap_or("");
    let state_ok = match expected.released {
        Released::No => state == "active",
        Released::Yes => state == "released",
        Released::Unknown => state == "active" || state == "released",
    };
    if !state_ok {
        return Err(format!(
            "hold {}: status {state:?}, expected {:?} release",
            expected.id, expected.released
        ));
    }
    let seats: u64 = body["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|i| i["quantity"].as_u64()).sum())
        .unwrap_or(0);
    if seats != u64::from(expected.quantity) {
        return Err(format!(
            "hold {}: {seats} seats, expected {}",
            expected.id, expected.quantity
        ));
    }
    if body["id"].as_str() != Some(expected.id.as_str()) {
        return Err(format!("hold {}: answered another id", expected.id));
    }
    Ok(())
}

/// Checks `GET /v1/orders/{id}` of a hold's order: it exists, names the hold and waits for
/// payment (nothing pays during a run).
pub fn check_order(
    hold: &PlacedHold,
    order: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), String> {
    if status != 200 {
        return Err(format!(
            "order {order}: GET answered {status}, expected 200"
        ));
    }
    if body["hold_id"].as_str() != Some(hold.id.as_str()) {
        return Err(format!(
            "order {order}: names another hold than {}",
            hold.id
        ));
    }
    // Nobody pays in the load, so an order waits for payment; once its hold and payment window
    // have passed it reads `expired`.
    if !matches!(body["status"].as_str(), Some("pending_payment" | "expired")) {
        return Err(format!(
            "order {order}: status {}, expected pending_payment (or expired)",
            body["status"]
        ));
    }
    Ok(())
}

/// An event's stock after the run, and what the run expected.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventAudit {
    pub event_id: String,
    pub stock: Stock,
    pub expected_held: Expected,
}

/// The outcome of the audit.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AuditReport {
    pub ok: bool,
    /// Why the audit was not run, if it was not.
    pub skipped: Option<String>,
    pub events: Vec<EventAudit>,
    /// Seats held or sold beyond capacity, over all events.
    pub oversold_seats: u64,
    pub holds_acknowledged: u64,
    pub holds_checked: u64,
    /// True when only a random sample of the acknowledged holds was read back.
    pub sampled: bool,
    pub holds_failed: u64,
    pub violations: Vec<String>,
    pub violations_total: u64,
}

impl AuditReport {
    pub fn skipped(why: &str) -> Self {
        Self {
            ok: true,
            skipped: Some(why.to_owned()),
            ..Self::default()
        }
    }

    fn violation(&mut self, text: String) {
        self.violations_total += 1;
        if self.violations.len() < VIOLATIONS_LISTED_MAX {
            self.violations.push(text);
        }
    }
}

/// Picks which acknowledged holds to read back: all of them, or `max` at random.
pub fn sample_indices(total: usize, max: usize, rng: &mut impl rand::Rng) -> (Vec<usize>, bool) {
    if total <= max {
        ((0..total).collect(), false)
    } else {
        let mut picked = rand::seq::index::sample(rng, total, max).into_vec();
        picked.sort_unstable();
        (picked, true)
    }
}

fn stock_of(body: &serde_json::Value, code: &str) -> Option<Stock> {
    let line = body["ticket_types"]
        .as_array()?
        .iter()
        .find(|t| t["code"].as_str() == Some(code))?;
    Some(Stock {
        capacity: line["capacity"].as_u64()?,
        available: line["available"].as_u64()?,
        held: line["held"].as_u64()?,
        sold: line["sold"].as_u64()?,
    })
}

/// Reads back stock and holds and checks them.
pub async fn run(
    plan: &Plan,
    ticket_type: &str,
    output: &RunOutput,
    holds_max: usize,
    connections: usize,
) -> anyhow::Result<AuditReport> {
    let timeout = Duration::from_secs(30);
    let mut report = AuditReport {
        holds_acknowledged: output.placed.len() as u64,
        ..AuditReport::default()
    };
    let expected = expected_held(output, plan.events.len());
    let mut conn = Conn::new(plan.target.clone());
    for (event, expected) in plan.events.iter().zip(expected) {
        let path = format!("/v1/events/{}/availability", event.id);
        let answer = conn
            .send(Method::GET, &path, None, None, timeout)
            .await
            .with_context(|| format!("reading the availability of {}", event.id))?;
        anyhow::ensure!(
            answer.status.as_u16() == 200,
            "availability of {} answered {}",
            event.id,
            answer.status
        );
        let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
        let stock = stock_of(&body, ticket_type)
            .with_context(|| format!("availability of {} lacks {ticket_type}", event.id))?;
        report.oversold_seats += oversold(&stock);
        for v in check_stock(&event.id, u64::from(event.capacity), &stock, expected) {
            report.violation(v);
        }
        report.events.push(EventAudit {
            event_id: event.id.clone(),
            stock,
            expected_held: expected,
        });
    }

    let (indices, sampled) =
        sample_indices(output.placed.len(), holds_max, &mut rand::thread_rng());
    report.sampled = sampled;
    report.holds_checked = indices.len() as u64;
    let indices = Arc::new(indices);
    let next = Arc::new(AtomicUsize::new(0));
    let placed = Arc::new(output.placed.clone());
    let mut tasks = Vec::new();
    for _ in 0..connections.clamp(1, 64) {
        let (indices, next, placed) =
            (Arc::clone(&indices), Arc::clone(&next), Arc::clone(&placed));
        let buyers = plan.buyers.clone();
        let mut conn = Conn::new(plan.target.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&index) = indices.get(i) else { break };
                let hold = &placed[index];
                let path = format!("/v1/holds/{}", hold.id);
                let auth = &buyers[hold.buyer as usize].auth;
                let checked = match conn
                    .send(Method::GET, &path, Some(auth), None, timeout)
                    .await
                {
                    Ok(answer) => {
                        let body = serde_json::from_slice(&answer.body).unwrap_or_default();
                        check_hold(hold, answer.status.as_u16(), &body)
                    }
                    Err(e) => Err(format!("hold {}: GET failed: {e}", hold.id)),
                };
                if let Err(v) = checked {
                    failures.push(v);
                }
                if let Some(order) = &hold.order {
                    let path = format!("/v1/orders/{order}");
                    let checked = match conn
                        .send(Method::GET, &path, Some(auth), None, timeout)
                        .await
                    {
                        Ok(answer) => {
                            let body = serde_json::from_slice(&answer.body).unwrap_or_default();
                            check_order(hold, order, answer.status.as_u16(), &body)
                        }
                        Err(e) => Err(format!("order {order}: GET failed: {e}")),
                    };
                    if let Err(v) = checked {
                        failures.push(v);
                    }
                }
            }
            failures
        }));
    }
    for task in tasks {
        for failure in task.await? {
            report.holds_failed += 1;
            report.violation(failure);
        }
    }
    report.ok = report.violations_total == 0;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::UnknownHold;

    fn placed(event: u32, quantity: u32, released: Released) -> PlacedHold {
        PlacedHold {
            id: "h".to_owned(),
            event,
            buyer: 0,
            quantity,
            released,
            order: None,
        }
    }

    #[test]
    fn an_order_must_name_its_hold_and_wait_for_payment() {
        let hold = placed(0, 2, Released::No);
        let ok = serde_json::json!({"id": "o", "hold_id": "h", "status": "pending_payment"});
        assert!(check_order(&hold, "o", 200, &ok).is_ok());
        assert!(check_order(&hold, "o", 404, &ok).is_err());
        let other = serde_json::json!({"id": "o", "hold_id": "x", "status": "pending_payment"});
        assert!(check_order(&hold, "o", 200, &other).is_err());
        let paid = serde_json::json!({"id": "o", "hold_id": "h", "status": "confirmed"});
        assert!(check_order(&hold, "o", 200, &paid).is_err());
    }

    #[test]
    fn expected_seats_bracket_unclear_answers() {
        let output = RunOutput {
            placed: vec![
                placed(0, 2, Released::No),
                placed(0, 3, Released::Yes),
                placed(0, 4, Released::Unknown),
                placed(1, 1, Released::No),
            ],
            unknown: vec![UnknownHold {
                event: 1,
                quantity: 5,
            }],
            ..RunOutput::default()
        };
        let expected = expected_held(&output, 2);
        assert_eq!(expected[0], Expected { min: 2, max: 6 });
        assert_eq!(expected[1], Expected { min: 1, max: 6 });
    }

    #[test]
    fn stock_rules() {
        let exact = Expected { min: 10, max: 10 };
        let good = Stock {
            capacity: 100,
            available: 90,
            held: 10,
            sold: 0,
        };
        assert!(check_stock("e", 100, &good, exact).is_empty());
        let over = Stock {
            capacity: 100,
            available: 0,
            held: 95,
            sold: 10,
        };
        assert_eq!(oversold(&over), 5);
        let v = check_stock("e", 100, &over, Expected { min: 95, max: 95 });
        assert!(v.iter().any(|v| v.contains("OVERSOLD by 5")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("not conserved")), "{v:?}");
        let lost = Stock {
            held: 8,
            available: 92,
            ..good
        };
        let v = check_stock("e", 100, &lost, exact);
        assert!(v.iter().any(|v| v.contains("were lost")), "{v:?}");
        let extra = Stock {
            held: 12,
            available: 88,
            ..good
        };
        assert_eq!(check_stock("e", 100, &extra, exact).len(), 1);
        assert_eq!(check_stock("e", 99, &good, exact).len(), 1);
    }

    #[test]
    fn hold_rules() {
        let hold = placed(0, 2, Released::No);
        let body = serde_json::json!({"id": "h", "status": "active", "items": [{"ticket_type": "GA", "quantity": 2}]});
        assert_eq!(check_hold(&hold, 200, &body), Ok(()));
        assert!(check_hold(&hold, 404, &body).is_err());
        let released = placed(0, 2, Released::Yes);
        assert!(check_hold(&released, 200, &body).is_err());
        let unknown = placed(0, 2, Released::Unknown);
        assert_eq!(check_hold(&unknown, 200, &body), Ok(()));
        let wrong_seats = placed(0, 3, Released::No);
        assert!(check_hold(&wrong_seats, 200, &body).is_err());
    }

    #[test]
    fn samples_are_distinct_and_bounded() {
        let mut rng = rand::thread_rng();
        assert_eq!(sample_indices(3, 10, &mut rng), (vec![0, 1, 2], false));
        let (picked, sampled) = sample_indices(1000, 10, &mut rng);
        assert!(sampled);
        assert_eq!(picked.len(), 10);
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        assert!(picked.iter().all(|&i| i < 1000));
    }
}
