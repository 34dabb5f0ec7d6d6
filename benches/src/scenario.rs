//! One measured run from start to end: tokens, events, load, audit, result. Shared by `run` and
//! `compare`, so both measure exactly the same way.

use crate::audit::{self, AuditReport};
use crate::client::Target;
use crate::cpu::{self, CpuReport};
use crate::load::{self, LoadSpec, Plan};
use crate::report::RunResult;
use crate::setup::{self, EventSpec};

/// Everything about a run except where it goes.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub load: LoadSpec,
    pub events: EventSpec,
    pub users: usize,
    /// Read back at most this many acknowledged holds (a random sample beyond).
    pub audit_holds_max: usize,
    /// `Some(why)` skips the audit (the no-op baseline stores nothing to audit).
    pub skip_audit: Option<String>,
}

/// Whose CPU a run counts, and what to call it in reports.
#[derive(Clone, Debug, Default)]
pub struct CpuProbe {
    pub probe: cpu::Probe,
    /// `holdfast serve`, `baseline-pg` …
    pub processes: String,
}

impl CpuProbe {
    /// Nothing to count: the load runs against a server the harness knows nothing about.
    pub fn is_empty(&self) -> bool {
        self.probe.pids.is_empty()
            && !self.probe.include_self
            && !self.probe.postgres
            && !self.probe.redis
    }
}

/// Sets up, loads and audits `target` with `secret` (the server's `HOLDFAST_JWT_SECRET`); the
/// CPU of `cpu` is sampled just before and just after the load window.
pub async fn measure(
    scenario: &Scenario,
    target: &Target,
    secret: &[u8],
    label: &str,
    progress: bool,
    cpu: &CpuProbe,
) -> anyhow::Result<RunResult> {
    let keys = setup::token_keys(secret, scenario.load.duration)?;
    let organizer = setup::mint(
        &keys,
        holdfast_actors::UserId(uuid::Uuid::new_v4()),
        holdfast_gateway::auth::Role::Organizer,
    )?;
    let events = setup::create_events(target, &organizer, &scenario.events).await?;
    let buyers = setup::buyers(&keys, scenario.users)?;
    let plan = Plan {
        target: target.clone(),
        events,
        buyers,
    };
    let loadavg_before = crate::report::loadavg();
    let cpu_before = cpu.probe.sample();
    let output = load::execute(scenario.load.clone(), plan.clone(), progress).await?;
    let cpu_after = cpu.probe.sample();
    let loadavg_after = crate::report::loadavg();
    let audit = match &scenario.skip_audit {
        Some(why) => AuditReport::skipped(why),
        None => {
            audit::run(
                &plan,
                &scenario.events.ticket_type,
                &output,
                scenario.audit_holds_max,
                scenario.load.connections,
            )
            .await?
        }
    };
    let mut result = RunResult::from_output(
        label,
        &scenario.load,
        plan.events.len(),
        plan.buyers.len(),
        &output,
        audit,
    );
    result.loadavg_before = loadavg_before;
    result.loadavg_after = loadavg_after;
    if !cpu.is_empty() {
        result.cpu = Some(CpuReport::between(
            &cpu.probe,
            &cpu.processes,
            cpu_before,
            cpu_after,
            result.ops_ok(),
        ));
    }
    Ok(result)
}
