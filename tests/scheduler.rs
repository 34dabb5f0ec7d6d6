//! The scheduler role's jobs with an adjustable clock: reminders to ticket holders once per
//! event across a restart and with two schedulers at once, received by a real SMTP server and
//! the SMS provider's stand-in, and the organizer's daily sales summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use holdfast_actors::actor::Clock;
use holdfast_actors::domain::Timestamp;
use holdfast_checkout::notifications::NotifySettings;
use holdfast_checkout::scheduler::{Scheduler, SchedulerSettings};
use holdfast_notify::testing::{ReceivedEmail, SmtpServer};
use holdfast_tests::{Backend, InProcessNode, PASSWORD, on_both_backends, poll_until};
use serde_json::json;

const HOUR_MS: i64 = 3_600_000;
const WAIT: Duration = Duration::from_secs(30);
use holdfast_tests::{SMS_FROM, SMS_SID, SMS_TOKEN};
/// 2030-06-15T18:30:00Z: 20:30 in Paris (summer time).
const STARTS_MS: i64 = 1_907_778_600_000;

on_both_backends!(reminders_go_out_once_across_a_restart_and_with_two_schedulers);

async fn count(url: &str, sql: &str) -> i64 {
    use sqlx::{Connection as _, Row as _};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let row = sqlx::query(sql).fetch_one(&mut conn).await.expect(sql);
    row.try_get::<i64, _>(0).expect("a count")
}

/// A clock the test moves.
#[derive(Debug)]
struct TestClock(AtomicI64);

