//! The engine's two adapters around the checkout saga (`holdfast-checkout`): the node's
//! inventory as the saga's [`Inventory`], and the saga's services as the gateway's
//! [`Checkout`]. The saga and the gateway know nothing of each other; this is where their
//! types meet.

use async_trait::async_trait;
use holdfast_actors::inventory::HoldView;
use holdfast_actors::{EventId, HoldRef, Line, OrderId, UserId};
use holdfast_checkout::model::{Currency, Money};
use holdfast_checkout::{CheckoutNode, EventTerms, Inventory, InventoryError};
use holdfast_gateway::backend::{Backend, BackendError};
use holdfast_gateway::checkout as gw;

use crate::backend::NodeBackend;

/// A node error as the saga sees it: retryable or not.
fn inventory_error(e: BackendError) -> InventoryError {
    match e {
        BackendError::Inventory(e) => InventoryError::Refused(e),
        BackendError::EventNotFound => InventoryError::EventNotFound,
        BackendError::Overloaded => InventoryError::Overloaded,
        BackendError::Unavailable(why) => InventoryError::Unavailable(why),
        BackendError::Cluster(why) => InventoryError::Unavailable(why.to_string()),
        e @ BackendError::NotServedHere(_) => InventoryError::Unavailable(e.to_string()),
        e @ (BackendError::EmailTaken
        | BackendError::Internal(_)
        | BackendError::UnknownCategory(_)
        | BackendError::TicketTypeExists(_)
        | BackendError::TicketTypeNotFound(_)
        | BackendError::Invalid(_)) => InventoryError::Internal(e.to_string()),
    }
}

#[async_trait]
impl Inventory for NodeBackend {
    async fn hold_of(&self, hold: HoldRef) -> Result<Option<HoldView>, InventoryError> {
        self.get_hold(hold).await.map_err(inventory_error)
    }

    async fn terms(&self, event: EventId) -> Result<Option<EventTerms>, InventoryError> {
        let Some(event) = self.event(event).await.map_err(inventory_error)? else {
            return Ok(None);
        };
        let ticket_type_names = event
            .ticket_types
            .iter()
            .map(|t| (t.code.as_str().to_owned(), t.name.clone()))
            .collect();
        let prices = event
            .ticket_types
            .into_iter()
            .map(|t| {
                let currency = Currency::parse(&t.currency).map_err(|e| {
                    InventoryError::Internal(format!("ticket type {}: {e}", t.code.as_str()))
                })?;
                Ok((t.code, Money::new(t.price, currency)))
            })
            .collect::<Result<_, InventoryError>>()?;
        Ok(Some(EventTerms {
            starts_at_ms: crate::backend::millis(event.starts_at),
            name: event.name,
            venue: event.venue,
            time_zone: event.time_zone,
            ticket_type_names,
            prices,
            refund_policy: event.refund_policy,
        }))
    }

    async fn terms_at(
        &self,
        event: EventId,
        placed_at_ms: i64,
    ) -> Result<Option<EventTerms>, InventoryError> {
        let Some(mut terms) = self.terms(event).await? else {
            return Ok(None);
        };
        let before = self
            .store()
            .prices_at(event.0, placed_at_ms)
            .await
            .map_err(|e| InventoryError::Unavailable(format!("catalog: {e}")))?;
        for (code, price) in &mut terms.prices {
            if let Some(old) = before.get(code.as_str()) {
                price.amount = *old;
            }
        }
        Ok(Some(terms))
    }

    async fn hold(
        &self,
        hold: HoldRef,
        user: UserId,
        items: Vec<Line>,
    ) -> Result<(), InventoryError> {
        Backend::hold(self, hold, user, items, None)
            .await
            .map(|_| ())
            .map_err(inventory_error)
    }

    async fn confirm(&self, hold: HoldRef, order: OrderId) -> Result<(), InventoryError> {
        NodeBackend::confirm(self, hold, order)
            .await
            .map_err(inventory_error)
    }

    async fn release(&self, hold: HoldRef) -> Result<(), InventoryError> {
        Backend::release(self, hold).await.map_err(inventory_error)
    }

    async fn return_stock_except(
        &self,
        event: EventId,
        order: OrderId,
        keep: Vec<Line>,
    ) -> Result<(), InventoryError> {
        NodeBackend::return_stock_except(self, event, order, keep)
            .await
            .map_err(inventory_error)
    }
}

/// The saga's services of this node, as the gateway calls them.
#[derive(Debug)]
pub struct SagaCheckout(pub CheckoutNode);

