//! The payments service: a VNPAY payment page per order, the IPN webhook that settles it, the
//! return page, and `querydr` for payments whose result never arrived.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_bus::ORDERS;
use holdfast_persistence::{CheckoutTx, PaymentRow};
use holdfast_vnpay::ipn::{self, IpnOutcome, RspCode};
use holdfast_vnpay::{PaymentRequest, VerifiedReturn};
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

use crate::api::{IpnAnswer, ReturnPage};
use crate::decide;
use crate::error::Error;
use crate::events::{Envelope, SagaEvent};
use crate::model::{Currency, Money, PaymentStatus};
use crate::runner::Consumer;
use crate::service::Ctx;

const CONSUMER: &str = "payments";

/// Settings of the payments service.
#[derive(Clone, Debug)]
pub struct PaymentSettings {
    pub vnpay: holdfast_vnpay::Config,
    /// VNPAY's API endpoint for `querydr`; unset means a payment without a result after its
    /// window is taken as failed.
    pub api_url: Option<String>,
    /// Longest payment window; it never outlasts the hold.
    pub window: Duration,
    /// How long after the window closes a pending payment is reconciled.
    pub reconcile_grace: Duration,
    /// How often pending payments are looked at.
    pub reconcile_every: Duration,
}

pub(crate) struct Payments {
    ctx: Ctx,
    settings: PaymentSettings,
    http: reqwest::Client,
}

/// The result to record for a payment.
struct Settlement {
    paid: bool,
    amount: u64,
    reason: String,
    response_code: Option<String>,
    transaction_no: Option<String>,
    bank_code: Option<String>,
}

/// A stored payment's status; one it cannot read is a broken invariant.
fn payment_status(p: &PaymentRow) -> Result<PaymentStatus, Error> {
    PaymentStatus::parse(&p.status)
        .map_err(|e| Error::permanent(format!("payment of order {}: {e}", p.order_id)))
}

fn payment_total(p: &PaymentRow) -> Result<Money, Error> {
    Currency::parse(&p.currency)
        .map(|c| Money::new(p.amount, c))
        .map_err(|e| Error::permanent(format!("payment of order {}: {e}", p.order_id)))
}

fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Payments {
    pub(crate) fn new(ctx: Ctx, settings: PaymentSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .unwrap_or_default();
        Self {
            ctx,
            settings,
            http,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn order_created(
        &self,
        tx: &mut CheckoutTx,
        env: &Envelope,
        email: &str,
        phone: Option<&str>,
        amount: i64,
        currency: &str,
        hold_expires_at: i64,
    ) -> anyhow::Result<()> {
        let now = self.ctx.now_ms();
        let window_ms = i64::try_from(self.settings.window.as_millis()).unwrap_or(i64::MAX);
        let expires_at = decide::window_ends_at(now, hold_expires_at, window_ms);
        let total = Money::new(
            amount,
            Currency::parse(currency)
                .map_err(|e| Error::permanent(format!("order {}: {e}", env.order_id)))?,
        );
        let request = PaymentRequest {
            txn_ref: env.order_id.to_string(),
            amount_minor: total.minor_units(),
            order_info: format!("Holdfast order {}", env.order_id),
            ip_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            create_date: datetime(now),
            expire_date: datetime(expires_at),
            bank_code: None,
            locale: None,
        };
        let refused = decide::payment_refused(total, now, expires_at);
        let url = match refused {
            Some(_) => Err(()),
            None => holdfast_vnpay::payment_url(&self.settings.vnpay, &request).map_err(|_| ()),
        };
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        let (status, url, event) = match url {
            Ok(url) => (
                PaymentStatus::Pending,
                url.clone(),
                SagaEvent::PaymentRequested {
                    email: email.to_owned(),
                    phone: phone.map(str::to_owned),
                    payment_url: url,
                    expires_at,
                    amount,
                    currency: currency.to_owned(),
                },
            ),
            Err(()) => (
                PaymentStatus::Failed,
                String::new(),
                SagaEvent::PaymentFailed {
                    reason: refused
                        .unwrap_or_else(|| "the payment could not be created".to_owned()),
                    response_code: None,
                },
            ),
        };
        let payment = PaymentRow {
            order_id: env.order_id,
            amount,
            currency: currency.to_owned(),
            status: status.as_str().to_owned(),
            payment_url: url,
            expires_at,
            transaction_no: None,
            bank_code: None,
            response_code: None,
            created_at: now,
            updated_at: now,
        };
        if tx.insert_payment(&payment).await? {
            tx.outbox(&[Envelope::new(env.order_id, now, event).record()])
                .await?;
        }
        Ok(())
    }

    async fn order_refunded(&self, tx: &mut CheckoutTx, env: &Envelope) -> anyhow::Result<()> {
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        // The money goes back through VNPAY's refund run; the payment says so.
        if let Some(mut payment) = tx.payment(env.order_id).await?
            && let Some(next) = decide::payment_on_refund(payment_status(&payment)?)
        {
            payment.status = next.as_str().to_owned();
            payment.updated_at = self.ctx.now_ms();
            tx.update_payment(&payment).await?;
        }
        Ok(())
    }

    /// Records a settlement once; returns the IPN answer for it.
    async fn settle(&self, order_id: Uuid, result: Settlement) -> anyhow::Result<RspCode> {
        let now = self.ctx.now_ms();
        let mut tx = self.ctx.store.checkout_tx().await?;
        let Some(mut payment) = tx.payment(order_id).await? else {
            return Ok(RspCode::OrderNotFound);
        };
        let next = match decide::settle(
            payment_status(&payment)?,
            payment_total(&payment)?,
            result.amount,
            result.paid,
        ) {
            Ok(next) => next,
            Err(answer) => return Ok(answer),
        };
        payment.status = next.as_str().to_owned();
        payment.transaction_no = result.transaction_no.clone();
        payment.bank_code = result.bank_code;
        payment.response_code = result.response_code.clone();
        payment.updated_at = now;
        tx.update_payment(&payment).await?;
        let event = if result.paid {
            SagaEvent::PaymentSucceeded {
                amount: payment.amount,
                transaction_no: result.transaction_no,
            }
        } else {
            SagaEvent::PaymentFailed {
                reason: result.reason,
                response_code: result.response_code,
            }
        };
        tx.outbox(&[Envelope::new(order_id, now, event).record()])
            .await?;
        tx.commit().await?;
        self.ctx.relay.notify_one();
        metrics::counter!("holdfast_payments_settled_total", "result" => if result.paid { "paid" } else { "failed" }).increment(1);
        tracing::info!(order = %order_id, result = next.as_str(), transaction = payment.transaction_no.as_deref().unwrap_or(""), "payment settled");
        Ok(RspCode::ConfirmSuccess)
    }

    /// `GET /v1/payments/vnpay/ipn`: signature (constant time), order, amount and state are
    /// checked; the result is durable before VNPAY hears `00`.
    pub(crate) async fn ipn(&self, query: &[(String, String)]) -> IpnAnswer {
        let code = match holdfast_vnpay::verify(&self.settings.vnpay, query) {
            Err(e) => {
                tracing::warn!(error = %e, "IPN refused");
                RspCode::for_error(&e)
            }
            Ok(verified) => match self.ipn_verified(&verified).await {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!(error = %e, "recording an IPN failed");
                    RspCode::UnknownError
                }
            },
        };
        let answer = ipn::IpnResponse::from(code);
        IpnAnswer {
            rsp_code: answer.rsp_code,
            message: answer.message,
        }
    }

    async fn ipn_verified(&self, verified: &VerifiedReturn) -> anyhow::Result<RspCode> {
        let Ok(order_id) = verified.txn_ref.parse::<Uuid>() else {
            return Ok(RspCode::OrderNotFound);
        };
        let view = match self.ctx.store.payment(order_id).await? {
            None => decide::ipn_order(None),
            Some(p) => decide::ipn_order(Some((payment_status(&p)?, payment_total(&p)?))),
        };
        let decision = ipn::decide(verified, view);
        if decision.outcome == IpnOutcome::Ignore {
            return Ok(decision.code);
        }
        self.settle(
            order_id,
            Settlement {
                paid: decision.outcome == IpnOutcome::Paid,
                amount: verified.amount_minor,
                reason: if verified.response_code == "24" {
                    "cancelled by the buyer".to_owned()
                } else {
                    format!(
                        "VNPAY answered {} / {}",
                        verified.response_code, verified.transaction_status
                    )
                },
                response_code: Some(verified.response_code.clone()),
                transaction_no: verified.transaction_no.clone(),
                bank_code: verified.bank_code.clone(),
            },
        )
        .await
    }

    /// `GET /v1/payments/vnpay/return`: what the signed parameters say, and where the order is.
    pub(crate) async fn return_page(&self, query: &[(String, String)]) -> ReturnPage {
        match holdfast_vnpay::verify(&self.settings.vnpay, query) {
            Err(_) => ReturnPage {
                verified: false,
                order_id: None,
                paid: false,
                order_status: None,
            },
            Ok(verified) => {
                let status = match verified.txn_ref.parse::<Uuid>() {
                    Ok(id) => self.ctx.store.payment(id).await.ok().flatten().map(|p| {
                        match PaymentStatus::parse(&p.status) {
                            Ok(PaymentStatus::Paid) => "paid; your tickets are being issued",
                            Ok(PaymentStatus::Pending) => "waiting for VNPAY's confirmation",
                            Ok(PaymentStatus::Refunded) => "refunded",
                            Ok(PaymentStatus::Failed) | Err(_) => "not paid",
                        }
                        .to_owned()
                    }),
                    Err(_) => None,
                };
                ReturnPage {
                    verified: true,
                    paid: verified.is_paid(),
                    order_id: Some(verified.txn_ref),
                    order_status: status,
                }
            }
        }
    }

    /// Settles payments still pending after their window: asks VNPAY (`querydr`) when an API
    /// URL is set, else takes them as failed.
    pub(crate) async fn reconcile(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.settings.reconcile_every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = self.reconcile_round().await {
                tracing::warn!(error = %e, "reconciling pending payments failed");
            }
        }
    }

    async fn reconcile_round(&self) -> anyhow::Result<()> {
        let grace = i64::try_from(self.settings.reconcile_grace.as_millis()).unwrap_or(0);
        let due = self
            .ctx
            .store
            .payments_pending_before(self.ctx.now_ms() - grace, 100)
            .await?;
        for payment in due {
            let settlement = match &self.settings.api_url {
                Some(url) => match self.querydr(url, &payment).await {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(order = %payment.order_id, error = %e, "querydr failed");
                        continue;
                    }
                },
                None => Settlement {
                    paid: false,
                    amount: u64::try_from(payment.amount).unwrap_or(0),
                    reason: "the payment window closed without a result".to_owned(),
                    response_code: None,
                    transaction_no: None,
                    bank_code: None,
                },
            };
            let code = self.settle(payment.order_id, settlement).await?;
            tracing::info!(order = %payment.order_id, result = code.code(), "reconciled a pending payment");
        }
        Ok(())
    }

    /// Asks VNPAY for a payment's result; `None` while VNPAY still has it in progress.
    async fn querydr(&self, url: &str, payment: &PaymentRow) -> anyhow::Result<Option<Settlement>> {
        let request = holdfast_vnpay::querydr::QueryDrRequest {
            request_id: Uuid::new_v4().simple().to_string(),
            txn_ref: payment.order_id.to_string(),
            transaction_date: datetime(payment.created_at),
            create_date: datetime(self.ctx.now_ms()),
            ip_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            order_info: format!("Query order {}", payment.order_id),
        };
        let body = holdfast_vnpay::querydr::request_body(&self.settings.vnpay, &request)?;
        let response: holdfast_vnpay::querydr::QueryDrResponse = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let result = holdfast_vnpay::querydr::verify_response(&self.settings.vnpay, &response)?;
        let amount = u64::try_from(payment.amount).unwrap_or(0);
        if result.is_pending() {
            return Ok(None);
        }
        Ok(Some(Settlement {
            paid: result.is_paid() && result.amount_minor == Some(amount),
            amount,
            reason: if result.is_not_found() {
                "the buyer never paid; the payment window closed".to_owned()
            } else {
                format!(
                    "VNPAY querydr answered {} / {}",
                    result.response_code, result.transaction_status
                )
            },
            response_code: Some(result.transaction_status.clone()),
            transaction_no: result.transaction_no,
            bank_code: result.bank_code,
        }))
    }
}

