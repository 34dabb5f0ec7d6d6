//! CPU time of the processes a run loads, from `/proc`: the servers the harness started (and
//! their children), the harness itself for in-process baselines, and shared servers (PostgreSQL
//! backends, Redis) by command name.
//!
//! A sample is the sum of `utime + stime + cutime + cstime` over the processes it covers. A
//! PostgreSQL backend that exits during the window is reaped by the postmaster, whose
//! `cutime`/`cstime` then hold its whole time; as the postmaster matches the same name, the
//! difference of two samples stays exact when connections come and go.

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/<pid>/stat` times (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// The fields of a `/proc/<pid>/stat` line after the command name, and the command name.
fn stat_fields(stat: &str) -> Option<(&str, Vec<&str>)> {
    // The command name is in parentheses and may hold spaces or parentheses itself.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    Some((comm, stat[close + 1..].split_whitespace().collect()))
}

/// `utime + stime + cutime + cstime` of a stat line, in seconds.
pub fn stat_cpu_secs(stat: &str) -> f64 {
    let Some((_, fields)) = stat_fields(stat) else {
        return 0.0;
    };
    // utime, stime, cutime, cstime are fields 14 to 17 of stat; here 11 to 14 (after state).
    let ticks: f64 = (11..=14)
        .map(|i| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        })
        .sum();
    ticks / TICKS_PER_SEC
}

/// CPU seconds of `pid` and its reaped children (0 when it is gone).
pub fn process_cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| stat_cpu_secs(&s))
        .unwrap_or(0.0)
}

/// CPU seconds of every process whose command name is one of `names` (`postgres`,
/// `redis-server`), with their reaped children.
pub fn named_cpu_secs(names: &[&str]) -> f64 {
    if names.is_empty() {
        return 0.0;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_pid))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| stat_fields(stat).is_some_and(|(comm, _)| names.contains(&comm)))
        .map(|stat| stat_cpu_secs(&stat))
        .sum()
}

fn is_pid(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit())
}

/// The processes whose CPU a run counts.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// Processes the harness started (servers), each with its children.
    pub pids: Vec<u32>,
    /// Count the harness itself (in-process baselines: the client is the work).
    pub include_self: bool,
    /// PostgreSQL backends are counted (`postgres`).
    pub postgres: bool,
    /// Redis is counted (`redis-server`).
    pub redis: bool,
}

/// One reading of a [`Probe`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub processes_secs: f64,
    pub postgres_secs: f64,
    pub redis_secs: f64,
}

impl Probe {
    pub fn sample(&self) -> Sample {
        let mut processes_secs: f64 = self.pids.iter().map(|&pid| process_cpu_secs(pid)).sum();
        if self.include_self {
            processes_secs += process_cpu_secs(std::process::id());
        }
        Sample {
            processes_secs,
            postgres_secs: if self.postgres {
                named_cpu_secs(&["postgres"])
            } else {
                0.0
            },
            redis_secs: if self.redis {
                named_cpu_secs(&["redis-server"])
            } else {
                0.0
            },
        }
    }
}

/// CPU spent over a load window, and per operation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    /// What the processes were: `holdfast serve`, `holdfast-bench (client)` …
    pub processes: String,
    /// CPU seconds of the processes the harness started (or the harness itself).
    pub processes_secs: f64,
    /// CPU seconds of every `postgres` process (backends and the server's own), if in use.
    pub postgres_secs: Option<f64>,
    /// CPU seconds of `redis-server`, if in use.
    pub redis_secs: Option<f64>,
    pub total_secs: f64,
    /// The operations the CPU is divided by (holds, releases and orders answered; completed
    /// purchases).
    pub ops: u64,
    /// `total_secs / ops`, in microseconds.
    pub us_per_op: Option<f64>,
    /// `ops / total_secs`.
    pub ops_per_cpu_sec: Option<f64>,
}

impl CpuReport {
    /// The CPU between `before` and `after`, divided by `ops`.
    pub fn between(
        probe: &Probe,
        processes: &str,
        before: Sample,
        after: Sample,
        ops: u64,
    ) -> Self {
        let delta = |a: f64, b: f64| (b - a).max(0.0);
        let processes_secs = delta(before.processes_secs, after.processes_secs);
        let postgres_secs = probe
            .postgres
            .then(|| delta(before.postgres_secs, after.postgres_secs));
        let redis_secs = probe
            .redis
            .then(|| delta(before.redis_secs, after.redis_secs));
        let total_secs = processes_secs + postgres_secs.unwrap_or(0.0) + redis_secs.unwrap_or(0.0);
        Self {
            processes: processes.to_owned(),
            processes_secs,
            postgres_secs,
            redis_secs,
            total_secs,
            ops,
            us_per_op: (ops > 0).then(|| total_secs * 1e6 / ops as f64),
            ops_per_cpu_sec: (total_secs > 0.0).then(|| ops as f64 / total_secs),
        }
    }

    /// `812 µs/op (server 0.61 s + postgres 0.20 s)`.
    pub fn text(&self) -> String {
        let mut parts = vec![format!("{} {:.2} s", self.processes, self.processes_secs)];
        if let Some(s) = self.postgres_secs {
            parts.push(format!("postgres {s:.2} s"));
        }
        if let Some(s) = self.redis_secs {
            parts.push(format!("redis {s:.2} s"));
        }
        match self.us_per_op {
            Some(us) => format!(
                "{us:.0} µs CPU/op over {} ops ({})",
                self.ops,
                parts.join(" + ")
            ),
            None => format!("no ops ({})", parts.join(" + ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime …
        let line = "42 (post gres) (x)) S 1 42 42 0 -1 4194560 10 0 0 0 150 50 30 20 20 0 1 0";
        assert!((stat_cpu_secs(line) - 2.5).abs() < 1e-9);
        assert_eq!(stat_fields(line).map(|(c, _)| c), Some("post gres) (x)"));
        assert_eq!(stat_cpu_secs("garbage"), 0.0);
    }

    #[test]
    fn this_process_has_cpu() {
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        assert!(process_cpu_secs(std::process::id()) > 0.0);
        assert_eq!(named_cpu_secs(&[]), 0.0);
    }

    #[test]
    fn reports_divide_by_ops() {
        let probe = Probe {
            postgres: true,
            ..Probe::default()
        };
        let before = Sample {
            processes_secs: 1.0,
            postgres_secs: 10.0,
            redis_secs: 0.0,
        };
        let after = Sample {
            processes_secs: 3.0,
            postgres_secs: 11.0,
            redis_secs: 5.0,
        };
        let r = CpuReport::between(&probe, "server", before, after, 1000);
        assert!((r.total_secs - 3.0).abs() < 1e-9);
        assert_eq!(r.redis_secs, None);
        assert!((r.us_per_op.unwrap_or(0.0) - 3000.0).abs() < 1e-6);
        assert!((r.ops_per_cpu_sec.unwrap_or(0.0) - 333.333).abs() < 0.01);
        assert_eq!(
            CpuReport::between(&probe, "s", before, after, 0).us_per_op,
            None
        );
    }
}