fn error(e: holdfast_checkout::CheckoutError) -> gw::CheckoutError {
    use holdfast_checkout::CheckoutError as E;
    match e {
        E::HoldNotActive { status } => gw::CheckoutError::HoldNotActive { status },
        E::HoldNotFound => gw::CheckoutError::HoldNotFound,
        E::OrderNotFound => gw::CheckoutError::OrderNotFound,
        E::TicketNotFound => gw::CheckoutError::TicketNotFound,
        E::InvalidTicket(why) => gw::CheckoutError::InvalidTicket(why),
        E::AlreadyAdmitted { ticket_id } => gw::CheckoutError::AlreadyAdmitted { ticket_id },
        E::NotRefundable { status } => gw::CheckoutError::NotRefundable { status },
        E::TicketAdmitted { ticket_id } => gw::CheckoutError::TicketAdmitted { ticket_id },
        E::RefundNotAllowed(why) => gw::CheckoutError::RefundNotAllowed(why),
        E::WrongEvent { ticket_event } => gw::CheckoutError::WrongEvent { ticket_event },
        E::Invalid(why) => gw::CheckoutError::Invalid(why),
        E::NotServedHere(what) => gw::CheckoutError::NotServedHere(what),
        E::ParkedNotFound => gw::CheckoutError::ParkedNotFound,
        E::RefundNotFound => gw::CheckoutError::RefundNotFound,
        E::Corrupt(why) => gw::CheckoutError::Backend(BackendError::Internal(why)),
        E::Inventory(e) => gw::CheckoutError::Backend(match e {
            InventoryError::Refused(e) => BackendError::Inventory(e),
            InventoryError::EventNotFound => BackendError::EventNotFound,
            InventoryError::Overloaded => BackendError::Overloaded,
            InventoryError::Unavailable(why) => BackendError::Unavailable(why),
            InventoryError::Internal(why) => BackendError::Internal(why),
        }),
        // A store out of reach is worth a retry; any other store failure is ours.
        E::Store(e) if e.is_transient() => {
            gw::CheckoutError::Backend(BackendError::Unavailable(e.to_string()))
        }
        E::Store(e) => gw::CheckoutError::Backend(BackendError::Internal(e.to_string())),
    }
}

fn order(v: holdfast_checkout::OrderView) -> gw::OrderView {
    gw::OrderView {
        id: v.id,
        user: v.user,
        hold: v.hold,
        status: v.status.as_str().to_owned(),
        amount: v.total.amount,
        currency: v.total.currency.to_string(),
        items: v
            .items
            .into_iter()
            .map(|l| gw::OrderLine {
                ticket_type: l.ticket_type,
                quantity: l.quantity,
                price: l.price,
            })
            .collect(),
        payment_url: v.payment_url,
        note: v.note,
        created_at_ms: v.created_at_ms,
    }
}

fn ticket(v: holdfast_checkout::TicketView) -> gw::TicketView {
    gw::TicketView {
        id: v.id,
        order_id: v.order_id,
        event_id: v.event_id,
        user: v.user,
        ticket_type: v.ticket_type,
        code: v.code,
        status: v.status.as_str().to_owned(),
    }
}

fn refund(v: holdfast_checkout::RefundView) -> gw::RefundView {
    gw::RefundView {
        id: v.id,
        order_id: v.order_id,
        amount: v.amount.amount,
        fee: v.fee,
        currency: v.amount.currency.to_string(),
        status: v.status.as_str().to_owned(),
        ticket_ids: v.ticket_ids,
        reason: v.reason,
        by_organizer: v.by_organizer,
        note: v.note,
        created_at_ms: v.created_at_ms,
        updated_at_ms: v.updated_at_ms,
    }
}

fn parked(v: holdfast_checkout::ParkedView) -> gw::ParkedView {
    gw::ParkedView {
        id: v.id,
        service: v.service,
        topic: v.topic,
        event_id: v.event_id,
        order_id: v.order_id,
        error: v.error,
        attempts: v.attempts,
        parked_at_ms: v.parked_at_ms,
    }
}

#[async_trait]
impl gw::Checkout for SagaCheckout {
    async fn create_order(
        &self,
        user: UserId,
        hold: HoldRef,
        id: OrderId,
    ) -> Result<(gw::OrderView, bool), gw::CheckoutError> {
        let (view, created) = self.0.create_order(user, hold, id).await.map_err(error)?;
        Ok((order(view), created))
    }

