//! Circuit breakers around the calls that leave the node: VNPAY's `querydr` and refund API,
//! SMTP and the SMS provider.
//!
//! [`Breaker`] is the pure state machine (time an argument): closed until `failures_max`
//! calls in a row failed, then open for `open_ms`, when calls are refused at once; after that
//! one call goes through as a probe (half-open): its success closes the breaker, its failure
//! opens it again. [`Circuit`] is the shell a service calls through: it reads the service's
//! clock, keeps the breaker behind a lock and exports its state and refusals as metrics. A
//! refused call is a transient failure to its caller, so the callers' bounded retries with
//! backoff carry on as they do after a timeout, without waiting for one.
//!
//! Metrics, by `breaker` (`vnpay_querydr`, `vnpay_refund`, `smtp`, `sms`):
//! `holdfast_circuit_state` (0 closed, 1 half-open, 2 open), `holdfast_circuit_rejected_total`
//! (calls refused while open) and `holdfast_circuit_opened_total`.

use std::sync::{Arc, Mutex};

/// When a breaker opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Failures in a row that open the breaker (at least 1).
    pub failures_max: u32,
    /// How long it stays open before one probe may go through, in milliseconds.
    pub open_ms: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            failures_max: 5,
            open_ms: 30_000,
        }
    }
}

/// Where a breaker stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Calls go through; `failures` in a row failed so far.
    Closed { failures: u32 },
    /// Calls are refused until `until_ms`.
    Open { until_ms: i64 },
    /// One probe went out at `probe_at_ms`; the others are refused until it reports. A probe
    /// that never reports (its caller was cancelled) is replaced after `open_ms`.
    HalfOpen { probe_at_ms: i64 },
}

impl State {
    /// The value of `holdfast_circuit_state`.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed { .. } => 0.0,
            State::HalfOpen { .. } => 1.0,
            State::Open { .. } => 2.0,
        }
    }
}

/// What the breaker says to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead (closed).
    Call,
    /// Go ahead as the probe of a half-open breaker.
    Probe,
    /// Refused: the breaker is open, or a probe is out.
    Reject,
}

/// The state machine of one breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Breaker {
    options: Options,
    state: State,
}

impl Breaker {
    pub fn new(options: Options) -> Self {
        Self {
            options: Options {
                failures_max: options.failures_max.max(1),
                open_ms: options.open_ms.max(0),
            },
            state: State::Closed { failures: 0 },
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a call at `now_ms` may go out, and as what; a probe is taken by this call.
    pub fn admit(&mut self, now_ms: i64) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Call,
            State::Open { until_ms }
            | State::HalfOpen {
                probe_at_ms: until_ms,
            } if now_ms < self.probe_due(until_ms) => Admit::Reject,
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen {
                    probe_at_ms: now_ms,
                };
                Admit::Probe
            }
        }
    }

    /// Whether [`Breaker::admit`] would let a call out at `now_ms` (it takes nothing).
    pub fn would_admit(&self, now_ms: i64) -> bool {
        let mut probe = *self;
        probe.admit(now_ms) != Admit::Reject
    }

    /// When the next probe may go out after the state's own time `at_ms`.
    fn probe_due(&self, at_ms: i64) -> i64 {
        match self.state {
            State::Open { .. } => at_ms,
            _ => at_ms.saturating_add(self.options.open_ms),
        }
    }

    /// A call that was let out succeeded: the breaker closes.
    pub fn succeeded(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// A call that was let out failed at `now_ms`; true when this opened the breaker.
    pub fn failed(&mut self, now_ms: i64) -> bool {
        let open = State::Open {
            until_ms: now_ms.saturating_add(self.options.open_ms),
        };
        match self.state {
            State::Closed { failures } if failures + 1 < self.options.failures_max => {
                self.state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Closed { .. } | State::HalfOpen { .. } => {
                self.state = open;
                true
            }
            // A call let out before the breaker opened reports late: it stays open as it is.
            State::Open { .. } => false,
        }
    }
}

/// A call refused by an open breaker.
#[derive(Debug, thiserror::Error)]
#[error("the circuit to {breaker} is open after repeated failures: not calling it for now")]
pub struct Open {
    pub breaker: &'static str,
}

/// A named breaker shared by the tasks of a service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Circuit {
    name: &'static str,
    breaker: Arc<Mutex<Breaker>>,
}

/// Leave to make one call; report how it went with [`Permit::succeeded`] or
/// [`Permit::failed`] (a permit dropped unreported changes nothing, a probe is replaced
/// after `open_ms`).
#[derive(Debug)]
#[must_use = "report the call's outcome"]
pub struct Permit {
    circuit: Circuit,
}

