//! Calls to the inventory service: receipts posted to its ledger, and the
//! transfers a notice may announce.
use oms_kernel::Tenant;
use oms_proto::inventory::inventory_service_client::InventoryServiceClient;
use oms_runtime::{auth::TokenIssuer, client::Outbound};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

const ACTOR: &str = "service:fulfillment";

pub type Client = InventoryServiceClient<InterceptedService<Channel, Outbound>>;

#[derive(Clone)]
pub struct Inventory {
    pub channel: Channel,
    pub issuer: TokenIssuer,
}

impl Inventory {
    /// A client calling as fulfillment for `tenant`.
    pub fn client(&self, tenant: &Tenant) -> Client {
        InventoryServiceClient::with_interceptor(
            self.channel.clone(),
            Outbound::for_tenant(&self.issuer, tenant, ACTOR),
        )
    }
}
