//! The waiting room of one event, as a pure state machine.
//!
//! Buyers join; those who join before the sale opens form the pre-queue, which is put in a
//! random order when the sale opens (arriving early or fast earns nothing), and later joins go
//! to the back in order. Buyers are admitted from the front at `admit_per_minute`, never more
//! than `active_max` admitted and not yet done; an admission ends when its holder orders or its
//! time runs out. Nobody is admitted while the event is sold out.
//!
//! Like [`crate::inventory`], [`Queue::apply`] decides a [`QueueCommand`] at `now` and returns
//! the [`QueueEvent`]s it caused, already applied through [`Queue::replay`], the only code that
//! mutates the state; so `snapshot + replay(journal)` is the live state. The pre-queue's order
//! comes from the `seed` given when the queue is set up (the shell draws it from a CSPRNG and
//! it is journaled with the settings): each buyer's place is SHA-256(seed ‖ buyer), so replay
//! gives the same order whatever the version of any random number crate. No clock, no I/O.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Timestamp, UserId};

/// At most this many buyers in one event's queue (waiting and admitted).
pub const QUEUE_MAX: usize = 1_000_000;
/// Admissions bank up to this many milliseconds of the rate while nobody can be admitted, so a
/// pause (a full `active_max`, a sell-out) is followed by at most this much of a burst.
const BURST_MS: i64 = 2_000;

/// How an event's queue admits buyers (API.md "Waiting room").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    pub admit_per_minute: u32,
    pub active_max: u32,
    pub admission_ttl_ms: i64,
}

impl QueueSettings {
    /// Checks the settings make a queue that admits someone.
    pub fn check(&self) -> Result<(), QueueError> {
        if self.admit_per_minute == 0 || self.active_max == 0 || self.admission_ttl_ms <= 0 {
            return Err(QueueError::InvalidSettings(
                "admit_per_minute, active_max and admission_ttl_secs must be above 0",
            ));
        }
        Ok(())
    }
}

/// An event's `queue` as the API and the catalog write it: whole seconds for the TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub admit_per_minute: u32,
    pub active_max: u32,
    #[serde(default = "QueueConfig::default_ttl_secs")]
    pub admission_ttl_secs: u32,
}

impl QueueConfig {
    /// An admission lasts ten minutes unless the event says otherwise.
    pub const DEFAULT_TTL_SECS: u32 = 600;

    fn default_ttl_secs() -> u32 {
        Self::DEFAULT_TTL_SECS
    }

