//! What a run reports: the result JSON, the text table with ratios, and a self-contained HTML
//! page (inline SVG, no scripts) with throughput and latency over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::audit::AuditReport;
use crate::cpu::CpuReport;
use crate::load::{LoadSpec, Model, RunOutput};
use crate::stats::{self, LatencySummary, Op, Outcome, Second};

/// Everything known about one run, as written to `--out`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    /// What was loaded: `holdfast-sync`, `baseline-pg`, or the `--label` of a run.
    pub target: String,
    pub spec: LoadSpec,
    pub events: usize,
    pub users: usize,
    pub elapsed_s: f64,
    pub requests: u64,
    /// Holds answered 201.
    pub holds_ok: u64,
    /// Holds answered 409 `sold-out` / `limit-exceeded`.
    pub holds_refused: u64,
    pub releases_ok: u64,
    /// Orders answered 201 (or 200: the hold's order existed).
    #[serde(default)]
    pub orders_ok: u64,
    pub errors: u64,
    pub unsent: u64,
    /// Holds placed (201) per second of the run.
    pub holds_per_sec: f64,
    /// Every answer that was not an error, per second.
    pub answered_per_sec: f64,
    /// Latency per operation (`hold`, `release`) and of all answered requests (`all`).
    pub latency: BTreeMap<String, LatencySummary>,
    /// Non-2xx answers and failures by kind.
    pub outcomes: BTreeMap<String, u64>,
    pub timeline: Vec<Second>,
    pub audit: AuditReport,
    /// `/proc/loadavg` (1-minute) just before the load and just after: other work on the machine
    /// shows here.
    #[serde(default)]
    pub loadavg_before: Option<f64>,
    #[serde(default)]
    pub loadavg_after: Option<f64>,
    /// CPU of the server processes (and PostgreSQL or Redis when in use) over the load window,
    /// per answered hold, release or order.
    #[serde(default)]
    pub cpu: Option<CpuReport>,
}

/// The 1-minute load average, where the system tells it.
pub fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl RunResult {
    pub fn from_output(
        target: &str,
        spec: &LoadSpec,
        events: usize,
        users: usize,
        output: &RunOutput,
        audit: AuditReport,
    ) -> Self {
        let count = |op: Op, outcome: Outcome| {
            output
                .samples
                .iter()
                .filter(|s| s.op == op && s.outcome == outcome)
                .count() as u64
        };
        let errors = output
            .samples
            .iter()
            .filter(|s| s.outcome == Outcome::Error)
            .count() as u64;
        let requests = output.samples.len() as u64;
        let elapsed_s = output.elapsed.as_secs_f64();
        // Rates over the planned duration: answers that trickle in after it are not extra
        // throughput (each worker finishes at most one request late).
        let window = spec.duration.as_secs_f64();
        let holds_ok = count(Op::Hold, Outcome::Ok);
        Self {
            target: target.to_owned(),
            spec: spec.clone(),
            events,
            users,
            elapsed_s,
            requests,
            holds_ok,
            holds_refused: count(Op::Hold, Outcome::Refused),
            releases_ok: count(Op::Release, Outcome::Ok),
            orders_ok: count(Op::Order, Outcome::Ok),
            errors,
            unsent: output.unsent,
            holds_per_sec: stats::per_sec(holds_ok, window),
            answered_per_sec: stats::per_sec(requests - errors, window),
            latency: stats::latency_by_op(&output.samples),
            outcomes: output.outcomes.clone(),
            timeline: stats::timeline(&output.samples, spec.duration.as_secs_f64().ceil() as u32),
            audit,
            loadavg_before: None,
            loadavg_after: None,
            cpu: None,
        }
    }

    /// Holds, releases and orders answered: what the CPU per operation is divided by.
    pub fn ops_ok(&self) -> u64 {
        self.holds_ok + self.releases_ok + self.orders_ok
    }

    pub fn cpu_us_per_op(&self) -> Option<f64> {
        self.cpu.as_ref().and_then(|c| c.us_per_op)
    }

    pub fn hold_latency(&self) -> LatencySummary {
        self.latency.get("hold").cloned().unwrap_or_default()
    }

    pub fn model_text(&self) -> String {
        match self.spec.model {
            Model::Open { rate } => format!("open {rate:.0}/s"),
            Model::Closed => format!("closed {} conns", self.spec.connections),
        }
    }
}

