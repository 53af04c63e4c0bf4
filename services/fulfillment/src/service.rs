//! What every fulfillment use case shares: the pool, the feed, and the
//! helpers around statuses and events.
use oms_kernel::RequestId;
use oms_kernel::{Tenant, Violations};
use oms_proto::fulfillment::{
    FulfillmentOrder, FulfillmentState, FulfillmentStateChanged, WatchFulfillmentEventsResponse,
    watch_fulfillment_events_response::Kind,
};
use oms_runtime::idempotency;
use oms_runtime::{
    outbox::{self, FeedWaker, NewEvent},
    status,
};
use prost::Message;
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub const DOMAIN: &str = "fulfillment.oms";

/// How adapter streams behave; tests shorten the times.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// Adapters send a heartbeat at least this often.
    pub heartbeat: Duration,
    /// Commands sent ahead of the adapter's acknowledgements, at most.
    pub window: i64,
    /// Unacknowledged commands are sent again after this long.
    pub resend_after: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            heartbeat: Duration::from_secs(10),
            window: 1000,
            resend_after: Duration::from_secs(30),
        }
    }
}

pub struct Fulfillment {
    pub pool: PgPool,
    pub waker: FeedWaker,
    pub shutdown: CancellationToken,
    pub bridge: BridgeConfig,
    /// Wakes the receipt poster (see `posting`).
    pub posting: Arc<Notify>,
    /// Inventory, asked about the transfers notices announce.
    pub inventory: crate::inventory::Inventory,
    pub health: crate::health::Health,
}

impl Fulfillment {
    /// Stores the answer with the request's claim, commits, and wakes this
    /// process's feed readers and adapter streams for what committed.
    pub async fn finish<Resp: prost::Message>(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Postgres>,
        tenant: &Tenant,
        rid: &RequestId,
        resp: Resp,
    ) -> Result<Resp, Status> {
        let done = idempotency::finish(tx, DOMAIN, tenant, rid, resp).await;
        self.waker.wake();
        done
    }
}

pub fn db(e: sqlx::Error) -> Status {
    status::from_db(DOMAIN, &e)
}

pub fn invalid(v: Violations) -> Status {
    status::invalid_argument(DOMAIN, &v)
}

/// Appends a fulfillment event about `fo` in the transaction.
pub async fn emit(
    tx: &mut PgConnection,
    tenant: &Tenant,
    fo: &FulfillmentOrder,
    request_id: &str,
    kind: Kind,
) -> Result<(), Status> {
    outbox::append(tx, event(tenant, &fo.name, Some(fo), request_id, kind))
        .await
        .map_err(db)?;
    Ok(())
}

/// Appends the event of `fo` moving from `from` to its state by a request
/// (not an adapter event).
pub async fn emit_moved(
    tx: &mut PgConnection,
    tenant: &Tenant,
    fo: &FulfillmentOrder,
    request_id: &str,
    from: FulfillmentState,
) -> Result<(), Status> {
    let kind = Kind::StateChanged(FulfillmentStateChanged {
        from_state: from as i32,
        to_state: fo.state,
        status: None,
    });
    emit(tx, tenant, fo, request_id, kind).await
}

/// Appends an event about `subject` that is not a fulfillment order (a
/// receipt) in the transaction.
pub async fn emit_about(
    tx: &mut PgConnection,
    tenant: &Tenant,
    subject: &str,
    request_id: &str,
    kind: Kind,
) -> Result<(), Status> {
    outbox::append(tx, event(tenant, subject, None, request_id, kind))
        .await
        .map_err(db)?;
    Ok(())
}

/// Appends several fulfillment events (order after the fact, request or
/// adapter event id, what happened) in one statement.
pub async fn emit_many(
    tx: &mut PgConnection,
    tenant: &Tenant,
    events: &[(FulfillmentOrder, String, Kind)],
) -> Result<(), Status> {
    let rows: Vec<NewEvent> = events
        .iter()
        .map(|(fo, request_id, kind)| event(tenant, &fo.name, Some(fo), request_id, kind.clone()))
        .collect();
    outbox::append_many(tx, &rows).await.map_err(db)
}

fn event<'a>(
    tenant: &'a Tenant,
    subject: &'a str,
    fo: Option<&FulfillmentOrder>,
    request_id: &'a str,
    kind: Kind,
) -> NewEvent<'a> {
    let event_type = match &kind {
        Kind::StateChanged(_) => "FulfillmentStateChanged",
        Kind::ReceiptRecorded(_) => "ReceiptRecorded",
    };
    let payload = WatchFulfillmentEventsResponse {
        meta: None,
        fulfillment_order: fo.cloned(),
        kind: Some(kind),
    }
    .encode_to_vec();
    NewEvent {
        tenant,
        event_type,
        subject,
        request_id,
        payload,
    }
}
