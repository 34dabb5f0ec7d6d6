//! The scheduler role: jobs that run at a time rather than on an event of the bus. Reminders to
//! ticket holders before their event starts, a daily sales summary to each organizer with a
//! live event, and the retention of what the services keep (the outbox, processed event ids,
//! read bus records, idempotency keys, expired refresh tokens).
//!
//! Each job runs once per due time across the cluster: a run claims its `(job, due_key)` row
//! in `job_runs` in the same transaction as the messages it queues, so a second scheduler (or
//! the same one after a restart) finds the row and queues nothing, and a crash before the
//! commit leaves the due time unclaimed for the next round. What is due is decided by the pure
//! functions of [`due`] from the time the clock gives; a due time missed while no scheduler ran
//! is still due at the next start (a reminder until its event starts, the latest summary and
//! retention run). The messages go out through the notifications service's table and sender.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_actors::actor::Clock;
use holdfast_bus::{ORDERS, TICKETS};
use holdfast_persistence::{CheckoutTx, HoldingRow, NotificationRow, Store, UpcomingEventRow};
use tokio::sync::{Notify, watch};

use crate::error::Error;
use crate::events::{Envelope, SagaEvent};
use crate::messages::{self, Facts, Kind, Language, Line, OrderAbout, SummaryLine};
use crate::notifications::{Notifications, NotifySettings, Recipient};
use crate::runner::Consumer;
use crate::service::Ctx;

/// Settings of the scheduled jobs.
#[derive(Clone, Debug)]
pub struct SchedulerSettings {
    /// How long before an event's start its ticket holders are reminded.
    pub reminder_before: Duration,
    /// Hour of the day (UTC) of the daily sales summary.
    pub summary_hour_utc: u32,
    /// How often the scheduler looks for due jobs.
    pub tick: Duration,
    /// How long the outbox, processed event ids and the in-process bus keep what is done.
    pub retention: Duration,
    /// How long `Idempotency-Key` answers are kept.
    pub idempotency_ttl: Duration,
    /// Names this scheduler in `job_runs` (the node id, or the host and process).
    pub holder: String,
}

/// The pure part: which due times have come, from `now` (Unix milliseconds).
pub mod due {
    pub const HOUR_MS: i64 = 3_600_000;
    pub const DAY_MS: i64 = 24 * HOUR_MS;

    /// An event's reminder is due from `before_ms` ahead of its start until it starts.
    pub fn reminder_due(now_ms: i64, starts_at_ms: i64, before_ms: i64) -> bool {
        starts_at_ms.saturating_sub(before_ms) <= now_ms && now_ms < starts_at_ms
    }

    /// The reminder's due key: a moved event is reminded again for its new start. The store
    /// builds the same text in SQL (`Store::upcoming_events`).
    pub fn reminder_key(event_id: &str, starts_at_ms: i64) -> String {
        format!("{event_id}@{starts_at_ms}")
    }

    /// The latest daily due time at `hour_utc` not after `now_ms`: its key (the UTC date of
    /// the day it summarises, the day before the due time) and that day, `[from, to)`.
    pub fn daily(now_ms: i64, hour_utc: u32) -> (String, i64, i64) {
        let offset = i64::from(hour_utc) * HOUR_MS;
        let due = (now_ms - offset).div_euclid(DAY_MS) * DAY_MS + offset;
        let (from, to) = (due - DAY_MS, due);
        (utc_date(from), from, to)
    }

    /// The current hour's key: retention runs once an hour.
    pub fn hourly(now_ms: i64) -> String {
        now_ms.div_euclid(HOUR_MS).to_string()
    }

