//! The RoutingService API edge: authenticates and delegates.
use crate::service::{DOMAIN, Routing};
use crate::{planning, rulesets};
use futures::StreamExt as _;
use oms_proto::routing::{routing_service_server::RoutingService, *};
use oms_runtime::{
    auth,
    outbox::{self},
};
use std::sync::Arc;
use tonic::{Request, Response, Status, codegen::BoxStream};

pub struct RoutingApi(pub Arc<Routing>);

macro_rules! unary {
    ($self:ident, $req:ident, $op:path) => {{
        let caller = auth::caller(&$req)?;
        $op(&$self.0, &caller.tenant, $req.into_inner())
            .await
            .map(Response::new)
    }};
}

#[tonic::async_trait]
impl RoutingService for RoutingApi {
    async fn create_rule_set(
        &self,
        req: Request<CreateRuleSetRequest>,
    ) -> Result<Response<CreateRuleSetResponse>, Status> {
        unary!(self, req, rulesets::create)
    }
    async fn update_rule_set(
        &self,
        req: Request<UpdateRuleSetRequest>,
    ) -> Result<Response<UpdateRuleSetResponse>, Status> {
        unary!(self, req, rulesets::update)
    }
    async fn get_rule_set(
        &self,
        req: Request<GetRuleSetRequest>,
    ) -> Result<Response<GetRuleSetResponse>, Status> {
        unary!(self, req, rulesets::get)
    }
    async fn list_rule_sets(
        &self,
        req: Request<ListRuleSetsRequest>,
    ) -> Result<Response<ListRuleSetsResponse>, Status> {
        unary!(self, req, rulesets::list)
    }
    async fn activate_rule_set(
        &self,
        req: Request<ActivateRuleSetRequest>,
    ) -> Result<Response<ActivateRuleSetResponse>, Status> {
        unary!(self, req, rulesets::activate)
    }
    async fn rollback_rule_set(
        &self,
        req: Request<RollbackRuleSetRequest>,
    ) -> Result<Response<RollbackRuleSetResponse>, Status> {
        unary!(self, req, rulesets::rollback)
    }
    async fn plan_order(
        &self,
        req: Request<PlanOrderRequest>,
    ) -> Result<Response<PlanOrderResponse>, Status> {
        unary!(self, req, planning::plan)
    }
    async fn get_decision(
        &self,
        req: Request<GetDecisionRequest>,
    ) -> Result<Response<GetDecisionResponse>, Status> {
        unary!(self, req, planning::get)
    }
    async fn list_decisions(
        &self,
        req: Request<ListDecisionsRequest>,
    ) -> Result<Response<ListDecisionsResponse>, Status> {
        unary!(self, req, planning::list)
    }
    async fn simulate_routing(
        &self,
        req: Request<SimulateRoutingRequest>,
    ) -> Result<Response<SimulateRoutingResponse>, Status> {
        unary!(self, req, planning::simulate)
    }
    async fn reroute_order(
        &self,
        req: Request<RerouteOrderRequest>,
    ) -> Result<Response<RerouteOrderResponse>, Status> {
        unary!(self, req, planning::reroute)
    }
    async fn release_decision(
        &self,
        req: Request<ReleaseDecisionRequest>,
    ) -> Result<Response<ReleaseDecisionResponse>, Status> {
        unary!(self, req, planning::release)
    }
    async fn watch_routing_events(
        &self,
        req: Request<WatchRoutingEventsRequest>,
    ) -> Result<Response<BoxStream<WatchRoutingEventsResponse>>, Status> {
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
            e.map(|(mut event, meta): (WatchRoutingEventsResponse, _)| {
                event.meta = Some(meta);
                event
            })
        });
        Ok(Response::new(Box::pin(feed)))
    }
}
