//! The tickets service: one signed ticket per paid seat, voided by a refund, admitted once at
//! the door.

use std::sync::Arc;

use async_trait::async_trait;
use holdfast_actors::{EventId, OrderId, UserId};
use holdfast_bus::ORDERS;
use holdfast_persistence::{CheckoutTx, TicketRow};
use holdfast_tickets::{Signer, Verifier};
use uuid::Uuid;

use crate::api::{Admission, CheckoutError, TicketView};
use crate::error::Error;
use crate::events::{Envelope, IssuedTicket, Item, SagaEvent, SeatCount};
use crate::model::TicketStatus;
use crate::runner::Consumer;
use crate::service::Ctx;

const CONSUMER: &str = "tickets";

pub(crate) struct Tickets {
    ctx: Ctx,
    signer: Option<Arc<Signer>>,
    verifier: Arc<Verifier>,
}

fn view(row: &TicketRow) -> Result<TicketView, CheckoutError> {
    let status = TicketStatus::parse(&row.status)
        .map_err(|e| CheckoutError::Corrupt(format!("ticket {}: {e}", row.id)))?;
    Ok(TicketView {
        id: row.id,
        order_id: OrderId(row.order_id),
        event_id: EventId(row.event_id),
        user: UserId(row.user_id),
        ticket_type: row.ticket_type.clone(),
        code: row.code.clone(),
        status,
    })
}

use crate::decide::ticket_id;

