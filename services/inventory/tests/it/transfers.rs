//! Transfers in transit: stock that left one node and has not reached
//! the other is promised by neither.
use crate::*;
use tonic::Code;

fn send(
    id: &str,
    sku: &str,
    q: i64,
    f: impl FnOnce(&mut TransferStockRequest),
) -> TransferStockRequest {
    let mut t = TransferStockRequest {
        request_id: rid(),
        transfer_id: id.into(),
        in_transit: true,
        from_node_id: "DC1".into(),
        to_node_id: "STORE1".into(),
        sku: sku.into(),
        quantity: q,
        reason: "store replenishment".into(),
        ..Default::default()
    };
    f(&mut t);
    t
}

fn arrival(
    id: &str,
    q: i64,
    f: impl FnOnce(&mut ReceiveTransferRequest),
) -> ReceiveTransferRequest {
    let mut r = ReceiveTransferRequest {
        request_id: rid(),
        name: format!("transfers/{id}"),
        quantity: q,
        ..Default::default()
    };
    f(&mut r);
    r
}

async fn receive_transfer(
    c: &mut Client,
    r: ReceiveTransferRequest,
) -> Result<ReceiveTransferResponse, tonic::Status> {
    c.receive_transfer(authed("acme", r))
        .await
        .map(|r| r.into_inner())
}