    async fn order(&self, id: OrderId) -> Result<Option<gw::OrderView>, gw::CheckoutError> {
        Ok(self.0.order(id).await.map_err(error)?.map(order))
    }

    async fn orders(&self, user: UserId) -> Result<Vec<gw::OrderView>, gw::CheckoutError> {
        let views = self.0.orders(user).await.map_err(error)?;
        Ok(views.into_iter().map(order).collect())
    }

    async fn refund(
        &self,
        id: OrderId,
        reason: String,
        by: gw::RefundBy,
    ) -> Result<gw::OrderView, gw::CheckoutError> {
        let by = match by {
            gw::RefundBy::Buyer => holdfast_checkout::RefundBy::Buyer,
            gw::RefundBy::Organizer => holdfast_checkout::RefundBy::Organizer,
        };
        self.0
            .refund(id, reason, by)
            .await
            .map(order)
            .map_err(error)
    }

    async fn refund_tickets(
        &self,
        id: OrderId,
        reason: String,
        by: gw::RefundBy,
        ticket_ids: Vec<uuid::Uuid>,
    ) -> Result<gw::RefundView, gw::CheckoutError> {
        let by = match by {
            gw::RefundBy::Buyer => holdfast_checkout::RefundBy::Buyer,
            gw::RefundBy::Organizer => holdfast_checkout::RefundBy::Organizer,
        };
        self.0
            .refund_tickets(id, reason, by, &ticket_ids)
            .await
            .map(refund)
            .map_err(error)
    }

    async fn refunds(&self, id: OrderId) -> Result<Vec<gw::RefundView>, gw::CheckoutError> {
        let views = self.0.refunds(id).await.map_err(error)?;
        Ok(views.into_iter().map(refund).collect())
    }

    async fn tickets(&self, id: OrderId) -> Result<Vec<gw::TicketView>, gw::CheckoutError> {
        let views = self.0.tickets(id).await.map_err(error)?;
        Ok(views.into_iter().map(ticket).collect())
    }

    async fn ticket(&self, id: uuid::Uuid) -> Result<Option<gw::TicketView>, gw::CheckoutError> {
        Ok(self.0.ticket(id).await.map_err(error)?.map(ticket))
    }

    fn qr_png(&self, code: &str) -> Result<Vec<u8>, gw::CheckoutError> {
        self.0.qr_png(code).map_err(error)
    }

    async fn checkin(
        &self,
        code: &str,
        event: EventId,
    ) -> Result<gw::Admission, gw::CheckoutError> {
        let admission = self.0.checkin(code, event).await.map_err(error)?;
        Ok(gw::Admission {
            ticket: ticket(admission.ticket),
            holder_name: admission.holder_name,
        })
    }

    async fn vnpay_ipn(&self, query: Vec<(String, String)>) -> gw::IpnAnswer {
        let answer = self.0.vnpay_ipn(query).await;
        gw::IpnAnswer {
            rsp_code: answer.rsp_code,
            message: answer.message,
        }
    }

    async fn vnpay_return(&self, query: Vec<(String, String)>) -> gw::ReturnPage {
        let page = self.0.vnpay_return(query).await;
        gw::ReturnPage {
            verified: page.verified,
            order_id: page.order_id,
            paid: page.paid,
            order_status: page.order_status,
        }
    }

    async fn failed_refunds(&self) -> Result<Vec<gw::FailedRefundView>, gw::CheckoutError> {
        let views = self.0.failed_refunds().await.map_err(error)?;
        Ok(views
            .into_iter()
            .map(|v| gw::FailedRefundView {
                id: v.id,
                order_id: v.order_id,
                amount: v.amount,
                attempts: v.attempts,
                response_code: v.response_code,
                message: v.message,
                failed_at_ms: v.failed_at_ms,
            })
            .collect())
    }

    async fn retry_refund(&self, id: uuid::Uuid) -> Result<(), gw::CheckoutError> {
        self.0.retry_refund(id).await.map_err(error)
    }

    async fn parked(&self) -> Result<Vec<gw::ParkedView>, gw::CheckoutError> {
        let views = self.0.parked().await.map_err(error)?;
        Ok(views.into_iter().map(parked).collect())
    }

    async fn retry_parked(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<gw::ParkedView>, gw::CheckoutError> {
        Ok(self.0.retry_parked(id).await.map_err(error)?.map(parked))
    }

    async fn discard_parked(&self, id: uuid::Uuid) -> Result<(), gw::CheckoutError> {
        self.0.discard_parked(id).await.map_err(error)
    }
}
