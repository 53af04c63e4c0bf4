//! The InventoryService API edge: authenticates, delegates to `ops`, and is
//! the only place errors become gRPC statuses.
use crate::error::Error;
use crate::metrics::Api;
use crate::ops::{self, Shared};
use futures::StreamExt as _;
use oms_kernel::{Tenant, Violations};
use oms_proto::inventory::{inventory_service_server::InventoryService, *};
use oms_runtime::{
    auth,
    outbox::{self, TraceContext},
    status,
};
use tonic::{Code, Request, Response, Status, Streaming, codegen::BoxStream};
use tonic_types::{ErrorDetails, StatusExt};

const DOMAIN: &str = "inventory.oms";

pub struct InventoryApi(pub Shared);

pub fn to_status(e: Error) -> Status {
    match e {
        Error::Invalid(v) => status::invalid_argument(DOMAIN, &v),
        Error::NotFound { kind, names } => status::not_found_all(DOMAIN, kind, &names),
        Error::AlreadyExists { reason, name } => status::already_exists(DOMAIN, reason, &name),
        Error::Precondition {
            reason,
            subject,
            message,
        } => status::failed_precondition(DOMAIN, reason, &subject, &message),
        Error::PermissionDenied(m) => {
            status::with_reason(Code::PermissionDenied, DOMAIN, "NOT_OWNER", m)
        }
        Error::Insufficient { short, channel } => {
            let mut d = ErrorDetails::new();
            d.set_error_info(
                "INSUFFICIENT_STOCK",
                DOMAIN,
                std::collections::HashMap::<String, String>::new(),
            );
            let mut lines = Vec::new();
            for s in &short {
                let subject = match (s.node.is_empty(), s.channel) {
                    (_, true) => format!("{channel}/items/{}", s.sku),
                    (true, false) => format!("items/{}", s.sku),
                    (false, false) => format!("nodes/{}/items/{}", s.node, s.sku),
                };
                let mut what = format!("{} available, {} requested", s.have.max(0), s.want);
                if s.kept > 0 {
                    // After the two figures: orders reads those first.
                    what += &format!(" ({} kept for waiting backorders)", s.kept);
                }
                lines.push(format!("{subject}: {what}"));
                d.add_precondition_failure_violation("INSUFFICIENT_STOCK", subject, what);
            }
            Status::with_error_details(
                Code::FailedPrecondition,
                format!("not enough stock: {}", lines.join("; ")),
                d,
            )
        }
        Error::Unavailable(m) => status::with_reason(Code::Unavailable, DOMAIN, "UNAVAILABLE", m),
        Error::Internal(m) => status::internal(DOMAIN, &Error::Internal(m)),
        Error::Stopped(e) => e.into_status(DOMAIN),
        Error::Idempotency(e) => e.into_status(DOMAIN),
        Error::Db(e) => status::from_db(DOMAIN, &e),
        Error::Gate(e) => status::unavailable(DOMAIN, "the reservation gate", &e),
    }
}

/// One `StreamReservations` message, answered as `CreateReservation`
/// would have answered it, in the trace it names or the stream's.
async fn answer_message(
    inv: &Shared,
    tenant: &Tenant,
    msg: StreamReservationsRequest,
    stream_trace: TraceContext,
) -> StreamReservationsResponse {
    let req = msg.reservation.unwrap_or_default();
    let reservation_id = req.reservation_id.clone();
    let answer = match message_trace(&msg.traceparent, &msg.tracestate) {
        Ok(trace) => {
            let trace = trace.unwrap_or(stream_trace);
            ops::reservations::create(inv, tenant, req, Api::Stream, trace).await
        }
        Err(e) => {
            let refused: crate::error::Result<CreateReservationResponse> = Err(e);
            inv.metrics
                .reservation(tenant.as_str(), Api::Stream, &refused);
            refused
        }
    };
    match answer {
        Ok(r) => StreamReservationsResponse {
            reservation_id,
            status: Some(status::to_rpc(None)),
            reservation: r.reservation,
        },
        Err(e) => StreamReservationsResponse {
            reservation_id,
            status: Some(status::to_rpc(Some(&to_status(e)))),
            reservation: None,
        },
    }
}

