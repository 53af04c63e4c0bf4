//! Orders created in the orders service, many per call: the CreateOrder
//! requests of concurrent submissions go out together, one
//! BatchCreateOrders per tenant, each answered as CreateOrder would have
//! answered it alone.
use crate::grpc::DOMAIN;
use oms_kernel::Tenant;
use oms_proto::orders::{
    BatchCreateOrdersRequest, CreateOrderRequest, Order, RequestTrace,
    order_service_client::OrderServiceClient,
};
use oms_runtime::{
    auth::TokenIssuer, batch::Batcher, client::Outbound, outbox::TraceContext, status,
};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;
use tonic::{Status, transport::Channel};

const WORKERS: usize = 4;
/// Below the orders service's limit per call (1,000).
const MAX_BATCH: usize = 256;
/// Bytes of requests per call at most: the orders service decodes messages
/// of up to 4 MiB (gRPC's default), and an order may be large (bodies reach
/// 1 MiB). A request larger than this goes alone.
const MAX_CALL_BYTES: usize = 3 << 20;

/// A request with its tenant and the trace of the submission it came
/// from: a call serves many submissions, and each order stays in its own.
type Job = (Tenant, CreateOrderRequest, TraceContext);

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
        self.0
            .submit((tenant.clone(), req, TraceContext::current()))
            .await
            .map_err(|s| s.into_status(DOMAIN))?
    }
}

/// One call per tenant (a call carries its tenant's token) and per
/// [`MAX_CALL_BYTES`]; every job is answered, in order.
async fn create_all(
    orders: &Channel,
    issuer: &TokenIssuer,
    jobs: Vec<Job>,
) -> Vec<Result<Order, Status>> {
    let n = jobs.len();
    let mut by_tenant: BTreeMap<Tenant, Vec<(usize, CreateOrderRequest, TraceContext)>> =
        BTreeMap::new();
    for (i, (tenant, req, trace)) in jobs.into_iter().enumerate() {
        by_tenant.entry(tenant).or_default().push((i, req, trace));
    }
    let mut answers: Vec<Option<Result<Order, Status>>> = (0..n).map(|_| None).collect();
    for (tenant, jobs) in by_tenant {
        let mut client = OrderServiceClient::with_interceptor(
            orders.clone(),
            Outbound::for_tenant(issuer, &tenant, crate::grpc::SUBJECT),
        );
        for call in by_size(jobs, |(_, req, _)| req) {
            let mut at = Vec::with_capacity(call.len());
            let mut requests = Vec::with_capacity(call.len());
            let mut traces = Vec::with_capacity(call.len());
            for (i, req, trace) in call {
                at.push(i);
                requests.push(req);
                let (traceparent, tracestate) = trace.w3c();
                traces.push(RequestTrace {
                    traceparent: traceparent.to_owned(),
                    tracestate: tracestate.to_owned(),
                });
            }
            match client
                .batch_create_orders(BatchCreateOrdersRequest { requests, traces })
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

/// Splits requests into calls of at most [`MAX_CALL_BYTES`] each (a larger
/// request alone), keeping their order.
fn by_size<J>(jobs: Vec<J>, request: impl Fn(&J) -> &CreateOrderRequest) -> Vec<Vec<J>> {
    let mut calls: Vec<Vec<J>> = Vec::new();
    let mut bytes = 0;
    for job in jobs {
        let size = prost::Message::encoded_len(request(&job));
        match calls.last_mut() {
            Some(call) if bytes + size <= MAX_CALL_BYTES => call.push(job),
            _ => {
                calls.push(vec![job]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use oms_proto::orders::Order;

    fn sized(i: usize, bytes: usize) -> (usize, CreateOrderRequest) {
        let req = CreateOrderRequest {
            request_id: format!("r{i}"),
            order: Some(Order {
                channel_order_id: "x".repeat(bytes),
                ..Default::default()
            }),
        };
        (i, req)
    }

    #[test]
    fn calls_stay_under_the_message_limit_and_keep_the_order() {
        let mib = 1 << 20;
        let calls = by_size(
            vec![
                sized(0, mib),
                sized(1, mib),
                sized(2, mib + mib / 2),
                sized(3, 5 * mib),
                sized(4, 10),
            ],
            |(_, req)| req,
        );
        let at: Vec<Vec<usize>> = calls
            .iter()
            .map(|c| c.iter().map(|(i, _)| *i).collect())
            .collect();
        assert_eq!(at, [vec![0, 1], vec![2], vec![3], vec![4]]);
    }
}
