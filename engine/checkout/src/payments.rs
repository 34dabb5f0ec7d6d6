//! The payments service: a VNPAY payment page per order, the IPN webhook that settles it, the
//! return page, and `querydr` for payments whose result never arrived.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use holdfast_bus::ORDERS;
use holdfast_persistence::{CheckoutTx, PaymentRefundRow, PaymentRow};
use holdfast_vnpay::ipn::{self, IpnOutcome, RspCode};
use holdfast_vnpay::refund::{
    RefundKind, RefundOutcome, RefundRequest, RefundResponse, RefundResult,
};
use holdfast_vnpay::{PaymentRequest, VerifiedReturn};
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::api::{CheckoutError, FailedRefundView, IpnAnswer, ReturnPage};
use crate::breaker::{self, Circuit};
use crate::decide;
use crate::error::Error;
use crate::events::{Envelope, SagaEvent};
use crate::model::{Currency, Money, PaymentStatus, RefundStatus};
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
    /// How refunds are paid back through VNPAY's refund API.
    pub refunds: RefundSettings,
    /// When the breakers around `querydr` and the refund API open, and for how long.
    pub circuit: breaker::Options,
}

/// How the payments service pays refunds back.
#[derive(Clone, Copy, Debug)]
pub struct RefundSettings {
    /// When to try again after a refusal or a lost answer, and how often at most.
    pub backoff: decide::Backoff,
    /// How often due refunds are looked at (besides at once when one is recorded).
    pub every: Duration,
    /// How long one call of VNPAY's API (a refund, a `querydr`) waits for the answer.
    pub timeout: Duration,
}

