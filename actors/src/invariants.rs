//! The invariants of an event's inventory, in one place. The core checks the cheap ones after
//! every event in debug builds; property and fault tests check all of them.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::{TicketCode, UserId};
use crate::inventory::{HoldStatus, Inventory};

/// A broken invariant, described for a test failure or a crash report.
pub type Violation = String;

/// Per ticket type: `available + held + sold == capacity`. O(ticket types).
pub fn check_stock(inv: &Inventory) -> Result<(), Violation> {
    for (code, s) in &inv.types {
        let total = u64::from(s.available) + u64::from(s.held) + u64::from(s.sold);
        if total != u64::from(s.capacity) {
            return Err(format!(
                "{code}: available {} + held {} + sold {} != capacity {}",
                s.available, s.held, s.sold, s.capacity
            ));
        }
    }
    Ok(())
}

/// Every invariant: stock conservation, held and sold match the live holds and orders, per-user
/// counts match and respect limits, the expiry index lists exactly the active holds.
pub fn check(inv: &Inventory) -> Result<(), Violation> {
    check_stock(inv)?;
    let mut held: BTreeMap<&TicketCode, u64> = BTreeMap::new();
    let mut sold: BTreeMap<&TicketCode, u64> = BTreeMap::new();
    let mut per_user: BTreeMap<(UserId, &TicketCode), u32> = BTreeMap::new();
    let mut expiries = BTreeSet::new();
    for (id, hold) in &inv.holds {
        if hold.status != HoldStatus::Active {
            continue;
        }
        expiries.insert((hold.expires_at, *id));
        for line in &hold.items {
            *held.entry(&line.ticket_type).or_default() += u64::from(line.quantity.get());
            *per_user.entry((hold.user, &line.ticket_type)).or_default() += line.quantity.get();
        }
    }
    for (order_id, order) in &inv.orders {
        let hold_ok = inv
            .holds
            .get(&order.hold_id)
            .is_some_and(|h| h.status == HoldStatus::Confirmed && h.order_id == Some(*order_id));
        if !hold_ok {
            return Err(format!("order {order_id} has no confirmed hold"));
        }
        if order.returned {
            continue;
        }
        for line in &order.items {
            *sold.entry(&line.ticket_type).or_default() += u64::from(line.quantity.get());
            *per_user.entry((order.user, &line.ticket_type)).or_default() += line.quantity.get();
        }
    }
    for (code, s) in &inv.types {
        let h = held.get(code).copied().unwrap_or(0);
        let so = sold.get(code).copied().unwrap_or(0);
        if h != u64::from(s.held) || so != u64::from(s.sold) {
            return Err(format!(
                "{code}: stock says held {} sold {}, holds and orders say {h} and {so}",
                s.held, s.sold
            ));
        }
    }
    let counted: BTreeMap<(UserId, &TicketCode), u32> = inv
        .per_user
        .iter()
        .flat_map(|(user, m)| m.iter().map(move |(code, n)| ((*user, code), *n)))
        .collect();
    if counted != per_user {
        return Err(format!(
            "per-user counts {counted:?} != holds and orders {per_user:?}"
        ));
    }
    for ((user, code), n) in &per_user {
        if let Some(limit) = inv.types.get(*code).and_then(|s| s.per_user_limit)
            && *n > limit
        {
            return Err(format!("user {user} has {n} of {code}, limit {limit}"));
        }
    }
    if expiries != inv.expiries {
        return Err("expiry index does not match the active holds".to_owned());
    }
    Ok(())
}
