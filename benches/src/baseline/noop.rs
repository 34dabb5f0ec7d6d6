//! The no-op baseline: every hold is answered 201 with a well-formed body and nothing is
//! reserved or stored. Its throughput is what the HTTP stack (routing, JWT check, JSON, metrics)
//! costs on this machine: the ceiling any engine behind the gateway can reach.

use async_trait::async_trait;
use holdfast_actors::{HoldRef, HoldView, TicketCode, TypeStock};
use holdfast_gateway::backend::{BackendError, EventInfo};

use super::{HoldStore, stock};

#[derive(Debug)]
pub struct NoopHolds;

#[async_trait]
impl HoldStore for NoopHolds {
    async fn add_event(&self, _event: &EventInfo) -> Result<(), BackendError> {
        Ok(())
    }

    async fn availability(
        &self,
        event: &EventInfo,
    ) -> Result<Vec<(TicketCode, TypeStock)>, BackendError> {
        Ok(event
            .ticket_types
            .iter()
            .map(|t| (t.code.clone(), stock(t.capacity, t.capacity, 0)))
            .collect())
    }

    async fn hold(&self, _hold: &HoldView) -> Result<(), BackendError> {
        Ok(())
    }

    async fn get_hold(&self, _hold: HoldRef) -> Result<Option<HoldView>, BackendError> {
        Ok(None)
    }

    async fn release(&self, _hold: HoldRef) -> Result<(), BackendError> {
        Ok(())
    }
}
