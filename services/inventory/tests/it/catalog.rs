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
    // A node is named by its id too (`name` reads as output only), but
    // not by two that disagree.
    let by_id = |name: &str, node_id: &str| UpdateNodeRequest {
        node: Some(Node {
            name: name.into(),
            node_id: node_id.into(),
            enabled: false,
            ..Default::default()
        }),
        ..enabling("DC-1", false)
    };
    let off = h
        .client
        .update_node(authed("acme", by_id("", "DC-1")))
        .await
        .unwrap();
    assert!(!off.into_inner().node.unwrap().enabled);
    let both = by_id("nodes/DC-1", "DC-2");
    let err = h.client.update_node(authed("acme", both)).await;
    assert_eq!(fields(&err.unwrap_err()), ["node.node_id"]);

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
        n.shared_with_tenants = vec!["acme".into(), "initech".into()];
    })
    .await;
    let client = h.client.clone();
    let get = |tenant: &str| {
        let mut c = client.clone();
        let req = authed(
            tenant,
            GetNodeRequest {
                name: "nodes/3PL-1".into(),
            },
        );
        async move { c.get_node(req).await.map(|r| r.into_inner().node.unwrap()) }
    };
    // A depositor sees itself alone among those the node is shared with,
    // in a get and in a list; the owner sees them all.
    assert_eq!(get("acme").await.unwrap().shared_with_tenants, ["acme"]);
    let listed = h
        .client
        .list_nodes(authed("acme", ListNodesRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(listed[0].shared_with_tenants, ["acme"]);
    assert_eq!(
        get("threepl").await.unwrap().shared_with_tenants,
        ["acme", "initech"]
    );
    let hidden = get("globex").await;
    assert_eq!(hidden.unwrap_err().code(), Code::NotFound);
    let err = h
        .client
        .update_node(authed("acme", enabling("3PL-1", false)))
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

/// A call without its `request_id` and with a bad body hears of both at
/// once: a body checked before the id would hide the missing id until the
/// body was right, one more round trip.
#[tokio::test]
async fn a_missing_request_id_comes_back_with_the_bad_body() {
    let mut h = start().await;
    let c = &mut h.client;
    let bad_node = Node {
        node_id: "bad id".into(),
        ..Default::default()
    };
    let mut got: Vec<(&str, Vec<String>)> = Vec::new();
    let node = CreateNodeRequest {
        node: Some(bad_node),
        ..Default::default()
    };
    got.push((
        "CreateNode",
        fields_of(c.create_node(authed("acme", node)).await),
    ));
    let item = CreateItemRequest {
        item: Some(Item::default()),
        ..Default::default()
    };
    got.push((
        "CreateItem",
        fields_of(c.create_item(authed("acme", item)).await),
    ));
    let update = UpdateNodeRequest::default();
    got.push((
        "UpdateNode",
        fields_of(c.update_node(authed("acme", update)).await),
    ));
    let update = UpdateItemRequest {
        item: Some(Item {
            name: "SKU-1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    got.push((
        "UpdateItem",
        fields_of(c.update_item(authed("acme", update)).await),
    ));
    let m = RecordMovementRequest {
        movement: Some(StockMovement {
            kind: MovementKind::Receipt as i32,
            node_id: "DC-1".into(),
            sku: "SKU-1".into(),
            quantity: -1,
            ..Default::default()
        }),
        ..Default::default()
    };
    got.push((
        "RecordMovement",
        fields_of(c.record_movement(authed("acme", m)).await),
    ));
    let t = TransferStockRequest {
        from_node_id: "DC-1".into(),
        to_node_id: "DC-2".into(),
        sku: "SKU-1".into(),
        ..Default::default()
    };
    got.push((
        "TransferStock",
        fields_of(c.transfer_stock(authed("acme", t)).await),
    ));
    let send = SendTransferRequest {
        transfer_id: "T-1".into(),
        from_node_id: "DC-1".into(),
        to_node_id: "DC-2".into(),
        lines: vec![TransferLine {
            sku: "SKU-1".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    got.push((
        "SendTransfer",
        fields_of(c.send_transfer(authed("acme", send)).await),
    ));
    let r = ReceiveTransferRequest {
        name: "transfers/T-1".into(),
        ..Default::default()
    };
    got.push((
        "ReceiveTransfer",
        fields_of(c.receive_transfer(authed("acme", r)).await),
    ));
    let s = SetSafetyStockRequest {
        node_id: "DC-1".into(),
        quantity: -1,
        ..Default::default()
    };
    got.push((
        "SetSafetyStock",
        fields_of(c.set_safety_stock(authed("acme", s)).await),
    ));
    let r = SetChannelRuleRequest::default();
    got.push((
        "SetChannelRule",
        fields_of(c.set_channel_rule(authed("acme", r)).await),
    ));
    let confirm = ConfirmReservationRequest {
        name: "r-1".into(),
        ..Default::default()
    };
    got.push((
        "ConfirmReservation",
        fields_of(c.confirm_reservation(authed("acme", confirm)).await),
    ));
    let extend = ExtendReservationRequest {
        name: "reservations/r-1".into(),
        reason: "x".repeat(501),
        ..Default::default()
    };
    got.push((
        "ExtendReservation",
        fields_of(c.extend_reservation(authed("acme", extend)).await),
    ));
    let want: Vec<(&str, Vec<String>)> = [
        (
            "CreateNode",
            &["request_id", "node.node_id", "node.kind"][..],
        ),
        ("CreateItem", &["request_id", "item.sku"]),
        ("UpdateNode", &["request_id", "node"]),
        ("UpdateItem", &["request_id", "item.name"]),
        ("RecordMovement", &["request_id", "movement.quantity"]),
        ("TransferStock", &["request_id", "quantity"]),
        ("SendTransfer", &["request_id", "lines[0].quantity"]),
        ("ReceiveTransfer", &["request_id", "lines"]),
        ("SetSafetyStock", &["request_id", "quantity"]),
        ("SetChannelRule", &["request_id", "rule"]),
        ("ConfirmReservation", &["request_id", "name", "allocations"]),
        ("ExtendReservation", &["request_id", "lines", "reason"]),
    ]
    .into_iter()
    .map(|(m, f)| (m, f.iter().map(|s| s.to_string()).collect()))
    .collect();
    assert_eq!(got, want);
}

fn fields_of<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Vec<String> {
    match r {
        Ok(_) => vec!["(accepted)".into()],
        Err(e) => {
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            fields(&e)
        }
    }
}

/// Lot tracking switched on with units outside lots would strand them:
/// a lot-tracked item's movements must name a lot. So the switch waits
/// until the item has nothing on hand.
#[tokio::test]
async fn tracking_changes_only_while_an_item_has_no_stock() {
    use MovementKind::{CycleCount, Receipt};
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC-1").await;
    item(c, "acme", "SKU-1").await;
    receive(c, "acme", "DC-1", "SKU-1", 4).await;
    let track_lots = || UpdateItemRequest {
        request_id: rid(),
        item: Some(Item {
            name: "items/SKU-1".into(),
            lot_tracked: true,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["lot_tracked".into()],
        }),
    };
    let err = c
        .update_item(authed("acme", track_lots()))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::FailedPrecondition, "ITEM_HAS_STOCK".to_string())
    );
    assert!(err.message().contains("(4 at DC-1)"), "{}", err.message());
    let unchanged = c
        .get_item(authed(
            "acme",
            GetItemRequest {
                name: "items/SKU-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .item
        .unwrap();
    assert!(!unchanged.lot_tracked);
    // Counted to zero, the item takes the change, and its units come back in lots.
    movement(c, &rid(), CycleCount, "DC-1", "SKU-1", |m| {
        m.counted_quantity = Some(0)
    })
    .await
    .unwrap();
    let tracked = c.update_item(authed("acme", track_lots())).await.unwrap();
    assert!(tracked.into_inner().item.unwrap().lot_tracked);
    movement(c, &rid(), Receipt, "DC-1", "SKU-1", |m| {
        m.lot = "L1".into();
        m.quantity = 4;
    })
    .await
    .unwrap();
    assert_eq!(available(c, "acme", "SKU-1").await.available, 4);
}

/// ListNodes filters by kind, enabled, region and capability, pages
/// through what the filters keep without losing a node, and shows a
/// tenant the nodes shared with it.
#[tokio::test]
async fn nodes_are_listed_by_kind_region_and_capability_page_by_page() {
    let mut h = start().await;
    let c = &mut h.client;
    for (id, region, kind, enabled) in [
        ("LA", "eu", NodeKind::Store, true),
        ("LB", "eu", NodeKind::Store, true),
        ("LC", "us", NodeKind::Store, true),
        ("LD", "eu", NodeKind::Warehouse, false),
        ("LE", "eu", NodeKind::Store, true),
    ] {
        node_with(c, "acme", id, |n| {
            n.region = region.into();
            n.kind = kind as i32;
            n.enabled = enabled;
            n.capabilities.as_mut().unwrap().pickup = kind == NodeKind::Store;
        })
        .await;
    }
    node_with(c, "globex", "GX", |n| n.region = "eu".into()).await;
    node_with(c, "globex", "GS", |n| {
        n.region = "eu".into();
        n.shared_with_tenants = vec!["acme".into()];
    })
    .await;
    let mut list =
        async |tenant: &str, req: ListNodesRequest| -> Result<Vec<String>, tonic::Status> {
            let mut ids = vec![];
            let mut req = req;
            loop {
                let page = c
                    .list_nodes(authed(tenant, req.clone()))
                    .await?
                    .into_inner();
                ids.extend(page.nodes.into_iter().map(|n| n.node_id));
                if page.next_page_token.is_empty() {
                    return Ok(ids);
                }
                req.page_token = page.next_page_token;
            }
        };
    let eu = |page_size: i32| ListNodesRequest {
        page_size,
        region: "eu".into(),
        ..Default::default()
    };
    // Four a page: the first batch (GS, LA, LB, LC) gives three, the page
    // fills at LD before its second batch (LD, LE) ends, and the next page
    // starts after LD (LE was lost, with no next page).
    assert_eq!(
        list("acme", eu(4)).await.unwrap(),
        ["GS", "LA", "LB", "LD", "LE"]
    );
    for size in [1, 2, 3, 100] {
        assert_eq!(
            list("acme", eu(size)).await.unwrap().len(),
            5,
            "{size} a page"
        );
    }
    let stores = ListNodesRequest {
        kinds: vec![NodeKind::Store as i32],
        enabled_only: true,
        capability: "pickup".into(),
        ..Default::default()
    };
    assert_eq!(
        list("acme", stores).await.unwrap(),
        ["LA", "LB", "LC", "LE"]
    );
    assert_eq!(list("globex", eu(2)).await.unwrap(), ["GS", "GX"]);
    let bad = ListNodesRequest {
        kinds: vec![42],
        capability: "fly".into(),
        ..Default::default()
    };
    let err = list("acme", bad).await.unwrap_err();
    assert_eq!(fields(&err), ["capability", "kinds[0]"]);
}