impl TestClock {
    fn set(&self, at_ms: i64) {
        self.0.store(at_ms, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

struct Providers {
    smtp: SmtpServer,
    sms: holdfast_notify::sim::SmsSim,
    sms_url: String,
}

impl Providers {
    async fn start() -> Self {
        let smtp = SmtpServer::start().await;
        let holdfast_tests::SmsStandIn {
            sim: sms,
            url: sms_url,
        } = holdfast_tests::SmsStandIn::start().await;
        Self { smtp, sms, sms_url }
    }

    fn notify(&self) -> NotifySettings {
        NotifySettings {
            smtp: Some(self.smtp.settings("Holdfast <tickets@holdfast.invalid>")),
            sms: Some(holdfast_notify::SmsSettings {
                base_url: self.sms_url.clone(),
                account_sid: SMS_SID.to_owned(),
                auth_token: SMS_TOKEN.to_owned(),
                from: SMS_FROM.to_owned(),
                timeout_secs: 5,
            }),
            attempts_max: 3,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            public_url: "http://holdfast.test".to_owned(),
            circuit: holdfast_checkout::breaker::Options::default(),
        }
    }

    async fn reminders(&self) -> Vec<ReceivedEmail> {
        self.smtp
            .messages()
            .await
            .into_iter()
            .filter(|m| m.subject.starts_with("Reminder: "))
            .collect()
    }

    fn reminder_texts(&self) -> Vec<String> {
        self.sms
            .messages()
            .into_iter()
            .map(|m| m.body)
            .filter(|b| b.contains("reminder"))
            .collect()
    }
}

fn settings(holder: &str) -> SchedulerSettings {
    SchedulerSettings {
        reminder_before: Duration::from_secs(24 * 3600),
        summary_hour_utc: 0,
        tick: Duration::from_secs(1),
        retention: Duration::from_secs(7 * 24 * 3600),
        idempotency_ttl: Duration::from_secs(24 * 3600),
        holder: holder.to_owned(),
    }
}

async fn scheduler(
    node: &InProcessNode,
    clock: &Arc<TestClock>,
    providers: &Providers,
    holder: &str,
) -> Scheduler {
    let store = holdfast_engine::node::open_store(&node.sandbox().config())
        .await
        .expect("open the store");
    Scheduler::on_store(
        store,
        Arc::clone(clock) as Arc<dyn Clock>,
        settings(holder),
        providers.notify(),
    )
    .expect("a scheduler")
}

/// A free event (its orders confirm at once) in Paris; the buyer gets two tickets of it.
async fn event_with_tickets(
    node: &InProcessNode,
    organizer: &str,
    buyer: &str,
    name: &str,
    starts_ms: i64,
) -> String {
    let starts = time::OffsetDateTime::from_unix_timestamp(starts_ms / 1000)
        .expect("a time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    let reply = node
        .client()
        .post(
            "/v1/events",
            Some(organizer),
            &json!({"name": name, "venue": "Olympia", "starts_at": starts,
                    "time_zone": "Europe/Paris",
                    "ticket_types": [{"code": "GA", "name": "GA seats", "price": 0,
                                      "currency": "VND", "capacity": 10, "per_user_limit": 4}]}),
        )
        .await;
    reply.assert_status(201);
    let event = reply.body["id"].as_str().expect("event id").to_owned();
    let hold = node.client().hold(buyer, &event, &[("GA", 2)]).await;
    hold.assert_status(201);
    let order = node
        .client()
        .post(
            "/v1/orders",
            Some(buyer),
            &json!({"hold_id": hold.body["id"]}),
        )
        .await;
    order.assert_status(201);
    let id = order.body["id"].as_str().expect("order id").to_owned();
    poll_until(WAIT, Duration::from_millis(100), || async {
        let reply = node
            .client()
            .get(&format!("/v1/orders/{id}/tickets"), Some(buyer))
            .await;
        reply.body.as_array().filter(|t| t.len() == 2).map(|_| ())
    })
    .await
    .expect("the free order's tickets are issued");
    event
}

async fn reminders_go_out_once_across_a_restart_and_with_two_schedulers(backend: Backend) {
    let providers = Providers::start().await;
    let notify = providers.notify();
    // The node runs every role; its scheduler's consumer keeps the holdings the test's
    // schedulers read, on their own clock (its own rounds, on the system clock, find nothing
    // due: the events are in 2030).
    let node = InProcessNode::start_with(backend, |c| {
        c.smtp_url = Some(format!("smtp://{}", providers.smtp.addr()));
        c.sms_base_url = notify.sms.as_ref().map(|s| s.base_url.clone());
        c.sms_account_sid = Some(SMS_SID.to_owned());
        c.sms_auth_token = Some(SMS_TOKEN.to_owned());
        c.sms_from = Some("+15005550006".to_owned());
    })
    .await;
    let organizer = node.organizer_token().await;
    let email = holdfast_tests::unique_email("reminded");
    node.client()
        .post(
            "/v1/auth/register",
            None,
            &json!({"email": email, "password": PASSWORD, "name": "Ann", "language": "en",
                    "phone": "+84 901 234 567"}),
        )
        .await
        .assert_status(201);
    let buyer = node.client().login_token(&email, PASSWORD).await;
    event_with_tickets(&node, &organizer, &buyer, "Paris show", STARTS_MS).await;
    // Reminded from 24 hours before: 3 hours later than the first.
    event_with_tickets(
        &node,
        &organizer,
        &buyer,
        "Late show",
        STARTS_MS + 3 * HOUR_MS,
    )
    .await;

    let url = node.sandbox().database().url().to_owned();
    poll_until(WAIT, Duration::from_millis(100), || async {
        let fed = count(
            &url,
            "SELECT COUNT(*) FROM scheduler_holdings WHERE email IS NOT NULL AND language = 'en'",
        )
        .await;
        (fed == 2).then_some(())
    })
    .await
    .expect("the scheduler hears of both orders' tickets from the bus");
    let clock = Arc::new(TestClock(AtomicI64::new(STARTS_MS - 30 * HOUR_MS)));
    let first = scheduler(&node, &clock, &providers, "first").await;
    let ran = first.tick().await.expect("a round");
    assert_eq!(ran.reminded_events, 0, "30 hours before: nothing to remind");
    assert_eq!(ran.summaries, 1, "the day before's summary");
    assert_eq!(ran.retention, 1);

    clock.set(STARTS_MS - 23 * HOUR_MS);
    let ran = first.tick().await.expect("a round");
    assert_eq!(ran.reminded_events, 1, "{ran:?}");
    assert_eq!((ran.summaries, ran.retention), (0, 1), "{ran:?}");
    let mail = poll_until(WAIT, Duration::from_millis(100), || async {
        let mail = providers.reminders().await;
        (!mail.is_empty()).then_some(mail)
    })
    .await
    .expect("the reminder e-mail arrives");
    let starts = "Saturday 15 June 2030, 20:30 (GMT+02:00)";
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(
        mail[0].subject,
        format!("Reminder: Paris show starts {starts}")
    );
    assert!(mail[0].to.contains(&email), "{:?}", mail[0]);
    let text = mail[0].text_body.as_deref().unwrap_or("");
    for says in [
        "Event: Paris show",
        "Venue: Olympia",
        &format!("Starts: {starts}"),
        "- 2 × GA seats",
        "You hold 2 ticket(s)",
    ] {
        assert!(text.contains(says), "{says}: {text}");
    }
    let texts = poll_until(WAIT, Duration::from_millis(100), || async {
        let texts = providers.reminder_texts();
        (!texts.is_empty()).then_some(texts)
    })
    .await
    .expect("the reminder SMS is sent");
    assert!(
        texts[0].contains("Paris show") && texts[0].contains(starts),
        "{texts:?}"
    );

    // The organizer's summary of the day before, in the organizer's language (vi).
    let summary = providers
        .smtp
        .messages()
        .await
        .into_iter()
        .find(|m| m.subject == "Doanh số ngày 2030-06-13")
        .expect("the organizer's sales summary");
    let text = summary.text_body.as_deref().unwrap_or("");
    assert!(
        text.contains("Paris show") && text.contains("Late show"),
        "{text}"
    );
    assert!(text.contains("tổng cộng 2 vé"), "{text}");

    // Down while the late show's reminder falls due, then two schedulers at once.
    drop(first);
    clock.set(STARTS_MS - 2 * HOUR_MS);
    let a = scheduler(&node, &clock, &providers, "a").await;
    let b = scheduler(&node, &clock, &providers, "b").await;
    let (ran_a, ran_b) = tokio::join!(a.tick(), b.tick());
    let (ran_a, ran_b) = (ran_a.expect("a round"), ran_b.expect("a round"));
    assert_eq!(
        ran_a.reminded_events + ran_b.reminded_events,
        1,
        "the missed reminder, once: {ran_a:?} {ran_b:?}"
    );
    let (ran_a, ran_b) = tokio::join!(a.tick(), b.tick());
    assert_eq!(
        ran_a.expect("a round").reminded_events + ran_b.expect("a round").reminded_events,
        0
    );
    poll_until(WAIT, Duration::from_millis(100), || async {
        let mail = providers.reminders().await;
        (mail.len() >= 2).then_some(())
    })
    .await
    .expect("the late show's reminder arrives");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mail = providers.reminders().await;
    assert_eq!(mail.len(), 2, "each event reminded once: {mail:?}");
    assert!(
        mail[1]
            .subject
            .contains("Late show starts Saturday 15 June 2030, 23:30 (GMT+02:00)"),
        "{:?}",
        mail[1].subject
    );
    assert_eq!(providers.reminder_texts().len(), 2);
    // Once the events started, nothing more.
    clock.set(STARTS_MS + 4 * HOUR_MS);
    assert_eq!(a.tick().await.expect("a round").reminded_events, 0);
    node.shutdown().await;
}
