//! Inventory through real gRPC against real Postgres and Redis.
#![allow(clippy::unwrap_used)]

mod backorders;
mod catalog;
mod cluster;
mod expiry;
mod inbound;
mod ledger;
mod recovery;
mod reservations;
mod soak;
mod transfers;

use oms_proto::common::NodeKind;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_runtime::Service;
use oms_testkit::{Running, TestDb, authed};
use tonic::transport::Channel;

pub type Client = InventoryServiceClient<Channel>;

pub struct Harness {
    pub db: TestDb,
    pub svc: Running,
    pub client: Client,
}

pub async fn start() -> Harness {
    start_with(&[]).await
}

pub async fn start_with(overrides: &[(&str, String)]) -> Harness {
    let db = TestDb::new().await;
    let config = oms_testkit::config_with(Service::Inventory, &db, &[], overrides);
    let svc = oms_testkit::spawn(config, oms_inventory::run).await;
    let client = InventoryServiceClient::new(svc.channel());
    Harness { db, svc, client }
}

pub fn rid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn node(c: &mut Client, tenant: &str, id: &str) -> Node {
    node_with(c, tenant, id, |_| {}).await
}

pub async fn node_with(c: &mut Client, tenant: &str, id: &str, f: impl FnOnce(&mut Node)) -> Node {
    let mut n = Node {
        node_id: id.into(),
        display_name: format!("Node {id}"),
        kind: NodeKind::Warehouse as i32,
        enabled: true,
        capabilities: Some(NodeCapabilities {
            ship: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    f(&mut n);
    c.create_node(authed(
        tenant,
        CreateNodeRequest {
            request_id: rid(),
            node: Some(n),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .node
    .unwrap()
}

pub async fn item(c: &mut Client, tenant: &str, sku: &str) -> Item {
    c.create_item(authed(
        tenant,
        CreateItemRequest {
            request_id: rid(),
            item: Some(Item {
                sku: sku.into(),
                description: format!("item {sku}"),
                ..Default::default()
            }),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .item
    .unwrap()
}

/// An item tracked as `f` sets it (lots, expiry, serial numbers).
pub async fn tracked_item(c: &mut Client, sku: &str, f: impl FnOnce(&mut Item)) {
    let mut item = Item {
        sku: sku.into(),
        ..Default::default()
    };
    f(&mut item);
    c.create_item(authed(
        "acme",
        CreateItemRequest {
            request_id: rid(),
            item: Some(item),
        },
    ))
    .await
    .unwrap();
}

/// Releases everything an acme reservation holds.
pub async fn release_all(c: &mut Client, id: &str) -> Result<Reservation, tonic::Status> {
    c.release_reservation(authed(
        "acme",
        ReleaseReservationRequest {
            request_id: rid(),
            name: format!("reservations/{id}"),
            ..Default::default()
        },
    ))
    .await
    .map(|r| r.into_inner().reservation.unwrap())
}

/// Records a movement of acme's `kind` at `node`, as `f` completes it.
pub async fn movement(
    c: &mut Client,
    request_id: &str,
    kind: MovementKind,
    node: &str,
    sku: &str,
    f: impl FnOnce(&mut StockMovement),
) -> Result<StockMovement, tonic::Status> {
    let mut m = StockMovement {
        kind: kind as i32,
        node_id: node.into(),
        sku: sku.into(),
        ..Default::default()
    };
    f(&mut m);
    c.record_movement(authed(
        "acme",
        RecordMovementRequest {
            request_id: request_id.into(),
            movement: Some(m),
        },
    ))
    .await
    .map(|r| r.into_inner().movement.unwrap())
}

/// Imports acme's snapshot of `rows` (a new request id, source `wms`).
pub async fn import_snapshot(
    c: &mut Client,
    rows: Vec<SnapshotRow>,
) -> ImportStockSnapshotResponse {
    use import_stock_snapshot_request::Part;
    let header = ImportStockSnapshotRequest {
        part: Some(Part::Header(SnapshotHeader {
            request_id: rid(),
            source: "wms".into(),
            count_time: None,
        })),
    };
    let rows = rows.into_iter().map(|r| ImportStockSnapshotRequest {
        part: Some(Part::Row(r)),
    });
    let msgs: Vec<_> = std::iter::once(header).chain(rows).collect();
    c.import_stock_snapshot(authed("acme", tokio_stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner()
}

/// DC1 with each SKU of `skus` received there.
pub async fn stocked(h: &mut Harness, skus: &[(&str, i64)]) {
    node(&mut h.client, "acme", "DC1").await;
    for (sku, q) in skus {
        item(&mut h.client, "acme", sku).await;
        receive(&mut h.client, "acme", "DC1", sku, *q).await;
    }
}

pub async fn receive(c: &mut Client, tenant: &str, node: &str, sku: &str, q: i64) -> StockMovement {
    c.record_movement(authed(
        tenant,
        RecordMovementRequest {
            request_id: rid(),
            movement: Some(StockMovement {
                kind: MovementKind::Receipt as i32,
                node_id: node.into(),
                sku: sku.into(),
                quantity: q,
                ..Default::default()
            }),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .movement
    .unwrap()
}

pub fn line(sku: &str, node: &str, q: i64) -> ReservationLine {
    ReservationLine {
        sku: sku.into(),
        node_id: node.into(),
        quantity: q,
        ..Default::default()
    }
}

pub async fn reserve(
    c: &mut Client,
    tenant: &str,
    id: &str,
    lines: Vec<ReservationLine>,
) -> Result<Reservation, tonic::Status> {
    c.create_reservation(authed(
        tenant,
        CreateReservationRequest {
            reservation_id: id.into(),
            lines,
            ..Default::default()
        },
    ))
    .await
    .map(|r| r.into_inner().reservation.unwrap())
}

/// A tenant's reservation, as GetReservation gives it.
pub async fn reservation(c: &mut Client, tenant: &str, id: &str) -> Reservation {
    c.get_reservation(authed(
        tenant,
        GetReservationRequest {
            name: format!("reservations/{id}"),
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .reservation
    .unwrap()
}

/// Network availability of a SKU, with the feed cursor it was read at.
pub async fn availability(c: &mut Client, tenant: &str, sku: &str) -> GetAvailabilityResponse {
    c.get_availability(authed(
        tenant,
        GetAvailabilityRequest {
            skus: vec![sku.into()],
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

/// Network availability of a SKU.
pub async fn available(c: &mut Client, tenant: &str, sku: &str) -> Availability {
    availability(c, tenant, sku).await.availabilities.remove(0)
}

/// Streams `n` reservations of one unit of `sku` for acme at once (ids
/// `{prefix}0`...), as a burst lands in the writer's batches; the status
/// code each got, in order.
pub async fn burst(c: &mut Client, prefix: &str, n: usize, sku: &str) -> Vec<i32> {
    use futures::StreamExt;
    let msgs: Vec<_> = (0..n)
        .map(|i| StreamReservationsRequest {
            reservation: Some(CreateReservationRequest {
                reservation_id: format!("{prefix}{i}"),
                lines: vec![line(sku, "", 1)],
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let answers = c
        .stream_reservations(authed("acme", tokio_stream::iter(msgs)))
        .await
        .unwrap()
        .into_inner();
    answers
        .map(|a| a.unwrap().status.unwrap_or_default().code)
        .collect()
        .await
}

/// A request that enables or disables a node, changing nothing else.
pub fn enabling(node: &str, enabled: bool) -> UpdateNodeRequest {
    UpdateNodeRequest {
        request_id: rid(),
        node: Some(Node {
            name: format!("nodes/{node}"),
            enabled,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["enabled".into()],
        }),
    }
}

/// Reconciles the tenant's gate with the record (or only compares).
pub async fn reconcile(c: &mut Client, tenant: &str, dry_run: bool) -> ReconcileResponse {
    c.reconcile(authed(
        tenant,
        ReconcileRequest {
            request_id: rid(),
            dry_run,
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

/// The gate and the record agree (a Reconcile dry run finds no drift).
pub async fn no_drift(c: &mut Client) {
    let report = reconcile(c, "acme", true).await;
    assert_clean(&report, "acme");
}

/// Reconcile found nothing amiss: no gate figure, held total or gate
/// record of a reservation differs from the record.
pub fn assert_clean(report: &ReconcileResponse, what: &str) {
    let found = (
        report.drift_count,
        report.held_total_drift_count,
        report.reservation_drift_count,
    );
    assert_eq!(found, (0, 0, 0), "{what}: {report:?}");
}

/// Units held per reservation in the record, summed for a SKU; checks on
/// the way that the held totals (what availability reads) agree, per node.
pub async fn held_in_record(db: &TestDb, tenant: &str, sku: &str) -> i64 {
    let mut c = db.connect("inventory").await;
    let per_node = |table: &str| {
        format!(
            "SELECT node_id, SUM(held)::bigint FROM {table} WHERE tenant = $1 AND sku = $2
             GROUP BY node_id HAVING SUM(held) <> 0 ORDER BY node_id"
        )
    };
    let holds: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(per_node("holds")))
        .bind(tenant)
        .bind(sku)
        .fetch_all(&mut c)
        .await
        .unwrap();
    let totals: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(per_node("held_totals")))
        .bind(tenant)
        .bind(sku)
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(totals, holds, "held totals of {sku} must match its holds");
    holds.iter().map(|(_, h)| h).sum()
}

/// An acme reservation of `q` units, confirmed at DC1.
pub async fn confirmed_at_dc1(c: &mut Client, id: &str, sku: &str, q: i64) {
    reserve(c, "acme", id, vec![line(sku, "", q)])
        .await
        .unwrap();
    c.confirm_reservation(authed(
        "acme",
        ConfirmReservationRequest {
            request_id: rid(),
            name: format!("reservations/{id}"),
            allocations: vec![Allocation {
                sku: sku.into(),
                node_id: "DC1".into(),
                quantity: q,
                ..Default::default()
            }],
        },
    ))
    .await
    .unwrap();
}

/// Ships an acme reservation's allocations.
pub async fn ship(
    c: &mut Client,
    id: &str,
    shipped: Vec<Allocation>,
) -> Result<Reservation, tonic::Status> {
    c.consume_allocations(authed(
        "acme",
        ConsumeAllocationsRequest {
            request_id: rid(),
            name: format!("reservations/{id}"),
            shipped,
            reference: "fulfillmentOrders/f1".into(),
        },
    ))
    .await
    .map(|r| r.into_inner().reservation.unwrap())
}

/// `q` units shipped from DC1, of a lot and with serial numbers.
pub fn shipped(sku: &str, q: i64, lot: &str, serials: &[&str]) -> Allocation {
    Allocation {
        sku: sku.into(),
        node_id: "DC1".into(),
        quantity: q,
        lot: lot.into(),
        serial_numbers: serials.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Reserves a tenant's cart `id` of `lines`, due 100 ms later.
pub async fn cart(c: &mut Client, tenant: &str, id: &str, lines: Vec<ReservationLine>) {
    let ttl = prost_types::Duration {
        seconds: 0,
        nanos: 100_000_000,
    };
    c.create_reservation(authed(
        tenant,
        CreateReservationRequest {
            reservation_id: id.into(),
            lines,
            ttl: Some(ttl),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
}

/// acme's stock levels of a SKU (at one node, or every node when empty).
pub async fn stock_levels(c: &mut Client, node: &str, sku: &str) -> Vec<StockLevel> {
    c.list_stock_levels(authed(
        "acme",
        ListStockLevelsRequest {
            node_id: node.into(),
            skus: vec![sku.into()],
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .levels
}

pub use oms_runtime::status::{fields, reason, resource_names, subjects};

/// Polls `cond` until it holds; fails the test after 10 s.
pub async fn wait_until(mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "condition never held");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// acme's inventory feed from the start.
pub async fn acme_events(c: &mut Client) -> tonic::Streaming<WatchInventoryEventsResponse> {
    c.watch_inventory_events(authed("acme", WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner()
}

/// An ExtendReservation adding (sku, node, units) to reservation `id`.
pub fn extend_request(
    request_id: &str,
    id: &str,
    lines: &[(&str, &str, i64)],
) -> ExtendReservationRequest {
    ExtendReservationRequest {
        request_id: request_id.into(),
        name: format!("reservations/{id}"),
        lines: allocations(lines),
        reason: "order edited".into(),
        ttl: None,
    }
}

/// Allocations of (sku, node, units).
pub fn allocations(of: &[(&str, &str, i64)]) -> Vec<Allocation> {
    of.iter()
        .map(|(s, n, q)| Allocation {
            sku: s.to_string(),
            node_id: n.to_string(),
            quantity: *q,
            ..Default::default()
        })
        .collect()
}