    /// `2026-12-01` for a time on that UTC day.
    pub fn utc_date(at_ms: i64) -> String {
        jiff::Timestamp::from_millisecond(at_ms)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ran {
    /// Events whose holders this round reminded.
    pub reminded_events: usize,
    /// Messages (e-mails and SMS) queued.
    pub queued: usize,
    /// Sales summary days run.
    pub summaries: usize,
    /// Retention runs.
    pub retention: usize,
}

pub struct Scheduler {
    ctx: Ctx,
    settings: SchedulerSettings,
    sender: Arc<Notifications>,
    sql_bus: Option<holdfast_bus::SqlBus>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    pub(crate) fn new(ctx: Ctx, settings: SchedulerSettings, sender: Arc<Notifications>) -> Self {
        Self {
            ctx,
            settings,
            sender,
            sql_bus: None,
        }
    }

    /// A scheduler of its own on `store` (tests; a node starts it with the role).
    pub fn on_store(
        store: Store,
        clock: Arc<dyn Clock>,
        settings: SchedulerSettings,
        notify: NotifySettings,
    ) -> anyhow::Result<Self> {
        let ctx = Ctx {
            store,
            clock,
            relay: Arc::new(Notify::new()),
        };
        let sender = Arc::new(Notifications::new(ctx.clone(), notify)?);
        Ok(Self::new(ctx, settings, sender))
    }

    /// The in-process bus whose read records retention trims.
    #[must_use]
    pub fn with_bus(mut self, sql_bus: Option<holdfast_bus::SqlBus>) -> Self {
        self.sql_bus = sql_bus;
        self
    }

    /// Runs a round every tick until stopped.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(error = %format!("{e:#}"), "a scheduler round failed; the next one tries again");
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.tick) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Runs every job that is due now, then sends the messages due (what a tick does).
    pub async fn tick(&self) -> anyhow::Result<Ran> {
        let ran = self.round().await?;
        self.sender.send_due().await?;
        Ok(ran)
    }

    async fn round(&self) -> anyhow::Result<Ran> {
        let now = self.ctx.now_ms();
        let mut ran = Ran::default();
        self.reminders(now, &mut ran).await?;
        self.summary(now, &mut ran).await?;
        self.retention(now, &mut ran).await?;
        if ran.queued > 0 {
            self.sender.wake();
        }
        Ok(ran)
    }

    fn before_ms(&self) -> i64 {
        i64::try_from(self.settings.reminder_before.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// Claims `(job, key)` and inserts `rows` in one transaction; false if already claimed.
    async fn claim_with(
        &self,
        job: &str,
        key: &str,
        rows: &[NotificationRow],
    ) -> anyhow::Result<bool> {
        let mut tx = self.ctx.store.checkout_tx().await?;
        if !tx
            .claim_job_run(job, key, &self.settings.holder, self.ctx.now_ms())
            .await?
        {
            return Ok(false);
        }
        for row in rows {
            tx.insert_notification(row).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn reminders(&self, now: i64, ran: &mut Ran) -> anyhow::Result<()> {
        let before = self.before_ms();
        for event in self
            .ctx
            .store
            .upcoming_events(now, now.saturating_add(before))
            .await?
        {
            if !due::reminder_due(now, event.starts_at, before) {
                continue;
            }
            let key = due::reminder_key(&event.id.to_string(), event.starts_at);
            if self.ctx.store.job_ran("reminder", &key).await? {
                continue;
            }
            let holders = self.ctx.store.event_holdings(event.id).await?;
            let rows = self.reminder_rows(&event, &key, &holders)?;
            if self.claim_with("reminder", &key, &rows).await? {
                tracing::info!(event = %event.id, starts_at = event.starts_at, messages = rows.len(), "ticket holders reminded");
                metrics::counter!("holdfast_scheduler_runs_total", "job" => "reminder")
                    .increment(1);
                ran.reminded_events += 1;
                ran.queued += rows.len();
            }
        }
        Ok(())
    }

    /// One message per order of the event: its tickets by type.
    fn reminder_rows(
        &self,
        event: &UpcomingEventRow,
        key: &str,
        holders: &[HoldingRow],
    ) -> anyhow::Result<Vec<NotificationRow>> {
        let mut rows = Vec::new();
        for first in holders {
            let seats: Vec<(String, u32)> = serde_json::from_str(&first.seats)
                .map_err(|e| anyhow::anyhow!("seats of order {}: {e}", first.order_id))?;
            if seats.iter().all(|(_, n)| *n == 0) {
                continue;
            }
            let about = OrderAbout {
                event_name: event.name.clone(),
                venue: event.venue.clone(),
                starts_at_ms: event.starts_at,
                time_zone: event.time_zone.clone(),
                language: Language::parse(&first.language).unwrap_or_default(),
                ticket_types: event.ticket_types.clone(),
            };
            let facts = Facts {
                order_id: first.order_id.to_string(),
                tickets: seats.iter().map(|(_, n)| *n as usize).sum(),
                lines: seats
                    .iter()
                    .filter(|(_, n)| *n > 0)
                    .map(|(ticket_type, quantity)| Line {
                        ticket_type: ticket_type.clone(),
                        quantity: *quantity,
                        price: 0,
                    })
                    .collect(),
                link: self.sender.return_link(),
                ..Facts::default()
            };
            let m = messages::render(Kind::Reminder, &about, &facts)
                .map_err(|e| anyhow::anyhow!("rendering a reminder: {e}"))?;
            let seed = format!("{key}:{}", first.order_id);
            rows.extend(self.sender.rows(
                first.order_id,
                &Recipient {
                    email: first.email.clone(),
                    phone: first.phone.clone(),
                },
                (m.subject, m.body, m.sms),
                None,
                |channel| {
                    holdfast_actors::domain::derived_id(&format!("reminder:{channel}"), &seed)
                },
            ));
        }
        Ok(rows)
    }

    async fn summary(&self, now: i64, ran: &mut Ran) -> anyhow::Result<()> {
        let (day, from, to) = due::daily(now, self.settings.summary_hour_utc);
        if self.ctx.store.job_ran("sales_summary", &day).await? {
            return Ok(());
        }
        let sales = self.ctx.store.live_event_sales(from, to).await?;
        let mut rows = Vec::new();
        for organizer in sales.chunk_by(|a, b| a.organizer_id == b.organizer_id) {
            let first = &organizer[0];
            let about = OrderAbout {
                language: Language::parse(&first.organizer_language).unwrap_or_default(),
                ..OrderAbout::default()
            };
            let facts = Facts {
                day: day.clone(),
                summary: organizer
                    .iter()
                    .map(|e| SummaryLine {
                        event_name: e.name.clone(),
                        starts_at_ms: e.starts_at,
                        time_zone: e.time_zone.clone(),
                        sold_day: e.sold_in_window,
                        sold_total: e.sold_total,
                        revenue: e.revenue.clone(),
                    })
                    .collect(),
                ..Facts::default()
            };
            let m = messages::render(Kind::SalesSummary, &about, &facts)
                .map_err(|e| anyhow::anyhow!("rendering a sales summary: {e}"))?;
            let seed = format!("{day}:{}", first.organizer_id);
            let id = holdfast_actors::domain::derived_id("sales_summary", &seed);
            // E-mail only: a summary is no text message.
            rows.extend(self.sender.rows(
                id,
                &Recipient {
                    email: first.organizer_email.clone(),
                    phone: None,
                },
                (m.subject, m.body, m.sms),
                None,
                |channel| {
                    holdfast_actors::domain::derived_id(&format!("sales_summary:{channel}"), &seed)
                },
            ));
        }
        if self.claim_with("sales_summary", &day, &rows).await? {
            tracing::info!(%day, messages = rows.len(), "sales summaries queued");
            metrics::counter!("holdfast_scheduler_runs_total", "job" => "sales_summary")
                .increment(1);
            ran.summaries += 1;
            ran.queued += rows.len();
        }
        Ok(())
    }

    /// Forgets what is done and older than the retention (once an hour).
    async fn retention(&self, now: i64, ran: &mut Ran) -> anyhow::Result<()> {
        let key = due::hourly(now);
        if self.ctx.store.job_ran("retention", &key).await?
            || !self.claim_with("retention", &key, &[]).await?
        {
            return Ok(());
        }
        ran.retention += 1;
        metrics::counter!("holdfast_scheduler_runs_total", "job" => "retention").increment(1);
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
        let before = now - ms(self.settings.retention);
        let store = &self.ctx.store;
        let (outbox, processed) = store.saga_purge(before).await?;
        let trimmed = match &self.sql_bus {
            Some(bus) => bus.trim(before).await?,
            None => 0,
        };
        let tokens = store.tokens_purge(now).await?;
        let keys = store
            .idempotency_purge(now - ms(self.settings.idempotency_ttl))
            .await?;
        // A reminder's claim outlives its event; a day's claim its day.
        let runs_before = now - ms(self.settings.retention).max(self.before_ms()) - due::DAY_MS;
        let runs = store.job_runs_purge(runs_before).await?;
        tracing::info!(
            outbox,
            processed,
            trimmed,
            tokens,
            idempotency_keys = keys,
            job_runs = runs,
            "retention: forgot what is done"
        );
        Ok(())
    }
}

/// The scheduler's consumer: keeps `scheduler_holdings` from the bus (each order's event,
/// buyer's language and amount from `OrderCreated`, or a free order's `OrderConfirmed`; when
/// it was confirmed; the seats, their holder and when they were issued from `TicketsIssued`;
/// the seats left after a refund from `TicketsVoided`), so reminders and sales summaries read
/// no other service's tables.
pub(crate) struct HoldingsFeed {
    pub ctx: Ctx,
}

const FEED: &str = "scheduler";

/// Seats by type as `scheduler_holdings.seats` stores them.
fn seats_json<'a>(seats: impl Iterator<Item = (&'a str, u32)>) -> String {
    let mut by_type: Vec<(String, u32)> = Vec::new();
    for (ticket_type, n) in seats {
        match by_type.iter_mut().find(|(t, _)| t == ticket_type) {
            Some((_, count)) => *count += n,
            None => by_type.push((ticket_type.to_owned(), n)),
        }
    }
    serde_json::to_string(&by_type).expect("seats serialise")
}

#[async_trait]
impl Consumer for HoldingsFeed {
    fn group(&self) -> &'static str {
        FEED
    }

    fn topics(&self) -> &'static [&'static str] {
        &[ORDERS, TICKETS]
    }

    fn in_tx(&self, env: &Envelope) -> bool {
        matches!(
            env.event,
            SagaEvent::OrderCreated { .. }
                | SagaEvent::OrderConfirmed { .. }
                | SagaEvent::TicketsIssued { .. }
                | SagaEvent::TicketsVoided { .. }
        )
    }

    async fn handle_in(&self, tx: &mut CheckoutTx, env: &Envelope) -> Result<(), Error> {
        if !tx.first_time(FEED, env.id).await? {
            return Ok(());
        }
        let now = self.ctx.now_ms();
        let language = |about: &Option<crate::messages::OrderAbout>| {
            about.as_ref().map(|a| a.language).unwrap_or_default()
        };
        match &env.event {
            SagaEvent::OrderCreated {
                event_id,
                about,
                amount,
                currency,
                ..
            } => {
                let ids = (env.order_id, *event_id);
                tx.holding_about(
                    ids,
                    language(about).as_str(),
                    Some((*amount, currency)),
                    now,
                )
                .await?;
            }
            SagaEvent::OrderConfirmed {
                event_id, about, ..
            } => {
                let ids = (env.order_id, *event_id);
                if about.is_some() {
                    tx.holding_about(ids, language(about).as_str(), None, now)
                        .await?;
                }
                tx.holding_confirmed(ids, env.at_ms).await?;
            }
            SagaEvent::TicketsIssued {
                email,
                phone,
                event_id,
                tickets,
            } => {
                let seats = seats_json(tickets.iter().map(|t| (t.ticket_type.as_str(), 1)));
                let count = i64::try_from(tickets.len()).unwrap_or(i64::MAX);
                tx.holding_issued(
                    (env.order_id, *event_id),
                    (email, phone.as_deref()),
                    (&seats, count),
                    env.at_ms,
                )
                .await?;
            }
            SagaEvent::TicketsVoided { admitted, kept } => {
                let kept = kept.as_ref().unwrap_or(admitted);
                let seats = seats_json(kept.iter().map(|s| (s.ticket_type.as_str(), s.quantity)));
                let count: i64 = kept.iter().map(|s| i64::from(s.quantity)).sum();
                tx.holding_kept(env.order_id, (&seats, count), now).await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn handle(&self, _env: &Envelope) -> Result<(), Error> {
        Ok(())
    }
}

/// The tests of what is due; the shell's are in `tests/scheduler.rs`.
#[cfg(test)]
mod tests {
    use super::due::*;

    #[test]
    fn a_reminder_is_due_from_its_time_until_the_start() {
        let start = 100 * HOUR_MS;
        let before = 24 * HOUR_MS;
        let cases: &[(i64, bool, &str)] = &[
            (start - before - 1, false, "a millisecond early"),
            (start - before, true, "on time"),
            (
                start - HOUR_MS,
                true,
                "missed while down: still sent before the start",
            ),
            (start - 1, true, "the last moment"),
            (start, false, "started: too late"),
            (start + HOUR_MS, false, "over"),
        ];
        for (now, want, what) in cases {
            assert_eq!(reminder_due(*now, start, before), *want, "{what}");
        }
        assert_eq!(reminder_key("e", 5), "e@5");
        assert_ne!(reminder_key("e", 5), reminder_key("e", 6), "a moved event");
    }

    #[test]
    fn the_daily_summary_is_due_once_a_day_at_its_hour() {
        // 2026-12-01T00:00:00Z
        let midnight = 1_796_083_200_000;
        let cases: &[(i64, u32, &str, i64)] = &[
            (midnight, 0, "2026-11-30", midnight),
            (midnight + 1, 0, "2026-11-30", midnight),
            (midnight + DAY_MS - 1, 0, "2026-11-30", midnight),
            (midnight + DAY_MS, 0, "2026-12-01", midnight + DAY_MS),
            (
                midnight + 6 * HOUR_MS,
                7,
                "2026-11-29",
                midnight - 17 * HOUR_MS,
            ),
            (
                midnight + 7 * HOUR_MS,
                7,
                "2026-11-30",
                midnight + 7 * HOUR_MS,
            ),
        ];
        for (now, hour, key, to) in cases {
            let (got_key, from, got_to) = daily(*now, *hour);
            assert_eq!((got_key.as_str(), got_to), (*key, *to), "{now} at {hour}h");
            assert_eq!(got_to - from, DAY_MS);
        }
    }

    #[test]
    fn seats_are_kept_by_type() {
        let cases: &[(&[(&str, u32)], &str)] = &[
            (&[], "[]"),
            (
                &[("GA", 1), ("VIP", 1), ("GA", 1)],
                r#"[["GA",2],["VIP",1]]"#,
            ),
            (&[("GA", 0)], r#"[["GA",0]]"#),
        ];
        for (seats, want) in cases {
            assert_eq!(super::seats_json(seats.iter().copied()), *want);
        }
    }

    #[test]
    fn retention_runs_once_an_hour() {
        assert_eq!(hourly(0), "0");
        assert_eq!(hourly(HOUR_MS - 1), "0");
        assert_eq!(hourly(HOUR_MS), "1");
        assert_eq!(utc_date(1_796_083_200_000), "2026-12-01");
    }
}
