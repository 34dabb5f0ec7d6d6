//! Tables of the checkout saga's services: orders, payments, tickets and notifications, with
//! the transactional outbox every producer writes to and the processed-event ids every consumer
//! records.
//!
//! A service changes its state in a [`CheckoutTx`]: the side effect, the records it publishes
//! (outbox) and, for a consumer, the id of the event it handled ([`CheckoutTx::first_time`])
//! commit together or not at all. A redelivered event finds its id taken and changes nothing.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use uuid::Uuid;

use crate::{Backend, Error, Store, now_ms, parse_uuid, uuid_text};

mod refunds;
pub use refunds::{PaymentRefundRow, REFUNDS_PER_ORDER_MAX, RefundRow};

/// One record for the bus, written in the producer's transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRecord {
    /// The event id consumers deduplicate by.
    pub id: Uuid,
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
}

/// An outbox record not yet published, with its place in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRecord {
    pub seq: i64,
    pub record: OutboxRecord,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub event_id: Uuid,
    /// The hold's public reference (`HoldRef` text).
    pub hold_id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    /// The ordered lines as JSON (`[{"ticket_type","quantity","price"}]`).
    pub items: String,
    pub hold_expires_at: i64,
    pub payment_url: Option<String>,
    /// Why the order ended as it did, for the buyer.
    pub note: Option<String>,
    /// The buyer's mobile number, for SMS.
    pub phone: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRow {
    pub order_id: Uuid,
    pub amount: i64,
    pub currency: String,
    /// `pending`, `paid`, `failed` or `refunded`.
    pub status: String,
    pub payment_url: String,
    pub expires_at: i64,
    pub transaction_no: Option<String>,
    pub bank_code: Option<String>,
    pub response_code: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TicketRow {
    pub id: Uuid,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub event_id: Uuid,
    pub ticket_type: String,
    /// 1-based position of the ticket among the order's tickets of its type.
    pub seat: i64,
    pub code: String,
    /// `valid`, `admitted` or `void`.
    pub status: String,
    pub admitted_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: Uuid,
    pub order_id: Uuid,
    /// `email` or `sms`.
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// Encoded attachments (the notification service's format).
    pub attachments: Option<Vec<u8>>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

const ORDER_COLUMNS: &str = "id, user_id, email, event_id, hold_id, status, amount, currency, \
     items, hold_expires_at, payment_url, note, created_at, updated_at, phone";
const PAYMENT_COLUMNS: &str = "order_id, amount, currency, status, payment_url, expires_at, \
     transaction_no, bank_code, response_code, created_at, updated_at";
const TICKET_COLUMNS: &str =
    "id, order_id, user_id, event_id, ticket_type, seat, code, status, admitted_at, created_at";
const NOTIFICATION_COLUMNS: &str = "id, order_id, channel, recipient, subject, body, \
     attachments, status, attempts, next_attempt_at, last_error, created_at, sent_at";

fn order_row(row: &AnyRow) -> Result<OrderRow, Error> {
    Ok(OrderRow {
        id: parse_uuid("orders.id", &row.try_get::<String, _>("id")?)?,
        user_id: parse_uuid("orders.user_id", &row.try_get::<String, _>("user_id")?)?,
        email: row.try_get("email")?,
        event_id: parse_uuid("orders.event_id", &row.try_get::<String, _>("event_id")?)?,
        hold_id: row.try_get("hold_id")?,
        status: row.try_get("status")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        items: row.try_get("items")?,
        hold_expires_at: row.try_get("hold_expires_at")?,
        payment_url: row.try_get("payment_url")?,
        note: row.try_get("note")?,
        phone: row.try_get("phone")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn payment_row(row: &AnyRow) -> Result<PaymentRow, Error> {
    Ok(PaymentRow {
        order_id: parse_uuid("payments.order_id", &row.try_get::<String, _>("order_id")?)?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        status: row.try_get("status")?,
        payment_url: row.try_get("payment_url")?,
        expires_at: row.try_get("expires_at")?,
        transaction_no: row.try_get("transaction_no")?,
        bank_code: row.try_get("bank_code")?,
        response_code: row.try_get("response_code")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn ticket_row(row: &AnyRow) -> Result<TicketRow, Error> {
    Ok(TicketRow {
        id: parse_uuid("tickets.id", &row.try_get::<String, _>("id")?)?,
        order_id: parse_uuid("tickets.order_id", &row.try_get::<String, _>("order_id")?)?,
        user_id: parse_uuid("tickets.user_id", &row.try_get::<String, _>("user_id")?)?,
        event_id: parse_uuid("tickets.event_id", &row.try_get::<String, _>("event_id")?)?,
        ticket_type: row.try_get("ticket_type")?,
        seat: row.try_get("seat")?,
        code: row.try_get("code")?,
        status: row.try_get("status")?,
        admitted_at: row.try_get("admitted_at")?,
        created_at: row.try_get("created_at")?,
    })
}

fn notification_row(row: &AnyRow) -> Result<NotificationRow, Error> {
    Ok(NotificationRow {
        id: parse_uuid("notifications.id", &row.try_get::<String, _>("id")?)?,
        order_id: parse_uuid(
            "notifications.order_id",
            &row.try_get::<String, _>("order_id")?,
        )?,
        channel: row.try_get("channel")?,
        recipient: row.try_get("recipient")?,
        subject: row.try_get("subject")?,
        body: row.try_get("body")?,
        attachments: row.try_get("attachments")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        sent_at: row.try_get("sent_at")?,
    })
}

/// Serialises the outbox relays of a cluster on PostgreSQL (`pg_try_advisory_xact_lock`):
/// "holdfast" in ASCII, apart from the bus's per-topic locks.
const RELAY_LOCK: i64 = 0x686f_6c64_6661_7374;

/// A batch of the outbox for one relay. On PostgreSQL it holds the relay lock until
/// [`OutboxLease::published`] (or drop), so relays of several nodes take turns and publish in
/// order; SQLite has one node.
#[derive(Debug)]
pub struct OutboxLease {
    tx: Option<Transaction<'static, Any>>,
    pool: sqlx::AnyPool,
    pub records: Vec<PendingRecord>,
}

impl OutboxLease {
    /// Marks the batch published and releases the relay lock.
    pub async fn published(self) -> Result<(), Error> {
        let seqs: Vec<i64> = self.records.iter().map(|r| r.seq).collect();
        let Some(sql) = mark_published_sql(&seqs) else {
            return Ok(());
        };
        let mark = sqlx::query(&sql).bind(now_ms());
        match self.tx {
            Some(mut tx) => {
                mark.execute(&mut *tx).await?;
                tx.commit().await?;
            }
            None => {
                mark.execute(&self.pool).await?;
            }
        }
        Ok(())
    }
}

/// Marks exactly these records, never a range: on PostgreSQL a record with a lower `seq` can
/// commit after the relay read past it (its transaction took the number first), and a range
/// would mark it published without publishing it.
fn mark_published_sql(seqs: &[i64]) -> Option<String> {
    if seqs.is_empty() {
        return None;
    }
    let list: Vec<String> = seqs.iter().map(i64::to_string).collect();
    Some(format!(
        "UPDATE outbox SET published_at = $1 WHERE published_at IS NULL AND seq IN ({})",
        list.join(", ")
    ))
}

fn pending_record(row: &AnyRow) -> Result<PendingRecord, Error> {
    Ok(PendingRecord {
        seq: row.try_get("seq")?,
        record: OutboxRecord {
            id: parse_uuid("outbox.id", &row.try_get::<String, _>("id")?)?,
            topic: row.try_get("topic")?,
            key: row.try_get("record_key")?,
            payload: row.try_get("payload")?,
        },
    })
}

const OUTBOX_PENDING: &str = "SELECT seq, id, topic, record_key, payload FROM outbox \
     WHERE published_at IS NULL ORDER BY seq LIMIT $1";

/// One service transaction; dropped without [`CheckoutTx::commit`] it rolls back.
#[derive(Debug)]
pub struct CheckoutTx {
    tx: crate::WriteTx,
    /// `FOR UPDATE` on PostgreSQL; SQLite's write transaction already holds the lock.
    lock: &'static str,
}

impl Store {
    /// Begins a service transaction.
    pub async fn checkout_tx(&self) -> Result<CheckoutTx, Error> {
        Ok(CheckoutTx {
            tx: self.begin_write(crate::Writer::Checkout).await?,
            lock: match self.backend {
                Backend::Sqlite => "",
                Backend::Postgres => " FOR UPDATE",
            },
        })
    }

    pub async fn order(&self, id: Uuid) -> Result<Option<OrderRow>, Error> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(order_row).transpose()
    }

    pub async fn order_by_hold(&self, hold_id: &str) -> Result<Option<OrderRow>, Error> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE hold_id = $1");
        let row = sqlx::query(&sql)
            .bind(hold_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(order_row).transpose()
    }

    /// A user's orders, newest first.
    pub async fn orders_of_user(&self, user_id: Uuid, limit: u32) -> Result<Vec<OrderRow>, Error> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE user_id = $1 \
             ORDER BY created_at DESC, id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(user_id))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(order_row).collect()
    }

    pub async fn payment(&self, order_id: Uuid) -> Result<Option<PaymentRow>, Error> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1");
        let row = sqlx::query(&sql)
            .bind(uuid_text(order_id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(payment_row).transpose()
    }

    /// Payments still `pending` whose window closed before `before`: their result may have been
    /// lost on the way, so the payment service asks VNPAY (`querydr`).
    pub async fn payments_pending_before(
        &self,
        before: i64,
        limit: u32,
    ) -> Result<Vec<PaymentRow>, Error> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status = 'pending' AND expires_at < $1 \
             ORDER BY expires_at LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(before)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(payment_row).collect()
    }

    /// An order's tickets in a stable order (type, then seat).
    pub async fn tickets_of_order(&self, order_id: Uuid) -> Result<Vec<TicketRow>, Error> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE order_id = $1 ORDER BY ticket_type, seat"
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(order_id))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(ticket_row).collect()
    }

    pub async fn ticket(&self, id: Uuid) -> Result<Option<TicketRow>, Error> {
        let sql = format!("SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(uuid_text(id))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(ticket_row).transpose()
    }

    /// Every notification of an order, oldest first.
    pub async fn notifications_of_order(
        &self,
        order_id: Uuid,
    ) -> Result<Vec<NotificationRow>, Error> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE order_id = $1 \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(order_id))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(notification_row).collect()
    }

    /// Pending notifications whose next attempt is due at `now`.
    pub async fn notifications_due(
        &self,
        now: i64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, Error> {
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
             WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(notification_row).collect()
    }

    /// Takes a due notification for one sender: moves its next attempt to `lease_until` if it
    /// is still pending at `due_at`. False when another sender took it first.
    pub async fn notification_claim(
        &self,
        id: Uuid,
        due_at: i64,
        lease_until: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE notifications SET next_attempt_at = $3 \
             WHERE id = $1 AND status = 'pending' AND next_attempt_at = $2",
        )
        .bind(uuid_text(id))
        .bind(due_at)
        .bind(lease_until)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records one delivery attempt: `sent`, or the error with the next attempt's time, or
    /// `failed` for good.
    pub async fn notification_attempted(
        &self,
        id: Uuid,
        status: &str,
        next_attempt_at: i64,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE notifications SET status = $2, attempts = attempts + 1, \
             next_attempt_at = $3, last_error = $4, \
             sent_at = CASE WHEN $2 = 'sent' THEN $5 ELSE sent_at END WHERE id = $1",
        )
        .bind(uuid_text(id))
        .bind(status)
        .bind(next_attempt_at)
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Retention: deletes outbox records published before `before_ms` and processed event ids
    /// recorded before it. Returns how many of each went. Keep `before_ms` older than any
    /// redelivery can be (the bus's own retention), or a very late duplicate would count again.
    pub async fn saga_purge(&self, before_ms: i64) -> Result<(u64, u64), Error> {
        let outbox = sqlx::query("DELETE FROM outbox WHERE published_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        let processed = sqlx::query("DELETE FROM processed_events WHERE processed_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok((outbox.rows_affected(), processed.rows_affected()))
    }

    /// The oldest unpublished outbox records, in order.
    pub async fn outbox_unpublished(&self, limit: u32) -> Result<Vec<PendingRecord>, Error> {
        let rows = sqlx::query(OUTBOX_PENDING)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(pending_record).collect()
    }

    /// The oldest unpublished outbox records for this relay, or `None` while another relay
    /// (another node on the same PostgreSQL database) holds the turn.
    pub async fn outbox_lease(&self, limit: u32) -> Result<Option<OutboxLease>, Error> {
        match self.backend {
            Backend::Sqlite => Ok(Some(OutboxLease {
                tx: None,
                pool: self.pool.clone(),
                records: self.outbox_unpublished(limit).await?,
            })),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                let turn: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(RELAY_LOCK)
                    .fetch_one(&mut *tx)
                    .await?;
                if !turn {
                    return Ok(None);
                }
                let rows = sqlx::query(OUTBOX_PENDING)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await?;
                let records = rows.iter().map(pending_record).collect::<Result<_, _>>()?;
                Ok(Some(OutboxLease {
                    tx: Some(tx),
                    pool: self.pool.clone(),
                    records,
                }))
            }
        }
    }

    /// Marks the outbox records `seqs` as published.
    pub async fn outbox_published(&self, seqs: &[i64]) -> Result<(), Error> {
        if let Some(sql) = mark_published_sql(seqs) {
            sqlx::query(&sql).bind(now_ms()).execute(&self.pool).await?;
        }
        Ok(())
    }
}

impl CheckoutTx {
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        Ok(())
    }

    /// The transaction's connection, for the other modules' statements.
    pub(crate) fn connection(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }

    /// Records that `consumer` handled event `event_id`; false if it had already.
    pub async fn first_time(&mut self, consumer: &str, event_id: Uuid) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(uuid_text(event_id))
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Adds records to the outbox; the relay publishes them after the commit.
    pub async fn outbox(&mut self, records: &[OutboxRecord]) -> Result<(), Error> {
        /// Records per statement: five parameters each, far below either backend's limit.
        const PER_STATEMENT: usize = 100;
        let now = now_ms();
        for chunk in records.chunks(PER_STATEMENT) {
            let mut sql = String::from(
                "INSERT INTO outbox (id, topic, record_key, payload, created_at) VALUES ",
            );
            for i in 0..chunk.len() {
                let p = i * 5;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5
                ));
            }
            let mut query = sqlx::query(&sql);
            for record in chunk {
                query = query
                    .bind(uuid_text(record.id))
                    .bind(&record.topic)
                    .bind(&record.key)
                    .bind(&record.payload)
                    .bind(now);
            }
            query.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Inserts an order; false if its hold already has one.
    pub async fn insert_order(&mut self, order: &OrderRow) -> Result<bool, Error> {
        let sql = format!(
            "INSERT INTO orders ({ORDER_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
             ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(uuid_text(order.id))
            .bind(uuid_text(order.user_id))
            .bind(&order.email)
            .bind(uuid_text(order.event_id))
            .bind(&order.hold_id)
            .bind(&order.status)
            .bind(order.amount)
            .bind(&order.currency)
            .bind(&order.items)
            .bind(order.hold_expires_at)
            .bind(&order.payment_url)
            .bind(&order.note)
            .bind(order.created_at)
            .bind(order.updated_at)
            .bind(&order.phone)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The order, locked until the end of the transaction.
    pub async fn order(&mut self, id: Uuid) -> Result<Option<OrderRow>, Error> {
        let sql = format!(
            "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1{}",
            self.lock
        );
        let row = sqlx::query(&sql)
            .bind(uuid_text(id))
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(order_row).transpose()
    }

    /// Writes the order's mutable columns (status, payment URL, note).
    pub async fn update_order(&mut self, order: &OrderRow) -> Result<(), Error> {
        sqlx::query(
            "UPDATE orders SET status = $2, payment_url = $3, note = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(uuid_text(order.id))
        .bind(&order.status)
        .bind(&order.payment_url)
        .bind(&order.note)
        .bind(order.updated_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Records an order's payment URL unless it has one; false if it had, or no such order.
    pub async fn set_payment_url(
        &mut self,
        order: Uuid,
        url: &str,
        updated_at: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE orders SET payment_url = $2, updated_at = $3 \
             WHERE id = $1 AND payment_url IS NULL",
        )
        .bind(uuid_text(order))
        .bind(url)
        .bind(updated_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Inserts a payment; false if the order already has one.
    pub async fn insert_payment(&mut self, payment: &PaymentRow) -> Result<bool, Error> {
        let sql = format!(
            "INSERT INTO payments ({PAYMENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(uuid_text(payment.order_id))
            .bind(payment.amount)
            .bind(&payment.currency)
            .bind(&payment.status)
            .bind(&payment.payment_url)
            .bind(payment.expires_at)
            .bind(&payment.transaction_no)
            .bind(&payment.bank_code)
            .bind(&payment.response_code)
            .bind(payment.created_at)
            .bind(payment.updated_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The payment, locked until the end of the transaction.
    pub async fn payment(&mut self, order_id: Uuid) -> Result<Option<PaymentRow>, Error> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE order_id = $1{}",
            self.lock
        );
        let row = sqlx::query(&sql)
            .bind(uuid_text(order_id))
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(payment_row).transpose()
    }

    /// Writes the payment's result columns.
    pub async fn update_payment(&mut self, payment: &PaymentRow) -> Result<(), Error> {
        sqlx::query(
            "UPDATE payments SET status = $2, transaction_no = $3, bank_code = $4, \
             response_code = $5, updated_at = $6 WHERE order_id = $1",
        )
        .bind(uuid_text(payment.order_id))
        .bind(&payment.status)
        .bind(&payment.transaction_no)
        .bind(&payment.bank_code)
        .bind(&payment.response_code)
        .bind(payment.updated_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Inserts a ticket; false if its (order, type, seat) was issued already.
    pub async fn insert_ticket(&mut self, ticket: &TicketRow) -> Result<bool, Error> {
        let sql = format!(
            "INSERT INTO tickets ({TICKET_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(uuid_text(ticket.id))
            .bind(uuid_text(ticket.order_id))
            .bind(uuid_text(ticket.user_id))
            .bind(uuid_text(ticket.event_id))
            .bind(&ticket.ticket_type)
            .bind(ticket.seat)
            .bind(&ticket.code)
            .bind(&ticket.status)
            .bind(ticket.admitted_at)
            .bind(ticket.created_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The ticket, locked until the end of the transaction.
    pub async fn ticket(&mut self, id: Uuid) -> Result<Option<TicketRow>, Error> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE id = $1{}",
            self.lock
        );
        let row = sqlx::query(&sql)
            .bind(uuid_text(id))
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(ticket_row).transpose()
    }

    /// Sets a ticket's status (and admission time).
    pub async fn set_ticket_status(
        &mut self,
        id: Uuid,
        status: &str,
        admitted_at: Option<i64>,
    ) -> Result<(), Error> {
        sqlx::query("UPDATE tickets SET status = $2, admitted_at = $3 WHERE id = $1")
            .bind(uuid_text(id))
            .bind(status)
            .bind(admitted_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// An order's tickets (type, then seat), locked until the end of the transaction.
    pub async fn tickets_of_order(&mut self, order_id: Uuid) -> Result<Vec<TicketRow>, Error> {
        let sql = format!(
            "SELECT {TICKET_COLUMNS} FROM tickets WHERE order_id = $1 ORDER BY ticket_type, seat{}",
            self.lock
        );
        let rows = sqlx::query(&sql)
            .bind(uuid_text(order_id))
            .fetch_all(&mut *self.tx)
            .await?;
        rows.iter().map(ticket_row).collect()
    }

    /// Voids the order's tickets that were not used (a refund); admitted tickets stay
    /// admitted. Returns how many were voided.
    pub async fn void_tickets(&mut self, order_id: Uuid) -> Result<u64, Error> {
        let done = sqlx::query(
            "UPDATE tickets SET status = 'void' WHERE order_id = $1 AND status = 'valid'",
        )
        .bind(uuid_text(order_id))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// Keeps what the notifications service's messages say about an order (its JSON); the
    /// first one stays.
    pub async fn put_notification_order(
        &mut self,
        order_id: Uuid,
        about: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO notification_orders (order_id, about) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(uuid_text(order_id))
        .bind(about)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// What [`CheckoutTx::put_notification_order`] kept about an order.
    pub async fn notification_order(&mut self, order_id: Uuid) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT about FROM notification_orders WHERE order_id = $1")
            .bind(uuid_text(order_id))
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| r.try_get::<String, _>("about"))
            .transpose()
            .map_err(Error::from)
    }

    /// Queues a notification; false if one with its id exists.
    pub async fn insert_notification(&mut self, n: &NotificationRow) -> Result<bool, Error> {
        let sql = format!(
            "INSERT INTO notifications ({NOTIFICATION_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(uuid_text(n.id))
            .bind(uuid_text(n.order_id))
            .bind(&n.channel)
            .bind(&n.recipient)
            .bind(&n.subject)
            .bind(&n.body)
            .bind(&n.attachments)
            .bind(&n.status)
            .bind(n.attempts)
            .bind(n.next_attempt_at)
            .bind(&n.last_error)
            .bind(n.created_at)
            .bind(n.sent_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
