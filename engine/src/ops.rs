//! Inventory operations as values, so one node can run them for another: the same enum is
//! executed locally and sent over the internal API.

use holdfast_actors::queue::QueueRead;
use holdfast_actors::{
    HoldId, HoldView, Line, OrderId, QueueSetup, SaleWindow, TicketCode, TypeStock, UserId,
    inventory,
};
use holdfast_gateway::backend::BackendError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryOp {
    /// Idempotent by `hold_id`, so a retry after a lost answer is safe.
    Hold {
        hold_id: HoldId,
        user: UserId,
        items: Vec<Line>,
        ttl_ms: i64,
    },
    GetHold(HoldId),
    /// Idempotent.
    Release(HoldId),
    /// Held → sold for a paid order. Idempotent by the pair.
    Confirm {
        hold_id: HoldId,
        order_id: OrderId,
    },
    /// A refunded order's seats go back on sale. Idempotent by `order_id`.
    Return {
        order_id: OrderId,
    },
    Stock,
    /// A refund that keeps `keep` sold (seats used at the door); the rest go back on sale.
    /// Idempotent by `order_id`.
    ReturnPart {
        order_id: OrderId,
        keep: Vec<Line>,
    },
    // New variants go last: the node-to-node API sends the variant's index.
    /// A ticket type added to the event. Idempotent.
    Define {
        code: TicketCode,
        capacity: u32,
        per_user_limit: Option<u32>,
    },
    /// Refused below the seats held and sold.
    AdjustCapacity {
        ticket_type: TicketCode,
        capacity: u32,
    },
    SetSaleWindow(SaleWindow),
    /// Releases every hold and refuses new ones. Idempotent.
    Cancel,
    SetPerUserLimit {
        ticket_type: TicketCode,
        per_user_limit: Option<u32>,
    },
    /// A hold on a queued event, with the number of the buyer's admission.
    HoldAdmitted {
        hold_id: HoldId,
        user: UserId,
        items: Vec<Line>,
        ttl_ms: i64,
        admission: u64,
    },
    /// Sets up, changes or (`None`) removes the waiting room.
    SetQueue(Option<QueueSetup>),
    /// Joins the waiting room (idempotent) and answers what the buyer reads after it.
    JoinQueue {
        user: UserId,
    },
    /// What the buyer reads of the waiting room; writes nothing.
    ReadQueue {
        user: UserId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryReply {
    Hold(Option<HoldView>),
    Stock(Vec<(TicketCode, TypeStock)>),
    Done,
    /// `None`: the event has no waiting room.
    Queue(Option<QueueRead>),
    /// A join: whether this call joined, and the buyer's place after it.
    Joined {
        joined: bool,
        read: Option<QueueRead>,
    },
}

/// Why an operation failed, in a form that crosses the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// This node does not own the event's shard (any more): refresh the map and retry.
    #[error("not the owner of this shard")]
    NotOwner,
    #[error("event not found")]
    EventNotFound,
    #[error("event is overloaded")]
    Overloaded,
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Inventory(#[from] inventory::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<OpError> for BackendError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotOwner => {
                BackendError::Unavailable("shard is moving; retry shortly".to_owned())
            }
            OpError::EventNotFound => BackendError::EventNotFound,
            OpError::Overloaded => BackendError::Overloaded,
            OpError::Unavailable(why) => BackendError::Unavailable(why),
            OpError::Inventory(e) => BackendError::Inventory(e),
            OpError::Internal(why) => BackendError::Internal(why),
        }
    }
}