impl Circuit {
    /// `name` is the breaker's label in the metrics (`vnpay_refund`, `smtp`, …).
    pub fn new(name: &'static str, options: Options) -> Self {
        let circuit = Self {
            name,
            breaker: Arc::new(Mutex::new(Breaker::new(options))),
        };
        circuit.export(State::Closed { failures: 0 });
        circuit
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Leave for a call at `now_ms`, or [`Open`] at once (counted).
    pub fn admit(&self, now_ms: i64) -> Result<Permit, Open> {
        let (admit, state) = self.with(|b| (b.admit(now_ms), b.state()));
        self.export(state);
        match admit {
            Admit::Call => Ok(self.permit()),
            Admit::Probe => {
                tracing::info!(breaker = self.name, "circuit half-open: sending one probe");
                Ok(self.permit())
            }
            Admit::Reject => {
                metrics::counter!("holdfast_circuit_rejected_total", "breaker" => self.name)
                    .increment(1);
                Err(Open { breaker: self.name })
            }
        }
    }

    /// Whether a call at `now_ms` would be let out (nothing is taken or counted).
    pub fn would_admit(&self, now_ms: i64) -> bool {
        self.with(|b| b.would_admit(now_ms))
    }

    /// [`Open`] (counted as a refused call) when a call at `now_ms` would be refused; takes
    /// no probe. For work that must not start unless its call can go out.
    pub fn check(&self, now_ms: i64) -> Result<(), Open> {
        if self.would_admit(now_ms) {
            return Ok(());
        }
        metrics::counter!("holdfast_circuit_rejected_total", "breaker" => self.name).increment(1);
        Err(Open { breaker: self.name })
    }

    pub fn state(&self) -> State {
        self.with(|b| b.state())
    }

    fn permit(&self) -> Permit {
        Permit {
            circuit: self.clone(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Breaker) -> T) -> T {
        // A panic while holding this lock cannot leave a breaker half-updated: every change
        // is one assignment.
        let mut breaker = self
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut breaker)
    }

    fn export(&self, state: State) {
        metrics::gauge!("holdfast_circuit_state", "breaker" => self.name).set(state.gauge());
    }
}

impl Permit {
    pub fn succeeded(self) {
        let (was, now) = self.circuit.with(|b| {
            let was = b.state();
            b.succeeded();
            (was, b.state())
        });
        if was != now && !matches!(was, State::Closed { .. }) {
            tracing::info!(
                breaker = self.circuit.name,
                "circuit closed: the call succeeded"
            );
        }
        self.circuit.export(now);
    }

    pub fn failed(self, now_ms: i64) {
        let (opened, state) = self.circuit.with(|b| (b.failed(now_ms), b.state()));
        if opened {
            metrics::counter!("holdfast_circuit_opened_total", "breaker" => self.circuit.name)
                .increment(1);
            tracing::warn!(
                breaker = self.circuit.name,
                "circuit open: calls fail at once until a probe succeeds"
            );
        }
        self.circuit.export(state);
    }

