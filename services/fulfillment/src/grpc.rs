//! The FulfillmentService API edge: authenticates and delegates.
use crate::service::{DOMAIN, Fulfillment, db, invalid};
use crate::{bridge, inbound, messages, repo, work};
use futures::StreamExt as _;
use oms_kernel::{Paging, Violations};
use oms_proto::fulfillment::{fulfillment_service_server::FulfillmentService, *};
use oms_runtime::{
    auth,
    outbox::{self},
};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming, codegen::BoxStream};

pub struct FulfillmentApi(pub Arc<Fulfillment>);

macro_rules! unary {
    ($self:ident, $req:ident, $op:path) => {{
        let caller = auth::caller(&$req)?;
        $op(&$self.0, &caller.tenant, $req.into_inner())
            .await
            .map(Response::new)
    }};
}

#[tonic::async_trait]
impl FulfillmentService for FulfillmentApi {
    async fn create_fulfillment_order(
        &self,
        req: Request<CreateFulfillmentOrderRequest>,
    ) -> Result<Response<CreateFulfillmentOrderResponse>, Status> {
        unary!(self, req, work::create)
    }
    async fn release_fulfillment_order(
        &self,
        req: Request<ReleaseFulfillmentOrderRequest>,
    ) -> Result<Response<ReleaseFulfillmentOrderResponse>, Status> {
        unary!(self, req, work::release)
    }
    async fn cancel_fulfillment_order(
        &self,
        req: Request<CancelFulfillmentOrderRequest>,
    ) -> Result<Response<CancelFulfillmentOrderResponse>, Status> {
        unary!(self, req, work::cancel)
    }
    async fn get_fulfillment_order(
        &self,
        req: Request<GetFulfillmentOrderRequest>,
    ) -> Result<Response<GetFulfillmentOrderResponse>, Status> {
        unary!(self, req, work::get)
    }
    async fn list_fulfillment_orders(
        &self,
        req: Request<ListFulfillmentOrdersRequest>,
    ) -> Result<Response<ListFulfillmentOrdersResponse>, Status> {
        unary!(self, req, work::list)
    }

    async fn connect_adapter(
        &self,
        req: Request<Streaming<ConnectAdapterRequest>>,
    ) -> Result<Response<BoxStream<ConnectAdapterResponse>>, Status> {
        let caller = auth::caller(&req)?;
        let stream = bridge::connect(self.0.clone(), caller.tenant, req.into_inner()).await?;
        Ok(Response::new(Box::pin(stream)))
    }

    async fn list_adapter_sessions(
        &self,
        req: Request<ListAdapterSessionsRequest>,
    ) -> Result<Response<ListAdapterSessionsResponse>, Status> {
        let caller = auth::caller(&req)?;
        let req = req.into_inner();
        let mut v = Violations::new();
        let paging = Paging::<String>::parse(&mut v, req.page_size, &req.page_token, (50, 500), 0);
        if !v.is_empty() {
            return Err(invalid(v));
        }
        let rows = repo::sessions(
            &self.0.pool,
            &caller.tenant,
            paging.after.clone(),
            paging.fetch(),
        )
        .await
        .map_err(db)?;
        let (sessions, next_page_token) = paging.page(rows, |s| s.adapter_id.clone());
        Ok(Response::new(ListAdapterSessionsResponse {
            sessions,
            next_page_token,
        }))
    }

    async fn create_advance_shipping_notice(
        &self,
        req: Request<CreateAdvanceShippingNoticeRequest>,
    ) -> Result<Response<CreateAdvanceShippingNoticeResponse>, Status> {
        unary!(self, req, inbound::create)
    }
    async fn close_advance_shipping_notice(
        &self,
        req: Request<CloseAdvanceShippingNoticeRequest>,
    ) -> Result<Response<CloseAdvanceShippingNoticeResponse>, Status> {
        unary!(self, req, inbound::close)
    }
    async fn get_advance_shipping_notice(
        &self,
        req: Request<GetAdvanceShippingNoticeRequest>,
    ) -> Result<Response<GetAdvanceShippingNoticeResponse>, Status> {
        unary!(self, req, inbound::get)
    }
    async fn list_advance_shipping_notices(
        &self,
        req: Request<ListAdvanceShippingNoticesRequest>,
    ) -> Result<Response<ListAdvanceShippingNoticesResponse>, Status> {
        unary!(self, req, inbound::list)
    }
    async fn send_message(
        &self,
        req: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let caller = auth::caller(&req)?;
        messages::send(&self.0, &caller.tenant, &caller.subject, req.into_inner())
            .await
            .map(Response::new)
    }
    async fn list_messages(
        &self,
        req: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        unary!(self, req, messages::list)
    }
    async fn mark_message_read(
        &self,
        req: Request<MarkMessageReadRequest>,
    ) -> Result<Response<MarkMessageReadResponse>, Status> {
        unary!(self, req, messages::mark_read)
    }

    async fn watch_fulfillment_events(
        &self,
        req: Request<WatchFulfillmentEventsRequest>,
    ) -> Result<Response<BoxStream<WatchFulfillmentEventsResponse>>, Status> {
        let caller = auth::caller(&req)?;
        let r = &self.0;
        let feed = outbox::watch(
            r.pool.clone(),
            caller.tenant,
            &req.get_ref().after_cursor,
            r.waker.clone(),
            r.shutdown.clone(),
            DOMAIN,
        )?
        .map(|e| {
            e.map(|(mut event, meta): (WatchFulfillmentEventsResponse, _)| {
                event.meta = Some(meta);
                event
            })
        });
        Ok(Response::new(Box::pin(feed)))
    }
}