    pub fn settings(&self) -> QueueSettings {
        QueueSettings {
            admit_per_minute: self.admit_per_minute,
            active_max: self.active_max,
            admission_ttl_ms: i64::from(self.admission_ttl_secs) * 1000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    #[error("invalid queue settings: {0}")]
    InvalidSettings(&'static str),
    #[error("the queue is full ({QUEUE_MAX} buyers)")]
    Full,
    #[error("the buyer holds no admission")]
    NotAdmitted,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueCommand {
    /// Joins the queue; joining again keeps the place (or the admission). A buyer whose
    /// admission ended may join again, at the back.
    Join { user: UserId },
    /// Admits whoever is due at `now` (and ends the admissions whose time ran out first).
    /// `seats`: the seats the event can sell now; never more buyers are admitted and not done
    /// than that, so 0 (sold out, the sale not open) admits nobody.
    Admit { seats: u32 },
    /// The admitted buyer ordered: the admission ends and frees its place in `active_max`.
    Done { user: UserId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueEvent {
    /// `number` is the buyer's entry, unique in this queue; `pre`: before the opening.
    Joined {
        user: UserId,
        number: u64,
        pre: bool,
    },
    /// The sale opened: the pre-queue was put in its random order ahead of later joins.
    Opened { at: Timestamp },
    /// These buyers, from the front, were admitted until `expires_at`.
    Admitted {
        users: Vec<UserId>,
        at: Timestamp,
        expires_at: Timestamp,
    },
    /// These admissions ended: their holders ordered, or their time ran out.
    AdmissionsEnded { users: Vec<UserId>, expired: bool },
}

/// A buyer's place as they read it (`GET /v1/events/{id}/queue/me`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueStatus {
    /// Before the opening the place is not drawn yet (`position` is `None`).
    Waiting {
        position: Option<u64>,
    },
    /// Waiting while the event is sold out.
    SoldOut {
        position: u64,
    },
    Admitted {
        number: u64,
        expires_at: Timestamp,
    },
    /// The admission ran out or was used; joining again goes to the back.
    Ended {
        expired: bool,
    },
}

/// What a buyer reads of the queue: their status (`None`: not joined) and about how long
/// they still wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRead {
    pub status: Option<QueueStatus>,
    pub estimated_wait_secs: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Place {
    /// In the pre-queue, not ordered yet.
    Pre,
    /// Waiting; `rank` is its place in admission order (the front has the lowest).
    Waiting {
        rank: u64,
    },
    Admitted {
        expires_at: Timestamp,
    },
    Ended {
        expired: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    number: u64,
    place: Place,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    settings: QueueSettings,
    opens_at: Timestamp,
    seed: [u8; 32],
    opened: bool,
    entries: HashMap<UserId, Entry>,
    /// The pre-queue in joining order (its order is drawn at the opening).
    pre: Vec<UserId>,
    /// The waiting buyers in admission order.
    waiting: VecDeque<UserId>,
    /// The rank the next buyer to wait at the back gets; the front's rank is
    /// `next_rank - waiting.len()`.
    next_rank: u64,
    next_number: u64,
    /// Admitted and not done, in admission order with their expiry.
    active: VecDeque<(UserId, Timestamp)>,
    /// Admissions banked, in thousandths, as of `credit_at`.
    credit_milli: i64,
    credit_at: Timestamp,
    admitted_total: u64,
}

impl Queue {
    /// A queue whose sale opens at `opens_at`, its pre-queue ordered by `seed`.
    pub fn new(
        settings: QueueSettings,
        opens_at: Timestamp,
        seed: [u8; 32],
    ) -> Result<Self, QueueError> {
        settings.check()?;
        Ok(Self {
            settings,
            opens_at,
            seed,
            opened: false,
            entries: HashMap::new(),
            pre: Vec::new(),
            waiting: VecDeque::new(),
            next_rank: 0,
            next_number: 0,
            active: VecDeque::new(),
            credit_milli: 0,
            credit_at: opens_at,
            admitted_total: 0,
        })
    }

    pub fn settings(&self) -> QueueSettings {
        self.settings
    }

    /// When the pre-queue is drawn and admissions start.
    pub fn opens_at(&self) -> Timestamp {
        self.opens_at
    }

    /// Buyers admitted and not done.
    pub fn active(&self) -> usize {
        self.active.len()
    }

    /// Buyers waiting (the pre-queue included).
    pub fn waiting(&self) -> usize {
        self.waiting.len() + self.pre.len()
    }

    /// Buyers admitted since the queue was set up.
    pub fn admitted_total(&self) -> u64 {
        self.admitted_total
    }

    /// Decides `command` at `now`; the events returned are applied already.
    pub fn apply(
        &mut self,
        now: Timestamp,
        command: &QueueCommand,
    ) -> Result<Vec<QueueEvent>, QueueError> {
        match command {
            QueueCommand::Join { user }
                if self.entries.len() >= QUEUE_MAX && !self.entries.contains_key(user) =>
            {
                return Err(QueueError::Full);
            }
            QueueCommand::Done { user }
                if !matches!(
                    self.entries.get(user).map(|e| &e.place),
                    Some(Place::Admitted { .. })
                ) =>
            {
                return Err(QueueError::NotAdmitted);
            }
            _ => {}
        }
        let mut events = Vec::new();
        if !self.opened && now >= self.opens_at {
            self.emit(&mut events, QueueEvent::Opened { at: now });
        }
        match command {
            QueueCommand::Join { user } => {
                let again = match self.entries.get(user) {
                    None => true,
                    Some(entry) => match entry.place {
                        Place::Ended { .. } => true,
                        // Run out, though not ended yet (its end is journaled with the next
                        // admission round): the buyer may join again, at the back.
                        Place::Admitted { expires_at } => expires_at <= now,
                        Place::Pre | Place::Waiting { .. } => false,
                    },
                };
                if again {
                    let event = QueueEvent::Joined {
                        user: *user,
                        number: self.next_number,
                        pre: !self.opened,
                    };
                    self.emit(&mut events, event);
                }
            }
            QueueCommand::Admit { seats } => {
                // Admissions run out in the order they were given (one TTL for all; after a
                // change of TTL, one may wait for those before it).
                let expired: Vec<UserId> = self
                    .active
                    .iter()
                    .take_while(|(_, expires_at)| *expires_at <= now)
                    .map(|(user, _)| *user)
                    .collect();
                if !expired.is_empty() {
                    let event = QueueEvent::AdmissionsEnded {
                        users: expired,
                        expired: true,
                    };
                    self.emit(&mut events, event);
                }
                if self.opened {
                    let due = self.due(now);
                    let room = (self.settings.active_max as usize)
                        .min(*seats as usize)
                        .saturating_sub(self.active.len());
                    let count = due.min(room).min(self.waiting.len());
                    if count > 0 {
                        let users: Vec<UserId> = self.waiting.iter().take(count).copied().collect();
                        let event = QueueEvent::Admitted {
                            users,
                            at: now,
                            expires_at: Timestamp(
                                now.0.saturating_add(self.settings.admission_ttl_ms),
                            ),
                        };
                        self.emit(&mut events, event);
                    }
                }
            }
            QueueCommand::Done { user } => {
                let event = QueueEvent::AdmissionsEnded {
                    users: vec![*user],
                    expired: false,
                };
                self.emit(&mut events, event);
            }
        }
        Ok(events)
    }

    fn emit(&mut self, events: &mut Vec<QueueEvent>, event: QueueEvent) {
        self.replay(&event);
        events.push(event);
    }

    /// Whole admissions the rate allows at `now`.
    fn due(&self, now: Timestamp) -> usize {
        usize::try_from(self.credit(now) / 1000).unwrap_or(usize::MAX)
    }

    /// The credit at `now`, in thousandths of an admission, capped at [`BURST_MS`] of the
    /// rate (at least one admission).
    fn credit(&self, now: Timestamp) -> i64 {
        let rate = i64::from(self.settings.admit_per_minute);
        let cap = (BURST_MS * rate / 60).max(1000);
        let elapsed = now.0.saturating_sub(self.credit_at.0).max(0);
        // ms × admissions/minute ÷ 60 = thousandths of an admission.
        let earned = elapsed.saturating_mul(rate) / 60;
        self.credit_milli.saturating_add(earned).min(cap)
    }

    /// Applies `event`: the only code that changes the queue.
    pub fn replay(&mut self, event: &QueueEvent) {
        match event {
            QueueEvent::Joined { user, number, pre } => {
                // A buyer joining again after an admission that ran out holds no place in
                // `active_max` any more.
                if let Some(Entry {
                    place: Place::Admitted { .. },
                    ..
                }) = self.entries.get(user)
                {
                    self.active.retain(|(u, _)| u != user);
                }
                let place = if *pre {
                    self.pre.push(*user);
                    Place::Pre
                } else {
                    self.waiting.push_back(*user);
                    self.next_rank += 1;
                    Place::Waiting {
                        rank: self.next_rank - 1,
                    }
                };
                self.entries.insert(
                    *user,
                    Entry {
                        number: *number,
                        place,
                    },
                );
                self.next_number = self.next_number.max(number + 1);
            }
            QueueEvent::Opened { at } => {
                self.opened = true;
                self.credit_at = *at;
                self.credit_milli = 0;
                let mut pre = std::mem::take(&mut self.pre);
                let seed = self.seed;
                pre.sort_by_cached_key(|user| draw(&seed, *user));
                for user in pre {
                    if let Some(entry) = self.entries.get_mut(&user) {
                        entry.place = Place::Waiting {
                            rank: self.next_rank,
                        };
                        self.next_rank += 1;
                        self.waiting.push_back(user);
                    }
                }
            }
            QueueEvent::Admitted {
                users,
                at,
                expires_at,
            } => {
                let used = i64::try_from(users.len()).unwrap_or(i64::MAX);
                let at = (*at).max(self.credit_at);
                self.credit_milli = self.credit(at).saturating_sub(used.saturating_mul(1000));
                self.credit_at = at;
                for user in users {
                    if self.waiting.front() == Some(user) {
                        self.waiting.pop_front();
                    }
                    if let Some(entry) = self.entries.get_mut(user) {
                        entry.place = Place::Admitted {
                            expires_at: *expires_at,
                        };
                    }
                    self.active.push_back((*user, *expires_at));
                    self.admitted_total += 1;
                }
            }
            QueueEvent::AdmissionsEnded { users, expired } => {
                for user in users {
                    if let Some(entry) = self.entries.get_mut(user)
                        && matches!(entry.place, Place::Admitted { .. })
                    {
                        entry.place = Place::Ended { expired: *expired };
                    }
                }
                let front = self.active.iter().take(users.len()).map(|(u, _)| u);
                if front.eq(users.iter()) {
                    // Run out: the front of `active`, in order.
                    self.active.drain(..users.len());
                } else {
                    let ended: std::collections::HashSet<&UserId> = users.iter().collect();
                    self.active.retain(|(user, _)| !ended.contains(user));
                }
            }
        }
    }

    /// What `user` reads at `now` (`sold_out`: the event has no seat to sell now); `None` if
    /// they never joined.
    pub fn status(&self, user: UserId, now: Timestamp, sold_out: bool) -> Option<QueueStatus> {
        let entry = self.entries.get(&user)?;
        Some(match entry.place {
            Place::Pre => QueueStatus::Waiting { position: None },
            Place::Waiting { rank } => {
                let front = self.next_rank - self.waiting.len() as u64;
                let position = rank - front + 1;
                if sold_out {
                    QueueStatus::SoldOut { position }
                } else {
                    QueueStatus::Waiting {
                        position: Some(position),
                    }
                }
            }
            Place::Admitted { expires_at } if expires_at > now => QueueStatus::Admitted {
                number: entry.number,
                expires_at,
            },
            Place::Admitted { .. } => QueueStatus::Ended { expired: true },
            Place::Ended { expired } => QueueStatus::Ended { expired },
        })
    }

    /// When the queue next has something to do at or after `now`: the opening (when someone
    /// waits for it), the first admission running out, or the next admission the rate allows
    /// (when someone waits, there is room and seats are left).
    pub fn next_due(&self, now: Timestamp, seats: u32) -> Option<Timestamp> {
        if !self.opened {
            return (!self.pre.is_empty()).then_some(self.opens_at);
        }
        let expiry = self.active.front().map(|(_, at)| *at);
        let room = (self.settings.active_max as usize).min(seats as usize);
        let admission = (!self.waiting.is_empty() && self.active.len() < room).then(|| {
            // A clock behind the last admission earns nothing until it catches up.
            let from = now.max(self.credit_at);
            let short = 1000 - self.credit(from).min(1000);
            let rate = i64::from(self.settings.admit_per_minute);
            // ceil(short thousandths × 60 / rate) ms.
            Timestamp(from.0.saturating_add((short * 60 + rate - 1) / rate))
        });
        match (expiry, admission) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// New settings and opening time for a queue that exists; the buyers keep their places.
    /// The opening time counts only until the queue has opened.
    pub fn reconfigure(&mut self, settings: QueueSettings, opens_at: Timestamp) {
        self.settings = settings;
        if !self.opened {
            self.opens_at = opens_at;
            self.credit_at = opens_at;
        }
    }

    /// About how long a buyer at `position` waits, in seconds, at the admission rate.
    pub fn estimated_wait_secs(&self, position: u64) -> u64 {
        position.saturating_mul(60) / u64::from(self.settings.admit_per_minute.max(1))
    }
}

/// A pre-queue buyer's place: the first 16 bytes of SHA-256(seed ‖ buyer), as a number.
fn draw(seed: &[u8; 32], user: UserId) -> u128 {
    let mut hash = Sha256::new();
    hash.update(seed);
    hash.update(user.0.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    const OPEN: Timestamp = Timestamp(1_000_000);

    fn user(n: u128) -> UserId {
        UserId(Uuid::from_u128(n + 1))
    }

    fn queue(per_minute: u32, active_max: u32) -> Queue {
        let settings = QueueSettings {
            admit_per_minute: per_minute,
            active_max,
            admission_ttl_ms: 60_000,
        };
        Queue::new(settings, OPEN, [7; 32]).expect("valid settings")
    }

    fn admitted(events: &[QueueEvent]) -> Vec<UserId> {
        events
            .iter()
            .flat_map(|e| match e {
                QueueEvent::Admitted { users, .. } => users.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn settings_that_admit_nobody_are_refused() {
        for (rate, max, ttl) in [(0, 1, 1), (1, 0, 1), (1, 1, 0)] {
            let settings = QueueSettings {
                admit_per_minute: rate,
                active_max: max,
                admission_ttl_ms: ttl,
            };
            assert!(Queue::new(settings, OPEN, [0; 32]).is_err());
        }
    }

    #[test]
    fn joining_again_keeps_the_place() {
        let mut q = queue(60, 10);
        let at = Timestamp(OPEN.0 + 1);
        assert_eq!(
            q.apply(at, &QueueCommand::Join { user: user(1) })
                .unwrap()
                .len(),
            2
        );
        assert!(
            q.apply(at, &QueueCommand::Join { user: user(1) })
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            q.status(user(1), at, false),
            Some(QueueStatus::Waiting { position: Some(1) })
        );
    }

    #[test]
    fn the_rate_and_active_max_bound_admissions() {
        // 60 a minute is one a second; at most 3 at once.
        let mut q = queue(60, 3);
        for n in 0..10 {
            q.apply(OPEN, &QueueCommand::Join { user: user(n) })
                .unwrap();
        }
        let mut at = OPEN;
        let mut admitted_at = Vec::new();
        for _ in 0..10 {
            at = Timestamp(at.0 + 1_000);
            let events = q
                .apply(at, &QueueCommand::Admit { seats: u32::MAX })
                .unwrap();
            admitted_at.push(admitted(&events).len());
            assert!(q.active() <= 3);
        }
        assert_eq!(admitted_at, [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
        q.apply(at, &QueueCommand::Done { user: user(0) }).unwrap();
        let events = q
            .apply(
                Timestamp(at.0 + 1),
                &QueueCommand::Admit { seats: u32::MAX },
            )
            .unwrap();
        assert_eq!(
            admitted(&events),
            [user(3)],
            "a freed place is taken at once"
        );
        assert_eq!(
            q.apply(at, &QueueCommand::Done { user: user(9) }),
            Err(QueueError::NotAdmitted)
        );
    }

    #[test]
    fn nobody_is_admitted_while_sold_out_and_admissions_expire() {
        let mut q = queue(600, 100);
        q.apply(OPEN, &QueueCommand::Join { user: user(1) })
            .unwrap();
        q.apply(OPEN, &QueueCommand::Join { user: user(2) })
            .unwrap();
        let at = Timestamp(OPEN.0 + 10_000);
        let events = q.apply(at, &QueueCommand::Admit { seats: 0 }).unwrap();
        assert!(admitted(&events).is_empty());
        assert_eq!(
            q.status(user(1), at, true),
            Some(QueueStatus::SoldOut { position: 1 })
        );
        let events = q
            .apply(at, &QueueCommand::Admit { seats: u32::MAX })
            .unwrap();
        assert_eq!(admitted(&events), [user(1), user(2)]);
        let later = Timestamp(at.0 + 60_000);
        assert_eq!(
            q.status(user(1), later, false),
            Some(QueueStatus::Ended { expired: true })
        );
        let events = q
            .apply(later, &QueueCommand::Admit { seats: u32::MAX })
            .unwrap();
        assert!(events.contains(&QueueEvent::AdmissionsEnded {
            users: vec![user(1), user(2)],
            expired: true
        }));
        assert_eq!(q.active(), 0);
        // An ended admission may join again, at the back.
        q.apply(later, &QueueCommand::Join { user: user(1) })
            .unwrap();
        assert_eq!(
            q.status(user(1), later, false),
            Some(QueueStatus::Waiting { position: Some(1) })
        );
    }

    #[test]
    fn the_pre_queue_is_drawn_at_the_opening_and_later_joins_follow() {
        let mut q = queue(6_000, 1_000);
        let before = Timestamp(OPEN.0 - 1);
        for n in 0..100 {
            q.apply(before, &QueueCommand::Join { user: user(n) })
                .unwrap();
        }
        assert_eq!(
            q.status(user(0), before, false),
            Some(QueueStatus::Waiting { position: None })
        );
        let events = q
            .apply(OPEN, &QueueCommand::Join { user: user(100) })
            .unwrap();
        assert!(matches!(events[0], QueueEvent::Opened { .. }));
        let positions: Vec<u64> = (0..=100)
            .map(|n| match q.status(user(n), OPEN, false) {
                Some(QueueStatus::Waiting { position: Some(p) }) => p,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            positions[100], 101,
            "the later join is behind the pre-queue"
        );
        let mut sorted = positions[..100].to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=100).collect::<Vec<_>>());
        assert_ne!(&positions[..100], &sorted[..], "not the joining order");
    }
}
