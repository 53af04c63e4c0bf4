//! What the reservation scenarios start from: one SKU in stock at one
//! warehouse, and its network availability.
use oms_proto::common::NodeKind;
use oms_proto::inventory::{inventory_service_client::InventoryServiceClient, *};
use oms_testkit::authed;
use tonic::transport::Channel;

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
