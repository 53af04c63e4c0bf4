//! The services the orders workers call, each call carrying a token of
//! the order's tenant.
use oms_kernel::Tenant;
use oms_proto::fulfillment::fulfillment_service_client::FulfillmentServiceClient;
use oms_proto::inventory::inventory_service_client::InventoryServiceClient;
use oms_proto::routing::routing_service_client::RoutingServiceClient;
use oms_runtime::{auth::TokenIssuer, client::Outbound};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

type Authed = InterceptedService<Channel, Outbound>;

#[derive(Clone)]
pub struct Peers {
    pub inventory: Channel,
    pub routing: Channel,
    pub fulfillment: Channel,
    pub issuer: TokenIssuer,
}

impl Peers {
    fn authed(&self, tenant: &Tenant) -> Outbound {
        Outbound::for_tenant(&self.issuer, tenant, "service:orders")
    }

    pub fn inventory(&self, tenant: &Tenant) -> InventoryServiceClient<Authed> {
        InventoryServiceClient::with_interceptor(self.inventory.clone(), self.authed(tenant))
    }

    pub fn routing(&self, tenant: &Tenant) -> RoutingServiceClient<Authed> {
        RoutingServiceClient::with_interceptor(self.routing.clone(), self.authed(tenant))
    }

    pub fn fulfillment(&self, tenant: &Tenant) -> FulfillmentServiceClient<Authed> {
        FulfillmentServiceClient::with_interceptor(self.fulfillment.clone(), self.authed(tenant))
    }
}
