//! Transfers in transit: stock that left one node and has not reached
//! the other is promised by neither.
use crate::*;
use tonic::Code;

fn tline(sku: &str, q: i64) -> TransferLine {
    TransferLine {
        sku: sku.into(),
        quantity: q,
        ..Default::default()
    }
}

fn send(
    id: &str,
    lines: Vec<TransferLine>,
    f: impl FnOnce(&mut SendTransferRequest),
) -> SendTransferRequest {
    let mut t = SendTransferRequest {
        request_id: rid(),
        transfer_id: id.into(),
        from_node_id: "DC1".into(),
        to_node_id: "STORE1".into(),
        lines,
        reason: "store replenishment".into(),
        ..Default::default()
    };
    f(&mut t);
    t
}

async fn send_transfer(
    c: &mut Client,
    r: SendTransferRequest,
) -> Result<SendTransferResponse, tonic::Status> {
    c.send_transfer(authed("acme", r))
        .await
        .map(|r| r.into_inner())
}

fn arrival(
    id: &str,
    lines: Vec<TransferLine>,
    f: impl FnOnce(&mut ReceiveTransferRequest),
) -> ReceiveTransferRequest {
    let mut r = ReceiveTransferRequest {
        request_id: rid(),
        name: format!("transfers/{id}"),
        lines,
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

/// (sku, received, lost, in transit) per line.
fn lines_of(t: &Transfer) -> Vec<(&str, i64, i64, i64)> {
    t.lines
        .iter()
        .map(|l| {
            (
                l.sku.as_str(),
                l.quantity_received,
                l.quantity_lost,
                l.in_transit,
            )
        })
        .collect()
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
    dc1_and_store1(c, &[("SKU-1", 10), ("SKU-2", 3)]).await;
    let mut events = c
        .watch_inventory_events(authed("acme", WatchInventoryEventsRequest::default()))
        .await
        .unwrap()
        .into_inner();

    let req = send("TO-1", vec![tline("SKU-1", 6), tline("SKU-2", 3)], |_| {});
    let sent = send_transfer(c, req.clone()).await.unwrap();
    let outs: Vec<(&str, i64, &str)> = sent
        .transfer_outs
        .iter()
        .map(|m| (m.sku.as_str(), m.on_hand_after, m.reference.as_str()))
        .collect();
    assert_eq!(
        outs,
        [
            ("SKU-1", 4, "transfers/TO-1"),
            ("SKU-2", 0, "transfers/TO-1")
        ]
    );
    let t = sent.transfer.clone().unwrap();
    // Every line left at one moment: the transfer's ship time.
    let left: Vec<_> = sent.transfer_outs.iter().map(|m| m.occur_time).collect();
    assert!(t.ship_time.is_some());
    assert_eq!(left, [t.ship_time, t.ship_time]);
    assert_eq!(
        (t.state(), t.actor.as_str(), lines_of(&t)),
        (
            TransferState::InTransit,
            "test",
            vec![("SKU-1", 0, 0, 6), ("SKU-2", 0, 0, 3)]
        )
    );
    // A replay answers the same; the id once more under another request
    // is refused, and moves nothing.
    assert_eq!(send_transfer(c, req).await.unwrap(), sent);
    let err = send_transfer(c, send("TO-1", vec![tline("SKU-1", 1)], |_| {}))
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
    let first = receive_transfer(c, arrival("TO-1", vec![tline("SKU-1", 4)], |_| {}))
        .await
        .unwrap();
    assert_eq!(first.transfer_ins[0].on_hand_after, 4);
    let t = first.transfer.unwrap();
    assert_eq!(t.state(), TransferState::InTransit);
    assert_eq!(lines_of(&t), [("SKU-1", 4, 0, 2), ("SKU-2", 0, 0, 3)]);
    assert_eq!(figures(c, &["STORE1"]).await, [(4, 2, 4)]);
    reserve(c, "acme", "r3", vec![line("SKU-1", "STORE1", 1)])
        .await
        .unwrap();

    // More than is on the way, what was not sent, or a close that loses
    // units without a reason, changes nothing.
    let err = receive_transfer(c, arrival("TO-1", vec![tline("SKU-1", 3)], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err)),
        (
            Code::FailedPrecondition,
            "RECEIPT_EXCEEDS_IN_TRANSIT".into()
        )
    );
    let lot = TransferLine {
        lot: "L9".into(),
        ..tline("SKU-2", 1)
    };
    let err = receive_transfer(c, arrival("TO-1", vec![tline("SKU-2", 1), lot], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "NOT_IN_TRANSFER");
    assert!(err.message().contains("lines[1]"), "{err:?}");
    let err = receive_transfer(
        c,
        arrival("TO-1", vec![tline("SKU-1", 1)], |r| r.close = true),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["reason"]);
    assert_eq!(on_hand(c, "STORE1").await, 4);

    // The last of SKU-1 arrives, one broken; the SKU-2 carton never does.
    let close = arrival("TO-1", vec![tline("SKU-1", 1)], |r| {
        r.close = true;
        r.reason = "one unit crushed, one carton missing".into();
    });
    let closed = receive_transfer(c, close.clone()).await.unwrap();
    let t = closed.transfer.clone().unwrap();
    assert_eq!(t.state(), TransferState::Closed);
    assert_eq!(lines_of(&t), [("SKU-1", 5, 1, 0), ("SKU-2", 0, 3, 0)]);
    assert_eq!(t.close_reason, "one unit crushed, one carton missing");
    assert_eq!(receive_transfer(c, close).await.unwrap(), closed, "replay");
    assert_eq!(figures(c, &[]).await, [(9, 0, 8)], "9 on hand, 1 held");
    let err = receive_transfer(c, arrival("TO-1", vec![tline("SKU-1", 1)], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "TRANSFER_ENDED");

    // The movements it caused, by its reference; the transfer as listed.
    let moves = c
        .list_movements(authed(
            "acme",
            ListMovementsRequest {
                reference: "transfers/TO-1".into(),
                sku: "SKU-1".into(),
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
    let of_sku = c
        .list_transfers(list(|r| {
            r.to_node_id = "STORE1".into();
            r.sku = "SKU-2".into()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(of_sku.transfers, std::slice::from_ref(&t));
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
    item(c, "acme", "SKU-2").await;
    receive(c, "acme", "DC1", "SKU-1", 10).await;

    let err = send_transfer(c, send("a/b", vec![], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["transfer_id", "lines"]);
    let twice = send("TO-2", vec![tline("SKU-1", 1), tline("SKU-1", 2)], |_| {});
    let err = send_transfer(c, twice).await.unwrap_err();
    assert_eq!(fields(&err), ["lines[1]"]);
    // Nowhere to go (another tenant's node is none of acme's): nothing
    // leaves.
    for to in ["NOWHERE", "G1"] {
        let err = send_transfer(
            c,
            send("TO-2", vec![tline("SKU-1", 1)], |t| {
                t.to_node_id = to.into()
            }),
        )
        .await
        .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::NotFound, "NODE_NOT_FOUND".into())
        );
    }
    // A short second line: the first does not leave either.
    let short = send("TO-2", vec![tline("SKU-1", 5), tline("SKU-2", 1)], |_| {});
    let err = send_transfer(c, short).await.unwrap_err();
    assert_eq!(reason(&err), "INSUFFICIENT_ON_HAND");
    assert_eq!(on_hand(c, "DC1").await, 10);
    // A line's own violations are named by the line.
    let with_lot = TransferLine {
        lot: "L1".into(),
        ..tline("SKU-1", 1)
    };
    let err = send_transfer(c, send("TO-2", vec![tline("SKU-2", 0), with_lot], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].quantity"]);
    let with_lot = TransferLine {
        lot: "L1".into(),
        ..tline("SKU-1", 1)
    };
    let err = send_transfer(c, send("TO-2", vec![with_lot], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].lot"]);

    let err = receive_transfer(
        c,
        arrival("TO-2", vec![tline("SKU-1", 1)], |r| r.name = "TO-2".into()),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["name"]);
    let err = receive_transfer(c, arrival("TO-2", vec![], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines"]);
    let err = receive_transfer(
        c,
        arrival("TO-2", vec![tline("SKU-1", -1)], |r| r.close = true),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].quantity"]);
    let err = receive_transfer(c, arrival("TO-2", vec![tline("SKU-1", 1)], |_| {}))
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
    let phones = |q: i64, serials: &[&str]| TransferLine {
        serial_numbers: serials.iter().map(|s| s.to_string()).collect(),
        ..tline("PH", q)
    };
    send_transfer(c, send("TO-3", vec![phones(3, &["A", "B", "C"])], |_| {}))
        .await
        .unwrap();
    // A serial that was not sent cannot arrive by the transfer.
    let err = receive_transfer(c, arrival("TO-3", vec![phones(1, &["Z"])], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "SERIAL_NOT_IN_TRANSIT");
    let err = receive_transfer(c, arrival("TO-3", vec![phones(2, &["B"])], |_| {}))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["lines[0].serial_numbers"]);
    let got = receive_transfer(c, arrival("TO-3", vec![phones(1, &["B"])], |_| {}))
        .await
        .unwrap();
    assert_eq!(got.transfer.unwrap().lines[0].serial_numbers, ["A", "C"]);
    let at = crate::ledger::serials(c, "", true).await;
    let at: Vec<(&str, &str)> = at.iter().map(|(s, n)| (s.as_str(), n.as_str())).collect();
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
    // (An expiry date sent on the line is output only: the ledger's
    // stands.)
    let milk = TransferLine {
        lot: "L1".into(),
        expiry_date: "2000-01-01".into(),
        ..tline("MILK", 5)
    };
    let sent = send_transfer(c, send("TO-4", vec![milk.clone()], |_| {}))
        .await
        .unwrap();
    assert_eq!(sent.transfer.unwrap().lines[0].expiry_date, "2099-12-31");
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
    let got = receive_transfer(c, arrival("TO-4", vec![milk], |_| {}))
        .await
        .unwrap();
    let m = &got.transfer_ins[0];
    assert_eq!(
        (m.lot.as_str(), m.expiry_date.as_str()),
        ("L1", "2099-12-31")
    );
    assert_eq!(got.transfer.unwrap().state(), TransferState::Received);

    // Every line of one delivery arrived at one moment.
    movement(c, &rid(), MovementKind::Receipt, "STORE1", "PH", |m| {
        m.quantity = 1;
        m.serial_numbers = vec!["D".into()];
    })
    .await
    .unwrap();
    let lines = vec![
        phones(1, &["D"]),
        TransferLine {
            lot: "L1".into(),
            ..tline("MILK", 2)
        },
    ];
    let back = send("TO-5", lines.clone(), |r| {
        r.from_node_id = "STORE1".into();
        r.to_node_id = "DC1".into();
    });
    send_transfer(c, back).await.unwrap();
    let got = receive_transfer(c, arrival("TO-5", lines, |_| {}))
        .await
        .unwrap();
    let arrived: Vec<_> = got.transfer_ins.iter().map(|m| m.occur_time).collect();
    assert!(arrived[0].is_some());
    assert_eq!(arrived, [arrived[0], arrived[0]]);
}

/// Transfers leaving one node at once, their lines in any order, all go:
/// a line's lot is locked in one order whatever the request's, so two
/// sends never wait on each other's lots (a deadlock Postgres would end by
/// failing one of them).
#[tokio::test]
async fn transfers_sent_at_once_with_lines_in_any_order_all_go() {
    let mut h = start().await;
    let c = &mut h.client;
    dc1_and_store1(c, &[("A", 100), ("B", 100), ("C", 100)]).await;
    let sends = (0..24).map(|i| {
        let mut c = c.clone();
        let mut lines = vec![tline("A", 1), tline("B", 1), tline("C", 1)];
        lines.rotate_left(i % 3);
        if i % 2 == 1 {
            lines.reverse();
        }
        let req = send(&format!("T-{i}"), lines, |_| {});
        tokio::spawn(async move { send_transfer(&mut c, req).await.map(drop) })
    });
    let sent: Vec<_> = futures::future::join_all(sends).await;
    for s in sent {
        s.unwrap().unwrap();
    }
    for sku in ["A", "B", "C"] {
        let at_dc1: i64 = stock_levels(c, "DC1", sku)
            .await
            .iter()
            .map(|l| l.on_hand)
            .sum();
        assert_eq!(at_dc1, 76, "{sku}");
    }
}

/// Transfers at once both ways between two nodes, and shipments of
/// reservations whose entries name the same SKUs in other orders, all go
/// when made at the same moment (before, Postgres ended such pairs as a
/// deadlock: an INTERNAL error for one of them).
#[tokio::test]
async fn movements_of_the_same_lots_in_other_orders_all_go() {
    let mut h = start().await;
    let c = &mut h.client;
    node(c, "acme", "DC1").await;
    node(c, "acme", "STORE1").await;
    for sku in ["A", "B"] {
        item(c, "acme", sku).await;
        receive(c, "acme", "DC1", sku, 100).await;
        receive(c, "acme", "STORE1", sku, 100).await;
    }
    let transfers = (0..24).map(|i| {
        let mut c = c.clone();
        let (from, to) = match i % 2 {
            0 => ("DC1", "STORE1"),
            _ => ("STORE1", "DC1"),
        };
        let req = TransferStockRequest {
            request_id: rid(),
            from_node_id: from.into(),
            to_node_id: to.into(),
            sku: "A".into(),
            quantity: 1,
            ..Default::default()
        };
        tokio::spawn(async move { c.transfer_stock(authed("acme", req)).await.map(drop) })
    });
    for t in futures::future::join_all(transfers).await {
        t.unwrap().unwrap();
    }
    for i in 0..16 {
        let id = format!("r{i}");
        reserve(c, "acme", &id, vec![line("A", "", 1), line("B", "", 1)])
            .await
            .unwrap();
        let at_dc1 = |sku: &str| Allocation {
            sku: sku.into(),
            node_id: "DC1".into(),
            quantity: 1,
            ..Default::default()
        };
        c.confirm_reservation(authed(
            "acme",
            ConfirmReservationRequest {
                request_id: rid(),
                name: format!("reservations/{id}"),
                allocations: vec![at_dc1("A"), at_dc1("B")],
            },
        ))
        .await
        .unwrap();
    }
    let shipments = (0..16).map(|i| {
        let mut c = c.clone();
        let mut entries = vec![shipped("A", 1, "", &[]), shipped("B", 1, "", &[])];
        if i % 2 == 1 {
            entries.reverse();
        }
        tokio::spawn(async move { ship(&mut c, &format!("r{i}"), entries).await.map(drop) })
    });
    for s in futures::future::join_all(shipments).await {
        s.unwrap().unwrap();
    }
    for (node, sku, left) in [("DC1", "A", 84), ("STORE1", "A", 100), ("DC1", "B", 84)] {
        let at: i64 = stock_levels(c, node, sku)
            .await
            .iter()
            .map(|l| l.on_hand)
            .sum();
        assert_eq!(at, left, "{sku} at {node}");
    }
    assert!(reconcile(c, "acme", true).await.drifts.is_empty());
}

/// A transfer may say when it should arrive; the late ones are listed.
#[tokio::test]
async fn late_transfers_are_listed_by_their_expected_arrival() {
    let mut h = start().await;
    let c = &mut h.client;
    dc1_and_store1(c, &[("SKU-1", 10)]).await;
    let now = chrono::Utc::now();
    let ts = |days: i64| {
        let t = now + chrono::Duration::days(days);
        prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: 0,
        }
    };
    let sent = |id: &str, left: i64, due: Option<i64>| {
        send(id, vec![tline("SKU-1", 1)], |t| {
            t.occur_time = Some(ts(left));
            t.expected_arrival_time = due.map(ts);
        })
    };
    // Due before it left, or a year after: refused.
    for due in [-4, 400] {
        let err = send_transfer(c, sent("TO-X", -3, Some(due)))
            .await
            .unwrap_err();
        assert_eq!(fields(&err), ["expected_arrival_time"], "{due}");
    }
    for (id, due) in [
        ("TO-5", Some(-1)),
        ("TO-6", Some(2)),
        ("TO-7", None),
        ("TO-8", Some(-2)),
    ] {
        send_transfer(c, sent(id, -3, due)).await.unwrap();
    }
    let late = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            let req = ListTransfersRequest {
                arrival_due_before: Some(ts(0)),
                ..Default::default()
            };
            let got = c
                .list_transfers(authed("acme", req))
                .await
                .unwrap()
                .into_inner();
            got.transfers
                .into_iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        late(c).await,
        ["transfers/TO-8", "transfers/TO-5"],
        "earliest due first"
    );
    receive_transfer(c, arrival("TO-8", vec![tline("SKU-1", 1)], |_| {}))
        .await
        .unwrap();
    assert_eq!(late(c).await, ["transfers/TO-5"], "arrived: no longer late");
    // What comes when, in availability: the late one first, no time last.
    let a = available(c, "acme", "SKU-1").await;
    let when: Vec<(Option<prost_types::Timestamp>, i64)> = (a.arrivals.iter())
        .map(|x| (x.expected_arrival_time, x.units))
        .collect();
    assert_eq!(when, [(Some(ts(-1)), 1), (Some(ts(2)), 1), (None, 1)]);
    assert_eq!(a.in_transit, 3);
    // Sold out to backorders, a figure says when units are sellable again:
    // with 7 on hand and 7, 8 or 9 asked for, the first, second or third
    // arrival (the third said no time).
    let mut restock = async |revision: i64, units: i64| {
        let req = SetBackorderDemandRequest {
            request_id: rid(),
            demand: vec![BackorderDemandFigure {
                sku: "SKU-1".into(),
                channel: String::new(),
                units,
            }],
            revision,
            source: "orders".into(),
            complete: false,
        };
        c.set_backorder_demand(authed("acme", req)).await.unwrap();
        let a = available(c, "acme", "SKU-1").await;
        (a.available, a.restock_time)
    };
    assert_eq!(restock(1, 7).await, (0, Some(ts(-1))), "late");
    assert_eq!(restock(2, 8).await, (0, Some(ts(2))));
    assert_eq!(restock(3, 9).await, (0, None));
    assert_eq!(restock(4, 6).await, (1, None), "sellable now");
    let got = c
        .get_transfer(authed(
            "acme",
            GetTransferRequest {
                name: "transfers/TO-6".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .transfer
        .unwrap();
    assert_eq!(got.expected_arrival_time, Some(ts(2)));
}

/// Units that come back to where they left (a delivery refused at the
/// door) arrive there, by the transfer, and end it as not all received.
#[tokio::test]
async fn units_sent_back_arrive_at_the_node_they_left() {
    let mut h = start().await;
    let c = &mut h.client;
    dc1_and_store1(c, &[("SKU-1", 10)]).await;
    send_transfer(c, send("TO-20", vec![tline("SKU-1", 5)], |_| {}))
        .await
        .unwrap();
    receive_transfer(c, arrival("TO-20", vec![tline("SKU-1", 3)], |_| {}))
        .await
        .unwrap();
    let back = arrival("TO-20", vec![tline("SKU-1", 2)], |r| {
        r.back_to_origin = true
    });
    let got = receive_transfer(c, back).await.unwrap();
    assert_eq!(got.transfer_ins[0].node_id, "DC1");
    let t = got.transfer.unwrap();
    let line = &t.lines[0];
    assert_eq!(
        (
            t.state(),
            line.quantity_received,
            line.quantity_returned,
            line.in_transit
        ),
        (TransferState::Closed, 3, 2, 0)
    );
    assert_eq!(
        (on_hand(c, "DC1").await, on_hand(c, "STORE1").await),
        (7, 3)
    );
    assert_eq!(figures(c, &[]).await, [(10, 0, 10)]);
}

/// Acme's DC1 and STORE1, with each of `skus` an item received at DC1.
async fn dc1_and_store1(c: &mut Client, skus: &[(&str, i64)]) {
    node(c, "acme", "DC1").await;
    node(c, "acme", "STORE1").await;
    for (sku, q) in skus {
        item(c, "acme", sku).await;
        receive(c, "acme", "DC1", sku, *q).await;
    }
}
