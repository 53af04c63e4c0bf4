//! What every routing use case shares: the pool, inventory, the feed, and
//! the idempotent transaction around a mutation.
use crate::network::Inventory;
use oms_kernel::{RequestId, Tenant, Violations};
use oms_proto::routing::{WatchRoutingEventsResponse, watch_routing_events_response::Kind};
use oms_runtime::{
    idempotency,
    outbox::{self, FeedWaker, NewEvent},
    status,
};
use prost::Message;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub const DOMAIN: &str = "routing.oms";

pub struct Routing {
    pub pool: PgPool,
    pub inventory: Inventory,
    pub waker: FeedWaker,
    pub shutdown: CancellationToken,
}

/// A started mutation: the stored answer of a repeat, or a transaction with
/// the request claimed.
pub enum Begin<R> {
    Replay(R),
    Tx(Transaction<'static, Postgres>, RequestId),
}

pub fn db(e: sqlx::Error) -> Status {
    status::from_db(DOMAIN, &e)
}

pub fn invalid(v: Violations) -> Status {
    status::invalid_argument(DOMAIN, &v)
}

/// The request id, checked with the body's own checks, so a caller hears
/// of every bad field in one answer.
pub fn checked<T>(request_id: &str, body: Result<T, Violations>) -> Result<(RequestId, T), Status> {
    RequestId::checked_with(request_id, body).map_err(invalid)
}

impl Routing {
    /// Claims `rid` in a new transaction (the shared idempotency helper,
    /// keeping the request id for `finish`).
    pub async fn begin<Req: Message, Resp: Message + Default>(
        &self,
        tenant: &Tenant,
        rid: RequestId,
        method: &str,
        req: &Req,
    ) -> Result<Begin<Resp>, Status> {
        Ok(
            match idempotency::begin(&self.pool, DOMAIN, tenant, &rid, method, req).await? {
                idempotency::Begin::Replay(r) => Begin::Replay(r),
                idempotency::Begin::Tx(tx) => Begin::Tx(tx, rid),
            },
        )
    }

    /// Stores the answer with the claim and commits.
    pub async fn finish<Resp: Message>(
        &self,
        tx: Transaction<'static, Postgres>,
        tenant: &Tenant,
        rid: &RequestId,
        resp: Resp,
    ) -> Result<Resp, Status> {
        idempotency::finish(tx, DOMAIN, tenant, rid, resp).await
    }
}

/// Appends a routing event in the transaction.
pub async fn emit(
    tx: &mut PgConnection,
    tenant: &Tenant,
    subject: &str,
    request_id: &str,
    kind: Kind,
) -> Result<(), Status> {
    let event_type = match &kind {
        Kind::OrderRouted(_) => "OrderRouted",
        Kind::RuleSetActivated(_) => "RuleSetActivated",
        Kind::DecisionReleased(_) => "DecisionReleased",
    };
    let payload = WatchRoutingEventsResponse {
        meta: None,
        kind: Some(kind),
    }
    .encode_to_vec();
    outbox::append(
        tx,
        NewEvent {
            tenant,
            event_type,
            subject,
            request_id,
            payload,
        },
    )
    .await
    .map_err(db)?;
    Ok(())
}
