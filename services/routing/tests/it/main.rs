//! Routing through real gRPC, with a real inventory service for nodes and
//! live availability, against a real Postgres (one database per test).
#![allow(clippy::unwrap_used)]

mod planning;
mod rule_sets;

use oms_proto::common::{GeoPoint, NodeKind, PostalAddress};
use oms_proto::inventory::{self as inv, inventory_service_client::InventoryServiceClient};
use oms_proto::routing::{
    self as pb, PlanOrderRequest, RoutingLine, RoutingOrder,
    routing_service_client::RoutingServiceClient,
};
use oms_runtime::Service;
use oms_testkit::{Running, TestDb, authed};
use tonic::transport::Channel;

pub const TENANT: &str = "acme";

pub struct Harness {
    pub _db: TestDb,
    pub _inventory: Running,
    pub _routing: Running,
    pub inv: InventoryServiceClient<Channel>,
    pub client: RoutingServiceClient<Channel>,
}

pub fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn start() -> Harness {
    let db = TestDb::new().await;
    let inventory = oms_testkit::spawn(
        oms_testkit::config(Service::Inventory, &db, &[]),
        oms_inventory::run,
    )
    .await;
    let routing = oms_testkit::spawn(
        oms_testkit::config(
            Service::Routing,
            &db,
            &[(Service::Inventory, inventory.addr)],
        ),
        oms_routing::run,
    )
    .await;
    Harness {
        inv: InventoryServiceClient::new(inventory.channel()),
        client: RoutingServiceClient::new(routing.channel()),
        _db: db,
        _inventory: inventory,
        _routing: routing,
    }
}

/// A node at (lat, lon).
pub fn node(id: &str, kind: NodeKind, lat: f64, lon: f64) -> inv::Node {
    inv::Node {
        node_id: id.into(),
        kind: kind as i32,
        enabled: true,
        region: "DE".into(),
        capabilities: Some(inv::NodeCapabilities {
            ship: kind != NodeKind::Store,
            pickup: kind == NodeKind::Store,
            ship_from_store: false,
        }),
        address: Some(PostalAddress {
            country_code: "DE".into(),
            geo: Some(GeoPoint {
                latitude: lat,
                longitude: lon,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Harness {
    /// Berlin and Munich warehouses and a Berlin store, with `stock` as
    /// (node, sku, units).
    pub async fn network(&mut self, stock: &[(&str, &str, i64)]) {
        self.create_nodes([
            node("DC-BER", NodeKind::Warehouse, 52.52, 13.40),
            node("DC-MUC", NodeKind::Warehouse, 48.14, 11.58),
            node("STORE-BER", NodeKind::Store, 52.50, 13.42),
        ])
        .await;
        let mut skus: Vec<&str> = stock.iter().map(|s| s.1).collect();
        skus.sort();
        skus.dedup();
        self.create_items(&skus).await;
        for (node, sku, q) in stock {
            self.receive(node, sku, *q).await;
        }
    }

    /// Creates `nodes` in inventory.
    pub async fn create_nodes(&mut self, nodes: impl IntoIterator<Item = inv::Node>) {
        for n in nodes {
            let create = inv::CreateNodeRequest {
                request_id: rid(),
                node: Some(n),
            };
            self.inv.create_node(authed(TENANT, create)).await.unwrap();
        }
    }

    /// Creates items `skus` in inventory.
    pub async fn create_items(&mut self, skus: &[&str]) {
        for sku in skus {
            let item = inv::Item {
                sku: sku.to_string(),
                ..Default::default()
            };
            let create = inv::CreateItemRequest {
                request_id: rid(),
                item: Some(item),
            };
            self.inv.create_item(authed(TENANT, create)).await.unwrap();
        }
    }

    pub async fn receive(&mut self, node: &str, sku: &str, q: i64) {
        self.inv
            .record_movement(authed(
                TENANT,
                inv::RecordMovementRequest {
                    request_id: rid(),
                    movement: Some(inv::StockMovement {
                        kind: inv::MovementKind::Receipt as i32,
                        node_id: node.into(),
                        sku: sku.into(),
                        quantity: q,
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap();
    }

    pub async fn plan(&mut self, request_id: &str, o: RoutingOrder) -> pb::Decision {
        self.client
            .plan_order(authed(
                TENANT,
                PlanOrderRequest {
                    request_id: request_id.into(),
                    order: Some(o),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap()
    }
}

/// An order to Potsdam (near Berlin) of (sku, units) lines.
pub fn order(id: &str, lines: &[(&str, i64)]) -> RoutingOrder {
    RoutingOrder {
        order: format!("orders/{id}"),
        lines: lines
            .iter()
            .enumerate()
            .map(|(i, (sku, q))| RoutingLine {
                line_id: (i + 1).to_string(),
                sku: sku.to_string(),
                quantity: *q,
                unit_price: None,
            })
            .collect(),
        ship_to: Some(PostalAddress {
            country_code: "DE".into(),
            region: "BB".into(),
            geo: Some(GeoPoint {
                latitude: 52.39,
                longitude: 13.06,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// (line, node, units) of a decision, sorted.
pub fn placed(d: &pb::Decision) -> Vec<(String, String, i64)> {
    let mut v: Vec<_> = d
        .assignments
        .iter()
        .map(|a| (a.line_id.clone(), a.node_id.clone(), a.quantity))
        .collect();
    v.sort();
    v
}

pub fn at(line: &str, node: &str, q: i64) -> (String, String, i64) {
    (line.into(), node.into(), q)
}