impl Tickets {
    pub(crate) fn new(ctx: Ctx, signer: Option<Arc<Signer>>, verifier: Arc<Verifier>) -> Self {
        Self {
            ctx,
            signer,
            verifier,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        tx: &mut CheckoutTx,
        env: &Envelope,
        user: Uuid,
        email: &str,
        phone: Option<&str>,
        event: Uuid,
        items: &[Item],
    ) -> anyhow::Result<()> {
        let signer = self.signer.as_ref().ok_or_else(|| {
            Error::permanent("no ticket signing key on this node (set HOLDFAST_TICKET_SIGNING_KEY)")
        })?;
        let now = self.ctx.now_ms();
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        let mut issued = Vec::new();
        for item in items {
            for seat in 1..=item.quantity {
                let id = ticket_id(env.order_id, &item.ticket_type, seat);
                let code = signer.sign(&signer.payload(id, event, item.ticket_type.clone()))?;
                let row = TicketRow {
                    id,
                    order_id: env.order_id,
                    user_id: user,
                    event_id: event,
                    ticket_type: item.ticket_type.clone(),
                    seat: i64::from(seat),
                    code: code.clone(),
                    status: TicketStatus::Valid.as_str().to_owned(),
                    admitted_at: None,
                    created_at: now,
                };
                if tx.insert_ticket(&row).await? {
                    issued.push(IssuedTicket {
                        id,
                        ticket_type: item.ticket_type.clone(),
                        code,
                    });
                }
            }
        }
        if !issued.is_empty() {
            metrics::counter!("holdfast_tickets_issued_total").increment(issued.len() as u64);
            let event = SagaEvent::TicketsIssued {
                email: email.to_owned(),
                phone: phone.map(str::to_owned),
                event_id: event,
                tickets: issued,
            };
            tx.outbox(&[Envelope::new(env.order_id, now, event).record()])
                .await?;
        }
        Ok(())
    }

    /// `OrderRefunded`: voids the refunded tickets not used yet (`ticket_ids`; empty: all the
    /// order's) and tells the orders service which seats stay sold: those whose tickets still
    /// admit and those used at the door. Under the tickets' row locks, so a scan at the same
    /// moment either admitted first (and the seat stays sold) or finds the ticket void.
    async fn void(
        &self,
        tx: &mut CheckoutTx,
        env: &Envelope,
        ticket_ids: &[Uuid],
    ) -> anyhow::Result<()> {
        let now = self.ctx.now_ms();
        if !tx.first_time(CONSUMER, env.id).await? {
            return Ok(());
        }
        let before = tx.tickets_of_order(env.order_id).await?;
        let voided = if ticket_ids.is_empty() {
            tx.void_tickets(env.order_id).await?
        } else {
            tx.void_tickets_in(env.order_id, ticket_ids).await?
        };
        let after: Vec<TicketRow> = before
            .into_iter()
            .map(|mut t| {
                let refunded = ticket_ids.is_empty() || ticket_ids.contains(&t.id);
                if refunded && t.status == TicketStatus::Valid.as_str() {
                    TicketStatus::Void.as_str().clone_into(&mut t.status);
                }
                t
            })
            .collect();
        let event = SagaEvent::TicketsVoided {
            admitted: seats(&after, |s| s == TicketStatus::Admitted.as_str()),
            kept: Some(seats(&after, |s| s != TicketStatus::Void.as_str())),
        };
        tx.outbox(&[Envelope::new(env.order_id, now, event).record()])
            .await?;
        if voided > 0 {
            tracing::info!(order = %env.order_id, voided, "tickets voided by a refund");
        }
        Ok(())
    }

    /// A refund asked for now, with this service on the node: voids the refunded tickets
    /// (`ticket_ids`; empty: all the order's) inside the refund's own transaction `tx`, unless
    /// the buyer asks and one of them was already admitted (then the refund fails and nothing
    /// changes).
    pub(crate) async fn void_in(
        tx: &mut holdfast_persistence::CheckoutTx,
        order: OrderId,
        by_buyer: bool,
        ticket_ids: &[Uuid],
    ) -> Result<(), CheckoutError> {
        let tickets = tx.tickets_of_order(order.0).await?;
        let statuses = tickets
            .iter()
            .filter(|t| ticket_ids.is_empty() || ticket_ids.contains(&t.id))
            .map(|t| Ok((t.id, view(t)?.status)))
            .collect::<Result<Vec<_>, CheckoutError>>()?;
        crate::decide::may_void(&statuses, by_buyer)?;
        if ticket_ids.is_empty() {
            tx.void_tickets(order.0).await?;
        } else {
            tx.void_tickets_in(order.0, ticket_ids).await?;
        }
        Ok(())
    }

    pub(crate) async fn of_order(&self, order: OrderId) -> Result<Vec<TicketView>, CheckoutError> {
        let rows = self.ctx.store.tickets_of_order(order.0).await?;
        rows.iter().map(view).collect()
    }

    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<TicketView>, CheckoutError> {
        let row = self.ctx.store.ticket(id).await?;
        row.as_ref().map(view).transpose()
    }

    /// `POST /v1/checkin`: the signature first (no database for forged codes), then the
    /// ticket's state under a row lock, so two doors scanning one code admit it once.
    pub(crate) async fn checkin(
        &self,
        code: &str,
        event: EventId,
    ) -> Result<Admission, CheckoutError> {
        let payload = self
            .verifier
            .verify(code)
            .map_err(|e| CheckoutError::InvalidTicket(e.to_string()))?;
        if payload.event_id != event.0 {
            return Err(CheckoutError::WrongEvent {
                ticket_event: EventId(payload.event_id),
            });
        }
        let mut tx = self.ctx.store.checkout_tx().await?;
        let Some(mut row) = tx.ticket(payload.ticket_id).await? else {
            return Err(CheckoutError::InvalidTicket(
                "no such ticket was issued".to_owned(),
            ));
        };
        if row.event_id != payload.event_id || row.code != code {
            return Err(CheckoutError::InvalidTicket(
                "the code does not match the issued ticket".to_owned(),
            ));
        }
        crate::decide::admit(view(&row)?.status, row.id)?;
        let now = self.ctx.now_ms();
        tx.set_ticket_status(row.id, TicketStatus::Admitted.as_str(), Some(now))
            .await?;
        tx.commit().await?;
        metrics::counter!("holdfast_checkins_total").increment(1);
        tracing::info!(ticket = %row.id, order = %row.order_id, event = %event.0, "ticket admitted");
        row.status = TicketStatus::Admitted.as_str().to_owned();
        row.admitted_at = Some(now);
        // The accounts may live elsewhere when the tickets service runs apart: no name then.
        let holder_name = match self.ctx.store.user_by_id(row.user_id).await {
            Ok(user) => user.map(|u| u.name),
            Err(e) => {
                tracing::warn!(ticket = %row.id, error = %e, "looking up the holder failed");
                None
            }
        };
        Ok(Admission {
            ticket: view(&row)?,
            holder_name,
        })
    }
}

/// The seats of `tickets` whose status passes `counted`, per ticket type.
fn seats(tickets: &[TicketRow], counted: impl Fn(&str) -> bool) -> Vec<SeatCount> {
    let mut seats: Vec<SeatCount> = Vec::new();
    for t in tickets.iter().filter(|t| counted(&t.status)) {
        match seats.iter_mut().find(|s| s.ticket_type == t.ticket_type) {
            Some(s) => s.quantity += 1,
            None => seats.push(SeatCount {
                ticket_type: t.ticket_type.clone(),
                quantity: 1,
            }),
        }
    }
    seats
}

#[async_trait]
impl Consumer for Tickets {
    fn group(&self) -> &'static str {
        CONSUMER
    }

    fn topics(&self) -> &'static [&'static str] {
        &[ORDERS]
    }

    fn in_tx(&self, env: &Envelope) -> bool {
        matches!(
            env.event,
            SagaEvent::OrderConfirmed { .. } | SagaEvent::OrderRefunded { .. }
        )
    }

    async fn handle_in(&self, tx: &mut CheckoutTx, env: &Envelope) -> Result<(), Error> {
        let handled: anyhow::Result<()> = match &env.event {
            SagaEvent::OrderConfirmed {
                user_id,
                email,
                phone,
                event_id,
                items,
                ..
            } => {
                self.issue(tx, env, *user_id, email, phone.as_deref(), *event_id, items)
                    .await
            }
            SagaEvent::OrderRefunded { ticket_ids, .. } => self.void(tx, env, ticket_ids).await,
            _ => Ok(()),
        };
        handled.map_err(Error::from)
    }

    fn committed(&self, env: &Envelope) {
        if let SagaEvent::OrderConfirmed { items, .. } = &env.event {
            let seats: u32 = items.iter().map(|i| i.quantity).sum();
            tracing::info!(order = %env.order_id, seats, "tickets issued");
        }
        self.ctx.relay.notify_one();
    }

    /// Every event this service handles is database work ([`Consumer::handle_in`]).
    async fn handle(&self, _env: &Envelope) -> Result<(), Error> {
        Ok(())
    }
}