    /// Reports `ok`: success when true, failure at `now_ms` otherwise.
    pub fn record(self, ok: bool, now_ms: i64) {
        if ok {
            self.succeeded();
        } else {
            self.failed(now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPTIONS: Options = Options {
        failures_max: 3,
        open_ms: 1_000,
    };

    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Ask at this time; then report this outcome if let out.
        Try(i64, bool),
        /// Ask at this time and never report (a cancelled call).
        Lost(i64),
    }

    /// Runs `steps`, returning what each call was told and the state after it.
    fn run(steps: &[Step]) -> Vec<(Admit, State)> {
        let mut b = Breaker::new(OPTIONS);
        steps
            .iter()
            .map(|step| {
                let (now, outcome) = match *step {
                    Step::Try(now, ok) => (now, Some(ok)),
                    Step::Lost(now) => (now, None),
                };
                let admit = b.admit(now);
                match (admit, outcome) {
                    (Admit::Reject, _) | (_, None) => {}
                    (_, Some(true)) => b.succeeded(),
                    (_, Some(false)) => {
                        b.failed(now);
                    }
                }
                (admit, b.state())
            })
            .collect()
    }

    #[test]
    fn opens_fails_fast_half_opens_and_closes() {
        use Admit::*;
        use Step::*;
        type Case = (&'static str, Vec<Step>, Vec<(Admit, State)>);
        let cases: &[Case] = &[
            (
                "a success in between resets the count",
                vec![Try(0, false), Try(1, false), Try(2, true), Try(3, false)],
                vec![
                    (Call, State::Closed { failures: 1 }),
                    (Call, State::Closed { failures: 2 }),
                    (Call, State::Closed { failures: 0 }),
                    (Call, State::Closed { failures: 1 }),
                ],
            ),
            (
                "three failures open it; refused until the cool-down ends; the probe closes it",
                vec![
                    Try(0, false),
                    Try(1, false),
                    Try(2, false),
                    Try(500, true),
                    Try(1_001, true),
                    Try(1_002, true),
                ],
                vec![
                    (Call, State::Closed { failures: 1 }),
                    (Call, State::Closed { failures: 2 }),
                    (Call, State::Open { until_ms: 1_002 }),
                    (Reject, State::Open { until_ms: 1_002 }),
                    (Reject, State::Open { until_ms: 1_002 }),
                    (Probe, State::Closed { failures: 0 }),
                ],
            ),
            (
                "a failed probe opens it again for a whole cool-down",
                vec![
                    Try(0, false),
                    Try(0, false),
                    Try(0, false),
                    Try(1_000, false),
                    Try(1_999, true),
                    Try(2_000, true),
                ],
                vec![
                    (Call, State::Closed { failures: 1 }),
                    (Call, State::Closed { failures: 2 }),
                    (Call, State::Open { until_ms: 1_000 }),
                    (Probe, State::Open { until_ms: 2_000 }),
                    (Reject, State::Open { until_ms: 2_000 }),
                    (Probe, State::Closed { failures: 0 }),
                ],
            ),
            (
                "one probe at a time; a lost probe is replaced after the cool-down",
                vec![
                    Try(0, false),
                    Try(0, false),
                    Try(0, false),
                    Lost(1_000),
                    Try(1_500, true),
                    Try(2_000, true),
                ],
                vec![
                    (Call, State::Closed { failures: 1 }),
                    (Call, State::Closed { failures: 2 }),
                    (Call, State::Open { until_ms: 1_000 }),
                    (Probe, State::HalfOpen { probe_at_ms: 1_000 }),
                    (Reject, State::HalfOpen { probe_at_ms: 1_000 }),
                    (Probe, State::Closed { failures: 0 }),
                ],
            ),
        ];
        for (name, steps, expected) in cases {
            assert_eq!(&run(steps), expected, "{name}");
        }
    }

    #[test]
    fn a_late_failure_keeps_an_open_breaker_as_it_is() {
        let mut b = Breaker::new(OPTIONS);
        let early = b.admit(0);
        for now in 0..3 {
            assert_eq!(b.admit(now), Admit::Call);
            b.failed(now);
        }
        assert_eq!(early, Admit::Call);
        assert!(!b.failed(500), "the late report opens nothing");
        assert_eq!(b.state(), State::Open { until_ms: 1_002 });
    }

    #[test]
    fn would_admit_takes_nothing() {
        let mut b = Breaker::new(OPTIONS);
        for now in 0..3 {
            let _ = b.admit(now);
            b.failed(now);
        }
        assert!(!b.would_admit(1_001));
        assert!(b.would_admit(1_002));
        assert!(b.would_admit(1_002), "asking twice takes no probe");
        assert_eq!(b.admit(1_002), Admit::Probe);
        assert!(!b.would_admit(1_003), "the probe is out");
    }

    /// A simple model: the breaker is open (refusing) exactly when the last `failures_max`
    /// reported outcomes since it last closed were failures and the cool-down since the latest
    /// of them has not passed (calls are reported at once, so no probe is ever out long).
    fn model(steps: &[(i64, bool)]) -> Vec<bool> {
        let mut run_of_failures = 0u32;
        let mut opened_at: Option<i64> = None;
        steps
            .iter()
            .map(|&(now, ok)| {
                if let Some(at) = opened_at {
                    if now < at + OPTIONS.open_ms {
                        return false;
                    }
                    // The probe.
                    if ok {
                        opened_at = None;
                        run_of_failures = 0;
                    } else {
                        opened_at = Some(now);
                    }
                    return true;
                }
                if ok {
                    run_of_failures = 0;
                } else {
                    run_of_failures += 1;
                    if run_of_failures >= OPTIONS.failures_max {
                        opened_at = Some(now);
                    }
                }
                true
            })
            .collect()
    }

    proptest! {
        #[test]
        fn agrees_with_the_model(raw in proptest::collection::vec((0i64..700, any::<bool>()), 0..60)) {
            let mut now = 0;
            let steps: Vec<(i64, bool)> = raw.into_iter().map(|(dt, ok)| { now += dt; (now, ok) }).collect();
            let mut b = Breaker::new(OPTIONS);
            let admitted: Vec<bool> = steps.iter().map(|&(now, ok)| {
                let admit = b.admit(now);
                if admit != Admit::Reject {
                    if ok { b.succeeded() } else { b.failed(now); }
                }
                admit != Admit::Reject
            }).collect();
            prop_assert_eq!(admitted, model(&steps));
        }
    }
}