/// The trace context a `StreamReservations` message names, if any.
fn message_trace(traceparent: &str, tracestate: &str) -> Result<Option<TraceContext>, Error> {
    TraceContext::named(traceparent, tracestate)
        .map_err(|e| Violations::one("traceparent", e).into())
}

macro_rules! unary {
    ($self:ident, $req:ident, $op:path) => {{
        let caller = auth::caller(&$req)?;
        $op(&$self.0, &caller.tenant, $req.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }};
    ($self:ident, $req:ident, $op:path, actor) => {{
        let caller = auth::caller(&$req)?;
        $op(&$self.0, &caller.tenant, &caller.subject, $req.into_inner())
            .await
            .map(Response::new)
            .map_err(to_status)
    }};
}

#[tonic::async_trait]
impl InventoryService for InventoryApi {
    async fn create_node(
        &self,
        req: Request<CreateNodeRequest>,
    ) -> Result<Response<CreateNodeResponse>, Status> {
        unary!(self, req, ops::catalog::create_node)
    }
    async fn update_node(
        &self,
        req: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        unary!(self, req, ops::catalog::update_node)
    }
    async fn get_node(
        &self,
        req: Request<GetNodeRequest>,
    ) -> Result<Response<GetNodeResponse>, Status> {
        unary!(self, req, ops::catalog::get_node)
    }
    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        unary!(self, req, ops::catalog::list_nodes)
    }
    async fn create_item(
        &self,
        req: Request<CreateItemRequest>,
    ) -> Result<Response<CreateItemResponse>, Status> {
        unary!(self, req, ops::catalog::create_item)
    }
    async fn update_item(
        &self,
        req: Request<UpdateItemRequest>,
    ) -> Result<Response<UpdateItemResponse>, Status> {
        unary!(self, req, ops::catalog::update_item)
    }
    async fn get_item(
        &self,
        req: Request<GetItemRequest>,
    ) -> Result<Response<GetItemResponse>, Status> {
        unary!(self, req, ops::catalog::get_item)
    }
    async fn list_items(
        &self,
        req: Request<ListItemsRequest>,
    ) -> Result<Response<ListItemsResponse>, Status> {
        unary!(self, req, ops::catalog::list_items)
    }
    async fn record_movement(
        &self,
        req: Request<RecordMovementRequest>,
    ) -> Result<Response<RecordMovementResponse>, Status> {
        unary!(self, req, ops::movements::record, actor)
    }
    async fn transfer_stock(
        &self,
        req: Request<TransferStockRequest>,
    ) -> Result<Response<TransferStockResponse>, Status> {
        unary!(self, req, ops::transfers::transfer, actor)
    }
    async fn send_transfer(
        &self,
        req: Request<SendTransferRequest>,
    ) -> Result<Response<SendTransferResponse>, Status> {
        unary!(self, req, ops::transfers::send, actor)
    }
    async fn receive_transfer(
        &self,
        req: Request<ReceiveTransferRequest>,
    ) -> Result<Response<ReceiveTransferResponse>, Status> {
        unary!(self, req, ops::transfers::receive, actor)
    }
    async fn get_transfer(
        &self,
        req: Request<GetTransferRequest>,
    ) -> Result<Response<GetTransferResponse>, Status> {
        unary!(self, req, ops::transfers::get)
    }
    async fn list_transfers(
        &self,
        req: Request<ListTransfersRequest>,
    ) -> Result<Response<ListTransfersResponse>, Status> {
        unary!(self, req, ops::transfers::list)
    }
    async fn list_movements(
        &self,
        req: Request<ListMovementsRequest>,
    ) -> Result<Response<ListMovementsResponse>, Status> {
        unary!(self, req, ops::movements::list_movements)
    }
    async fn list_stock_levels(
        &self,
        req: Request<ListStockLevelsRequest>,
    ) -> Result<Response<ListStockLevelsResponse>, Status> {
        unary!(self, req, ops::movements::list_levels)
    }
    async fn import_stock_snapshot(
        &self,
        req: Request<Streaming<ImportStockSnapshotRequest>>,
    ) -> Result<Response<ImportStockSnapshotResponse>, Status> {
        use import_stock_snapshot_request::Part;
        let caller = auth::caller(&req)?;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(ImportStockSnapshotRequest {
                part: Some(Part::Header(h)),
            }) => h,
            _ => {
                return Err(to_status(
                    Violations::one("header", "the first message must be the snapshot header")
                        .into(),
                ));
            }
        };
        let mut rows = Vec::new();
        while let Some(msg) = stream.message().await? {
            match msg.part {
                Some(Part::Row(r)) => rows.push(r),
                _ => {
                    return Err(to_status(
                        Violations::one(
                            format!("row[{}]", rows.len()),
                            "only the first message is a header",
                        )
                        .into(),
                    ));
                }
            }
            if rows.len() > ops::imports::MAX_SNAPSHOT_ROWS {
                return Err(to_status(
                    Violations::one(
                        "row",
                        format!(
                            "at most {} rows per import",
                            ops::imports::MAX_SNAPSHOT_ROWS
                        ),
                    )
                    .into(),
                ));
            }
        }
        ops::imports::import(&self.0, &caller.tenant, &caller.subject, header, rows)
            .await
            .map(Response::new)
            .map_err(to_status)
    }
    async fn create_reservation(
        &self,
        req: Request<CreateReservationRequest>,
    ) -> Result<Response<CreateReservationResponse>, Status> {
        let caller = auth::caller(&req)?;
        let trace = TraceContext::current();
        ops::reservations::create(&self.0, &caller.tenant, req.into_inner(), Api::Unary, trace)
            .await
            .map(Response::new)
            .map_err(to_status)
    }
    async fn stream_reservations(
        &self,
        req: Request<Streaming<StreamReservationsRequest>>,
    ) -> Result<Response<BoxStream<StreamReservationsResponse>>, Status> {
        let caller = auth::caller(&req)?;
        let inv = self.0.clone();
        // A stopping server takes no new messages; those in flight are
        // answered (or refused as stopped by the writer), then the stream
        // ends with UNAVAILABLE / SHUTTING_DOWN rather than OK, so the
        // caller knows to send what was not answered to another replica.
        let stream_trace = TraceContext::current();
        let shutdown = inv.shutdown.clone();
        let stop = shutdown.clone().cancelled_owned();
        let stopped = futures::stream::once(async move {
            shutdown
                .is_cancelled()
                .then(|| Err(oms_runtime::batch::Stopped.into_status(DOMAIN)))
        })
        .filter_map(futures::future::ready);
        let answers = req
            .into_inner()
            .take_until(stop)
            .map(move |msg| {
                let (inv, tenant) = (inv.clone(), caller.tenant.clone());
                let stream_trace = stream_trace.clone();
                async move { Ok(answer_message(&inv, &tenant, msg?, stream_trace).await) }
            })
            // In order, with a bounded number in flight per stream: a caller
            // that sends faster than it reads is slowed, not buffered.
            .buffered(ops::reservations::STREAM_IN_FLIGHT)
            .chain(stopped);
        Ok(Response::new(Box::pin(answers)))
    }
    async fn get_reservation(
        &self,
        req: Request<GetReservationRequest>,
    ) -> Result<Response<GetReservationResponse>, Status> {
        unary!(self, req, ops::reservations::get)
    }
    async fn list_reservations(
        &self,
        req: Request<ListReservationsRequest>,
    ) -> Result<Response<ListReservationsResponse>, Status> {
        unary!(self, req, ops::reservations::list)
    }
    async fn confirm_reservation(
        &self,
        req: Request<ConfirmReservationRequest>,
    ) -> Result<Response<ConfirmReservationResponse>, Status> {
        unary!(self, req, ops::reservations::confirm, actor)
    }
    async fn release_reservation(
        &self,
        req: Request<ReleaseReservationRequest>,
    ) -> Result<Response<ReleaseReservationResponse>, Status> {
        unary!(self, req, ops::reservations::release, actor)
    }
    async fn consume_allocations(
        &self,
        req: Request<ConsumeAllocationsRequest>,
    ) -> Result<Response<ConsumeAllocationsResponse>, Status> {
        unary!(self, req, ops::reservations::consume, actor)
    }
    async fn extend_reservation(
        &self,
        req: Request<ExtendReservationRequest>,
    ) -> Result<Response<ExtendReservationResponse>, Status> {
        unary!(self, req, ops::reservations::extend, actor)
    }
    async fn get_availability(
        &self,
        req: Request<GetAvailabilityRequest>,
    ) -> Result<Response<GetAvailabilityResponse>, Status> {
        unary!(self, req, ops::availability::get)
    }
    async fn watch_availability(
        &self,
        req: Request<WatchAvailabilityRequest>,
    ) -> Result<Response<BoxStream<WatchAvailabilityResponse>>, Status> {
        let caller = auth::caller(&req)?;
        let feed = ops::availability::watch(self.0.clone(), caller.tenant, req.into_inner())
            .await
            .map_err(to_status)?;
        Ok(Response::new(Box::pin(feed.map(|r| r.map_err(to_status)))))
    }
    async fn set_safety_stock(
        &self,
        req: Request<SetSafetyStockRequest>,
    ) -> Result<Response<SetSafetyStockResponse>, Status> {
        unary!(self, req, ops::movements::set_safety)
    }
    async fn list_serial_numbers(
        &self,
        req: Request<ListSerialNumbersRequest>,
    ) -> Result<Response<ListSerialNumbersResponse>, Status> {
        unary!(self, req, ops::movements::list_serials)
    }
    async fn list_safety_stock(
        &self,
        req: Request<ListSafetyStockRequest>,
    ) -> Result<Response<ListSafetyStockResponse>, Status> {
        unary!(self, req, ops::movements::list_safety)
    }
    async fn set_channel_rule(
        &self,
        req: Request<SetChannelRuleRequest>,
    ) -> Result<Response<SetChannelRuleResponse>, Status> {
        unary!(self, req, ops::movements::set_channel_rule)
    }
    async fn list_channel_rules(
        &self,
        req: Request<ListChannelRulesRequest>,
    ) -> Result<Response<ListChannelRulesResponse>, Status> {
        unary!(self, req, ops::movements::list_channel_rules)
    }
    async fn set_backorder_demand(
        &self,
        req: Request<SetBackorderDemandRequest>,
    ) -> Result<Response<SetBackorderDemandResponse>, Status> {
        unary!(self, req, ops::backorders::set)
    }
    async fn set_expected_inbound(
        &self,
        req: Request<SetExpectedInboundRequest>,
    ) -> Result<Response<SetExpectedInboundResponse>, Status> {
        unary!(self, req, ops::inbound::set)
    }
    async fn list_expected_inbounds(
        &self,
        req: Request<ListExpectedInboundsRequest>,
    ) -> Result<Response<ListExpectedInboundsResponse>, Status> {
        unary!(self, req, ops::inbound::list)
    }
    async fn reconcile(
        &self,
        req: Request<ReconcileRequest>,
    ) -> Result<Response<ReconcileResponse>, Status> {
        unary!(self, req, ops::reconcile::reconcile)
    }
    async fn watch_inventory_events(
        &self,
        req: Request<WatchInventoryEventsRequest>,
    ) -> Result<Response<BoxStream<WatchInventoryEventsResponse>>, Status> {
        let caller = auth::caller(&req)?;
        let inv = &self.0;
        let wanted =
            crate::ops::wanted_event_types(&req.get_ref().event_types).map_err(to_status)?;
        // A connector that wants stock movements only is not sent a
        // sale's reservations (the others are passed over undecoded).
        let feed = outbox::watch_only::<InventoryEvent>(
            inv.pool.clone(),
            caller.tenant,
            &req.get_ref().after_cursor,
            (inv.waker.clone(), inv.shutdown.clone()),
            DOMAIN,
            wanted,
        )?
        .map(|e| {
            e.map(|(mut event, meta): (InventoryEvent, _)| {
                event.meta = Some(meta);
                WatchInventoryEventsResponse { event: Some(event) }
            })
        });
        Ok(Response::new(Box::pin(feed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_writer_is_unavailable_so_that_callers_retry() {
        let s = to_status(Error::from(oms_runtime::batch::Stopped));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(oms_runtime::status::reason(&s), "SHUTTING_DOWN");
    }
}