impl Default for RefundSettings {
    fn default() -> Self {
        Self {
            backoff: decide::Backoff {
                first_ms: 5_000,
                max_ms: 600_000,
                attempts_max: 8,
            },
            every: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

pub(crate) struct Payments {
    ctx: Ctx,
    settings: PaymentSettings,
    http: reqwest::Client,
    /// Wakes the refund loop when a refund is recorded.
    refund_wake: Notify,
    querydr_circuit: Circuit,
    refund_circuit: Circuit,
}

/// Refunds one round of the refund loop takes at most.
const REFUNDS_PER_ROUND: u32 = 50;

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

/// What the order's other refunds (than `id`) take of its payment: all but the failed ones.
fn counted(refunds: &[PaymentRefundRow], id: Uuid) -> i64 {
    refunds
        .iter()
        .filter(|r| r.id != id && r.status != RefundStatus::Failed.as_str())
        .map(|r| r.amount)
        .sum()
}

fn attempts(refund: &PaymentRefundRow) -> u32 {
    u32::try_from(refund.attempts).unwrap_or(u32::MAX)
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
        let querydr_circuit = Circuit::new("vnpay_querydr", settings.circuit);
        let refund_circuit = Circuit::new("vnpay_refund", settings.circuit);
        Self {
            ctx,
            settings,
            http,
            refund_wake: Notify::new(),
            querydr_circuit,
            refund_circuit,
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
        let (about, items) = match &env.event {
            SagaEvent::OrderCreated { about, items, .. } => (about.clone(), items.clone()),
            _ => (None, vec![]),
        };
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
                    about,
                    items,
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

    /// `OrderRefunded`: records the refund's money to pay back through VNPAY (never more than
    /// what is left of the payment), and marks the payment `refunded` once nothing is left.
    async fn order_refunded(
        &self,
        tx: &mut CheckoutTx,
        env: &Envelope,
        refund_id: Option<Uuid>,
        amount: i64,
    ) -> anyhow::Result<()> {
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        let Some(mut payment) = tx.payment(env.order_id).await? else {
            return Ok(()); // a free order: nothing was paid
        };
        let id = refund_id.unwrap_or_else(|| decide::automatic_refund_id(env.order_id));
        let refunds = tx.payment_refunds_of_order(env.order_id).await?;
        if refunds.iter().any(|r| r.id == id) {
            return Ok(());
        }
        let status = payment_status(&payment)?;
        let Some((amount, next)) =
            decide::payment_on_refund(status, payment.amount, counted(&refunds, id), amount)
        else {
            return Ok(());
        };
        let now = self.ctx.now_ms();
        tx.insert_payment_refund(&PaymentRefundRow {
            id,
            order_id: env.order_id,
            amount,
            status: RefundStatus::Processing.as_str().to_owned(),
            attempts: 0,
            uncertain: false,
            next_attempt_at: now,
            response_code: None,
            message: None,
            transaction_no: None,
            created_at: now,
            updated_at: now,
        })
        .await?;
        if next != status {
            payment.status = next.as_str().to_owned();
            payment.updated_at = now;
            tx.update_payment(&payment).await?;
        }
        Ok(())
    }

    /// Refunds VNPAY kept refusing, for an admin.
    pub(crate) async fn failed_refunds(&self) -> Result<Vec<FailedRefundView>, CheckoutError> {
        let rows = self
            .ctx
            .store
            .payment_refunds_failed(REFUNDS_PER_ROUND)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| FailedRefundView {
                id: r.id,
                order_id: holdfast_actors::OrderId(r.order_id),
                amount: r.amount,
                attempts: r.attempts,
                response_code: r.response_code,
                message: r.message,
                failed_at_ms: r.updated_at,
            })
            .collect())
    }

    /// An admin's retry of a failed refund: a fresh set of attempts, at once.
    pub(crate) async fn retry_refund(&self, id: Uuid) -> Result<(), CheckoutError> {
        if !self
            .ctx
            .store
            .payment_refund_retry(id, self.ctx.now_ms())
            .await?
        {
            return Err(CheckoutError::RefundNotFound);
        }
        tracing::info!(refund = %id, "a failed refund is retried");
        self.refund_wake.notify_one();
        Ok(())
    }

    /// Pays refunds back through VNPAY: each due refund once per round, at once when one is
    /// recorded, and every `refunds.every`.
    pub(crate) async fn refund_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.refund_round().await {
                tracing::warn!(error = %e, "paying refunds back failed");
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.refunds.every) => {}
                () = self.refund_wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn refund_round(&self) -> anyhow::Result<()> {
        let due = self
            .ctx
            .store
            .payment_refunds_due(self.ctx.now_ms(), REFUNDS_PER_ROUND)
            .await?;
        for refund in due {
            // While VNPAY's refund API is cut off, a due refund waits without spending an
            // attempt; the first one after the cool-down is the breaker's probe.
            if let Err(open) = self.refund_circuit.check(self.ctx.now_ms()) {
                tracing::debug!(refund = %refund.id, error = %open, "the refund waits");
                break;
            }
            if let Err(e) = self.pay_back(refund.id).await {
                tracing::warn!(refund = %refund.id, order = %refund.order_id, error = %e, "a refund attempt failed");
            }
        }
        Ok(())
    }

    /// One attempt at refund `id`: claimed under its row lock while due (so two nodes never
    /// send the same attempt), counted as possibly taken before it is sent (a crash
    /// mid-call leaves it `uncertain`), then VNPAY's answer decides the next step.
    async fn pay_back(&self, id: Uuid) -> anyhow::Result<()> {
        let backoff = self.settings.refunds.backoff;
        let now = self.ctx.now_ms();
        let mut tx = self.ctx.store.checkout_tx().await?;
        let Some(mut refund) = tx.payment_refund(id).await? else {
            return Ok(());
        };
        if refund.status != RefundStatus::Processing.as_str() || refund.next_attempt_at > now {
            return Ok(());
        }
        let Some(payment) = tx.payment(refund.order_id).await? else {
            return Ok(());
        };
        let earlier = counted(&tx.payment_refunds_of_order(refund.order_id).await?, id);
        let earlier_uncertain = refund.uncertain;
        refund.attempts += 1;
        refund.uncertain = true;
        refund.next_attempt_at = now.saturating_add(backoff.after(attempts(&refund)));
        refund.updated_at = now;
        tx.update_payment_refund(&refund).await?;
        tx.commit().await?;

        let kind = decide::refund_kind(payment.amount, earlier, refund.amount);
        let reconciled =
            earlier_uncertain && kind == RefundKind::Full && self.querydr_refunded(&payment).await;
        let (answer, result) = if reconciled {
            (decide::RefundAnswer::AlreadyRequested, None)
        } else {
            self.send_refund(&payment, &refund, kind).await
        };
        let step = decide::refund_attempted(
            answer,
            attempts(&refund),
            earlier_uncertain,
            backoff,
            self.ctx.now_ms(),
        );
        self.record_attempt(id, step, result).await
    }

    /// Stores the step an attempt decided; a settled refund is announced (`RefundSettled`).
    async fn record_attempt(
        &self,
        id: Uuid,
        step: decide::RefundStep,
        result: Option<RefundResult>,
    ) -> anyhow::Result<()> {
        let now = self.ctx.now_ms();
        let mut tx = self.ctx.store.checkout_tx().await?;
        let Some(mut refund) = tx.payment_refund(id).await? else {
            return Ok(());
        };
        if refund.status != RefundStatus::Processing.as_str() {
            return Ok(());
        }
        if let Some(result) = &result {
            refund.response_code = Some(result.response_code.clone());
            refund.message = Some(result.message.clone());
            if result.outcome == RefundOutcome::Accepted {
                refund.transaction_no.clone_from(&result.transaction_no);
            }
        }
        refund.updated_at = now;
        let settled = match step {
            decide::RefundStep::Retry { at_ms, uncertain } => {
                refund.next_attempt_at = at_ms;
                refund.uncertain = uncertain;
                None
            }
            decide::RefundStep::Refunded => Some(RefundStatus::Refunded),
            decide::RefundStep::Failed => Some(RefundStatus::Failed),
        };
        if let Some(status) = settled {
            status.as_str().clone_into(&mut refund.status);
            refund.uncertain = false;
            let event = SagaEvent::RefundSettled {
                refund_id: id,
                refunded: status == RefundStatus::Refunded,
                response_code: refund.response_code.clone(),
                message: refund.message.clone(),
            };
            tx.outbox(&[Envelope::new(refund.order_id, now, event).record()])
                .await?;
        }
        tx.update_payment_refund(&refund).await?;
        tx.commit().await?;
        match settled {
            Some(RefundStatus::Refunded) => {
                metrics::counter!("holdfast_refunds_paid_back_total").increment(1);
                tracing::info!(refund = %id, order = %refund.order_id, amount = refund.amount, attempts = refund.attempts, "refund paid back through VNPAY");
            }
            Some(_) => {
                metrics::counter!("holdfast_refunds_failed_total").increment(1);
                tracing::error!(refund = %id, order = %refund.order_id, amount = refund.amount, attempts = refund.attempts, code = refund.response_code.as_deref().unwrap_or(""), "VNPAY kept refusing a refund; it is failed and needs an admin");
            }
            None => {
                tracing::warn!(refund = %id, order = %refund.order_id, attempts = refund.attempts, code = refund.response_code.as_deref().unwrap_or(""), "a refund attempt did not go through; retrying later");
            }
        }
        if settled.is_some() {
            self.ctx.relay.notify_one();
        }
        Ok(())
    }

    /// Sends one refund request; what it answered, as the decision reads it.
    async fn send_refund(
        &self,
        payment: &PaymentRow,
        refund: &PaymentRefundRow,
        kind: RefundKind,
    ) -> (decide::RefundAnswer, Option<RefundResult>) {
        let Some(url) = &self.settings.api_url else {
            tracing::warn!(refund = %refund.id, "no VNPAY API URL is set: refunds cannot be paid back");
            return (decide::RefundAnswer::Refused, None);
        };
        let request = RefundRequest {
            request_id: Uuid::new_v4().simple().to_string(),
            kind,
            txn_ref: payment.order_id.to_string(),
            amount_minor: u64::try_from(refund.amount).unwrap_or(0),
            transaction_no: payment.transaction_no.clone(),
            transaction_date: datetime(payment.created_at),
            create_by: "holdfast".to_owned(),
            create_date: datetime(self.ctx.now_ms()),
            ip_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            // Names the refund: VNPAY (and its stand-in) answers `94` to the same refund again.
            order_info: format!("Holdfast refund {}", refund.id),
        };
        let permit = match self.refund_circuit.admit(self.ctx.now_ms()) {
            Ok(permit) => permit,
            Err(open) => {
                // Not sent: nothing can have been refunded, so the refund is retried (with
                // backoff) as after a refusal.
                tracing::warn!(refund = %refund.id, order = %refund.order_id, error = %open, "a refund was not sent");
                return (decide::RefundAnswer::Refused, None);
            }
        };
        let answer = async {
            let body = holdfast_vnpay::refund::request_body(&self.settings.vnpay, &request)?;
            let response: RefundResponse = self.post_json(url, &body).await?;
            anyhow::Ok(holdfast_vnpay::refund::verify_response(
                &self.settings.vnpay,
                &response,
            )?)
        }
        .await;
        // VNPAY answering is a success for the breaker, a refusal included; its `99` (an
        // error on its side), a timeout, a broken connection or an answer that does not
        // verify are failures.
        permit.record(
            matches!(&answer, Ok(r) if r.outcome != RefundOutcome::Error),
            self.ctx.now_ms(),
        );
        match answer {
            Ok(result) => {
                let answer = match result.outcome {
                    RefundOutcome::Accepted => decide::RefundAnswer::Accepted,
                    RefundOutcome::AlreadyRequested => decide::RefundAnswer::AlreadyRequested,
                    RefundOutcome::Refused | RefundOutcome::Error => decide::RefundAnswer::Refused,
                };
                (answer, Some(result))
            }
            Err(e) => {
                tracing::warn!(refund = %refund.id, order = %refund.order_id, error = %e, "no answer from VNPAY to a refund");
                (decide::RefundAnswer::Lost, None)
            }
        }
    }

    /// Whether `querydr` says the payment was refunded in full (the answer to an earlier full
    /// refund was lost); any failure says no, and the refund is sent again.
    async fn querydr_refunded(&self, payment: &PaymentRow) -> bool {
        let Some(url) = &self.settings.api_url else {
            return false;
        };
        match self.querydr_raw(url, payment).await {
            Ok(result) => {
                decide::refunded_per_querydr(&result.response_code, &result.transaction_type)
            }
            Err(e) => {
                tracing::warn!(order = %payment.order_id, error = %e, "querydr before a refund retry failed");
                false
            }
        }
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
        let result = self.querydr_raw(url, payment).await?;
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

    /// POSTs `body` as JSON to one of VNPAY's API URLs, within the refund timeout, and reads
    /// the JSON answer (not yet verified).
    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        Ok(self
            .http
            .post(url)
            .timeout(self.settings.refunds.timeout)
            .json(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Asks VNPAY about a payment (`querydr`), verified.
    async fn querydr_raw(
        &self,
        url: &str,
        payment: &PaymentRow,
    ) -> anyhow::Result<holdfast_vnpay::querydr::QueryDrResult> {
        let request = holdfast_vnpay::querydr::QueryDrRequest {
            request_id: Uuid::new_v4().simple().to_string(),
            txn_ref: payment.order_id.to_string(),
            transaction_date: datetime(payment.created_at),
            create_date: datetime(self.ctx.now_ms()),
            ip_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            order_info: format!("Query order {}", payment.order_id),
        };
        let body = holdfast_vnpay::querydr::request_body(&self.settings.vnpay, &request)?;
        let permit = self.querydr_circuit.admit(self.ctx.now_ms())?;
        let answer = async {
            let response: holdfast_vnpay::querydr::QueryDrResponse =
                self.post_json(url, &body).await?;
            anyhow::Ok(holdfast_vnpay::querydr::verify_response(
                &self.settings.vnpay,
                &response,
            )?)
        }
        .await;
        permit.record(answer.is_ok(), self.ctx.now_ms());
        answer
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
            SagaEvent::OrderRefunded {
                refund_id, amount, ..
            } => self.order_refunded(tx, env, *refund_id, *amount).await,
            _ => Ok(()),
        };
        handled.map_err(Error::from)
    }

    fn committed(&self, env: &Envelope) {
        if matches!(env.event, SagaEvent::OrderRefunded { .. }) {
            self.refund_wake.notify_one();
        }
        self.ctx.relay.notify_one();
    }

    /// Every event this service handles is database work ([`Consumer::handle_in`]).
    async fn handle(&self, _env: &Envelope) -> Result<(), Error> {
        Ok(())
    }
}
