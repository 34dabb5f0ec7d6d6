//! The GCRA arithmetic (generic cell rate algorithm) every backend follows, and the 429's
//! headers. A key's whole state is its theoretical arrival time (TAT, microseconds): a charge
//! of `cost` units is allowed when `tat + (cost - 1)·T - τ <= now`, and moves the TAT to
//! `max(tat, now) + cost·T`, where `T` is the emission interval and `τ = (burst - 1)·T`. This is
//! governor's arithmetic; the Redis script of the engine runs the same in Lua.

use serde::{Deserialize, Serialize};

/// A quota: `rate` units per `period_secs`, at most `burst` at once. A zero rate or burst turns
/// the limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    pub rate: u32,
    pub period_secs: u32,
    pub burst: u32,
}

impl Quota {
    pub const fn per_minute(rate: u32, burst: u32) -> Self {
        Self {
            rate,
            period_secs: 60,
            burst,
        }
    }

    pub const fn per_second(rate: u32, burst: u32) -> Self {
        Self {
            rate,
            period_secs: 1,
            burst,
        }
    }

    pub fn is_off(&self) -> bool {
        self.rate == 0 || self.burst == 0 || self.period_secs == 0
    }

    /// Microseconds one unit takes to come back (`T`), at least 1.
    pub fn emission_interval_us(&self) -> u64 {
        (u64::from(self.period_secs) * 1_000_000 / u64::from(self.rate.max(1))).max(1)
    }

    /// The tolerance `τ`: how far the TAT may run ahead of now.
    pub fn tolerance_us(&self) -> u64 {
        self.emission_interval_us() * u64::from(self.burst.saturating_sub(1))
    }
}

/// What one charge decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    /// Units that could still be charged now.
    pub remaining: u32,
    /// Microseconds until the whole burst is back.
    pub reset_us: u64,
    /// Microseconds until this charge would be allowed (0 when it was).
    pub retry_after_us: u64,
}

impl Outcome {
    /// Seconds for `Retry-After`: at least 1 on a refusal, rounded up.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after_us).max(u64::from(!self.allowed))
    }

    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset_us)
    }
}

fn ceil_secs(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// Charges `cost` units to a key whose TAT is `tat_us` (`None`: a fresh key) at `now_us`.
/// `force` charges even past the limit (a penalty: a failed login counts a second unit).
/// Returns the outcome and the new TAT to store (`None`: leave the state as it was).
pub fn charge(
    tat_us: Option<u64>,
    now_us: u64,
    quota: &Quota,
    cost: u32,
    force: bool,
) -> (Outcome, Option<u64>) {
    let t = quota.emission_interval_us();
    let tau = quota.tolerance_us();
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let earliest = (tat + t * u64::from(cost.saturating_sub(1))).saturating_sub(tau);
    if now_us < earliest && !force {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset_us: tat - now_us,
            retry_after_us: earliest - now_us,
        };
        return (outcome, None);
    }
    let next = tat + t * u64::from(cost);
    let remaining = ((now_us + tau + t).saturating_sub(next) / t).min(u64::from(quota.burst));
    let outcome = Outcome {
        allowed: true,
        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
        reset_us: next - now_us,
        retry_after_us: 0,
    };
    (outcome, Some(next))
}