/// One line of `compare --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareRow {
    pub target: String,
    pub holds_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub oversold: u64,
    /// Server CPU (with PostgreSQL or Redis when in use) per answered operation, µs.
    #[serde(default)]
    pub cpu_us_per_op: Option<f64>,
}

impl From<&RunResult> for CompareRow {
    fn from(r: &RunResult) -> Self {
        let latency = r.hold_latency();
        Self {
            target: r.target.clone(),
            holds_per_sec: round2(r.holds_per_sec),
            p50_ms: round3(latency.p50_ms),
            p99_ms: round3(latency.p99_ms),
            errors: r.errors,
            oversold: r.audit.oversold_seats,
            cpu_us_per_op: r.cpu_us_per_op().map(round2),
        }
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `a / b` as a ratio, or `None` when `b` is zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

pub fn is_baseline(target: &str) -> bool {
    target.starts_with("baseline-")
}

/// Ratios of every non-baseline run's holds/s to every baseline's: `(run, baseline, ratio)`.
pub fn ratios(runs: &[RunResult]) -> Vec<(String, String, Option<f64>)> {
    let mut out = Vec::new();
    for run in runs.iter().filter(|r| !is_baseline(&r.target)) {
        for base in runs.iter().filter(|r| is_baseline(&r.target)) {
            out.push((
                run.target.clone(),
                base.target.clone(),
                ratio(run.holds_per_sec, base.holds_per_sec),
            ));
        }
    }
    out
}

fn audit_text(audit: &AuditReport) -> String {
    match (&audit.skipped, audit.ok) {
        (Some(why), _) => format!("skipped ({why})"),
        (None, true) if audit.sampled => format!("ok ({} holds sampled)", audit.holds_checked),
        (None, true) => format!("ok ({} holds)", audit.holds_checked),
        (None, false) => format!("FAILED ({} violations)", audit.violations_total),
    }
}

/// The comparison as a plain-text table, then the ratios.
pub fn text_table(runs: &[RunResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:>18} {:>11} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10}  audit",
        "target",
        "model",
        "holds/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "oversold",
        "CPU µs/op"
    );
    for r in runs {
        let l = r.hold_latency();
        let _ = writeln!(
            out,
            "{:<24} {:>18} {:>11.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>8} {:>10}  {}{}",
            r.target,
            r.model_text(),
            r.holds_per_sec,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            r.errors,
            r.audit.oversold_seats,
            r.cpu_us_per_op()
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}")),
            audit_text(&r.audit),
            load_text(r)
        );
    }
    let ratios = ratios(runs);
    if !ratios.is_empty() {
        out.push('\n');
        for (run, base, ratio) in ratios {
            match ratio {
                Some(x) => {
                    let _ = writeln!(out, "{run} / {base}: {x:.2}x");
                }
                None => {
                    let _ = writeln!(out, "{run} / {base}: n/a (baseline placed no holds)");
                }
            }
        }
    }
    out
}

