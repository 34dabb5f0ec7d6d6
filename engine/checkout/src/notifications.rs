//! The notifications service: turns saga events into messages for the buyer (the payment link,
//! the tickets with their QR codes, cancellations and refunds), queues them in its own table
//! in the same transaction as the processed event id, and sends them with retries and backoff.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_bus::{ORDERS, PAYMENTS, TICKETS};
use holdfast_notify::{Attachment, Email, Mailer, MailerSettings, SmsSender, SmsSettings};
use holdfast_persistence::{CheckoutTx, NotificationRow};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::breaker::{self, Circuit};
use crate::error::Error;
use crate::events::{Envelope, Item, SagaEvent};
use crate::messages::{self, Facts, Kind, Line, OrderAbout};
use crate::runner::Consumer;
use crate::service::Ctx;

const CONSUMER: &str = "notifications";

/// Settings of the notifications service.
#[derive(Clone, Debug, Default)]
pub struct NotifySettings {
    /// Unset: e-mails are recorded as `skipped` (nowhere to send them).
    pub smtp: Option<MailerSettings>,
    /// Unset: no SMS are queued.
    pub sms: Option<SmsSettings>,
    /// Attempts before a message is given up as `failed`.
    pub attempts_max: u32,
    /// First retry delay; doubles per attempt up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Where buyers see their orders, for links in messages.
    pub public_url: String,
    /// When the breakers around SMTP and the SMS provider open, and for how long.
    pub circuit: breaker::Options,
}

/// A QR attachment, rendered when the message is sent.
#[derive(Debug, Serialize, Deserialize)]
struct QrAttachment {
    filename: String,
    code: String,
    /// Written under the code: the event's name (absent in rows queued before).
    #[serde(default)]
    label: String,
}

pub(crate) struct Notifications {
    ctx: Ctx,
    settings: NotifySettings,
    mailer: Option<Mailer>,
    sms: Option<SmsSender>,
    smtp_circuit: Circuit,
    sms_circuit: Circuit,
    wake: Notify,
}

/// Where a message goes: an e-mail address and, optionally, a phone number for SMS.
pub(crate) struct Recipient {
    pub email: String,
    pub phone: Option<String>,
}

/// What to tell the buyer about one event, by e-mail and, with a phone number, by SMS.
struct Message {
    email: String,
    phone: Option<String>,
    subject: String,
    body: String,
    sms: String,
    attachments: Vec<QrAttachment>,
}

/// A lease on a message being sent; a sender that dies mid-send leaves it due again after this.
const SEND_LEASE_MS: i64 = 60_000;

impl Notifications {
    pub(crate) fn new(ctx: Ctx, settings: NotifySettings) -> anyhow::Result<Self> {
        let mailer = match &settings.smtp {
            Some(smtp) => {
                Some(Mailer::new(smtp).map_err(|e| anyhow::anyhow!("SMTP settings: {e}"))?)
            }
            None => None,
        };
        let sms = match &settings.sms {
            Some(sms) => {
                Some(SmsSender::new(sms).map_err(|e| anyhow::anyhow!("SMS settings: {e}"))?)
            }
            None => None,
        };
        Ok(Self {
            ctx,
            smtp_circuit: Circuit::new("smtp", settings.circuit),
            sms_circuit: Circuit::new("sms", settings.circuit),
            settings,
            mailer,
            sms,
            wake: Notify::new(),
        })
    }

