//! The simulator against a real fulfillment service (real gRPC, real
//! Postgres): released work is walked to delivered, rejected or
//! short-picked as configured; progress is followed on the event feed.
#![allow(clippy::unwrap_used)]

use oms_kernel::Tenant;
use oms_proto::fulfillment::{
    FulfillmentLine, FulfillmentOrder, FulfillmentState as S,
    fulfillment_service_client::FulfillmentServiceClient, *,
};
use oms_runtime::{Config, Service, auth::TokenIssuer};
use oms_testkit::{Running, TestDb, authed};
use oms_wms_sim::Sim;
use std::collections::HashMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const TENANT: &str = "acme";

struct World {
    _db: TestDb,
    _svc: Running,
    client: FulfillmentServiceClient<Channel>,
    stop: CancellationToken,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn world(reject_rate: f64, short_pick_rate: f64) -> World {
    let db = TestDb::new().await;
    let svc = oms_testkit::spawn(
        oms_testkit::config(Service::Fulfillment, &db, &[]),
        oms_fulfillment::run,
    )
    .await;
    let cfg = Config::from_lookup(Service::Fulfillment, |_| None).unwrap();
    let sim = Sim {
        url: format!("http://{}", svc.addr),
        tenant: Tenant::parse(TENANT).unwrap(),
        issuer: TokenIssuer::new(&cfg.auth),
        adapter_id: "sim".into(),
        nodes: vec!["DC1".into()],
        step: Duration::from_millis(5),
        reject_rate,
        short_pick_rate,
        seed: 7,
        inventory_url: None,
        tls: None,
    };
    let stop = CancellationToken::new();
    tokio::spawn(sim.run(stop.clone()));
    World {
        client: FulfillmentServiceClient::new(svc.channel()),
        _db: db,
        _svc: svc,
        stop,
    }
}

impl World {
    async fn release(&mut self, quantity: i64) -> String {
        let fo = self
            .client
            .create_fulfillment_order(authed(
                TENANT,
                CreateFulfillmentOrderRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    fulfillment_order: Some(FulfillmentOrder {
                        order: "orders/0192f3a0-0000-7000-8000-000000000001".into(),
                        node_id: "DC1".into(),
                        lines: vec![FulfillmentLine {
                            line_id: "1".into(),
                            sku: "SKU-A".into(),
                            quantity,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .fulfillment_order
            .unwrap();
        self.client
            .release_fulfillment_order(authed(
                TENANT,
                ReleaseFulfillmentOrderRequest {
                    request_id: uuid::Uuid::new_v4().to_string(),
                    name: fo.name.clone(),
                },
            ))
            .await
            .unwrap();
        fo.name
    }

    /// Follows the feed until every one of `names` reached a final state;
    /// returns the states each went through.
    async fn until_final(&mut self, names: &[String]) -> HashMap<String, Vec<S>> {
        let mut feed = self
            .client
            .watch_fulfillment_events(authed(TENANT, WatchFulfillmentEventsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let mut seen: HashMap<String, Vec<S>> = HashMap::new();
        let finals = [S::Delivered, S::Rejected, S::Cancelled];
        while !names.iter().all(|n| {
            seen.get(n)
                .and_then(|v| v.last())
                .is_some_and(|s| finals.contains(s))
        }) {
            let e = tokio::time::timeout(Duration::from_secs(20), feed.message())
                .await
                .expect("progress within 20 s")
                .unwrap()
                .unwrap();
            let fo = e.fulfillment_order.unwrap();
            let states = seen.entry(fo.name.clone()).or_default();
            if states.last() != Some(&fo.state()) {
                states.push(fo.state());
            }
        }
        seen
    }

    async fn get(&mut self, name: &str) -> FulfillmentOrder {
        self.client
            .get_fulfillment_order(authed(
                TENANT,
                GetFulfillmentOrderRequest { name: name.into() },
            ))
            .await
            .unwrap()
            .into_inner()
            .fulfillment_order
            .unwrap()
    }
}

#[tokio::test]
async fn released_work_is_walked_to_delivered() {
    let mut w = world(0.0, 0.0).await;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(w.release(2).await);
    }
    let seen = w.until_final(&names).await;
    for n in &names {
        assert_eq!(
            seen[n],
            [
                S::PendingRelease,
                S::Released,
                S::Accepted,
                S::Picking,
                S::Packed,
                S::Shipped,
                S::Delivered
            ]
        );
        let fo = w.get(n).await;
        assert_eq!(fo.lines[0].quantity_shipped, 2);
        assert_eq!(fo.shipments.len(), 1);
        assert!(fo.shipments[0].tracking_number.starts_with("SIM"));
    }
    let sessions = w
        .client
        .list_adapter_sessions(authed(TENANT, ListAdapterSessionsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions[0].adapter_id, "sim");
    assert!(sessions[0].connected);
}

#[tokio::test]
async fn rejections_and_short_picks_happen_as_configured() {
    let mut w = world(1.0, 0.0).await;
    let rejected = w.release(2).await;
    let seen = w.until_final(std::slice::from_ref(&rejected)).await;
    assert_eq!(seen[&rejected].last(), Some(&S::Rejected));
    assert_eq!(
        w.get(&rejected).await.status_reason,
        "rejected: simulated rejection"
    );

    let mut w = world(0.0, 1.0).await;
    let short = w.release(2).await;
    w.until_final(std::slice::from_ref(&short)).await;
    let fo = w.get(&short).await;
    assert_eq!(fo.state(), S::Delivered);
    // One unit missing: one ordered, one shipped.
    assert_eq!((fo.lines[0].quantity, fo.lines[0].quantity_shipped), (1, 1));
    assert_eq!(fo.status_reason, "short-picked: simulated short pick");
}
