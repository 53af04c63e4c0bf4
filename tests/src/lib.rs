//! The whole suite in one process: every service on its own ephemeral
//! port, one test database (each service in its own schema), real gRPC
//! between them, and one Redis key prefix for all of them (their Redis
//! outlives a crash, as a real one does).
#![allow(clippy::unwrap_used)]

use oms_proto::common::NodeKind;
use oms_proto::inventory::{self as inv, inventory_service_client::InventoryServiceClient};
use oms_runtime::Service;
use oms_testkit::authed;
use oms_testkit::pki::Pki;
use oms_testkit::{Running, TestDb};
use std::collections::HashMap;
use tokio::net::TcpListener;

pub struct Suite {
    pub services: HashMap<Service, Running>,
    pub db: TestDb,
    peers: Vec<(Service, std::net::SocketAddr)>,
    /// The suite's place in Redis: a service started again or a replica
    /// finds the gate the others left.
    redis_prefix: String,
    /// The CA of a suite that runs over mutual TLS.
    pki: Option<Pki>,
}

impl Suite {
    pub async fn start() -> Suite {
        Suite::start_with(None).await
    }

    /// The suite over mutual TLS, as in production: each service serves its
    /// own certificate of one CA, calls its peers over `https://` with it,
    /// and asks every caller for one (`OMS_TLS_CLIENT_AUTH` `required`).
    pub async fn start_over_tls() -> Suite {
        Suite::start_with(Some(Pki::new("OMS test CA"))).await
    }

    async fn start_with(pki: Option<Pki>) -> Suite {
        let db = TestDb::new().await;
        let redis_prefix = oms_testkit::redis_prefix();
        let mut listeners = Vec::new();
        for s in Service::ALL {
            listeners.push((s, TcpListener::bind("127.0.0.1:0").await.unwrap()));
        }
        let peers: Vec<_> = listeners
            .iter()
            .map(|(s, l)| (*s, l.local_addr().unwrap()))
            .collect();
        // All at once, as `make up` and a rollout start them: their
        // migrations run concurrently in the one database.
        let started = futures::future::join_all(listeners.into_iter().map(|(s, listener)| {
            let (db, peers, prefix, pki) = (&db, &peers, &redis_prefix, pki.as_ref());
            async move { (s, start_one(s, listener, db, peers, prefix, pki).await) }
        }))
        .await;
        let services: HashMap<Service, Running> = started.into_iter().collect();
        Suite {
            services,
            db,
            peers,
            redis_prefix,
            pki,
        }
    }

    pub fn channel(&self, s: Service) -> tonic::transport::Channel {
        self.services[&s].channel()
    }

    /// The CA of a suite started with [`Suite::start_over_tls`].
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// The orders feed of `tenant`, from its start.
    pub async fn order_events(
        &self,
        tenant: &str,
    ) -> tonic::Streaming<oms_proto::orders::WatchOrderEventsResponse> {
        oms_proto::orders::order_service_client::OrderServiceClient::new(
            self.channel(Service::Orders),
        )
        .watch_order_events(authed(
            tenant,
            oms_proto::orders::WatchOrderEventsRequest::default(),
        ))
        .await
        .unwrap()
        .into_inner()
    }

    /// Routing's decision `name` of `tenant`, as GetDecision gives it.
    pub async fn decision(&self, tenant: &str, name: &str) -> oms_proto::routing::Decision {
        use oms_proto::routing::{
            GetDecisionRequest, routing_service_client::RoutingServiceClient,
        };
        let mut routing = RoutingServiceClient::new(self.channel(Service::Routing));
        let get = GetDecisionRequest { name: name.into() };
        routing
            .get_decision(authed(tenant, get))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap()
    }

    /// Gives `tenant` a node `DC1` holding `items` (SKU, units on hand);
    /// returns an inventory client.
    pub async fn stock(&self, tenant: &str, items: &[(&str, i64)]) -> Inventory {
        self.stock_at(tenant, "DC1", items).await
    }

