//! Latency and throughput arithmetic over the raw samples of a run: HDR histograms, percentile
//! summaries and the per-second timeline. Pure functions only.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs to 60 s, to 3 significant digits.
pub const LATENCY_MAX_US: u64 = 60_000_000;

/// What a request did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Hold,
    Release,
    /// `POST /v1/orders` for a placed hold.
    Order,
}

/// How a request ended, coarsely; the error table keeps the details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 201 hold placed, 204 released.
    Ok,
    /// 409 `sold-out` or `limit-exceeded`: a correct answer in a flash sale, not a failure.
    Refused,
    /// Anything else: 5xx, 503 `overloaded`, other 4xx, timeouts, connection errors.
    Error,
}

/// One finished request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Intended send time, milliseconds after the start of the run.
    pub at_ms: u32,
    /// From the intended send time (open model) or the actual one (closed model) to the end of
    /// the answer.
    pub latency_us: u32,
    pub op: Op,
    pub outcome: Outcome,
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static bounds are valid")
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: histogram.len(),
        mean_ms: histogram.mean() / 1000.0,
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
    }
}

/// Histograms of the answered requests (errors excluded: a refused connection is fast and says
/// nothing about the engine) per operation, and of every request together.
pub fn latency_by_op(samples: &[Sample]) -> BTreeMap<String, LatencySummary> {
    let mut by_op: BTreeMap<String, Histogram<u64>> = BTreeMap::new();
    let mut all = new_histogram();
    for s in samples.iter().filter(|s| s.outcome != Outcome::Error) {
        let name = match s.op {
            Op::Hold => "hold",
            Op::Release => "release",
            Op::Order => "order",
        };
        let value = u64::from(s.latency_us.max(1));
        by_op
            .entry(name.to_owned())
            .or_insert_with(new_histogram)
            .saturating_record(value);
        all.saturating_record(value);
    }
    let mut out: BTreeMap<String, LatencySummary> = by_op
        .iter()
        .map(|(k, h)| (k.clone(), summarize(h)))
        .collect();
    out.insert("all".to_owned(), summarize(&all));
    out
}

/// One second of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the start.
    pub t: u32,
    pub holds_ok: u64,
    pub holds_refused: u64,
    pub releases_ok: u64,
    #[serde(default)]
    pub orders_ok: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Counts and latency percentiles per second of intended send time, for `seconds` seconds
/// (samples past the end fall into the last second).
pub fn timeline(samples: &[Sample], seconds: u32) -> Vec<Second> {
    let seconds = seconds.max(1);
    let mut rows: Vec<(Second, Histogram<u64>)> = (0..seconds)
        .map(|t| {
            (
                Second {
                    t,
                    ..Second::default()
                },
                new_histogram(),
            )
        })
        .collect();
    for s in samples {
        let index = (s.at_ms / 1000).min(seconds - 1) as usize;
        let (row, histogram) = &mut rows[index];
        match (s.op, s.outcome) {
            (_, Outcome::Error) => row.errors += 1,
            (Op::Hold, Outcome::Ok) => row.holds_ok += 1,
            (Op::Hold, Outcome::Refused) => row.holds_refused += 1,
            (Op::Release, _) => row.releases_ok += 1,
            (Op::Order, _) => row.orders_ok += 1,
        }
        if s.outcome != Outcome::Error {
            histogram.saturating_record(u64::from(s.latency_us.max(1)));
        }
    }
    rows.into_iter()
        .map(|(mut row, histogram)| {
            let summary = summarize(&histogram);
            row.p50_ms = summary.p50_ms;
            row.p99_ms = summary.p99_ms;
            row.max_ms = summary.max_ms;
            row
        })
        .collect()
}

/// `count` events over `secs` seconds.
pub fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u32, latency_us: u32, op: Op, outcome: Outcome) -> Sample {
        Sample {
            at_ms,
            latency_us,
            op,
            outcome,
        }
    }

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            h.record(us).expect("in range");
        }
        let s = summarize(&h);
        assert_eq!(s.count, 10_000);
        // 3 significant digits: within 0.1 % of the exact value.
        assert!((s.p50_ms - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.p99_ms - 9.9).abs() < 0.01, "{s:?}");
        assert!((s.max_ms - 10.0).abs() < 0.01, "{s:?}");
        assert!(s.p50_ms <= s.p90_ms && s.p90_ms <= s.p99_ms && s.p99_ms <= s.p999_ms);
        assert_eq!(summarize(&new_histogram()), LatencySummary::default());
    }

    #[test]
    fn errors_are_counted_but_not_timed() {
        let samples = [
            sample(0, 1000, Op::Hold, Outcome::Ok),
            sample(10, 3000, Op::Hold, Outcome::Refused),
            sample(20, 5_000_000, Op::Hold, Outcome::Error),
            sample(30, 2000, Op::Release, Outcome::Ok),
        ];
        let by_op = latency_by_op(&samples);
        assert_eq!(by_op["hold"].count, 2);
        assert_eq!(by_op["release"].count, 1);
        assert_eq!(by_op["all"].count, 3);
        assert!((by_op["all"].max_ms - 3.0).abs() < 0.01);
    }

    #[test]
    fn timeline_buckets_by_intended_second() {
        let samples = [
            sample(0, 1000, Op::Hold, Outcome::Ok),
            sample(999, 1000, Op::Hold, Outcome::Refused),
            sample(1000, 4000, Op::Release, Outcome::Ok),
            sample(1500, 10, Op::Hold, Outcome::Error),
            sample(9000, 1000, Op::Hold, Outcome::Ok),
        ];
        let rows = timeline(&samples, 2);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].holds_ok, rows[0].holds_refused), (1, 1));
        assert_eq!(
            (rows[1].releases_ok, rows[1].errors, rows[1].holds_ok),
            (1, 1, 1)
        );
        assert!((rows[0].p50_ms - 1.0).abs() < 0.01);
        assert!((rows[1].max_ms - 4.0).abs() < 0.01);
        assert_eq!(per_sec(10, 2.0), 5.0);
        assert_eq!(per_sec(10, 0.0), 0.0);
    }
}