#[async_trait]
impl Consumer for Payments {
    fn group(&self) -> &'static str {
        CONSUMER
    }

    fn topics(&self) -> &'static [&'static str] {
        &[ORDERS]
    }

    fn in_tx(&self, env: &Envelope) -> bool {
        matches!(
            env.event,
            SagaEvent::OrderCreated { .. } | SagaEvent::OrderRefunded { .. }
        )
    }

    async fn handle_in(&self, tx: &mut CheckoutTx, env: &Envelope) -> Result<(), Error> {
        let handled: anyhow::Result<()> = match &env.event {
            SagaEvent::OrderCreated {
                email,
                phone,
                amount,
                currency,
                hold_expires_at,
                ..
            } => {
                self.order_created(
                    tx,
                    env,
                    email,
                    phone.as_deref(),
                    *amount,
                    currency,
                    *hold_expires_at,
                )
                .await
            }
            SagaEvent::OrderRefunded { .. } => self.order_refunded(tx, env).await,
            _ => Ok(()),
        };
        handled.map_err(Error::from)
    }

    fn committed(&self, _env: &Envelope) {
        self.ctx.relay.notify_one();
    }

    /// Every event this service handles is database work ([`Consumer::handle_in`]).
    async fn handle(&self, _env: &Envelope) -> Result<(), Error> {
        Ok(())
    }
}
