use crate::*;
use tonic::Code;

#[tokio::test]
async fn nodes_and_items_round_trip_and_refuse_bad_input() {
    let mut h = start().await;
    let n = node_with(&mut h.client, "acme", "DC-1", |n| {
        n.cutoff_local_time = "16:00".into();
        n.time_zone = "Europe/Berlin".into();
        n.daily_capacity = 500;
    })
    .await;
    assert_eq!(n.name, "nodes/DC-1");
    assert_eq!(n.owner_tenant, "acme");
    let got = h
        .client
        .get_node(authed(
            "acme",
            GetNodeRequest {
                name: "nodes/DC-1".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(got.into_inner().node.unwrap(), n);

    let err = h
        .client
        .create_node(authed(
            "acme",
            CreateNodeRequest {
                request_id: rid(),
                node: Some(n.clone()),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    let bad = Node {
        node_id: "bad id".into(),
        kind: 0,
        cutoff_local_time: "9am".into(),
        ..Default::default()
    };
    let err = h
        .client
        .create_node(authed(
            "acme",
            CreateNodeRequest {
                request_id: rid(),
                node: Some(bad),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        ["node.node_id", "node.kind", "node.cutoff_local_time"]
    );

    // update_mask changes only what it names.
    let updated = h
        .client
        .update_node(authed(
            "acme",
            UpdateNodeRequest {
                request_id: rid(),
                node: Some(Node {
                    name: "nodes/DC-1".into(),
                    daily_capacity: 800,
                    display_name: "not applied".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["daily_capacity".into()],
                }),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .node
        .unwrap();
    assert_eq!(updated.daily_capacity, 800);
    assert_eq!(updated.display_name, n.display_name);

    item(&mut h.client, "acme", "SKU-1").await;
    let err = h
        .client
        .get_item(authed(
            "globex",
            GetItemRequest {
                name: "items/SKU-1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "items are per tenant");
    let items = h
        .client
        .list_items(authed("acme", ListItemsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(items.len(), 1);
}

#[tokio::test]
async fn a_shared_node_is_visible_but_only_its_owner_changes_it() {
    let mut h = start().await;
    node_with(&mut h.client, "threepl", "3PL-1", |n| {
        n.kind = NodeKind::ThirdPartyWarehouse as i32;
        n.shared_with_tenants = vec!["acme".into()];
    })
    .await;
    let seen = h
        .client
        .get_node(authed(
            "acme",
            GetNodeRequest {
                name: "nodes/3PL-1".into(),
            },
        ))
        .await;
    assert!(seen.is_ok());
    let hidden = h
        .client
        .get_node(authed(
            "globex",
            GetNodeRequest {
                name: "nodes/3PL-1".into(),
            },
        ))
        .await;
    assert_eq!(hidden.unwrap_err().code(), Code::NotFound);
    let err = h
        .client
        .update_node(authed(
            "acme",
            UpdateNodeRequest {
                request_id: rid(),
                node: Some(Node {
                    name: "nodes/3PL-1".into(),
                    enabled: false,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["enabled".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Both depositors keep stock there, separately.
    item(&mut h.client, "acme", "SKU-1").await;
    item(&mut h.client, "threepl", "SKU-1").await;
    receive(&mut h.client, "acme", "3PL-1", "SKU-1", 7).await;
    receive(&mut h.client, "threepl", "3PL-1", "SKU-1", 2).await;
    assert_eq!(available(&mut h.client, "acme", "SKU-1").await.available, 7);
    assert_eq!(
        available(&mut h.client, "threepl", "SKU-1").await.available,
        2
    );
    let err = h
        .client
        .record_movement(authed(
            "globex",
            RecordMovementRequest {
                request_id: rid(),
                movement: Some(StockMovement {
                    kind: MovementKind::Receipt as i32,
                    node_id: "3PL-1".into(),
                    sku: "SKU-1".into(),
                    quantity: 1,
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::NotFound,
        "a node not shared with you does not exist for you"
    );
}
