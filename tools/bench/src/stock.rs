//! What the stock scenarios start from: an inventory service of their
//! own, one SKU in stock at one warehouse or a catalog of SKUs at many
//! nodes, and network availability.
use oms_proto::common::NodeKind;
use oms_proto::inventory::{
    import_stock_snapshot_request::Part, inventory_service_client::InventoryServiceClient, *,
};
use oms_testkit::{Running, TestDb, authed};
use tonic::transport::Channel;

/// An inventory service over `db` with `env` set, on a runtime of its own
/// (two workers), and a channel to it with no call timeout: one import or
/// rebuild of a large tenant may take longer than the usual client's.
/// The service stops, then its runtime, when this is dropped.
pub struct Inventory {
    pub channel: Channel,
    _svc: Running,
    _rt: crate::load::ServerRuntime,
}

pub async fn inventory(db: &TestDb, env: &[(&str, String)]) -> anyhow::Result<Inventory> {
    let config = oms_testkit::config_with(oms_runtime::Service::Inventory, db, &[], env);
    let rt = crate::load::ServerRuntime::new(2, "oms-inventory")?;
    let svc = rt
        .spawn(oms_testkit::spawn(config, oms_inventory::run))
        .await?;
    let channel = Channel::from_shared(format!("http://{}", svc.addr))?.connect_lazy();
    Ok(Inventory {
        channel,
        _svc: svc,
        _rt: rt,
    })
}

/// The names of a catalog of `nodes` nodes and `skus` SKUs.
pub fn names(nodes: usize, skus: usize) -> (Vec<String>, Vec<String>) {
    let nodes = (0..nodes).map(|n| format!("N{n:04}")).collect();
    let skus = (0..skus).map(|k| format!("SKU-{k:05}")).collect();
    (nodes, skus)
}

/// Warehouse DC1 with `units` of `sku` received there, for `tenant`.
pub async fn one_sku(
    client: &mut InventoryServiceClient<Channel>,
    tenant: &str,
    sku: &str,
    units: i64,
) -> anyhow::Result<()> {
    let node = Node {
        node_id: "DC1".into(),
        kind: NodeKind::Warehouse as i32,
        enabled: true,
        ..Default::default()
    };
    let req = CreateNodeRequest {
        request_id: "n".into(),
        node: Some(node),
    };
    client.create_node(authed(tenant, req)).await?;
    let item = Item {
        sku: sku.into(),
        ..Default::default()
    };
    let req = CreateItemRequest {
        request_id: "i".into(),
        item: Some(item),
    };
    client.create_item(authed(tenant, req)).await?;
    let receipt = StockMovement {
        kind: MovementKind::Receipt as i32,
        node_id: "DC1".into(),
        sku: sku.into(),
        quantity: units,
        ..Default::default()
    };
    let req = RecordMovementRequest {
        request_id: "r".into(),
        movement: Some(receipt),
    };
    client.record_movement(authed(tenant, req)).await?;
    Ok(())
}

/// A reservation of one unit of `sku`, with the service's default TTL.
pub fn one_unit(sku: &str, reservation_id: String) -> CreateReservationRequest {
    CreateReservationRequest {
        reservation_id,
        lines: vec![ReservationLine {
            sku: sku.into(),
            quantity: 1,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `sku`'s network availability for `tenant`.
pub async fn available(
    client: &mut InventoryServiceClient<Channel>,
    tenant: &str,
    sku: &str,
) -> anyhow::Result<Availability> {
    let req = GetAvailabilityRequest {
        skus: vec![sku.into()],
        ..Default::default()
    };
    let resp = client.get_availability(authed(tenant, req)).await?;
    let mut figures = resp.into_inner().availabilities;
    anyhow::ensure!(figures.len() == 1, "{} figures of {sku}", figures.len());
    Ok(figures.remove(0))
}

/// Nodes (stores) and items (tracked by lot and expiry with `lots`).
pub async fn catalog(
    client: &mut InventoryServiceClient<Channel>,
    tenant: &str,
    nodes: &[String],
    skus: &[String],
    lots: bool,
) -> anyhow::Result<()> {
    for n in nodes {
        let node = Node {
            node_id: n.clone(),
            kind: NodeKind::Store as i32,
            enabled: true,
            ..Default::default()
        };
        let req = CreateNodeRequest {
            request_id: format!("node-{n}"),
            node: Some(node),
        };
        client.create_node(authed(tenant, req)).await?;
    }
    for s in skus {
        let item = Item {
            sku: s.clone(),
            lot_tracked: lots,
            expiry_tracked: lots,
            ..Default::default()
        };
        let req = CreateItemRequest {
            request_id: format!("item-{s}"),
            item: Some(item),
        };
        client.create_item(authed(tenant, req)).await?;
    }
    Ok(())
}

/// Each SKU's network availability, in `skus`' order.
pub async fn network_available(
    client: &mut InventoryServiceClient<Channel>,
    tenant: &str,
    skus: &[String],
) -> anyhow::Result<Vec<i64>> {
    let mut available = vec![];
    for chunk in skus.chunks(1000) {
        let req = GetAvailabilityRequest {
            skus: chunk.to_vec(),
            ..Default::default()
        };
        let resp = client.get_availability(authed(tenant, req)).await?;
        available.extend(resp.into_inner().availabilities.iter().map(|a| a.available));
    }
    Ok(available)
}

/// One snapshot count of `units` of every SKU at every node (of `lot`,
/// expiring `expiry_date`, when not empty): a header, then the rows.
pub fn count_messages(
    request_id: &str,
    nodes: &[String],
    skus: &[String],
    units: i64,
    lot: &str,
    expiry_date: &str,
) -> Vec<ImportStockSnapshotRequest> {
    let header = ImportStockSnapshotRequest {
        part: Some(Part::Header(SnapshotHeader {
            request_id: request_id.into(),
            source: "bench".into(),
            count_time: None,
        })),
    };
    let rows = nodes.iter().flat_map(|n| {
        skus.iter().map(move |s| ImportStockSnapshotRequest {
            part: Some(Part::Row(SnapshotRow {
                node_id: n.clone(),
                sku: s.clone(),
                on_hand: units,
                lot: lot.into(),
                expiry_date: expiry_date.into(),
                ..Default::default()
            })),
        })
    });
    std::iter::once(header).chain(rows).collect()
}
