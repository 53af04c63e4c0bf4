//! Recording a change of an order: the document, its history line and its
//! event, in the caller's transaction. Used by the API and by the saga.
use crate::domain::{OrderState, lifecycle};
use crate::repo::{self, history::Change};
use chrono::Utc;
use oms_kernel::Tenant;
use oms_proto::orders::{Order, OrderEvent, OrderStateChanged, order_event};
use oms_runtime::outbox::{self, NewEvent};
use prost::Message;
use sqlx::PgConnection;
use uuid::Uuid;

/// What happened, for the history and the feed.
pub struct Happened {
    pub kind: order_event::Kind,
    pub reason: String,
}

impl Happened {
    pub fn state_changed(from: OrderState, to: OrderState, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        Happened {
            kind: order_event::Kind::StateChanged(OrderStateChanged {
                from_state: from.to_proto() as i32,
                to_state: to.to_proto() as i32,
                reason: reason.clone(),
            }),
            reason,
        }
    }

    pub fn event_type(&self) -> &'static str {
        match self.kind {
            order_event::Kind::Created(_) => "OrderCreated",
            order_event::Kind::StateChanged(_) => "OrderStateChanged",
            order_event::Kind::HoldPlaced(_) => "OrderHoldPlaced",
            order_event::Kind::HoldReleased(_) => "OrderHoldReleased",
            order_event::Kind::LinesCancelled(_) => "OrderLinesCancelled",
            order_event::Kind::Updated(_) => "OrderUpdated",
            order_event::Kind::RoutingDeferred(_) => "OrderRoutingDeferred",
        }
    }
}

/// Saves `order` (changed from state `from`) with its history and event.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    order: &mut Order,
    held_from: Option<OrderState>,
    from: OrderState,
    actor: &str,
    request_id: &str,
    happened: Happened,
) -> sqlx::Result<()> {
    repo::orders::save(tx, tenant, order_id, order, held_from, Utc::now()).await?;
    if lifecycle::takes_no_stock(order) {
        // Its waits would be woken by stock it cannot take, and the stock
        // counted for it would wake none of the orders behind it. Its step
        // writes them again when it runs after the hold's release, at the
        // order's turn (its creation) as before.
        repo::stock_waits::forget(tx, tenant, order_id).await?;
    }
    tell(
        tx, tenant, order_id, order, from, actor, request_id, happened,
    )
    .await
}

/// Records what happened to `order` (in state `from` before it) in its
/// history and feed, without saving it: for facts that change nothing of
/// the order itself.
#[allow(clippy::too_many_arguments)]
pub async fn tell(
    tx: &mut PgConnection,
    tenant: &Tenant,
    order_id: Uuid,
    order: &Order,
    from: OrderState,
    actor: &str,
    request_id: &str,
    happened: Happened,
) -> sqlx::Result<()> {
    let to = lifecycle::state(order);
    let kind = happened.event_type();
    let change = Change {
        actor,
        kind,
        reason: &happened.reason,
        from: Some(from),
        to: Some(to),
        request_id,
    };
    repo::history::record(tx, tenant, order_id, change).await?;
    let event = OrderEvent {
        meta: None,
        order: Some(order.clone()),
        kind: Some(happened.kind),
    };
    outbox::append(
        tx,
        NewEvent {
            tenant,
            event_type: kind,
            subject: &order.name,
            request_id,
            payload: event.encode_to_vec(),
        },
    )
    .await?;
    Ok(())
}