    /// [`Suite::stock`] at a node `node_id` (node ids are unique across
    /// tenants).
    pub async fn stock_at(&self, tenant: &str, node_id: &str, items: &[(&str, i64)]) -> Inventory {
        let mut c = InventoryServiceClient::new(self.channel(Service::Inventory));
        let node = inv::Node {
            node_id: node_id.into(),
            kind: NodeKind::Warehouse as i32,
            enabled: true,
            capabilities: Some(inv::NodeCapabilities {
                ship: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        c.create_node(authed(
            tenant,
            inv::CreateNodeRequest {
                request_id: rid(),
                node: Some(node),
            },
        ))
        .await
        .unwrap();
        for (sku, q) in items {
            let item = inv::Item {
                sku: sku.to_string(),
                ..Default::default()
            };
            create_item(&mut c, tenant, item).await;
            receive_at(&mut c, tenant, node_id, sku, *q).await;
        }
        c
    }

    /// Kills a service as a crash would (nothing drains); its port stays
    /// known so [`Suite::start_again`] brings it back there.
    pub async fn crash(&mut self, s: Service) {
        let old = self.services.remove(&s).unwrap();
        old.crash().await;
    }

    /// Starts another replica of `s` on a port of its own, on the same
    /// database and peers (as a second pod would be).
    pub async fn start_replica(&self, s: Service) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        start_one(
            s,
            listener,
            &self.db,
            &self.peers,
            &self.redis_prefix,
            self.pki.as_ref(),
        )
        .await
    }

    /// [`Suite::start_replica`], but the replica cannot reach `peer` (a
    /// partition between it and one of the services it calls).
    pub async fn start_replica_cut_off(&self, s: Service, peer: Service) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peers: Vec<_> = self
            .peers
            .iter()
            .filter(|(p, _)| *p != peer)
            .copied()
            .collect();
        start_one(
            s,
            listener,
            &self.db,
            &peers,
            &self.redis_prefix,
            self.pki.as_ref(),
        )
        .await
    }

    /// Starts a crashed service again on its port and database.
    pub async fn start_again(&mut self, s: Service) {
        let addr = self.peers.iter().find(|(p, _)| *p == s).unwrap().1;
        let listener = TcpListener::bind(addr)
            .await
            .expect("the crashed service's port is free");
        let running = start_one(
            s,
            listener,
            &self.db,
            &self.peers,
            &self.redis_prefix,
            self.pki.as_ref(),
        )
        .await;
        self.services.insert(s, running);
    }
}

async fn start_one(
    s: Service,
    listener: TcpListener,
    db: &TestDb,
    peers: &[(Service, std::net::SocketAddr)],
    redis_prefix: &str,
    pki: Option<&Pki>,
) -> Running {
    let mut overrides = vec![("OMS_REDIS_KEY_PREFIX", redis_prefix.to_string())];
    if let Some(pki) = pki {
        overrides.extend(pki.service_env(s.name()));
    }
    let config = oms_testkit::config_with(s, db, peers, &overrides);
    match s {
        Service::Ingest => oms_testkit::spawn_isolated(listener, config, oms_ingest::run).await,
        Service::Orders => oms_testkit::spawn_isolated(listener, config, oms_orders::run).await,
        Service::Inventory => {
            oms_testkit::spawn_isolated(listener, config, oms_inventory::run).await
        }
        Service::Routing => oms_testkit::spawn_isolated(listener, config, oms_routing::run).await,
        Service::Fulfillment => {
            oms_testkit::spawn_isolated(listener, config, oms_fulfillment::run).await
        }
        Service::Returns => oms_testkit::spawn_isolated(listener, config, oms_returns::run).await,
        Service::Billing => oms_testkit::spawn_isolated(listener, config, oms_billing::run).await,
        Service::Notifications => {
            oms_testkit::spawn_isolated(listener, config, oms_notifications::run).await
        }
    }
}

pub type Inventory = InventoryServiceClient<tonic::transport::Channel>;

/// The next event of an orders feed: a test that waits 120 s for one
/// fails instead of hanging the run.
pub async fn next_order_event(
    feed: &mut tonic::Streaming<oms_proto::orders::WatchOrderEventsResponse>,
) -> oms_proto::orders::OrderEvent {
    tokio::time::timeout(std::time::Duration::from_secs(120), feed.message())
        .await
        .expect("an order event within 120 s")
        .unwrap()
        .expect("feed open")
        .event
        .unwrap()
}

/// Follows the order feed until `name` reaches `state`; returns that event.
pub async fn until_state(
    feed: &mut tonic::Streaming<oms_proto::orders::WatchOrderEventsResponse>,
    name: &str,
    state: oms_proto::orders::OrderState,
) -> oms_proto::orders::OrderEvent {
    // A bound, so that an order that never gets there fails the test
    // instead of hanging the run.
    let wait = async {
        loop {
            let ev = next_order_event(feed).await;
            if ev
                .order
                .as_ref()
                .is_some_and(|o| o.name == name && o.state == state as i32)
            {
                return ev;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), wait)
        .await
        .unwrap_or_else(|_| panic!("{name} did not reach {state:?} within 120 s"))
}

/// Waits until every order of `names` reaches `state`, in whatever order
/// the feed tells them (orders woken together may commit either way).
pub async fn until_all(
    feed: &mut tonic::Streaming<oms_proto::orders::WatchOrderEventsResponse>,
    names: &[&str],
    state: oms_proto::orders::OrderState,
) {
    let mut left: std::collections::BTreeSet<&str> = names.iter().copied().collect();
    let wait = async {
        while !left.is_empty() {
            let ev = next_order_event(feed).await;
            if let Some(o) = ev.order.as_ref().filter(|o| o.state == state as i32) {
                left.remove(o.name.as_str());
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), wait)
        .await
        .unwrap_or_else(|_| panic!("{names:?} did not all reach {state:?} within 120 s"))
}

/// SubmitOrder of a one-unit order of `sku` from the channel
/// `channels/pos`, shipped to `street`, `city`, Portugal.
pub fn pos_submission(
    request_id: &str,
    channel_order_id: &str,
    sku: &str,
    street: &str,
    city: &str,
) -> oms_proto::ingest::SubmitOrderRequest {
    use oms_proto::orders as ord;
    oms_proto::ingest::SubmitOrderRequest {
        request_id: request_id.into(),
        channel: "channels/pos".into(),
        order: Some(ord::Order {
            channel_order_id: channel_order_id.into(),
            currency_code: "EUR".into(),
            lines: vec![ord::OrderLine {
                sku: sku.into(),
                quantity: 1,
                ..Default::default()
            }],
            ship_to: Some(oms_proto::common::PostalAddress {
                lines: vec![street.into()],
                city: city.into(),
                country_code: "PT".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A fresh request id.
pub fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Creates `item` for `tenant`.
pub async fn create_item(c: &mut Inventory, tenant: &str, item: inv::Item) {
    let req = inv::CreateItemRequest {
        request_id: rid(),
        item: Some(item),
    };
    c.create_item(authed(tenant, req)).await.unwrap();
}

/// Receives `q` units of `sku` at `DC1`.
pub async fn receive(c: &mut Inventory, tenant: &str, sku: &str, q: i64) {
    receive_at(c, tenant, "DC1", sku, q).await
}

/// Receives `q` units of `sku` at `node`.
async fn receive_at(c: &mut Inventory, tenant: &str, node: &str, sku: &str, q: i64) {
    let movement = inv::StockMovement {
        kind: inv::MovementKind::Receipt as i32,
        node_id: node.into(),
        sku: sku.into(),
        quantity: q,
        ..Default::default()
    };
    c.record_movement(authed(
        tenant,
        inv::RecordMovementRequest {
            request_id: rid(),
            movement: Some(movement),
        },
    ))
    .await
    .unwrap();
}

/// A serial-tracked `PHONE` for `tenant`, with one unit per serial number
/// received at `DC1`.
pub async fn phones_at_dc1(c: &mut Inventory, tenant: &str, serials: &[&str]) {
    let item = inv::Item {
        sku: "PHONE".into(),
        serial_tracked: true,
        ..Default::default()
    };
    create_item(c, tenant, item).await;
    let receipt = inv::StockMovement {
        kind: inv::MovementKind::Receipt as i32,
        node_id: "DC1".into(),
        sku: "PHONE".into(),
        quantity: serials.len() as i64,
        serial_numbers: serials.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let req = inv::RecordMovementRequest {
        request_id: rid(),
        movement: Some(receipt),
    };
    c.record_movement(authed(tenant, req)).await.unwrap();
}
