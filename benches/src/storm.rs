//! `holdfast-bench login-storm`: a crowd of wrong-password logins at once against a fresh
//! `holdfast serve`, with the server's memory (`/proc/<pid>/status`), `/healthz` latency and
//! correct logins measured while it lasts and after.
//!
//! Each password check is Argon2id over 19 MiB; the question is what a crowd of them does to
//! the process: how high its memory goes, whether it comes back, whether the node still answers
//! its health checks and lets real buyers in.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use hyper::Method;
use hyper::body::Bytes;
use serde::Serialize;

use crate::client::{Conn, Target, problem_slug};
use crate::compare::{command, free_port, holdfast_binary, random_secret};
use crate::cpu::process_cpu_secs;

/// What one storm does.
#[derive(Clone, Debug)]
pub struct Options {
    pub label: String,
    pub holdfast_bin: Option<PathBuf>,
    /// Concurrent wrong-password logins, each on its own connection.
    pub logins: usize,
    /// Extra `HOLDFAST_*` settings of the server.
    pub env: Vec<(String, String)>,
    /// How long to watch the memory after the storm.
    pub settle: Duration,
}

/// What a storm measured.
#[derive(Clone, Debug, Serialize)]
pub struct StormResult {
    pub label: String,
    pub logins: usize,
    pub settings: Vec<(String, String)>,
    /// Answers by status/slug: `401 invalid-credentials`, `503 overloaded`, `error` …
    pub answers: Vec<(String, usize)>,
    pub storm_secs: f64,
    pub rss_before_mib: u64,
    pub rss_peak_mib: u64,
    pub rss_end_of_storm_mib: u64,
    /// RSS `settle` seconds after the storm.
    pub rss_settled_mib: u64,
    /// Seconds after the storm until RSS was under 150 MiB (`None`: not within `settle`).
    pub secs_to_under_150_mib: Option<f64>,
    pub healthz_count: u64,
    pub healthz_p50_ms: f64,
    pub healthz_p99_ms: f64,
    pub healthz_max_ms: f64,
    /// Correct logins tried during the storm (one every 250 ms, retried on 503) and how many
    /// got in, and how long the slowest took.
    pub correct_logins: usize,
    pub correct_logins_ok: usize,
    pub correct_login_max_ms: f64,
    /// A correct login after the storm.
    pub login_after_ok: bool,
    /// Server CPU time over the storm and the watch after it (user + system, with reaped
    /// children, from `/proc/<pid>/stat`: [`crate::cpu`]).
    pub server_cpu_secs: f64,
}

/// `VmRSS` of `pid` in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn login_body(email: &str, password: &str) -> Bytes {
    Bytes::from(serde_json::json!({"email": email, "password": password}).to_string())
}

async fn post(target: &Target, path: &str, body: Bytes) -> Result<(u16, String), String> {
    let mut conn = Conn::new(target.clone());
    let answer = conn
        .send(
            Method::POST,
            path,
            None,
            Some(body),
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| e.kind().to_owned())?;
    let slug = problem_slug(&answer.body).unwrap_or_default();
    Ok((answer.status.as_u16(), slug))
}

/// A correct login, retried after a second while the server answers 503.
async fn correct_login(target: &Target, email: &str, password: &str) -> (bool, Duration) {
    let started = Instant::now();
    for _ in 0..30 {
        match post(target, "/v1/auth/login", login_body(email, password)).await {
            Ok((200, _)) => return (true, started.elapsed()),
            Ok((503, _)) => tokio::time::sleep(Duration::from_secs(1)).await,
            _ => break,
        }
    }
    (false, started.elapsed())
}