    /// The buyer's message for `env`, rendered from the templates (`crate::messages`) with
    /// what `kept` says about the order's event; `None` for events that tell the buyer nothing.
    fn message(&self, env: &Envelope, kept: Kept) -> anyhow::Result<Option<Message>> {
        let order = env.order_id;
        let mut facts = Facts {
            order_id: order.to_string(),
            link: self.return_link(),
            ..Facts::default()
        };
        let lines = |items: &[Item]| {
            items
                .iter()
                .map(|i| Line {
                    ticket_type: i.ticket_type.clone(),
                    quantity: i.quantity,
                    price: i.price,
                })
                .collect::<Vec<_>>()
        };
        let mut about = kept.about;
        let mut attachments = vec![];
        let (kind, email, phone) = match &env.event {
            SagaEvent::PaymentRequested {
                email,
                phone,
                payment_url,
                amount,
                currency,
                expires_at,
                about: carried,
                items,
            } => {
                if let Some(carried) = carried {
                    about = carried.clone();
                }
                facts.payment_url = payment_url.clone();
                facts.amount = *amount;
                facts.currency = currency.clone();
                facts.expires_at_ms = Some(*expires_at);
                facts.lines = lines(if items.is_empty() { &kept.items } else { items });
                (Kind::PaymentLink, email, phone)
            }
            SagaEvent::TicketsIssued {
                email,
                phone,
                tickets,
                ..
            } => {
                facts.tickets = tickets.len();
                for t in tickets {
                    match facts
                        .lines
                        .iter_mut()
                        .find(|l| l.ticket_type == t.ticket_type)
                    {
                        Some(line) => line.quantity += 1,
                        None => facts.lines.push(Line {
                            ticket_type: t.ticket_type.clone(),
                            quantity: 1,
                            price: 0,
                        }),
                    }
                }
                let event = match file_name_part(&about.event_name) {
                    name if name.is_empty() => "ticket".to_owned(),
                    name => name,
                };
                attachments = tickets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| QrAttachment {
                        filename: format!(
                            "{event}-{}-{}.png",
                            file_name_part(&type_name(&about, &t.ticket_type)),
                            i + 1
                        ),
                        code: t.code.clone(),
                        label: about.event_name.clone(),
                    })
                    .collect();
                (Kind::TicketsIssued, email, phone)
            }
            SagaEvent::OrderCancelled {
                email,
                phone,
                reason,
            } => {
                facts.reason = reason.clone();
                (Kind::OrderCancelled, email, phone)
            }
            SagaEvent::OrderRefunded {
                email,
                phone,
                amount,
                currency,
                reason,
                automatic,
                ..
            } => {
                facts.reason = reason.clone();
                facts.amount = *amount;
                facts.currency = currency.clone();
                let kind = if *automatic {
                    Kind::RefundAutomatic
                } else {
                    Kind::OrderRefunded
                };
                (kind, email, phone)
            }
            _ => return Ok(None),
        };
        let rendered = messages::render(kind, &about, &facts)
            .map_err(|e| anyhow::anyhow!("rendering the {kind:?} message: {e}"))?;
        Ok(Some(Message {
            email: email.clone(),
            phone: phone.clone(),
            subject: rendered.subject,
            body: rendered.body,
            sms: rendered.sms,
            attachments,
        }))
    }

    async fn queue(&self, tx: &mut CheckoutTx, env: &Envelope) -> anyhow::Result<()> {
        if let SagaEvent::OrderCreated { about, items, .. } = &env.event {
            if let Some(about) = about
                && tx.first_time(CONSUMER, env.id).await?
            {
                let kept = Kept {
                    about: about.clone(),
                    items: items.clone(),
                };
                tx.put_notification_order(env.order_id, &serde_json::to_string(&kept)?)
                    .await?;
            }
            return Ok(());
        }
        let kept = match tx.notification_order(env.order_id).await? {
            Some(json) => serde_json::from_str(&json).unwrap_or_default(),
            None => Kept::default(),
        };
        let Some(message) = self.message(env, kept)? else {
            return Ok(());
        };
        let attachments = (!message.attachments.is_empty())
            .then(|| serde_json::to_vec(&message.attachments).expect("attachments serialise"));
        let rows = self.rows(
            env.order_id,
            &Recipient {
                email: message.email,
                phone: message.phone,
            },
            (message.subject, message.body, message.sms),
            attachments,
            |channel| notification_id(env.id, channel),
        );
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        for row in &rows {
            tx.insert_notification(row).await?;
        }
        Ok(())
    }

    /// The rows of one message: the e-mail (recorded `skipped` without an SMTP server) and,
    /// with a phone number and an SMS provider, the SMS; `id` names each row by channel.
    pub(crate) fn rows(
        &self,
        order_id: Uuid,
        to: &Recipient,
        (subject, body, sms): (String, String, String),
        attachments: Option<Vec<u8>>,
        id: impl Fn(&str) -> Uuid,
    ) -> Vec<NotificationRow> {
        let now = self.ctx.now_ms();
        let mut rows = Vec::new();
        if !to.email.is_empty() {
            rows.push(NotificationRow {
                id: id("email"),
                order_id,
                channel: "email".to_owned(),
                recipient: to.email.clone(),
                subject,
                body,
                attachments,
                status: if self.mailer.is_some() {
                    "pending"
                } else {
                    "skipped"
                }
                .to_owned(),
                attempts: 0,
                next_attempt_at: now,
                last_error: self
                    .mailer
                    .is_none()
                    .then(|| "no SMTP server is configured (HOLDFAST_SMTP_URL)".to_owned()),
                created_at: now,
                sent_at: None,
            });
        }
        if let (Some(phone), Some(_)) = (&to.phone, &self.sms) {
            rows.push(NotificationRow {
                id: id("sms"),
                order_id,
                channel: "sms".to_owned(),
                recipient: phone.clone(),
                subject: String::new(),
                body: sms,
                attachments: None,
                status: "pending".to_owned(),
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
                created_at: now,
                sent_at: None,
            });
        }
        rows
    }

    /// The return page: a page any browser shows, without signing in.
    pub(crate) fn return_link(&self) -> String {
        format!(
            "{}/v1/payments/vnpay/return",
            self.settings.public_url.trim_end_matches('/')
        )
    }

    /// Wakes the sender (after a commit that queued messages).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Sends due messages until stopped.
    pub(crate) async fn send_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.send_due().await {
                tracing::warn!(error = %e, "sending notifications failed");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Sends through `circuit`: refused at once (a transient failure, retried with the
    /// message's backoff) while it is open. Only transient failures count against the
    /// provider; a permanent one is the message's fault (a bad address), not the provider's.
    async fn through<T>(
        &self,
        circuit: &Circuit,
        send: impl std::future::Future<Output = Result<T, holdfast_notify::Error>>,
    ) -> Result<T, holdfast_notify::Error> {
        let permit =
            circuit
                .admit(self.ctx.now_ms())
                .map_err(|open| holdfast_notify::Error::Transient {
                    reason: open.to_string(),
                })?;
        let result = send.await;
        permit.record(
            !matches!(&result, Err(e) if e.is_transient()),
            self.ctx.now_ms(),
        );
        result
    }

    pub(crate) async fn send_due(&self) -> anyhow::Result<()> {
        let store = &self.ctx.store;
        let now = self.ctx.now_ms();
        for n in store.notifications_due(now, 50).await? {
            if !store
                .notification_claim(n.id, n.next_attempt_at, now + SEND_LEASE_MS)
                .await?
            {
                continue;
            }
            let result = match (n.channel.as_str(), &self.mailer, &self.sms) {
                ("email", Some(mailer), _) => match email(&n) {
                    Ok(email) => self.through(&self.smtp_circuit, mailer.send(&email)).await,
                    Err(e) => Err(holdfast_notify::Error::Permanent {
                        reason: e.to_string(),
                    }),
                },
                ("sms", _, Some(sms)) => {
                    self.through(&self.sms_circuit, sms.send(&n.recipient, &n.body))
                        .await
                }
                (channel, _, _) => Err(holdfast_notify::Error::Permanent {
                    reason: format!("no provider is configured for {channel}"),
                }),
            };
            let now = self.ctx.now_ms();
            match result {
                Ok(_) => {
                    store
                        .notification_attempted(n.id, "sent", now, None, now)
                        .await?;
                    metrics::counter!("holdfast_notifications_sent_total", "channel" => n.channel.clone())
                        .increment(1);
                }
                Err(e) => {
                    let attempts = u32::try_from(n.attempts + 1).unwrap_or(u32::MAX);
                    let give_up = !e.is_transient() || attempts >= self.settings.attempts_max;
                    let delay = self
                        .settings
                        .backoff_min
                        .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1)))
                        .min(self.settings.backoff_max);
                    let next = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                    let status = if give_up { "failed" } else { "pending" };
                    tracing::warn!(notification = %n.id, order = %n.order_id, channel = %n.channel, attempts, give_up, error = %e, "sending a notification failed");
                    metrics::counter!("holdfast_notifications_failed_attempts_total", "channel" => n.channel.clone()).increment(1);
                    store
                        .notification_attempted(n.id, status, next, Some(&e.to_string()), now)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

/// The e-mail of a queued notification, its QR codes rendered as PNG attachments.
fn email(n: &NotificationRow) -> anyhow::Result<Email> {
    let qrs: Vec<QrAttachment> = match &n.attachments {
        Some(bytes) => serde_json::from_slice(bytes)?,
        None => vec![],
    };
    let attachments = qrs
        .into_iter()
        .map(|a| {
            Ok(Attachment {
                filename: a.filename,
                content_type: "image/png".to_owned(),
                bytes: holdfast_tickets::qr_png_labelled(&a.code, &a.label)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Email {
        to: n.recipient.clone(),
        subject: n.subject.clone(),
        text_body: n.body.clone(),
        attachments,
        // The same Message-ID on every attempt lets receivers drop a duplicate.
        message_id: Some(n.id.simple().to_string()),
        ..Email::default()
    })
}

/// What the notifications service keeps about an order from its `OrderCreated`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    about: OrderAbout,
    #[serde(default)]
    items: Vec<Item>,
}

/// A ticket type's display name, its code when the order's event is not known.
fn type_name(about: &OrderAbout, code: &str) -> String {
    about
        .ticket_types
        .iter()
        .find(|(c, _)| c == code)
        .map_or_else(|| code.to_owned(), |(_, name)| name.clone())
}

/// `text` as part of an attachment's file name: letters and digits (any script), the rest
/// runs of `-`.
fn file_name_part(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(60).collect()
}

/// The deterministic id keeps a redelivered event from queueing a second message.
fn notification_id(event: Uuid, channel: &str) -> Uuid {
    holdfast_actors::domain::derived_id(&format!("notification:{channel}"), &event.to_string())
}

#[async_trait]
impl Consumer for Notifications {
    fn group(&self) -> &'static str {
        CONSUMER
    }

    fn topics(&self) -> &'static [&'static str] {
        &[ORDERS, PAYMENTS, TICKETS]
    }

    /// The events [`Notifications::message`] writes a message for.
    fn in_tx(&self, env: &Envelope) -> bool {
        matches!(
            env.event,
            SagaEvent::OrderCreated { .. }
                | SagaEvent::PaymentRequested { .. }
                | SagaEvent::TicketsIssued { .. }
                | SagaEvent::OrderCancelled { .. }
                | SagaEvent::OrderRefunded { .. }
        )
    }

    async fn handle_in(&self, tx: &mut CheckoutTx, env: &Envelope) -> Result<(), Error> {
        self.queue(tx, env).await.map_err(Error::from)
    }

    fn committed(&self, _env: &Envelope) {
        self.wake.notify_one();
    }

    /// Events with a message are database work ([`Consumer::handle_in`]); the rest tell the
    /// buyer nothing.
    async fn handle(&self, _env: &Envelope) -> Result<(), Error> {
        Ok(())
    }
}
