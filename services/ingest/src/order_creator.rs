//! Orders created in the orders service, many per call: the CreateOrder
//! requests of concurrent submissions go out together, one
//! BatchCreateOrders per tenant, each answered as CreateOrder would have
//! answered it alone.
use crate::grpc::DOMAIN;
use oms_kernel::Tenant;
use oms_proto::orders::{
    BatchCreateOrdersRequest, CreateOrderRequest, Order, order_service_client::OrderServiceClient,
};
use oms_runtime::{auth::TokenIssuer, batch::Batcher, client::Outbound, status};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;
use tonic::{Status, transport::Channel};

const WORKERS: usize = 4;
/// Below the orders service's limit per call (1,000).
const MAX_BATCH: usize = 256;

type Job = (Tenant, CreateOrderRequest);

#[derive(Clone)]
pub struct OrderCreator(Batcher<Job, Result<Order, Status>>);

impl OrderCreator {
    pub fn start(orders: Channel, issuer: TokenIssuer, shutdown: &CancellationToken) -> Self {
        OrderCreator(Batcher::start(
            WORKERS,
            MAX_BATCH,
            shutdown.clone(),
            move |jobs: Vec<Job>| {
                let (orders, issuer) = (orders.clone(), issuer.clone());
                async move { create_all(&orders, &issuer, jobs).await }
            },
        ))
    }

    /// Creates one order (or finds the one its request_id created before).
    pub async fn create(&self, tenant: &Tenant, req: CreateOrderRequest) -> Result<Order, Status> {
        self.0.submit((tenant.clone(), req)).await.map_err(|_| {
            status::with_reason(
                tonic::Code::Unavailable,
                DOMAIN,
                "SHUTTING_DOWN",
                "the service is shutting down; retry",
            )
        })?
    }
}

/// One call per tenant (a call carries its tenant's token); every job is
/// answered, in order.
async fn create_all(
    orders: &Channel,
    issuer: &TokenIssuer,
    jobs: Vec<Job>,
) -> Vec<Result<Order, Status>> {
    let n = jobs.len();
    let mut by_tenant: BTreeMap<Tenant, (Vec<usize>, Vec<CreateOrderRequest>)> = BTreeMap::new();
    for (i, (tenant, req)) in jobs.into_iter().enumerate() {
        let e = by_tenant.entry(tenant).or_default();
        e.0.push(i);
        e.1.push(req);
    }
    let mut answers: Vec<Option<Result<Order, Status>>> = (0..n).map(|_| None).collect();
    for (tenant, (at, requests)) in by_tenant {
        let mut client = OrderServiceClient::with_interceptor(
            orders.clone(),
            Outbound::for_tenant(issuer, &tenant, "service:ingest"),
        );
        match client
            .batch_create_orders(BatchCreateOrdersRequest { requests })
            .await
        {
            Ok(resp) => {
                let results = resp.into_inner().results;
                for (i, r) in at.into_iter().zip(results) {
                    answers[i] = Some(match r.status.as_ref().and_then(status::from_rpc) {
                        Some(e) => Err(e),
                        None => Ok(r.order.unwrap_or_default()),
                    });
                }
            }
            Err(e) => {
                for i in at {
                    answers[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    answers
        .into_iter()
        .map(|a| {
            a.unwrap_or_else(|| {
                Err(status::with_reason(
                    tonic::Code::Internal,
                    DOMAIN,
                    "ANSWER_MISSING",
                    "the orders service answered fewer orders than it was sent",
                ))
            })
        })
        .collect()
}