/// Starts the server, runs the storm, stops the server.
pub async fn run(options: &Options) -> anyhow::Result<StormResult> {
    let bin = holdfast_binary(options.holdfast_bin.as_deref())?;
    let dir = tempfile::tempdir()?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let log = dir.path().join("server.log");
    let mut cmd = command(&bin, &log)?;
    cmd.arg("serve")
        .env("HOLDFAST_HTTP_ADDR", &addr)
        .env("HOLDFAST_OPS_ADDR", "127.0.0.1:0")
        .env("HOLDFAST_DATA_DIR", dir.path().join("data"))
        .env("HOLDFAST_JWT_SECRET", random_secret())
        .env("HOLDFAST_LOG", "warn")
        // The storm measures the hashing bound: with rate limits on, one IP's crowd would be
        // answered 429 before any hash.
        .env("HOLDFAST_RATE_LIMITS", "off");
    for (key, value) in &options.env {
        cmd.env(key, value);
    }
    let mut child = cmd.spawn().context("starting holdfast serve")?;
    let pid = child.id().context("the server has a pid")?;
    let target = Target::resolve(&format!("http://{addr}"), false).await?;
    let result = storm(options, &target, pid).await;
    let _ = child.kill().await;
    result.with_context(|| {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        format!(
            "the server's log ends:\n{}",
            text.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        )
    })
}

