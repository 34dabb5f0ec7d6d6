//! Refunds: the orders service's `refunds` (what the buyer sees), the payments service's
//! `payment_refunds` (the money going back through VNPAY, with its retry schedule), and the
//! events' refund policy (a catalog column the saga reads).

use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::CheckoutTx;
use crate::{Error, Store, parse_uuid, uuid_text};

/// A refund of an order (orders service).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRow {
    pub id: Uuid,
    pub order_id: Uuid,
    /// What goes back to the buyer, in minor units, after `fee`.
    pub amount: i64,
    pub fee: i64,
    pub currency: String,
    /// The refunded tickets, as a JSON array of ids.
    pub ticket_ids: String,
    pub reason: String,
    pub by_organizer: bool,
    /// `processing`, `refunded` or `failed`.
    pub status: String,
    pub note: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The money of a refund at the payments service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRefundRow {
    /// The refund's id (the orders service's).
    pub id: Uuid,
    pub order_id: Uuid,
    pub amount: i64,
    /// `processing`, `refunded` or `failed`.
    pub status: String,
    pub attempts: i64,
    /// The last attempt's answer was lost.
    pub uncertain: bool,
    pub next_attempt_at: i64,
    pub response_code: Option<String>,
    pub message: Option<String>,
    pub transaction_no: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

const REFUND_COLUMNS: &str = "id, order_id, amount, fee, currency, ticket_ids, reason, \
     by_organizer, status, note, created_at, updated_at";
const PAYMENT_REFUND_COLUMNS: &str = "id, order_id, amount, status, attempts, uncertain, \
     next_attempt_at, response_code, message, transaction_no, created_at, updated_at";

fn refund_row(row: &AnyRow) -> Result<RefundRow, Error> {
    Ok(RefundRow {
        id: parse_uuid("refunds.id", &row.try_get::<String, _>("id")?)?,
        order_id: parse_uuid("refunds.order_id", &row.try_get::<String, _>("order_id")?)?,
        amount: row.try_get("amount")?,
        fee: row.try_get("fee")?,
        currency: row.try_get("currency")?,
        ticket_ids: row.try_get("ticket_ids")?,
        reason: row.try_get("reason")?,
        by_organizer: row.try_get::<i64, _>("by_organizer")? != 0,
        status: row.try_get("status")?,
        note: row.try_get("note")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn payment_refund_row(row: &AnyRow) -> Result<PaymentRefundRow, Error> {
    Ok(PaymentRefundRow {
        id: parse_uuid("payment_refunds.id", &row.try_get::<String, _>("id")?)?,
        order_id: parse_uuid(
            "payment_refunds.order_id",
            &row.try_get::<String, _>("order_id")?,
        )?,
        amount: row.try_get("amount")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        uncertain: row.try_get::<i64, _>("uncertain")? != 0,
        next_attempt_at: row.try_get("next_attempt_at")?,
        response_code: row.try_get("response_code")?,
        message: row.try_get("message")?,
        transaction_no: row.try_get("transaction_no")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Refunds an order has at most; far beyond its tickets (one refund per ticket at most).
pub const REFUNDS_PER_ORDER_MAX: u32 = 1_000;

impl Store {
    /// An event's refund policy as stored (JSON); `None` when it has none (or no such event).
    pub async fn event_refund_policy(&self, event_id: Uuid) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT refund_policy FROM events WHERE id = $1")
            .bind(uuid_text(event_id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<String>, _>("refund_policy")?,
            None => None,
        })
    }

    /// Sets (or, with `None`, removes) an event's refund policy; false if no such event.
    pub async fn set_event_refund_policy(
        &self,
        event_id: Uuid,
        policy: Option<&str>,
    ) -> Result<bool, Error> {
        let done = sqlx::query("UPDATE events SET refund_policy = $2 WHERE id = $1")
            .bind(uuid_text(event_id))
            .bind(policy)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// An order's refunds, oldest first.
    pub async fn refunds_of_order(&self, order_id: Uuid) -> Result<Vec<RefundRow>, Error> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE order_id = $1 \
             ORDER BY created_at, id LIMIT {REFUNDS_PER_ORDER_MAX}"
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(order_id))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(refund_row).collect()
    }

    /// Refunds VNPAY kept refusing (`failed`), most recent first, for an admin.
    pub async fn payment_refunds_failed(&self, limit: u32) -> Result<Vec<PaymentRefundRow>, Error> {
        let sql = format!(
            "SELECT {PAYMENT_REFUND_COLUMNS} FROM payment_refunds WHERE status = 'failed' \
             ORDER BY updated_at DESC, id LIMIT $1"
        );
        let rows = sqlx::query(&sql)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payment_refund_row).collect()
    }

    /// Puts a `failed` refund back in the queue with a fresh set of attempts (an admin fixed
    /// the cause); false if no failed refund has this id.
    pub async fn payment_refund_retry(&self, id: Uuid, now: i64) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE payment_refunds SET status = 'processing', attempts = 0, \
             next_attempt_at = $2, updated_at = $2 WHERE id = $1 AND status = 'failed'",
        )
        .bind(uuid_text(id))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Refunds still `processing` at the payments service whose next attempt is due at `now`.
    pub async fn payment_refunds_due(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRefundRow>, Error> {
        let sql = format!(
            "SELECT {PAYMENT_REFUND_COLUMNS} FROM payment_refunds \
             WHERE status = 'processing' AND next_attempt_at <= $1 \
             ORDER BY next_attempt_at, id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payment_refund_row).collect()
    }
}

impl CheckoutTx {
    /// An order's refunds, oldest first, with the order row locked by the caller.
    pub async fn refunds_of_order(&mut self, order_id: Uuid) -> Result<Vec<RefundRow>, Error> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE order_id = $1 \
             ORDER BY created_at, id LIMIT {REFUNDS_PER_ORDER_MAX}"
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(order_id))
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(refund_row).collect()
    }

    /// Inserts a refund; false if one with its id exists.
    pub async fn insert_refund(&mut self, r: &RefundRow) -> Result<bool, Error> {
        let sql = format!(
            "INSERT INTO refunds ({REFUND_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(uuid_text(r.id))
            .bind(uuid_text(r.order_id))
            .bind(r.amount)
            .bind(r.fee)
            .bind(&r.currency)
            .bind(&r.ticket_ids)
            .bind(&r.reason)
            .bind(i64::from(r.by_organizer))
            .bind(&r.status)
            .bind(&r.note)
            .bind(r.created_at)
            .bind(r.updated_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets a refund's outcome (a `failed` one may still end `refunded` after an admin's
    /// retry); false if it was `refunded` already (or no such refund).
    pub async fn settle_refund(
        &mut self,
        id: Uuid,
        status: &str,
        note: Option<&str>,
        updated_at: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE refunds SET status = $2, note = $3, updated_at = $4 \
             WHERE id = $1 AND status <> 'refunded'",
        )
        .bind(uuid_text(id))
        .bind(status)
        .bind(note)
        .bind(updated_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// An order's refunds at the payments service.
    pub async fn payment_refunds_of_order(
        &mut self,
        order_id: Uuid,
    ) -> Result<Vec<PaymentRefundRow>, Error> {
        let sql = format!(
            "SELECT {PAYMENT_REFUND_COLUMNS} FROM payment_refunds WHERE order_id = $1 \
             ORDER BY created_at, id{}",
            self.lock
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(order_id))
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(payment_refund_row).collect()
    }

    /// The refund, locked until the end of the transaction.
    pub async fn payment_refund(&mut self, id: Uuid) -> Result<Option<PaymentRefundRow>, Error> {
        let sql = format!(
            "SELECT {PAYMENT_REFUND_COLUMNS} FROM payment_refunds WHERE id = $1{}",
            self.lock
        );
        let row = sqlx::query(&sql)
            .bind(uuid_text(id))
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(payment_refund_row).transpose()
    }

    /// Inserts a refund to pay back; false if one with its id exists.
    pub async fn insert_payment_refund(&mut self, r: &PaymentRefundRow) -> Result<bool, Error> {
        let sql = format!(
            "INSERT INTO payment_refunds ({PAYMENT_REFUND_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(uuid_text(r.id))
            .bind(uuid_text(r.order_id))
            .bind(r.amount)
            .bind(&r.status)
            .bind(r.attempts)
            .bind(i64::from(r.uncertain))
            .bind(r.next_attempt_at)
            .bind(&r.response_code)
            .bind(&r.message)
            .bind(&r.transaction_no)
            .bind(r.created_at)
            .bind(r.updated_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Writes a refund's mutable columns.
    pub async fn update_payment_refund(&mut self, r: &PaymentRefundRow) -> Result<(), Error> {
        sqlx::query(
            "UPDATE payment_refunds SET status = $2, attempts = $3, uncertain = $4, \
             next_attempt_at = $5, response_code = $6, message = $7, transaction_no = $8, \
             updated_at = $9 WHERE id = $1",
        )
        .bind(uuid_text(r.id))
        .bind(&r.status)
        .bind(r.attempts)
        .bind(i64::from(r.uncertain))
        .bind(r.next_attempt_at)
        .bind(&r.response_code)
        .bind(&r.message)
        .bind(&r.transaction_no)
        .bind(r.updated_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Voids the given tickets of an order that were not used; returns how many were voided.
    pub async fn void_tickets_in(&mut self, order_id: Uuid, ids: &[Uuid]) -> Result<u64, Error> {
        let mut voided = 0;
        for id in ids {
            let done = sqlx::query(
                "UPDATE tickets SET status = 'void' \
                 WHERE id = $1 AND order_id = $2 AND status = 'valid'",
            )
            .bind(uuid_text(*id))
            .bind(uuid_text(order_id))
            .execute(&mut *self.tx)
            .await?;
            voided += done.rows_affected();
        }
        Ok(voided)
    }
}