/// (on hand, in transit, available) of SKU-1 at the nodes, or the network.
async fn figures(c: &mut Client, nodes: &[&str]) -> Vec<(i64, i64, i64)> {
    c.get_availability(authed(
        "acme",
        GetAvailabilityRequest {
            skus: vec!["SKU-1".into()],
            node_ids: nodes.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .availabilities
    .iter()
    .map(|a| (a.on_hand, a.in_transit, a.available))
    .collect()
}

async fn on_hand(c: &mut Client, node: &str) -> i64 {
    stock_levels(c, node, "SKU-1")
        .await
        .iter()
        .map(|l| l.on_hand)
        .sum()
}

#[tokio::test]
async fn stock_in_transit_is_promised_by_neither_node_until_it_arrives() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    node(c, "acme", "STORE1").await;
    item(c, "acme", "SKU-1").await;
    receive(c, "acme", "DC1", "SKU-1", 10).await;
    let mut events = c
        .watch_inventory_events(authed("acme", WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    let req = send("TO-1", "SKU-1", 6, |_| {});
    let sent = c
        .transfer_stock(authed("acme", req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.transfer_out.as_ref().unwrap().on_hand_after, 4);
    assert_eq!(
        sent.transfer_out.as_ref().unwrap().reference,
        "transfers/TO-1"
    );
    assert!(sent.transfer_in.is_none(), "nothing arrived yet");
    let t = sent.transfer.clone().unwrap();
    assert_eq!(
        (t.state(), t.quantity, t.in_transit, t.actor.as_str()),
        (TransferState::InTransit, 6, 6, "test")
    );
    // A replay answers the same; the id once more under another request
    // is refused, and moves nothing.
    let again = c
        .transfer_stock(authed("acme", req))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, sent);
    let err = c
        .transfer_stock(authed("acme", send("TO-1", "SKU-1", 1, |_| {})))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::AlreadyExists, "TRANSFER_EXISTS".into())
    );
    assert_eq!(on_hand(c, "DC1").await, 4);

    // On the way: on hand nowhere, promised nowhere, shown as in transit.
    assert_eq!(figures(c, &[]).await, [(4, 6, 4)]);
    assert_eq!(figures(c, &["STORE1"]).await, [(0, 6, 0)]);
    let err = reserve(c, "acme", "r1", vec![line("SKU-1", "", 5)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");
    let err = reserve(c, "acme", "r2", vec![line("SKU-1", "STORE1", 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_STOCK");

    // Part of it arrives; the store promises what arrived.
    let first = receive_transfer(c, arrival("TO-1", 4, |_| {}))
        .await
        .unwrap();
    assert_eq!(first.transfer_in.as_ref().unwrap().on_hand_after, 4);
    let t = first.transfer.unwrap();
    assert_eq!(
        (t.state(), t.quantity_received, t.in_transit),
        (TransferState::InTransit, 4, 2)
    );
    assert_eq!(figures(c, &["STORE1"]).await, [(4, 2, 4)]);
    reserve(c, "acme", "r3", vec![line("SKU-1", "STORE1", 1)])
        .await
        .unwrap();

    // More than is on the way, or a close that loses units without a
    // reason, changes nothing.
    let err = receive_transfer(c, arrival("TO-1", 3, |_| {}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (
            Code::FailedPrecondition,
            "RECEIPT_EXCEEDS_IN_TRANSIT".into()
        )
    );
    let err = receive_transfer(c, arrival("TO-1", 1, |r| r.close = true))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["reason"]);
    assert_eq!(on_hand(c, "STORE1").await, 4);

    // The last unit arrives broken: one received, one written off.
    let close = arrival("TO-1", 1, |r| {
        r.close = true;
        r.reason = "one carton crushed on the truck".into();
    });
    let closed = receive_transfer(c, close.clone()).await.unwrap();
    let t = closed.transfer.clone().unwrap();
    assert_eq!(
        (
            t.state(),
            t.quantity_received,
            t.quantity_lost,
            t.in_transit
        ),
        (TransferState::Closed, 5, 1, 0)
    );
    assert_eq!(t.close_reason, "one carton crushed on the truck");
    assert_eq!(receive_transfer(c, close).await.unwrap(), closed, "replay");
    assert_eq!(figures(c, &[]).await, [(9, 0, 8)], "9 on hand, 1 held");
    let err = receive_transfer(c, arrival("TO-1", 1, |_| {}))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "TRANSFER_ENDED");

    // The movements it caused, by its reference; the transfer as listed.
    let moves = c
        .list_movements(authed(
            "acme",
            ListMovementsRequest {
                reference: "transfers/TO-1".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .movements;
    let moved: Vec<(MovementKind, &str, i64)> = moves
        .iter()
        .map(|m| (m.kind(), m.node_id.as_str(), m.quantity))
        .collect();
    assert_eq!(
        moved,
        [
            (MovementKind::TransferIn, "STORE1", 1),
            (MovementKind::TransferIn, "STORE1", 4),
            (MovementKind::TransferOut, "DC1", -6),
        ]
    );
    let list = |f: fn(&mut ListTransfersRequest)| {
        let mut r = ListTransfersRequest::default();
        f(&mut r);
        authed("acme", r)
    };
    let on_the_way = c
        .list_transfers(list(|r| r.states = vec![TransferState::InTransit as i32]))
        .await
        .unwrap()
        .into_inner();
    assert!(on_the_way.transfers.is_empty());
    let to_store = c
        .list_transfers(list(|r| r.to_node_id = "STORE1".into()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(to_store.transfers, std::slice::from_ref(&t));
    let got = c
        .get_transfer(authed(
            "acme",
            GetTransferRequest {
                name: "transfers/TO-1".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.transfer.unwrap(), t);
    // Another tenant has no such transfer.
    let err = c
        .get_transfer(authed(
            "globex",
            GetTransferRequest {
                name: "transfers/TO-1".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Its end is an event, and the gate agrees with the record.
    let ended = loop {
        let ev = events.message().await.unwrap().unwrap().event.unwrap();
        if let Some(inventory_event::Kind::TransferClosed(e)) = ev.kind {
            break e.transfer.unwrap();
        }
    };
    assert_eq!(ended, t);
    assert!(reconcile(c, "acme", true).await.drifts.is_empty());
}

#[tokio::test]
async fn bad_transfers_and_receipts_are_refused_with_their_fields() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    node(c, "acme", "STORE1").await;
    node(c, "globex", "G1").await;
    item(c, "acme", "SKU-1").await;
    receive(c, "acme", "DC1", "SKU-1", 10).await;

    let err = c
        .transfer_stock(authed("acme", send("", "SKU-1", 1, |_| {})))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["transfer_id"]);
    let err = c
        .transfer_stock(authed("acme", send("a/b", "SKU-1", 1, |_| {})))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["transfer_id"]);
    // Nowhere to go (another tenant's node is none of acme's): nothing
    // leaves.
    for to in ["NOWHERE", "G1"] {
        let err = c
            .transfer_stock(authed(
                "acme",
                send("TO-2", "SKU-1", 1, |t| t.to_node_id = to.into()),
            ))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::NotFound, "NODE_NOT_FOUND".into())
        );
    }
    assert_eq!(on_hand(c, "DC1").await, 10);
    let err = c
        .transfer_stock(authed("acme", send("TO-2", "SKU-1", 11, |_| {})))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_ON_HAND");

    let err = receive_transfer(c, arrival("TO-2", 1, |r| r.name = "TO-2".into()))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["name"]);
    let err = receive_transfer(c, arrival("TO-2", 0, |_| {}))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["quantity"]);
    let err = receive_transfer(c, arrival("TO-2", -1, |r| r.close = true))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["quantity"]);
    let err = receive_transfer(c, arrival("TO-2", 1, |_| {}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (Code::NotFound, "TRANSFER_NOT_FOUND".into())
    );
    let err = c
        .list_transfers(authed(
            "acme",
            ListTransfersRequest {
                states: vec![9],
                sku: "a b".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["states[0]", "sku"]);
}

#[tokio::test]
async fn serial_numbers_and_lots_travel_with_the_transfer() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    node(c, "acme", "STORE1").await;
    tracked_item(c, "PH", |i| i.serial_tracked = true).await;
    movement(c, &rid(), MovementKind::Receipt, "DC1", "PH", |m| {
        m.quantity = 3;
        m.serial_numbers = vec!["A".into(), "B".into(), "C".into()];
    })
    .await
    .unwrap();
    let serials = ["A", "B", "C"].map(String::from).to_vec();
    c.transfer_stock(authed(
        "acme",
        send("TO-3", "PH", 3, |t| t.serial_numbers = serials),
    ))
    .await
    .unwrap();
    // A serial that was not sent cannot arrive by the transfer.
    let err = receive_transfer(
        c,
        arrival("TO-3", 1, |r| r.serial_numbers = vec!["Z".into()]),
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "SERIAL_NOT_IN_TRANSIT");
    let got = receive_transfer(
        c,
        arrival("TO-3", 1, |r| r.serial_numbers = vec!["B".into()]),
    )
    .await
    .unwrap();
    assert_eq!(got.transfer.unwrap().serial_numbers, ["A", "C"]);
    let where_ = c
        .list_serial_numbers(authed(
            "acme",
            ListSerialNumbersRequest {
                sku: "PH".into(),
                include_gone: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .serial_numbers;
    let at: Vec<(&str, &str)> = where_
        .iter()
        .map(|s| (s.serial_number.as_str(), s.node_id.as_str()))
        .collect();
    assert_eq!(at, [("A", ""), ("B", "STORE1"), ("C", "")]);

    // A lot keeps its expiry date at the node it arrives at, and the item's
    // tracking cannot change under units on the way (they would arrive
    // without serial numbers).
    tracked_item(c, "MILK", |i| {
        i.lot_tracked = true;
        i.expiry_tracked = true;
    })
    .await;
    movement(c, &rid(), MovementKind::Receipt, "DC1", "MILK", |m| {
        m.quantity = 5;
        m.lot = "L1".into();
        m.expiry_date = "2099-12-31".into();
    })
    .await
    .unwrap();
    c.transfer_stock(authed(
        "acme",
        send("TO-4", "MILK", 5, |t| t.lot = "L1".into()),
    ))
    .await
    .unwrap();
    let err = c
        .update_item(authed(
            "acme",
            UpdateItemRequest {
                request_id: rid(),
                item: Some(Item {
                    name: "items/MILK".into(),
                    serial_tracked: true,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["serial_tracked".into()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "ITEM_HAS_STOCK");
    assert!(err.message().contains("5 in transit in lot L1"), "{err:?}");
    let got = receive_transfer(c, arrival("TO-4", 5, |_| {}))
        .await
        .unwrap();
    let m = got.transfer_in.unwrap();
    assert_eq!(
        (m.lot.as_str(), m.expiry_date.as_str()),
        ("L1", "2099-12-31")
    );
    assert_eq!(got.transfer.unwrap().state(), TransferState::Received);
}