async fn wait_ready(target: &Target) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let mut conn = Conn::new(target.clone());
        let ready = conn
            .send(Method::GET, "/readyz", None, None, Duration::from_secs(2))
            .await;
        if ready.is_ok_and(|a| a.status.is_success()) {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(60),
            "not ready in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn storm(options: &Options, target: &Target, pid: u32) -> anyhow::Result<StormResult> {
    wait_ready(target).await?;
    let email = format!("storm-{}@example.com", uuid::Uuid::new_v4().simple());
    let password = "a storm of wrong guesses";
    let body = serde_json::json!({"email": email, "password": password, "name": "Storm"});
    let (status, slug) = post(target, "/v1/auth/register", Bytes::from(body.to_string()))
        .await
        .map_err(|e| anyhow::anyhow!("registering: {e}"))?;
    anyhow::ensure!(status == 201, "registering answered {status} {slug}");
    // One correct login first, so the steady state includes a finished hash.
    anyhow::ensure!(
        correct_login(target, &email, password).await.0,
        "a first login failed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_mib(pid);
    let cpu_before = process_cpu_secs(pid);

    let running = Arc::new(AtomicBool::new(true));
    let peak = {
        let running = Arc::clone(&running);
        tokio::spawn(async move {
            let mut peak = 0;
            while running.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak.max(rss_mib(pid))
        })
    };
    let health = {
        let (running, target) = (Arc::clone(&running), target.clone());
        tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let mut conn = Conn::new(target);
            while running.load(Ordering::Relaxed) {
                let started = Instant::now();
                let answered = conn
                    .send(Method::GET, "/healthz", None, None, Duration::from_secs(10))
                    .await;
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let _ = histogram.record(if answered.is_ok() { micros } else { 10_000_000 });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            histogram
        })
    };
    let correct = {
        let (running, target, email) = (Arc::clone(&running), target.clone(), email.clone());
        tokio::spawn(async move {
            let mut tries = tokio::task::JoinSet::new();
            while running.load(Ordering::Relaxed) {
                let (target, email) = (target.clone(), email.clone());
                tries.spawn(async move { correct_login(&target, &email, password).await });
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            tries.join_all().await
        })
    };

    let started = Instant::now();
    let barrier = Arc::new(tokio::sync::Barrier::new(options.logins));
    let wrong: Vec<_> = (0..options.logins)
        .map(|_| {
            let (target, email, barrier) = (target.clone(), email.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                let mut conn = Conn::new(target);
                let _ = conn.connect().await;
                barrier.wait().await;
                let answer = conn
                    .send(
                        Method::POST,
                        "/v1/auth/login",
                        None,
                        Some(login_body(&email, "not the password")),
                        Duration::from_secs(60),
                    )
                    .await;
                match answer {
                    Ok(a) => format!(
                        "{} {}",
                        a.status.as_u16(),
                        problem_slug(&a.body).unwrap_or_default()
                    ),
                    Err(e) => format!("error {}", e.kind()),
                }
            })
        })
        .collect();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for task in wrong {
        *answers
            .entry(task.await.unwrap_or_else(|_| "panic".to_owned()))
            .or_default() += 1;
    }
    let storm_secs = started.elapsed().as_secs_f64();
    let rss_end = rss_mib(pid);
    running.store(false, Ordering::Relaxed);
    let histogram = health.await?;
    let correct = correct.await?;

    // The memory is watched on: work the server still does after the answers counts too.
    let settled_at = Instant::now();
    let mut under_150 = None;
    let mut peak_after = 0;
    while settled_at.elapsed() < options.settle {
        let rss = rss_mib(pid);
        peak_after = peak_after.max(rss);
        if under_150.is_none() && rss < 150 {
            under_150 = Some(settled_at.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let peak = peak.await?.max(peak_after);
    let cpu = process_cpu_secs(pid) - cpu_before;
    let login_after_ok = correct_login(target, &email, password).await.0;
    let ms = |v: u64| v as f64 / 1000.0;
    Ok(StormResult {
        label: options.label.clone(),
        logins: options.logins,
        settings: options.env.clone(),
        answers: answers.into_iter().collect(),
        storm_secs,
        rss_before_mib: rss_before,
        rss_peak_mib: peak,
        rss_end_of_storm_mib: rss_end,
        rss_settled_mib: rss_mib(pid),
        secs_to_under_150_mib: under_150,
        healthz_count: histogram.len(),
        healthz_p50_ms: ms(histogram.value_at_quantile(0.5)),
        healthz_p99_ms: ms(histogram.value_at_quantile(0.99)),
        healthz_max_ms: ms(histogram.max()),
        correct_logins: correct.len(),
        correct_logins_ok: correct.iter().filter(|(ok, _)| *ok).count(),
        correct_login_max_ms: correct
            .iter()
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .fold(0.0, f64::max),
        login_after_ok,
        server_cpu_secs: cpu,
    })
}

/// The results as a Markdown table (one column per storm).
pub fn table(results: &[StormResult]) -> String {
    let mut out = String::new();
    let row = |out: &mut String, name: &str, f: &dyn Fn(&StormResult) -> String| {
        out.push_str(&format!("| {name} |"));
        for r in results {
            out.push_str(&format!(" {} |", f(r)));
        }
        out.push('\n');
    };
    row(&mut out, "run", &|r| r.label.clone());
    out.push_str(&format!("|---|{}\n", "---|".repeat(results.len())));
    row(&mut out, "wrong-password logins at once", &|r| {
        r.logins.to_string()
    });
    row(&mut out, "answers", &|r| {
        r.answers
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    row(&mut out, "storm lasted", &|r| {
        format!("{:.1} s", r.storm_secs)
    });
    row(&mut out, "RSS before", &|r| {
        format!("{} MiB", r.rss_before_mib)
    });
    row(&mut out, "RSS peak (storm and watch)", &|r| {
        format!("{} MiB", r.rss_peak_mib)
    });
    row(&mut out, "RSS at the storm's end", &|r| {
        format!("{} MiB", r.rss_end_of_storm_mib)
    });
    row(&mut out, "under 150 MiB after", &|r| {
        r.secs_to_under_150_mib.map_or_else(
            || "not within the watch".to_owned(),
            |s| format!("{s:.1} s"),
        )
    });
    row(&mut out, "RSS after the watch", &|r| {
        format!("{} MiB", r.rss_settled_mib)
    });
    row(&mut out, "/healthz p50 / p99 / max", &|r| {
        format!(
            "{:.1} / {:.1} / {:.1} ms (n={})",
            r.healthz_p50_ms, r.healthz_p99_ms, r.healthz_max_ms, r.healthz_count
        )
    });
    row(
        &mut out,
        "correct logins during (ok/tried, slowest)",
        &|r| {
            format!(
                "{}/{} ({:.0} ms)",
                r.correct_logins_ok, r.correct_logins, r.correct_login_max_ms
            )
        },
    );
    row(&mut out, "correct login after", &|r| {
        r.login_after_ok.to_string()
    });
    row(&mut out, "server CPU (storm and watch)", &|r| {
        format!("{:.1} s", r.server_cpu_secs)
    });
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory() {
        assert!(super::rss_mib(std::process::id()) > 0);
    }
}