/// `RateLimit-Policy` and `RateLimit` of draft-ietf-httpapi-ratelimit-headers-10 (structured
/// fields: a policy name, then `q` quota units per `w` seconds; `r` units remaining, `t`
/// seconds until the quota is back), e.g. `"login";q=10;w=60` and `"login";r=0;t=12`.
pub fn headers(name: &str, quota: &Quota, outcome: &Outcome) -> (String, String) {
    (
        format!("\"{name}\";q={};w={}", quota.rate, quota.period_secs),
        format!(
            "\"{name}\";r={};t={}",
            outcome.remaining,
            outcome.reset_secs()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    /// Charges `n` single units at `now`, returning how many were allowed.
    fn burst(tat: &mut Option<u64>, now: u64, quota: &Quota, n: u32) -> u32 {
        let mut allowed = 0;
        for _ in 0..n {
            let (outcome, next) = charge(*tat, now, quota, 1, false);
            if let Some(next) = next {
                *tat = Some(next);
            }
            allowed += u32::from(outcome.allowed);
        }
        allowed
    }

    #[test]
    fn a_fresh_key_takes_the_burst_then_one_per_interval() {
        let quota = Quota::per_minute(10, 10);
        assert_eq!(quota.emission_interval_us(), 6 * SEC);
        let mut tat = None;
        assert_eq!(burst(&mut tat, 0, &quota, 15), 10);
        // One unit back after T = 6 s, not before.
        assert_eq!(burst(&mut tat, 6 * SEC - 1, &quota, 1), 0);
        assert_eq!(burst(&mut tat, 6 * SEC, &quota, 2), 1);
        // After a full minute of silence the whole burst is back.
        assert_eq!(burst(&mut tat, 66 * SEC, &quota, 11), 10);
    }

    #[test]
    fn outcomes_count_down_and_say_when_to_retry() {
        let quota = Quota::per_minute(10, 10);
        let (first, tat) = charge(None, 0, &quota, 1, false);
        assert_eq!(
            (first.allowed, first.remaining, first.reset_secs()),
            (true, 9, 6)
        );
        let mut tat = tat;
        for _ in 0..9 {
            tat = charge(tat, 0, &quota, 1, false).1;
        }
        let (refused, unchanged) = charge(tat, SEC, &quota, 1, false);
        assert!(!refused.allowed && unchanged.is_none());
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_us, 5 * SEC);
        assert_eq!(refused.retry_after_secs(), 5);
        assert_eq!(refused.reset_secs(), 59);
    }

    #[test]
    fn a_forced_charge_goes_past_the_limit_and_delays_the_next() {
        let quota = Quota::per_minute(10, 10);
        let mut tat = None;
        assert_eq!(burst(&mut tat, 0, &quota, 10), 10);
        let (forced, next) = charge(tat, 0, &quota, 1, true);
        assert!(forced.allowed);
        assert_eq!(next, Some(66 * SEC));
        // Two intervals now before the next unit.
        let (refused, _) = charge(next, 0, &quota, 1, false);
        assert_eq!(refused.retry_after_us, 12 * SEC);
    }

    #[test]
    fn failures_charged_double_halve_the_burst() {
        let quota = Quota::per_minute(10, 10);
        let mut tat = None;
        let mut attempts = 0;
        while charge(tat, 0, &quota, 1, false).0.allowed {
            tat = charge(tat, 0, &quota, 1, false).1;
            tat = charge(tat, 0, &quota, 1, true).1;
            attempts += 1;
        }
        assert_eq!(attempts, 5);
    }

    #[test]
    fn a_cost_above_one_needs_that_much_room() {
        let quota = Quota::per_second(1, 3);
        let (two, tat) = charge(None, 0, &quota, 2, false);
        assert!(two.allowed && two.remaining == 1);
        let (refused, _) = charge(tat, 0, &quota, 2, false);
        assert_eq!((refused.allowed, refused.retry_after_us), (false, SEC));
    }

    #[test]
    fn quotas_convert_to_intervals() {
        assert_eq!(Quota::per_second(20_000, 20_000).emission_interval_us(), 50);
        assert_eq!(Quota::per_second(2_000_000, 1).emission_interval_us(), 1);
        assert_eq!(Quota::per_minute(60, 20).tolerance_us(), 19 * SEC);
        assert!(Quota::per_minute(0, 10).is_off() && Quota::per_minute(10, 0).is_off());
    }

    #[test]
    fn headers_follow_the_draft_syntax() {
        let quota = Quota::per_minute(10, 10);
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            reset_us: 11 * SEC + 1,
            retry_after_us: 5 * SEC,
        };
        assert_eq!(
            headers("login", &quota, &outcome),
            (
                "\"login\";q=10;w=60".to_owned(),
                "\"login\";r=0;t=12".to_owned()
            )
        );
        assert_eq!(outcome.retry_after_secs(), 5);
        let soon = Outcome {
            retry_after_us: 1,
            ..outcome
        };
        assert_eq!(soon.retry_after_secs(), 1);
    }
}