/// `; load 1.2→3.4` when the load average was read.
fn load_text(r: &RunResult) -> String {
    match (r.loadavg_before, r.loadavg_after) {
        (Some(a), Some(b)) => format!("; load {a:.1}→{b:.1}"),
        _ => String::new(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The smallest 1, 2 or 5 × 10^k at or above `value` (a chart's top).
pub fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&v| v >= value * 0.999_999)
        .unwrap_or(10.0 * magnitude)
}

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// One line of a chart.
#[derive(Debug)]
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// A line chart as inline SVG: x in seconds, y from 0 to a nice ceiling.
pub fn svg_chart(title: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 300.0, 70.0, 170.0, 30.0, 40.0);
    let plot_w = w - left - right;
    let plot_h = h - top - bottom;
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let y_max = nice_ceiling(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max),
    );
    let sx = |x: f64| left + x / x_max * plot_w;
    let sy = |y: f64| top + plot_h - (y / y_max).min(1.0) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<text x="{left}" y="18" font-size="13" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for i in 0..=5 {
        let y = y_max * f64::from(i) / 5.0;
        let py = sy(y);
        let _ = write!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            py + 4.0,
            axis_number(y)
        );
    }
    let x_step = nice_ceiling(x_max / 8.0);
    let mut x = 0.0;
    while x <= x_max + 1e-9 {
        let px = sx(x);
        let _ = write!(
            svg,
            r##"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="#999"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 4.0,
            top + plot_h + 16.0,
            axis_number(x)
        );
        x += x_step;
    }
    let _ = write!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#666"/><text x="{:.1}" y="{:.1}" text-anchor="middle">seconds</text><text transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
        left + plot_w / 2.0,
        h - 6.0,
        top + plot_h / 2.0,
        escape(y_label)
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"/>"#,
            s.color,
            points.join(" ")
        );
        let ly = top + 10.0 + 16.0 * i as f64;
        let lx = left + plot_w + 10.0;
        let _ = write!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 18.0,
            s.color,
            lx + 22.0,
            ly + 4.0,
            escape(&s.name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn axis_number(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Series of one value per second of every run, x at the middle of its second.
fn per_second(
    runs: &[RunResult],
    value: impl Fn(&Second) -> f64,
    suffix: &str,
    dashed: bool,
) -> Vec<Series> {
    runs.iter()
        .enumerate()
        .map(|(i, r)| Series {
            name: format!("{}{suffix}", r.target),
            color: COLORS[i % COLORS.len()],
            dashed,
            points: r
                .timeline
                .iter()
                .map(|s| (f64::from(s.t) + 0.5, value(s)))
                .collect(),
        })
        .collect()
}

/// The HTML report of one or more runs. `notes` are shown under the title, as given.
pub fn html(title: &str, notes: &[String], runs: &[RunResult]) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{0}</title><style>\
         body{{font-family:sans-serif;margin:24px;max-width:1100px;color:#222}}\
         table{{border-collapse:collapse;margin:12px 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
         th{{background:#f3f3f3}}td:first-child,th:first-child{{text-align:left}}.bad{{color:#b00;font-weight:bold}}\
         .ok{{color:#070}}code{{background:#f6f6f6;padding:1px 3px}}</style></head><body><h1>{0}</h1>",
        escape(title)
    );
    for note in notes {
        let _ = write!(page, "<p>{}</p>", escape(note));
    }
    page.push_str("<h2>Results</h2><table><tr><th>target</th><th>model</th><th>holds/s</th><th>answered/s</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>holds 201</th><th>409 refused</th><th>releases</th><th>orders</th><th>errors</th><th>unsent</th><th>oversold</th><th>CPU µs/op</th><th>audit</th><th>load avg</th></tr>");
    for r in runs {
        let l = r.hold_latency();
        let class = if r.audit.ok { "ok" } else { "bad" };
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td><td>{}</td></tr>",
            escape(&r.target),
            escape(&r.model_text()),
            r.holds_per_sec,
            r.answered_per_sec,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            r.holds_ok,
            r.holds_refused,
            r.releases_ok,
            r.orders_ok,
            r.errors,
            r.unsent,
            r.audit.oversold_seats,
            r.cpu
                .as_ref()
                .map_or_else(|| "-".to_owned(), |c| escape(&c.text())),
            escape(&audit_text(&r.audit)),
            escape(load_text(r).trim_start_matches("; load "))
        );
    }
    page.push_str("</table>");
    let ratios = ratios(runs);
    if !ratios.is_empty() {
        page.push_str(
            "<h2>Ratios (holds/s)</h2><table><tr><th>run</th><th>baseline</th><th>ratio</th></tr>",
        );
        for (run, base, ratio) in ratios {
            let text = ratio.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}×"));
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{text}</td></tr>",
                escape(&run),
                escape(&base)
            );
        }
        page.push_str("</table>");
    }
    page.push_str("<h2>Over time</h2>");
    page.push_str(&svg_chart(
        "Holds placed per second",
        "holds/s",
        &per_second(runs, |s| s.holds_ok as f64, "", false),
    ));
    let mut latency = per_second(runs, |s| s.p99_ms, " p99", false);
    latency.extend(per_second(runs, |s| s.p50_ms, " p50", true));
    page.push_str(&svg_chart(
        "Latency per second (answered requests)",
        "ms",
        &latency,
    ));
    page.push_str("<h2>Answers other than 201/204</h2><table><tr><th>target</th><th>kind</th><th>count</th></tr>");
    for r in runs {
        for (kind, n) in &r.outcomes {
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{n}</td></tr>",
                escape(&r.target),
                escape(kind)
            );
        }
    }
    page.push_str("</table><h2>Audit</h2>");
    for r in runs {
        let _ = write!(
            page,
            "<p><b>{}</b>: {}; {} holds acknowledged, {} read back{}, {} failed.</p>",
            escape(&r.target),
            escape(&audit_text(&r.audit)),
            r.audit.holds_acknowledged,
            r.audit.holds_checked,
            if r.audit.sampled {
                " (random sample)"
            } else {
                ""
            },
            r.audit.holds_failed
        );
        if !r.audit.events.is_empty() {
            page.push_str("<table><tr><th>event</th><th>capacity</th><th>available</th><th>held</th><th>sold</th><th>expected held</th></tr>");
            for e in r.audit.events.iter().take(20) {
                let _ = write!(
                    page,
                    "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}–{}</td></tr>",
                    escape(&e.event_id),
                    e.stock.capacity,
                    e.stock.available,
                    e.stock.held,
                    e.stock.sold,
                    e.expected_held.min,
                    e.expected_held.max
                );
            }
            page.push_str("</table>");
        }
        for v in &r.audit.violations {
            let _ = write!(page, "<p class=\"bad\">{}</p>", escape(v));
        }
    }
    page.push_str("</body></html>\n");
    page
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::args::QuantityRange;
    use crate::stats::Sample;

    fn spec() -> LoadSpec {
        LoadSpec {
            model: Model::Closed,
            connections: 4,
            duration: Duration::from_secs(2),
            quantity: QuantityRange::fixed(1),
            release_ratio: 0.0,
            order_ratio: 0.0,
            timeout: Duration::from_secs(1),
            ticket_type: "GA".to_owned(),
        }
    }

    fn result(target: &str, holds: u64) -> RunResult {
        let samples = (0..holds)
            .map(|i| Sample {
                at_ms: (i * 10) as u32,
                latency_us: 1000,
                op: Op::Hold,
                outcome: Outcome::Ok,
            })
            .collect();
        let output = RunOutput {
            samples,
            elapsed: Duration::from_secs(2),
            ..RunOutput::default()
        };
        RunResult::from_output(target, &spec(), 1, 1, &output, AuditReport::skipped("test"))
    }

    #[test]
    fn rates_are_over_the_planned_duration() {
        let r = result("holdfast-sync", 100);
        assert_eq!(r.holds_ok, 100);
        assert!((r.holds_per_sec - 50.0).abs() < 1e-9);
        assert_eq!(r.timeline.len(), 2);
        let row = CompareRow::from(&r);
        assert_eq!(row.target, "holdfast-sync");
        assert!((row.p50_ms - 1.0).abs() < 0.01);
    }

    #[test]
    fn ratios_pair_runs_with_baselines() {
        let runs = [
            result("holdfast-sync", 100),
            result("baseline-pg", 10),
            result("baseline-noop", 0),
        ];
        let r = ratios(&runs);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1, "baseline-pg");
        assert!((r[0].2.unwrap_or_default() - 10.0).abs() < 1e-9);
        assert_eq!(r[1].2, None);
        let table = text_table(&runs);
        assert!(
            table.contains("holdfast-sync / baseline-pg: 10.00x"),
            "{table}"
        );
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(12_000.0), 20_000.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
        assert_eq!(nice_ceiling(50.0), 50.0);
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let mut runs = vec![result("holdfast-sync", 100), result("baseline-pg", 10)];
        runs[0].outcomes.insert("503 <overloaded>".to_owned(), 1);
        let page = html("Run <1>", &["note & more".to_owned()], &runs);
        assert!(page.contains("<svg"));
        assert!(page.contains("Run &lt;1&gt;"));
        assert!(page.contains("note &amp; more"));
        assert!(page.contains("503 &lt;overloaded&gt;"));
        assert!(!page.contains("<script"), "no scripts");
        assert!(!page.contains("https://"), "nothing from the network");
    }
}
